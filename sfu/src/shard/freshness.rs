//! Freshness over completeness: a datagram's age is how long it waited in the socket's
//! receive buffer (the kernel stamps each one on arrival, `SO_TIMESTAMPNS`). A starved shard
//! reads its backlog late; RTP media older than [`ShardConfig::max_ingress_age`] is discarded
//! unread, the cheapest thing to do with it, and each video layer that lost media gets a
//! keyframe request (through the core's throttle), so subscribers jump back to live from a
//! fresh picture instead of being fed seconds of stale frames. The publisher's connection still
//! asks for the discarded packets (its NACK generator sees the hole); the retransmissions that
//! answer are discarded too, by sequence number. STUN, DTLS and RTCP are never discarded this
//! way: control does not wait behind media.
//!
//! [`ShardConfig::max_ingress_age`]: super::ShardConfig::max_ingress_age

use std::collections::BTreeSet;
use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, recvmsg};
use nix::sys::time::TimeSpec;
use tokio::io::Interest;
use tracing::debug;

use crate::core::{Input, PublicationId};

use super::worker::Worker;

/// One datagram read from the shard's socket.
pub(super) struct Received {
    pub(super) len: usize,
    pub(super) from: SocketAddr,
    /// When the kernel queued it, if it said.
    pub(super) arrived: Option<SystemTime>,
}

/// The SSRC of an RTP (not RTCP) packet, read from its clear header (RFC 7983 demultiplexing:
/// first byte 128–191; RTCP packet types 192–223 in the second byte).
pub(super) fn rtp_ssrc(datagram: &[u8]) -> Option<u32> {
    let [first, second, _, _, _, _, _, _, a, b, c, d, ..] = datagram else {
        return None;
    };
    let rtp = (128..=191).contains(first) && !(192..=223).contains(second);
    rtp.then(|| u32::from_be_bytes([*a, *b, *c, *d]))
}

/// How long retransmissions of discarded packets are recognised (a receiver NACKs a packet
/// for about a second; sequence numbers wrap only after 65 536 packets).
const ABANDONED_TTL: Duration = Duration::from_secs(5);

/// The sequence numbers of one stream discarded as stale: a run (wrapping) and when it last
/// grew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Abandoned {
    first: u16,
    last: u16,
    at: Instant,
}

impl Abandoned {
    pub(crate) fn new(sequence: u16, at: Instant) -> Self {
        Self {
            first: sequence,
            last: sequence,
            at,
        }
    }

    /// Adds `sequence`: it extends the run when near it, else starts a new one.
    pub(crate) fn add(&mut self, sequence: u16, at: Instant) {
        const NEAR: u16 = 4096;
        if self.contains_seq(sequence) {
        } else if sequence.wrapping_sub(self.last) < NEAR {
            self.last = sequence;
        } else if self.first.wrapping_sub(sequence) < NEAR {
            self.first = sequence;
        } else {
            *self = Self::new(sequence, at);
        }
        self.at = at;
    }

    fn contains_seq(&self, sequence: u16) -> bool {
        sequence.wrapping_sub(self.first) <= self.last.wrapping_sub(self.first)
    }

    /// Whether `sequence` was discarded (and the record is recent enough to tell).
    pub(crate) fn contains(&self, sequence: u16, now: Instant) -> bool {
        now.duration_since(self.at) < ABANDONED_TTL && self.contains_seq(sequence)
    }
}

/// The sequence number of an RTP packet, from its clear header.
fn rtp_sequence(datagram: &[u8]) -> Option<u16> {
    let [_, _, high, low, ..] = datagram else {
        return None;
    };
    Some(u16::from_be_bytes([*high, *low]))
}

/// The longest wait of a datagram (or ingest packet) in the shard's queues over the last one
/// or two report periods: what `/metrics` shows as the queue's age.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IngressAges {
    current: Duration,
    previous: Duration,
}

impl IngressAges {
    pub(crate) fn observe(&mut self, waited: Duration) {
        self.current = self.current.max(waited);
    }

    /// Starts a new period (the shard's periodic pass).
    pub(crate) fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    pub(crate) fn max(&self) -> Duration {
        self.current.max(self.previous)
    }
}

/// How long ago `arrived` was (zero for a stamp in the future: a clock step).
pub(super) fn age(arrived: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(arrived).unwrap_or_default()
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// The control-message buffer [`recv_stamped`] reads an arrival stamp into; one serves every
/// read of a burst.
pub(super) fn control_buffer() -> Vec<u8> {
    nix::cmsg_space!(TimeSpec)
}

/// Reads one datagram into `buf` with its kernel arrival stamp (through `control`, from
/// [`control_buffer`]); `WouldBlock` when none waits.
pub(super) fn recv_stamped(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
    control: &mut Vec<u8>,
) -> std::io::Result<Received> {
    socket.try_io(Interest::READABLE, || {
        let mut iov = [IoSliceMut::new(buf)];
        let message = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut *control),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        )
        .map_err(std::io::Error::from)?;
        let from = message
            .address
            .as_ref()
            .filter(|address| address.family().is_some())
            .and_then(socket_addr)
            .ok_or_else(|| std::io::Error::other("datagram without a source address"))?;
        let arrived = message.cmsgs().ok().and_then(|mut cmsgs| {
            cmsgs.find_map(|cmsg| match cmsg {
                ControlMessageOwned::ScmTimestampns(stamp) => {
                    let seconds = u64::try_from(stamp.tv_sec()).ok()?;
                    let nanos = u32::try_from(stamp.tv_nsec()).ok()?;
                    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
                }
                _ => None,
            })
        });
        Ok(Received {
            len: message.bytes,
            from,
            arrived,
        })
    })
}

impl Worker {
    /// Discards `datagram` if it is RTP media from one of this shard's publishers that waited
    /// longer than the freshness bound; notes its publication and layer for a keyframe request.
    pub(super) fn discard_stale(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        arrived: SystemTime,
        stale: &mut BTreeSet<(PublicationId, u8)>,
    ) -> bool {
        let waited = age(arrived, SystemTime::now());
        self.ingress_ages.observe(waited);
        if waited <= self.config.max_ingress_age {
            return false;
        }
        let Some(ssrc) = rtp_ssrc(datagram) else {
            return false;
        };
        let Some(peer) = self
            .by_addr
            .get(&from)
            .and_then(|key| self.peers.get_mut(key))
        else {
            return false;
        };
        self.stats.stale_dropped += 1;
        if let Some(stream) = peer.streams.get(&ssrc) {
            stale.insert((stream.publication, stream.layer));
        }
        // Only streams the connection has: a run per SSRC any datagram names would grow
        // with every SSRC a client invents.
        if peer.streams.contains_key(&ssrc)
            && let Some(sequence) = rtp_sequence(datagram)
        {
            let now = Instant::now();
            peer.abandoned
                .entry(ssrc)
                .and_modify(|run| run.add(sequence, now))
                .or_insert_with(|| Abandoned::new(sequence, now));
        }
        true
    }

    /// Asks the rooms for a keyframe of each layer that lost stale media.
    pub(super) fn request_fresh_keyframes(
        &mut self,
        stale: &BTreeSet<(PublicationId, u8)>,
        now: Instant,
    ) {
        for (publication, layer) in stale {
            let Some(room) = self.publications.get(publication).map(|slot| slot.room) else {
                continue;
            };
            let Some(slot) = self.rooms.get_mut(&room) else {
                continue;
            };
            let input = Input::MediaDropped {
                publication: *publication,
                layer: *layer,
            };
            if let Err(err) = slot.core.handle_input(now, input) {
                debug!(%publication, %err, "keyframe after stale media");
            }
            self.drain_room(room, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rtp_media_has_an_ssrc_here() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96;
        rtp[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        assert_eq!(rtp_ssrc(&rtp), Some(0x1234_5678));
        let mut marked = rtp;
        marked[1] = 0x80 | 96;
        assert_eq!(rtp_ssrc(&marked), Some(0x1234_5678), "marker bit set");
        let mut rtcp = rtp;
        rtcp[1] = 200;
        assert_eq!(rtp_ssrc(&rtcp), None, "a sender report");
        let mut stun = rtp;
        stun[0] = 0x00;
        assert_eq!(rtp_ssrc(&stun), None);
        let mut dtls = rtp;
        dtls[0] = 22;
        assert_eq!(rtp_ssrc(&dtls), None);
        assert_eq!(rtp_ssrc(&rtp[..11]), None, "shorter than a header");
    }

    #[test]
    fn a_run_of_discarded_sequence_numbers_grows_wraps_and_expires() {
        let start = Instant::now();
        let mut run = Abandoned::new(65_530, start);
        for sequence in [65_531, 65_535, 0, 3] {
            run.add(sequence, start);
        }
        for sequence in [65_530, 65_533, 0, 2, 3] {
            assert!(run.contains(sequence, start), "{sequence}");
        }
        for sequence in [65_529, 4, 30_000] {
            assert!(!run.contains(sequence, start), "{sequence}");
        }
        run.add(65_520, start);
        assert!(run.contains(65_525, start), "grown backwards");
        assert!(!run.contains(3, start + ABANDONED_TTL), "expired");
        run.add(20_000, start);
        assert!(
            run.contains(20_000, start) && !run.contains(0, start),
            "a new run"
        );
    }

    #[test]
    fn the_reported_age_covers_the_last_two_periods() {
        let mut ages = IngressAges::default();
        ages.observe(Duration::from_millis(30));
        ages.observe(Duration::from_millis(10));
        assert_eq!(ages.max(), Duration::from_millis(30));
        ages.rotate();
        ages.observe(Duration::from_millis(5));
        assert_eq!(
            ages.max(),
            Duration::from_millis(30),
            "the previous period counts"
        );
        ages.rotate();
        assert_eq!(ages.max(), Duration::from_millis(5));
        ages.rotate();
        assert_eq!(ages.max(), Duration::ZERO);
    }

    #[test]
    fn the_age_of_a_stamp_from_the_future_is_zero() {
        let now = SystemTime::now();
        assert_eq!(age(now + Duration::from_secs(1), now), Duration::ZERO);
        assert_eq!(
            age(now - Duration::from_millis(300), now),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn a_datagram_carries_its_kernel_arrival_stamp() -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let socket = super::super::socket::bind(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                64 * 1024,
                false,
            )?;
            let local = socket.local_addr()?;
            let socket = tokio::net::UdpSocket::from_std(socket)?;
            let sender = std::net::UdpSocket::bind("127.0.0.1:0")?;
            // The kernel turns arrival stamping on (a static key) shortly after the first
            // socket asks; until then it stamps datagrams when they are read. So: send, let the
            // datagram wait 30 ms in the buffer, read; again until its stamp shows the wait
            // (bounded: the key is on within milliseconds).
            let mut buf = [0u8; 64];
            let mut control = control_buffer();
            let mut waits = Vec::new();
            for _ in 0..20 {
                let sent_at = SystemTime::now();
                sender.send_to(b"hello", local)?;
                std::thread::sleep(Duration::from_millis(30));
                socket.readable().await?;
                let received = recv_stamped(&socket, &mut buf, &mut control)?;
                assert_eq!(&buf[..received.len], b"hello");
                assert_eq!(received.from, sender.local_addr()?);
                let arrived = received.arrived.expect("the kernel stamps datagrams");
                assert!(
                    age(sent_at, arrived) < Duration::from_secs(1),
                    "stamped at {arrived:?}"
                );
                let waited = age(arrived, SystemTime::now());
                if waited >= Duration::from_millis(25) {
                    return Ok(());
                }
                waits.push(waited);
            }
            panic!("no datagram's stamp showed its 30 ms wait: {waits:?}");
        })
    }
}
