//! Control inputs with unknown or duplicate ids, and configuration checks.

use super::*;
use crate::{CoreError, DropReason};

#[test]
fn unknown_ids_are_errors_and_change_nothing() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.subscribe(1, 2, 1);
    h.drain();
    let cases = [
        (
            Input::PublicationRemoved {
                publication: PublicationId(9),
            },
            CoreError::UnknownPublication(PublicationId(9)),
        ),
        (
            Input::SubscriptionAdded {
                subscription: SubscriptionId(2),
                subscriber: ParticipantId(2),
                publication: PublicationId(9),
                ssrc: Ssrc(1),
                payload_type: 96,
                preferred: None,
                paused: false,
            },
            CoreError::UnknownPublication(PublicationId(9)),
        ),
        (
            Input::SubscriptionRemoved {
                subscription: SubscriptionId(9),
            },
            CoreError::UnknownSubscription(SubscriptionId(9)),
        ),
        (
            Input::KeyframeRequested {
                subscription: SubscriptionId(9),
            },
            CoreError::UnknownSubscription(SubscriptionId(9)),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(h.input(input), Err(expected));
    }
    assert_eq!(
        (h.room.publication_count(), h.room.subscription_count()),
        (1, 1)
    );
    assert!(h.drain().is_empty());
}

#[test]
fn duplicate_ids_are_errors_and_change_nothing() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    let duplicate_publication = Input::PublicationAdded {
        publication: PublicationId(1),
        publisher: ParticipantId(5),
        kind: MediaKind::Video,
        codec: Codec::Vp8,
        clock_rate: 90_000,
        cache_since_keyframe: false,
        layers: 1,
    };
    assert_eq!(
        h.input(duplicate_publication),
        Err(CoreError::DuplicatePublication(PublicationId(1)))
    );
    h.publish(2, 1, Codec::Opus);
    // The same subscription id, even for another publication, is a duplicate.
    let duplicate_subscription = Input::SubscriptionAdded {
        subscription: SubscriptionId(1),
        subscriber: ParticipantId(3),
        publication: PublicationId(2),
        ssrc: Ssrc(1),
        payload_type: 96,
        preferred: None,
        paused: false,
    };
    assert_eq!(
        h.input(duplicate_subscription),
        Err(CoreError::DuplicateSubscription(SubscriptionId(1)))
    );
    assert_eq!(
        (h.room.publication_count(), h.room.subscription_count()),
        (2, 1)
    );
    // The original publication is untouched: still audio, still publisher 1.
    h.rtp(1, packet(1, 0, 0, OPUS));
    let outputs = h.drain();
    assert!(keyframe_requests(&outputs).is_empty());
    assert_eq!(forwards_to(&outputs, 1).len(), 1);
    assert_eq!(
        h.room
            .publication_stats(PublicationId(1))
            .unwrap()
            .publisher,
        ParticipantId(1)
    );
}

#[test]
fn rtp_for_unknown_publication_is_a_counted_drop() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    assert_eq!(
        h.input(Input::Rtp {
            publication: PublicationId(7),
            layer: 0,
            packet: packet(1, 0, 0, OPUS)
        }),
        Ok(())
    );
    h.rtp(7, packet(1, 1, 0, OPUS));
    assert!(h.drain().is_empty());
    assert_eq!(
        h.room.stats().dropped.get(DropReason::UnknownPublication),
        2
    );
    assert_eq!(h.room.stats().dropped.total(), 2);
    assert_eq!(
        h.room
            .subscription_stats(SubscriptionId(1))
            .unwrap()
            .drops
            .total(),
        0
    );
}

#[test]
fn error_messages_are_lowercase_and_name_the_id() {
    assert_eq!(
        CoreError::UnknownPublication(PublicationId(3)).to_string(),
        "unknown publication PU3"
    );
    assert_eq!(
        CoreError::UnknownSubscription(SubscriptionId(4)).to_string(),
        "unknown subscription SU4"
    );
    assert_eq!(
        CoreError::DuplicatePublication(PublicationId(5)).to_string(),
        "duplicate publication PU5"
    );
    assert_eq!(
        CoreError::DuplicateSubscription(SubscriptionId(6)).to_string(),
        "duplicate subscription SU6"
    );
}

#[test]
fn stats_of_unknown_ids_are_none() {
    let h = Harness::new();
    assert_eq!(h.room.subscription_stats(SubscriptionId(1)), None);
    assert_eq!(h.room.publication_stats(PublicationId(1)), None);
    assert_eq!(h.room.poll_timeout(), None);
}

#[test]
fn random_initial_sequence_when_not_configured() {
    let mut room = Room::new(RoomConfig::default());
    assert_eq!(
        RoomConfig::default().keyframe_request_interval,
        Duration::from_millis(500)
    );
    let now = Instant::now();
    room.handle_input(
        now,
        Input::PublicationAdded {
            publication: PublicationId(1),
            publisher: ParticipantId(1),
            kind: MediaKind::Audio,
            codec: Codec::Opus,
            clock_rate: 48_000,
            cache_since_keyframe: false,
            layers: 1,
        },
    )
    .unwrap();
    room.handle_input(
        now,
        Input::SubscriptionAdded {
            subscription: SubscriptionId(1),
            subscriber: ParticipantId(2),
            publication: PublicationId(1),
            ssrc: Ssrc(1),
            payload_type: 111,
            preferred: None,
            paused: false,
        },
    )
    .unwrap();
    room.handle_input(
        now,
        Input::Rtp {
            publication: PublicationId(1),
            layer: 0,
            packet: packet(1, 0, 0, OPUS),
        },
    )
    .unwrap();
    room.handle_input(
        now,
        Input::Rtp {
            publication: PublicationId(1),
            layer: 0,
            packet: packet(1, 1, 960, OPUS),
        },
    )
    .unwrap();
    let got: Vec<_> = std::iter::from_fn(|| room.poll_output()).collect();
    let got = forwards_to(&got, 1);
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1].sequence_number,
        got[0].sequence_number.wrapping_add(1)
    );
}

#[test]
fn config_validation() {
    assert_eq!(RoomConfig::default().validate(), Ok(()));
    assert_eq!(config().validate(), Ok(()));
    for interval in [Duration::ZERO, Duration::from_secs(11)] {
        let bad = RoomConfig {
            keyframe_request_interval: interval,
            ..RoomConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(crate::RoomConfigError::KeyframeRequestInterval(interval))
        );
    }
}
