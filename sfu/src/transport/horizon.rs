//! Ignores a subscriber's NACKs for packets its decoder will never show.
//!
//! When forwarding moves to another layer (or source), it restarts at that layer's keyframe,
//! and the decoder drops every older frame once the keyframe is complete. Its NACK module
//! does not know that: libwebrtc keeps asking for each missing packet up to ten times, one
//! assumed round trip (100 ms) apart. After a congestion step-down that is a storm: the
//! client goes on NACKing the shed layer, the responder would answer every NACK into the same
//! narrow path, and the lower layer's keyframe that is to end the freeze would wait behind the
//! repairs (ADR 0024).
//!
//! The routing core reports each restart as an output sequence number of the subscription's
//! SSRC (`Output::RepairHorizon`). The shard records it here while it writes the restart's
//! first packet, so it is in place before any NACK could name a later packet. This interceptor, read-side just below the NACK responder, strips the sequence
//! numbers before it from inbound NACKs, and drops a NACK left empty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::sansio::Protocol;
use tracing::debug;

use super::pass_through::PassThrough;

/// How long a horizon is kept: far longer than a receiver NACKs a packet (about a second),
/// far shorter than the 32 768 packets after which sequence numbers would compare wrongly.
const HORIZON_TTL: Duration = Duration::from_secs(5);

/// Per outgoing SSRC of one connection: the sequence number its receiver's decoder restarted
/// at, and when. Shared by the runtime (which sets it) and [`NackHorizon`] (which reads it).
#[derive(Debug, Default)]
pub struct RepairHorizons {
    by_ssrc: Mutex<HashMap<u32, (u16, Instant)>>,
}

impl RepairHorizons {
    pub fn set(&self, now: Instant, ssrc: u32, sequence_number: u16) {
        debug!(ssrc, sequence_number, "repair horizon set");
        if let Ok(mut by_ssrc) = self.by_ssrc.lock() {
            by_ssrc.retain(|_, (_, at)| now.saturating_duration_since(*at) < HORIZON_TTL);
            by_ssrc.insert(ssrc, (sequence_number, now));
        }
    }

    /// The horizon of `ssrc`, while it is fresh.
    fn get(&self, now: Instant, ssrc: u32) -> Option<u16> {
        let by_ssrc = self.by_ssrc.lock().ok()?;
        let (horizon, at) = by_ssrc.get(&ssrc)?;
        (now.saturating_duration_since(*at) < HORIZON_TTL).then_some(*horizon)
    }
}

/// `sequence_number` was sent before `horizon` (within half the sequence space).
fn before(sequence_number: u16, horizon: u16) -> bool {
    (1..0x8000).contains(&horizon.wrapping_sub(sequence_number))
}

/// The read-side filter; see the module documentation. Add it to a subscriber connection's
/// registry wire-ward of `Slot::NackResponder` (4_000).
pub struct NackHorizon {
    horizons: Arc<RepairHorizons>,
    read_queue: PassThrough<TaggedPacket>,
    write_queue: PassThrough<TaggedPacket>,
}

impl NackHorizon {
    pub fn new(horizons: Arc<RepairHorizons>) -> Self {
        Self {
            horizons,
            read_queue: PassThrough::default(),
            write_queue: PassThrough::default(),
        }
    }

    /// `nack` without the sequence numbers before its stream's horizon; `None` when it names
    /// none of those (keep it as it is).
    fn trimmed(&self, now: Instant, nack: &TransportLayerNack) -> Option<TransportLayerNack> {
        let horizon = self.horizons.get(now, nack.media_ssrc)?;
        let named: Vec<u16> = nack.nacks.iter().flat_map(|pair| *pair).collect();
        let kept: Vec<u16> = named
            .iter()
            .copied()
            .filter(|seq| !before(*seq, horizon))
            .collect();
        if kept.len() == named.len() {
            return None;
        }
        debug!(
            ssrc = nack.media_ssrc,
            horizon,
            ignored = named.len() - kept.len(),
            kept = kept.len(),
            "NACKs before the repair horizon ignored"
        );
        Some(TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: nack.media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(&kept),
        })
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackHorizon {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            let mut trimmed_any = false;
            for packet in packets.iter_mut() {
                let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() else {
                    continue;
                };
                if let Some(trimmed) = self.trimmed(msg.now, nack) {
                    *packet = Box::new(trimmed);
                    trimmed_any = true;
                }
            }
            if trimmed_any {
                packets.retain(|packet| {
                    packet
                        .as_any()
                        .downcast_ref::<TransportLayerNack>()
                        .is_none_or(|nack| !nack.nacks.is_empty())
                });
                if packets.is_empty() {
                    return Ok(());
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
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for NackHorizon {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::shared::TransportContext;

    fn rtcp(now: Instant, packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    fn nack(ssrc: u32, sequence_numbers: &[u16]) -> Box<dyn rtc::rtcp::Packet> {
        Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: ssrc,
            nacks: nack_pairs_from_sequence_numbers(sequence_numbers),
        })
    }

    /// Per packet read: the sequence numbers each NACK in it names, or "PLI".
    fn read_all(filter: &mut NackHorizon) -> Vec<Vec<String>> {
        std::iter::from_fn(|| filter.poll_read())
            .map(|msg| match msg.message.packet {
                Packet::Rtcp(packets) => packets
                    .iter()
                    .map(|p| {
                        if let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() {
                            let seqs: Vec<u16> = nack.nacks.iter().flat_map(|p| *p).collect();
                            format!("{}:{seqs:?}", nack.media_ssrc)
                        } else {
                            "PLI".to_owned()
                        }
                    })
                    .collect(),
                _ => vec!["other".to_owned()],
            })
            .collect()
    }

    #[test]
    fn nacks_before_the_horizon_are_stripped_and_later_ones_kept() {
        let now = Instant::now();
        let horizons = Arc::new(RepairHorizons::default());
        let mut filter = NackHorizon::new(Arc::clone(&horizons));
        horizons.set(now, 7, 1_000);
        filter
            .handle_read(rtcp(now, vec![nack(7, &[990, 998, 999, 1_000, 1_003])]))
            .expect("the filter never fails");
        assert_eq!(read_all(&mut filter), vec![vec!["7:[1000, 1003]"]]);
    }

    #[test]
    fn a_nack_left_empty_is_dropped_and_other_feedback_passes() {
        let now = Instant::now();
        let horizons = Arc::new(RepairHorizons::default());
        let mut filter = NackHorizon::new(Arc::clone(&horizons));
        horizons.set(now, 7, 1_000);
        let pli: Box<dyn rtc::rtcp::Packet> = Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 7,
        });
        filter
            .handle_read(rtcp(now, vec![nack(7, &[990, 991]), pli]))
            .expect("the filter never fails");
        filter
            .handle_read(rtcp(now, vec![nack(7, &[995])]))
            .expect("the filter never fails");
        assert_eq!(
            read_all(&mut filter),
            vec![vec!["PLI"]],
            "the compound keeps its PLI; an all-futile NACK goes nowhere"
        );
    }

    #[test]
    fn other_streams_and_stale_horizons_are_untouched() {
        let now = Instant::now();
        let horizons = Arc::new(RepairHorizons::default());
        let mut filter = NackHorizon::new(Arc::clone(&horizons));
        horizons.set(now, 7, 1_000);
        filter
            .handle_read(rtcp(now, vec![nack(8, &[990])]))
            .expect("the filter never fails");
        let later = now + HORIZON_TTL;
        filter
            .handle_read(rtcp(later, vec![nack(7, &[990])]))
            .expect("the filter never fails");
        assert_eq!(
            read_all(&mut filter),
            vec![vec!["8:[990]"], vec!["7:[990]"]]
        );
    }

    #[test]
    fn the_horizon_compares_across_the_sequence_wrap() {
        assert!(before(65_530, 3));
        assert!(!before(3, 3));
        assert!(!before(5, 3));
        assert!(!before(3, 65_530));
        assert!(before(2, 3));
    }
}
