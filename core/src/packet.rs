//! Packet vocabulary of the core: what arrives (`RtpPacket`), what it is (`MediaKind`,
//! `Codec`), what the core learns from parsing it once (`PacketMeta`) and why a packet
//! was not forwarded (`DropReason`).

use std::fmt;
use std::time::Instant;

use bytes::Bytes;

use super::ids::Ssrc;
use super::rewrite::seq::ExtSeq;
use super::rewrite::timestamp::ExtTs;
use crate::codec::{h264, vp8};

/// Audio or video. Decides whether a subscription must start on a keyframe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Sound.
    Audio,
    /// Pictures.
    Video,
}

/// The codec of a publication, as far as the core needs to know it (keyframe detection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264 (RFC 6184).
    H264,
    /// Opus (RFC 7587).
    Opus,
    /// A codec the core cannot parse: every packet is treated as a possible start point.
    Other,
}

impl Codec {
    /// Maps an SDP/webrtc mime type ("video/VP8", "audio/opus", case-insensitive).
    pub fn from_mime(mime: &str) -> Codec {
        const KNOWN: [(&str, Codec); 3] = [
            ("video/vp8", Codec::Vp8),
            ("video/h264", Codec::H264),
            ("audio/opus", Codec::Opus),
        ];
        KNOWN
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(mime.trim()))
            .map_or(Codec::Other, |&(_, codec)| codec)
    }

    /// The media kind implied by the codec; `None` for `Other`, whose kind must be
    /// given separately (that is why a publication carries its own `MediaKind`).
    pub fn kind(self) -> Option<MediaKind> {
        match self {
            Codec::Opus => Some(MediaKind::Audio),
            Codec::Vp8 | Codec::H264 => Some(MediaKind::Video),
            Codec::Other => None,
        }
    }

    /// Whether the core can tell keyframes of this codec from other packets.
    pub(crate) fn detects_keyframes(self) -> bool {
        matches!(self, Codec::Vp8 | Codec::H264)
    }

    /// Whether a decoder can start at this packet. Malformed payloads are never a start
    /// point: forwarding them as one would show a broken picture instead of waiting.
    pub(crate) fn is_start_point(self, payload: &[u8]) -> bool {
        match self {
            Codec::Vp8 => vp8::is_keyframe(payload).unwrap_or(false),
            Codec::H264 => h264::is_keyframe(payload).unwrap_or(false),
            Codec::Opus | Codec::Other => true,
        }
    }
}

/// An RTP packet as the core sees it: the header fields it reads or rewrites and the
/// payload, shared (not copied) between all subscriptions it is forwarded to.
#[derive(Clone, Debug, PartialEq)]
pub struct RtpPacket {
    /// The publisher's (or, rewritten, the subscription's) SSRC.
    pub ssrc: Ssrc,
    /// The RTP payload type.
    pub payload_type: u8,
    /// The RTP sequence number.
    pub sequence_number: u16,
    /// The RTP timestamp.
    pub timestamp: u32,
    /// The RTP marker bit (the last packet of a video frame).
    pub marker: bool,
    /// The payload, shared by every subscriber's copy.
    pub payload: Bytes,
    /// The RFC 6464 audio level the publisher sent with an audio packet, in -dBov (0 is the
    /// loudest, 127 silence); `None` without the extension. The room ranks speakers by it,
    /// and forwarded packets keep it for the subscriber's transport to write with the
    /// extension id negotiated with that subscriber.
    pub audio_level: Option<u8>,
    /// When the media this packet's timestamp stands for was sampled, on the server's clock,
    /// when the incarnation tells (an RTMP encoder's timeline). Forwarded unchanged: the sender
    /// reports towards subscribers are derived from it, so the audio and video of one incarnation
    /// stay in sync whatever each one's path (transcoding, queues) delays them by.
    pub sampled_at: Option<Instant>,
}

/// Why a packet was not forwarded. Counted in stats, never an error.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// A video subscription has not seen a keyframe of the current incarnation yet.
    WaitingForKeyframe,
    /// RTP arrived for a publication the room does not know.
    UnknownPublication,
    /// A reordered packet older than the forwarding window start (the first packet
    /// forwarded from the current incarnation, or the publication's duplicate window).
    TooOld,
    /// The same sequence number of the same incarnation arrived twice.
    Duplicate,
    /// A late packet of the incarnation that a publication just replaced.
    StaleIncarnation,
    /// A packet of a simulcast layer this subscription is not receiving.
    NotCurrentLayer,
    /// A packet for a layer index the publication does not have.
    UnknownLayer,
    /// The subscriber's path is congested: its current layer is shed until the switch to a
    /// lower one lands.
    Congestion,
    /// The subscriber paused the subscription (e.g. its video element is hidden).
    Paused,
    /// A frame of a temporal layer above the one this subscription receives (its wish or
    /// its bandwidth holds it to a lower frame rate).
    TemporalLayer,
    /// The publication is muted (by its publisher or the application).
    Muted,
}

impl DropReason {
    /// Every reason, in a stable order (used for fixed-size counters).
    pub const ALL: [DropReason; 11] = [
        DropReason::WaitingForKeyframe,
        DropReason::UnknownPublication,
        DropReason::TooOld,
        DropReason::Duplicate,
        DropReason::StaleIncarnation,
        DropReason::NotCurrentLayer,
        DropReason::UnknownLayer,
        DropReason::Congestion,
        DropReason::Paused,
        DropReason::TemporalLayer,
        DropReason::Muted,
    ];

    /// A stable snake_case name, for stats and metrics keys.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::WaitingForKeyframe => "waiting_for_keyframe",
            DropReason::UnknownPublication => "unknown_publication",
            DropReason::TooOld => "too_old",
            DropReason::Duplicate => "duplicate",
            DropReason::StaleIncarnation => "stale_incarnation",
            DropReason::NotCurrentLayer => "not_current_layer",
            DropReason::UnknownLayer => "unknown_layer",
            DropReason::Congestion => "congestion",
            DropReason::Paused => "paused",
            DropReason::TemporalLayer => "temporal_layer",
            DropReason::Muted => "muted",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            DropReason::WaitingForKeyframe => 0,
            DropReason::UnknownPublication => 1,
            DropReason::TooOld => 2,
            DropReason::Duplicate => 3,
            DropReason::StaleIncarnation => 4,
            DropReason::NotCurrentLayer => 5,
            DropReason::UnknownLayer => 6,
            DropReason::Congestion => 7,
            DropReason::Paused => 8,
            DropReason::TemporalLayer => 9,
            DropReason::Muted => 10,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the core learned from parsing one packet of a publication, once, before the
/// per-subscription decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PacketMeta {
    /// Increments each time one of the publication's layers switches to a new SSRC.
    pub incarnation: u64,
    /// The simulcast (spatial) layer, 0 = lowest; always 0 without simulcast.
    pub layer: u8,
    pub seq: ExtSeq,
    pub ts: ExtTs,
    /// A decoder can start here (keyframe start for video, any packet otherwise).
    pub start_point: bool,
    /// VP8 descriptor fields, for their continuity across switches (VP8 only).
    pub vp8: Option<super::rewrite::vp8::Vp8Meta>,
    /// See [`RtpPacket::sampled_at`].
    pub sampled_at: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_mime_is_case_insensitive() {
        assert_eq!(Codec::from_mime("video/VP8"), Codec::Vp8);
        assert_eq!(Codec::from_mime("VIDEO/vp8"), Codec::Vp8);
        assert_eq!(Codec::from_mime("video/H264"), Codec::H264);
        assert_eq!(Codec::from_mime("audio/opus"), Codec::Opus);
        assert_eq!(Codec::from_mime("audio/OPUS"), Codec::Opus);
        assert_eq!(Codec::from_mime("video/AV1"), Codec::Other);
        assert_eq!(Codec::from_mime("vp8"), Codec::Other);
        assert_eq!(Codec::from_mime(""), Codec::Other);
    }

    #[test]
    fn kind_follows_codec() {
        assert_eq!(Codec::Opus.kind(), Some(MediaKind::Audio));
        assert_eq!(Codec::Vp8.kind(), Some(MediaKind::Video));
        assert_eq!(Codec::H264.kind(), Some(MediaKind::Video));
        assert_eq!(Codec::Other.kind(), None);
    }

    #[test]
    fn drop_reason_indexes_match_all() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn opus_and_other_are_always_start_points() {
        assert!(Codec::Opus.is_start_point(&[]));
        assert!(Codec::Other.is_start_point(&[0xff]));
        assert!(!Codec::Vp8.is_start_point(&[]));
        assert!(!Codec::H264.is_start_point(&[]));
    }
}
