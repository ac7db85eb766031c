//! Video starting at keyframes, and keyframe requests on subscribe.

use super::*;
use crate::DropReason;

fn waiting(h: &Harness, subscription: u64) -> u64 {
    h.room
        .subscription_stats(SubscriptionId(subscription))
        .unwrap()
        .drops
        .get(DropReason::WaitingForKeyframe)
}

#[test]
fn vp8_subscription_waits_for_keyframe_then_forwards() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.subscribe(1, 2, 1);
    let stream = [
        VP8_DELTA, VP8_CONT, VP8_DELTA, VP8_KEY, VP8_CONT, VP8_DELTA, VP8_CONT,
    ];
    let mut got = Vec::new();
    for (i, payload) in stream.into_iter().enumerate() {
        h.rtp(1, packet(42, 500 + i as u16, 3000 * i as u32, payload));
        got.extend(forwards_to(&h.drain(), 1));
    }
    assert_eq!(got.len(), 4, "forwarding starts at the keyframe");
    assert_eq!(got[0].payload.as_ref(), VP8_KEY);
    assert_eq!(
        seqs(&got),
        vec![
            INITIAL_SEQ,
            INITIAL_SEQ + 1,
            INITIAL_SEQ + 2,
            INITIAL_SEQ + 3
        ]
    );
    assert_eq!(waiting(&h, 1), 3);
    let stats = h.room.subscription_stats(SubscriptionId(1)).unwrap();
    assert_eq!(stats.forwarded_packets, 4);
    assert_eq!(stats.drops.total(), 3);
    assert_eq!(
        h.room
            .publication_stats(PublicationId(1))
            .unwrap()
            .keyframes_received,
        1
    );
}

#[test]
fn h264_subscription_starts_at_sps_in_stap_a() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::H264);
    h.subscribe(1, 2, 1);
    let stream = [
        H264_NON_IDR,
        H264_FU_IDR_MIDDLE, // an IDR whose start was lost is no start point
        H264_STAP_SPS_PPS,
        H264_FU_IDR_START,
        H264_FU_IDR_MIDDLE,
        H264_NON_IDR,
    ];
    let mut got = Vec::new();
    for (i, payload) in stream.into_iter().enumerate() {
        // SPS/PPS and the IDR share a timestamp: one keyframe.
        let ts = if (2..=4).contains(&i) {
            9000
        } else {
            3000 * i as u32
        };
        h.rtp(1, packet(42, i as u16, ts, payload));
        got.extend(forwards_to(&h.drain(), 1));
    }
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].payload.as_ref(), H264_STAP_SPS_PPS);
    assert_eq!(waiting(&h, 1), 2);
    assert_eq!(
        h.room
            .publication_stats(PublicationId(1))
            .unwrap()
            .keyframes_received,
        1
    );
}

#[test]
fn h264_subscription_starts_at_fu_a_idr_start() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::H264);
    h.subscribe(1, 2, 1);
    for (i, payload) in [H264_NON_IDR, H264_FU_IDR_START, H264_FU_IDR_MIDDLE]
        .into_iter()
        .enumerate()
    {
        h.rtp(1, packet(42, i as u16, 0, payload));
    }
    let got = forwards_to(&h.drain(), 1);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].payload.as_ref(), H264_FU_IDR_START);
    assert_eq!(waiting(&h, 1), 1);
}

#[test]
fn late_video_subscriber_waits_for_the_next_keyframe() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.subscribe(1, 2, 1);
    h.rtp(1, packet(42, 0, 0, VP8_KEY));
    h.rtp(1, packet(42, 1, 3000, VP8_DELTA));
    h.subscribe(2, 3, 1);
    h.rtp(1, packet(42, 2, 6000, VP8_DELTA));
    h.rtp(1, packet(42, 3, 9000, VP8_KEY));
    let outputs = h.drain();
    assert_eq!(forwards_to(&outputs, 1).len(), 4);
    let late = forwards_to(&outputs, 2);
    assert_eq!(seqs(&late), vec![INITIAL_SEQ]);
    assert_eq!(late[0].timestamp, 9000);
    assert_eq!(waiting(&h, 2), 1);
}

#[test]
fn audio_subscription_forwards_at_once() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.rtp(1, packet(42, 0, 0, OPUS));
    h.subscribe(1, 2, 1);
    h.rtp(1, packet(42, 1, 960, OPUS));
    let outputs = h.drain();
    assert!(keyframe_requests(&outputs).is_empty());
    assert_eq!(seqs(&forwards_to(&outputs, 1)), vec![INITIAL_SEQ]);
    assert_eq!(
        h.room
            .publication_stats(PublicationId(1))
            .unwrap()
            .keyframes_received,
        0
    );
}

#[test]
fn video_of_unknown_codec_forwards_at_once() {
    let mut h = Harness::new();
    h.input(Input::PublicationAdded {
        publication: PublicationId(1),
        publisher: ParticipantId(1),
        kind: MediaKind::Video,
        codec: Codec::from_mime("video/AV1"),
        clock_rate: 90_000,
        cache_since_keyframe: false,
        layers: 1,
    })
    .unwrap();
    h.subscribe(1, 2, 1);
    h.rtp(1, packet(42, 0, 0, &[0x01, 0x02]));
    assert_eq!(forwards_to(&h.drain(), 1).len(), 1);
}

#[test]
fn malformed_video_payloads_are_forwarded_once_started_but_never_start() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.subscribe(1, 2, 1);
    h.rtp(1, packet(42, 0, 0, &[]));
    h.rtp(1, packet(42, 1, 0, &[0x80]));
    assert!(forwards_to(&h.drain(), 1).is_empty());
    h.rtp(1, packet(42, 2, 0, VP8_KEY));
    h.rtp(1, packet(42, 3, 0, &[0x80]));
    assert_eq!(forwards_to(&h.drain(), 1).len(), 2);
    assert_eq!(waiting(&h, 1), 2);
}
