//! RTP from SSRCs a publisher never signaled, handed to the shard instead of being dropped.
//!
//! `rtc` delivers a received stream only once it has bound it: an SSRC the offer declared,
//! the first SSRC of a lone media section that declared none, or a simulcast layer named by
//! its mid and rid header extensions (a new SSRC with a known rid rebinds that layer). It
//! drops every other SSRC at the end of the chain, among them the new SSRC of an encoder that
//! restarted behind the same connection (a gateway, an encoder process) without
//! renegotiating. RFC 8843 §9.2 has a receiver route such a packet by its MID header extension.
//!
//! [`UnsignaledStreams`] sits application-most on a publisher's read path (every built-in
//! interceptor has seen the packet). It learns which SSRCs `rtc` bound (`rtc` binds a stream
//! before the chain sees its first packet) and takes every RTP packet of any other SSRC off
//! the chain into [`UnsignaledPackets`], with its MID; the shard decides which publication,
//! if any, it continues (`shard::unsignaled`). Such a stream is not bound in `rtc`: its losses
//! are not NACKed and its sender reports are dropped.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtp::packet::Packet as RtpPacket;
use rtc::sansio::Protocol;

use super::pass_through::PassThrough;
use super::rtx::MID_URI;

/// Packets held for the shard at most: it takes them after every datagram it hands the
/// connection, so only a burst of one read waits here.
const QUEUE_LIMIT: usize = 256;

/// An RTP packet of an SSRC `rtc` did not bind, with the value of its MID header extension.
#[derive(Debug, Clone)]
pub(crate) struct UnsignaledPacket {
    pub(crate) mid: Option<Bytes>,
    pub(crate) packet: RtpPacket,
}

/// What [`UnsignaledStreams`] took off a connection's chain, until the shard takes it.
#[derive(Debug, Default)]
pub(crate) struct UnsignaledPackets {
    queue: Mutex<VecDeque<UnsignaledPacket>>,
    /// Something is queued or was dropped: the shard looks at the queue (a lock) only then,
    /// not after every datagram of every connection.
    pending: std::sync::atomic::AtomicBool,
    /// Packets dropped at the full queue.
    dropped: AtomicU64,
}

impl UnsignaledPackets {
    fn push(&self, packet: UnsignaledPacket) {
        let mut queue = self.lock();
        self.pending.store(true, Ordering::Release);
        if queue.len() >= QUEUE_LIMIT {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push_back(packet);
    }

    /// Whether anything was queued or dropped since the last [`Self::take`].
    pub(crate) fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Everything queued, oldest first.
    pub(crate) fn take(&self) -> VecDeque<UnsignaledPacket> {
        let mut queue = self.lock();
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut *queue)
    }

    /// Packets dropped at the full queue since the last call.
    pub(crate) fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<UnsignaledPacket>> {
        // A queue of plain values cannot be left half-updated by a panicking holder.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// See the module docs. Add it to a publisher's chain app-ward of every built-in interceptor.
pub(crate) struct UnsignaledStreams {
    /// The MID header extension's id on this connection (one BUNDLE group: one id).
    mid_id: Option<u8>,
    /// SSRCs `rtc` bound, repair streams included.
    bound: HashSet<u32>,
    out: Arc<UnsignaledPackets>,
    read_queue: PassThrough<TaggedPacket>,
    write_queue: PassThrough<TaggedPacket>,
}

impl UnsignaledStreams {
    pub(crate) fn new(out: Arc<UnsignaledPackets>) -> Self {
        Self {
            mid_id: None,
            bound: HashSet::new(),
            out,
            read_queue: PassThrough::default(),
            write_queue: PassThrough::default(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for UnsignaledStreams {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        // Padding-only packets (Chrome's bandwidth probes on its RTX streams) carry no media.
        let unbound = matches!(&msg.message.packet,
            Packet::Rtp(packet) if !packet.payload.is_empty()
                && !self.bound.contains(&packet.header.ssrc));
        if unbound && let Packet::Rtp(packet) = msg.message.packet {
            let mid = self
                .mid_id
                .and_then(|id| packet.header.get_extension(id))
                .filter(|value| !value.is_empty());
            self.out.push(UnsignaledPacket { mid, packet });
            return Ok(());
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

impl Interceptor for UnsignaledStreams {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        // Bound streams are SSRCs the shard's gate admitted, or repair streams the offer
        // declared: both bounded.
        self.bound.insert(info.ssrc);
        self.bound.extend(info.ssrc_rtx);
        self.bound.extend(info.ssrc_fec);
        if let Some(extension) = info
            .rtp_header_extensions
            .iter()
            .find(|extension| extension.uri == MID_URI)
        {
            self.mid_id = u8::try_from(extension.id).ok();
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.bound.remove(&info.ssrc);
        for ssrc in info.ssrc_rtx.into_iter().chain(info.ssrc_fec) {
            self.bound.remove(&ssrc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::{AttributedPacket, RTPHeaderExtension};
    use rtc::shared::TransportContext;

    const MID: u8 = 3;

    fn chain() -> (UnsignaledStreams, Arc<UnsignaledPackets>) {
        let out = Arc::new(UnsignaledPackets::default());
        let mut streams = UnsignaledStreams::new(Arc::clone(&out));
        streams.bind_remote_stream(&StreamInfo {
            ssrc: 1_000,
            ssrc_rtx: Some(1_001),
            payload_type: 96,
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: MID_URI.to_owned(),
                id: u16::from(MID),
            }],
            ..Default::default()
        });
        (streams, out)
    }

    fn packet(ssrc: u32, mid: Option<&str>) -> TaggedPacket {
        let mut rtp = RtpPacket::default();
        rtp.header.version = 2;
        rtp.header.ssrc = ssrc;
        rtp.header.payload_type = 96;
        if let Some(mid) = mid {
            rtp.header
                .set_extension(MID, Bytes::copy_from_slice(mid.as_bytes()))
                .expect("a one-byte extension");
        }
        rtp.payload = Bytes::from_static(b"media");
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp)),
        }
    }

    #[test]
    fn bound_streams_pass_and_unbound_ones_are_taken_with_their_mid() {
        let (mut streams, out) = chain();
        for ssrc in [1_000, 1_001] {
            streams
                .handle_read(packet(ssrc, None))
                .expect("never fails");
            assert!(streams.poll_read().is_some(), "bound SSRC {ssrc} passes");
        }
        streams
            .handle_read(packet(2_000, Some("0")))
            .expect("never fails");
        streams
            .handle_read(packet(3_000, None))
            .expect("never fails");
        assert!(streams.poll_read().is_none(), "unbound SSRCs are taken");
        let taken: Vec<(u32, Option<Bytes>)> = out
            .take()
            .into_iter()
            .map(|p| (p.packet.header.ssrc, p.mid))
            .collect();
        assert_eq!(
            taken,
            vec![(2_000, Some(Bytes::from_static(b"0"))), (3_000, None)]
        );
        assert!(out.take().is_empty());
    }

    #[test]
    fn an_unbound_stream_passes_again_once_bound_and_rtcp_always_passes() {
        let (mut streams, out) = chain();
        streams.bind_remote_stream(&StreamInfo {
            ssrc: 2_000,
            ..Default::default()
        });
        streams
            .handle_read(packet(2_000, None))
            .expect("never fails");
        assert!(streams.poll_read().is_some());
        streams.unbind_remote_stream(&StreamInfo {
            ssrc: 2_000,
            ..Default::default()
        });
        streams
            .handle_read(packet(2_000, None))
            .expect("never fails");
        assert!(streams.poll_read().is_none(), "unbound again");
        let rtcp = TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(Vec::new())),
        };
        streams.handle_read(rtcp).expect("never fails");
        assert!(streams.poll_read().is_some());
        assert_eq!(out.take().len(), 1);
    }

    #[test]
    fn the_queue_is_bounded() {
        let (mut streams, out) = chain();
        for i in 0..(QUEUE_LIMIT as u32 + 10) {
            streams
                .handle_read(packet(5_000 + i, None))
                .expect("never fails");
        }
        assert_eq!(out.take().len(), QUEUE_LIMIT);
        assert_eq!(out.take_dropped(), 10);
        assert_eq!(out.take_dropped(), 0);
    }
}
