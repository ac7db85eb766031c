//! The limits an operator tunes: how many rooms a server opens, what one room, participant
//! and connection may hold, and the timeouts that bound a slow or silent client. Each is an
//! option of `sluice` (flag, `SLUICE_*` variable and TOML key of the same name); docs/limits.md
//! lists them with the others.

use std::time::Duration;

use sluice_sfu::core::RoomConfig;
use sluice_sfu::runtime::AdmissionConfig;
use sluice_sfu::shard::DataLimits;

use crate::accept::ConnectionLimits;

/// What one room, participant and connection may hold, and how long a client may stall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Rooms open at once; the join that would open one more is refused.
    pub max_rooms: usize,
    /// Participants in one room.
    pub max_participants_per_room: usize,
    /// Publications one participant may hold.
    pub max_publications_per_participant: usize,
    /// Subscriptions one participant may hold.
    pub max_subscriptions_per_participant: usize,
    /// HTTP and WebSocket connections at once, in total.
    pub max_connections: usize,
    /// HTTP and WebSocket connections at once from one address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Time to send an HTTP request's headers.
    pub header_read_timeout: Duration,
    /// Time a write may make no progress before the connection is reset.
    pub write_timeout: Duration,
    /// Time from an HTTP request's headers to the start of its response.
    pub request_timeout: Duration,
    /// A publication without media for this long is announced stalled.
    pub publication_stall_timeout: Duration,
    /// Largest data message a participant may send, envelope included.
    pub max_data_message_bytes: usize,
    /// Data messages one participant may send per second.
    pub data_messages_per_second: u32,
    /// Media older than this when read is discarded; zero keeps every packet however late.
    pub max_ingress_age: Duration,
    /// Subscriber connections across the server; 0: no limit.
    pub max_subscribers: usize,
    /// New subscriber connections are refused while their media thread is busier than this
    /// percentage; 0: off. Off by default: on a machine shared with other work (a test
    /// runner, a build) a media thread that waits for the CPU counts as busy, and joins
    /// would be refused that the server could serve.
    pub admission_cpu_percent: u8,
}

impl Default for Limits {
    fn default() -> Self {
        let sfu = sluice_sfu::runtime::Limits::default();
        let http = ConnectionLimits::default();
        let data = DataLimits::default();
        let admission = AdmissionConfig::default();
        Self {
            max_rooms: sfu.max_rooms,
            max_participants_per_room: sfu.max_participants_per_room,
            max_publications_per_participant: sfu.max_publications_per_participant,
            max_subscriptions_per_participant: sfu.max_subscriptions_per_participant,
            max_connections: http.max_connections,
            max_connections_per_address: http.max_connections_per_address,
            header_read_timeout: http.header_read_timeout,
            write_timeout: http.write_timeout,
            request_timeout: http.request_timeout,
            publication_stall_timeout: RoomConfig::default()
                .publication_stall_timeout
                .unwrap_or(DEFAULT_STALL_TIMEOUT),
            max_data_message_bytes: data.max_message_bytes,
            data_messages_per_second: data.messages_per_second,
            max_ingress_age: sluice_sfu::shard::ShardConfig::default().max_ingress_age,
            max_subscribers: admission.max_subscribers,
            admission_cpu_percent: admission.busy_percent,
        }
    }
}

/// The core's default, should it ever stop watching liveness by default.
const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// Most of any count a server is configured to hold (rooms, participants, subscriptions,
/// connections): a typo'd extra digit is caught rather than trusted.
const MAX_COUNT: usize = 1_000_000;

/// Most publications one participant may hold (a `publish` carries at most 16 tracks).
const MAX_PUBLICATIONS: usize = 64;

/// Data message sizes a server may allow: under 64 bytes not even a header with a topic fits;
/// over 64 KiB some browsers cannot receive a message whole.
const DATA_MESSAGE_BYTES: std::ops::RangeInclusive<usize> = 64..=65_536;

/// Freshness bounds a server may use: under 50 ms a scheduling hiccup discards good media;
/// over 10 s the bound is no bound (0 says so).
const INGRESS_AGES: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(50)..=Duration::from_secs(10);

/// The busiest a media thread may be configured to admit new subscribers at, in percent: at
/// 100 nothing is ever refused (0 says so).
const MAX_ADMISSION_CPU_PERCENT: u8 = 99;

/// Most data messages a second one participant may be allowed.
const MAX_DATA_RATE: usize = 10_000;

/// The shortest and longest HTTP timeouts: under a second a slow but honest client on a bad
/// link fails; over ten minutes the bound is no bound.
const HTTP_TIMEOUTS: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(600);

impl Limits {
    /// Checks the ranges; the message names the TOML key.
    pub fn validate(&self) -> Result<(), String> {
        let counts = [
            ("max_rooms", self.max_rooms, MAX_COUNT),
            (
                "max_participants_per_room",
                self.max_participants_per_room,
                MAX_COUNT,
            ),
            (
                "max_publications_per_participant",
                self.max_publications_per_participant,
                MAX_PUBLICATIONS,
            ),
            (
                "max_subscriptions_per_participant",
                self.max_subscriptions_per_participant,
                MAX_COUNT,
            ),
            ("max_connections", self.max_connections, MAX_COUNT),
            (
                "data_messages_per_second",
                usize::try_from(self.data_messages_per_second).unwrap_or(usize::MAX),
                MAX_DATA_RATE,
            ),
            (
                "max_connections_per_address",
                self.max_connections_per_address,
                self.max_connections,
            ),
        ];
        for (key, value, max) in counts {
            if !(1..=max).contains(&value) {
                return Err(format!("{key} must be between 1 and {max}, got {value}"));
            }
        }
        if self.max_subscribers > MAX_COUNT {
            return Err(format!(
                "max_subscribers must be 0 (no limit) or between 1 and {MAX_COUNT}, got {}",
                self.max_subscribers
            ));
        }
        if self.admission_cpu_percent > MAX_ADMISSION_CPU_PERCENT {
            return Err(format!(
                "admission_cpu_percent must be 0 (off) or between 1 and {MAX_ADMISSION_CPU_PERCENT}, got {}",
                self.admission_cpu_percent
            ));
        }
        if !DATA_MESSAGE_BYTES.contains(&self.max_data_message_bytes) {
            return Err(format!(
                "max_data_message_bytes must be between {} and {}, got {}",
                DATA_MESSAGE_BYTES.start(),
                DATA_MESSAGE_BYTES.end(),
                self.max_data_message_bytes
            ));
        }
        if !self.max_ingress_age.is_zero() && !INGRESS_AGES.contains(&self.max_ingress_age) {
            return Err(format!(
                "max_ingress_age_ms must be 0 or between 50 and 10000, got {}",
                self.max_ingress_age.as_millis()
            ));
        }
        let timeouts = [
            ("header_read_timeout_ms", self.header_read_timeout),
            ("write_timeout_ms", self.write_timeout),
            ("request_timeout_ms", self.request_timeout),
        ];
        for (key, value) in timeouts {
            if !HTTP_TIMEOUTS.contains(&value) {
                return Err(format!(
                    "{key} must be between 1000 and 600000, got {}",
                    value.as_millis()
                ));
            }
        }
        self.room()
            .validate()
            .map_err(|err| format!("publication_stall_timeout_ms: {err}"))
    }

    /// The media server's share.
    pub fn sfu(&self) -> sluice_sfu::runtime::Limits {
        sluice_sfu::runtime::Limits {
            max_rooms: self.max_rooms,
            max_participants_per_room: self.max_participants_per_room,
            max_publications_per_participant: self.max_publications_per_participant,
            max_subscriptions_per_participant: self.max_subscriptions_per_participant,
            ..sluice_sfu::runtime::Limits::default()
        }
    }

    /// Every room's routing core.
    pub fn room(&self) -> RoomConfig {
        RoomConfig {
            publication_stall_timeout: Some(self.publication_stall_timeout),
            ..RoomConfig::default()
        }
    }

    /// The capacity new subscriber connections are admitted against.
    pub fn admission(&self) -> AdmissionConfig {
        AdmissionConfig {
            max_subscribers: self.max_subscribers,
            busy_percent: self.admission_cpu_percent,
        }
    }

    /// What each participant may send as data messages.
    pub fn data(&self) -> DataLimits {
        DataLimits {
            max_message_bytes: self.max_data_message_bytes,
            messages_per_second: self.data_messages_per_second,
        }
    }

    /// The shards' freshness bound (no bound: a duration no queue reaches).
    pub fn ingress_age(&self) -> Duration {
        if self.max_ingress_age.is_zero() {
            Duration::MAX
        } else {
            self.max_ingress_age
        }
    }

    /// The HTTP accept loop's share.
    pub fn connections(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.header_read_timeout,
            write_timeout: self.write_timeout,
            request_timeout: self.request_timeout,
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_components_defaults_and_valid() {
        let limits = Limits::default();
        assert_eq!(limits.validate(), Ok(()));
        assert_eq!(limits.connections(), ConnectionLimits::default());
        assert_eq!(limits.room(), RoomConfig::default());
        assert_eq!(limits.max_rooms, 1024);
        assert_eq!(limits.max_participants_per_room, 100);
        assert_eq!(crate::accept::DEFAULT_WRITE_TIMEOUT, limits.write_timeout);
    }
}
