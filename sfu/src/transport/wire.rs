//! RTP between the wire form of the `rtc` stack and the routing core's [`RtpPacket`]: a
//! publisher's packet read in (with its RFC 6464 audio level), a forwarded packet written out.

use rtc::rtp;

use crate::core::{RtpPacket, Ssrc};

/// A publisher's packet as the routing core takes it; with `audio_level_extension_id`, the
/// level the publisher measured (RFC 6464) rides along.
pub(crate) fn from_wire(packet: rtp::Packet, audio_level_extension_id: Option<u8>) -> RtpPacket {
    RtpPacket {
        ssrc: Ssrc(packet.header.ssrc),
        payload_type: packet.header.payload_type,
        sequence_number: packet.header.sequence_number,
        timestamp: packet.header.timestamp,
        marker: packet.header.marker,
        audio_level: audio_level_extension_id.and_then(|id| audio_level(&packet.header, id)),
        sampled_at: None,
        payload: packet.payload,
    }
}

/// The RFC 6464 level (-dBov, 0..=127) in the extension with `id`, without copying: the first
/// byte is the voice-activity flag and the level, in both the one-byte and the two-byte header
/// form (which pads it). The flag is not returned: senders set it from their own VAD or not at
/// all, so the level alone decides. A missing or empty extension is `None`.
fn audio_level(header: &rtp::header::Header, id: u8) -> Option<u8> {
    if !header.extension {
        return None;
    }
    let extension = header.extensions.iter().find(|e| e.id == id)?;
    extension.payload.first().map(|byte| byte & 0x7f)
}

/// Builds the outgoing packet. Header extensions are not carried over: their ids were
/// negotiated with the publisher, not with this subscriber, and the sender rejects unknown ids.
pub(crate) fn to_wire(packet: RtpPacket) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker: packet.marker,
            payload_type: packet.payload_type,
            sequence_number: packet.sequence_number,
            timestamp: packet.timestamp,
            ssrc: packet.ssrc.0,
            ..Default::default()
        },
        payload: packet.payload,
    }
}

#[cfg(test)]
mod tests;
