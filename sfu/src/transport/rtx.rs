//! Retransmissions a simulcast publisher sends on RTX streams (RFC 4588), turned back into the
//! packets they repair.
//!
//! Chrome identifies the RTX stream of each simulcast encoding only by the repaired-rid header
//! extension (no `a=ssrc-group:FID` with rid simulcast). webrtc-rs 0.21 cannot bind such a
//! stream (webrtc-rs/rtc#12): it drops every RTX packet as an unknown SSRC, and its NACK
//! generator, never seeing the gaps filled, asks again every 100 ms. This interceptor sits on
//! the read path before the NACK generator: it learns which media SSRC each rid names and which
//! RTX SSRC repairs which rid, and rewrites every RTX packet into the original (media SSRC,
//! media payload type, the original sequence number from the first two payload bytes). The
//! rest of the stack then sees the repaired packet as if it had arrived late.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtp::packet::Packet as RtpPacket;
use rtc::sansio::Protocol;
use tracing::debug;

use super::pass_through::PassThrough;

pub const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
pub const REPAIRED_RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

/// The repair count is logged every this many repairs.
const REPAIRS_PER_LOG: u64 = 16;
/// Streams remembered at most, so a peer inventing SSRCs or rids cannot grow them.
const STREAM_LIMIT: usize = 64;

/// What a publisher's RTX traffic has amounted to, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairStats {
    /// RTX packets rewritten into the packets they repair.
    pub repaired: u64,
    /// RTX packets without an original (padding, probes), passed on as they came.
    pub empty: u64,
    /// RTX packets whose rid named no media stream seen yet, passed on as they came.
    pub unmatched: u64,
}

#[derive(Default)]
pub struct RepairedStreams {
    mid_id: Option<u8>,
    rid_id: Option<u8>,
    repaired_rid_id: Option<u8>,
    /// (mid, rid) → media SSRC, from media packets carrying their rid.
    media_by_rid: HashMap<(Bytes, Bytes), u32>,
    /// Media SSRC → its payload type.
    media_payload_type: HashMap<u32, u8>,
    /// RTX SSRC → the media SSRC it repairs (kept once learned: Chrome stops sending the
    /// extensions when the stream has been acknowledged).
    repairs: HashMap<u32, u32>,
    stats: RepairStats,
    read_queue: PassThrough<TaggedPacket>,
    write_queue: PassThrough<TaggedPacket>,
}

impl RepairedStreams {
    #[cfg(test)]
    pub fn stats(&self) -> RepairStats {
        self.stats
    }

    fn learn_extensions(&mut self, info: &StreamInfo) {
        for extension in &info.rtp_header_extensions {
            let Ok(id) = u8::try_from(extension.id) else {
                continue;
            };
            match extension.uri.as_str() {
                MID_URI => self.mid_id = Some(id),
                RID_URI => self.rid_id = Some(id),
                REPAIRED_RID_URI => self.repaired_rid_id = Some(id),
                _ => {}
            }
        }
    }

    fn extension(packet: &RtpPacket, id: Option<u8>) -> Option<Bytes> {
        id.and_then(|id| packet.header.get_extension(id))
            .filter(|value| !value.is_empty())
    }

    fn on_rtp(&mut self, packet: &mut RtpPacket) {
        let ssrc = packet.header.ssrc;
        let mid = Self::extension(packet, self.mid_id).unwrap_or_default();
        if let Some(repaired_rid) = Self::extension(packet, self.repaired_rid_id) {
            match self.media_by_rid.get(&(mid, repaired_rid.clone())) {
                Some(&media) if self.repairs.get(&ssrc) != Some(&media) => {
                    if self.repairs.len() < STREAM_LIMIT || self.repairs.contains_key(&ssrc) {
                        debug!(rtx_ssrc = ssrc, media_ssrc = media, rid = ?repaired_rid, "RTX stream bound by repaired-rid");
                        self.repairs.insert(ssrc, media);
                    }
                }
                Some(_) => {}
                None => {
                    self.stats.unmatched += 1;
                    return;
                }
            }
        } else if let Some(rid) = Self::extension(packet, self.rid_id)
            && !self.repairs.contains_key(&ssrc)
            && (self.media_by_rid.len() < STREAM_LIMIT
                || self.media_by_rid.contains_key(&(mid.clone(), rid.clone())))
        {
            self.media_by_rid.insert((mid, rid), ssrc);
        }
        let Some(&media) = self.repairs.get(&ssrc) else {
            if self.media_payload_type.len() < STREAM_LIMIT
                || self.media_payload_type.contains_key(&ssrc)
            {
                self.media_payload_type
                    .insert(ssrc, packet.header.payload_type);
            }
            return;
        };
        let (Some(&payload_type), Some(original)) =
            (self.media_payload_type.get(&media), packet.payload.get(..2))
        else {
            self.stats.empty += 1;
            return;
        };
        let sequence_number = u16::from_be_bytes([original[0], original[1]]);
        packet.payload = packet.payload.slice(2..);
        if packet.payload.is_empty() {
            // An RTX packet carrying only its original's number: nothing to repair with.
            self.stats.empty += 1;
            return;
        }
        packet.header.ssrc = media;
        packet.header.payload_type = payload_type;
        packet.header.sequence_number = sequence_number;
        packet.header.padding = false;
        self.stats.repaired += 1;
        if self.stats.repaired.is_multiple_of(REPAIRS_PER_LOG) {
            debug!(stats = ?self.stats, "RTX packets repaired");
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RepairedStreams {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &mut msg.message.packet {
            self.on_rtp(packet);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RepairedStreams {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.learn_extensions(info);
        // A single encoding (a screen share) signals its RTX stream with `a=ssrc-group:FID`
        // and no rid. webrtc-rs unwraps those only after the chain, so the NACK generator
        // would never see their repairs fill a gap: unwrap them here too.
        if let Some(rtx) = info.ssrc_rtx
            && (self.repairs.len() < STREAM_LIMIT || self.repairs.contains_key(&rtx))
            && (self.media_payload_type.len() < STREAM_LIMIT
                || self.media_payload_type.contains_key(&info.ssrc))
        {
            self.repairs.insert(rtx, info.ssrc);
            self.media_payload_type.insert(info.ssrc, info.payload_type);
        }
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.media_payload_type.remove(&info.ssrc);
        self.media_by_rid.retain(|_, media| *media != info.ssrc);
        self.repairs.retain(|_, media| *media != info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::{AttributedPacket, RTPHeaderExtension};
    use rtc::shared::TransportContext;

    const MID: u8 = 1;
    const RID: u8 = 2;
    const RRID: u8 = 3;

    fn bound() -> RepairedStreams {
        let mut streams = RepairedStreams::default();
        let extension = |uri: &str, id| RTPHeaderExtension {
            uri: uri.to_owned(),
            id,
        };
        streams.bind_remote_stream(&StreamInfo {
            ssrc: 1_000,
            payload_type: 96,
            rtp_header_extensions: vec![
                extension(MID_URI, u16::from(MID)),
                extension(RID_URI, u16::from(RID)),
                extension(REPAIRED_RID_URI, u16::from(RRID)),
            ],
            ..Default::default()
        });
        streams
    }

    fn packet(
        ssrc: u32,
        pt: u8,
        seq: u16,
        extensions: &[(u8, &str)],
        payload: &[u8],
    ) -> TaggedPacket {
        let mut rtp = RtpPacket::default();
        rtp.header.version = 2;
        rtp.header.ssrc = ssrc;
        rtp.header.payload_type = pt;
        rtp.header.sequence_number = seq;
        for (id, value) in extensions {
            rtp.header
                .set_extension(*id, Bytes::copy_from_slice(value.as_bytes()))
                .expect("a one-byte extension");
        }
        rtp.payload = Bytes::copy_from_slice(payload);
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp)),
        }
    }

    fn pass(streams: &mut RepairedStreams, msg: TaggedPacket) -> RtpPacket {
        streams.handle_read(msg).expect("never fails");
        match streams.poll_read().map(|m| m.message.packet) {
            Some(Packet::Rtp(rtp)) => rtp,
            other => panic!("expected the RTP packet back, got {other:?}"),
        }
    }

    #[test]
    fn an_rtx_packet_becomes_the_packet_it_repairs_on_the_layer_its_repaired_rid_names() {
        let mut streams = bound();
        // Media of two layers, named by rid on their first packets.
        pass(
            &mut streams,
            packet(1_000, 96, 500, &[(MID, "0"), (RID, "q")], b"q-media"),
        );
        pass(
            &mut streams,
            packet(2_000, 96, 7_000, &[(MID, "0"), (RID, "f")], b"f-media"),
        );
        // f's RTX stream repairs f's packet 6_998: OSN first, then the original payload.
        let repaired = pass(
            &mut streams,
            packet(
                2_001,
                97,
                40,
                &[(MID, "0"), (RRID, "f")],
                &[0x1b, 0x56, 0xAA, 0xBB],
            ),
        );
        assert_eq!(repaired.header.ssrc, 2_000);
        assert_eq!(repaired.header.payload_type, 96);
        assert_eq!(repaired.header.sequence_number, 6_998);
        assert_eq!(&repaired.payload[..], &[0xAA, 0xBB]);
        // Later RTX packets no longer carry the extensions (Chrome stops once acknowledged).
        let later = pass(
            &mut streams,
            packet(2_001, 97, 41, &[], &[0x1b, 0x58, 0xCC]),
        );
        assert_eq!(
            (later.header.ssrc, later.header.sequence_number),
            (2_000, 7_000)
        );
        // Media packets are untouched.
        let media = pass(&mut streams, packet(1_000, 96, 501, &[], b"q-media"));
        assert_eq!(
            (media.header.ssrc, media.header.sequence_number),
            (1_000, 501)
        );
        assert_eq!(
            streams.stats(),
            RepairStats {
                repaired: 2,
                empty: 0,
                unmatched: 0
            }
        );
    }

    #[test]
    fn an_rtx_stream_signalled_by_ssrc_group_is_unwrapped_too() {
        let mut streams = bound();
        streams.bind_remote_stream(&StreamInfo {
            ssrc: 5_000,
            ssrc_rtx: Some(5_001),
            payload_type: 96,
            payload_type_rtx: Some(97),
            ..Default::default()
        });
        let repaired = pass(&mut streams, packet(5_001, 97, 3, &[], &[0x00, 0x2a, 0xEE]));
        assert_eq!(
            (
                repaired.header.ssrc,
                repaired.header.payload_type,
                repaired.header.sequence_number
            ),
            (5_000, 96, 42)
        );
        assert_eq!(&repaired.payload[..], &[0xEE]);
    }

    #[test]
    fn padding_and_unknown_repairs_pass_unchanged() {
        let mut streams = bound();
        pass(
            &mut streams,
            packet(1_000, 96, 500, &[(MID, "0"), (RID, "q")], b"q-media"),
        );
        // A probe: RTX padding without an original.
        let probe = pass(
            &mut streams,
            packet(1_001, 97, 1, &[(MID, "0"), (RRID, "q")], &[]),
        );
        assert_eq!(probe.header.ssrc, 1_001);
        // A repaired-rid nobody sent media for.
        let stray = pass(
            &mut streams,
            packet(3_001, 97, 1, &[(MID, "0"), (RRID, "h")], &[0, 1, 2]),
        );
        assert_eq!((stray.header.ssrc, stray.header.payload_type), (3_001, 97));
        // An OSN with nothing after it.
        let bare = pass(&mut streams, packet(1_001, 97, 2, &[], &[0, 9]));
        assert_eq!(bare.header.ssrc, 1_001);
        assert_eq!(
            streams.stats(),
            RepairStats {
                repaired: 0,
                empty: 2,
                unmatched: 1
            }
        );
    }

    #[test]
    fn a_peer_inventing_streams_is_bounded() {
        let mut streams = bound();
        for i in 0..1_000u32 {
            let rid = format!("r{i}");
            pass(
                &mut streams,
                packet(10_000 + i, 96, 1, &[(MID, "0"), (RID, &rid)], b"x"),
            );
            pass(
                &mut streams,
                packet(20_000 + i, 97, 1, &[(MID, "0"), (RRID, &rid)], &[0, 1, 2]),
            );
        }
        assert!(streams.media_by_rid.len() <= STREAM_LIMIT);
        assert!(streams.repairs.len() <= STREAM_LIMIT);
        assert!(streams.media_payload_type.len() <= STREAM_LIMIT);
    }
}
