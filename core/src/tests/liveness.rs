//! Publisher liveness on a fake clock: a publication silent for the stall timeout (1.5 s by
//! default) is announced stalled once, and resumed with its next packet.

use super::*;

const STALL: Duration = Duration::from_millis(1500);

/// A harness whose room watches liveness as a deployed one does.
fn watched() -> Harness {
    let mut h = Harness::new();
    h.room = Room::new(RoomConfig {
        publication_stall_timeout: Some(STALL),
        ..config()
    });
    h
}

/// When a run that follows a sending one sees the stall: the last packet went out one 20 ms
/// step before the run started, so 1.5 s after it is 1 480 ms into the run.
const LAST_PACKET_PLUS_STALL: u64 = 1_480;

/// The liveness announcements among `outputs`: (publication, stalled).
fn liveness(outputs: &[Output]) -> Vec<(u64, bool)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::PublicationStalled { publication, .. } => Some((publication.0, true)),
            Output::PublicationResumed { publication, .. } => Some((publication.0, false)),
            _ => None,
        })
        .collect()
}

/// Runs the room's timers the way a driver does, every `step_ms` for `ms`, sending one packet
/// of each publication in `sending` per step; returns the announcements with the time they
/// were made (ms from the start of the run).
fn run(
    h: &mut Harness,
    ms: u64,
    step_ms: u64,
    sending: &[u64],
    seq: &mut u16,
) -> Vec<(u64, u64, bool)> {
    let mut seen = Vec::new();
    let mut elapsed = 0;
    while elapsed < ms {
        for &publication in sending {
            h.rtp(
                publication,
                packet(publication as u32, *seq, u32::from(*seq) * 960, OPUS),
            );
        }
        *seq = seq.wrapping_add(1);
        h.advance_ms(step_ms);
        elapsed += step_ms;
        if h.room.poll_timeout().is_some_and(|due| due <= h.now) {
            h.timeout();
        }
        seen.extend(
            liveness(&h.drain())
                .into_iter()
                .map(|(publication, stalled)| (elapsed, publication, stalled)),
        );
    }
    seen
}

#[test]
fn the_default_stall_timeout_tells_subscribers_within_two_seconds() {
    let config = RoomConfig::default();
    assert_eq!(config.publication_stall_timeout, Some(STALL));
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn a_silent_publication_stalls_once_and_resumes_with_its_next_packet() {
    let mut h = watched();
    h.publish(1, 10, Codec::Opus);
    h.subscribe(100, 20, 1);
    let mut seq = 0;
    assert_eq!(
        run(&mut h, 5_000, 20, &[1], &mut seq),
        vec![],
        "live while it sends"
    );

    // The publisher vanishes: stalled 1.5 s after its last packet, announced once.
    let stalled = run(&mut h, 10_000, 20, &[], &mut seq);
    assert_eq!(stalled, vec![(LAST_PACKET_PLUS_STALL, 1, true)]);
    assert_eq!(h.room.stalled_publications(), vec![PublicationId(1)]);
    assert_eq!(h.room.poll_timeout(), None, "nothing left to wait for");

    // Media returns: resumed at the first packet, not a timer later.
    h.rtp(1, packet(1, seq, u32::from(seq) * 960, OPUS));
    let outputs = h.drain();
    assert_eq!(liveness(&outputs), vec![(1, false)]);
    assert!(outputs.iter().any(|o| matches!(o, Output::PublicationResumed { publisher, .. } if *publisher == ParticipantId(10))));
    assert_eq!(h.room.stalled_publications(), vec![]);
    assert_eq!(h.room.poll_timeout(), Some(h.now + STALL));
}

#[test]
fn a_gap_shorter_than_the_timeout_is_not_a_stall() {
    let mut h = watched();
    h.publish(1, 10, Codec::Vp8);
    h.rtp(1, packet(1, 0, 0, VP8_KEY));
    for round in 0..20u16 {
        h.advance_ms(1_400);
        if h.room.poll_timeout().is_some_and(|due| due <= h.now) {
            h.timeout();
        }
        h.rtp(
            1,
            packet(1, round + 1, u32::from(round + 1) * 3000, VP8_DELTA),
        );
    }
    assert_eq!(liveness(&h.drain()), vec![]);
}

#[test]
fn each_publication_is_watched_on_its_own() {
    let mut h = watched();
    h.publish(1, 10, Codec::Opus);
    h.publish(2, 11, Codec::Opus);
    let mut seq = 0;
    run(&mut h, 1_000, 20, &[1, 2], &mut seq);
    // Publication 2 stops; 1 goes on.
    assert_eq!(
        run(&mut h, 4_000, 20, &[1], &mut seq),
        vec![(LAST_PACKET_PLUS_STALL, 2, true)]
    );
    // Both stop: only 1 is new.
    assert_eq!(
        run(&mut h, 4_000, 20, &[], &mut seq),
        vec![(LAST_PACKET_PLUS_STALL, 1, true)]
    );
    assert_eq!(
        h.room.stalled_publications(),
        vec![PublicationId(1), PublicationId(2)]
    );
}

#[test]
fn a_publication_that_never_sent_is_not_stalled() {
    let mut h = watched();
    h.publish(1, 10, Codec::Vp8);
    assert_eq!(h.room.poll_timeout(), None);
    let mut seq = 0;
    assert_eq!(run(&mut h, 10_000, 100, &[], &mut seq), vec![]);
}

#[test]
fn a_removed_publication_is_forgotten() {
    let mut h = watched();
    h.publish(1, 10, Codec::Opus);
    h.publish(2, 11, Codec::Opus);
    let mut seq = 0;
    run(&mut h, 100, 20, &[1, 2], &mut seq);
    h.input(Input::PublicationRemoved {
        publication: PublicationId(1),
    })
    .unwrap();
    h.input(Input::ParticipantLeft {
        participant: ParticipantId(11),
    })
    .unwrap();
    assert_eq!(h.room.poll_timeout(), None);
    assert_eq!(run(&mut h, 5_000, 100, &[], &mut seq), vec![]);
    assert_eq!(h.room.stalled_publications(), vec![]);
}

#[test]
fn the_stall_timeout_is_configured_and_validated() {
    let mut h = watched();
    h.room = Room::new(RoomConfig {
        publication_stall_timeout: Some(Duration::from_secs(3)),
        ..config()
    });
    h.publish(1, 10, Codec::Opus);
    let mut seq = 0;
    run(&mut h, 100, 20, &[1], &mut seq);
    assert_eq!(
        run(&mut h, 5_000, 20, &[], &mut seq),
        vec![(2_980, 1, true)]
    );
    for bad in [Duration::from_millis(100), Duration::from_secs(61)] {
        let config = RoomConfig {
            publication_stall_timeout: Some(bad),
            ..RoomConfig::default()
        };
        assert_eq!(
            config.validate(),
            Err(crate::RoomConfigError::PublicationStallTimeout(bad))
        );
    }
}

#[test]
fn without_a_stall_timeout_nothing_is_watched() {
    let mut h = Harness::new();
    h.publish(1, 10, Codec::Opus);
    let mut seq = 0;
    run(&mut h, 100, 20, &[1], &mut seq);
    assert_eq!(h.room.poll_timeout(), None);
    assert_eq!(run(&mut h, 5_000, 20, &[], &mut seq), vec![]);
}
