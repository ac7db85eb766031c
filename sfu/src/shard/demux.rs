//! Demultiplexing on a shard: which peer a datagram is for (a binding request by the ufrag it
//! names, anything else by its validated source address), and the routing tables behind it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tracing::{debug, trace, warn};

use super::freshness::{self, Received};
use super::group::HandedOff;
use super::peer::PeerKey;
use super::ssrc_gate::{Admission, SSRCS_PER_SECTION};
use super::worker::{MAX_DATAGRAM, READ_BURST, Timer, Worker};
use super::{nomination, stun};

impl Worker {
    pub(super) fn read_burst(&mut self, buf: &mut [u8]) {
        let mut stale = BTreeSet::new();
        let mut control = freshness::control_buffer();
        for _ in 0..READ_BURST {
            match freshness::recv_stamped(&self.socket, buf, &mut control) {
                Ok(Received { len, from, arrived }) => {
                    self.stats.datagrams_in += 1;
                    match buf.get(..len) {
                        Some(datagram) if len <= MAX_DATAGRAM => {
                            let discarded = arrived.is_some_and(|arrived| {
                                self.discard_stale(datagram, from, arrived, &mut stale)
                            });
                            if !discarded {
                                self.ingest(datagram, from, Instant::now());
                                self.drain_writes();
                            }
                        }
                        _ => self.stats.unrouted += 1,
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP port unreachable from a departed client shows up here on Linux.
                Err(err) => debug!(%err, "recv_from"),
            }
        }
        if !stale.is_empty() {
            self.request_fresh_keyframes(&stale, Instant::now());
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
            self.hand_off_or_drop(datagram, from, check, TransportProtocol::UDP);
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

    /// A datagram this shard has no peer for: handed to the shard of the group that routes
    /// it, or dropped.
    pub(super) fn hand_off_or_drop(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        check: Option<&str>,
        protocol: TransportProtocol,
    ) {
        let owner = self.group.as_ref().and_then(|group| match check {
            Some(ufrag) => group.owner_of_ufrag(ufrag),
            None => group.owner_of_address(from),
        });
        let Some(owner) = owner else {
            self.stats.unrouted += 1;
            trace!(%from, "datagram for no peer");
            return;
        };
        self.hand_off_to(owner, datagram, from, protocol);
    }

    /// Hands a datagram to shard `owner` of the group.
    pub(super) fn hand_off_to(
        &mut self,
        owner: usize,
        datagram: &[u8],
        from: SocketAddr,
        protocol: TransportProtocol,
    ) {
        let handed = self.group.as_ref().is_some_and(|group| {
            group.hand_off(
                owner,
                HandedOff {
                    from,
                    datagram: BytesMut::from(datagram),
                    protocol,
                },
            )
        });
        if handed {
            self.stats.handed_off += 1;
        } else {
            self.stats.hand_off_dropped += 1;
        }
    }

    /// A datagram another shard of the group read for one of this shard's connections.
    pub(super) fn handed_off(&mut self, handed: HandedOff, now: Instant) {
        let HandedOff {
            from,
            datagram,
            protocol,
        } = handed;
        let check = stun::local_ufrag(&datagram);
        let key = match (check, protocol) {
            (Some(ufrag), _) => self.by_ufrag.get(ufrag).copied(),
            (None, TransportProtocol::TCP) => self.remote_tcp.get(&from).copied(),
            (None, _) => self.by_addr.get(&from).copied(),
        };
        let Some(key) = key else {
            self.stats.unrouted += 1;
            return;
        };
        if protocol == TransportProtocol::TCP && check.is_some() {
            self.remote_tcp.insert(from, key);
        }
        let checked = check.is_some();
        self.deliver(key, &datagram, from, protocol, checked, now);
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
        let allowance = self.config.ssrc_allowance;
        let admission = peer.ssrc_gate.admit(datagram, || {
            SSRCS_PER_SECTION * peer.pc.get_transceivers().count() + allowance
        });
        match admission {
            Admission::Pass => {}
            Admission::Admitted => self.stats.ssrcs_admitted += 1,
            Admission::Refused => {
                self.stats.ssrcs_refused += 1;
                trace!(
                    peer = key.0,
                    "datagram of an SSRC past the connection's allowance"
                );
                return;
            }
        }
        let udp = protocol == TransportProtocol::UDP;
        // See `nomination`: USE-CANDIDATE checks before the connection is up.
        if udp && !peer.connected {
            nomination::before_read(peer, datagram, check, from, local_addr, now);
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
            if admission == Admission::Admitted
                && let Some(peer) = self.peers.get_mut(&key)
            {
                peer.ssrc_gate.unauthenticated(datagram);
            }
        }
        if udp
            && stun::is_binding_success(datagram)
            && let Some(peer) = self.peers.get_mut(&key)
        {
            nomination::after_read(peer, datagram, from, local_addr, now);
        }
        self.service(key, now);
    }

    /// Routes `addr`'s non-STUN datagrams to `key`. An address validated by another
    /// connection before is taken from it: one 5-tuple reaches one connection.
    pub(super) fn route_address(&mut self, addr: SocketAddr, key: PeerKey) {
        debug!(peer = key.0, %addr, "address validated");
        if let Some(group) = &self.group {
            group.claim_address(addr);
        }
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
            if let Some(group) = &self.group {
                group.release_ufrag(&old);
            }
        }
        if let Some(group) = &self.group {
            group.claim_ufrag(&ufrag);
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
        if let Some(group) = &self.group {
            group.release_ufrag(&peer.ufrag);
        }
        for addr in peer.paths.validated() {
            if self.by_addr.get(addr) == Some(&key) {
                self.by_addr.remove(addr);
                if let Some(group) = &self.group {
                    group.release_address(*addr);
                }
            }
        }
        self.remote_tcp.retain(|_, owner| *owner != key);
        self.set_timer(Timer::Peer(key), peer.timeout, None);
        self.dirty.retain(|k| *k != key);
        self.written.retain(|k| *k != key);
    }
}
