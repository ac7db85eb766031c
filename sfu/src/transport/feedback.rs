//! Lets the RTCP feedback an SFU acts on reach the application.
//!
//! In webrtc-rs 0.21 every interceptor chain ends in a terminus that drops inbound RTCP unless
//! an interceptor marked it `DeliverToApplication` (webrtc-rs/rtc#148 discusses it). Without
//! this interceptor a subscriber's PLI/FIR would never reach the routing core, and its REMB
//! never reach the allocator.

use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;

use super::pass_through::PassThrough;
use super::reports::SentReports;

/// A pass-through interceptor that marks inbound RTCP carrying a keyframe request, a
/// bandwidth estimate, a NACK (the fastest congestion signal a receiver sends) or a sender
/// report (a publisher's capture clock) for delivery. The NACK responder still answers the
/// NACKs: marking only lets a copy past the terminus.
///
/// Add [`FeedbackToApplication::default`] to a webrtc-rs interceptor registry at an
/// application-most slot (above every built-in interceptor), e.g. `Slot::Custom(20_000)`.
#[derive(Default)]
pub struct FeedbackToApplication {
    read_queue: PassThrough<TaggedPacket>,
    write_queue: PassThrough<TaggedPacket>,
}

fn is_actionable(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    packets.iter().any(|p| {
        let any = p.as_any();
        any.is::<PictureLossIndication>()
            || any.is::<FullIntraRequest>()
            || any.is::<ReceiverEstimatedMaximumBitrate>()
            || any.is::<TransportLayerNack>()
            // A publisher's: maps its media to its capture clock (see `reports`).
            || any.is::<SenderReport>()
    })
}

/// REMB values are clamped to this (10 Gbit/s): a REMB's mantissa and exponent reach far past
/// any real path.
const REMB_LIMIT_BPS: u64 = 10_000_000_000;

/// How many lost packets a NACK names.
pub(crate) fn nacked_packets(nack: &TransportLayerNack) -> u32 {
    nack.nacks
        .iter()
        .map(|pair| 1 + pair.lost_packets.count_ones())
        .sum()
}

/// The bitrate of the last usable REMB in a compound report, clamped.
pub(crate) fn remb_bits_per_second(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Option<u64> {
    packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>())
        .map(|remb| remb.bitrate)
        .rfind(|bps| bps.is_finite() && *bps >= 0.0)
        .map(|bps| (bps as u64).min(REMB_LIMIT_BPS))
}

/// The shortest round trip the report blocks of a compound report give, against the sender
/// reports `sent` remembers (a compound report reaches the track its first block names; the
/// watched stream's block may be another in it).
pub(crate) fn round_trip(
    packets: &[Box<dyn rtc::rtcp::Packet>],
    sent: &SentReports,
    now: Instant,
) -> Option<Duration> {
    packets
        .iter()
        .flat_map(|p| {
            let any = p.as_any();
            if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                rr.reports.as_slice()
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                sr.reports.as_slice()
            } else {
                &[]
            }
        })
        .filter_map(|block| sent.round_trip(block.ssrc, block.last_sender_report, block.delay, now))
        .min()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackToApplication {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && is_actionable(packets)
        {
            msg.message.add(Attribute::DeliverToApplication);
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

impl Interceptor for FeedbackToApplication {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
