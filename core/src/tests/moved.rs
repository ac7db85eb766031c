//! A subscription moved to another publication, or parked and moved later: one output
//! stream on its SSRC, restarting at the new publication's keyframe.

use super::*;
use crate::{CoreError, DropReason};

fn move_to(h: &mut Harness, subscription: u64, publication: Option<u64>) -> Result<(), CoreError> {
    h.input(Input::SubscriptionMoved {
        subscription: SubscriptionId(subscription),
        publication: publication.map(PublicationId),
    })
}

/// Sends `count` one-packet frames of publication `publication` (SSRC `ssrc`), 33 ms apart,
/// the first a keyframe when `key`; returns the outputs.
fn frames(
    h: &mut Harness,
    publication: u64,
    ssrc: u32,
    seq0: u16,
    count: u16,
    key: bool,
) -> Vec<Output> {
    let mut outputs = Vec::new();
    for i in 0..count {
        let payload = if i == 0 && key { VP8_KEY } else { VP8_DELTA };
        let ts = 90_000 + 3000 * u32::from(i);
        h.rtp(publication, packet(ssrc, seq0.wrapping_add(i), ts, payload));
        outputs.extend(h.drain());
        h.advance_ms(33);
    }
    outputs
}

fn assert_one_stream(got: &[RtpPacket], count: u16) {
    assert_eq!(
        seqs(got),
        (0..count).map(|i| INITIAL_SEQ + i).collect::<Vec<_>>(),
        "contiguous sequence numbers across the move"
    );
    assert!(
        got.iter()
            .all(|p| p.ssrc == sub_ssrc(7) && p.payload_type == sub_pt(7))
    );
    assert!(
        got.windows(2)
            .all(|w| w[1].timestamp.wrapping_sub(w[0].timestamp) > 0
                && w[1].timestamp.wrapping_sub(w[0].timestamp) < u32::MAX / 2),
        "timestamps go forward"
    );
}

#[test]
fn a_moved_subscription_continues_its_stream_from_the_new_publications_keyframe() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.publish(2, 2, Codec::Vp8);
    h.subscribe(7, 9, 1);
    let mut out = frames(&mut h, 1, 1111, 100, 5, true);
    move_to(&mut h, 7, Some(2)).unwrap();
    let moved = h.drain();
    assert_eq!(
        keyframe_requests(&moved),
        vec![],
        "no SSRC of publication 2 is known yet to ask"
    );
    // Publication 1 reaches the subscription no more; 2's interframes wait for its keyframe.
    out.extend(frames(&mut h, 1, 1111, 105, 2, false));
    let waiting = frames(&mut h, 2, 2222, 7, 2, false);
    assert!(forwards_to(&waiting, 7).is_empty());
    assert_eq!(
        keyframe_requests(&waiting),
        vec![(PublicationId(2), Ssrc(2222))],
        "the new publication is asked for a keyframe"
    );
    out.extend(frames(&mut h, 2, 2222, 9, 4, true));
    let got = forwards_to(&out, 7);
    assert_one_stream(&got, 9);
    let stats = h.room.subscription_stats(SubscriptionId(7)).unwrap();
    assert_eq!(stats.drops.get(DropReason::WaitingForKeyframe), 2);
    assert_eq!(h.room.subscription_count(), 1);
    assert!(
        h.drain()
            .iter()
            .all(|o| !matches!(o, Output::Forward { .. })),
        "nothing else queued"
    );
}

#[test]
fn a_parked_subscription_outlives_its_publication_and_resumes_on_a_later_one() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.subscribe(7, 9, 1);
    let mut out = frames(&mut h, 1, 1111, 100, 3, true);
    move_to(&mut h, 7, None).unwrap();
    h.input(Input::PublicationRemoved {
        publication: PublicationId(1),
    })
    .unwrap();
    assert_eq!(h.room.subscription_count(), 1, "parked, not removed");
    h.advance_ms(2_000);
    h.publish(3, 4, Codec::Vp8);
    move_to(&mut h, 7, Some(3)).unwrap();
    out.extend(frames(&mut h, 3, 3333, 50_000, 3, true));
    let got = forwards_to(&out, 7);
    assert_one_stream(&got, 6);
    // The pause shows in the timestamps: two seconds and a frame.
    let step = got[3].timestamp.wrapping_sub(got[2].timestamp);
    assert_eq!(step, (33 + 2_000) * 90);
}

#[test]
fn audio_moves_at_once() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.publish(2, 2, Codec::Opus);
    h.subscribe(7, 9, 1);
    let mut out = Vec::new();
    h.rtp(1, packet(1, 10, 0, OPUS));
    out.extend(h.drain());
    h.advance_ms(20);
    move_to(&mut h, 7, Some(2)).unwrap();
    h.rtp(1, packet(1, 11, 960, OPUS));
    h.rtp(2, packet(2, 500, 77_777, OPUS));
    out.extend(h.drain());
    let got = forwards_to(&out, 7);
    assert_eq!(seqs(&got), vec![INITIAL_SEQ, INITIAL_SEQ + 1]);
    assert_eq!(got[1].timestamp, 20 * 48);
}

#[test]
fn moves_are_refused_without_changing_the_room() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.publish(2, 2, Codec::Opus);
    h.subscribe(7, 9, 1);
    assert_eq!(
        move_to(&mut h, 7, Some(2)),
        Err(CoreError::KindMismatch {
            subscription: SubscriptionId(7),
            publication: PublicationId(2),
        })
    );
    assert_eq!(
        move_to(&mut h, 7, Some(5)),
        Err(CoreError::UnknownPublication(PublicationId(5)))
    );
    assert_eq!(
        move_to(&mut h, 8, None),
        Err(CoreError::UnknownSubscription(SubscriptionId(8)))
    );
    let got = forwards_to(&frames(&mut h, 1, 1111, 0, 2, true), 7);
    assert_eq!(got.len(), 2, "still on publication 1");
    // A parked subscription ends with its subscriber, or when removed.
    move_to(&mut h, 7, None).unwrap();
    h.subscribe(6, 9, 1);
    move_to(&mut h, 6, None).unwrap();
    h.input(Input::SubscriptionRemoved {
        subscription: SubscriptionId(6),
    })
    .unwrap();
    assert_eq!(h.room.subscription_count(), 1);
    h.input(Input::ParticipantLeft {
        participant: ParticipantId(9),
    })
    .unwrap();
    assert_eq!(h.room.subscription_count(), 0);
    assert!(h.room.subscription_stats(SubscriptionId(7)).is_none());
}
