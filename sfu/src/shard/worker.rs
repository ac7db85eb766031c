//! The shard thread's loop: read datagrams and demultiplex them to peers, run due timers,
//! then flush every touched peer's datagrams through the ICE-lite gate. Commands from
//! signaling are served between passes (see `routing` for them and for the rooms).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use super::feedback::BANDWIDTH_REPORT_INTERVAL;
use super::ingest::IngestPacket;
use super::paths::Egress;
use super::peer::{PeerKey, ShardPeer};
use super::routing::{Member, PublicationSlot, RoomKey, ShardRoom};
use super::{Command, ShardConfig, ShardEvent, ShardStats, nomination, stun};
use crate::core::{ParticipantId, PublicationId, SubscriptionId};
use crate::transport::{ConnectionState, PeerRole};

/// Datagrams read per pass before the touched peers are flushed.
const READ_BURST: usize = 64;
/// Larger datagrams are not WebRTC on any path the shard serves; they are dropped unread.
const MAX_DATAGRAM: usize = 1500;
/// The loop wakes at least this often even when no peer or room has a deadline.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Something with a deadline on the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Peer(PeerKey),
    Room(RoomKey),
    /// Subscriber connections' estimates to their rooms.
    Bandwidth,
}

/// Starts the shard thread: a current-thread tokio runtime that owns `socket` and everything
/// on the shard.
pub(super) fn spawn(
    config: ShardConfig,
    socket: std::net::UdpSocket,
    bound: SocketAddr,
    commands: mpsc::Receiver<Command>,
    ingest: mpsc::Receiver<IngestPacket>,
    certificate: RTCCertificate,
) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sluice-shard".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let socket = match UdpSocket::from_std(socket) {
                    Ok(socket) => socket,
                    Err(err) => {
                        warn!(%err, "media socket not usable; shard stopped");
                        return;
                    }
                };
                let local = config
                    .advertise
                    .map_or(bound, |ip| SocketAddr::new(ip, bound.port()));
                let mut worker = Worker::new(config, socket, local, certificate);
                worker.run(commands, ingest).await;
            });
        })
}

/// Everything one shard owns.
pub(super) struct Worker {
    pub(super) config: ShardConfig,
    socket: UdpSocket,
    /// The address in our ICE candidate: the local side of every peer's transport.
    pub(super) local: SocketAddr,
    /// The DTLS certificate of every connection on the shard.
    pub(super) certificate: RTCCertificate,
    pub(super) peers: HashMap<PeerKey, ShardPeer>,
    pub(super) next_key: u64,
    pub(super) by_ufrag: HashMap<String, PeerKey>,
    pub(super) by_addr: HashMap<SocketAddr, PeerKey>,
    pub(super) members: HashMap<ParticipantId, Member>,
    pub(super) rooms: HashMap<RoomKey, ShardRoom>,
    pub(super) room_keys: HashMap<String, RoomKey>,
    pub(super) publications: HashMap<PublicationId, PublicationSlot>,
    /// Active subscriptions: the subscriber connection and the sender each one writes to.
    pub(super) subscriptions:
        HashMap<SubscriptionId, (PeerKey, rtc::rtp_transceiver::RTCRtpSenderId, PublicationId)>,
    timers: BTreeSet<(Instant, Timer)>,
    dirty: Vec<PeerKey>,
    pub(super) stats: ShardStats,
    /// Counters of removed publications, subscriptions and rooms (see `stats`).
    pub(super) counted: crate::runtime::MediaStats,
}

impl Worker {
    fn new(
        config: ShardConfig,
        socket: UdpSocket,
        local: SocketAddr,
        certificate: RTCCertificate,
    ) -> Self {
        Self {
            config,
            socket,
            local,
            certificate,
            peers: HashMap::new(),
            next_key: 1,
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            members: HashMap::new(),
            rooms: HashMap::new(),
            room_keys: HashMap::new(),
            publications: HashMap::new(),
            subscriptions: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            stats: ShardStats::default(),
            counted: crate::runtime::MediaStats::default(),
        }
    }

    async fn run(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut ingest: mpsc::Receiver<IngestPacket>,
    ) {
        info!(local = %self.local, "shard running");
        self.timers
            .insert((Instant::now() + BANDWIDTH_REPORT_INTERVAL, Timer::Bandwidth));
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let wake = self
                .timers
                .first()
                .map_or_else(|| Instant::now() + IDLE_WAKE, |(at, _)| *at);
            // Commands first: under constant media the socket is always readable, and the
            // (rare) signaling requests must not starve behind it.
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.command(command, Instant::now()),
                    None => break,
                },
                readable = self.socket.readable() => {
                    if let Err(err) = readable {
                        warn!(%err, "media socket failed; shard stopped");
                        break;
                    }
                    self.read_burst(&mut buf);
                }
                Some(packet) = ingest.recv() => self.ingest_packet(packet, Instant::now()),
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
            // Ingested media is read every pass, so a busy socket never starves it.
            for _ in 0..READ_BURST {
                match ingest.try_recv() {
                    Ok(packet) => self.ingest_packet(packet, Instant::now()),
                    Err(_) => break,
                }
            }
            self.run_timers(Instant::now());
            self.flush();
        }
        for peer in self.peers.values_mut() {
            let _ = peer.pc.close();
        }
        info!(stats = ?self.stats, "shard stopped");
    }

    fn read_burst(&mut self, buf: &mut [u8]) {
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
        let Some((key, peer)) = key.and_then(|key| Some((key, self.peers.get_mut(&key)?))) else {
            self.stats.unrouted += 1;
            trace!(%from, "datagram for no peer");
            return;
        };
        if check.is_some() {
            peer.paths.heard(from);
        }
        // See `nomination`: USE-CANDIDATE checks before the connection is up.
        if !peer.connected {
            nomination::before_read(peer, datagram, check.is_some(), from, self.local, now);
        }
        let read = peer.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(datagram),
        });
        if let Err(err) = read {
            debug!(peer = key.0, %err, "datagram refused by its peer");
        }
        if stun::is_binding_success(datagram)
            && let Some(peer) = self.peers.get_mut(&key)
        {
            nomination::after_read(peer, datagram, from, self.local, now);
        }
        self.service(key, now);
    }

    pub(super) fn mark_dirty(&mut self, key: PeerKey) {
        if let Some(peer) = self.peers.get_mut(&key)
            && !peer.dirty
        {
            peer.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Drains a peer's events and received messages (routing media into its room) and marks
    /// it for a write poll.
    pub(super) fn service(&mut self, key: PeerKey, now: Instant) {
        self.mark_dirty(key);
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let Some(event) = peer.pc.poll_event() else {
                break;
            };
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    self.on_connection_state(key, state, now);
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    match peer.open_stream(init.receiver_id, init.ssrc, init.rid.as_deref()) {
                        Some(stream) => debug!(
                            publication = %stream.publication,
                            ssrc = init.ssrc,
                            layer = stream.layer,
                            "publisher stream opened"
                        ),
                        None => debug!(
                            ssrc = init.ssrc,
                            rid = ?init.rid,
                            "stream on a mid or rid that was not published"
                        ),
                    }
                }
                _ => {}
            }
        }
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let Some(message) = peer.pc.poll_read() else {
                break;
            };
            match (peer.role, message.message) {
                (PeerRole::Publisher, RTCMessage::RtpPacket(track_id, packet)) => {
                    let reported = peer.reported.get(&packet.header.ssrc).copied();
                    match peer.stream_of(&track_id, packet.header.ssrc) {
                        Some(stream) => self.route_rtp(stream, packet, reported, now),
                        None => self.stats.unrouted += 1,
                    }
                }
                (PeerRole::Subscriber, RTCMessage::RtcpPacket(_, packets)) => {
                    self.subscriber_rtcp(key, &packets, now);
                }
                (PeerRole::Publisher, RTCMessage::RtcpPacket(_, packets)) => {
                    self.publisher_rtcp(key, &packets, now);
                }
                _ => {}
            }
        }
        self.drain_congestion(key, now);
    }

    fn on_connection_state(&mut self, key: PeerKey, state: RTCPeerConnectionState, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let state = match state {
            RTCPeerConnectionState::Connecting => ConnectionState::Connecting,
            RTCPeerConnectionState::Connected => ConnectionState::Connected,
            RTCPeerConnectionState::Disconnected => ConnectionState::Disconnected,
            RTCPeerConnectionState::Failed => ConnectionState::Failed,
            RTCPeerConnectionState::Closed => ConnectionState::Closed,
            _ => ConnectionState::New,
        };
        // Disconnected is transient (a lite agent hears only the client's consent checks and
        // its media); only failing or closing ends the connection for forwarding.
        match state {
            ConnectionState::Connected => peer.connected = true,
            ConnectionState::Failed | ConnectionState::Closed => peer.connected = false,
            _ => {}
        }
        let (role, participant) = (peer.role, peer.participant);
        debug!(%participant, ?role, ?state, "connection state");
        self.tell(participant, ShardEvent::ConnectionState { role, state });
        if role == PeerRole::Subscriber && state == ConnectionState::Connected {
            self.activate(key, now);
        }
    }

    /// Registers `timer`'s next deadline, replacing its previous one.
    pub(super) fn set_timer(
        &mut self,
        timer: Timer,
        previous: Option<Instant>,
        next: Option<Instant>,
    ) {
        if previous == next {
            return;
        }
        if let Some(at) = previous {
            self.timers.remove(&(at, timer));
        }
        if let Some(at) = next {
            self.timers.insert((at, timer));
        }
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, timer));
            match timer {
                Timer::Peer(key) => {
                    let Some(peer) = self.peers.get_mut(&key) else {
                        continue;
                    };
                    peer.timeout = None;
                    if let Err(err) = peer.pc.handle_timeout(now) {
                        debug!(peer = key.0, %err, "peer timeout");
                    }
                    self.service(key, now);
                }
                Timer::Bandwidth => {
                    self.report_bandwidth(now);
                    self.timers
                        .insert((now + BANDWIDTH_REPORT_INTERVAL, Timer::Bandwidth));
                }
                Timer::Room(room) => {
                    let Some(slot) = self.rooms.get_mut(&room) else {
                        continue;
                    };
                    slot.timeout = None;
                    slot.core.handle_timeout(now);
                    self.drain_room(room, now);
                }
            }
        }
    }

    /// Sends every touched peer's datagrams that the ICE-lite gate lets through, and
    /// refreshes its timer.
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        // (address, peer, whether it now routes there or stops routing there)
        let mut routes: Vec<(SocketAddr, PeerKey, bool)> = Vec::new();
        for &key in &dirty {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            peer.dirty = false;
            while let Some(out) = peer.pc.poll_write() {
                let to = out.transport.peer_addr;
                let (egress, evicted) = peer.paths.egress(to, &out.message);
                if let Some(evicted) = evicted {
                    routes.push((evicted, key, false));
                }
                match egress {
                    Egress::Refused => {
                        self.stats.egress_refused += 1;
                        trace!(peer = key.0, %to, "datagram to an unvalidated address dropped");
                        continue;
                    }
                    Egress::Validated => routes.push((to, key, true)),
                    Egress::Send => {}
                }
                match self.socket.try_send_to(&out.message, to) {
                    Ok(_) => self.stats.datagrams_out += 1,
                    Err(err) => {
                        self.stats.send_failed += 1;
                        trace!(%err, %to, "send_to");
                    }
                }
            }
            let (previous, next) = (peer.timeout, peer.pc.poll_timeout());
            peer.timeout = next;
            self.set_timer(Timer::Peer(key), previous, next);
        }
        self.dirty = dirty;
        self.dirty.clear();
        for (addr, key, routed) in routes {
            if routed {
                self.route_address(addr, key);
            } else if self.by_addr.get(&addr) == Some(&key) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// Routes `addr`'s non-STUN datagrams to `key`. An address validated by another
    /// connection before is taken from it: one 5-tuple reaches one connection.
    fn route_address(&mut self, addr: SocketAddr, key: PeerKey) {
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
