//! A queue on a subscriber's path, seen in the round trips its receiver reports give.
//!
//! A client without transport-wide feedback tells us about its downlink only through its REMB,
//! which libwebrtc lowers only once its detector has seen the queue grow. The round trip of its
//! receiver reports (each echoes one of our sender reports) grows with the queue from the first
//! packet that waits in it, so it shows the same queue about one report earlier, and shows the
//! queue a probe builds, which the REMB reflects only once the estimator calls it overuse
//! (ADR 0025).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Round trips are compared with the smallest of this long: the path without a queue.
const BASELINE_WINDOW: Duration = Duration::from_secs(10);
/// At most this many round trips are kept (a client reports 4–5 times a second; a flood of
/// reports must not grow the window).
const MAX_SAMPLES: usize = 128;
/// The least rise above the baseline taken for a queue. Round trips on an idle path vary by a
/// few milliseconds; 30 ms of queue is a tenth of the 250 ms a path typically buffers.
const QUEUE_MIN: Duration = Duration::from_millis(30);
/// On a path whose round trips vary more, a queue must rise this many times the usual rise (the
/// median over the window's samples below [`QUEUE_MIN`]), so jitter alone does not read as
/// congestion.
const JITTER_FACTOR: u32 = 4;
/// After a queue was reported, the next is reported once the round trip has come back below
/// half the threshold (the queue drained), or after this long (a queue that stays).
const REARM_AFTER: Duration = Duration::from_secs(2);

/// What one round trip says about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Well below the threshold: no queue worth the name.
    Clear,
    /// Near the threshold, or a queue already reported that has not drained.
    Unsure,
    /// A queue, not reported before: this much above the baseline.
    Queue(Duration),
}

/// One subscriber's round trips and whether a queue in them was already reported.
#[derive(Debug, Default)]
pub(crate) struct RoundTripWatch {
    samples: VecDeque<(Instant, Duration)>,
    reported_at: Option<Instant>,
}

impl RoundTripWatch {
    /// Adds the round trip measured at `now` and reads it: a rise above the window's smallest
    /// round trip past the threshold is a queue, news unless reported since the last one
    /// drained; under half the threshold it is clear.
    pub(crate) fn on_round_trip(&mut self, now: Instant, round_trip: Duration) -> Reading {
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > BASELINE_WINDOW)
            || self.samples.len() >= MAX_SAMPLES
        {
            self.samples.pop_front();
        }
        let baseline = self
            .samples
            .iter()
            .map(|(_, rtt)| *rtt)
            .chain(std::iter::once(round_trip))
            .min()
            .unwrap_or(round_trip);
        // The path's jitter, from the samples that were no queue: a queue that stands must not
        // become the usual rise (and read as clear once it fills half the window).
        let mut rises: Vec<Duration> = self
            .samples
            .iter()
            .map(|(_, rtt)| rtt.saturating_sub(baseline))
            .filter(|rise| *rise < QUEUE_MIN)
            .collect();
        rises.sort_unstable();
        let usual_rise = rises.get(rises.len() / 2).copied().unwrap_or_default();
        let threshold = QUEUE_MIN.max(usual_rise * JITTER_FACTOR);
        self.samples.push_back((now, round_trip));
        let queue = round_trip.saturating_sub(baseline);
        if queue < threshold / 2 {
            self.reported_at = None;
            return Reading::Clear;
        }
        if queue < threshold
            || self
                .reported_at
                .is_some_and(|at| now.saturating_duration_since(at) < REARM_AFTER)
        {
            return Reading::Unsure;
        }
        self.reported_at = Some(now);
        Reading::Queue(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `count` round trips cycling through `rtt_ms`, every 250 ms from `t0`, none of them
    /// a queue; returns the time after.
    fn steady(watch: &mut RoundTripWatch, t0: Instant, count: u32, rtt_ms: &[u32]) -> Instant {
        let mut now = t0;
        for i in 0..count {
            let rtt = rtt_ms[i as usize % rtt_ms.len()];
            let reading = watch.on_round_trip(now, rtt * MS);
            assert!(
                !matches!(reading, Reading::Queue(_)),
                "{rtt} ms read as {reading:?}"
            );
            now += 250 * MS;
        }
        now
    }

    #[test]
    fn a_rise_of_30_ms_over_a_steady_path_is_a_queue_reported_once_until_it_drains() {
        let mut watch = RoundTripWatch::default();
        let t0 = Instant::now();
        let now = steady(&mut watch, t0, 20, &[2, 3, 1, 4]);
        assert_eq!(watch.on_round_trip(now, 5 * MS), Reading::Clear);
        assert_eq!(
            watch.on_round_trip(now + 250 * MS, 25 * MS),
            Reading::Unsure
        );
        assert_eq!(
            watch.on_round_trip(now + 500 * MS, 41 * MS),
            Reading::Queue(40 * MS)
        );
        // Still queued: not news.
        assert_eq!(
            watch.on_round_trip(now + 750 * MS, 180 * MS),
            Reading::Unsure
        );
        assert_eq!(
            watch.on_round_trip(now + 1_000 * MS, 150 * MS),
            Reading::Unsure
        );
        // Drained, then a new queue.
        assert_eq!(
            watch.on_round_trip(now + 1_250 * MS, 3 * MS),
            Reading::Clear
        );
        assert_eq!(
            watch.on_round_trip(now + 1_500 * MS, 60 * MS),
            Reading::Queue(59 * MS)
        );
    }

    #[test]
    fn a_queue_that_stays_is_reported_again_after_two_seconds() {
        let mut watch = RoundTripWatch::default();
        let t0 = Instant::now();
        let now = steady(&mut watch, t0, 8, &[5]);
        assert_eq!(watch.on_round_trip(now, 100 * MS), Reading::Queue(95 * MS));
        assert_eq!(
            watch.on_round_trip(now + 1_900 * MS, 100 * MS),
            Reading::Unsure
        );
        assert_eq!(
            watch.on_round_trip(now + 2_000 * MS, 100 * MS),
            Reading::Queue(95 * MS)
        );
    }

    #[test]
    fn a_queue_that_stands_never_reads_as_clear() {
        let mut watch = RoundTripWatch::default();
        let t0 = Instant::now();
        let mut now = steady(&mut watch, t0, 8, &[5]);
        for i in 0..32 {
            let reading = watch.on_round_trip(now, 100 * MS);
            assert_ne!(reading, Reading::Clear, "sample {i} of a standing queue");
            now += 250 * MS;
        }
    }

    #[test]
    fn a_jittery_path_needs_a_larger_rise() {
        let mut watch = RoundTripWatch::default();
        let t0 = Instant::now();
        // Round trips between 20 and 40 ms: the usual rise is 10 ms, so 40 ms is needed.
        let now = steady(&mut watch, t0, 40, &[20, 30, 40, 25, 35]);
        assert_eq!(watch.on_round_trip(now, 55 * MS), Reading::Unsure);
        assert_eq!(
            watch.on_round_trip(now + 250 * MS, 65 * MS),
            Reading::Queue(45 * MS)
        );
    }

    #[test]
    fn the_baseline_is_the_smallest_round_trip_of_the_last_ten_seconds() {
        let mut watch = RoundTripWatch::default();
        let t0 = Instant::now();
        // A short path, then a longer one (the client moved): once the short round trips have
        // left the window, the longer path is the baseline, not a queue.
        let now = steady(&mut watch, t0, 8, &[2]);
        assert_eq!(watch.on_round_trip(now, 80 * MS), Reading::Queue(78 * MS));
        let later = now + 10_500 * MS;
        assert_eq!(watch.on_round_trip(later, 80 * MS), Reading::Clear);
        assert_eq!(
            watch.on_round_trip(later + 250 * MS, 85 * MS),
            Reading::Clear
        );
        assert_eq!(
            watch.on_round_trip(later + 500 * MS, 115 * MS),
            Reading::Queue(35 * MS)
        );
    }

    #[test]
    fn a_flood_of_reports_keeps_the_window_bounded() {
        let mut watch = RoundTripWatch::default();
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            watch.on_round_trip(t0 + Duration::from_micros(u64::from(i)), 2 * MS);
        }
        assert!(watch.samples.len() <= MAX_SAMPLES);
    }
}
