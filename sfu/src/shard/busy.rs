//! How busy a shard's thread is: the share of wall time its loop spends handling work (reading
//! and routing datagrams, timers, commands, sending) rather than waiting for a socket, a queue
//! or a timer. The loop reports when it stops waiting ([`BusyMeter::woke`]) and when it starts
//! again ([`BusyMeter::waiting`]): two clock reads per pass, no system call beyond them.
//!
//! Wall time, not CPU time: a thread that is runnable but not running (the machine's cores are
//! taken) is not waiting for I/O either, and its media is late all the same. The share of each
//! window of at least [`BUSY_WINDOW`] is published to a [`BusyShare`] that other threads read
//! (admission control, `/metrics`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The shortest window a share is measured over: long enough to smooth one burst of
/// keyframes or joins, short enough that admission reacts within seconds.
pub const BUSY_WINDOW: Duration = Duration::from_secs(2);

/// The busy share of a shard's last complete window, in thousandths; cheap to clone and
/// to read from any thread.
#[derive(Debug, Clone, Default)]
pub struct BusyShare(Arc<AtomicU32>);

impl BusyShare {
    /// The share in percent (0.0 ..= 100.0); 0 before the first window has ended.
    pub fn percent(&self) -> f64 {
        f64::from(self.0.load(Ordering::Relaxed)) / 10.0
    }

    fn publish(&self, permille: u32) {
        self.0.store(permille, Ordering::Relaxed);
    }
}

/// The shard loop's own side of the measurement.
#[derive(Debug)]
pub(super) struct BusyMeter {
    share: BusyShare,
    window_start: Instant,
    /// Busy time counted in the current window.
    busy: Duration,
    /// When the loop last stopped waiting; `None` while it waits.
    woke: Option<Instant>,
}

impl BusyMeter {
    /// A meter whose first window starts at `now`, the loop counted as busy until it first waits.
    pub(super) fn new(share: BusyShare, now: Instant) -> Self {
        Self {
            share,
            window_start: now,
            busy: Duration::ZERO,
            woke: Some(now),
        }
    }

    /// The loop stopped waiting at `now`: work starts.
    pub(super) fn woke(&mut self, now: Instant) {
        self.rotate(now);
        self.woke = Some(now);
    }

    /// The loop is about to wait at `now`: the work since it woke counts as busy.
    pub(super) fn waiting(&mut self, now: Instant) {
        if let Some(woke) = self.woke.take() {
            self.busy += now.saturating_duration_since(woke);
        }
        self.rotate(now);
    }

    /// Publishes the window's share and starts the next once it has lasted [`BUSY_WINDOW`].
    /// Called between passes only, so a window ends where a pass does: a long pass counts
    /// whole in the window it ends in, which then lasts longer.
    fn rotate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < BUSY_WINDOW {
            return;
        }
        let permille = (self.busy.as_secs_f64() / elapsed.as_secs_f64() * 1000.0).round();
        // Busy time never exceeds the window; the clamp only guards the float.
        self.share.publish(permille.clamp(0.0, 1000.0) as u32);
        self.window_start = now;
        self.busy = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A loop that works `busy` then waits `idle`, `passes` times from `start`; returns when it ended.
    fn run(
        meter: &mut BusyMeter,
        start: Instant,
        passes: u32,
        busy: Duration,
        idle: Duration,
    ) -> Instant {
        let mut now = start;
        for _ in 0..passes {
            meter.woke(now);
            now += busy;
            meter.waiting(now);
            now += idle;
        }
        now
    }

    #[test]
    fn nothing_is_published_before_the_first_window_ends() {
        let start = Instant::now();
        let share = BusyShare::default();
        let mut meter = BusyMeter::new(share.clone(), start);
        meter.waiting(start + 10 * MS);
        run(&mut meter, start + 10 * MS, 100, 10 * MS, 5 * MS);
        assert_eq!(share.percent(), 0.0);
    }

    #[test]
    fn the_share_is_the_work_over_the_wall_time_of_the_window() {
        let start = Instant::now();
        let share = BusyShare::default();
        let mut meter = BusyMeter::new(share.clone(), start);
        meter.waiting(start);
        // 3 ms of work in every 4 ms, past one window.
        let end = run(&mut meter, start, 501, 3 * MS, MS);
        assert!(end - start > BUSY_WINDOW);
        assert!((share.percent() - 75.0).abs() < 0.5, "{}", share.percent());

        // Then mostly idle: 1 ms in every 10 ms for another window.
        run(&mut meter, end, 210, MS, 9 * MS);
        assert!((share.percent() - 10.0).abs() < 0.5, "{}", share.percent());
    }

    #[test]
    fn a_loop_that_never_waits_is_fully_busy_and_a_sleeping_one_idle() {
        let start = Instant::now();
        let share = BusyShare::default();
        let mut meter = BusyMeter::new(share.clone(), start);
        // Back-to-back passes: it waits for no time at all.
        run(&mut meter, start, 300, 10 * MS, Duration::ZERO);
        assert_eq!(share.percent(), 100.0);

        // Then it sleeps 5 s at a time: the window that ends at its second wake-up holds
        // no work.
        run(&mut meter, start + 3000 * MS, 3, Duration::ZERO, 5000 * MS);
        assert_eq!(share.percent(), 0.0);
    }

    #[test]
    fn a_long_pass_counts_in_the_window_it_ends_in() {
        let start = Instant::now();
        let share = BusyShare::default();
        let mut meter = BusyMeter::new(share.clone(), start);
        meter.waiting(start);
        // Idle for 1.5 s, then one pass of 1.5 s: the window ends with it, at 3 s.
        meter.woke(start + 1500 * MS);
        assert_eq!(share.percent(), 0.0);
        meter.waiting(start + 3000 * MS);
        assert!((share.percent() - 50.0).abs() < 0.1, "{}", share.percent());
    }
}
