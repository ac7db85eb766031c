//! The value types of options that are more than a number or a string: how each parses from
//! a flag or environment variable (`FromStr`) and from the TOML file (serde), and the options
//! that are refused with the reason; and the RTMP stream keys a configuration accepts
//! ([`Config::stream_keys`](super::Config::stream_keys)).

use std::net::SocketAddr;

use sluice_sfu::ingest::{StreamKeys, StreamTarget};

use super::ConfigError;
use crate::secret::Secret;

/// The media plane a configuration names. There is one, the shard; the option stays so that
/// configurations naming it keep loading, and one naming `webrtc` fails with the reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MediaPlane {
    /// Shard threads sharing one UDP port for all connections (ICE-lite).
    #[default]
    Shard,
}

impl std::str::FromStr for MediaPlane {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "shard" => Ok(Self::Shard),
            "webrtc" => Err(
                "the webrtc media plane no longer exists: Sluice has one media \
                 plane, the shard (one UDP port, see --udp-port); remove --media-plane \
                 (SLUICE_MEDIA_PLANE, media_plane) from the configuration"
                    .to_owned(),
            ),
            other => Err(format!("invalid media plane {other:?}: expected shard")),
        }
    }
}

/// What `--udp-ports` (`SLUICE_UDP_PORTS`, `udp_ports`) says to a configuration that sets it.
const UDP_PORTS_GONE: &str = "a media port range no longer applies: every connection uses \
     one UDP port (--udp-port PORT, SLUICE_UDP_PORT, udp_port); replace --udp-ports \
     (SLUICE_UDP_PORTS, udp_ports) with it";

/// `--udp-ports`: refused when set, with the reason, so a configuration written for a port
/// range per connection fails at start instead of being ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPortRange;

impl std::str::FromStr for UdpPortRange {
    type Err = String;

    fn from_str(_: &str) -> Result<Self, Self::Err> {
        Err(UDP_PORTS_GONE.to_owned())
    }
}

impl<'de> serde::Deserialize<'de> for UdpPortRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Err(serde::de::Error::custom(UDP_PORTS_GONE))
    }
}

impl<'de> serde::Deserialize<'de> for MediaPlane {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The ICE-TCP port setting: `off`, or a port number (the UDP port's number by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IceTcpPort {
    Off,
    #[default]
    SameAsUdp,
    Port(u16),
}

impl IceTcpPort {
    /// The shard's form of this setting.
    pub fn shard(self) -> sluice_sfu::shard::TcpPort {
        match self {
            Self::Off => sluice_sfu::shard::TcpPort::Off,
            Self::SameAsUdp => sluice_sfu::shard::TcpPort::SameAsUdp,
            Self::Port(port) => sluice_sfu::shard::TcpPort::Port(port),
        }
    }
}

impl std::str::FromStr for IceTcpPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(Self::Off),
            port => port
                .parse()
                .map(Self::Port)
                .map_err(|_| format!("invalid ICE-TCP port {port:?}: expected a port or off")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for IceTcpPort {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Form {
            Port(u16),
            Text(String),
        }
        match Form::deserialize(deserializer)? {
            Form::Port(port) => Ok(Self::Port(port)),
            Form::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Where the RTMP ingest listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtmpListen {
    Off,
    On(SocketAddr),
}

impl std::str::FromStr for RtmpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(Self::Off),
            addr => addr
                .parse()
                .map(Self::On)
                .map_err(|_| format!("invalid RTMP address {addr:?}: expected ADDR:PORT or off")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for RtmpListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One configured RTMP stream key and the room and identity it publishes as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpKey {
    pub key: Secret,
    pub room: String,
    pub identity: String,
}

impl std::str::FromStr for RtmpKey {
    type Err = String;

    /// `KEY=ROOM/IDENTITY`. Errors never repeat the key.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected KEY=ROOM/IDENTITY";
        let (key, target) = s.trim().split_once('=').ok_or(usage)?;
        let (room, identity) = target.split_once('/').ok_or(usage)?;
        Ok(Self {
            key: key.into(),
            room: room.to_owned(),
            identity: identity.to_owned(),
        })
    }
}

impl super::Config {
    /// The RTMP stream keys this configuration accepts: the configured ones, and keys signed
    /// with the secret when one is configured.
    pub fn stream_keys(&self) -> Result<StreamKeys, ConfigError> {
        let mut keys = match &self.secret {
            Some(secret) => StreamKeys::new().with_secret(secret.as_bytes()),
            None => StreamKeys::new(),
        };
        for entry in &self.rtmp_keys {
            let target = StreamTarget {
                room: entry.room.clone(),
                identity: entry.identity.clone(),
            };
            // The error never contains the key: it names the entry by its target.
            keys.add(entry.key.expose(), target).map_err(|e| {
                ConfigError::Invalid(format!(
                    "rtmp_keys entry for {}/{}: {e}",
                    entry.room, entry.identity
                ))
            })?;
        }
        Ok(keys)
    }
}
