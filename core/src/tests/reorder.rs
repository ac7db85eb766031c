//! Reordered, duplicated and late packets on the forwarding path.

use super::*;
use crate::DropReason;

fn send(h: &mut Harness, seqs_in: &[u16]) -> Vec<RtpPacket> {
    for &seq in seqs_in {
        h.rtp(1, packet(9, seq, u32::from(seq) * 960, OPUS));
    }
    forwards_to(&h.drain(), 1)
}

#[test]
fn gaps_are_preserved_and_a_late_packet_gets_its_slot() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    let got = send(&mut h, &[100, 101, 103, 104, 102, 107, 105]);
    assert_eq!(
        seqs(&got),
        [0, 1, 3, 4, 2, 7, 5].map(|d| INITIAL_SEQ + d).to_vec()
    );
    let ts: Vec<u32> = got.iter().map(|p| p.timestamp).collect();
    assert_eq!(
        ts,
        [100, 101, 103, 104, 102, 107, 105]
            .map(|s| s * 960)
            .to_vec()
    );
}

#[test]
fn reordering_across_the_input_wrap_keeps_slots() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    let got = send(&mut h, &[65_534, 0, 65_535, 2, 1]);
    assert_eq!(
        seqs(&got),
        [0, 2, 1, 4, 3].map(|d| INITIAL_SEQ + d).to_vec()
    );
}

#[test]
fn packets_from_before_the_first_forwarded_are_too_old() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    let got = send(&mut h, &[200, 199, 201]);
    assert_eq!(seqs(&got), vec![INITIAL_SEQ, INITIAL_SEQ + 1]);
    let stats = h.room.subscription_stats(SubscriptionId(1)).unwrap();
    assert_eq!(stats.drops.get(DropReason::TooOld), 1);
    assert_eq!(stats.forwarded_packets, 2);
}

#[test]
fn too_old_is_per_subscription() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    h.rtp(1, packet(9, 10, 0, OPUS));
    h.rtp(1, packet(9, 12, 0, OPUS));
    h.subscribe(2, 3, 1);
    h.rtp(1, packet(9, 13, 0, OPUS));
    h.rtp(1, packet(9, 11, 0, OPUS)); // late: a slot for 1, before the start of 2
    let outputs = h.drain();
    assert_eq!(
        seqs(&forwards_to(&outputs, 1)),
        [0, 2, 3, 1].map(|d| INITIAL_SEQ + d).to_vec()
    );
    assert_eq!(seqs(&forwards_to(&outputs, 2)), vec![INITIAL_SEQ]);
    let stats = h.room.subscription_stats(SubscriptionId(2)).unwrap();
    assert_eq!(stats.drops.get(DropReason::TooOld), 1);
}

#[test]
fn video_packets_of_the_frame_before_the_keyframe_are_too_old() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.subscribe(1, 2, 1);
    h.rtp(1, packet(9, 11, 3000, VP8_KEY));
    h.rtp(1, packet(9, 10, 0, VP8_DELTA));
    h.rtp(1, packet(9, 12, 3000, VP8_CONT));
    assert_eq!(
        seqs(&forwards_to(&h.drain(), 1)),
        vec![INITIAL_SEQ, INITIAL_SEQ + 1]
    );
    let stats = h.room.subscription_stats(SubscriptionId(1)).unwrap();
    assert_eq!(stats.drops.get(DropReason::TooOld), 1);
}

#[test]
fn duplicates_are_dropped_once_per_publication() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    h.subscribe(2, 3, 1);
    let got = send(&mut h, &[5, 6, 6, 5, 7]);
    assert_eq!(
        seqs(&got),
        vec![INITIAL_SEQ, INITIAL_SEQ + 1, INITIAL_SEQ + 2]
    );
    let publication = h.room.publication_stats(PublicationId(1)).unwrap();
    assert_eq!(publication.dropped.get(DropReason::Duplicate), 2);
    assert_eq!(publication.received_packets, 5);
    let stats = h.room.subscription_stats(SubscriptionId(2)).unwrap();
    assert_eq!(stats.forwarded_packets, 3);
    assert_eq!(
        stats.drops.total(),
        0,
        "publication-level drops are not per subscription"
    );
}

#[test]
fn packets_far_behind_the_newest_are_too_old() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    let got = send(&mut h, &[1000, 3000, 1001]);
    assert_eq!(seqs(&got), vec![INITIAL_SEQ, INITIAL_SEQ + 2000]);
    let publication = h.room.publication_stats(PublicationId(1)).unwrap();
    assert_eq!(publication.dropped.get(DropReason::TooOld), 1);
}
