//! The per-connection message rate limit: a token bucket, and the point at which a client
//! that keeps flooding is disconnected.

use std::time::Instant;

/// What becomes of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the rate: handle it.
    Allowed,
    /// Over the rate: refuse it (`rateLimited`) and keep the connection.
    Refused,
    /// Refused more than four bursts' worth in a row: close the connection.
    Flooding,
}

/// Token bucket over messages: `rate` per second, up to `burst` at once.
#[derive(Debug)]
pub(super) struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Consecutive refusals; a client that keeps flooding is disconnected.
    refused_in_a_row: u32,
    /// More consecutive refusals than this is [`Verdict::Flooding`].
    flood_after: u32,
}

impl RateLimiter {
    /// A full bucket at `now`. Zero rate or burst count as one.
    pub(super) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
            refused_in_a_row: 0,
            flood_after: burst.max(1).saturating_mul(4),
        }
    }

    /// Takes a token for a message arriving at `now`, if there is one.
    pub(super) fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return Verdict::Allowed;
        }
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        if self.refused_in_a_row > self.flood_after {
            Verdict::Flooding
        } else {
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allows_the_burst_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 20, start);
        assert!((0..20).all(|_| limiter.check(start) == Verdict::Allowed));
        assert_eq!(limiter.check(start), Verdict::Refused);
        // 10 per second: one token every 100 ms.
        assert_eq!(
            limiter.check(start + Duration::from_millis(150)),
            Verdict::Allowed
        );
        assert_eq!(
            limiter.check(start + Duration::from_millis(160)),
            Verdict::Refused
        );
    }

    #[test]
    fn an_idle_bucket_holds_no_more_than_the_burst() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 5, start);
        let later = start + Duration::from_secs(60);
        assert!((0..5).all(|_| limiter.check(later) == Verdict::Allowed));
        assert_eq!(limiter.check(later), Verdict::Refused);
    }

    #[test]
    fn only_a_long_run_of_refusals_is_flooding() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(1, 2, start);
        assert!((0..2).all(|_| limiter.check(start) == Verdict::Allowed));
        // Four bursts' worth of refusals are tolerated; the next one is a flood.
        assert!((0..8).all(|_| limiter.check(start) == Verdict::Refused));
        assert_eq!(limiter.check(start), Verdict::Flooding);
        assert_eq!(limiter.check(start), Verdict::Flooding);
        // A message let through again ends the run.
        let later = start + Duration::from_secs(1);
        assert_eq!(limiter.check(later), Verdict::Allowed);
        assert_eq!(limiter.check(later), Verdict::Refused);
    }

    #[test]
    fn zero_rate_and_burst_count_as_one() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(0, 0, start);
        assert_eq!(limiter.check(start), Verdict::Allowed);
        assert_eq!(limiter.check(start), Verdict::Refused);
        assert_eq!(
            limiter.check(start + Duration::from_secs(1)),
            Verdict::Allowed
        );
    }
}
