//! `sluice-rtc-relay`: a prototype relay that drives webrtc-rs's sans-IO `rtc` 0.21 core
//! directly — ONE shared UDP socket, ONE owner task that owns every peer connection — so the
//! benchmark can measure what webrtc 0.21's async layer (per-peer sockets, driver tasks,
//! channels, async mutexes) costs per forwarded packet. Not a product: see docs/benchmarks.md.
//!
//! Signaling: `POST /publish/<room>` and `POST /subscribe/<room>` on 127.0.0.1 with
//! `{"type":"offer","sdp":…}` (candidates inside, no trickle) → `{"type":"answer","sdp":…}`.
//! A subscriber offers recvonly audio + video and gets sendonly tracks carrying the room
//! publisher's media, SSRC and payload type rewritten, payload unchanged.
//!
//! Per subscriber, like Sluice's subscriber connections: NACK responder, sender/receiver
//! reports, and (unless `--no-gcc`) GCC over TWCC without a pacer.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use clap::Parser;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, sendmmsg};
use rtc::interceptor::{Gcc, Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    CongestionFeedback, configure_congestion_control, configure_nack, configure_rtcp_reports,
    register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use serde::{Deserialize, Serialize};
use sluice_sfu::transport::FeedbackToApplication;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

const GCC_INITIAL_BPS: f64 = 2_500_000.0;
const GCC_MIN_BPS: f64 = 100_000.0;
const GCC_MAX_BPS: f64 = 50_000_000.0;
/// Datagrams read per owner-loop pass before outputs are flushed.
const READ_BURST: usize = 64;
/// Datagrams per `sendmmsg` call.
const SEND_BATCH: usize = 64;
const MAX_BODY: usize = 64 * 1024;
const MAX_PEERS: usize = 4096;
/// Source addresses one peer may be reached from (ICE candidate pairs it checked).
const MAX_ADDRS_PER_PEER: usize = 8;
/// Signaling requests served at once.
const MAX_HTTP: usize = 64;
/// At most one keyframe request per room per this interval.
const PLI_INTERVAL: Duration = Duration::from_millis(500);
const IDLE_WAKE: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(about = "Prototype SFU relay on the sans-IO rtc 0.21 core (loopback benchmark only)")]
struct Args {
    /// HTTP signaling address.
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// The one UDP socket every peer connection shares.
    #[arg(long, default_value = "127.0.0.1:0")]
    udp: SocketAddr,
    /// Send with `sendmmsg` (up to 64 datagrams per call, across subscribers) instead of one
    /// `send_to` per datagram.
    #[arg(long)]
    batch: bool,
    /// Subscriber legs without GCC/TWCC (NACK responder and RTCP reports only).
    #[arg(long)]
    no_gcc: bool,
    /// SO_RCVBUF / SO_SNDBUF of the shared socket, bytes (forced above net.core.*mem_max when
    /// permitted, else capped there).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    socket_buffer: usize,
    /// Exit when stdin reaches end of file (off by default: the bench gives its servers
    /// /dev/null as stdin and stops them with SIGTERM).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Sdp {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Subscriber,
}

/// A signaling request handed to the owner loop.
struct Command {
    role: Role,
    room: String,
    offer: String,
    reply: oneshot::Sender<Result<String, String>>,
}

/// What one subscriber sender needs to rewrite a forwarded packet.
#[derive(Debug, Clone, Copy)]
struct SendLeg {
    sender: RTCRtpSenderId,
    ssrc: u32,
    pt: u8,
}

struct Peer {
    pc: RTCPeerConnection,
    role: Role,
    room: String,
    ufrag: String,
    addrs: Vec<SocketAddr>,
    connected: bool,
    next_timeout: Option<Instant>,
    dirty: bool,
    // Publisher: track id → kind, and the video receiver for keyframe requests.
    tracks: HashMap<String, RtpCodecKind>,
    video_receiver: Option<(RTCRtpReceiverId, u32)>,
    // Subscriber: where each kind goes.
    video: Option<SendLeg>,
    audio: Option<SendLeg>,
}

#[derive(Default)]
struct Room {
    publisher: Option<usize>,
    subscribers: Vec<usize>,
    last_pli: Option<Instant>,
}

#[derive(Default)]
struct Counters {
    datagrams_in: u64,
    datagrams_out: u64,
    send_errors: u64,
    unrouted: u64,
    forwarded: u64,
    write_rejected: u64,
}

struct Relay {
    socket: UdpSocket,
    local: SocketAddr,
    batch: bool,
    gcc: bool,
    peers: Vec<Option<Peer>>,
    by_addr: HashMap<SocketAddr, usize>,
    by_ufrag: HashMap<String, usize>,
    rooms: HashMap<String, Room>,
    dirty: Vec<usize>,
    outbox: Vec<(SocketAddr, BytesMut)>,
    headers: MultiHeaders<SockaddrIn>,
    next_ssrc: u32,
    counters: Counters,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One thread: the owner loop and the (rare) HTTP tasks share it; CPU figures are the
    // owner loop's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let socket = UdpSocket::bind(args.udp).await.context("binding UDP")?;
    let local = socket.local_addr()?;
    // One socket takes every peer's traffic: while the loop fans a keyframe out to hundreds of
    // subscribers, the publishers' packets and all subscribers' feedback wait in this one
    // receive queue (Linux's 208 KiB default overflows; per-peer sockets each had their own).
    let (rcvbuf, sndbuf) = size_buffers(&socket, args.socket_buffer);
    info!(rcvbuf, sndbuf, "socket buffers");
    let http = TcpListener::bind(args.http).await.context("binding HTTP")?;
    let http_addr = http.local_addr()?;
    let (commands_tx, commands) = mpsc::channel::<Command>(64);
    tokio::spawn(serve_http(http, commands_tx));
    let (stop_tx, stop) = oneshot::channel::<()>();
    tokio::spawn(async move {
        wait_for_stop(args.exit_on_stdin_eof).await;
        let _ = stop_tx.send(());
    });
    println!("sluice-rtc-relay udp on {local}");
    println!("sluice-rtc-relay listening on http://{http_addr}");
    info!(%local, %http_addr, batch = args.batch, gcc = !args.no_gcc, "relay up");
    let mut relay = Relay {
        socket,
        local,
        batch: args.batch,
        gcc: !args.no_gcc,
        peers: Vec::new(),
        by_addr: HashMap::new(),
        by_ufrag: HashMap::new(),
        rooms: HashMap::new(),
        dirty: Vec::new(),
        outbox: Vec::with_capacity(1024),
        headers: MultiHeaders::preallocate(SEND_BATCH, None),
        next_ssrc: 0x2000_0000,
        counters: Counters::default(),
    };
    relay.run(commands, stop).await;
    let c = &relay.counters;
    info!(
        datagrams_in = c.datagrams_in,
        datagrams_out = c.datagrams_out,
        forwarded = c.forwarded,
        send_errors = c.send_errors,
        unrouted = c.unrouted,
        write_rejected = c.write_rejected,
        "relay stopped"
    );
    Ok(())
}

/// Sets both socket buffers to `bytes`; returns what the kernel granted.
fn size_buffers(socket: &UdpSocket, bytes: usize) -> (usize, usize) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &bytes);
    }
    if setsockopt(socket, sockopt::SndBufForce, &bytes).is_err() {
        let _ = setsockopt(socket, sockopt::SndBuf, &bytes);
    }
    (
        getsockopt(socket, sockopt::RcvBuf).unwrap_or(0),
        getsockopt(socket, sockopt::SndBuf).unwrap_or(0),
    )
}

async fn wait_for_stop(stdin_eof: bool) {
    let stdin = async {
        if stdin_eof {
            // A plain thread: blocking reads until end of file (or an error).
            let (tx, rx) = oneshot::channel::<()>();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 256];
                let mut stdin = std::io::stdin();
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                let _ = tx.send(());
            });
            let _ = rx.await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
        () = stdin => {}
    }
}

impl Relay {
    async fn run(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut buf = vec![0u8; 2048];
        loop {
            let wake = self
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + IDLE_WAKE);
            // Signaling first: under constant media the socket is always readable, and a
            // biased select with the socket first starved the (rare) offers.
            tokio::select! {
                biased;
                _ = &mut stop => break,
                command = commands.recv() => match command {
                    Some(command) => self.signal(command),
                    None => break,
                },
                readable = self.socket.readable() => {
                    if let Err(err) = readable {
                        warn!(%err, "UDP socket failed");
                        break;
                    }
                    self.read_burst(&mut buf);
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
            self.run_timeouts();
            self.flush().await;
        }
        for peer in self.peers.iter_mut().flatten() {
            let _ = peer.pc.close();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flatten()
            .filter_map(|p| p.next_timeout)
            .min()
    }

    /// Reads up to READ_BURST datagrams that are already queued and feeds them to their peers.
    fn read_burst(&mut self, buf: &mut [u8]) {
        for _ in 0..READ_BURST {
            match self.socket.try_recv_from(buf) {
                Ok((n, from)) => {
                    self.counters.datagrams_in += 1;
                    let Some(datagram) = buf.get(..n) else {
                        continue;
                    };
                    self.ingest(datagram, from);
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    // ICMP port unreachable from a departed client shows up here on Linux.
                    debug!(%err, "recv_from");
                }
            }
        }
    }

    fn ingest(&mut self, datagram: &[u8], from: SocketAddr) {
        let id = match self.by_addr.get(&from) {
            Some(&id) => id,
            None => {
                // Unknown source: only a STUN binding request naming one of our ufrags opens it.
                let Some(id) = stun_local_ufrag(datagram).and_then(|u| self.by_ufrag.get(u)) else {
                    self.counters.unrouted += 1;
                    return;
                };
                let id = *id;
                let Some(Some(peer)) = self.peers.get_mut(id) else {
                    return;
                };
                if peer.addrs.len() >= MAX_ADDRS_PER_PEER {
                    self.counters.unrouted += 1;
                    return;
                }
                peer.addrs.push(from);
                self.by_addr.insert(from, id);
                id
            }
        };
        let now = Instant::now();
        let Some(Some(peer)) = self.peers.get_mut(id) else {
            return;
        };
        if let Err(err) = peer.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(datagram),
        }) {
            debug!(id, %err, "handle_read");
        }
        self.service(id, now);
    }

    fn mark_dirty(&mut self, id: usize) {
        if let Some(Some(peer)) = self.peers.get_mut(id)
            && !peer.dirty
        {
            peer.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Drains a peer's events and reads (forwarding media), and marks it for a write poll.
    fn service(&mut self, id: usize, now: Instant) {
        self.mark_dirty(id);
        let mut closed = false;
        loop {
            let Some(Some(peer)) = self.peers.get_mut(id) else {
                return;
            };
            let Some(event) = peer.pc.poll_event() else {
                break;
            };
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    debug!(id, ?state, role = ?peer.role, "connection state");
                    match state {
                        RTCPeerConnectionState::Connected => peer.connected = true,
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                            closed = true;
                        }
                        _ => {}
                    }
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let kind = peer
                        .pc
                        .rtp_receiver(init.receiver_id)
                        .map(|r| r.track().kind());
                    if let Some(kind) = kind {
                        if kind == RtpCodecKind::Video {
                            peer.video_receiver = Some((init.receiver_id, init.ssrc));
                        }
                        peer.tracks.insert(init.track_id.to_string(), kind);
                    }
                }
                _ => {}
            }
        }
        loop {
            let Some(Some(peer)) = self.peers.get_mut(id) else {
                return;
            };
            let Some(TaggedRTCMessage { message, .. }) = peer.pc.poll_read() else {
                break;
            };
            match (peer.role, message) {
                (Role::Publisher, RTCMessage::RtpPacket(track_id, packet)) => {
                    let kind = match peer.tracks.get(track_id.as_str()) {
                        Some(&kind) => kind,
                        None => match track_kind(&mut peer.pc, &track_id) {
                            Some(kind) => {
                                peer.tracks.insert(track_id.to_string(), kind);
                                kind
                            }
                            None => continue,
                        },
                    };
                    let room = peer.room.clone();
                    self.forward(&room, kind, packet, now);
                }
                (Role::Subscriber, RTCMessage::RtcpPacket(_, packets))
                    if packets
                        .iter()
                        .any(|p| p.as_any().is::<PictureLossIndication>()) =>
                {
                    let room = peer.room.clone();
                    self.request_keyframe(&room, now);
                }
                _ => {}
            }
        }
        if closed {
            self.remove(id);
        }
    }

    /// One publisher packet to every connected subscriber of the room.
    fn forward(&mut self, room: &str, kind: RtpCodecKind, packet: rtc::rtp::Packet, now: Instant) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for i in 0..room.subscribers.len() {
            let Some(&sub) = room.subscribers.get(i) else {
                break;
            };
            let Some(Some(peer)) = self.peers.get_mut(sub) else {
                continue;
            };
            if !peer.connected {
                continue;
            }
            let leg = match kind {
                RtpCodecKind::Video => peer.video,
                _ => peer.audio,
            };
            let Some(leg) = leg else { continue };
            let mut out = packet.clone();
            out.header.ssrc = leg.ssrc;
            out.header.payload_type = leg.pt;
            // Extension ids are per leg; the prototype drops the publisher's (the TWCC
            // interceptor adds its own on the way out).
            out.header.extension = false;
            out.header.extension_profile = 0;
            out.header.extensions.clear();
            match peer.pc.rtp_sender(leg.sender) {
                Some(mut sender) => match sender.write_rtp(now, out) {
                    Ok(()) => self.counters.forwarded += 1,
                    Err(err) => {
                        self.counters.write_rejected += 1;
                        debug!(sub, %err, "write_rtp");
                    }
                },
                None => self.counters.write_rejected += 1,
            }
            if !peer.dirty {
                peer.dirty = true;
                self.dirty.push(sub);
            }
        }
    }

    fn request_keyframe(&mut self, room_name: &str, now: Instant) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        if room
            .last_pli
            .is_some_and(|t| now.duration_since(t) < PLI_INTERVAL)
        {
            return;
        }
        room.last_pli = Some(now);
        let Some(pub_id) = room.publisher else { return };
        let Some(Some(publisher)) = self.peers.get_mut(pub_id) else {
            return;
        };
        let Some((receiver_id, media_ssrc)) = publisher.video_receiver else {
            return;
        };
        if let Some(mut receiver) = publisher.pc.rtp_receiver(receiver_id) {
            let _ = receiver.write_rtcp(
                now,
                vec![Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                })],
            );
        }
        self.mark_dirty(pub_id);
    }

    fn run_timeouts(&mut self) {
        let now = Instant::now();
        for id in 0..self.peers.len() {
            let due = matches!(self.peers.get(id), Some(Some(p)) if p.next_timeout.is_some_and(|t| t <= now));
            if !due {
                continue;
            }
            if let Some(Some(peer)) = self.peers.get_mut(id)
                && let Err(err) = peer.pc.handle_timeout(now)
            {
                debug!(id, %err, "handle_timeout");
            }
            self.service(id, now);
        }
    }

    /// Collects every dirty peer's datagrams, refreshes its timeout, and sends them all.
    async fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            let Some(Some(peer)) = self.peers.get_mut(id) else {
                continue;
            };
            peer.dirty = false;
            while let Some(out) = peer.pc.poll_write() {
                self.outbox.push((out.transport.peer_addr, out.message));
            }
            peer.next_timeout = peer.pc.poll_timeout();
        }
        self.dirty = dirty;
        self.dirty.clear();
        if self.outbox.is_empty() {
            return;
        }
        let outbox = std::mem::take(&mut self.outbox);
        if self.batch {
            self.send_batched(&outbox).await;
        } else {
            for (to, datagram) in &outbox {
                self.send_one(datagram, *to).await;
            }
        }
        self.outbox = outbox;
        self.outbox.clear();
    }

    async fn send_one(&mut self, datagram: &[u8], to: SocketAddr) {
        for _ in 0..2 {
            match self.socket.try_send_to(datagram, to) {
                Ok(_) => {
                    self.counters.datagrams_out += 1;
                    return;
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    let _ = tokio::time::timeout(Duration::from_millis(5), self.socket.writable())
                        .await;
                }
                Err(err) => {
                    debug!(%err, %to, "send_to");
                    break;
                }
            }
        }
        self.counters.send_errors += 1;
    }

    async fn send_batched(&mut self, outbox: &[(SocketAddr, BytesMut)]) {
        let fd = self.socket.as_raw_fd();
        let mut rest = outbox;
        let mut stalls = 0;
        while !rest.is_empty() {
            let n = rest.len().min(SEND_BATCH);
            let chunk = rest.get(..n).unwrap_or_default();
            // IPv4 only (the benchmark is on 127.0.0.1); anything else goes one by one.
            let addrs: Vec<Option<SockaddrIn>> = chunk
                .iter()
                .map(|(to, _)| match to {
                    SocketAddr::V4(v4) => {
                        Some(SockaddrIn::from(SocketAddrV4::new(*v4.ip(), v4.port())))
                    }
                    SocketAddr::V6(_) => None,
                })
                .collect();
            if addrs.iter().any(Option::is_none) {
                for (to, datagram) in chunk {
                    self.send_one(datagram, *to).await;
                }
                rest = rest.get(n..).unwrap_or_default();
                continue;
            }
            let iovs: Vec<[IoSlice<'_>; 1]> =
                chunk.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
            let cmsgs: [ControlMessage<'_>; 0] = [];
            let sent = sendmmsg(
                fd,
                &mut self.headers,
                &iovs,
                &addrs,
                cmsgs,
                MsgFlags::MSG_DONTWAIT,
            )
            .map(|results| results.count());
            match sent {
                Ok(sent) if sent > 0 => {
                    self.counters.datagrams_out += sent as u64;
                    rest = rest.get(sent..).unwrap_or_default();
                }
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => {
                    stalls += 1;
                    if stalls > 2 {
                        self.counters.send_errors += rest.len() as u64;
                        return;
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(5), self.socket.writable())
                        .await;
                }
                Err(err) => {
                    // One bad datagram (e.g. a vanished client's ICMP error): skip it.
                    debug!(%err, "sendmmsg");
                    self.counters.send_errors += 1;
                    rest = rest.get(1..).unwrap_or_default();
                }
            }
        }
    }

    fn signal(&mut self, command: Command) {
        let Command {
            role,
            room,
            offer,
            reply,
        } = command;
        let answer = self.add_peer(role, &room, offer);
        let _ = reply.send(answer.map_err(|e| format!("{e:#}")));
    }

    fn add_peer(&mut self, role: Role, room: &str, offer: String) -> Result<String> {
        if self.peers.iter().flatten().count() >= MAX_PEERS {
            bail!("too many peers");
        }
        if role == Role::Publisher
            && let Some(existing) = self.rooms.get(room).and_then(|r| r.publisher)
            && matches!(self.peers.get(existing), Some(Some(_)))
        {
            bail!("room {room} already has a publisher");
        }
        let now = Instant::now();
        let mut pc = build_peer(role, self.gcc, now)?;
        pc.set_remote_description(now, RTCSessionDescription::offer(offer)?)?;
        let mut legs = (None, None);
        if role == Role::Subscriber {
            for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
                let ssrc = self.next_ssrc;
                self.next_ssrc = self.next_ssrc.wrapping_add(1);
                let (codec, _) = codec(kind);
                let sender = pc.add_track(MediaStreamTrack::new(
                    format!("relay-{room}"),
                    format!("relay-{kind}-{ssrc}"),
                    format!("relay-{kind}"),
                    kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: codec.rtp_codec,
                        ..Default::default()
                    }],
                ))?;
                let leg = SendLeg {
                    sender,
                    ssrc,
                    pt: 0,
                };
                match kind {
                    RtpCodecKind::Video => legs.0 = Some(leg),
                    _ => legs.1 = Some(leg),
                }
            }
        }
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: self.local.ip().to_string(),
                port: self.local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
        let answer = pc.create_answer(None)?;
        pc.set_local_description(now, answer)?;
        let sdp = pc
            .local_description()
            .context("no local description")?
            .sdp
            .clone();
        let ufrag = sdp
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .map(|u| u.trim().to_owned())
            .context("answer without ice-ufrag")?;
        // The payload type each subscriber leg negotiated (what write_rtp accepts).
        let mut resolve = |leg: Option<SendLeg>, mime: &str| -> Option<SendLeg> {
            let mut leg = leg?;
            let mut sender = pc.rtp_sender(leg.sender)?;
            leg.pt = sender
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))?
                .payload_type;
            Some(leg)
        };
        let video = resolve(legs.0, "video/VP8");
        let audio = resolve(legs.1, "audio/opus");
        if role == Role::Subscriber && video.is_none() && audio.is_none() {
            bail!("the offer accepts neither VP8 video nor Opus audio");
        }
        let next_timeout = pc.poll_timeout();
        let peer = Peer {
            pc,
            role,
            room: room.to_owned(),
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            connected: false,
            next_timeout,
            dirty: false,
            tracks: HashMap::new(),
            video_receiver: None,
            video,
            audio,
        };
        let id = match self.peers.iter().position(Option::is_none) {
            Some(free) => {
                if let Some(slot) = self.peers.get_mut(free) {
                    *slot = Some(peer);
                }
                free
            }
            None => {
                self.peers.push(Some(peer));
                self.peers.len() - 1
            }
        };
        self.by_ufrag.insert(ufrag, id);
        let entry = self.rooms.entry(room.to_owned()).or_default();
        match role {
            Role::Publisher => entry.publisher = Some(id),
            Role::Subscriber => entry.subscribers.push(id),
        }
        self.mark_dirty(id);
        info!(id, ?role, room, "peer added");
        Ok(sdp)
    }

    fn remove(&mut self, id: usize) {
        let Some(slot) = self.peers.get_mut(id) else {
            return;
        };
        let Some(mut peer) = slot.take() else { return };
        let _ = peer.pc.close();
        for addr in &peer.addrs {
            self.by_addr.remove(addr);
        }
        self.by_ufrag.remove(&peer.ufrag);
        if let Some(room) = self.rooms.get_mut(&peer.room) {
            room.subscribers.retain(|&s| s != id);
            if room.publisher == Some(id) {
                room.publisher = None;
            }
            if room.publisher.is_none() && room.subscribers.is_empty() {
                self.rooms.remove(&peer.room);
            }
        }
        info!(id, role = ?peer.role, "peer removed");
    }
}

/// The kind of the remote track `track_id` (when OnOpen was not seen first).
fn track_kind(pc: &mut RTCPeerConnection, track_id: &str) -> Option<RtpCodecKind> {
    let receivers: Vec<RTCRtpReceiverId> = pc.get_receivers().collect();
    receivers.into_iter().find_map(|id| {
        let receiver = pc.rtp_receiver(id)?;
        let track = receiver.track();
        (track.track_id() == track_id).then(|| track.kind())
    })
}

/// The local (first) half of a STUN binding request's USERNAME ("ours:theirs").
fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const USERNAME: u16 = 0x0006;
    let header = datagram.get(..20)?;
    if header.first()? & 0xc0 != 0 || header.get(4..8)? != MAGIC {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*header.get(2)?, *header.get(3)?]));
    let mut attrs = datagram.get(20..20 + len)?;
    while attrs.len() >= 4 {
        let typ = u16::from_be_bytes([*attrs.first()?, *attrs.get(1)?]);
        let alen = usize::from(u16::from_be_bytes([*attrs.get(2)?, *attrs.get(3)?]));
        let value = attrs.get(4..4 + alen)?;
        if typ == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        attrs = attrs.get((4 + alen).next_multiple_of(4).min(attrs.len())..)?;
    }
    None
}

fn codec(kind: RtpCodecKind) -> (RTCRtpCodecParameters, RtpCodecKind) {
    if kind == RtpCodecKind::Video {
        let feedback = [
            ("goog-remb", ""),
            ("ccm", "fir"),
            ("nack", ""),
            ("nack", "pli"),
        ]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        })
        .collect();
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/VP8".to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: feedback,
                },
                payload_type: 96,
            },
            RtpCodecKind::Video,
        )
    } else {
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "audio/opus".to_owned(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )
    }
}

/// A peer connection with Sluice's codecs and, per role, Sluice's interceptors.
fn build_peer(role: Role, gcc: bool, now: Instant) -> Result<RTCPeerConnection> {
    let mut engine = MediaEngine::default();
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        let (params, kind) = codec(kind);
        engine.register_codec(params, kind)?;
    }
    let registry = match role {
        Role::Publisher => register_default_interceptors(Registry::new(), &mut engine)?,
        Role::Subscriber => {
            let registry = configure_rtcp_reports(configure_nack(Registry::new(), &mut engine));
            if gcc {
                // As Sluice: GCC over TWCC, and a pass-through in the pacer's slot (forwarded
                // media leaves at the publisher's rate).
                configure_congestion_control(
                    registry,
                    Gcc::new(GCC_INITIAL_BPS, GCC_MIN_BPS, GCC_MAX_BPS),
                    CongestionFeedback::Twcc,
                    &mut engine,
                )?
                .with(Slot::Pacer, FeedbackToApplication::default())
            } else {
                registry
            }
        }
    }
    .with(Slot::Custom(20_000), FeedbackToApplication::default());
    Ok(RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)?)
}

async fn serve_http(listener: TcpListener, commands: mpsc::Sender<Command>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_HTTP));
    loop {
        let Ok(permit) = std::sync::Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            // E.g. out of file descriptors: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let commands = commands.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(Duration::from_secs(15), http_exchange(stream, commands))
                .await
            {
                Ok(Err(err)) => debug!(%err, "HTTP request failed"),
                Err(_) => debug!("HTTP request timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn http_exchange(mut stream: TcpStream, commands: mpsc::Sender<Command>) -> Result<()> {
    let mut data = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the request head");
        }
        data.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if data.len() > MAX_BODY {
            bail!("request head too large");
        }
    };
    let head = String::from_utf8_lossy(data.get(..head_end).unwrap_or_default()).into_owned();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return respond(&mut stream, "413 Payload Too Large", "body too large").await;
    }
    while data.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed inside the body");
        }
        data.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let body = data.get(head_end..head_end + length).unwrap_or_default();
    let route = path
        .strip_prefix("/publish/")
        .map(|r| (Role::Publisher, r))
        .or_else(|| {
            path.strip_prefix("/subscribe/")
                .map(|r| (Role::Subscriber, r))
        });
    let Some((role, room)) = route.filter(|(_, r)| !r.is_empty() && method == "POST") else {
        return respond(
            &mut stream,
            "404 Not Found",
            "POST /publish/<room> or /subscribe/<room>",
        )
        .await;
    };
    let offer: Sdp = match serde_json::from_slice(body) {
        Ok(o) => o,
        Err(err) => return respond(&mut stream, "400 Bad Request", &err.to_string()).await,
    };
    if offer.kind != "offer" {
        return respond(&mut stream, "400 Bad Request", "expected an offer").await;
    }
    let (reply, answer) = oneshot::channel();
    let command = Command {
        role,
        room: room.to_owned(),
        offer: offer.sdp,
        reply,
    };
    if commands.try_send(command).is_err() {
        return respond(&mut stream, "503 Service Unavailable", "busy").await;
    }
    match answer.await {
        Ok(Ok(sdp)) => {
            let json = serde_json::to_string(&Sdp {
                kind: "answer".to_owned(),
                sdp,
            })?;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                json.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(json.as_bytes()).await?;
            Ok(())
        }
        Ok(Err(err)) => respond(&mut stream, "400 Bad Request", &err).await,
        Err(_) => respond(&mut stream, "503 Service Unavailable", "relay stopping").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, text: &str) -> Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(text.as_bytes()).await?;
    Ok(())
}
