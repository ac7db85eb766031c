//! The parts of a WebRTC connection the shard builds each of its sans-IO `rtc` peers from,
//! and the value types the rest of Sluice sees them in.
//!
//! - [`media_engine`] and [`interceptors`]: the codecs every connection negotiates and each
//!   role's interceptor chain — NACK and RTX ([`rtx`], [`repeat`], [`horizon`]), sender and
//!   receiver reports ([`reports`]), GCC over TWCC with a standing-queue watch ([`congestion`]),
//!   probing ([`probe`]), abs-send-time ([`send_time`]), the RTCP handed to the shard
//!   ([`feedback`]) and the RTP of SSRCs a publisher did not signal ([`unsignaled`]).
//! - [`wire`]: RTP between the `rtc` wire form and the routing core's packets.
//! - [`sdp`] and [`packetize`]: the little SDP reading Sluice needs, and the payloaders RTMP
//!   ingest packetizes with.
//! - SDP as `String`, candidates as [`IceCandidate`], connection states as [`ConnectionState`],
//!   codecs as [`CodecInfo`]: signaling is written against these, never against `rtc` types.

mod congestion;
pub(crate) mod feedback;
mod horizon;
pub(crate) mod interceptors;
mod media_engine;
mod nack_responder;
pub(crate) mod packetize;
mod pass_through;
mod probe;
mod repeat;
mod reports;
mod rtx;
mod sdp;
mod send_time;
pub(crate) mod unsignaled;
mod wire;

pub use crate::core::downlink::queue_delay::Congestion;
pub use feedback::FeedbackToApplication;
pub(crate) use feedback::{nacked_packets, remb_bits_per_second, round_trip};
pub use horizon::RepairHorizons;
pub use media_engine::forwarded_codec;
pub(crate) use media_engine::sluice_media_engine;
pub(crate) use reports::{ClockAnchor, RemoteSenderClock, is_plausible_sampling};
pub use sdp::{negotiated_codecs, with_start_bitrate};
pub(crate) use wire::{from_wire, to_wire};

use crate::core::{Codec, MediaKind};

/// Which of a participant's two connections this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// The client offers and sends its media up.
    Publisher,
    /// The server offers and sends subscriptions down.
    Subscriber,
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

/// A negotiated codec, without `rtc` types.
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

/// Failures of connection operations; the message is safe to show to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("invalid session description: {0}")]
    InvalidSdp(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("peer connection error: {0}")]
    Peer(String),
}
