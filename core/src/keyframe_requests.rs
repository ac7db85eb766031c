//! Keyframe-request throttling: many subscribers (PLI/FIR, new subscriptions, incarnation
//! switches) must not turn into a PLI storm towards one publisher, whose encoder answers
//! each with an expensive keyframe. At most one request per publication goes upstream
//! per interval; a request made inside the window is remembered and sent when the window
//! ends, unless a keyframe arrived in the meantime (which already answered it).

use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub(crate) struct KeyframeThrottle {
    interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        KeyframeThrottle {
            interval,
            last_sent: None,
            pending: false,
        }
    }

    /// Records a request. Returns true when it must be sent upstream now.
    pub(crate) fn request(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.poll(now)
    }

    /// Records a request that cannot be sent yet (the upstream SSRC is unknown); a later
    /// `poll` sends it.
    pub(crate) fn defer(&mut self) {
        self.pending = true;
    }

    /// A keyframe arrived: it answers every request made so far.
    pub(crate) fn keyframe_arrived(&mut self) {
        self.pending = false;
    }

    /// Returns true when a remembered request is due now (and marks it sent).
    pub(crate) fn poll(&mut self, now: Instant) -> bool {
        if !self.pending || !self.window_open(now) {
            return false;
        }
        self.pending = false;
        self.last_sent = Some(now);
        true
    }

    /// When a remembered request becomes due; `None` if nothing is pending or nothing
    /// was ever sent (then the request is waiting for `poll`, not for time).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        self.last_sent.map(|sent| sent + self.interval)
    }

    fn window_open(&self, now: Instant) -> bool {
        self.last_sent
            .is_none_or(|sent| now.saturating_duration_since(sent) >= self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(500);

    #[test]
    fn first_request_goes_out_and_the_rest_of_the_window_coalesces() {
        let t0 = Instant::now();
        let mut t = KeyframeThrottle::new(INTERVAL);
        assert!(t.request(t0));
        assert_eq!(t.deadline(), None);
        for ms in [1, 100, 499] {
            assert!(!t.request(t0 + Duration::from_millis(ms)));
        }
        assert_eq!(t.deadline(), Some(t0 + INTERVAL));
        assert!(!t.poll(t0 + Duration::from_millis(499)));
        assert!(t.poll(t0 + INTERVAL));
        assert!(!t.poll(t0 + INTERVAL));
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn keyframe_cancels_the_remembered_request() {
        let t0 = Instant::now();
        let mut t = KeyframeThrottle::new(INTERVAL);
        assert!(t.request(t0));
        assert!(!t.request(t0 + Duration::from_millis(10)));
        t.keyframe_arrived();
        assert_eq!(t.deadline(), None);
        assert!(!t.poll(t0 + INTERVAL * 2));
    }

    #[test]
    fn deferred_request_waits_for_poll() {
        let t0 = Instant::now();
        let mut t = KeyframeThrottle::new(INTERVAL);
        t.defer();
        assert_eq!(t.deadline(), None);
        assert!(t.poll(t0));
        assert!(!t.request(t0 + Duration::from_millis(1)));
    }

    #[test]
    fn zero_interval_never_throttles() {
        let t0 = Instant::now();
        let mut t = KeyframeThrottle::new(Duration::ZERO);
        assert!(t.request(t0));
        assert!(t.request(t0));
    }
}
