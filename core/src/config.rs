//! How a [`Room`](crate::Room) is configured, and the checks a deployment's values must pass.

use std::time::Duration;

/// Configuration of a [`Room`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    /// At most one keyframe request per publication goes upstream per interval.
    pub keyframe_request_interval: Duration,
    /// First output sequence number of every subscription; `None` picks a random one
    /// per subscription (RFC 3550 §5.1). Tests pass `Some` to get predictable numbers.
    pub initial_output_sequence: Option<u16>,
    /// Seed of the room's random numbers (initial sequence numbers). The core reads no
    /// entropy of its own: the runtime passes a random seed, tests a fixed one.
    pub random_seed: u64,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            keyframe_request_interval: Duration::from_millis(500),
            initial_output_sequence: None,
            random_seed: 0,
        }
    }
}

impl RoomConfig {
    /// Checks the values a deployment could get wrong; `Room::new` trusts its config.
    pub fn validate(&self) -> Result<(), RoomConfigError> {
        let interval = self.keyframe_request_interval;
        if interval.is_zero() || interval > MAX_KEYFRAME_REQUEST_INTERVAL {
            return Err(RoomConfigError::KeyframeRequestInterval(interval));
        }
        Ok(())
    }
}

/// Longer than this, a subscriber whose first request was lost stays frozen too long.
const MAX_KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(10);

/// An invalid [`RoomConfig`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomConfigError {
    /// Zero would forward every PLI upstream (a keyframe storm); too long freezes video.
    #[error("keyframe request interval {0:?} must be above zero and at most 10 s")]
    KeyframeRequestInterval(Duration),
}
