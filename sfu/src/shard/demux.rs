//! Demultiplexing on a shard: which peer a datagram is for (a binding request by the ufrag it
//! names, anything else by its validated source address), and the routing tables behind it.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tracing::{debug, trace, warn};

use super::peer::PeerKey;
use super::stun;
use super::worker::{MAX_DATAGRAM, READ_BURST, Timer, Worker};

impl Worker {
    pub(super) fn read_burst(&mut self, buf: &mut [u8]) {
        for _ in 0..READ_BURST {
            match self.socket.try_recv_from(buf) {
                Ok((n, from)) => {
                    self.stats.datagrams_in += 1;
                    match buf.get(..n) {
                        Some(datagram) if n <= MAX_DATAGRAM => {
                            self.ingest(datagram, from, Instant::now());
                        }
                        _ => self.stats.unrouted += 1,
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return,
                // ICMP port unreachable from a departed client shows up here on Linux.
                Err(err) => debug!(%err, "recv_from"),
            }
        }
    }

    /// Demultiplexes one datagram: a binding request by the ufrag it names, anything else by
    /// its validated source address.
    fn ingest(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
        let check = stun::local_ufrag(datagram);
        let key = match check {
            Some(ufrag) => self.by_ufrag.get(ufrag).copied(),
            None => self.by_addr.get(&from).copied(),
        };
        let Some(key) = key else {
            self.stats.unrouted += 1;
            trace!(%from, "datagram for no peer");
            return;
        };
        self.deliver(
            key,
            datagram,
            from,
            TransportProtocol::UDP,
            check.is_some(),
            now,
        );
    }

    /// Hands a datagram from `from` (a binding request when `check`) to peer `key`.
    pub(super) fn deliver(
        &mut self,
        key: PeerKey,
        datagram: &[u8],
        from: SocketAddr,
        protocol: TransportProtocol,
        check: bool,
        now: Instant,
    ) {
        let local_addr = match protocol {
            TransportProtocol::TCP => self.tcp_local.unwrap_or(self.local),
            _ => self.local,
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            self.stats.unrouted += 1;
            return;
        };
        if check {
            peer.paths.heard(from);
        }
        let read = peer.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: protocol,
            },
            message: BytesMut::from(datagram),
        });
        if let Err(err) = read {
            debug!(peer = key.0, %err, "datagram refused by its peer");
        }
        self.service(key, now);
    }

    /// Routes `addr`'s non-STUN datagrams to `key`. An address validated by another
    /// connection before is taken from it: one 5-tuple reaches one connection.
    pub(super) fn route_address(&mut self, addr: SocketAddr, key: PeerKey) {
        debug!(peer = key.0, %addr, "address validated");
        if let Some(previous) = self.by_addr.insert(addr, key)
            && previous != key
            && let Some(peer) = self.peers.get_mut(&previous)
        {
            peer.paths.forget(addr);
        }
    }

    /// Routes binding requests naming the peer's current local ufrag to it (call after every
    /// `set_local_description`: an ICE restart changes the ufrag, and checks naming the old one
    /// are stale).
    pub(super) fn refresh_ufrag(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(ufrag) = peer.local_ufrag() else {
            return;
        };
        if ufrag == peer.ufrag {
            return;
        }
        let old = std::mem::replace(&mut peer.ufrag, ufrag.clone());
        if self.by_ufrag.get(&old) == Some(&key) {
            self.by_ufrag.remove(&old);
        }
        if let Some(other) = self.by_ufrag.insert(ufrag, key)
            && other != key
        {
            warn!(
                peer = key.0,
                other = other.0,
                "two connections drew the same ufrag"
            );
        }
    }

    /// Takes a peer off the shard: unroutes its ufrag, its addresses and its timer.
    pub(super) fn remove_peer(&mut self, key: PeerKey) {
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        let _ = peer.pc.close();
        self.by_ufrag.remove(&peer.ufrag);
        for addr in peer.paths.validated() {
            if self.by_addr.get(addr) == Some(&key) {
                self.by_addr.remove(addr);
            }
        }
        self.set_timer(Timer::Peer(key), peer.timeout, None);
        self.dirty.retain(|k| *k != key);
    }
}
