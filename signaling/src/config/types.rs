//! The value types of configuration options that parse from text: the media plane, the
//! ICE-TCP port, the RTMP listener and stream keys.

use std::net::SocketAddr;

use crate::secret::Secret;

/// Which media plane carries the participants' connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MediaPlane {
    /// One webrtc-rs peer connection, task set and UDP port per connection.
    Webrtc,
    /// One shard thread owning one UDP port for all connections (ICE-lite).
    #[default]
    Shard,
}

impl std::str::FromStr for MediaPlane {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "webrtc" => Ok(Self::Webrtc),
            "shard" => Ok(Self::Shard),
            other => Err(format!(
                "invalid media plane {other:?}: expected webrtc or shard"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for MediaPlane {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Most media threads (shards) one server runs.
pub(super) const MAX_MEDIA_THREADS: usize = 256;

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
