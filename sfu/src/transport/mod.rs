//! The only module that imports webrtc-rs.
//!
//! It turns webrtc-rs peer connections into Sluice value types: SDP as `String`, candidates as
//! [`IceCandidate`], connection changes and new remote tracks as [`PeerEvent`]s on a channel, and
//! RTP as [`crate::core::RtpPacket`]. Everything above this module (the runtime, signaling) is
//! written against these types, so the WebRTC stack can be replaced (for instance by a driver
//! over the sans-IO `rtc` core with one shared UDP socket) without touching routing or
//! signaling.

mod congestion;
pub(crate) mod feedback;
mod horizon;
pub(crate) mod interceptors;
pub(crate) mod packetize;
mod peer;
mod ports;
mod probe;
mod repeat;
mod reports;
mod rtx;
mod sdp;
mod send_time;
mod track;

pub use crate::core::downlink::queue_delay::Congestion;
pub use feedback::FeedbackToApplication;
pub(crate) use feedback::{nacked_packets, remb_bits_per_second, round_trip};
pub use horizon::RepairHorizons;
pub(crate) use peer::sluice_media_engine;
pub use peer::{Peer, PeerRole, Transport};
pub use ports::{PortRange, PortRangeError};
pub(crate) use reports::{ClockAnchor, RemoteSenderClock, is_plausible_sampling};
pub use sdp::{negotiated_codecs, with_start_bitrate};
pub use track::{LocalTrack, RemoteTrack, RtpSink, SubscriberFeedback};
pub(crate) use track::{from_wire, to_wire};

use std::net::IpAddr;

use crate::core::{Codec, MediaKind};

/// How peer connections bind and advertise their UDP sockets.
#[derive(Debug, Clone, Default)]
pub struct TransportConfig {
    /// Media ports to bind; `None` lets the OS pick an ephemeral port per connection.
    pub udp_ports: Option<PortRange>,
    /// The address advertised in ICE candidates. `None` binds and advertises 127.0.0.1.
    /// A loopback address is bound directly; any other address makes the server bind all
    /// interfaces and advertise this one (1:1 NAT mapping, as on a cloud VM).
    pub public_ip: Option<IpAddr>,
    /// Minimum playout delay asked of subscribers (RTP playout-delay extension on video), in
    /// milliseconds; 0 does not send the extension.
    pub playout_delay_ms: u16,
}

/// An ICE candidate in `RTCIceCandidateInit` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    pub candidate: String,
    pub sdp_mid: Option<String>,
    pub sdp_m_line_index: Option<u16>,
    pub username_fragment: Option<String>,
}

/// The aggregate state of a peer connection, as the W3C `RTCPeerConnectionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

/// A negotiated codec, without webrtc-rs types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecInfo {
    /// e.g. `video/VP8`, `audio/opus`.
    pub mime_type: String,
    pub clock_rate: u32,
    pub channels: u16,
    pub sdp_fmtp_line: String,
}

impl CodecInfo {
    pub fn codec(&self) -> Codec {
        Codec::from_mime(&self.mime_type)
    }

    pub fn kind(&self) -> MediaKind {
        if self.mime_type.to_ascii_lowercase().starts_with("audio/") {
            MediaKind::Audio
        } else {
            MediaKind::Video
        }
    }
}

/// What a peer connection reports, delivered on the channel given to [`Peer::new`].
#[derive(Clone)]
pub enum PeerEvent {
    /// A local candidate to trickle to the client.
    LocalCandidate(IceCandidate),
    ConnectionState(ConnectionState),
    /// The first RTP packet of a remote track arrived (publisher connections only).
    TrackOpened(RemoteTrack),
    /// The path to the client holds a standing queue (subscriber connections only).
    Congested(Congestion),
}

impl std::fmt::Debug for PeerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LocalCandidate(c) => f.debug_tuple("LocalCandidate").field(c).finish(),
            Self::ConnectionState(s) => f.debug_tuple("ConnectionState").field(s).finish(),
            Self::TrackOpened(t) => f.debug_tuple("TrackOpened").field(&t.ssrc()).finish(),
            Self::Congested(c) => f.debug_tuple("Congested").field(c).finish(),
        }
    }
}

/// Failures of transport operations; the message is safe to show to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("no free UDP port in {0}")]
    NoFreePort(PortRange),
    #[error("invalid session description: {0}")]
    InvalidSdp(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    #[error("the codec {0} was not negotiated with this peer")]
    CodecNotNegotiated(String),
    #[error("peer connection error: {0}")]
    Peer(String),
}
