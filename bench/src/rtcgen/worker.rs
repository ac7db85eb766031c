//! One generator thread: the owner loop of its client connections (see the module above for
//! the order of work in one pass).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::BytesMut;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::watch;

use super::peer;
use super::send::{self, Sending};
use super::{Command, Created, PeerKey, Setup};
use crate::client::{AUDIO_INTERVAL, Reception};

/// A connection's state as the async side sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    New,
    Connected,
    /// Failed or closed.
    Failed,
}

/// The eventfd's key in the epoll set (peers use their own keys).
const WAKE: u64 = u64::MAX;
/// Datagrams read from one ready socket per pass (level-triggered: the rest wait a pass).
const READ_BURST: usize = 32;
/// Commands taken per pass, so a burst of joins cannot stall the media of the others.
const COMMANDS_PER_PASS: usize = 16;
/// Longest sleep when nothing is due (commands wake the thread through its eventfd).
const IDLE_WAKE: Duration = Duration::from_millis(200);
/// A connection re-armed at or before `now` waits at least this long (a timer `rtc` reports
/// due but does not clear must not spin the loop).
const MIN_REARM: Duration = Duration::from_micros(500);
const RECV_BUFFER: usize = 2048;

enum Role {
    Subscriber {
        reception: Reception,
        /// Track id → video?
        tracks: HashMap<String, bool>,
    },
    Publisher(Box<Sending>),
}

struct Peer {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    state: watch::Sender<PeerState>,
    role: Role,
    dirty: bool,
    /// The deadline this connection has in the timer heap.
    armed: Option<Instant>,
}

struct Loop {
    epoll: Epoll,
    /// The address every connection's socket binds.
    ip: IpAddr,
    /// Connections that failed or closed after they were up (shared by the generator).
    lost: Arc<AtomicU64>,
    certificate: RTCCertificate,
    peers: HashMap<PeerKey, Peer>,
    next_key: PeerKey,
    timers: BinaryHeap<Reverse<(Instant, PeerKey)>>,
    dirty: Vec<PeerKey>,
    publishers: Vec<PeerKey>,
    send_errors: u64,
}

/// Runs the loop until every sender of `inbox` is gone.
pub fn run(
    inbox: Receiver<Command>,
    wake: &EventFd,
    ip: IpAddr,
    lost: Arc<AtomicU64>,
) -> Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
    let mut state = Loop {
        epoll,
        certificate: peer::certificate()?,
        ip,
        lost,
        peers: HashMap::new(),
        next_key: 0,
        timers: BinaryHeap::new(),
        dirty: Vec::new(),
        publishers: Vec::new(),
        send_errors: 0,
    };
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let now = Instant::now();
        let wait = state
            .next_deadline()
            .map_or(IDLE_WAKE, |t| t.saturating_duration_since(now))
            .min(IDLE_WAKE);
        // Whole milliseconds, rounded up: an early wake-up would only spin.
        let ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        let ready = match state.epoll.wait(&mut events, EpollTimeout::from(ms)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(err) => return Err(err).context("epoll_wait"),
        };
        for event in events.iter().take(ready) {
            match event.data() {
                WAKE => {
                    let _ = wake.read();
                }
                key => state.read(key, &mut buf),
            }
        }
        let now = Instant::now();
        state.run_timers(now);
        state.send_media(now);
        for _ in 0..COMMANDS_PER_PASS {
            match inbox.try_recv() {
                Ok(command) => state.command(command, now),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    state.close_all();
                    return Ok(());
                }
            }
        }
        state.flush(now);
    }
}

impl Loop {
    fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        let media = self
            .publishers
            .iter()
            .filter_map(|key| match &self.peers.get(key)?.role {
                Role::Publisher(s) => s.next_frame.into_iter().chain(s.next_audio).min(),
                Role::Subscriber { .. } => None,
            })
            .min();
        timer.into_iter().chain(media).min()
    }

    fn read(&mut self, key: PeerKey, buf: &mut [u8]) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let mut got = false;
        for _ in 0..READ_BURST {
            let (n, from) = match peer.socket.recv_from(buf) {
                Ok(read) => read,
                // WouldBlock, or an ICMP error of a vanished remote: nothing more now.
                Err(_) => break,
            };
            let Some(datagram) = buf.get(..n) else { break };
            got = true;
            let _ = peer.pc.handle_read(TaggedBytesMut {
                now: Instant::now(),
                transport: TransportContext {
                    local_addr: peer.local,
                    peer_addr: from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: BytesMut::from(datagram),
            });
            // Drain as we go: `rtc` queues what it decrypted until polled.
            service(peer, key, &mut self.dirty, &self.lost);
        }
        if got {
            mark(peer, key, &mut self.dirty);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        // Bounded: each popped entry is either stale or handled once; re-arming happens in
        // `flush`, after this.
        while let Some(Reverse((due, key))) = self.timers.peek().copied() {
            if due > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            if peer.armed != Some(due) {
                continue;
            }
            peer.armed = None;
            let _ = peer.pc.handle_timeout(now);
            service(peer, key, &mut self.dirty, &self.lost);
            mark(peer, key, &mut self.dirty);
        }
    }

    fn send_media(&mut self, now: Instant) {
        for &key in &self.publishers {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            let Role::Publisher(sending) = &mut peer.role else {
                continue;
            };
            let mut wrote = false;
            if sending.next_frame.is_some_and(|t| t <= now) {
                send::write_frame(&mut peer.pc, sending, now);
                sending.next_frame = Some(send::next_tick(
                    sending.next_frame,
                    sending.shape.frame_interval(),
                    now,
                ));
                wrote = true;
            }
            if sending.next_audio.is_some_and(|t| t <= now) {
                send::write_audio(&mut peer.pc, sending, now);
                sending.next_audio = Some(send::next_tick(sending.next_audio, AUDIO_INTERVAL, now));
                wrote = true;
            }
            if wrote {
                mark(peer, key, &mut self.dirty);
            }
        }
    }

    fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Create { setup, reply } => {
                let _ = reply.send(self.create(setup, now));
            }
            Command::Remote {
                key,
                sdp,
                offer,
                reply,
            } => {
                let result = match self.peers.get_mut(&key) {
                    Some(peer) => {
                        let applied = remote(&mut peer.pc, sdp, offer, now);
                        if let Role::Publisher(sending) = &mut peer.role
                            && sending.simulcast
                            && applied.is_ok()
                        {
                            sending.rid_extensions =
                                send::rid_extensions(&mut peer.pc, &sending.tracks);
                        }
                        mark(peer, key, &mut self.dirty);
                        applied
                    }
                    None => Err(anyhow::anyhow!("no connection {key}")),
                };
                let _ = reply.send(result);
            }
            Command::Candidate { key, candidate } => {
                if let Some(peer) = self.peers.get_mut(&key) {
                    let _ = peer.pc.add_remote_candidate(candidate);
                    mark(peer, key, &mut self.dirty);
                }
            }
            Command::Close { key } => {
                if let Some(mut peer) = self.peers.remove(&key) {
                    let _ = peer.pc.close();
                    while let Some(out) = peer.pc.poll_write() {
                        let _ = peer.socket.send_to(&out.message, out.transport.peer_addr);
                    }
                    let _ = self.epoll.delete(peer.socket.as_fd());
                    let _ = peer.state.send(PeerState::Failed);
                }
                self.publishers.retain(|&k| k != key);
            }
        }
    }

    fn create(&mut self, setup: Setup, now: Instant) -> Result<Created> {
        let socket = UdpSocket::bind((self.ip, 0)).context("binding a client socket")?;
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let mut pc = peer::build(&self.certificate, local, now)?;
        let candidate = peer::host_candidate(local)?;
        let (role, sdp) = match setup {
            Setup::Subscriber { offer, reception } => {
                let answer = remote(&mut pc, offer, true, now)?.context("no answer")?;
                (
                    Role::Subscriber {
                        reception,
                        tracks: HashMap::new(),
                    },
                    answer,
                )
            }
            Setup::Publisher {
                shape,
                ssrc_base,
                simulcast,
                sent,
            } => {
                let tracks = peer::add_send_tracks(&mut pc, ssrc_base, simulcast)?;
                let offer = pc.create_offer(None)?;
                pc.set_local_description(now, offer)?;
                let sdp = pc.local_description().context("no local description")?.sdp;
                let sending = Sending::new(tracks, shape, simulcast, sent);
                (Role::Publisher(Box::new(sending)), sdp)
            }
        };
        let key = self.next_key;
        self.next_key += 1;
        self.epoll
            .add(socket.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, key))?;
        let (state, state_rx) = watch::channel(PeerState::New);
        if matches!(role, Role::Publisher(_)) {
            self.publishers.push(key);
        }
        let mut peer = Peer {
            pc,
            socket,
            local,
            state,
            role,
            dirty: false,
            armed: None,
        };
        mark(&mut peer, key, &mut self.dirty);
        self.peers.insert(key, peer);
        Ok(Created {
            key,
            sdp,
            candidate,
            state: state_rx,
        })
    }

    /// Sends what every touched connection has to send and re-arms its timer.
    fn flush(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.dirty) {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            peer.dirty = false;
            while let Some(out) = peer.pc.poll_write() {
                if peer
                    .socket
                    .send_to(&out.message, out.transport.peer_addr)
                    .is_err()
                {
                    self.send_errors += 1;
                }
            }
            if let Some(due) = peer.pc.poll_timeout() {
                let due = due.max(now + MIN_REARM);
                if peer.armed.is_none_or(|armed| due < armed) {
                    peer.armed = Some(due);
                    self.timers.push(Reverse((due, key)));
                }
            }
        }
    }

    fn close_all(&mut self) {
        for (_, mut peer) in self.peers.drain() {
            let _ = peer.pc.close();
            while let Some(out) = peer.pc.poll_write() {
                let _ = peer.socket.send_to(&out.message, out.transport.peer_addr);
            }
        }
        if self.send_errors > 0 {
            tracing::debug!(send_errors = self.send_errors, "generator thread ended");
        }
    }
}

fn mark(peer: &mut Peer, key: PeerKey, dirty: &mut Vec<PeerKey>) {
    if !peer.dirty {
        peer.dirty = true;
        dirty.push(key);
    }
}

/// Applies a remote description; for an offer, sets and returns the answer.
fn remote(
    pc: &mut RTCPeerConnection,
    sdp: String,
    offer: bool,
    now: Instant,
) -> Result<Option<String>> {
    if !offer {
        pc.set_remote_description(now, RTCSessionDescription::answer(sdp)?)?;
        return Ok(None);
    }
    pc.set_remote_description(now, RTCSessionDescription::offer(sdp)?)?;
    let answer = pc.create_answer(None)?;
    pc.set_local_description(now, answer)?;
    Ok(Some(
        pc.local_description().context("no local description")?.sdp,
    ))
}

/// Drains a connection's events and received packets (a subscriber records each packet);
/// counts in `lost` a connection that fails or closes after it was up.
fn service(peer: &mut Peer, key: PeerKey, dirty: &mut Vec<PeerKey>, lost: &AtomicU64) {
    while let Some(event) = peer.pc.poll_event() {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                RTCPeerConnectionState::Connected => {
                    let _ = peer.state.send(PeerState::Connected);
                    if let Role::Publisher(sending) = &mut peer.role
                        && sending.next_frame.is_none()
                    {
                        let now = Instant::now();
                        sending.next_frame = Some(now);
                        sending.next_audio = Some(now);
                    }
                }
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    if *peer.state.borrow() == PeerState::Connected {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = peer.state.send(PeerState::Failed);
                }
                _ => {}
            },
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                if let Role::Subscriber { tracks, .. } = &mut peer.role
                    && let Some(receiver) = peer.pc.rtp_receiver(init.receiver_id)
                {
                    let video = receiver.track().kind() == RtpCodecKind::Video;
                    tracks.insert(init.track_id.to_string(), video);
                }
            }
            _ => {}
        }
    }
    while let Some(TaggedRTCMessage { message, .. }) = peer.pc.poll_read() {
        let Role::Subscriber { reception, tracks } = &mut peer.role else {
            continue;
        };
        if let RTCMessage::RtpPacket(track_id, packet) = message {
            let video = match tracks.get(track_id.as_str()) {
                Some(&video) => video,
                None => match track_is_video(&mut peer.pc, &track_id) {
                    Some(video) => {
                        tracks.insert(track_id.to_string(), video);
                        video
                    }
                    None => continue,
                },
            };
            let stats = if video {
                &reception.video
            } else {
                &reception.audio
            };
            stats.record(&packet.payload, video);
        }
    }
    mark(peer, key, dirty);
}

/// Whether the remote track `track_id` is video (when its packet came before its open event).
fn track_is_video(pc: &mut RTCPeerConnection, track_id: &str) -> Option<bool> {
    let receivers: Vec<RTCRtpReceiverId> = pc.get_receivers().collect();
    receivers.into_iter().find_map(|id| {
        let receiver = pc.rtp_receiver(id)?;
        let track = receiver.track();
        (track.track_id() == track_id).then(|| track.kind() == RtpCodecKind::Video)
    })
}
