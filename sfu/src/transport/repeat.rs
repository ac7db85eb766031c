//! Sends every retransmission to a subscriber a second time, shortly after the first.
//!
//! A browser that only receives never learns the round-trip time (it would need RTCP XR
//! RRTR/DLRR, which Chrome does not negotiate), so its NACK module assumes 100 ms and asks again
//! for a lost retransmission only that much later. At 5 % random loss one retransmission in
//! twenty is lost too, and its frame then misses a 100 ms playout deadline and is dropped
//! (ADR 0020). A second copy 15 ms after the first turns that 5 % into 0.25 % for the cost of
//! one packet per loss; when the first copy arrived, SRTP's replay check discards the second
//! at the receiver.
//!
//! It sits wire-most in subscriber chains, below the NACK responder (whose retransmissions carry
//! [`Attribute::Retransmission`]) and below the transport-wide numbering and send history, so the
//! copy carries the same transport sequence number as the retransmission it repeats. The
//! receiver's feedback then reports one packet: arrived (whichever copy made it) or lost (both
//! did not). Numbered apart, every copy dropped by the replay check would read as a lost packet
//! to GCC, doubling the loss it sees.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use std::sync::Arc;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;

use super::congestion::PathState;
use super::pass_through::PassThrough;

/// How long after a retransmission its copy goes out: apart enough that one loss burst on the
/// path rarely takes both, well inside any playout delay.
const REPEAT_AFTER: Duration = Duration::from_millis(15);
/// Copies waiting at most; a NACK storm beyond this is answered once, without copies.
const PENDING_LIMIT: usize = 512;

pub struct RepeatedRetransmissions {
    /// While the path was just found congested, repairs go out once.
    path: Arc<PathState>,
    /// Copies due to be sent, in the order they are due (`now` is the due instant).
    pending: VecDeque<TaggedPacket>,
    read_queue: PassThrough<TaggedPacket>,
    write_queue: PassThrough<TaggedPacket>,
}

impl RepeatedRetransmissions {
    pub fn new(path: Arc<PathState>) -> Self {
        Self {
            path,
            pending: VecDeque::new(),
            read_queue: PassThrough::default(),
            write_queue: PassThrough::default(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RepeatedRetransmissions {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtp(_))
            && msg.message.has(&Attribute::Retransmission)
            && self.pending.len() < PENDING_LIMIT
            && !self.path.congested(msg.now)
        {
            // The envelope is not `Clone`; its parts are.
            self.pending.push_back(TaggedPacket {
                now: msg.now + REPEAT_AFTER,
                transport: msg.transport,
                message: msg.message.clone(),
            });
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        while self.pending.front().is_some_and(|copy| copy.now <= now) {
            if let Some(mut copy) = self.pending.pop_front() {
                copy.now = now;
                self.write_queue.push_back(copy);
            }
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.pending.front().map(|copy| copy.now)
    }
}

impl Interceptor for RepeatedRetransmissions {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtp::packet::Packet as RtpPacket;
    use rtc::shared::TransportContext;

    fn rtp(now: Instant, sequence_number: u16, retransmission: bool) -> TaggedPacket {
        let mut packet = RtpPacket::default();
        packet.header.ssrc = 7;
        packet.header.sequence_number = sequence_number;
        let mut message = AttributedPacket::new(Packet::Rtp(packet));
        if retransmission {
            message.add(Attribute::Retransmission);
        }
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message,
        }
    }

    fn sequence(msg: &TaggedPacket) -> Option<u16> {
        match &msg.message.packet {
            Packet::Rtp(packet) => Some(packet.header.sequence_number),
            _ => None,
        }
    }

    fn drain(repeater: &mut RepeatedRetransmissions) -> Vec<(u16, Instant)> {
        std::iter::from_fn(|| repeater.poll_write())
            .filter_map(|msg| sequence(&msg).map(|seq| (seq, msg.now)))
            .collect()
    }

    #[test]
    fn a_retransmission_goes_out_again_after_the_delay_and_originals_once() {
        let start = Instant::now();
        let mut repeater = RepeatedRetransmissions::new(Arc::default());
        repeater
            .handle_write(rtp(start, 10, false))
            .expect("a pass-through never fails");
        repeater
            .handle_write(rtp(start, 4, true))
            .expect("a pass-through never fails");
        assert_eq!(drain(&mut repeater), vec![(10, start), (4, start)]);
        assert_eq!(repeater.poll_timeout(), Some(start + REPEAT_AFTER));
        repeater
            .handle_timeout(start + REPEAT_AFTER - Duration::from_millis(1))
            .expect("a pass-through never fails");
        assert!(drain(&mut repeater).is_empty(), "not before it is due");
        let later = start + Duration::from_millis(40);
        repeater
            .handle_timeout(later)
            .expect("a pass-through never fails");
        assert_eq!(drain(&mut repeater), vec![(4, later)]);
        assert_eq!(repeater.poll_timeout(), None, "idle once sent");
    }

    #[test]
    fn on_a_path_just_found_congested_repairs_go_out_once() {
        let start = Instant::now();
        let path = Arc::new(PathState::default());
        let mut repeater = RepeatedRetransmissions::new(Arc::clone(&path));
        path.mark_congested(start);
        repeater
            .handle_write(rtp(start, 4, true))
            .expect("a pass-through never fails");
        repeater
            .handle_timeout(start + REPEAT_AFTER)
            .expect("a pass-through never fails");
        assert_eq!(drain(&mut repeater), vec![(4, start)], "no copy");
        let later = start + Duration::from_secs(3);
        repeater
            .handle_write(rtp(later, 5, true))
            .expect("a pass-through never fails");
        repeater
            .handle_timeout(later + REPEAT_AFTER)
            .expect("a pass-through never fails");
        assert_eq!(
            drain(&mut repeater).len(),
            2,
            "copies again once it has drained"
        );
    }

    #[test]
    fn a_nack_storm_keeps_the_copies_bounded() {
        let start = Instant::now();
        let mut repeater = RepeatedRetransmissions::new(Arc::default());
        for seq in 0..2_000u16 {
            repeater
                .handle_write(rtp(start, seq, true))
                .expect("a pass-through never fails");
        }
        assert_eq!(drain(&mut repeater).len(), 2_000);
        repeater
            .handle_timeout(start + REPEAT_AFTER)
            .expect("a pass-through never fails");
        assert_eq!(drain(&mut repeater).len(), PENDING_LIMIT);
    }
}
