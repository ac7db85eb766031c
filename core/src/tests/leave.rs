//! A participant leaving takes its publications and subscriptions with it.

use std::collections::HashSet;

use super::*;

fn stream(
    h: &mut Harness,
    publication: u64,
    ssrc: u32,
    seqs_in: std::ops::Range<u16>,
) -> Vec<Output> {
    let mut out = Vec::new();
    for seq in seqs_in {
        h.rtp(publication, packet(ssrc, seq, u32::from(seq) * 960, OPUS));
        out.extend(h.drain());
        h.advance_ms(20);
    }
    out
}

#[test]
fn subscription_removed_mid_stream_gets_nothing_more() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    for n in 1..=3 {
        h.subscribe(n, 10 + n, 1);
    }
    let before = stream(&mut h, 1, 5, 0..5);
    h.input(Input::SubscriptionRemoved {
        subscription: SubscriptionId(2),
    })
    .unwrap();
    let after = stream(&mut h, 1, 5, 5..10);
    assert_eq!(forwards_to(&before, 2).len(), 5);
    assert!(forwards_to(&after, 2).is_empty());
    for n in [1, 3] {
        let all: Vec<_> = forwards_to(&before, n)
            .into_iter()
            .chain(forwards_to(&after, n))
            .collect();
        assert_eq!(
            seqs(&all),
            (0..10).map(|i| INITIAL_SEQ + i).collect::<Vec<_>>()
        );
    }
    assert_eq!(h.room.subscription_count(), 2);
    assert_eq!(h.room.subscription_stats(SubscriptionId(2)), None);
    assert_eq!(
        h.room
            .publication_stats(PublicationId(1))
            .unwrap()
            .subscriptions,
        2
    );
    assert_eq!(
        h.input(Input::KeyframeRequested {
            subscription: SubscriptionId(2)
        }),
        Err(crate::CoreError::UnknownSubscription(SubscriptionId(2)))
    );
}

#[test]
fn participant_left_removes_its_subscriptions_and_publications() {
    let mut h = Harness::new();
    // Participant 1 publishes 1; participant 2 publishes 2; both subscribe to each other,
    // participant 3 subscribes to both.
    h.publish(1, 1, Codec::Opus);
    h.publish(2, 2, Codec::Opus);
    h.subscribe(10, 2, 1);
    h.subscribe(11, 3, 1);
    h.subscribe(20, 1, 2);
    h.subscribe(21, 3, 2);
    let mut before = stream(&mut h, 1, 5, 0..3);
    before.extend(stream(&mut h, 2, 6, 0..3));

    h.input(Input::ParticipantLeft {
        participant: ParticipantId(2),
    })
    .unwrap();
    assert_eq!(h.room.publication_count(), 1);
    assert_eq!(
        h.room.subscription_count(),
        1,
        "only 3's subscription to 1 remains"
    );
    assert_eq!(h.room.publication_stats(PublicationId(2)), None);
    for gone in [10, 20, 21] {
        assert_eq!(h.room.subscription_stats(SubscriptionId(gone)), None);
    }

    let mut after = stream(&mut h, 1, 5, 3..6);
    after.extend(stream(&mut h, 2, 6, 3..6));
    let targets: HashSet<_> = forwards(&after).into_iter().map(|(s, _)| s).collect();
    assert_eq!(targets, HashSet::from([SubscriptionId(11)]));
    let all: Vec<_> = forwards_to(&before, 11)
        .into_iter()
        .chain(forwards_to(&after, 11))
        .collect();
    assert_eq!(
        seqs(&all),
        (0..6).map(|i| INITIAL_SEQ + i).collect::<Vec<_>>()
    );
    assert_eq!(
        h.room
            .stats()
            .dropped
            .get(crate::DropReason::UnknownPublication),
        3
    );

    // Leaving twice (or a participant never seen) is not an error.
    h.input(Input::ParticipantLeft {
        participant: ParticipantId(2),
    })
    .unwrap();
    h.input(Input::ParticipantLeft {
        participant: ParticipantId(99),
    })
    .unwrap();
}

#[test]
fn publication_removed_takes_its_subscriptions_and_pending_requests() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.publish(2, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    h.subscribe(2, 2, 2);
    h.rtp(1, packet(5, 0, 0, VP8_DELTA));
    h.advance_ms(10);
    h.request_keyframe(1);
    assert!(h.room.poll_timeout().is_some());
    h.drain();
    h.input(Input::PublicationRemoved {
        publication: PublicationId(1),
    })
    .unwrap();
    assert_eq!(h.room.poll_timeout(), None);
    assert_eq!(h.room.subscription_count(), 1);
    assert_eq!(h.room.publication_count(), 1);
    assert!(h.room.subscription_stats(SubscriptionId(2)).is_some());
    h.rtp(2, packet(6, 0, 0, OPUS));
    assert_eq!(forwards_to(&h.drain(), 2).len(), 1);
}
