//! Active speaker detection, fed Opus packets with RFC 6464 levels every 20 ms on a fake clock.

use std::collections::HashMap;

use super::*;

const PACKET_MS: u64 = 20;

/// A room with audio publications whose publishers send a packet every 20 ms.
struct Talk {
    h: Harness,
    seq: HashMap<u64, u16>,
    /// Milliseconds since the test started.
    elapsed_ms: u64,
}

/// One `ActiveSpeakers` output: when (ms since the start) and who (participant, level).
type Announcement = (u64, Vec<(u64, f32)>);

impl Talk {
    fn new() -> Self {
        Talk {
            h: Harness::new(),
            seq: HashMap::new(),
            elapsed_ms: 0,
        }
    }

    /// Audio publication `publication` of participant `publisher`.
    fn publish(&mut self, publication: u64, publisher: u64) {
        self.h.publish(publication, publisher, Codec::Opus);
    }

    /// For `ms` milliseconds, each `(publication, level)` sends one packet every 20 ms with that
    /// level (`None`: the publication sends nothing); timeouts are handled when due. Returns the
    /// active speaker announcements made meanwhile.
    fn run(&mut self, ms: u64, levels: &[(u64, Option<u8>)]) -> Vec<Announcement> {
        let mut announced = Vec::new();
        for _ in 0..ms / PACKET_MS {
            for &(publication, level) in levels {
                let Some(level) = level else { continue };
                let seq = self.seq.entry(publication).or_insert(0);
                let mut p = packet(publication as u32, *seq, u32::from(*seq) * 960, OPUS);
                p.audio_level = Some(level);
                *seq = seq.wrapping_add(1);
                self.h.rtp(publication, p);
            }
            self.h.advance_ms(PACKET_MS);
            self.elapsed_ms += PACKET_MS;
            if self
                .h
                .room
                .poll_timeout()
                .is_some_and(|due| due <= self.h.now)
            {
                self.h.timeout();
            }
            announced.extend(self.announcements());
        }
        announced
    }

    fn announcements(&mut self) -> Vec<Announcement> {
        let elapsed = self.elapsed_ms;
        self.h
            .drain()
            .into_iter()
            .filter_map(|output| match output {
                Output::ActiveSpeakers { speakers } => Some((
                    elapsed,
                    speakers
                        .into_iter()
                        .map(|(p, level)| (p.0, level))
                        .collect(),
                )),
                _ => None,
            })
            .collect()
    }
}

fn who(announcement: &Announcement) -> Vec<u64> {
    announcement.1.iter().map(|(p, _)| *p).collect()
}

#[test]
fn a_speaker_is_announced_once_and_removed_once_silent() {
    let mut t = Talk::new();
    t.publish(1, 7);
    assert_eq!(
        t.run(1000, &[(1, Some(127))]),
        vec![],
        "silence is no speech"
    );

    let started = t.elapsed_ms;
    let speaking = t.run(3000, &[(1, Some(20))]);
    assert_eq!(speaking.len(), 1, "one announcement while nothing changes");
    let (at, speakers) = &speaking[0];
    assert!(
        at - started <= 600,
        "announced {} ms after speech began",
        at - started
    );
    assert_eq!(who(&speaking[0]), vec![7]);
    assert!(
        (speakers[0].1 - 0.1).abs() < 0.001,
        "-20 dBov is 0.1: {}",
        speakers[0].1
    );

    let stopped = t.elapsed_ms;
    let silent = t.run(3000, &[(1, Some(127))]);
    assert_eq!(silent.len(), 1, "the empty list once: {silent:?}");
    assert!(silent[0].1.is_empty());
    let after = silent[0].0 - stopped;
    assert!(
        (700..=1200).contains(&after),
        "removed {after} ms after silence began"
    );
}

#[test]
fn ticks_stop_when_audio_stops() {
    let mut t = Talk::new();
    t.publish(1, 7);
    assert_eq!(t.h.room.poll_timeout(), None);
    t.run(1000, &[(1, Some(20))]);
    assert!(t.h.room.poll_timeout().is_some());
    // The publisher stops sending altogether (no packets, not silent ones).
    let gone = t.run(2000, &[]);
    assert_eq!(gone.len(), 1);
    assert!(gone[0].1.is_empty());
    assert_eq!(t.h.room.poll_timeout(), None, "nothing left to rank");
}

#[test]
fn two_speakers_are_ordered_by_loudness() {
    let mut t = Talk::new();
    t.publish(1, 7);
    t.publish(2, 8);
    let first = t.run(1000, &[(1, Some(30)), (2, Some(10))]);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(who(&first[0]), vec![8, 7], "-10 dBov before -30 dBov");
    let levels: Vec<f32> = first[0].1.iter().map(|(_, l)| *l).collect();
    assert!(levels[0] > levels[1]);

    // Participant 7 gets 5 dB louder than 8: it overtakes.
    let swapped = t.run(1000, &[(1, Some(5)), (2, Some(10))]);
    assert_eq!(swapped.len(), 1, "{swapped:?}");
    assert_eq!(who(&swapped[0]), vec![7, 8]);
}

#[test]
fn speakers_of_about_the_same_level_do_not_swap() {
    let mut t = Talk::new();
    t.publish(1, 7);
    t.publish(2, 8);
    let first = t.run(1000, &[(1, Some(20)), (2, Some(21))]);
    assert_eq!(first.iter().map(who).collect::<Vec<_>>(), vec![vec![7, 8]]);
    // 8 is now 2 dB louder than 7, then 1 dB quieter again: within the 3 dB margin.
    let mut changes = t.run(1000, &[(1, Some(20)), (2, Some(18))]);
    changes.extend(t.run(1000, &[(1, Some(20)), (2, Some(21))]));
    assert_eq!(changes, vec![]);
}

#[test]
fn a_breath_does_not_flap_but_a_pause_ends_the_turn() {
    let mut t = Talk::new();
    t.publish(1, 7);
    let mut announced = t.run(1500, &[(1, Some(25))]);
    announced.extend(t.run(500, &[(1, Some(127))]));
    announced.extend(t.run(1500, &[(1, Some(25))]));
    assert_eq!(
        announced.iter().map(who).collect::<Vec<_>>(),
        vec![vec![7]],
        "a 500 ms breath keeps the speaker"
    );

    let paused = t.run(1500, &[(1, Some(127))]);
    assert_eq!(
        paused.iter().map(who).collect::<Vec<_>>(),
        vec![Vec::<u64>::new()]
    );
    let back = t.run(1000, &[(1, Some(25))]);
    assert_eq!(back.iter().map(who).collect::<Vec<_>>(), vec![vec![7]]);
}

#[test]
fn clicks_and_quiet_noise_are_not_speech() {
    let mut t = Talk::new();
    t.publish(1, 7);
    t.publish(2, 8);
    let mut announced = Vec::new();
    // A loud 20 ms click every 500 ms (Chromium's fake microphone beeps 20 ms at a time), and a
    // steady noise floor just below the voiced threshold.
    for _ in 0..10 {
        announced.extend(t.run(20, &[(1, Some(0)), (2, Some(55))]));
        announced.extend(t.run(480, &[(1, Some(127)), (2, Some(55))]));
    }
    assert_eq!(announced, vec![]);
}

#[test]
fn a_participant_is_listed_once_with_its_loudest_publication() {
    let mut t = Talk::new();
    t.publish(1, 7);
    t.publish(2, 7);
    t.publish(3, 8);
    let announced = t.run(1000, &[(1, Some(40)), (2, Some(6)), (3, Some(12))]);
    assert_eq!(announced.len(), 1);
    assert_eq!(who(&announced[0]), vec![7, 8]);
    assert!(
        (announced[0].1[0].1 - 0.5).abs() < 0.01,
        "{:?}",
        announced[0]
    );
}

#[test]
fn a_removed_publication_or_participant_leaves_the_list() {
    let mut t = Talk::new();
    t.publish(1, 7);
    t.publish(2, 8);
    let both = t.run(1000, &[(1, Some(10)), (2, Some(20))]);
    assert_eq!(both.iter().map(who).collect::<Vec<_>>(), vec![vec![7, 8]]);

    t.h.input(Input::PublicationRemoved {
        publication: PublicationId(1),
    })
    .unwrap();
    let one = t.run(400, &[(1, Some(10)), (2, Some(20))]);
    assert_eq!(one.iter().map(who).collect::<Vec<_>>(), vec![vec![8]]);

    t.h.input(Input::ParticipantLeft {
        participant: ParticipantId(8),
    })
    .unwrap();
    let none = t.run(1000, &[(2, Some(20))]);
    assert_eq!(
        none.iter().map(who).collect::<Vec<_>>(),
        vec![Vec::<u64>::new()]
    );
    assert_eq!(t.h.room.poll_timeout(), None);
}

#[test]
fn levels_on_video_or_unknown_publications_are_ignored() {
    let mut t = Talk::new();
    t.h.publish(1, 7, Codec::Vp8);
    let announced = t.run(1000, &[(1, Some(0)), (9, Some(0))]);
    assert_eq!(announced, vec![]);
    assert_eq!(t.h.room.poll_timeout(), None);
}

#[test]
fn forwarded_audio_keeps_the_publishers_level_for_the_subscribers_transport() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(12, 2, 1);
    for (seq, level) in [(0u16, Some(3u8)), (1, Some(127)), (2, None)] {
        let mut p = packet(1, seq, u32::from(seq) * 960, OPUS);
        p.audio_level = level;
        h.rtp(1, p);
    }
    let levels: Vec<Option<u8>> = forwards_to(&h.drain(), 12)
        .iter()
        .map(|p| p.audio_level)
        .collect();
    assert_eq!(levels, vec![Some(3), Some(127), None]);
}
