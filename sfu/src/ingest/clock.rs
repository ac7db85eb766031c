//! Where an RTMP stream's timeline sits on the server's clock.
//!
//! The encoder's timestamps say when it sampled each frame, on its own clock; the network and
//! the encoder's output buffering add a delay we cannot see. Sender reports towards viewers
//! need one mapping from that timeline to real time, shared by the audio and the video: with
//! it, Chromium lines the two tracks up by what the encoder sampled together, not by when
//! each one happened to leave Sluice (the AAC → Opus path and the writer queues delay them
//! differently).

use std::time::{Duration, Instant};

/// Maps stream-timeline microseconds to instants of the server's clock.
///
/// The message that arrived with the smallest delay so far defines the mapping (its delay is
/// taken as zero): an arrival earlier than the mapping predicts moves it, for both tracks at
/// once. So no sample is ever placed after its own arrival, and an encoder clock that runs
/// faster than ours is followed. One that runs slower only makes every sample look a little
/// older, equally for audio and video.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamClock {
    reference: Instant,
    /// The timeline position that `reference` stands for.
    timeline_us: i64,
}

impl StreamClock {
    /// The mapping a stream starts with: `timeline_us` was sampled as it `arrived`.
    pub(super) fn starting(arrived: Instant, timeline_us: i64) -> Self {
        Self {
            reference: arrived,
            timeline_us,
        }
    }

    /// A message of timeline position `timeline_us` arrived at `arrived`.
    pub(super) fn observe(&mut self, arrived: Instant, timeline_us: i64) {
        let since_reference_us = signed_micros(arrived, self.reference);
        let predicted_us = timeline_us.saturating_sub(self.timeline_us);
        if predicted_us > since_reference_us {
            self.timeline_us = timeline_us.saturating_sub(since_reference_us);
        }
    }

    /// When timeline position `timeline_us` was sampled; `None` only if the instant is not
    /// representable (a timeline decades away from the reference).
    pub(super) fn instant_of(&self, timeline_us: i64) -> Option<Instant> {
        let offset_us = timeline_us.saturating_sub(self.timeline_us);
        let offset = Duration::from_micros(offset_us.unsigned_abs());
        if offset_us >= 0 {
            self.reference.checked_add(offset)
        } else {
            self.reference.checked_sub(offset)
        }
    }
}

/// `later - earlier` in microseconds, negative when `later` is the earlier one.
fn signed_micros(later: Instant, earlier: Instant) -> i64 {
    match later.checked_duration_since(earlier) {
        Some(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        None => -i64::try_from(earlier.duration_since(later).as_micros()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000;

    #[test]
    fn samples_are_placed_by_the_first_arrival_and_the_timeline() {
        let t0 = Instant::now();
        let clock = StreamClock::starting(t0, 5_000 * MS);
        assert_eq!(clock.instant_of(5_000 * MS), Some(t0));
        assert_eq!(
            clock.instant_of(5_040 * MS),
            Some(t0 + Duration::from_millis(40))
        );
        let earlier = clock.instant_of(4_980 * MS);
        assert_eq!(earlier.map(|e| t0 - e), Some(Duration::from_millis(20)));
    }

    #[test]
    fn a_later_arrival_leaves_the_mapping_and_an_earlier_one_moves_it() {
        let t0 = Instant::now();
        let mut clock = StreamClock::starting(t0, 0);
        // 40 ms of media arriving 30 ms after it was due: a slower path, nothing changes.
        clock.observe(t0 + Duration::from_millis(70), 40 * MS);
        assert_eq!(
            clock.instant_of(40 * MS),
            Some(t0 + Duration::from_millis(40))
        );
        // 100 ms of media arriving only 90 ms in: the first arrival had been 10 ms late.
        clock.observe(t0 + Duration::from_millis(90), 100 * MS);
        assert_eq!(
            clock.instant_of(100 * MS),
            Some(t0 + Duration::from_millis(90))
        );
        assert_eq!(
            clock.instant_of(0),
            t0.checked_sub(Duration::from_millis(10))
        );
    }

    #[test]
    fn an_encoder_clock_running_fast_is_followed_so_no_sample_is_placed_after_its_arrival() {
        let t0 = Instant::now();
        let mut clock = StreamClock::starting(t0, 0);
        // The encoder's millisecond is 1.001 of ours: 10 s of its timeline in 9.99 s.
        for i in 1..=500_i64 {
            let timeline_us = i * 20 * MS;
            let arrived = t0 + Duration::from_micros((timeline_us as f64 / 1.001) as u64);
            clock.observe(arrived, timeline_us);
            let sampled = clock.instant_of(timeline_us).expect("representable");
            assert!(sampled <= arrived, "sample {i} placed after its arrival");
        }
    }
}
