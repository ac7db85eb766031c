//! Simulcast: layer selection per subscription (asked for, bandwidth-driven, fallback when a
//! layer stops), switches only on a keyframe of the target layer with continuous output
//! numbering, and dynacast.

use proptest::prelude::*;

use super::*;
use crate::publication::PAUSE_DELAY;
use crate::{DropReason, LayerChangeReason};

pub(super) const PUB: u64 = 1;
pub(super) const PUBLISHER: u64 = 10;
/// SSRCs of the three layers (q, h, f).
pub(super) const SSRC: [u32; 3] = [100, 200, 300];
/// A frame every 33 ms at 90 kHz.
pub(super) const FRAME_TICKS: u32 = 3000;

/// Feeds one frame (one packet) on every live layer; `keyframe[l]` marks which are keys.
pub(super) struct Stream {
    seq: [u16; 3],
    ts: u32,
    /// VP8 picture ids, far apart per layer (as Chrome's are).
    picture_id: [u16; 3],
    /// Payload bytes added to every frame of each layer, for tests that need real bitrates.
    padding: [usize; 3],
}

impl Stream {
    pub(super) fn new() -> Self {
        Stream {
            seq: [10, 5000, 60000],
            ts: 1_000,
            picture_id: [32_760, 100, 20_000],
            padding: [0; 3],
        }
    }

    pub(super) fn frame(&mut self, h: &mut Harness, layers: &[u8], keyframe: &[u8]) {
        for &layer in layers {
            let i = usize::from(layer);
            // A VP8 descriptor with a 15-bit picture id, the frame tag (P bit), and a last
            // byte that tags the layer so tests can tell where a packet came from.
            let pid = self.picture_id[i];
            self.picture_id[i] = (pid + 1) % (1 << 15);
            let mut payload = vec![0x90, 0x80, 0x80 | (pid >> 8) as u8, pid as u8];
            if keyframe.contains(&layer) {
                payload.extend([0x00, 0x9d, 0x01, 0x2a]);
            } else {
                payload.push(0x01);
            }
            payload.resize(payload.len() + self.padding[i], 0);
            payload.push(layer);
            h.rtp_on(
                PUB,
                layer,
                RtpPacket {
                    ssrc: Ssrc(SSRC[i]),
                    payload_type: 96,
                    sequence_number: self.seq[i],
                    timestamp: self.ts,
                    marker: true,
                    payload: bytes::Bytes::from(payload),
                    audio_level: None,
                    sampled_at: None,
                },
            );
            self.seq[i] = self.seq[i].wrapping_add(1);
        }
        self.ts = self.ts.wrapping_add(FRAME_TICKS);
        h.advance_ms(33);
    }
}

pub(super) fn layer_changes(outputs: &[Output]) -> Vec<(Option<u8>, u8, LayerChangeReason)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::LayersChanged {
                current,
                target,
                reason,
                ..
            } => Some((current.map(|l| l.spatial), target.spatial, *reason)),
            _ => None,
        })
        .collect()
}

pub(super) fn dynacast(outputs: &[Output]) -> Vec<Vec<bool>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::PublisherLayers { active, .. } => Some(active.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn forwarded_ssrc_payloads(outputs: &[Output]) -> Vec<RtpPacket> {
    forwards_to(outputs, 1)
}

pub(super) fn is_key(packet: &RtpPacket) -> bool {
    packet.payload.get(4).is_some_and(|b| b & 1 == 0)
}

pub(super) fn picture_id(packet: &RtpPacket) -> u16 {
    (u16::from(packet.payload[2] & 0x7f) << 8) | u16::from(packet.payload[3])
}

pub(super) fn layer_of(packet: &RtpPacket) -> u8 {
    *packet.payload.last().expect("tagged payload")
}

/// A room with a 3-layer publication streaming on all layers and one subscriber on f.
/// Longer than dynacast's pause delay, in the 33 ms steps of [`Stream::frame`].
pub(super) const PAST_PAUSE_DELAY_MS: u64 = PAUSE_DELAY.as_millis() as u64 + 100;

/// Frames on `layers` for `ms`, running the timers after each; everything that came out.
pub(super) fn run_frames(
    h: &mut Harness,
    stream: &mut Stream,
    layers: &[u8],
    ms: u64,
) -> Vec<Output> {
    let mut outputs = h.drain();
    for _ in 0..ms.div_ceil(33) {
        stream.frame(h, layers, &[]);
        h.timeout();
        outputs.extend(h.drain());
    }
    outputs
}

pub(super) fn streaming() -> (Harness, Stream) {
    let mut h = Harness::new();
    h.publish_simulcast(PUB, PUBLISHER, 3);
    let mut stream = Stream::new();
    stream.frame(&mut h, &[0, 1, 2], &[0, 1, 2]);
    h.drain();
    h.subscribe(1, 20, PUB);
    h.drain();
    stream.frame(&mut h, &[0, 1, 2], &[0, 1, 2]);
    (h, stream)
}

#[test]
fn subscriber_gets_the_highest_live_layer_only() {
    let (mut h, mut stream) = streaming();
    let first = h.drain();
    let got = forwarded_ssrc_payloads(&first);
    assert_eq!(got.len(), 1, "one packet per frame: only the current layer");
    for _ in 0..5 {
        stream.frame(&mut h, &[0, 1, 2], &[]);
    }
    let outputs = h.drain();
    let got = forwards_to(&outputs, 1);
    assert_eq!(got.len(), 5);
    assert_eq!(
        seqs(&got),
        (INITIAL_SEQ + 1..INITIAL_SEQ + 6).collect::<Vec<_>>()
    );
    let stats = h.room.subscription_stats(SubscriptionId(1)).unwrap();
    assert_eq!(stats.drops.get(DropReason::NotCurrentLayer), 12);
}

#[test]
fn the_first_layer_forwarded_is_reported() {
    let (mut h, _stream) = streaming();
    assert_eq!(
        layer_changes(&h.drain()),
        vec![(Some(2), 2, LayerChangeReason::Switched)],
        "the subscriber learns it receives f without waiting for a change"
    );
}

#[test]
fn requested_switch_waits_for_the_target_keyframe_and_stays_continuous() {
    let (mut h, mut stream) = streaming();
    h.drain();
    h.prefer(1, 0);
    let outputs = h.drain();
    assert_eq!(
        layer_changes(&outputs),
        vec![(Some(2), 0, LayerChangeReason::Requested)]
    );
    assert_eq!(
        keyframe_requests(&outputs),
        vec![(PublicationId(PUB), Ssrc(SSRC[0]))],
        "the switch asks for a keyframe on the target layer"
    );
    // Until q's keyframe, f keeps flowing: no freeze.
    for _ in 0..3 {
        stream.frame(&mut h, &[0, 1, 2], &[]);
    }
    let before = forwards_to(&h.drain(), 1);
    assert_eq!(before.len(), 3);
    stream.frame(&mut h, &[0, 1, 2], &[0]);
    let outputs = h.drain();
    let switched = forwards_to(&outputs, 1);
    assert_eq!(switched.len(), 1);
    assert!(
        is_key(&switched[0]) && layer_of(&switched[0]) == 0,
        "the switch lands on q's keyframe"
    );
    assert_eq!(switched[0].sequence_number, before[2].sequence_number + 1);
    assert!(switched[0].timestamp > before[2].timestamp);
    assert_eq!(
        layer_changes(&outputs),
        vec![(Some(0), 0, LayerChangeReason::Switched)]
    );
    assert!(
        dynacast(&outputs).is_empty(),
        "f, needed until now, is kept for the pause delay"
    );
    let kept = run_frames(
        &mut h,
        &mut stream,
        &[0, 1, 2],
        PAUSE_DELAY.as_millis() as u64 - 100,
    );
    assert!(
        !dynacast(&kept).contains(&vec![true, false, false]),
        "f is not paused before the delay: {:?}",
        dynacast(&kept)
    );
    let later = run_frames(&mut h, &mut stream, &[0, 1, 2], 300);
    assert_eq!(
        dynacast(&later).last(),
        Some(&vec![true, false, false]),
        "h and f are paused once nobody needed them for the delay"
    );
}

#[test]
fn a_layer_that_stops_falls_back_to_the_best_live_layer() {
    let (mut h, mut stream) = streaming();
    h.drain();
    // f stops (the publisher's uplink degraded); q and h go on.
    for _ in 0..20 {
        stream.frame(&mut h, &[0, 1], &[]);
        h.timeout();
    }
    let outputs = h.drain();
    assert!(
        layer_changes(&outputs).contains(&(Some(2), 1, LayerChangeReason::LayerUnavailable)),
        "{:?}",
        layer_changes(&outputs)
    );
    assert!(keyframe_requests(&outputs).contains(&(PublicationId(PUB), Ssrc(SSRC[1]))));
    stream.frame(&mut h, &[0, 1], &[1]);
    let got = forwards_to(&h.drain(), 1);
    assert_eq!(got.len(), 1);
    assert!(is_key(&got[0]) && layer_of(&got[0]) == 1);
}

#[test]
fn dynacast_resumes_a_layer_someone_asks_for() {
    let (mut h, mut stream) = streaming();
    h.prefer(1, 0);
    stream.frame(&mut h, &[0, 1, 2], &[0]);
    let outputs = run_frames(&mut h, &mut stream, &[0, 1, 2], PAST_PAUSE_DELAY_MS);
    assert_eq!(dynacast(&outputs).last(), Some(&vec![true, false, false]));
    // h and f are paused now; asking for f resumes it at once, while q keeps playing.
    for _ in 0..30 {
        stream.frame(&mut h, &[0], &[]);
        h.timeout();
    }
    h.drain();
    h.prefer(1, 2);
    let outputs = h.drain();
    assert!(
        layer_changes(&outputs).is_empty(),
        "nothing to switch to until f is back"
    );
    assert_eq!(dynacast(&outputs), vec![vec![true, false, true]]);
    // The resumed layer's first keyframe makes it the target and completes the switch.
    stream.frame(&mut h, &[0, 2], &[2]);
    let outputs = h.drain();
    // q's packet of this frame still goes out (no freeze), then f takes over on its keyframe.
    let got = forwards_to(&outputs, 1);
    assert_eq!(got.iter().map(layer_of).collect::<Vec<_>>(), vec![0, 2]);
    assert!(is_key(&got[1]));
    assert_eq!(
        layer_changes(&outputs),
        vec![
            (Some(0), 2, LayerChangeReason::LayerUnavailable),
            (Some(2), 2, LayerChangeReason::Switched)
        ]
    );
}

#[test]
fn bandwidth_caps_down_at_once_and_up_only_after_it_held() {
    let (mut h, mut stream) = streaming();
    // Measure the layers: q ≈ 0.2, h ≈ 0.6, f ≈ 1.8 Mb/s with these payload sizes.
    for _ in 0..40 {
        for (layer, size) in [(0u8, 800usize), (1, 2500), (2, 7500)] {
            let i = usize::from(layer);
            let payload = bytes::Bytes::from(
                vec![0x10, 0x01]
                    .into_iter()
                    .chain(std::iter::repeat_n(0u8, size))
                    .collect::<Vec<_>>(),
            );
            h.rtp_on(
                PUB,
                layer,
                RtpPacket {
                    ssrc: Ssrc(SSRC[i]),
                    payload_type: 96,
                    sequence_number: stream.seq[i],
                    timestamp: stream.ts,
                    marker: true,
                    payload,
                    audio_level: None,
                    sampled_at: None,
                },
            );
            stream.seq[i] = stream.seq[i].wrapping_add(1);
        }
        stream.ts = stream.ts.wrapping_add(FRAME_TICKS);
        h.advance_ms(33);
    }
    h.drain();
    h.bandwidth(20, 900_000);
    let outputs = h.drain();
    assert_eq!(
        layer_changes(&outputs),
        vec![(Some(2), 1, LayerChangeReason::Bandwidth)]
    );
    // More bandwidth: no upgrade until it has held for 3 s.
    h.bandwidth(20, 5_000_000);
    assert!(layer_changes(&h.drain()).is_empty());
    h.advance_ms(1500);
    h.bandwidth(20, 5_000_000);
    assert!(layer_changes(&h.drain()).is_empty());
    h.advance_ms(1600);
    h.bandwidth(20, 5_000_000);
    let outputs = h.drain();
    assert_eq!(
        layer_changes(&outputs),
        vec![(Some(2), 2, LayerChangeReason::Bandwidth)]
    );
}

#[test]
fn audio_and_single_layer_video_never_change_layers() {
    let mut h = Harness::new();
    h.publish(PUB, PUBLISHER, Codec::Vp8);
    h.subscribe(1, 20, PUB);
    h.prefer(1, 0);
    h.bandwidth(20, 10_000);
    let outputs = h.drain();
    assert!(layer_changes(&outputs).is_empty());
    assert!(dynacast(&outputs).is_empty());
}

#[derive(Debug, Clone)]
enum Step {
    /// A frame on every live layer; bits mark keyframes.
    Frame {
        keyframes: u8,
        stopped: u8,
    },
    Prefer(u8),
    Timeout,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u8..8, prop_oneof![4 => Just(0u8), 1 => 0u8..8]).prop_map(|(keyframes, stopped)| Step::Frame { keyframes, stopped }),
        1 => (0u8..3).prop_map(Step::Prefer),
        1 => Just(Step::Timeout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Whatever the keyframe timing, requests and stopped layers: the subscription switches
    /// only on a keyframe of its target layer, never forwards a packet of another layer,
    /// and its output sequence numbers are contiguous and timestamps never go back.
    #[test]
    fn switches_keep_the_output_valid(steps in proptest::collection::vec(step(), 1..300)) {
        let mut h = Harness::new();
        h.publish_simulcast(PUB, PUBLISHER, 3);
        h.subscribe(1, 20, PUB);
        let mut stream = Stream::new();
        let mut current: Option<u8> = None;
        let mut target: u8 = 2;
        let mut last: Option<(u16, u32)> = None;
        let mut last_picture_id: Option<u16> = None;
        for step in steps {
            match step {
                Step::Frame { keyframes, stopped } => {
                    let live: Vec<u8> = (0..3).filter(|l| stopped & (1 << l) == 0).collect();
                    let keys: Vec<u8> = (0..3).filter(|l| keyframes & (1 << l) != 0).collect();
                    stream.frame(&mut h, &live, &keys);
                    for output in h.drain() {
                        match output {
                            Output::Forward { packet, .. } => {
                                let offset_layer = layer_of(&packet);
                                prop_assert!(live.contains(&offset_layer));
                                let key = is_key(&packet);
                                if current != Some(offset_layer) {
                                    prop_assert!(key, "switch to layer {offset_layer} on a delta frame");
                                    prop_assert_eq!(offset_layer, target, "switched to a layer that is not the target");
                                    current = Some(offset_layer);
                                }
                                if let Some((seq, out_ts)) = last {
                                    prop_assert_eq!(packet.sequence_number, seq.wrapping_add(1), "output seq not contiguous");
                                    prop_assert!(packet.timestamp.wrapping_sub(out_ts) < 1 << 31, "output ts went back");
                                }
                                last = Some((packet.sequence_number, packet.timestamp));
                                // One packet per frame here, so picture ids must step by one,
                                // across switches too.
                                if let Some(previous) = last_picture_id {
                                    prop_assert_eq!(picture_id(&packet), (previous + 1) % (1 << 15), "VP8 picture id not continuous");
                                }
                                last_picture_id = Some(picture_id(&packet));
                            }
                            Output::LayersChanged { target: t, current: c, .. } => {
                                target = t.spatial;
                                let c = c.map(|l| l.spatial);
                                if c.is_some() {
                                    prop_assert_eq!(c, current);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Step::Prefer(layer) => {
                    h.prefer(1, layer);
                    for output in h.drain() {
                        if let Output::LayersChanged { target: t, .. } = output {
                            target = t.spatial;
                        }
                    }
                }
                Step::Timeout => {
                    h.advance_ms(100);
                    h.timeout();
                    for output in h.drain() {
                        if let Output::LayersChanged { target: t, .. } = output {
                            target = t.spatial;
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_wanted_layer_the_publisher_cannot_send_brings_the_one_below_without_flapping() {
    let (mut h, mut stream) = streaming();
    h.prefer(1, 0);
    stream.frame(&mut h, &[0, 1, 2], &[0]);
    let outputs = run_frames(&mut h, &mut stream, &[0, 1, 2], PAST_PAUSE_DELAY_MS);
    assert_eq!(
        dynacast(&outputs).last(),
        Some(&vec![true, false, false]),
        "only q while everyone is on q"
    );
    for _ in 0..30 {
        stream.frame(&mut h, &[0], &[]);
        h.timeout();
    }
    assert!(dynacast(&h.drain()).is_empty());
    h.prefer(1, 2);
    let mut outputs = h.drain();
    // The publisher's uplink cannot carry f. For the grace period only f is asked for.
    for _ in 0..40 {
        stream.frame(&mut h, &[0], &[]);
        h.timeout();
        outputs.extend(h.drain());
    }
    assert_eq!(dynacast(&outputs), vec![vec![true, false, true]]);
    // Then h too, while f stays on; h comes, the subscriber moves to it on its keyframe, and
    // dynacast never changes its mind however long f stays away.
    for _ in 0..20 {
        stream.frame(&mut h, &[0], &[]);
        h.timeout();
        outputs.extend(h.drain());
    }
    stream.frame(&mut h, &[0, 1], &[1]);
    outputs.extend(h.drain());
    for _ in 0..200 {
        stream.frame(&mut h, &[0, 1], &[]);
        h.timeout();
        outputs.extend(h.drain());
    }
    assert_eq!(
        dynacast(&outputs),
        vec![vec![true, false, true], vec![true, true, true]],
        "f, then h as well; no flapping"
    );
    assert_eq!(
        layer_changes(&outputs).last().map(|c| (c.0, c.1)),
        Some((Some(1), 1)),
        "switched to h: {:?}",
        layer_changes(&outputs)
    );
    // f arrives at last: h's packet of that frame still goes out, then f takes over on its
    // keyframe, and h, needed by nobody now, is turned off after the pause delay.
    stream.frame(&mut h, &[0, 1, 2], &[2]);
    let late = h.drain();
    assert_eq!(
        forwards_to(&late, 1)
            .iter()
            .map(layer_of)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(dynacast(&late).is_empty(), "h stays on for the pause delay");
    let later = run_frames(&mut h, &mut stream, &[0, 1, 2], PAST_PAUSE_DELAY_MS);
    assert_eq!(dynacast(&later), vec![vec![true, false, true]]);
}

#[test]
fn heavy_nack_loss_steps_down_one_layer_at_once_then_cools_down() {
    let (mut h, mut stream) = streaming();
    for _ in 0..20 {
        stream.frame(&mut h, &[0, 1, 2], &[]);
    }
    h.drain();
    let nack = |h: &mut Harness, packets| {
        h.input(Input::Nacked {
            subscription: SubscriptionId(1),
            packets,
        })
        .unwrap();
    };
    // No loss: nothing happens.
    nack(&mut h, 0);
    for _ in 0..30 {
        stream.frame(&mut h, &[0, 1, 2], &[]);
    }
    nack(&mut h, 0);
    assert!(layer_changes(&h.drain()).is_empty());
    // 23 % of what was sent in the window is NACKed: f → h at once.
    for _ in 0..30 {
        stream.frame(&mut h, &[0, 1, 2], &[]);
    }
    nack(&mut h, 7);
    let outputs = h.drain();
    assert_eq!(
        layer_changes(&outputs),
        vec![(Some(2), 1, LayerChangeReason::Bandwidth)]
    );
    // Until h's keyframe, f is shed (not fed into the congested path), and the switch stays
    // contiguous in sequence numbers.
    let last_sent = forwards_to(&outputs, 1).last().map(|p| p.sequence_number);
    stream.frame(&mut h, &[0, 1, 2], &[]);
    assert!(
        forwards_to(&h.drain(), 1).is_empty(),
        "the congested layer is shed"
    );
    stream.frame(&mut h, &[0, 1, 2], &[1]);
    let switched = forwards_to(&h.drain(), 1);
    assert_eq!(switched.len(), 1);
    assert_eq!(layer_of(&switched[0]), 1);
    if let Some(last) = last_sent {
        assert_eq!(switched[0].sequence_number, last.wrapping_add(1));
    }
    // More loss right after: no cascade within the cooldown.
    for _ in 0..30 {
        stream.frame(&mut h, &[0, 1, 2], &[1]);
    }
    nack(&mut h, 12);
    let changes = layer_changes(&h.drain());
    assert!(
        !changes.iter().any(|c| c.1 == 0),
        "stepped down again inside the cooldown: {changes:?}"
    );
}

#[test]
fn very_heavy_nack_loss_drops_to_the_lowest_layer() {
    let (mut h, mut stream) = streaming();
    h.drain();
    h.input(Input::Nacked {
        subscription: SubscriptionId(1),
        packets: 0,
    })
    .unwrap();
    for _ in 0..30 {
        stream.frame(&mut h, &[0, 1, 2], &[]);
    }
    h.input(Input::Nacked {
        subscription: SubscriptionId(1),
        packets: 12,
    })
    .unwrap();
    assert_eq!(
        layer_changes(&h.drain()),
        vec![(Some(2), 0, LayerChangeReason::Bandwidth)]
    );
}

/// Subscriber 20 on publication `PUB`, whose layers stream at about 120, 360 and 960 kbit/s
/// (30 frames per second), measured over more than a rate window.
pub(super) fn streaming_at_real_rates() -> (Harness, Stream) {
    let mut h = Harness::new();
    h.publish_simulcast(PUB, PUBLISHER, 3);
    let mut stream = Stream::new();
    stream.padding = [500, 1_500, 4_000];
    stream.frame(&mut h, &[0, 1, 2], &[0, 1, 2]);
    h.subscribe(1, 20, PUB);
    stream.frame(&mut h, &[0, 1, 2], &[0, 1, 2]);
    run_frames(&mut h, &mut stream, &[0, 1, 2], 1_500);
    (h, stream)
}

#[test]
fn a_congested_path_gets_what_it_delivers_at_once_and_keeps_it_through_the_hold() {
    let (mut h, mut stream) = streaming_at_real_rates();
    h.bandwidth(20, 5_000_000);
    assert!(layer_changes(&h.drain()).is_empty(), "on f, nothing capped");
    let congested = |h: &mut Harness, delivered| {
        h.input(Input::Congested {
            subscriber: ParticipantId(20),
            delivered_bits_per_second: delivered,
        })
        .unwrap();
    };
    // The path delivers 800 kbit/s of the ~1 Mbit/s sent: h (~360 kbit/s) fits the budget
    // (75 % of it, less the usual headroom), and its keyframe crosses in ~150 ms.
    congested(&mut h, 800_000);
    let outputs = h.drain();
    assert_eq!(
        layer_changes(&outputs),
        vec![(Some(2), 1, LayerChangeReason::Bandwidth)]
    );
    // f is shed at once (not fed into the queue), until h's keyframe.
    stream.frame(&mut h, &[0, 1, 2], &[]);
    assert!(
        forwards_to(&h.drain(), 1).is_empty(),
        "the congested layer is shed"
    );
    stream.frame(&mut h, &[0, 1, 2], &[1]);
    let switched = forwards_to(&h.drain(), 1);
    assert_eq!(switched.iter().map(layer_of).collect::<Vec<_>>(), vec![1]);
    // A second signal inside the cooldown does nothing, however low.
    congested(&mut h, 100_000);
    assert!(layer_changes(&h.drain()).is_empty());
    // GCC still says 5 Mbit/s, but what the path delivered bounds the allocation for the hold.
    let mut outputs = Vec::new();
    for _ in 0..20 {
        outputs.extend(run_frames(&mut h, &mut stream, &[0, 1, 2], 500));
        h.bandwidth(20, 5_000_000);
    }
    outputs.extend(h.drain());
    assert!(
        !layer_changes(&outputs).iter().any(|c| c.1 == 2),
        "back to f within the hold: {:?}",
        layer_changes(&outputs)
    );
    // After it, the estimate applies again (and its own upgrade hold).
    for _ in 0..12 {
        outputs.extend(run_frames(&mut h, &mut stream, &[0, 1, 2], 500));
        h.bandwidth(20, 5_000_000);
    }
    outputs.extend(h.drain());
    assert_eq!(
        layer_changes(&outputs).last().map(|c| c.1),
        Some(2),
        "f again after the hold: {:?}",
        layer_changes(&outputs)
    );
}

pub(super) fn probes(outputs: &[Output]) -> Vec<(u64, u64)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Probe {
                subscriber,
                bits_per_second,
                ..
            } => Some((subscriber.0, *bits_per_second)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_upgrade_is_probed_first_and_a_queue_during_the_probe_cancels_it() {
    let (mut h, mut stream) = streaming_at_real_rates();
    let rates = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap();
    let (q, f) = (rates[0][2], rates[2][2]);
    // Down to q at once: nothing to probe on the way down.
    h.bandwidth(20, q * 100 / 85 + 10_000);
    let outputs = h.drain();
    assert_eq!(layer_changes(&outputs).last().map(|c| c.1), Some(0));
    assert!(probes(&outputs).is_empty());
    // Room for f: the upgrade waits for its hold, and the path is probed meanwhile with what
    // f adds over q (and 10 % more).
    h.bandwidth(20, 5_000_000);
    let outputs = h.drain();
    assert!(layer_changes(&outputs).is_empty(), "the hold comes first");
    let probed = probes(&outputs);
    assert_eq!(probed.len(), 1, "{probed:?}");
    assert_eq!(probed[0].0, 20);
    let expected = (f - q) * 110 / 100;
    assert!(
        probed[0].1.abs_diff(expected) <= expected / 50,
        "{probed:?} vs {expected}"
    );
    // The probe built a queue: the path delivers 300 kbit/s. The upgrade never comes.
    h.input(Input::Congested {
        subscriber: ParticipantId(20),
        delivered_bits_per_second: 300_000,
    })
    .unwrap();
    let mut outputs = Vec::new();
    for _ in 0..10 {
        outputs.extend(run_frames(&mut h, &mut stream, &[0, 1, 2], 500));
        h.bandwidth(20, 5_000_000);
    }
    outputs.extend(h.drain());
    assert!(
        !layer_changes(&outputs).iter().any(|c| c.1 > 0),
        "moved up into a path that failed its probe: {:?}",
        layer_changes(&outputs)
    );
    assert!(probes(&outputs).is_empty(), "no probe beyond the budget");
}

#[test]
fn a_failed_probe_keeps_the_subscriber_where_it_is_then_probes_again_after_the_hold() {
    let (mut h, mut stream) = streaming_at_real_rates();
    let rates = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap();
    let h_rate = rates[1][2];
    h.bandwidth(20, h_rate * 100 / 85 + 10_000);
    stream.frame(&mut h, &[0, 1, 2], &[1]);
    let outputs = h.drain();
    assert_eq!(
        layer_changes(&outputs).last().map(|c| c.0),
        Some(Some(1)),
        "on h"
    );
    h.bandwidth(20, 5_000_000);
    assert_eq!(probes(&h.drain()).len(), 1, "f is probed");
    // The probe built a queue while h streamed at its rate: h stays, f does not come.
    h.input(Input::ProbeFailed {
        subscriber: ParticipantId(20),
        bits_per_second: h_rate,
    })
    .unwrap();
    let mut outputs = h.drain();
    for _ in 0..14 {
        outputs.extend(run_frames(&mut h, &mut stream, &[0, 1, 2], 500));
        h.bandwidth(20, 5_000_000);
    }
    outputs.extend(h.drain());
    assert!(
        layer_changes(&outputs).is_empty(),
        "neither down nor up within the hold: {:?}",
        layer_changes(&outputs)
    );
    assert!(probes(&outputs).is_empty(), "no probe within the hold");
    // After the hold the estimate applies again: f is probed anew.
    for _ in 0..4 {
        outputs.extend(run_frames(&mut h, &mut stream, &[0, 1, 2], 500));
        h.bandwidth(20, 5_000_000);
    }
    outputs.extend(h.drain());
    assert_eq!(probes(&outputs).len(), 1, "probed again after the hold");
}

#[test]
fn a_congested_path_that_delivers_little_drops_to_the_lowest_layer() {
    let (mut h, _stream) = streaming_at_real_rates();
    h.input(Input::Congested {
        subscriber: ParticipantId(20),
        delivered_bits_per_second: 350_000,
    })
    .unwrap();
    assert_eq!(
        layer_changes(&h.drain()),
        vec![(Some(2), 0, LayerChangeReason::Bandwidth)]
    );
}

#[test]
fn dynacast_resumes_at_once_and_keeps_a_layer_through_quick_changes() {
    let (mut h, mut stream) = streaming();
    h.prefer(1, 0);
    stream.frame(&mut h, &[0, 1, 2], &[0]);
    run_frames(&mut h, &mut stream, &[0, 1, 2], PAST_PAUSE_DELAY_MS);
    for _ in 0..30 {
        stream.frame(&mut h, &[0], &[]);
        h.timeout();
    }
    h.drain();
    // f asked for (resumed at once), then q before f could come back, then f again: f stays
    // on through the change of mind instead of being paused and resumed.
    let mut outputs = Vec::new();
    for layer in [2, 0, 2] {
        h.prefer(1, layer);
        outputs.extend(h.drain());
        for _ in 0..10 {
            stream.frame(&mut h, &[0], &[]);
            h.timeout();
            outputs.extend(h.drain());
        }
    }
    assert_eq!(dynacast(&outputs), vec![vec![true, false, true]]);
}

#[test]
fn a_paused_subscription_forwards_nothing_and_resumes_contiguously_at_a_keyframe() {
    let (mut h, mut stream) = streaming();
    let before = forwards_to(&h.drain(), 1);
    let last_seq = before.last().map(|p| p.sequence_number);
    h.input(Input::SetPaused {
        subscription: SubscriptionId(1),
        paused: true,
    })
    .unwrap();
    let outputs = run_frames(&mut h, &mut stream, &[0, 1, 2], PAST_PAUSE_DELAY_MS);
    assert!(
        forwards_to(&outputs, 1).is_empty(),
        "paused: nothing forwarded"
    );
    assert_eq!(
        dynacast(&outputs).last(),
        Some(&vec![true, false, false]),
        "nobody watches h or f any more"
    );
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, Output::RequestKeyframe { .. })),
        "a paused subscription asks for no keyframe"
    );
    let stats = h.room.subscription_stats(SubscriptionId(1)).unwrap();
    assert!(stats.drops.get(DropReason::Paused) >= 30);

    h.input(Input::SetPaused {
        subscription: SubscriptionId(1),
        paused: false,
    })
    .unwrap();
    let resumed = h.drain();
    assert!(
        resumed
            .iter()
            .any(|o| matches!(o, Output::RequestKeyframe { .. })),
        "resuming asks for a keyframe: {resumed:?}"
    );
    assert_eq!(dynacast(&resumed), vec![vec![true, false, true]]);
    // Delta frames wait; the keyframe restarts forwarding right after the last packet sent.
    stream.frame(&mut h, &[0, 1, 2], &[]);
    assert!(forwards_to(&h.drain(), 1).is_empty());
    stream.frame(&mut h, &[0, 1, 2], &[2]);
    let got = forwards_to(&h.drain(), 1);
    assert_eq!(got.len(), 1);
    assert!(is_key(&got[0]) && layer_of(&got[0]) == 2);
    if let Some(last) = last_seq {
        assert_eq!(got[0].sequence_number, last.wrapping_add(1));
    }
}

#[test]
fn a_muted_publication_forwards_nothing_to_anyone_and_unmutes_contiguously_at_a_keyframe() {
    let (mut h, mut stream) = streaming();
    h.subscribe(2, 21, PUB);
    stream.frame(&mut h, &[0, 1, 2], &[0, 1, 2]);
    let before = h.drain();
    let last_seq = forwards_to(&before, 1).last().map(|p| p.sequence_number);
    assert!(
        !forwards_to(&before, 2).is_empty(),
        "both subscriptions receive"
    );
    h.input(Input::SetMuted {
        publication: PublicationId(PUB),
        muted: true,
    })
    .unwrap();
    let outputs = run_frames(&mut h, &mut stream, &[0, 1, 2], PAST_PAUSE_DELAY_MS);
    assert!(
        forwards(&outputs).is_empty(),
        "muted: nothing forwarded to any subscription"
    );
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, Output::RequestKeyframe { .. })),
        "a muted publication is asked for no keyframe"
    );
    let stats = h.room.subscription_stats(SubscriptionId(1)).unwrap();
    assert!(stats.drops.get(DropReason::Muted) >= 30);
    // A subscription added while muted receives nothing either.
    h.subscribe(3, 22, PUB);
    stream.frame(&mut h, &[0, 1, 2], &[]);
    assert!(
        forwards(&h.drain()).is_empty(),
        "a new subscriber of a muted publication"
    );
    // Muting twice, or a subscriber's own pause and resume meanwhile, changes nothing.
    h.input(Input::SetMuted {
        publication: PublicationId(PUB),
        muted: true,
    })
    .unwrap();
    for paused in [true, false] {
        h.input(Input::SetPaused {
            subscription: SubscriptionId(2),
            paused,
        })
        .unwrap();
    }
    stream.frame(&mut h, &[0, 1, 2], &[]);
    assert!(forwards(&h.drain()).is_empty(), "still muted");

    h.input(Input::SetMuted {
        publication: PublicationId(PUB),
        muted: false,
    })
    .unwrap();
    // The keyframe request goes out within the throttle's interval (subscription 2 asked
    // for one before the mute); delta frames wait for it.
    let unmuted = run_frames(&mut h, &mut stream, &[0, 1, 2], 1500);
    assert!(
        unmuted
            .iter()
            .any(|o| matches!(o, Output::RequestKeyframe { .. })),
        "unmuting asks for a keyframe: {unmuted:?}"
    );
    assert!(forwards_to(&unmuted, 1).is_empty(), "delta frames wait");
    stream.frame(&mut h, &[0, 1, 2], &[0, 1, 2]);
    let resumed = h.drain();
    let got = forwards_to(&resumed, 1);
    assert_eq!(got.len(), 1);
    assert!(is_key(&got[0]));
    if let Some(last) = last_seq {
        assert_eq!(got[0].sequence_number, last.wrapping_add(1), "no gap");
    }
    assert!(
        !forwards_to(&resumed, 3).is_empty(),
        "the late subscriber starts too"
    );
    assert!(
        h.input(Input::SetMuted {
            publication: PublicationId(999),
            muted: true,
        })
        .is_err()
    );
}
