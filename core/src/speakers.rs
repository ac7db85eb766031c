//! Active speaker detection: who is speaking, loudest first, from the RFC 6464 audio levels
//! publishers put on their audio packets (the `ssrc-audio-level` header extension).
//!
//! Per audio publication the detector counts, per packet, whether it is voiced and sums the
//! linear amplitude of the voiced ones (a few additions, no allocation). Every [`SPEAKER_INTERVAL`] it closes the interval:
//! an interval with enough voiced packets makes the publication a speaker at once (fast attack);
//! [`HANGOVER_INTERVALS`] intervals in a row without speech end it (so a breath or a pause
//! between two words does not flap). Speakers are ranked by how loud their voiced packets were
//! over the last two intervals, per participant (its loudest publication), and the ranking is announced only when
//! the ordered list of participants changes — the empty list included, once.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ids::{ParticipantId, PublicationId};
use super::room::Output;

/// How often speakers are re-ranked: short enough that a speaker shows within a few hundred
/// milliseconds, long enough to hold ~15 Opus packets, so one loud packet is not speech.
pub(crate) const SPEAKER_INTERVAL: Duration = Duration::from_millis(300);

/// RFC 6464 level of digital silence (-127 dBov).
const SILENCE: u8 = 127;

/// A packet is voiced when it is at least this loud: -50 dBov (the levels are -dBov, so lower is
/// louder). Speech at a normal distance from a microphone measures some 20–35 dB above that,
/// and the noise browsers leave after their noise suppression some 10–20 dB below it. A much
/// lower threshold lets background noise through; a much higher one misses quiet talkers
/// (ADR 0014).
const VOICED_MAX_DBOV: u8 = 50;

/// An interval is speech when at least this share of its packets is voiced: 6 of the 15 packets
/// of a 300 ms interval, i.e. 120 ms of voice. A click or one loud packet is not speech.
const SPEECH_MIN_VOICED_PERCENT: u64 = 40;

/// A speaker stops being one after this many intervals without speech in a row (900 ms). A
/// silence straddling two intervals can make both quiet once it is longer than 360 ms (60 % of
/// each), so two would drop a talker in a long breath; three hold through silences up to 660 ms
/// and still clear the list within about a second after the last word (ADR 0014).
const HANGOVER_INTERVALS: u8 = 3;

/// A speaker overtakes one ranked above it only when louder by this factor (3 dB), so two
/// speakers of about the same level do not swap places on every interval.
const OVERTAKE_RATIO: f32 = 1.412_537_5;

/// Linear amplitude of each RFC 6464 level, 10^(-level/20): the scale of WebRTC's `audioLevel`
/// (1.0 = 0 dBov, 0.5 ≈ -6 dBov), with 127 (silence) as 0.
const AMPLITUDE: [f32; 128] = amplitude_table();

const fn amplitude_table() -> [f32; 128] {
    /// 10^(-1/20): one dB down.
    const ONE_DB_DOWN: f64 = 0.891_250_938_133_745_5;
    let mut table = [0.0f32; 128];
    let mut amplitude = 1.0f64;
    let mut level = 0;
    while level < SILENCE as usize {
        table[level] = amplitude as f32;
        amplitude *= ONE_DB_DOWN;
        level += 1;
    }
    table
}

/// What one interval's packets of a publication added up to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct IntervalLevels {
    packets: u32,
    voiced: u32,
    /// Of the voiced packets only: pauses and noise say nothing about how loud someone speaks.
    voiced_amplitude_sum: f32,
}

impl IntervalLevels {
    fn add(&mut self, level: u8) {
        self.packets = self.packets.saturating_add(1);
        if level <= VOICED_MAX_DBOV {
            self.voiced = self.voiced.saturating_add(1);
            self.voiced_amplitude_sum += AMPLITUDE[usize::from(level)];
        }
    }

    fn is_speech(&self) -> bool {
        self.packets > 0
            && u64::from(self.voiced) * 100 >= u64::from(self.packets) * SPEECH_MIN_VOICED_PERCENT
    }
}

/// The audio activity of one publication.
#[derive(Debug)]
struct Activity {
    publisher: ParticipantId,
    current: IntervalLevels,
    previous: IntervalLevels,
    speaking: bool,
    quiet_intervals: u8,
}

impl Activity {
    /// Closes the current interval: updates `speaking` and returns the mean amplitude of the
    /// voiced packets of the last two intervals (0.0..=1.0; none is 0).
    fn close_interval(&mut self) -> f32 {
        if self.current.is_speech() {
            self.speaking = true;
            self.quiet_intervals = 0;
        } else if self.speaking {
            self.quiet_intervals += 1;
            if self.quiet_intervals >= HANGOVER_INTERVALS {
                self.speaking = false;
                self.quiet_intervals = 0;
            }
        }
        let voiced = self.previous.voiced.saturating_add(self.current.voiced);
        let level = if voiced == 0 {
            0.0
        } else {
            (self.previous.voiced_amplitude_sum + self.current.voiced_amplitude_sum) / voiced as f32
        };
        self.previous = std::mem::take(&mut self.current);
        level.clamp(0.0, 1.0)
    }

    /// Whether the next interval can change anything: audio is arriving, or a speaker is still
    /// in its hangover.
    fn is_live(&self) -> bool {
        self.speaking || self.previous.packets > 0 || self.current.packets > 0
    }
}

/// Active speaker detection for one room. Driven by the [`Room`](super::Room): every audio
/// packet's level goes to [`observe`](Self::observe); [`handle_timeout`](Self::handle_timeout)
/// ranks and pushes [`Output::ActiveSpeakers`] when the ranking changed.
#[derive(Debug, Default)]
pub(crate) struct SpeakerDetector {
    publications: HashMap<PublicationId, Activity>,
    /// The ranking last announced (participants, loudest first, with their level then).
    announced: Vec<(ParticipantId, f32)>,
    /// The next ranking; `None` while no audio arrives and nobody is announced.
    next_ranking: Option<Instant>,
}

impl SpeakerDetector {
    /// Starts following an audio publication.
    pub(crate) fn add_publication(&mut self, publication: PublicationId, publisher: ParticipantId) {
        self.publications.insert(
            publication,
            Activity {
                publisher,
                current: IntervalLevels::default(),
                previous: IntervalLevels::default(),
                speaking: false,
                quiet_intervals: 0,
            },
        );
    }

    /// Stops following a publication; its participant leaves the ranking at the next interval
    /// (unless another of its publications keeps it there).
    pub(crate) fn remove_publication(&mut self, publication: PublicationId) {
        self.publications.remove(&publication);
    }

    /// One audio packet's RFC 6464 level (0 = 0 dBov, loudest; 127 = silence; above is treated
    /// as silence). Called per packet: no allocation, a few additions. Levels of publications not followed (video, or
    /// unknown) are ignored.
    pub(crate) fn observe(&mut self, now: Instant, publication: PublicationId, level: u8) {
        let Some(activity) = self.publications.get_mut(&publication) else {
            return;
        };
        activity.current.add(level);
        if self.next_ranking.is_none() {
            self.next_ranking = Some(now + SPEAKER_INTERVAL);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub(crate) fn timeout(&self) -> Option<Instant> {
        self.next_ranking
    }

    /// Closes the interval if it is due, and announces the ranking if it changed.
    pub(crate) fn handle_timeout(&mut self, now: Instant, outputs: &mut VecDeque<Output>) {
        if self.next_ranking.is_none_or(|due| now < due) {
            return;
        }
        let mut ranking: Vec<(ParticipantId, f32)> = Vec::new();
        for activity in self.publications.values_mut() {
            let level = activity.close_interval();
            if !activity.speaking {
                continue;
            }
            match ranking.iter_mut().find(|(p, _)| *p == activity.publisher) {
                Some((_, loudest)) => *loudest = loudest.max(level),
                None => ranking.push((activity.publisher, level)),
            }
        }
        let ranking = self.rank(ranking);
        let changed = ranking.len() != self.announced.len()
            || ranking
                .iter()
                .zip(&self.announced)
                .any(|((a, _), (b, _))| a != b);
        if changed {
            tracing::debug!(speakers = ?ranking, "active speakers changed");
            outputs.push_back(Output::ActiveSpeakers {
                speakers: ranking.clone(),
            });
        }
        self.announced = ranking;
        let live = !self.announced.is_empty() || self.publications.values().any(Activity::is_live);
        self.next_ranking = live.then_some(now + SPEAKER_INTERVAL);
    }

    /// Orders `speakers` loudest first, but keeps the announced order when the same participants
    /// speak and nobody is louder than someone ranked above it by [`OVERTAKE_RATIO`].
    fn rank(&self, mut speakers: Vec<(ParticipantId, f32)>) -> Vec<(ParticipantId, f32)> {
        let level_of = |participant: ParticipantId| {
            speakers
                .iter()
                .find(|(p, _)| *p == participant)
                .map(|(_, level)| *level)
        };
        let same_speakers = speakers.len() == self.announced.len()
            && self.announced.iter().all(|(p, _)| level_of(*p).is_some());
        if same_speakers {
            let levels: Vec<f32> = self
                .announced
                .iter()
                .filter_map(|(p, _)| level_of(*p))
                .collect();
            let overtaken = levels.iter().enumerate().any(|(position, above)| {
                levels[position + 1..]
                    .iter()
                    .any(|below| *below > above * OVERTAKE_RATIO)
            });
            if !overtaken {
                return self
                    .announced
                    .iter()
                    .zip(levels)
                    .map(|((p, _), level)| (*p, level))
                    .collect();
            }
        }
        // Loudest first; equal levels by participant id, so the order is deterministic.
        speakers.sort_by(|(a, level_a), (b, level_b)| level_b.total_cmp(level_a).then(a.cmp(b)));
        speakers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amplitude_follows_the_w3c_audio_level_scale() {
        assert_eq!(AMPLITUDE[0], 1.0);
        assert!((AMPLITUDE[6] - 0.501).abs() < 0.001, "{}", AMPLITUDE[6]);
        assert!((AMPLITUDE[20] - 0.1).abs() < 1e-4, "{}", AMPLITUDE[20]);
        assert!((AMPLITUDE[126] - 5.0e-7).abs() < 1e-8, "{}", AMPLITUDE[126]);
        assert_eq!(AMPLITUDE[127], 0.0);
    }

    #[test]
    fn only_voiced_packets_make_the_level() {
        let mut sums = IntervalLevels::default();
        sums.add(200); // out of range: silence
        sums.add(VOICED_MAX_DBOV + 1);
        sums.add(0);
        sums.add(20);
        assert_eq!(sums.packets, 4);
        assert_eq!(sums.voiced, 2);
        assert!((sums.voiced_amplitude_sum - 1.1).abs() < 1e-4);
    }

    #[test]
    fn speech_needs_enough_voiced_packets() {
        let mut sums = IntervalLevels::default();
        assert!(!sums.is_speech(), "no packets is no speech");
        for level in [20, 127, 127, 127, 127] {
            sums.add(level);
        }
        assert!(!sums.is_speech(), "one packet of five is a click");
        sums.add(VOICED_MAX_DBOV);
        assert!(!sums.is_speech());
        sums.add(30);
        sums.add(VOICED_MAX_DBOV + 1);
        assert!(!sums.is_speech(), "3 of 8 voiced");
        sums.add(10);
        assert!(sums.is_speech(), "4 of 9 voiced");
    }
}
