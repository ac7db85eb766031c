//! The standing-queue detector: queueing delay and delivery rate read from transport-wide
//! feedback, pure (time comes in with the reports).
//!
//! GCC reacts to a suddenly narrower path only after seconds (ADR 0010), and the NACK loss
//! window needs the bottleneck queue to overflow first. Both are late for a
//! simulcast step-down: by then the subscriber's decoder has been starved for most of a second.
//! A standing queue is visible much earlier, in the feedback itself: every packet sent after
//! the path narrowed arrives later than the path's base delay, and packets arrive at the
//! bottleneck's rate instead of ours. [`QueueDelayDetector`] watches exactly that; the transport
//! runs it next to GCC and feeds what it signals to the room as `Input::Congested` (ADR 0019).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One packet's transport-wide feedback, as the detector needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketFeedback {
    /// When we sent it, on our clock.
    pub departure: Instant,
    /// When it arrived, on the receiver's clock (any epoch); `None` if it was lost.
    pub arrival: Option<Duration>,
    /// Its size on the wire, in bytes.
    pub size: usize,
}

/// Queueing delay, above the path's base delay, that every packet of a window must have seen
/// before the path counts as congested. Scheduling jitter of a busy host delays some packets by
/// tens of milliseconds, never all of them; a standing queue delays all of them.
const QUEUE_DELAY_LIMIT: Duration = Duration::from_millis(40);
/// Packets are judged over this much of our sending time.
const WINDOW: Duration = Duration::from_millis(80);
/// A window needs this many arrived packets to say anything about rates.
const WINDOW_MIN_PACKETS: usize = 5;
/// Congestion also needs the path to deliver clearly less than we sent: a queue that drains
/// (we already send less than the path carries) is not news.
const DELIVERED_OF_SENT_PERCENT: u64 = 80;
/// The base delay is the lowest one-way delay over this long (clock drift between the two
/// ends stays far below a millisecond over it).
const BASE_WINDOW_SECONDS: u64 = 10;
/// After a signal, the next one waits this long: the queue built before the step-down takes
/// a while to drain and would otherwise signal again.
const SIGNAL_COOLDOWN: Duration = Duration::from_millis(1_000);

/// The path to a subscriber holds a standing queue and delivers less than we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Congestion {
    /// What the path delivered over the window, by the receiver's arrival times.
    pub delivered_bits_per_second: u64,
    /// What we sent over the same window.
    pub sent_bits_per_second: u64,
    /// The smallest queueing delay any packet of the window saw.
    pub queue_delay: Duration,
    /// A probe was running: the queue may be its doing, and the delivered rate counts only the
    /// media (the probe's copies are not reported), so it understates the path.
    pub during_probe: bool,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    departure: Instant,
    /// One-way delay plus the unknown offset between the two clocks, in microseconds.
    offset_us: Option<i64>,
    arrival_us: Option<i64>,
    size: u64,
}

/// Queueing delay and delivery rate from per-packet feedback (departure on our clock, arrival
/// on the receiver's). Pure: time comes in with the reports.
#[derive(Debug, Default)]
pub struct QueueDelayDetector {
    epoch: Option<Instant>,
    /// (second since `epoch`, lowest offset seen in it), oldest first.
    base: VecDeque<(u64, i64)>,
    /// The packets reported within [`WINDOW`] of the newest departure, in send order.
    window: VecDeque<Sample>,
    /// How many of `window` arrived (kept as it changes, so trimming it counts nothing).
    arrived_in_window: usize,
    last_signal: Option<Instant>,
}

impl QueueDelayDetector {
    /// Feeds one feedback batch; returns a signal when the path just proved congested.
    ///
    /// While `probing`, a standing queue alone is congestion: the probe's copies are not in
    /// the reports, so the media's delivered rate falls below its sent rate only once the path
    /// is overloaded by a quarter, too late for a probe that must not hurt the media.
    pub fn on_reports(
        &mut self,
        now: Instant,
        reports: impl IntoIterator<Item = PacketFeedback>,
        probing: bool,
    ) -> Option<Congestion> {
        let mut fed = false;
        for report in reports {
            self.push(&report);
            fed = true;
        }
        if !fed {
            return None;
        }
        let congestion = self.judge(probing)?;
        if self
            .last_signal
            .is_some_and(|at| now.saturating_duration_since(at) < SIGNAL_COOLDOWN)
        {
            return None;
        }
        self.last_signal = Some(now);
        Some(congestion)
    }

    fn push(&mut self, report: &PacketFeedback) {
        let epoch = *self.epoch.get_or_insert(report.departure);
        // Reports come in send order; one from before the epoch cannot be placed.
        let Some(since_epoch) = report.departure.checked_duration_since(epoch) else {
            return;
        };
        let departure_us = i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX);
        let arrival_us = report
            .arrival
            .map(|arrival| i64::try_from(arrival.as_micros()).unwrap_or(i64::MAX));
        let offset_us = arrival_us.map(|arrival| arrival.saturating_sub(departure_us));
        if let Some(offset) = offset_us {
            let second = since_epoch.as_secs();
            match self.base.back_mut() {
                Some((last, lowest)) if *last == second => *lowest = (*lowest).min(offset),
                _ => self.base.push_back((second, offset)),
            }
            while self
                .base
                .front()
                .is_some_and(|(s, _)| *s + BASE_WINDOW_SECONDS < second)
            {
                self.base.pop_front();
            }
        }
        self.arrived_in_window += usize::from(arrival_us.is_some());
        self.window.push_back(Sample {
            departure: report.departure,
            offset_us,
            arrival_us,
            size: report.size as u64,
        });
        // The last WINDOW of sending, or back to the last WINDOW_MIN_PACKETS that arrived when
        // fewer did in it (a low-rate stream, such as the lowest layer alone, or heavy loss).
        while let Some(oldest) = self.window.front() {
            let oldest_arrived = usize::from(oldest.arrival_us.is_some());
            let expired = report.departure.saturating_duration_since(oldest.departure) > WINDOW;
            if !expired || self.arrived_in_window - oldest_arrived < WINDOW_MIN_PACKETS {
                break;
            }
            self.arrived_in_window -= oldest_arrived;
            self.window.pop_front();
        }
    }

    fn judge(&self, probing: bool) -> Option<Congestion> {
        let base = self.base.iter().map(|(_, lowest)| *lowest).min()?;
        let arrived: Vec<&Sample> = self
            .window
            .iter()
            .filter(|s| s.arrival_us.is_some())
            .collect();
        debug_assert_eq!(
            arrived.len(),
            self.arrived_in_window,
            "the running count drifted"
        );
        if arrived.len() < WINDOW_MIN_PACKETS {
            return None;
        }
        let queue_us = arrived
            .iter()
            .filter_map(|s| s.offset_us)
            .map(|offset| offset.saturating_sub(base))
            .min()?;
        let queue_delay = Duration::from_micros(u64::try_from(queue_us).unwrap_or(0));
        if queue_delay < QUEUE_DELAY_LIMIT {
            return None;
        }
        let first = self.window.front()?;
        let last = self.window.back()?;
        let sent_span = last.departure.saturating_duration_since(first.departure);
        // The first packet of a span only marks its start.
        let sent_bytes: u64 = self.window.iter().skip(1).map(|s| s.size).sum();
        let sent_bps = bits_per_second(sent_bytes, sent_span)?;
        let arrivals: Vec<i64> = arrived.iter().filter_map(|s| s.arrival_us).collect();
        let earliest = arrivals.iter().min()?;
        let latest = arrivals.iter().max()?;
        let delivered_span = Duration::from_micros(u64::try_from(latest - earliest).ok()?);
        let delivered_bytes: u64 = arrived.iter().skip(1).map(|s| s.size).sum();
        let delivered_bps = bits_per_second(delivered_bytes, delivered_span)?;
        if !probing && delivered_bps * 100 >= sent_bps * DELIVERED_OF_SENT_PERCENT {
            return None;
        }
        Some(Congestion {
            delivered_bits_per_second: delivered_bps,
            sent_bits_per_second: sent_bps,
            queue_delay,
            during_probe: probing,
        })
    }
}

fn bits_per_second(bytes: u64, span: Duration) -> Option<u64> {
    // Spans under 20 ms are a burst, not a rate.
    if span < Duration::from_millis(20) {
        return None;
    }
    let micros = u64::try_from(span.as_micros()).ok()?;
    Some(bytes.saturating_mul(8_000_000) / micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated path: packets of `size` bytes sent every `interval`, through a bottleneck of
    /// `link_bps` with a base delay of 20 ms; the receiver's clock is 5 s ahead of ours.
    struct Path {
        start: Instant,
        sent: u64,
        /// When the bottleneck is free again, on our clock.
        link_free: Instant,
    }

    impl Path {
        fn new(start: Instant) -> Self {
            Self {
                start,
                sent: 0,
                link_free: start,
            }
        }

        /// Sends for `duration` at `send_bps` through `link_bps`, with a tail-drop queue of
        /// `queue_limit`; returns the reports, batched as feedback every 50 ms.
        fn run(
            &mut self,
            duration: Duration,
            send_bps: u64,
            link_bps: u64,
            queue_limit: Duration,
        ) -> Vec<(Instant, Vec<PacketFeedback>)> {
            const SIZE: u64 = 1_200;
            let interval = Duration::from_micros(SIZE * 8 * 1_000_000 / send_bps);
            let service = Duration::from_micros(SIZE * 8 * 1_000_000 / link_bps);
            let mut batches: Vec<(Instant, Vec<PacketFeedback>)> = Vec::new();
            let mut batch = Vec::new();
            let end = self.start + Duration::from_micros(self.sent) + duration;
            let mut at = self.start + Duration::from_micros(self.sent);
            let mut next_feedback = at + Duration::from_millis(50);
            while at < end {
                let queued = self.link_free.saturating_duration_since(at);
                let arrival = if queued > queue_limit {
                    None
                } else {
                    let leaves = self.link_free.max(at) + service;
                    self.link_free = leaves;
                    let on_receiver = leaves + Duration::from_millis(20) + Duration::from_secs(5);
                    Some(on_receiver.duration_since(self.start))
                };
                batch.push(PacketFeedback {
                    size: SIZE as usize,
                    departure: at,
                    arrival,
                });
                at += interval;
                if at >= next_feedback {
                    // Feedback reaches us 20 ms after the batch's last packet left.
                    batches.push((at + Duration::from_millis(20), std::mem::take(&mut batch)));
                    next_feedback += Duration::from_millis(50);
                }
            }
            self.sent = u64::try_from(at.duration_since(self.start).as_micros())
                .expect("a test path runs for less than 500 000 years");
            batches
        }
    }

    fn feed(
        detector: &mut QueueDelayDetector,
        batches: Vec<(Instant, Vec<PacketFeedback>)>,
    ) -> Vec<(Instant, Congestion)> {
        batches
            .into_iter()
            .filter_map(|(now, reports)| detector.on_reports(now, reports, false).map(|c| (now, c)))
            .collect()
    }

    #[test]
    fn a_path_that_narrows_below_the_send_rate_signals_within_a_quarter_second() {
        let start = Instant::now();
        let mut path = Path::new(start);
        let mut detector = QueueDelayDetector::default();
        let quiet = path.run(
            Duration::from_secs(3),
            2_000_000,
            10_000_000,
            Duration::from_millis(250),
        );
        assert!(
            feed(&mut detector, quiet).is_empty(),
            "an uncongested path is quiet"
        );
        let capped_at = start + Duration::from_micros(path.sent);
        let capped = path.run(
            Duration::from_secs(1),
            2_000_000,
            600_000,
            Duration::from_millis(250),
        );
        let signals = feed(&mut detector, capped);
        let (at, congestion) = *signals.first().expect("the cap is signalled");
        assert!(
            at.duration_since(capped_at) <= Duration::from_millis(250),
            "signalled {:?} after the cap",
            at.duration_since(capped_at)
        );
        let delivered = congestion.delivered_bits_per_second;
        assert!(
            (540_000..=660_000).contains(&delivered),
            "delivered {delivered}"
        );
        assert!(
            congestion.sent_bits_per_second > 1_800_000,
            "{congestion:?}"
        );
        assert!(congestion.queue_delay >= QUEUE_DELAY_LIMIT);
        assert_eq!(signals.len(), 1, "one signal per cooldown: {signals:?}");
    }

    #[test]
    fn sending_below_the_narrowed_rate_lets_the_queue_drain_without_signals() {
        let start = Instant::now();
        let mut path = Path::new(start);
        let mut detector = QueueDelayDetector::default();
        feed(
            &mut detector,
            path.run(
                Duration::from_secs(2),
                2_000_000,
                10_000_000,
                Duration::from_millis(250),
            ),
        );
        let signals = feed(
            &mut detector,
            path.run(
                Duration::from_millis(300),
                2_000_000,
                600_000,
                Duration::from_millis(250),
            ),
        );
        assert_eq!(signals.len(), 1);
        // The step-down: 300 kbit/s into the 600 kbit/s path, its queue still full.
        let later = path.run(
            Duration::from_secs(3),
            300_000,
            600_000,
            Duration::from_millis(250),
        );
        assert!(
            feed(&mut detector, later).is_empty(),
            "a draining queue is not congestion"
        );
    }

    #[test]
    fn while_probing_a_standing_queue_alone_is_congestion() {
        let start = Instant::now();
        let mut path = Path::new(start);
        let mut detector = QueueDelayDetector::default();
        let quiet = path.run(
            Duration::from_secs(2),
            300_000,
            10_000_000,
            Duration::from_millis(250),
        );
        assert!(feed(&mut detector, quiet).is_empty());
        // The path narrows to just what the media takes: a queue stands (as a probe's unseen
        // copies would build), but what is reported is delivered at the rate it was sent.
        let narrow = path.run(
            Duration::from_secs(1),
            300_000,
            290_000,
            Duration::from_millis(250),
        );
        let (quiet, probed): (Vec<_>, Vec<_>) = narrow
            .into_iter()
            .partition(|(at, _)| *at < start + Duration::from_millis(2_600));
        assert!(
            feed(&mut detector, quiet).is_empty(),
            "delivered ≈ sent: not congestion"
        );
        let signals: Vec<_> = probed
            .into_iter()
            .filter_map(|(now, reports)| detector.on_reports(now, reports, true))
            .collect();
        assert!(
            signals
                .first()
                .is_some_and(|c| c.during_probe && c.queue_delay >= QUEUE_DELAY_LIMIT),
            "{signals:?}"
        );
    }

    #[test]
    fn jitter_on_some_packets_is_not_congestion() {
        let start = Instant::now();
        let mut detector = QueueDelayDetector::default();
        let mut path = Path::new(start);
        let mut batches = path.run(
            Duration::from_secs(3),
            2_000_000,
            10_000_000,
            Duration::from_millis(250),
        );
        // A busy receiver stamps every other packet of a second 150 ms late.
        for (_, reports) in batches.iter_mut().skip(20).take(20) {
            for report in reports.iter_mut().step_by(2) {
                report.arrival = report.arrival.map(|a| a + Duration::from_millis(150));
            }
        }
        assert!(feed(&mut detector, batches).is_empty());
    }

    #[test]
    fn empty_and_lost_reports_say_nothing() {
        let start = Instant::now();
        let mut detector = QueueDelayDetector::default();
        assert_eq!(detector.on_reports(start, [], false), None);
        let lost: Vec<PacketFeedback> = (0..50)
            .map(|i| PacketFeedback {
                size: 1_200,
                departure: start + Duration::from_millis(i * 5),
                arrival: None,
            })
            .collect();
        assert_eq!(
            detector.on_reports(start + Duration::from_secs(1), lost, false),
            None
        );
    }
}
