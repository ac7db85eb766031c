//! A publisher's new SSRC incarnation continuing the same output stream.

use super::*;
use crate::DropReason;

/// Sends `count` one-packet frames of a incarnation, `gap_ms` apart, the first a keyframe.
fn send_incarnation(
    h: &mut Harness,
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    count: u16,
    payload: &'static [u8],
    first: &'static [u8],
) -> Vec<Output> {
    let mut outputs = Vec::new();
    for i in 0..count {
        let p = if i == 0 { first } else { payload };
        h.rtp(
            1,
            packet(
                ssrc,
                seq0.wrapping_add(i),
                ts0.wrapping_add(3000 * u32::from(i)),
                p,
            ),
        );
        outputs.extend(h.drain());
        h.advance_ms(33);
    }
    outputs
}

#[test]
fn republish_keeps_output_seq_contiguous_and_ts_monotonic() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.subscribe(1, 2, 1);
    h.subscribe(2, 3, 1);
    assert!(
        h.drain().is_empty(),
        "no keyframe request before an SSRC is known"
    );

    // Incarnation A crosses both the u16 sequence and the u32 timestamp wrap.
    let mut out = send_incarnation(
        &mut h,
        1111,
        65_530,
        u32::MAX - 5_000,
        10,
        VP8_DELTA,
        VP8_KEY,
    );
    let last_a = h.now - Duration::from_millis(33);

    // Incarnation B: new SSRC, sequence jump, unrelated timestamp; two interframes first.
    h.advance_ms(100 - 33);
    h.rtp(1, packet(2222, 12_345, 777, VP8_DELTA));
    let switch = h.drain();
    assert!(forwards(&switch).is_empty());
    assert_eq!(
        keyframe_requests(&switch),
        vec![(PublicationId(1), Ssrc(2222))]
    );
    h.advance_ms(50);
    h.rtp(1, packet(2222, 12_346, 777 + 3000, VP8_DELTA));
    assert!(h.drain().is_empty(), "the second request is throttled");
    h.advance_ms(50);
    let first_b = h.now;
    out.extend(send_incarnation(
        &mut h,
        2222,
        12_347,
        777 + 6000,
        6,
        VP8_DELTA,
        VP8_KEY,
    ));
    let last_b = h.now - Duration::from_millis(33);

    // Incarnation C: immediately a keyframe, and both wraps again inside the incarnation.
    h.advance_ms(1_000 - 33);
    let first_c = h.now;
    out.extend(send_incarnation(
        &mut h,
        3333,
        65_534,
        u32::MAX - 1_000,
        5,
        VP8_DELTA,
        VP8_KEY,
    ));

    for n in [1, 2] {
        let got = forwards_to(&out, n);
        assert_eq!(got.len(), 10 + 6 + 5);
        let expected: Vec<u16> = (0..21).map(|i| INITIAL_SEQ.wrapping_add(i)).collect();
        assert_eq!(
            seqs(&got),
            expected,
            "output sequence numbers are contiguous"
        );
        assert!(
            got.iter()
                .all(|p| p.ssrc == sub_ssrc(n) && p.payload_type == sub_pt(n))
        );
        // First incarnation keeps its timestamps.
        assert_eq!(got[0].timestamp, u32::MAX - 5_000);
        let steps: Vec<u32> = got
            .windows(2)
            .map(|w| w[1].timestamp.wrapping_sub(w[0].timestamp))
            .collect();
        assert!(
            steps.iter().all(|&s| s > 0 && s < u32::MAX / 2),
            "ts strictly increases: {steps:?}"
        );
        // Across a switch the timestamp advances by the wall time since the last forward.
        let ticks = |from: Instant, to: Instant| (to - from).as_millis() as u32 * 90;
        assert_eq!(steps[9], ticks(last_a, first_b));
        assert_eq!(steps[15], ticks(last_b, first_c));
        assert!(
            steps
                .iter()
                .enumerate()
                .all(|(i, &s)| i == 9 || i == 15 || s == 3000)
        );
        let stats = h.room.subscription_stats(SubscriptionId(n)).unwrap();
        assert_eq!(stats.drops.get(DropReason::WaitingForKeyframe), 2);
    }
    let publication = h.room.publication_stats(PublicationId(1)).unwrap();
    assert_eq!(publication.incarnation_changes, 2);
    assert_eq!(publication.keyframes_received, 3);
    assert_eq!(publication.keyframes_requested, 1);
}

#[test]
fn deferred_request_after_republish_names_the_new_ssrc() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.subscribe(1, 2, 1);
    h.rtp(1, packet(1111, 0, 0, VP8_DELTA));
    assert_eq!(
        keyframe_requests(&h.drain()),
        vec![(PublicationId(1), Ssrc(1111))]
    );
    h.advance_ms(100);
    h.rtp(1, packet(2222, 0, 0, VP8_DELTA));
    assert!(h.drain().is_empty());
    let deadline = h.room.poll_timeout().unwrap();
    h.room.handle_timeout(deadline);
    assert_eq!(
        keyframe_requests(&h.drain()),
        vec![(PublicationId(1), Ssrc(2222))]
    );
}

#[test]
fn audio_incarnation_change_switches_at_once_with_continuity() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    let mut out = Vec::new();
    for i in 0..5u16 {
        h.rtp(1, packet(1, 40_000 + i, 960 * u32::from(i), OPUS));
        out.extend(h.drain());
        h.advance_ms(20);
    }
    h.advance_ms(40); // 60 ms since the last forwarded packet
    for i in 0..5u16 {
        h.rtp(1, packet(2, 3 + i, 123_456 + 960 * u32::from(i), OPUS));
        out.extend(h.drain());
        h.advance_ms(20);
    }
    assert!(
        keyframe_requests(&out).is_empty(),
        "audio never asks for keyframes"
    );
    let got = forwards_to(&out, 1);
    assert_eq!(
        seqs(&got),
        (0..10).map(|i| INITIAL_SEQ + i).collect::<Vec<_>>()
    );
    let ts: Vec<u32> = got.iter().map(|p| p.timestamp).collect();
    assert_eq!(ts[4], 3840);
    assert_eq!(ts[5], 3840 + 60 * 48);
    assert_eq!(ts[9], 3840 + 60 * 48 + 4 * 960);
}

#[test]
fn late_packets_of_the_replaced_incarnation_are_dropped_as_stale() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    h.rtp(1, packet(1, 10, 0, OPUS));
    h.rtp(1, packet(2, 500, 0, OPUS));
    h.advance_ms(10);
    h.rtp(1, packet(1, 11, 960, OPUS));
    h.rtp(1, packet(2, 501, 960, OPUS));
    let got = forwards_to(&h.drain(), 1);
    assert_eq!(
        seqs(&got),
        vec![INITIAL_SEQ, INITIAL_SEQ + 1, INITIAL_SEQ + 2]
    );
    let publication = h.room.publication_stats(PublicationId(1)).unwrap();
    assert_eq!(publication.dropped.get(DropReason::StaleIncarnation), 1);
    assert_eq!(publication.incarnation_changes, 1);

    // Long after the switch, the old SSRC is a genuine switch back.
    h.advance_ms(5_000);
    h.rtp(1, packet(1, 12, 1920, OPUS));
    let got = forwards_to(&h.drain(), 1);
    assert_eq!(seqs(&got), vec![INITIAL_SEQ + 3]);
    assert_eq!(
        h.room
            .publication_stats(PublicationId(1))
            .unwrap()
            .incarnation_changes,
        2
    );
}

#[test]
fn subscriber_joining_after_republish_starts_at_initial_seq() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.rtp(1, packet(1, 10, 0, OPUS));
    h.rtp(1, packet(2, 500, 7, OPUS));
    h.subscribe(1, 2, 1);
    h.rtp(1, packet(2, 501, 967, OPUS));
    let got = forwards_to(&h.drain(), 1);
    assert_eq!(seqs(&got), vec![INITIAL_SEQ]);
    assert_eq!(got[0].timestamp, 967);
}
