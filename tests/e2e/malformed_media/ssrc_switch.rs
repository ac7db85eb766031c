//! A client-side interceptor that moves a publisher's outgoing RTP to other SSRCs, as an
//! encoder restarted behind the same connection does: new SSRC, its own sequence numbers and
//! timestamp base, no renegotiation. `rtc`'s sender only writes its track's SSRC; this sits
//! below it in the interceptor chain, and SRTP protects the new SSRC with the session's keys.
//!
//! Switches take effect at a packet, not at an instant: the client's driver takes written
//! packets through the chain later, so [`SsrcSwitch`] is told from which of the application's
//! sequence numbers on (the packet indices of `video_packet(index, 0, _)`) to do what.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;

/// What becomes of the signaled stream's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Signaled,
    Ssrc(u32),
    /// `per_ssrc` packets on each of `base`, `base + 1`, … (`count` SSRCs) from sequence
    /// number `first`, then the signaled SSRC again.
    Cycle {
        first: u16,
        base: u32,
        count: u32,
        per_ssrc: u16,
    },
}

impl Target {
    fn ssrc_of(self, sequence: u16) -> Option<u32> {
        match self {
            Target::Signaled => None,
            Target::Ssrc(ssrc) => Some(ssrc),
            Target::Cycle {
                first,
                base,
                count,
                per_ssrc,
            } => {
                let step = u32::from(sequence.wrapping_sub(first) / per_ssrc.max(1));
                (step < count).then(|| base.wrapping_add(step))
            }
        }
    }
}

/// The numbering of the stream on one SSRC.
#[derive(Debug, Clone, Copy)]
struct Numbering {
    ssrc: u32,
    next_sequence: u16,
    timestamp_offset: u32,
}

impl Numbering {
    /// A stream's own sequence numbers and timestamp base, drawn from its SSRC.
    fn of(ssrc: u32) -> Self {
        let mixed = ssrc.wrapping_mul(0x9e37_79b9);
        Self {
            ssrc,
            next_sequence: (mixed >> 16) as u16,
            timestamp_offset: mixed,
        }
    }
}

#[derive(Debug)]
struct Plan {
    current: Target,
    /// A target from a sequence number on.
    next: Option<(u16, Target)>,
    numbering: Option<Numbering>,
}

/// Where outgoing packets of the signaled SSRC go, shared with the test.
#[derive(Debug)]
pub(crate) struct SsrcSwitch {
    signaled: u32,
    plan: Mutex<Plan>,
    rewritten: AtomicU64,
}

impl SsrcSwitch {
    pub(crate) fn new(signaled: u32) -> Arc<Self> {
        Arc::new(Self {
            signaled,
            plan: Mutex::new(Plan {
                current: Target::Signaled,
                next: None,
                numbering: None,
            }),
            rewritten: AtomicU64::new(0),
        })
    }

    /// From packet `index` on, the signaled stream goes out on `ssrc` (`None`: on the
    /// signaled SSRC again).
    pub(crate) fn switch_at(&self, index: u32, ssrc: Option<u32>) {
        let target = ssrc.map_or(Target::Signaled, Target::Ssrc);
        self.plan.lock().expect("plan").next = Some((index as u16, target));
    }

    /// From packet `index` on, `per_ssrc` packets on each of `count` SSRCs from `base`, then
    /// the signaled SSRC again.
    pub(crate) fn cycle_at(&self, index: u32, base: u32, count: u32, per_ssrc: u16) {
        let first = index as u16;
        let target = Target::Cycle {
            first,
            base,
            count,
            per_ssrc,
        };
        self.plan.lock().expect("plan").next = Some((first, target));
    }

    /// Packets sent on another SSRC so far.
    pub(crate) fn rewritten(&self) -> u64 {
        self.rewritten.load(Ordering::Relaxed)
    }

    fn rewrite(&self, packet: &mut rtc::rtp::Packet) {
        if packet.header.ssrc != self.signaled {
            return;
        }
        let sequence = packet.header.sequence_number;
        let mut plan = self.plan.lock().expect("plan");
        if let Some((from, target)) = plan.next
            && sequence.wrapping_sub(from) < 0x8000
        {
            plan.current = target;
            plan.next = None;
        }
        let Some(ssrc) = plan.current.ssrc_of(sequence) else {
            return;
        };
        let numbering = match &mut plan.numbering {
            Some(numbering) if numbering.ssrc == ssrc => numbering,
            other => other.insert(Numbering::of(ssrc)),
        };
        packet.header.ssrc = ssrc;
        packet.header.sequence_number = numbering.next_sequence;
        packet.header.timestamp = packet
            .header
            .timestamp
            .wrapping_add(numbering.timestamp_offset);
        numbering.next_sequence = numbering.next_sequence.wrapping_add(1);
        self.rewritten.fetch_add(1, Ordering::Relaxed);
    }
}

/// The interceptor, for a slot of the client's chain.
pub(crate) struct SsrcInterceptor {
    switch: Arc<SsrcSwitch>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl SsrcInterceptor {
    pub(crate) fn new(switch: Arc<SsrcSwitch>) -> Self {
        Self {
            switch,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SsrcInterceptor {
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

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &mut msg.message.packet {
            self.switch.rewrite(packet);
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for SsrcInterceptor {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
