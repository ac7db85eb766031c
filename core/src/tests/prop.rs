//! Random streams (keyframe positions, loss, bounded reordering, SSRC changes, late
//! joiners) checked against the forwarding invariants of every subscription.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::rewrite::seq::SeqUnwrapper;
use crate::rewrite::timestamp::{TsUnwrapper, ticks};

/// Packets move at most `REORDER - 1` places from their sending order.
const REORDER: usize = 4;
const MAX_FRAMES: usize = 25;
const MAX_PACKETS: usize = MAX_FRAMES * 3;

#[derive(Clone, Debug)]
struct IncarnationPlan {
    seq0: u16,
    ts0: u32,
    /// (keyframe, packets in the frame)
    frames: Vec<(bool, u8)>,
    /// Per packet: (lost, reorder jitter).
    network: Vec<(bool, usize)>,
    gap_ms: u64,
}

#[derive(Clone, Debug)]
struct Plan {
    video: bool,
    incarnations: Vec<IncarnationPlan>,
    /// Fractions of the stream after which subscriptions 2 and 3 join.
    joins: [f64; 2],
    /// Fraction after which subscription 3 leaves (if it has joined by then).
    leave: f64,
}

fn incarnation_plan() -> impl Strategy<Value = IncarnationPlan> {
    (
        prop_oneof![any::<u16>(), 65_500u16..=u16::MAX],
        prop_oneof![any::<u32>(), (u32::MAX - 100_000)..=u32::MAX],
        proptest::collection::vec((proptest::bool::weighted(0.15), 1u8..=3), 1..MAX_FRAMES),
        proptest::collection::vec((proptest::bool::weighted(0.1), 0..REORDER), MAX_PACKETS),
        0u64..3_000,
    )
        .prop_map(|(seq0, ts0, frames, network, gap_ms)| IncarnationPlan {
            seq0,
            ts0,
            frames,
            network,
            gap_ms,
        })
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        any::<bool>(),
        proptest::collection::vec(incarnation_plan(), 1..5),
        (0.0..1.0f64, 0.0..1.0f64),
        0.0..1.2f64,
    )
        .prop_map(|(video, incarnations, (a, b), leave)| Plan {
            video,
            incarnations,
            joins: [a, b],
            leave,
        })
}

/// One packet as the network delivers it, tagged with where it came from.
#[derive(Clone, Debug)]
struct Sent {
    incarnation: usize,
    index: usize,
    keyframe: bool,
    packet: RtpPacket,
    gap_before_ms: u64,
}

fn deliveries(plan: &Plan) -> Vec<Sent> {
    let mut out = Vec::new();
    for (s, incarnation) in plan.incarnations.iter().enumerate() {
        let mut packets = Vec::new();
        let mut index = 0;
        for (frame, &(keyframe, count)) in incarnation.frames.iter().enumerate() {
            for k in 0..count {
                let descriptor: &[u8] = match (k, keyframe) {
                    (0, true) => &VP8_KEY[..2],
                    (0, false) => &VP8_DELTA[..2],
                    _ => &VP8_CONT[..2],
                };
                // The payload carries its origin so outputs can be traced back.
                let mut payload = descriptor.to_vec();
                payload.extend([s as u8, index as u8]);
                packets.push(Sent {
                    incarnation: s,
                    index,
                    keyframe: keyframe && k == 0,
                    packet: RtpPacket {
                        ssrc: Ssrc(1000 + s as u32),
                        payload_type: 96,
                        sequence_number: incarnation.seq0.wrapping_add(index as u16),
                        timestamp: incarnation.ts0.wrapping_add(3000 * frame as u32),
                        marker: k + 1 == count,
                        payload: Bytes::from(payload),
                        audio_level: None,
                        sampled_at: None,
                    },
                    gap_before_ms: 0,
                });
                index += 1;
            }
        }
        let mut keyed: Vec<(usize, Sent)> = packets
            .into_iter()
            .map(|p| (p.index + incarnation.network[p.index].1, p))
            .collect();
        keyed.sort_by_key(|(key, p)| (*key, p.index));
        let mut delivered: Vec<Sent> = keyed
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| !incarnation.network[p.index].0)
            .collect();
        if let Some(first) = delivered.first_mut() {
            first.gap_before_ms = incarnation.gap_ms;
        }
        out.extend(delivered);
    }
    out
}

/// What one subscription received, in arrival order.
#[derive(Debug, Default)]
struct Received {
    /// (incarnation, index, wire seq, wire ts, time)
    forwards: Vec<(usize, usize, u16, u32, Instant)>,
    /// Packets delivered while the subscription existed: (incarnation, index, keyframe).
    offered: Vec<(usize, usize, bool)>,
    /// The repair horizons reported (wire seq).
    horizons: Vec<u16>,
}

fn run(plan: &Plan) -> Result<(), TestCaseError> {
    let sent = deliveries(plan);
    let mut h = Harness::new();
    let codec = if plan.video { Codec::Vp8 } else { Codec::Opus };
    h.publish(1, 1, codec);
    let clock_rate = if plan.video { 90_000 } else { 48_000 };
    let at = |fraction: f64| (fraction * sent.len() as f64) as usize;
    let mut active: HashSet<u64> = HashSet::new();
    let mut received: HashMap<u64, Received> = HashMap::new();
    let mut requests: Vec<Instant> = Vec::new();

    h.subscribe(1, 11, 1);
    active.insert(1);
    for (i, p) in sent.iter().enumerate() {
        // Time first, so that every output below is recorded at the time it was made.
        h.now += Duration::from_millis(10 + p.gap_before_ms);
        for (n, join) in [(2, plan.joins[0]), (3, plan.joins[1])] {
            if at(join) == i {
                h.subscribe(n, 10 + n, 1);
                active.insert(n);
            }
        }
        if at(plan.leave) == i && active.remove(&3) {
            h.input(Input::SubscriptionRemoved {
                subscription: SubscriptionId(3),
            })
            .unwrap();
        }
        if h.room.poll_timeout().is_some_and(|t| t <= h.now) {
            h.room.handle_timeout(h.now);
        }
        h.rtp(1, p.packet.clone());
        for &n in &active {
            received
                .entry(n)
                .or_default()
                .offered
                .push((p.incarnation, p.index, p.keyframe));
        }
        for output in h.drain() {
            match output {
                Output::Forward {
                    subscription,
                    packet,
                    ..
                } => {
                    prop_assert!(
                        active.contains(&subscription.0),
                        "forward to a removed subscription"
                    );
                    let tag = &packet.payload[packet.payload.len() - 2..];
                    received.entry(subscription.0).or_default().forwards.push((
                        usize::from(tag[0]),
                        usize::from(tag[1]),
                        packet.sequence_number,
                        packet.timestamp,
                        h.now,
                    ));
                }
                Output::RequestKeyframe { .. } => requests.push(h.now),
                Output::LayersChanged { .. } | Output::PublisherLayers { .. } => {
                    prop_assert!(false, "single-layer publications have no layer changes");
                }
                Output::ActiveSpeakers { .. } => {
                    prop_assert!(false, "packets without audio levels have no speakers");
                }
                Output::Probe { .. } | Output::PathCongested { .. } => {
                    prop_assert!(false, "no congestion without bandwidth estimates");
                }
                Output::RepairHorizon {
                    subscription,
                    sequence_number,
                    ..
                } => received
                    .entry(subscription.0)
                    .or_default()
                    .horizons
                    .push(sequence_number),
                // A publisher's gaps may exceed the stall timeout: liveness is tested on its own.
                Output::PublicationStalled { .. } | Output::PublicationResumed { .. } => {}
            }
        }
    }

    if !plan.video {
        prop_assert!(requests.is_empty(), "audio must never request keyframes");
    }
    prop_assert!(
        requests.windows(2).all(|w| w[1] - w[0] >= INTERVAL),
        "requests not throttled: {requests:?}"
    );

    let by_origin: HashMap<(usize, usize), &Sent> =
        sent.iter().map(|p| ((p.incarnation, p.index), p)).collect();
    for (n, got) in &received {
        check_subscription(*n, got, &by_origin, plan.video, clock_rate)?;
    }
    Ok(())
}

fn check_subscription(
    n: u64,
    got: &Received,
    by_origin: &HashMap<(usize, usize), &Sent>,
    video: bool,
    clock_rate: u32,
) -> Result<(), TestCaseError> {
    let mut seq_unwrap = SeqUnwrapper::default();
    let mut ts_unwrap = TsUnwrapper::default();
    let mut seen_seqs = HashSet::new();
    let mut max_seq: Option<u64> = None;
    let mut max_ts: Option<u64> = None;
    let mut last_forward_at: Option<Instant> = None;
    // Per incarnation: (first forwarded index, seq offset, ts offset)
    let mut started: HashMap<usize, (usize, u64, u64)> = HashMap::new();
    let mut current: Option<usize> = None;

    // A video decoder restarts at the first packet of every incarnation after the first (audio
    // has no keyframes to restart at).
    let restarts: Vec<u16> = got
        .forwards
        .windows(2)
        .filter(|pair| video && pair[0].0 != pair[1].0)
        .map(|pair| pair[1].2)
        .collect();
    prop_assert_eq!(
        &got.horizons,
        &restarts,
        "SU{}: repair horizons are the restarts",
        n
    );

    for &(incarnation, index, seq, ts, now) in &got.forwards {
        let origin = by_origin[&(incarnation, index)];
        let out_seq = seq_unwrap.unwrap(seq).0;
        let out_ts = ts_unwrap.unwrap(ts).0;
        prop_assert!(
            seen_seqs.insert(out_seq),
            "SU{n}: duplicate output seq {seq}"
        );
        if let Some(max) = max_seq {
            prop_assert!(
                out_seq + REORDER as u64 > max,
                "SU{n}: seq {seq} goes back too far"
            );
        }
        // Sequence numbers of a incarnation are input + constant (so gaps stay gaps).
        let in_seq = origin.packet.sequence_number;
        let in_ts = origin.packet.timestamp;
        if current != Some(incarnation) {
            prop_assert!(
                !started.contains_key(&incarnation),
                "SU{n}: incarnation {incarnation} resumed"
            );
            if video {
                prop_assert!(
                    origin.keyframe,
                    "SU{n}: incarnation {incarnation} started on a non-keyframe"
                );
            }
            if let (Some(max_seq), Some(max_ts), Some(at)) = (max_seq, max_ts, last_forward_at) {
                prop_assert_eq!(
                    out_seq,
                    max_seq + 1,
                    "SU{}: seq not contiguous across incarnations",
                    n
                );
                let step = ticks(now - at, clock_rate).max(1);
                prop_assert_eq!(
                    out_ts,
                    max_ts + step,
                    "SU{}: ts step across incarnations",
                    n
                );
            }
            started.insert(
                incarnation,
                (
                    index,
                    out_seq.wrapping_sub(u64::from(in_seq)),
                    u64::from(ts.wrapping_sub(in_ts)),
                ),
            );
            current = Some(incarnation);
        }
        let (first_index, seq_offset, ts_offset) = started[&incarnation];
        prop_assert!(
            index >= first_index,
            "SU{n}: forwarded a packet older than the incarnation start"
        );
        prop_assert_eq!(
            out_seq.wrapping_sub(u64::from(in_seq)) % (1 << 16),
            seq_offset % (1 << 16),
            "SU{}: seq offset changed within a incarnation",
            n
        );
        prop_assert_eq!(
            u64::from(ts.wrapping_sub(in_ts)),
            ts_offset,
            "SU{}: ts offset changed within a incarnation",
            n
        );
        max_seq = Some(max_seq.map_or(out_seq, |m| m.max(out_seq)));
        max_ts = Some(max_ts.map_or(out_ts, |m| m.max(out_ts)));
        last_forward_at = Some(now);
    }

    // Completeness: a incarnation is forwarded from its first start point offered to the
    // subscription, and then every later-offered packet not older than that start is.
    let mut expected = Vec::new();
    let mut start: HashMap<usize, usize> = HashMap::new();
    for &(incarnation, index, keyframe) in &got.offered {
        match start.get(&incarnation) {
            Some(&first) if index >= first => expected.push((incarnation, index)),
            Some(_) => {}
            None if keyframe || !video => {
                start.insert(incarnation, index);
                expected.push((incarnation, index));
            }
            None => {}
        }
    }
    let actual: Vec<(usize, usize)> = got.forwards.iter().map(|f| (f.0, f.1)).collect();
    prop_assert_eq!(actual, expected, "SU{}: forwarded set", n);
    Ok(())
}

proptest! {
    #[test]
    fn random_streams_keep_forwarding_invariants(plan in plan()) {
        run(&plan)?;
    }
}
