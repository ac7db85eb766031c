//! Answers a subscriber's NACKs from the packets sent to it within the last
//! [`RESEND_HORIZON`].
//!
//! How far back a retransmission can still help is a matter of time, not of packet count: a
//! receive-only browser cannot measure the round trip, so libwebrtc's NACK module assumes
//! 100 ms and asks for a missing packet at most ten times, one assumed round trip apart. All
//! of a packet's NACKs have left the client about a second after the gap showed, and
//! libwebrtc's own sender keeps a second of history (three round trips on a slower path) for
//! the same reason. Keeping packets by age makes the history follow the stream's rate: a
//! 1.5 Mbit/s layer holds about 200 packets, a paused one none. `rtc`'s responder instead
//! allocates 1 024 packet slots per stream when it binds (112 KiB per video subscription,
//! whatever it sends), and reaches back 5 s at 1.5 Mbit/s but only a fraction of a second at
//! the top of a 4K ladder.
//!
//! Retransmissions stay on the media SSRC (subscriber legs negotiate no RTX, ADR 0002) and
//! carry [`Attribute::Retransmission`], which the repeater and the send history downstream
//! read (ADR 0020). NACKs for packets before a decoder restart never reach this interceptor
//! (`horizon`, ADR 0024).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;

use super::pass_through::PassThrough;

/// How long a sent packet can be retransmitted.
pub(crate) const RESEND_HORIZON: Duration = Duration::from_secs(1);
/// Packets kept per stream at most, whatever its rate: a second of a 10 Mbit/s stream.
const MAX_PACKETS_PER_STREAM: usize = 1024;
/// A stream's history gives memory back once it holds less than half its capacity (after a
/// keyframe burst, a lower layer, a pause), keeping room for half as much again; this is the
/// least it keeps.
const MIN_CAPACITY: usize = 32;

/// A sent packet as held for resending. Forwarded packets mostly carry no header extension
/// at this point of the chain (the transport-wide number and send time are stamped
/// wire-ward), so their header is the few fields [`Held::Plain`] keeps: 56 bytes a packet
/// with its send time, against 128 for a whole `rtp::Packet`. Any other header is kept whole.
enum Held {
    Plain {
        payload: bytes::Bytes,
        timestamp: u32,
        sequence_number: u16,
        payload_type: u8,
        marker: bool,
    },
    Whole(Box<rtp::Packet>),
}

impl Held {
    fn new(packet: rtp::Packet) -> Self {
        let header = &packet.header;
        if *header
            == plain_header(
                header.ssrc,
                header.sequence_number,
                header.timestamp,
                header.payload_type,
                header.marker,
            )
        {
            let rtp::Packet { header, payload } = packet;
            Self::Plain {
                payload,
                timestamp: header.timestamp,
                sequence_number: header.sequence_number,
                payload_type: header.payload_type,
                marker: header.marker,
            }
        } else {
            Self::Whole(Box::new(packet))
        }
    }

    fn sequence_number(&self) -> u16 {
        match self {
            Self::Plain {
                sequence_number, ..
            } => *sequence_number,
            Self::Whole(packet) => packet.header.sequence_number,
        }
    }

    /// The packet as it was sent on `ssrc`.
    fn packet(&self, ssrc: u32) -> rtp::Packet {
        match self {
            Self::Plain {
                payload,
                timestamp,
                sequence_number,
                payload_type,
                marker,
            } => rtp::Packet {
                header: plain_header(ssrc, *sequence_number, *timestamp, *payload_type, *marker),
                payload: payload.clone(),
            },
            Self::Whole(packet) => rtp::Packet::clone(packet),
        }
    }
}

/// The header of an RTP packet without padding, contributing sources or extensions.
fn plain_header(
    ssrc: u32,
    sequence_number: u16,
    timestamp: u32,
    payload_type: u8,
    marker: bool,
) -> rtp::header::Header {
    rtp::header::Header {
        version: 2,
        marker,
        payload_type,
        sequence_number,
        timestamp,
        ssrc,
        ..Default::default()
    }
}

/// The packets recently sent on one stream, oldest first, each with when it was written.
#[derive(Default)]
struct SentPackets {
    packets: VecDeque<(Instant, Held)>,
}

impl SentPackets {
    fn add(&mut self, now: Instant, packet: rtp::Packet) {
        let seq = packet.header.sequence_number;
        if let Some((_, newest)) = self.packets.back() {
            match seq.wrapping_sub(newest.sequence_number()) {
                0 => return,
                1..0x8000 => {}
                // Numbering went back: a new sequence that the history cannot be searched with.
                _ => self.packets.clear(),
            }
        }
        if self.packets.len() == MAX_PACKETS_PER_STREAM {
            self.packets.pop_front();
        }
        self.packets.push_back((now, Held::new(packet)));
        self.expire(now);
    }

    /// Drops what is older than the horizon.
    fn expire(&mut self, now: Instant) {
        while self
            .packets
            .front()
            .is_some_and(|(sent, _)| now.saturating_duration_since(*sent) > RESEND_HORIZON)
        {
            self.packets.pop_front();
        }
    }

    /// Gives back memory a burst left behind.
    fn trim(&mut self) {
        let held = self.packets.len();
        if self.packets.capacity() > MIN_CAPACITY.max(2 * held) {
            self.packets.shrink_to(MIN_CAPACITY.max(held + held / 2));
        }
    }

    /// The packet sent with `seq`, while it is held. Packets are held in sending order, so
    /// their offsets from the oldest increase.
    fn get(&self, seq: u16) -> Option<&Held> {
        let (_, oldest) = self.packets.front()?;
        let oldest = oldest.sequence_number();
        let offset = seq.wrapping_sub(oldest);
        // Without a gap in the numbering, the packet sits at its offset.
        if let Some((_, held)) = self.packets.get(usize::from(offset))
            && held.sequence_number() == seq
        {
            return Some(held);
        }
        let index = self
            .packets
            .partition_point(|(_, held)| held.sequence_number().wrapping_sub(oldest) < offset);
        self.packets
            .get(index)
            .map(|(_, held)| held)
            .filter(|held| held.sequence_number() == seq)
    }
}

/// The subscriber leg's NACK responder; see the module documentation. It takes
/// `Slot::NackResponder` (4_000) in the registry.
#[derive(Default)]
pub struct NackResponder {
    /// Per local stream that negotiated NACK, by SSRC.
    streams: HashMap<u32, SentPackets>,
    read_queue: PassThrough<TaggedPacket>,
    write_queue: PassThrough<TaggedPacket>,
}

impl NackResponder {
    fn answer(&mut self, now: Instant, nack: &TransportLayerNack) {
        let Some(stream) = self.streams.get_mut(&nack.media_ssrc) else {
            return;
        };
        stream.expire(now);
        for seq in nack.nacks.iter().flat_map(|pair| *pair) {
            let Some(held) = stream.get(seq) else {
                continue;
            };
            self.write_queue.push_back(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtp(held.packet(nack.media_ssrc)))
                    .with(Attribute::Retransmission),
            });
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackResponder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for packet in packets {
                if let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() {
                    self.answer(msg.now, nack);
                }
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && let Some(stream) = self.streams.get_mut(&packet.header.ssrc)
        {
            stream.add(msg.now, packet.clone());
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    /// Called whenever the connection's timers run (its sender reports alone come every
    /// second): a stream that stopped sending lets its packets go here.
    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        for stream in self.streams.values_mut() {
            stream.expire(now);
            stream.trim();
        }
        Ok(())
    }
}

impl Interceptor for NackResponder {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let nack = info
            .rtcp_feedback
            .iter()
            .any(|feedback| feedback.typ == "nack" && feedback.parameter.is_empty());
        if nack {
            self.streams.entry(info.ssrc).or_default();
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
#[path = "nack_responder_tests.rs"]
mod tests;
