//! RTP packets of one ingest track: H.264 access units through the rtc-rtp payloader (single
//! NAL unit, STAP-A for SPS+PPS, FU-A above the MTU), Opus frames one per packet. Each stream
//! is packetized once; the routing core fans the packets out.

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;

use crate::core::{RtpPacket, Ssrc};

/// RTP payload bytes per packet: leaves room for the RTP header (12), SRTP tag (10), header
/// extensions and tunnels within a 1280-byte IPv6-safe datagram.
pub const MTU: usize = 1200;
/// The payload types in our packets are placeholders: the core rewrites them per subscriber.
const PT_H264: u8 = 102;
const PT_OPUS: u8 = 111;

/// Sequence numbering and SSRC of one track. A fresh track (a new RTMP session) gets a fresh
/// SSRC, which the core treats as a source change of the same publication.
#[derive(Debug)]
struct RtpTrack {
    ssrc: Ssrc,
    payload_type: u8,
    next_seq: u16,
}

impl RtpTrack {
    fn new(payload_type: u8) -> Self {
        Self {
            ssrc: Ssrc(rand::random()),
            payload_type,
            next_seq: rand::random(),
        }
    }

    fn packet(&mut self, payload: Bytes, timestamp: u32, marker: bool) -> RtpPacket {
        let sequence_number = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        RtpPacket {
            ssrc: self.ssrc,
            payload_type: self.payload_type,
            sequence_number,
            timestamp,
            marker,
            payload,
            audio_level: None,
            sampled_at: None,
        }
    }
}

/// Turns Annex B access units into RTP packets.
#[derive(Debug)]
pub struct H264Packetizer {
    track: RtpTrack,
    payloader: H264Payloader,
}

impl Default for H264Packetizer {
    fn default() -> Self {
        Self {
            track: RtpTrack::new(PT_H264),
            payloader: H264Payloader::default(),
        }
    }
}

impl H264Packetizer {
    /// The same RTP source (SSRC, next sequence number) with a fresh payloader: nothing a
    /// payloader holds (parameter sets of the last access unit) crosses into a new session.
    pub fn continuing(self) -> Self {
        Self {
            track: self.track,
            payloader: H264Payloader::default(),
        }
    }

    pub fn ssrc(&self) -> Ssrc {
        self.track.ssrc
    }

    /// Appends the packets of one access unit to `out`; the last carries the marker bit (the
    /// receiver's signal that the frame is complete).
    pub fn packetize(&mut self, access_unit: Bytes, timestamp: u32, out: &mut Vec<RtpPacket>) {
        // The payloader only fails on a zero MTU or empty input, and yields nothing then.
        let payloads = self
            .payloader
            .payload(MTU, &access_unit)
            .unwrap_or_default();
        let last = payloads.len().saturating_sub(1);
        out.extend(
            payloads
                .into_iter()
                .enumerate()
                .map(|(i, payload)| self.track.packet(payload, timestamp, i == last)),
        );
    }
}

/// Puts each Opus frame in its own packet.
#[derive(Debug)]
pub struct OpusPacketizer {
    track: RtpTrack,
    started: bool,
}

impl Default for OpusPacketizer {
    fn default() -> Self {
        Self {
            track: RtpTrack::new(PT_OPUS),
            started: false,
        }
    }
}

impl OpusPacketizer {
    /// After a gap (the encoder reconnected) the next packet starts a talk spurt again.
    pub fn restart_spurt(&mut self) {
        self.started = false;
    }

    pub fn packetize(&mut self, frame: Bytes, timestamp: u32) -> RtpPacket {
        // For audio the marker flags the first packet of a talk spurt (RFC 3551 4.1).
        let first = !self.started;
        self.started = true;
        self.track.packet(frame, timestamp, first)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::h264;

    fn annex_b(units: &[Vec<u8>]) -> Bytes {
        let mut out = Vec::new();
        for unit in units {
            out.extend([0, 0, 0, 1]);
            out.extend(unit);
        }
        Bytes::from(out)
    }

    fn nal(header: u8, len: usize) -> Vec<u8> {
        let mut unit = vec![header];
        unit.extend((1..len).map(|i| (i % 251) as u8 | 1));
        unit
    }

    #[test]
    fn large_idr_with_parameter_sets_is_stap_a_then_fu_a() {
        let mut packetizer = H264Packetizer::default();
        let mut out = Vec::new();
        let idr = nal(0x65, 5000);
        packetizer.packetize(
            annex_b(&[nal(0x67, 20), nal(0x68, 4), idr.clone()]),
            9000,
            &mut out,
        );
        assert_eq!(h264::nal_type(out[0].payload[0]), h264::STAP_A);
        assert_eq!(h264::is_keyframe(&out[0].payload), Ok(true));
        let fragments = &out[1..];
        assert_eq!(fragments.len(), 5000usize.div_ceil(MTU - 2));
        for (i, packet) in out.iter().enumerate() {
            assert!(packet.payload.len() <= MTU, "packet {i} too large");
            assert_eq!(packet.timestamp, 9000);
            assert_eq!(packet.ssrc, packetizer.ssrc());
            assert_eq!(packet.marker, i == out.len() - 1, "marker only on the last");
        }
        // The fragments reassemble into the IDR.
        let mut rebuilt = vec![(fragments[0].payload[0] & 0xe0) | (fragments[0].payload[1] & 0x1f)];
        for packet in fragments {
            assert_eq!(h264::nal_type(packet.payload[0]), h264::FU_A);
            rebuilt.extend(&packet.payload[2..]);
        }
        assert_eq!(rebuilt, idr);
        assert_ne!(fragments[0].payload[1] & 0x80, 0, "start bit");
        assert_ne!(fragments.last().unwrap().payload[1] & 0x40, 0, "end bit");
        // Sequence numbers are contiguous.
        for pair in out.windows(2) {
            assert_eq!(
                pair[1].sequence_number,
                pair[0].sequence_number.wrapping_add(1)
            );
        }
    }

    #[test]
    fn small_frames_are_single_nal_packets_with_marker() {
        let mut packetizer = H264Packetizer::default();
        let mut out = Vec::new();
        packetizer.packetize(annex_b(&[nal(0x41, 300)]), 1, &mut out);
        packetizer.packetize(annex_b(&[nal(0x41, MTU)]), 2, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|p| p.marker));
        assert_eq!(out[1].payload.len(), MTU);
        // A frame of two slices: one marker, on the second.
        let mut two = Vec::new();
        packetizer.packetize(annex_b(&[nal(0x41, 100), nal(0x41, 100)]), 3, &mut two);
        assert_eq!(
            two.iter().map(|p| p.marker).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(
            two[0].sequence_number,
            out[1].sequence_number.wrapping_add(1)
        );
    }

    #[test]
    fn opus_marks_only_the_first_packet() {
        let mut packetizer = OpusPacketizer::default();
        let first = packetizer.packetize(Bytes::from_static(&[0xfc, 1]), 0);
        let second = packetizer.packetize(Bytes::from_static(&[0xfc, 2]), 960);
        assert!(first.marker && !second.marker);
        assert_eq!(
            second.sequence_number,
            first.sequence_number.wrapping_add(1)
        );
        assert_eq!(second.timestamp, 960);
    }
}
