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
    /// A publication that sent media and then nothing for this long is stalled
    /// ([`Output::PublicationStalled`](crate::Output::PublicationStalled)): its publisher's
    /// process, encoder or network is gone. Above the longest gap a healthy publisher leaves
    /// (video keeps some frames a second, Opus a packet every 20 ms), below the 2 s within which
    /// subscribers are to be told. `None` does not watch publications at all.
    pub publication_stall_timeout: Option<Duration>,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            keyframe_request_interval: Duration::from_millis(500),
            initial_output_sequence: None,
            random_seed: 0,
            publication_stall_timeout: Some(Duration::from_millis(1500)),
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
        if let Some(stall) = self.publication_stall_timeout
            && !(MIN_STALL_TIMEOUT..=MAX_STALL_TIMEOUT).contains(&stall)
        {
            return Err(RoomConfigError::PublicationStallTimeout(stall));
        }
        Ok(())
    }
}

/// Longer than this, a subscriber whose first request was lost stays frozen too long.
const MAX_KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(10);

/// Shorter than this, a publisher's ordinary gaps (a frame dropped under load, a keyframe that
/// takes a while to send) would flap its publications between stalled and live.
const MIN_STALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Longer than this, viewers look at a frozen picture too long before they are told.
const MAX_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// An invalid [`RoomConfig`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomConfigError {
    /// Zero would forward every PLI upstream (a keyframe storm); too long freezes video.
    #[error("keyframe request interval {0:?} must be above zero and at most 10 s")]
    KeyframeRequestInterval(Duration),
    /// Too short flaps on ordinary gaps; too long leaves viewers uninformed.
    #[error("publication stall timeout {0:?} must be between 500 ms and 60 s")]
    PublicationStallTimeout(Duration),
}
