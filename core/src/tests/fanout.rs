//! One publication forwarded to many subscribers, each with its own rewritten header.

use super::*;
use crate::DropReason;

#[test]
fn fan_out_to_five_subscribers_rewrites_headers_and_shares_payload() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    for n in 1..=5 {
        h.subscribe(n, 10 + n, 1);
    }
    // Input starts near both wrap points so the rewrite has to cross them too.
    let (seq0, ts0) = (65_530u16, u32::MAX - 4_000);
    let mut sent = Vec::new();
    for i in 0..20u16 {
        let frame = u32::from(i / 2);
        let payload = match (i, i % 2) {
            (0, _) => VP8_KEY,
            (_, 0) => VP8_DELTA,
            _ => VP8_CONT,
        };
        let mut p = packet(
            7777,
            seq0.wrapping_add(i),
            ts0.wrapping_add(frame * 3000),
            payload,
        );
        p.marker = i % 2 == 1;
        sent.push(p.clone());
        h.rtp(1, p);
        h.advance_ms(15);
    }
    let outputs = h.drain();
    assert!(
        keyframe_requests(&outputs).is_empty(),
        "stream started on a keyframe"
    );
    for n in 1..=5 {
        let got = forwards_to(&outputs, n);
        assert_eq!(got.len(), sent.len(), "subscription {n} gets every packet");
        let ts_shift = got[0].timestamp.wrapping_sub(sent[0].timestamp);
        for (i, (out, inp)) in got.iter().zip(&sent).enumerate() {
            assert_eq!(out.ssrc, sub_ssrc(n));
            assert_eq!(out.payload_type, sub_pt(n));
            assert_eq!(out.sequence_number, INITIAL_SEQ.wrapping_add(i as u16));
            assert_eq!(out.timestamp.wrapping_sub(inp.timestamp), ts_shift);
            assert_eq!(out.marker, inp.marker);
            assert_eq!(out.payload, inp.payload);
            assert_eq!(
                out.payload.as_ptr(),
                inp.payload.as_ptr(),
                "payload is shared, not copied"
            );
        }
        let stats = h.room.subscription_stats(SubscriptionId(n)).unwrap();
        assert_eq!(stats.forwarded_packets, 20);
        assert_eq!(
            stats.forwarded_bytes,
            sent.iter().map(|p| p.payload.len() as u64).sum::<u64>()
        );
        assert_eq!(stats.drops.total(), 0);
    }
    let publication = h.room.publication_stats(PublicationId(1)).unwrap();
    assert_eq!(publication.received_packets, 20);
    assert_eq!(publication.keyframes_received, 1);
    assert_eq!(publication.subscriptions, 5);
    assert_eq!(publication.dropped.get(DropReason::Duplicate), 0);
}

#[test]
fn outputs_of_one_packet_come_in_subscription_order() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    for n in [3, 1, 2] {
        h.subscribe(n, 10 + n, 1);
    }
    h.rtp(1, packet(1, 1, 1, OPUS));
    let order: Vec<_> = forwards(&h.drain()).into_iter().map(|(s, _)| s.0).collect();
    assert_eq!(order, vec![3, 1, 2]);
}

#[test]
fn publication_without_subscriptions_forwards_nothing() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.rtp(1, packet(1, 1, 1, VP8_KEY));
    assert!(h.drain().is_empty());
    assert_eq!(
        h.room
            .publication_stats(PublicationId(1))
            .unwrap()
            .received_packets,
        1
    );
}
