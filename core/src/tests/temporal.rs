//! Temporal layers (VP8 L1T3) inside the simulcast path: which frames are forwarded, where
//! the temporal layer may change, the output numbering and picture ids over the frames
//! dropped, and the allocator lowering the frame rate before the resolution.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::rewrite::seq::SeqUnwrapper;
use crate::{DropReason, LayerChangeReason};

const PUB: u64 = 1;
const PUBLISHER: u64 = 10;
const SUBSCRIBER: u64 = 20;
const SSRC: [u32; 3] = [100, 200, 300];
/// Chrome's L1T3 pattern of TIDs, restarting at every keyframe.
const PATTERN: [u8; 4] = [0, 2, 1, 2];

/// One frame of one spatial layer as the publisher sends it.
#[derive(Clone, Debug)]
struct Frame {
    layer: u8,
    /// Index of the frame in its layer (its picture id is `PID0[layer] + index`).
    index: u16,
    keyframe: bool,
    tid: u8,
    sync: bool,
    packets: u8,
}

const PID0: [u16; 3] = [32_700, 100, 20_000];
const SEQ0: [u16; 3] = [65_500, 5000, 60_000];

/// One packet: its frame, its place in the layer's sequence and the packet itself.
#[derive(Clone, Debug)]
struct Sent {
    frame: usize,
    seq: u16,
    first_of_frame: bool,
    packet: RtpPacket,
}

/// Builds the packets of `frames` (each layer's frames in order) with VP8 descriptors
/// carrying a 15-bit picture id, TL0PICIDX, TID and Y, as Chrome sends them.
fn packets(frames: &[Frame]) -> Vec<Sent> {
    let mut seq = SEQ0;
    let mut tl0 = [0u8; 3];
    let mut out = Vec::new();
    for (f, frame) in frames.iter().enumerate() {
        let l = usize::from(frame.layer);
        if frame.tid == 0 {
            tl0[l] = tl0[l].wrapping_add(1);
        }
        let pid = (PID0[l] + frame.index) % (1 << 15);
        for k in 0..frame.packets {
            let first = k == 0;
            let mut payload = vec![
                if first { 0x90 } else { 0x80 },
                0xe0,
                0x80 | (pid >> 8) as u8,
                pid as u8,
                tl0[l],
                frame.tid << 6 | u8::from(frame.sync) << 5,
            ];
            payload.push(if frame.keyframe { 0x00 } else { 0x01 });
            payload.extend((f as u32).to_be_bytes());
            out.push(Sent {
                frame: f,
                seq: seq[l],
                first_of_frame: first,
                packet: RtpPacket {
                    ssrc: Ssrc(SSRC[l]),
                    payload_type: 96,
                    sequence_number: seq[l],
                    timestamp: 1000u32.wrapping_add(3000 * u32::from(frame.index)),
                    marker: k + 1 == frame.packets,
                    payload: bytes::Bytes::from(payload),
                    audio_level: None,
                    sampled_at: None,
                },
            });
            seq[l] = seq[l].wrapping_add(1);
        }
    }
    out
}

/// Frames of all three layers, interleaved in time: `keys[i]` keyframes at frame `i` of
/// every layer, `syncs[i]` the Y bit of non-base frames, `sizes[i]` packets per frame.
fn frames(count: usize, keys: &[bool], syncs: &[bool], sizes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut since_key = 0usize;
    for i in 0..count {
        let keyframe = i == 0 || keys.get(i).copied().unwrap_or(false);
        if keyframe {
            since_key = 0;
        }
        let tid = PATTERN[since_key % 4];
        since_key += 1;
        for layer in 0..3u8 {
            out.push(Frame {
                layer,
                index: i as u16,
                keyframe,
                tid,
                sync: tid > 0 && syncs.get(i).copied().unwrap_or(false),
                packets: sizes.get(i).copied().unwrap_or(1),
            });
        }
    }
    out
}

fn tag(packet: &RtpPacket) -> usize {
    let p = &packet.payload;
    u32::from_be_bytes([
        p[p.len() - 4],
        p[p.len() - 3],
        p[p.len() - 2],
        p[p.len() - 1],
    ]) as usize
}

fn out_picture_id(packet: &RtpPacket) -> u16 {
    (u16::from(packet.payload[2] & 0x7f) << 8) | u16::from(packet.payload[3])
}

fn out_tid(packet: &RtpPacket) -> u8 {
    packet.payload[5] >> 6
}

fn temporal_changes(outputs: &[Output]) -> Vec<(Option<u8>, u8, LayerChangeReason)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::LayersChanged {
                current,
                target,
                reason,
                ..
            } => Some((current.map(|l| l.temporal), target.temporal, *reason)),
            _ => None,
        })
        .collect()
}

fn prefer_temporal(h: &mut Harness, spatial: u8, temporal: Option<u8>) {
    h.input(Input::SetPreferredLayer {
        subscription: SubscriptionId(1),
        spatial,
        temporal,
    })
    .unwrap();
}

/// Publishes, subscribes on q (the lowest layer, so the first keyframe starts it) and
/// feeds `frames`, calling `control` before each frame index.
fn run_frames(
    frames: &[Frame],
    mut control: impl FnMut(&mut Harness, usize),
) -> (Harness, Vec<(usize, RtpPacket)>, Vec<Output>) {
    let mut h = Harness::new();
    h.publish_simulcast(PUB, PUBLISHER, 3);
    h.subscribe(1, SUBSCRIBER, PUB);
    prefer_temporal(&mut h, 0, None);
    h.drain();
    let mut forwarded = Vec::new();
    let mut all = Vec::new();
    let mut last_index = None;
    for sent in packets(frames) {
        let frame = &frames[sent.frame];
        if last_index != Some(frame.index) {
            last_index = Some(frame.index);
            h.advance_ms(33);
            control(&mut h, usize::from(frame.index));
        }
        h.rtp_on(PUB, frame.layer, sent.packet);
        let outputs = h.drain();
        forwarded.extend(forwards_to(&outputs, 1).into_iter().map(|p| (tag(&p), p)));
        all.extend(outputs);
    }
    (h, forwarded, all)
}

#[test]
fn temporal_zero_forwards_base_frames_with_contiguous_numbers_and_picture_ids() {
    let all_frames = frames(16, &[], &[], &[2; 16]);
    let (h, forwarded, outputs) = run_frames(&all_frames, |h, i| {
        if i == 4 {
            prefer_temporal(h, 0, Some(0));
        }
    });
    assert_eq!(
        temporal_changes(&outputs),
        vec![
            (Some(2), 2, LayerChangeReason::Switched),
            (Some(2), 0, LayerChangeReason::Requested),
            (Some(0), 0, LayerChangeReason::Switched),
        ]
    );
    let frames_sent: Vec<u16> = forwarded
        .iter()
        .map(|(f, _)| all_frames[*f].index)
        .collect();
    // Frames 0..4 all (2 packets each), then base frames 4, 8, 12 only.
    let mut expected: Vec<u16> = (0..4).flat_map(|i| [i, i]).collect();
    expected.extend([4, 4, 8, 8, 12, 12]);
    assert_eq!(frames_sent, expected);
    assert!(forwarded.iter().all(|(f, _)| all_frames[*f].layer == 0));
    let out_seqs: Vec<u16> = forwarded.iter().map(|(_, p)| p.sequence_number).collect();
    assert_eq!(
        out_seqs,
        (0..14).map(|i| INITIAL_SEQ + i).collect::<Vec<_>>(),
        "no sequence gap over the dropped frames"
    );
    let pids: Vec<u16> = forwarded.iter().map(|(_, p)| out_picture_id(p)).collect();
    let firsts: Vec<u16> = pids.iter().step_by(2).copied().collect();
    let expected_pids: Vec<u16> = (0..7).map(|i| (PID0[0] + i) % (1 << 15)).collect();
    assert_eq!(
        firsts, expected_pids,
        "picture ids consecutive over forwarded frames"
    );
    let stats = h.room.subscription_stats(SubscriptionId(1)).unwrap();
    // Frames 5, 6, 7, 9, 10, 11, 13, 14, 15 of q, 2 packets each.
    assert_eq!(stats.drops.get(DropReason::TemporalLayer), 18);
}

#[test]
fn back_up_one_layer_at_each_sync_frame() {
    // Y on frames 9 (TL2), 10 (TL1) and 13 (TL2).
    let mut syncs = [false; 20];
    for i in [9, 10, 13] {
        syncs[i] = true;
    }
    let all_frames = frames(20, &[], &syncs, &[1; 20]);
    let (_h, forwarded, outputs) = run_frames(&all_frames, |h, i| match i {
        2 => prefer_temporal(h, 0, Some(0)),
        8 => prefer_temporal(h, 0, None),
        _ => {}
    });
    let indexes: Vec<u16> = forwarded
        .iter()
        .map(|(f, _)| all_frames[*f].index)
        .collect();
    // Down at frame 2 (the next frame); TL2 sync at 9 cannot skip TL1; TL1 sync at 10 goes to 1
    // (11 is TL2, still dropped), 12 is base, TL2 sync at 13 goes to 2.
    assert_eq!(
        indexes,
        vec![0, 1, 4, 8, 10, 12, 13, 14, 15, 16, 17, 18, 19]
    );
    assert_eq!(
        temporal_changes(&outputs)
            .into_iter()
            .filter(|c| c.2 == LayerChangeReason::Switched)
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        vec![Some(2), Some(0), Some(1), Some(2)]
    );
    let out_seqs: Vec<u16> = forwarded.iter().map(|(_, p)| p.sequence_number).collect();
    assert_eq!(
        out_seqs,
        (0..13).map(|i| INITIAL_SEQ + i).collect::<Vec<_>>()
    );
    let pids: Vec<u16> = forwarded.iter().map(|(_, p)| out_picture_id(p)).collect();
    assert_eq!(
        pids,
        (0..13)
            .map(|i| (PID0[0] + i) % (1 << 15))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_keyframe_restores_every_temporal_layer_at_once() {
    let mut keys = [false; 12];
    keys[6] = true;
    let all_frames = frames(12, &keys, &[], &[1; 12]);
    let (_h, forwarded, _) = run_frames(&all_frames, |h, i| match i {
        1 => prefer_temporal(h, 0, Some(0)),
        3 => prefer_temporal(h, 0, Some(2)),
        _ => {}
    });
    let indexes: Vec<u16> = forwarded
        .iter()
        .map(|(f, _)| all_frames[*f].index)
        .collect();
    assert_eq!(indexes, vec![0, 4, 6, 7, 8, 9, 10, 11]);
}

#[test]
fn an_encoder_without_layer_sync_bits_gets_a_keyframe_to_climb_back() {
    // No Y bit anywhere; a keyframe only where the subscriber's request is answered.
    let all_frames = frames(80, &[], &[], &[1; 80]);
    let mut h = Harness::new();
    h.publish_simulcast(PUB, PUBLISHER, 3);
    h.subscribe(1, SUBSCRIBER, PUB);
    prefer_temporal(&mut h, 0, None);
    h.drain();
    let mut requested_at = None;
    let mut keyframe_sent_at = None;
    let mut forwarded_after_key = Vec::new();
    let mut last_index = None;
    for sent in packets(&all_frames) {
        let frame = &all_frames[sent.frame];
        let mut packet = sent.packet;
        if last_index != Some(frame.index) {
            last_index = Some(frame.index);
            h.advance_ms(33);
            match frame.index {
                2 => prefer_temporal(&mut h, 0, Some(0)),
                8 => prefer_temporal(&mut h, 0, None),
                _ => {}
            }
        }
        // The publisher answers the request with a keyframe on q at its next base frame.
        if frame.layer == 0
            && frame.tid == 0
            && keyframe_sent_at.is_none()
            && requested_at.is_some_and(|at| frame.index > at)
        {
            let mut payload = packet.payload.to_vec();
            payload[6] = 0x00; // the VP8 payload header's P bit clear: a keyframe
            packet.payload = bytes::Bytes::from(payload);
            keyframe_sent_at = Some(frame.index);
        }
        h.rtp_on(PUB, frame.layer, packet);
        let outputs = h.drain();
        if frame.index > 8
            && requested_at.is_none()
            && keyframe_requests(&outputs).contains(&(PublicationId(PUB), Ssrc(SSRC[0])))
        {
            requested_at = Some(frame.index);
        }
        if keyframe_sent_at.is_some() {
            forwarded_after_key.extend(forwards_to(&outputs, 1));
        }
    }
    // TL1 frames are 10, 14 … after the request for all layers at 8: the 12th is frame 54.
    assert_eq!(
        requested_at,
        Some(54),
        "the keyframe is asked for after 12 TL1 frames without Y"
    );
    assert!(keyframe_sent_at.is_some());
    // From the keyframe on every frame of q is forwarded: the frame rate is back.
    let tids: HashSet<u8> = forwarded_after_key.iter().map(out_tid).collect();
    assert_eq!(
        tids,
        HashSet::from([0, 1, 2]),
        "all temporal layers after the keyframe"
    );
}

/// Feeds one frame per layer with `bytes` per TID 0 packet and half that for the others,
/// 30 frames a second, for `ms`.
fn feed_l1t3(h: &mut Harness, index: &mut u16, ms: u64) {
    feed_l1t3_sized(h, index, ms, [4, 2, 2], u16::MAX);
}

/// As [`feed_l1t3`], with each TID's frames `quarters[tid]` quarters of the base size and a
/// keyframe every `keyframe_every` frames.
fn feed_l1t3_sized(
    h: &mut Harness,
    index: &mut u16,
    ms: u64,
    quarters: [usize; 3],
    keyframe_every: u16,
) {
    for _ in 0..ms / 33 {
        let i = *index;
        *index += 1;
        let tid = PATTERN[usize::from(i % 4)];
        for layer in 0..3u8 {
            let l = usize::from(layer);
            let pid = (PID0[l] + i) % (1 << 15);
            let size = [300usize, 1000, 3000][l] * quarters[usize::from(tid)] / 4;
            let mut payload = vec![0x90, 0xe0, 0x80 | (pid >> 8) as u8, pid as u8, 0, tid << 6];
            payload.push(if i.is_multiple_of(keyframe_every) {
                0x00
            } else {
                0x01
            });
            payload.resize(size, 0);
            h.rtp_on(
                PUB,
                layer,
                RtpPacket {
                    ssrc: Ssrc(SSRC[l]),
                    payload_type: 96,
                    sequence_number: i,
                    timestamp: u32::from(i) * 3000,
                    marker: true,
                    payload: bytes::Bytes::from(payload),
                    audio_level: None,
                    sampled_at: None,
                },
            );
        }
        h.advance_ms(33);
    }
}

fn caps(outputs: &[Output]) -> Vec<(u8, u8)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::LayersChanged {
                target,
                reason: LayerChangeReason::Bandwidth,
                ..
            } => Some((target.spatial, target.temporal)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_allocator_halves_the_frame_rate_before_the_resolution_and_raises_it_back() {
    let mut h = Harness::new();
    h.publish_simulcast(PUB, PUBLISHER, 3);
    h.subscribe(1, SUBSCRIBER, PUB);
    let mut index = 0;
    feed_l1t3(&mut h, &mut index, 1500);
    h.drain();
    let rates = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap();
    // f: base frames 3000 bytes, the others 1500: T0 = 8 of 30 frames = 24 000 of 69 000 bytes.
    let [f_t0, f_t1, f_all] = rates[2];
    assert!(f_t0 < f_t1 && f_t1 < f_all, "{rates:?}");
    let headroom = |bps: u64| bps * 100 / 85 + 1;

    // Enough for f at T0+T1 but not all of f: the frame rate goes down, not the resolution.
    h.bandwidth(SUBSCRIBER, headroom((f_t1 + f_all) / 2));
    assert_eq!(caps(&h.drain()), vec![(2, 1)]);
    // Less: not f at T0 only (a quarter of its frames), but h with all its frames, even where
    // f's base frames would fit.
    assert!(rates[1][2] < f_t0, "{rates:?}");
    h.bandwidth(SUBSCRIBER, headroom((f_t0 + f_t1) / 2));
    assert_eq!(caps(&h.drain()), vec![(1, 2)]);
    // Up again in reverse order, each step after the hold.
    h.bandwidth(SUBSCRIBER, headroom((f_t1 + f_all) / 2));
    assert!(caps(&h.drain()).is_empty(), "an upgrade waits for the hold");
    feed_l1t3(&mut h, &mut index, 3100);
    h.bandwidth(SUBSCRIBER, headroom((f_t1 + f_all) / 2));
    assert_eq!(caps(&h.drain()), vec![(2, 1)]);
    // The next step is tried once that one has settled, and taken after its own hold.
    h.bandwidth(SUBSCRIBER, 100_000_000);
    feed_l1t3(&mut h, &mut index, 2100);
    h.bandwidth(SUBSCRIBER, 100_000_000);
    assert!(caps(&h.drain()).is_empty(), "an upgrade waits for the hold");
    feed_l1t3(&mut h, &mut index, 3100);
    h.bandwidth(SUBSCRIBER, 100_000_000);
    assert_eq!(caps(&h.drain()), vec![(2, 2)]);
}

/// L1T3 streaming with base frames as large as Chrome's share of them (f at half its frame
/// rate is 43 % of f), subscribed with room for everything; returns the next frame index.
fn streaming_at_chrome_shares() -> (Harness, u16) {
    let mut h = Harness::new();
    h.publish_simulcast(PUB, PUBLISHER, 3);
    h.subscribe(1, SUBSCRIBER, PUB);
    let mut index = 0;
    feed_l1t3_sized(&mut h, &mut index, 1500, [4, 2, 4], 30);
    h.bandwidth(SUBSCRIBER, 100_000_000);
    h.drain();
    (h, index)
}

#[test]
fn a_remb_far_below_what_is_sent_lowers_the_resolution_where_the_same_measured_rate_would_not() {
    let (mut h, _) = streaming_at_chrome_shares();
    let rates = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap();
    // Below the 75 % of what is sent that a REMB must fall under to mean congestion.
    let path = rates[2][2] * 74 / 100;
    // Measured (transport-wide feedback): f stays, at half its frame rate.
    h.input(Input::Congested {
        subscriber: ParticipantId(SUBSCRIBER),
        delivered_bits_per_second: path,
    })
    .unwrap();
    assert_eq!(caps(&h.drain()), vec![(2, 1)], "{rates:?}");
    // The same value as a REMB (falling from one well above what is sent) is only a bound on
    // the path: down to the lowest layer, whose keyframe crosses first.
    let (mut h, mut index) = streaming_at_chrome_shares();
    h.remb(SUBSCRIBER, rates[2][2] * 3 / 2);
    assert!(caps(&h.drain()).is_empty(), "room to spare: f stays");
    h.remb(SUBSCRIBER, path);
    let changes = caps(&h.drain());
    assert!(
        matches!(changes.last(), Some((0, _))),
        "{changes:?} ({rates:?})"
    );
    // f is shed at once, until q's keyframe (none comes in these 100 ms).
    feed_l1t3_sized(&mut h, &mut index, 100, [4, 2, 4], 30);
    assert!(forwards_to(&h.drain(), 1).is_empty(), "f is shed");
    // As the REMB grows back well above what q costs, the allocator climbs within the
    // congestion budget, probing first.
    let mut probed = false;
    for _ in 0..12 {
        feed_l1t3_sized(&mut h, &mut index, 1_000, [4, 2, 4], 30);
        h.remb(SUBSCRIBER, rates[0][2] * 2);
        probed |= h.drain().iter().any(|o| matches!(o, Output::Probe { .. }));
    }
    assert!(probed, "the climb from the lowest layer is probed");
}

#[test]
fn a_remb_falling_on_the_lowest_layer_lowers_nothing() {
    let (mut h, mut index) = streaming_at_chrome_shares();
    let rates = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap();
    h.remb(SUBSCRIBER, rates[2][2] * 3 / 2);
    h.remb(SUBSCRIBER, rates[2][2] / 2);
    assert!(matches!(caps(&h.drain()).last(), Some((0, 2))), "{rates:?}");
    // On q at its full frame rate, its REMB falls again (libwebrtc's goes on falling while
    // what arrives shrinks): q keeps its frame rate, and nothing moves up for a while.
    feed_l1t3_sized(&mut h, &mut index, 1_500, [4, 2, 4], 30);
    h.drain();
    h.remb(SUBSCRIBER, rates[0][2] / 2);
    let outputs = h.drain();
    assert!(caps(&outputs).is_empty(), "{:?}", caps(&outputs));
    assert!(path_congested(&outputs), "{outputs:?}");
    feed_l1t3_sized(&mut h, &mut index, 300, [4, 2, 4], u16::MAX);
    let forwarded = forwards_to(&h.drain(), 1);
    assert!(
        forwarded.iter().any(|p| out_tid(p) == 2),
        "q at its full frame rate"
    );
}

#[test]
fn a_remb_falling_soon_after_a_frame_rate_upgrade_undoes_just_that_upgrade() {
    let mut h = Harness::new();
    h.publish_simulcast(PUB, PUBLISHER, 3);
    h.subscribe(1, SUBSCRIBER, PUB);
    prefer_temporal(&mut h, 1, None);
    let mut index = 0;
    feed_l1t3_sized(&mut h, &mut index, 1500, [4, 2, 4], 30);
    let rates = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap();
    // h at half its frame rate, on a measured estimate.
    h.bandwidth(SUBSCRIBER, (rates[1][1] + rates[1][2]) / 2 * 100 / 85);
    feed_l1t3_sized(&mut h, &mut index, 1500, [4, 2, 4], 30);
    assert_eq!(caps(&h.drain()).last(), Some(&(1, 1)), "{rates:?}");
    // The REMB has room to spare: h at its full rate is probed, then taken after the hold.
    let mut outputs = Vec::new();
    for _ in 0..5 {
        h.remb(SUBSCRIBER, rates[1][2] * 3);
        feed_l1t3_sized(&mut h, &mut index, 1_000, [4, 2, 4], 30);
        outputs.extend(h.drain());
    }
    assert_eq!(caps(&outputs).last(), Some(&(1, 2)));
    // Its REMB falls: the upgrade was too much. Back to half the frame rate of the same layer,
    // at once, with no keyframe to wait for, and the transport told the path is congested.
    h.remb(SUBSCRIBER, rates[1][1] / 2);
    let outputs = h.drain();
    assert_eq!(caps(&outputs), vec![(1, 1)]);
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, Output::RequestKeyframe { .. })),
        "{outputs:?}"
    );
    assert!(path_congested(&outputs), "{outputs:?}");
    feed_l1t3_sized(&mut h, &mut index, 300, [4, 2, 4], u16::MAX);
    let forwarded = forwards_to(&h.drain(), 1);
    assert!(!forwarded.is_empty(), "h goes on without a keyframe");
    assert!(
        forwarded.iter().all(|p| out_tid(p) <= 1),
        "at half the frame rate"
    );
    // Another fall, long after that upgrade, is congestion as after a cap: the lowest layer.
    feed_l1t3_sized(&mut h, &mut index, 6_000, [4, 2, 4], 30);
    h.drain();
    h.remb(SUBSCRIBER, rates[1][1] / 4);
    assert!(matches!(caps(&h.drain()).last(), Some((0, _))), "{rates:?}");
}

// ---------------------------------------------------------------------------------------
// Property test: random L1T3 simulcast streams, random wishes, loss and reordering.

#[derive(Clone, Debug)]
struct Plan {
    keys: Vec<bool>,
    syncs: Vec<bool>,
    sizes: Vec<u8>,
    /// Per packet: (lost, reorder jitter).
    network: Vec<(bool, usize)>,
    /// Per frame index: a new wish (spatial, temporal).
    wishes: Vec<Option<(u8, Option<u8>)>>,
}

const FRAMES: usize = 60;
const REORDER: usize = 4;

fn plan() -> impl Strategy<Value = Plan> {
    (
        proptest::collection::vec(proptest::bool::weighted(0.05), FRAMES),
        proptest::collection::vec(proptest::bool::weighted(0.4), FRAMES),
        proptest::collection::vec(1u8..=3, FRAMES),
        proptest::collection::vec((proptest::bool::weighted(0.05), 0..REORDER), FRAMES * 9),
        proptest::collection::vec(
            proptest::option::weighted(0.15, (0u8..3, proptest::option::of(0u8..3))),
            FRAMES,
        ),
    )
        .prop_map(|(keys, syncs, sizes, network, wishes)| Plan {
            keys,
            syncs,
            sizes,
            network,
            wishes,
        })
}

/// What happened to each frame, for the subscription.
#[derive(Default, Debug, Clone, Copy)]
struct FrameFate {
    forwarded: u32,
    temporal_dropped: u32,
    /// Its first temporal drop came after a packet of a later frame had been handled, too
    /// late to take its picture id out of the sequence.
    late_drop: bool,
}

/// One forwarded packet: (frame, input ext seq, output seq, output picture id, output ts).
type Forward = (usize, u64, u16, u16, u32);
/// A forwarded packet with its output seq extended: (frame, input seq, output seq, picture id, ts).
type Numbered = (usize, u64, u64, u16, u32);

fn run_plan(plan: &Plan) -> Result<(), TestCaseError> {
    let all_frames = frames(FRAMES, &plan.keys, &plan.syncs, &plan.sizes);
    let sent = packets(&all_frames);
    // Extended input sequence numbers in sending order, per packet.
    let mut unwrap: [SeqUnwrapper; 3] = Default::default();
    let ext_of: Vec<u64> = sent
        .iter()
        .map(|s| {
            unwrap[usize::from(all_frames[s.frame].layer)]
                .unwrap(s.seq)
                .0
        })
        .collect();
    // Reorder within the whole stream by a bounded jitter, then lose some packets.
    let mut keyed: Vec<(usize, usize)> = (0..sent.len())
        .map(|i| (i + plan.network[i % plan.network.len()].1, i))
        .collect();
    keyed.sort();
    let delivered: Vec<usize> = keyed
        .into_iter()
        .map(|(_, i)| i)
        .filter(|&i| !plan.network[i % plan.network.len()].0)
        .collect();

    let mut h = Harness::new();
    h.publish_simulcast(PUB, PUBLISHER, 3);
    h.subscribe(1, SUBSCRIBER, PUB);
    h.drain();
    let mut fates: Vec<FrameFate> = vec![FrameFate::default(); all_frames.len()];
    // The newest input seq of the forwarded layer handled (forwarded or dropped for its
    // temporal layer) since forwarding started on it.
    let mut newest_seq: Option<u64> = None;
    // Packets dropped for their temporal layer while the newest: they leave no gap.
    let mut removed: HashSet<(u8, u64)> = HashSet::new();
    let mut current_spatial: Option<u8> = None;
    let mut current_temporal: Option<u8> = None;
    let mut temporal_drops = 0;
    let mut last_wish_frame = None;
    let mut forwards: Vec<Forward> = Vec::new();
    let mut frames_forwarded: HashSet<usize> = HashSet::new();

    for &i in &delivered {
        let s = &sent[i];
        let ext = ext_of[i];
        let frame = &all_frames[s.frame];
        if last_wish_frame != Some(frame.index) {
            last_wish_frame = Some(frame.index);
            h.advance_ms(33);
            if let Some((spatial, temporal)) = plan.wishes[usize::from(frame.index)] {
                prefer_temporal(&mut h, spatial, temporal);
            }
        }
        h.advance_ms(1);
        h.rtp_on(PUB, frame.layer, s.packet.clone());
        let outputs = h.drain();
        let before = (current_spatial, current_temporal);
        for output in &outputs {
            if let Output::LayersChanged { current, .. } = output {
                current_spatial = current.map(|l| l.spatial);
                current_temporal = current.map(|l| l.temporal);
            }
        }
        if before.0 != current_spatial {
            newest_seq = None;
        }
        let stats = h.room.subscription_stats(SubscriptionId(1)).unwrap();
        let dropped_now = stats.drops.get(DropReason::TemporalLayer) - temporal_drops;
        temporal_drops += dropped_now;
        let got = forwards_to(&outputs, 1);
        prop_assert!(got.len() <= 1);
        let on_current = current_spatial == Some(frame.layer);
        if dropped_now > 0 {
            prop_assert!(on_current, "temporal drop on a layer not forwarded");
            let in_order = newest_seq.is_none_or(|n| ext > n);
            let fate = &mut fates[s.frame];
            if fate.temporal_dropped == 0 && !in_order {
                fate.late_drop = true;
            }
            fate.temporal_dropped += 1;
            if in_order {
                removed.insert((frame.layer, ext));
            }
        }
        if let Some(packet) = got.first() {
            prop_assert_eq!(tag(packet), s.frame);
            prop_assert!(on_current);
            fates[s.frame].forwarded += 1;
            forwards.push((
                s.frame,
                ext,
                packet.sequence_number,
                out_picture_id(packet),
                packet.timestamp,
            ));
            prop_assert_eq!(out_tid(packet), frame.tid, "TID passes unchanged");
            // No frame above the current temporal layer starts being forwarded.
            if frames_forwarded.insert(s.frame) {
                prop_assert!(
                    current_temporal.is_some_and(|t| frame.tid <= t),
                    "frame {} (TID {}) forwarded at temporal {:?}",
                    s.frame,
                    frame.tid,
                    current_temporal
                );
            }
        }
        if dropped_now > 0 || !got.is_empty() {
            newest_seq = Some(newest_seq.map_or(ext, |n| n.max(ext)));
        }
        // Up-switches happen only at a switching point of the spatial layer forwarded.
        if let ((Some(spatial_before), Some(t_before)), (Some(spatial), Some(t_after))) =
            (before, (current_spatial, current_temporal))
            && spatial_before == spatial
            && t_after > t_before
        {
            let keyframe = frame.keyframe && s.first_of_frame;
            let sync_step = frame.sync && frame.tid == t_before + 1 && t_after == frame.tid;
            prop_assert!(
                keyframe || sync_step,
                "up-switch {} -> {} at frame {} (TID {}, Y {}, key {})",
                t_before,
                t_after,
                s.frame,
                frame.tid,
                frame.sync,
                frame.keyframe
            );
        }
    }

    for (f, fate) in fates.iter().enumerate() {
        prop_assert!(
            fate.forwarded == 0 || fate.temporal_dropped == 0,
            "frame {} split: {:?}",
            f,
            fate
        );
        if fate.forwarded > 0 {
            check_references(&all_frames, &fates, f)?;
        }
    }
    check_numbering(&all_frames, &sent, &ext_of, &fates, &removed, &forwards)
}

/// Decodability, with the receiver's model of L1T3 (libwebrtc's VP8 reference finder): a
/// keyframe references nothing; a layer-sync frame the latest TL0 frame; any other frame the
/// latest frame of each temporal layer up to its own, since the last keyframe. None of those
/// may have been dropped for its temporal layer.
fn check_references(frames: &[Frame], fates: &[FrameFate], f: usize) -> Result<(), TestCaseError> {
    let frame = &frames[f];
    if frame.keyframe {
        return Ok(());
    }
    let same_layer_before: Vec<usize> = (0..f)
        .rev()
        .filter(|&g| frames[g].layer == frame.layer)
        .collect();
    let gop: Vec<usize> = match same_layer_before.iter().position(|&g| frames[g].keyframe) {
        Some(key) => same_layer_before[..=key].to_vec(),
        None => same_layer_before,
    };
    let top = if frame.sync { 0 } else { frame.tid };
    for layer in 0..=top {
        if let Some(&r) = gop.iter().find(|&&g| frames[g].tid == layer) {
            prop_assert!(
                fates[r].temporal_dropped == 0,
                "frame {} (TID {}, Y {}) forwarded but its reference {} (TID {}) was dropped",
                f,
                frame.tid,
                frame.sync,
                r,
                frames[r].tid
            );
        }
    }
    Ok(())
}

/// Within a run of one spatial layer, output numbers follow the input minus the packets
/// (picture ids: frames) removed in order; packets lost, or dropped too late to be removed,
/// stay gaps. Across runs, the sequence continues at the highest + 1 and time never goes back.
fn check_numbering(
    frames: &[Frame],
    sent: &[Sent],
    ext_of: &[u64],
    fates: &[FrameFate],
    removed: &HashSet<(u8, u64)>,
    forwards: &[Forward],
) -> Result<(), TestCaseError> {
    let ts_of: HashMap<(u8, u64), u32> = sent
        .iter()
        .zip(ext_of)
        .map(|(s, ext)| ((frames[s.frame].layer, *ext), s.packet.timestamp))
        .collect();
    let mut out_unwrap = SeqUnwrapper::default();
    let mut runs: Vec<Vec<Numbered>> = Vec::new();
    let mut last_layer = None;
    for &(frame, ext, out, pid, ts) in forwards {
        let layer = frames[frame].layer;
        let out_ext = out_unwrap.unwrap(out).0;
        if last_layer != Some(layer) {
            runs.push(Vec::new());
            last_layer = Some(layer);
        }
        if let Some(run) = runs.last_mut() {
            run.push((frame, ext, out_ext, pid, ts));
        }
    }
    let mut previous_max: Option<(u64, u32)> = None;
    for run in &runs {
        let first = run[0];
        if let Some((max_out, max_ts)) = previous_max {
            prop_assert_eq!(first.2, max_out + 1, "seq contiguous across a layer switch");
            prop_assert!(first.4 > max_ts, "ts must move on across a layer switch");
        }
        let layer = frames[first.0].layer;
        let mut sorted = run.clone();
        sorted.sort_by_key(|r| r.1);
        for pair in sorted.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let taken_out = (a.1 + 1..b.1)
                .filter(|seq| removed.contains(&(layer, *seq)))
                .count() as u64;
            prop_assert_eq!(
                b.2 - a.2,
                b.1 - a.1 - taken_out,
                "output seq {}..{} for input {}..{}",
                a.2,
                b.2,
                a.1,
                b.1
            );
            prop_assert_eq!(
                b.4.wrapping_sub(a.4),
                ts_of[&(layer, b.1)].wrapping_sub(ts_of[&(layer, a.1)]),
                "ts offset changed within a run"
            );
        }
        let mut frame_ids: Vec<(u16, u16)> = run.iter().map(|r| (frames[r.0].index, r.3)).collect();
        frame_ids.sort();
        frame_ids.dedup();
        for pair in frame_ids.windows(2) {
            let ((ia, pa), (ib, pb)) = (pair[0], pair[1]);
            prop_assert!(ia != ib, "frame {} sent with two picture ids", ia);
            let kept_slots = (ia + 1..ib)
                .filter(|&i| {
                    let fate = fates[usize::from(i) * 3 + usize::from(layer)];
                    fate.temporal_dropped == 0 || fate.late_drop
                })
                .count() as u16;
            prop_assert_eq!(
                pb.wrapping_sub(pa) % (1 << 15),
                1 + kept_slots,
                "picture ids {} -> {} for frames {} -> {}",
                pa,
                pb,
                ia,
                ib
            );
        }
        let max_out = run.iter().map(|r| r.2).max().unwrap_or(0);
        let max_ts = run.iter().map(|r| r.4).max().unwrap_or(0);
        previous_max = Some((max_out, max_ts));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn random_l1t3_streams_keep_temporal_invariants(plan in plan()) {
        run_plan(&plan)?;
    }
}
