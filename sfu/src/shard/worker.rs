//! The shard thread's loop: read datagrams and demultiplex them to peers, run due timers,
//! then flush every touched peer's datagrams through the ICE-lite gate. Commands from
//! signaling are served between passes (see `routing` for them and for the rooms).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::TransportProtocol;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use super::busy::{BusyMeter, BusyShare};
use super::feedback::BANDWIDTH_REPORT_INTERVAL;
use super::group::{GroupLink, HandedOff};
use super::ingest::IngestPacket;
use super::paths::Egress;
use super::peer::{PeerKey, ShardPeer};
use super::routing::{Member, PublicationSlot, RoomKey, ShardRoom};
use super::socket::EgressBatch;
use super::tcp::{TcpConnection, TcpEvent};
use super::{Command, ShardConfig, ShardEvent, ShardStats};
use crate::core::{ParticipantId, PublicationId, SubscriptionId};
use crate::transport::{ConnectionState, PeerRole};

/// Datagrams read per pass before the touched peers are flushed.
pub(super) const READ_BURST: usize = 64;
/// Larger datagrams are not WebRTC on any path the shard serves; they are dropped unread.
pub(super) const MAX_DATAGRAM: usize = 1500;
/// The loop wakes at least this often even when no peer or room has a deadline.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Something with a deadline on the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Peer(PeerKey),
    Room(RoomKey),
    /// The periodic pass: subscriber connections' estimates to their rooms, the data
    /// rejections not yet reported to their senders, and a new period of queue ages.
    Bandwidth,
}

/// What ended the loop's wait: handled after the wake-up is timed (see `busy`).
enum Wake {
    Command(Command),
    Readable,
    Ingest(IngestPacket),
    Accepted(std::io::Result<(TcpStream, SocketAddr)>),
    Tcp(TcpEvent),
    HandedOff(HandedOff),
    Timer,
}

/// What a shard thread is started with, besides its configuration.
pub(super) struct ShardStart {
    /// The UDP socket and its bound address.
    pub(super) udp: (std::net::UdpSocket, SocketAddr),
    /// The ICE-TCP listener, on the shard that holds it.
    pub(super) tcp: Option<std::net::TcpListener>,
    /// The bound address of the group's ICE-TCP listener (on whichever shard holds it).
    pub(super) tcp_bound: Option<SocketAddr>,
    /// The link to the other shards on the port, with this shard's hand-off queue.
    pub(super) group: Option<(GroupLink, mpsc::Receiver<HandedOff>)>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) ingest: mpsc::Receiver<IngestPacket>,
    pub(super) certificate: RTCCertificate,
    /// Where the loop publishes how busy it is.
    pub(super) busy: BusyShare,
}

/// Starts the shard thread: a current-thread tokio runtime that owns the shard's sockets and
/// everything on the shard.
pub(super) fn spawn(config: ShardConfig, start: ShardStart) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ShardStart {
        udp: (socket, bound),
        tcp,
        tcp_bound,
        group,
        commands,
        ingest,
        certificate,
        busy,
    } = start;
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
                let advertised = |bound: SocketAddr| {
                    config
                        .advertise
                        .map_or(bound, |ip| SocketAddr::new(ip, bound.port()))
                };
                let listener = match tcp.map(TcpListener::from_std) {
                    Some(Ok(listener)) => Some(listener),
                    Some(Err(err)) => {
                        warn!(%err, "ICE-TCP listener not usable; UDP only");
                        None
                    }
                    None => None,
                };
                let tcp_local = tcp_bound.map(advertised);
                let (group, handed_off) =
                    group.map_or((None, None), |(link, rx)| (Some(link), Some(rx)));
                let local = advertised(bound);
                let mut worker = Worker::new(config, socket, local, tcp_local, certificate);
                worker.group = group;
                worker
                    .run(commands, ingest, listener, handed_off, busy)
                    .await;
            });
        })
}

/// ICE-TCP frames queued from the connection tasks to the loop (they wait when it is full).
const TCP_EVENT_QUEUE: usize = 1024;

/// The next connection on the ICE-TCP listener; never, without one.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// The next datagram a sibling shard handed over; never, outside a group.
async fn next_handed_off(queue: Option<&mut mpsc::Receiver<HandedOff>>) -> Option<HandedOff> {
    match queue {
        Some(queue) => queue.recv().await,
        None => std::future::pending().await,
    }
}

/// Everything one shard owns.
pub(super) struct Worker {
    pub(super) config: ShardConfig,
    pub(super) socket: UdpSocket,
    /// The address in our ICE candidate: the local side of every peer's transport.
    pub(super) local: SocketAddr,
    /// The advertised address of the ICE-TCP candidate, when there is one.
    pub(super) tcp_local: Option<SocketAddr>,
    /// Accepted ICE-TCP connections by the client's address, and where their tasks report.
    pub(super) tcp: HashMap<SocketAddr, TcpConnection>,
    pub(super) tcp_events: mpsc::Sender<TcpEvent>,
    tcp_events_rx: Option<mpsc::Receiver<TcpEvent>>,
    /// The other shards on the same port, when there are any.
    pub(super) group: Option<GroupLink>,
    /// ICE-TCP connections held by the first shard whose peers are on this one.
    pub(super) remote_tcp: HashMap<SocketAddr, PeerKey>,
    /// The DTLS certificate of every connection on the shard.
    pub(super) certificate: RTCCertificate,
    /// Boxed: a connection is 9 KiB, and a map of them inline would hold that much for
    /// every empty slot too (up to one in two after it grows), and copy them all when it does.
    pub(super) peers: HashMap<PeerKey, Box<ShardPeer>>,
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
    /// UDP datagrams gathered for `sendmmsg`.
    egress: EgressBatch,
    /// Peers touched in this pass of the loop: their timers are refreshed at its end.
    pub(super) dirty: Vec<PeerKey>,
    /// Peers written to since their datagrams were last taken (see `drain_writes`).
    pub(super) written: Vec<PeerKey>,
    pub(super) stats: ShardStats,
    /// The longest queue waits recently seen (see `freshness`).
    pub(super) ingress_ages: super::freshness::IngressAges,
    /// Counters of removed publications, subscriptions and rooms (see `stats`).
    pub(super) counted: crate::runtime::MediaStats,
    /// The tracks of WHEP viewers that follow their room (see `follow`).
    pub(super) following: HashMap<SubscriptionId, super::follow::Follow>,
}

impl Worker {
    fn new(
        config: ShardConfig,
        socket: UdpSocket,
        local: SocketAddr,
        tcp_local: Option<SocketAddr>,
        certificate: RTCCertificate,
    ) -> Self {
        let (tcp_events, tcp_events_rx) = mpsc::channel(TCP_EVENT_QUEUE);
        Self {
            config,
            socket,
            local,
            tcp_local,
            tcp: HashMap::new(),
            tcp_events,
            tcp_events_rx: Some(tcp_events_rx),
            group: None,
            remote_tcp: HashMap::new(),
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
            egress: EgressBatch::default(),
            dirty: Vec::new(),
            written: Vec::new(),
            stats: ShardStats::default(),
            ingress_ages: super::freshness::IngressAges::default(),
            counted: crate::runtime::MediaStats::default(),
            following: HashMap::new(),
        }
    }

    async fn run(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut ingest: mpsc::Receiver<IngestPacket>,
        listener: Option<TcpListener>,
        mut handed_off: Option<mpsc::Receiver<HandedOff>>,
        busy: BusyShare,
    ) {
        info!(local = %self.local, tcp = ?self.tcp_local, "shard running");
        let Some(mut tcp_events) = self.tcp_events_rx.take() else {
            return;
        };
        self.timers
            .insert((Instant::now() + BANDWIDTH_REPORT_INTERVAL, Timer::Bandwidth));
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut meter = BusyMeter::new(busy, Instant::now());
        loop {
            let wake = self
                .timers
                .first()
                .map_or_else(|| Instant::now() + IDLE_WAKE, |(at, _)| *at);
            meter.waiting(Instant::now());
            // Commands first: under constant media the socket is always readable, and the
            // (rare) signaling requests must not starve behind it.
            let woken = tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => Wake::Command(command),
                    None => break,
                },
                readable = self.socket.readable() => {
                    if let Err(err) = readable {
                        warn!(%err, "media socket failed; shard stopped");
                        break;
                    }
                    Wake::Readable
                }
                Some(packet) = ingest.recv() => Wake::Ingest(packet),
                accepted = accept(listener.as_ref()) => Wake::Accepted(accepted),
                Some(event) = tcp_events.recv() => Wake::Tcp(event),
                Some(datagram) = next_handed_off(handed_off.as_mut()) => Wake::HandedOff(datagram),
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => Wake::Timer,
            };
            let now = Instant::now();
            meter.woke(now);
            match woken {
                Wake::Command(command) => self.command(command, now),
                Wake::Readable => self.read_burst(&mut buf),
                Wake::Ingest(packet) => self.ingest_packet(packet, now),
                Wake::Accepted(Ok((stream, from))) => self.accept_tcp(stream, from),
                Wake::Accepted(Err(err)) => debug!(%err, "ICE-TCP accept"),
                Wake::Tcp(event) => self.tcp_event(event, now),
                Wake::HandedOff(datagram) => self.handed_off(datagram, now),
                Wake::Timer => {}
            }
            // Ingested media is read every pass, so a busy socket never starves it.
            for _ in 0..READ_BURST {
                match ingest.try_recv() {
                    Ok(packet) => {
                        self.ingest_packet(packet, Instant::now());
                        self.drain_writes();
                    }
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

    /// Queues `key` for a write poll (now or at the end of the pass) and a timer refresh (at
    /// the end of the pass).
    pub(super) fn mark_dirty(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !peer.dirty {
            peer.dirty = true;
            self.dirty.push(key);
        }
        if !peer.written {
            peer.written = true;
            self.written.push(key);
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
                RTCPeerConnectionEvent::OnDataChannel(event)
                    if peer.role == PeerRole::Publisher =>
                {
                    self.on_data_channel(key, event);
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
                (PeerRole::Publisher, RTCMessage::RtpPacket(_, packet))
                    if peer
                        .abandoned
                        .get(&packet.header.ssrc)
                        .is_some_and(|run| run.contains(packet.header.sequence_number, now)) =>
                {
                    self.stats.stale_dropped += 1;
                }
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
                (PeerRole::Publisher, RTCMessage::DataChannelMessage(channel, message)) => {
                    self.route_data(key, channel, message, now);
                }
                _ => {}
            }
        }
        self.route_unsignaled(key, now);
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
                    self.report_data_rejections(now);
                    self.ingress_ages.rotate();
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
        self.drain_writes();
        let dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            peer.dirty = false;
            let (previous, next) = (peer.timeout, peer.pc.poll_timeout());
            peer.timeout = next;
            self.set_timer(Timer::Peer(key), previous, next);
        }
        self.dirty = dirty;
        self.dirty.clear();
        if !self.egress.is_empty() {
            let (sent, failed) = self.egress.send(&self.socket);
            self.stats.datagrams_out += sent;
            self.stats.send_failed += failed;
        }
    }

    /// Takes the datagrams of every peer written to since the last call into the egress batch
    /// (those the ICE-lite gate lets through), sending whole `sendmmsg` batches at once.
    ///
    /// Called after each datagram a pass reads, not only at the pass's end: every layer of an
    /// `rtc` connection queues what it is handed until the next write poll, and its queues
    /// keep the largest size they ever reached. Drained per datagram, a subscriber's queues
    /// hold one forwarded packet; drained per pass, a read burst's worth for each layer.
    pub(super) fn drain_writes(&mut self) {
        let written = std::mem::take(&mut self.written);
        // (address, peer, whether it now routes there or stops routing there)
        let mut routes: Vec<(SocketAddr, PeerKey, bool)> = Vec::new();
        for &key in &written {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            peer.written = false;
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
                    Egress::Validated
                        if out.transport.transport_protocol == TransportProtocol::UDP =>
                    {
                        routes.push((to, key, true));
                    }
                    Egress::Validated | Egress::Send => {}
                }
                if out.transport.transport_protocol == TransportProtocol::TCP {
                    let datagram = out.message.freeze();
                    let queued = match self.tcp.get(&to) {
                        Some(connection) => connection.writer.try_send(datagram).is_ok(),
                        // The first shard of a group holds the connection.
                        None => self.group.as_ref().is_some_and(|group| {
                            group
                                .routes
                                .tcp_writers
                                .get(&to)
                                .is_some_and(|writer| writer.try_send(datagram).is_ok())
                        }),
                    };
                    if queued {
                        self.stats.datagrams_out += 1;
                    } else {
                        self.stats.send_failed += 1;
                    }
                    continue;
                }
                self.egress.push(to, out.message);
            }
        }
        self.written = written;
        self.written.clear();
        let (sent, failed) = self.egress.send_whole_batches(&self.socket);
        self.stats.datagrams_out += sent;
        self.stats.send_failed += failed;
        for (addr, key, routed) in routes {
            if routed {
                self.route_address(addr, key);
            } else if self.by_addr.get(&addr) == Some(&key) {
                self.by_addr.remove(&addr);
                if let Some(group) = &self.group {
                    group.release_address(addr);
                }
            }
        }
    }
}
