//! RTMP ingest against a real server: a well-behaved publisher (rml_rtmp's client session)
//! streams AAC + H.264 to one key while raw TCP connections send the inputs that broke other
//! servers. Each bad connection must be closed, and the good stream must keep reaching a
//! webrtc-rs subscriber (its Opus publication) the whole time. The same subscriber measures
//! ingest latency: RTMP audio message written → first RTP packet of it received.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sluice_e2e::peer::ClientPeer;
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_sfu::ingest::{RtmpConfig, RtmpServer, StreamKeys, StreamTarget};
use sluice_signaling::protocol::{ClientMessage, MediaKind, PeerRole, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

const KEY: &str = "e2e-good-stream-key-0123";
const ROOM: &str = "rtmp-e2e";
/// A key whose publisher sends video without the AVC sequence header.
const HEADLESS_KEY: &str = "e2e-headless-key-0123456";
/// One second of a 440 Hz sine, AAC-LC 48 kHz mono in ADTS.
const AAC_ADTS: &[u8] = include_bytes!("../../sfu/src/ingest/testdata/sine440_48000_mono.aac");
/// x264 constrained baseline SPS and PPS (320x240).
const SPS: &[u8] = &[
    0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00,
    0x00, 0x0f, 0x03, 0xc5, 0x0a, 0xa8,
];
const PPS: &[u8] = &[0x68, 0xce, 0x0f, 0xc8];

/// Raw AAC frames of an ADTS stream, and the AudioSpecificConfig (AAC-LC, 48 kHz, mono).
pub(crate) fn aac_frames() -> (Vec<u8>, Vec<Bytes>) {
    let mut frames = Vec::new();
    let mut data = AAC_ADTS;
    while data.len() > 7 {
        let len = (usize::from(data[3] & 3) << 11)
            | (usize::from(data[4]) << 3)
            | usize::from(data[5] >> 5);
        let header = if data[1] & 1 == 1 { 7 } else { 9 };
        frames.push(Bytes::copy_from_slice(&data[header..len]));
        data = &data[len..];
    }
    (vec![0x11, 0x88], frames)
}

pub(crate) fn flv_audio(packet_type: u8, body: &[u8]) -> Bytes {
    let mut tag = vec![0xaf, packet_type];
    tag.extend_from_slice(body);
    Bytes::from(tag)
}

pub(crate) fn flv_video(keyframe: bool, packet_type: u8, body: &[u8]) -> Bytes {
    let mut tag = vec![if keyframe { 0x17 } else { 0x27 }, packet_type, 0, 0, 0];
    tag.extend_from_slice(body);
    Bytes::from(tag)
}

pub(crate) fn avc_sequence_header() -> Vec<u8> {
    let mut record = vec![1, SPS[1], SPS[2], SPS[3], 0xff, 0xe1];
    record.extend((SPS.len() as u16).to_be_bytes());
    record.extend(SPS);
    record.push(1);
    record.extend((PPS.len() as u16).to_be_bytes());
    record.extend(PPS);
    record
}

/// One access unit of `size` bytes (not a decodable picture: the server does not decode).
pub(crate) fn avc_frame(keyframe: bool, size: usize) -> Vec<u8> {
    let mut nal = vec![if keyframe { 0x65 } else { 0x41 }];
    nal.extend((1..size).map(|i| (i % 251) as u8 | 1));
    let mut out = (nal.len() as u32).to_be_bytes().to_vec();
    out.extend(nal);
    out
}

/// Sends AAC frame `index` of the loop (and every third time a video frame).
async fn send_frame(good: &mut Publisher, frames: &[Bytes], index: u32) -> Result<()> {
    let frame = &frames[index as usize % frames.len()];
    let ms = index * 1024 / 48;
    good.audio(ms, flv_audio(1, frame)).await?;
    if index.is_multiple_of(3) {
        let keyframe = index.is_multiple_of(90);
        good.video(ms, flv_video(keyframe, 1, &avc_frame(keyframe, 3000)))
            .await?;
    }
    Ok(())
}

/// An RTMP publisher on rml_rtmp's client session.
pub(crate) struct Publisher {
    socket: TcpStream,
    session: ClientSession,
    /// Every byte the server sent after the handshake.
    pub(crate) received: Vec<u8>,
}

impl Publisher {
    pub(crate) async fn connect(addr: std::net::SocketAddr) -> Result<Self> {
        Self::handshake(TcpStream::connect(addr).await?).await
    }

    /// Connects from the loopback address `local` (e.g. 127.0.0.2).
    pub(crate) async fn connect_from(
        addr: std::net::SocketAddr,
        local: std::net::IpAddr,
    ) -> Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::new(local, 0))?;
        Self::handshake(socket.connect(addr).await?).await
    }

    /// Runs the RTMP handshake and `connect` on `socket`.
    async fn handshake(mut socket: TcpStream) -> Result<Self> {
        let mut handshake = Handshake::new(PeerType::Client);
        socket
            .write_all(&handshake.generate_outbound_p0_and_p1()?)
            .await?;
        let mut buf = vec![0u8; 8192];
        let leftover = loop {
            let n = socket.read(&mut buf).await?;
            ensure!(n > 0, "closed during the handshake");
            match handshake.process_bytes(&buf[..n])? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    socket.write_all(&response_bytes).await?
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket.write_all(&response_bytes).await?;
                    break remaining_bytes;
                }
            }
        };
        let (session, results) = ClientSession::new(ClientSessionConfig::new())?;
        let mut publisher = Self {
            socket,
            session,
            received: leftover.clone(),
        };
        publisher.send_results(results).await?;
        if !leftover.is_empty() {
            let results = publisher.session.handle_input(&leftover)?;
            publisher.send_results(results).await?;
        }
        let request = publisher.session.request_connection("live".to_owned())?;
        publisher.send_results(vec![request]).await?;
        publisher
            .until(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))
            .await?;
        Ok(publisher)
    }

    /// Asks to publish on `key`; fails when the server refuses or closes.
    pub(crate) async fn publish(&mut self, key: &str) -> Result<()> {
        let request = self
            .session
            .request_publishing(key.to_owned(), PublishRequestType::Live)?;
        self.send_results(vec![request]).await?;
        self.until(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
            .await
    }

    /// Asks to publish on `key` and returns the `onStatus` code of the answer
    /// (`NetStream.Publish.Start` when accepted). An `_error` answer is an error.
    pub(crate) async fn publish_status(&mut self, key: &str) -> Result<String> {
        let request = self
            .session
            .request_publishing(key.to_owned(), PublishRequestType::Live)?;
        self.send_results(vec![request]).await?;
        let answer = std::sync::Mutex::new(None);
        self.until(|e| {
            let code = match e {
                ClientSessionEvent::PublishRequestAccepted => "NetStream.Publish.Start".into(),
                ClientSessionEvent::UnhandleableOnStatusCode { code } => code.clone(),
                ClientSessionEvent::UnknownTransactionResultReceived { .. } => {
                    "a result (_result/_error), not onStatus".into()
                }
                _ => return false,
            };
            *answer.lock().expect("answer") = Some(code);
            true
        })
        .await?;
        let code = answer.lock().expect("answer").take();
        code.context("no answer")
    }

    pub(crate) async fn until(&mut self, done: impl Fn(&ClientSessionEvent) -> bool) -> Result<()> {
        let mut buf = vec![0u8; 8192];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let n = tokio::time::timeout_at(deadline, self.socket.read(&mut buf))
                .await
                .context("no answer from the server")??;
            ensure!(n > 0, "the server closed the connection");
            self.received.extend_from_slice(&buf[..n]);
            let mut reached = false;
            let mut outbound = Vec::new();
            for result in self.session.handle_input(&buf[..n])? {
                match result {
                    ClientSessionResult::RaisedEvent(event) => reached |= done(&event),
                    other => outbound.push(other),
                }
            }
            self.send_results(outbound).await?;
            if reached {
                return Ok(());
            }
        }
    }

    async fn send_results(&mut self, results: Vec<ClientSessionResult>) -> Result<()> {
        for result in results {
            if let ClientSessionResult::OutboundResponse(packet) = result {
                self.socket.write_all(&packet.bytes).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn audio(&mut self, timestamp_ms: u32, tag: Bytes) -> Result<()> {
        let packet =
            self.session
                .publish_audio_data(tag, RtmpTimestamp::new(timestamp_ms), false)?;
        self.send_results(vec![packet]).await
    }

    pub(crate) async fn video(&mut self, timestamp_ms: u32, tag: Bytes) -> Result<()> {
        let packet =
            self.session
                .publish_video_data(tag, RtmpTimestamp::new(timestamp_ms), false)?;
        self.send_results(vec![packet]).await
    }
}

/// A raw connection that has completed the (simple, digest-less) RTMP handshake.
async fn raw_after_handshake(addr: std::net::SocketAddr) -> Result<TcpStream> {
    let mut socket = TcpStream::connect(addr).await?;
    let mut c0c1 = vec![3u8];
    c0c1.extend([0u8; 8]);
    c0c1.extend((0..1528).map(|i| (i * 7 % 256) as u8));
    socket.write_all(&c0c1).await?;
    let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
    socket.read_exact(&mut s0s1s2).await?;
    // C2 echoes S1.
    socket.write_all(&s0s1s2[1..1537]).await?;
    Ok(socket)
}

/// A message as RTMP chunks of `chunk_size` on chunk stream 3 (type 0 header, then type 3).
fn chunks(type_id: u8, declared_len: usize, body: &[u8], chunk_size: usize) -> Vec<u8> {
    let len = (declared_len as u32).to_be_bytes();
    let mut out = vec![0x03, 0, 0, 0, len[1], len[2], len[3], type_id, 0, 0, 0, 0];
    for (i, piece) in body.chunks(chunk_size).enumerate() {
        if i > 0 {
            out.push(0xc3);
        }
        out.extend_from_slice(piece);
    }
    out
}

/// A `connect` command whose command object nests `depth` objects deep.
fn nested_connect(depth: usize) -> Vec<u8> {
    let mut amf = vec![0x02, 0, 7];
    amf.extend(b"connect");
    amf.extend([0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
    for _ in 0..depth {
        amf.extend([0x03, 0, 1, b'a']);
    }
    amf.push(0x05);
    amf
}

/// Waits until the server closes `socket` (EOF or reset), draining what it sends.
async fn closed_by_server(mut socket: TcpStream, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match timeout(
            within.saturating_sub(started.elapsed()),
            socket.read(&mut buf),
        )
        .await
        {
            Err(_) => bail!("still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Joins `ROOM`, subscribes to its audio publication and counts (and timestamps) its packets.
/// A webrtc-rs viewer subscribed to the stream's audio and video: counts audio packets and
/// notes when each audio and each video RTP packet arrives.
async fn media_subscriber(
    server: &TestServer,
    received: Arc<AtomicU64>,
    arrivals: Arc<std::sync::Mutex<Vec<Instant>>>,
    video_arrivals: Arc<std::sync::Mutex<Vec<Instant>>>,
    stream_ids: Arc<std::sync::Mutex<Vec<String>>>,
) -> Result<(SignalClient, ClientPeer, String)> {
    let mut signal = SignalClient::connect(&server.ws_url()).await?;
    let ServerMessage::Joined { publications, .. } = signal.join(token(ROOM, "viewer")).await?
    else {
        bail!("join refused");
    };
    let mut publications = publications;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !publications.iter().any(|p| p.kind == MediaKind::Audio)
        || !publications.iter().any(|p| p.kind == MediaKind::Video)
    {
        let wait = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !wait.is_zero(),
            "no audio and video publications within 5 s"
        );
        let added = signal
            .wait_event(wait, |m| match m {
                ServerMessage::PublicationAdded { publication } => Some(publication.clone()),
                _ => None,
            })
            .await?;
        publications.push(added);
    }
    let audio = publications
        .iter()
        .find(|p| p.kind == MediaKind::Audio)
        .context("audio publication")?
        .clone();
    let video = publications
        .iter()
        .find(|p| p.kind == MediaKind::Video)
        .context("video publication")?
        .clone();
    ensure!(
        audio.codec.eq_ignore_ascii_case("audio/opus"),
        "{}",
        audio.codec
    );
    let mut peer = ClientPeer::new().await?;
    for publication in [&audio, &video] {
        let request_id = signal.next_id();
        let response = signal
            .request(ClientMessage::Subscribe {
                request_id,
                publication_id: publication.publication_id.clone(),
            })
            .await?;
        ensure!(
            matches!(response, ServerMessage::Subscribed { .. }),
            "subscribe refused: {response:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    // One offer per subscription: the server renegotiates for the second after the first answer.
    let mut answered = 0;
    while *peer.state.borrow() != webrtc::peer_connection::RTCPeerConnectionState::Connected
        || answered < 2
    {
        ensure!(
            Instant::now() < deadline,
            "subscriber not connected in 15 s"
        );
        while let Ok(candidate) = peer.candidates.try_recv() {
            signal.trickle(PeerRole::Subscriber, candidate).await?;
        }
        match signal.next_event(Duration::from_millis(50)).await {
            Ok(ServerMessage::Trickle { candidate, .. }) => peer.add_candidate(candidate).await?,
            Ok(ServerMessage::Offer { sdp }) => {
                let answer = peer.answer(sdp).await?;
                let request_id = signal.next_id();
                signal
                    .request(ClientMessage::Answer {
                        request_id,
                        sdp: answer,
                    })
                    .await?;
                answered += 1;
            }
            _ => {}
        }
    }
    let mut tracks = std::mem::replace(&mut peer.tracks, tokio::sync::mpsc::unbounded_channel().1);
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let received = Arc::clone(&received);
            let stream_id = track.stream_id().await.to_string();
            stream_ids.lock().expect("stream ids").push(stream_id);
            let is_video = track.kind().await == RtpCodecKind::Video;
            let arrivals = Arc::clone(if is_video { &video_arrivals } else { &arrivals });
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(_) = event {
                        if !is_video {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        arrivals.lock().expect("arrivals").push(Instant::now());
                    }
                }
            });
        }
    });
    Ok((signal, peer, audio.participant_id))
}

async fn wait_for_packets(received: &AtomicU64, more_than: u64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while received.load(Ordering::Relaxed) <= more_than {
        ensure!(
            Instant::now() < deadline,
            "the good stream stopped: {} packets",
            received.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rtmp_input_closes_only_its_session_and_ingest_latency() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let mut keys = StreamKeys::new();
    for (key, room) in [(KEY, ROOM), (HEADLESS_KEY, "rtmp-e2e-headless")] {
        let target = StreamTarget {
            room: room.into(),
            identity: "encoder".into(),
        };
        keys.add(key, target)?;
    }
    let rtmp = RtmpServer::start(
        RtmpConfig {
            listen: "127.0.0.1:0".parse()?,
            setup_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
            ..RtmpConfig::default()
        },
        keys,
        server.sfu.clone(),
    )
    .await?;
    let addr = rtmp.local_addr();

    // The good stream: sequence headers, then one AAC frame per call.
    let (config, frames) = aac_frames();
    let mut good = Publisher::connect(addr).await?;
    good.publish(KEY).await?;
    good.video(0, flv_video(true, 0, &avc_sequence_header()))
        .await?;
    good.audio(0, flv_audio(0, &config)).await?;
    let mut sent = 0u32;
    // Let the publications appear, then subscribe to the audio.
    for _ in 0..10 {
        send_frame(&mut good, &frames, sent).await?;
        sent += 1;
    }
    let received = Arc::new(AtomicU64::new(0));
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let video_arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stream_ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (_signal, _peer, encoder_id) = {
        let subscribe = media_subscriber(
            &server,
            Arc::clone(&received),
            Arc::clone(&arrivals),
            Arc::clone(&video_arrivals),
            Arc::clone(&stream_ids),
        );
        tokio::pin!(subscribe);
        loop {
            tokio::select! {
                subscribed = &mut subscribe => break subscribed?,
                () = tokio::time::sleep(Duration::from_millis(21)) => {
                    send_frame(&mut good, &frames, sent).await?;
                    sent += 1;
                }
            }
        }
    };

    // Ingest latency: one AAC message at a time; each yields at least one Opus packet.
    let mut latencies = Vec::new();
    for _ in 0..150 {
        let before = arrivals.lock().expect("arrivals").len();
        let written = Instant::now();
        send_frame(&mut good, &frames, sent).await?;
        sent += 1;
        let deadline = written + Duration::from_millis(200);
        loop {
            if let Some(&at) = arrivals.lock().expect("arrivals").get(before) {
                latencies.push(at.duration_since(written));
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    latencies.sort();
    ensure!(
        latencies.len() >= 140,
        "{} of 150 messages came out",
        latencies.len()
    );
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "INGEST_TO_EGRESS_MS audio: p50={:.2} p99={:.2} max={:.2} (RTMP AAC message written -> first RTP packet at a webrtc-rs subscriber, {} samples, debug build)",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        latencies.last().expect("samples").as_secs_f64() * 1000.0,
        latencies.len()
    );

    // The same for video: one H.264 delta frame (3000 bytes, three RTP packets) at a time,
    // after a keyframe so the subscription is forwarding.
    let video_ms = |sent: u32| sent * 1024 / 48;
    good.video(video_ms(sent), flv_video(true, 1, &avc_frame(true, 3000)))
        .await?;
    sent += 1;
    let deadline = Instant::now() + Duration::from_secs(2);
    while video_arrivals.lock().expect("arrivals").is_empty() {
        ensure!(
            Instant::now() < deadline,
            "the keyframe did not reach the viewer in 2 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut video_latencies = Vec::new();
    for _ in 0..150 {
        let before = video_arrivals.lock().expect("arrivals").len();
        let written = Instant::now();
        good.video(video_ms(sent), flv_video(false, 1, &avc_frame(false, 3000)))
            .await?;
        sent += 1;
        let deadline = written + Duration::from_millis(200);
        loop {
            if let Some(&at) = video_arrivals.lock().expect("arrivals").get(before) {
                video_latencies.push(at.duration_since(written));
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    // Lip sync: the encoder's audio and video reach the viewer as one msid stream.
    ensure!(
        *stream_ids.lock().expect("stream ids") == vec![encoder_id.clone(), encoder_id.clone()],
        "msid stream ids {:?}, expected both {encoder_id}",
        stream_ids.lock().expect("stream ids")
    );
    video_latencies.sort();
    ensure!(
        video_latencies.len() >= 140,
        "{} of 150 video messages came out",
        video_latencies.len()
    );
    let at = |q: f64| video_latencies[((video_latencies.len() - 1) as f64 * q) as usize];
    println!(
        "INGEST_TO_EGRESS_MS video: p50={:.2} p99={:.2} max={:.2} (RTMP H.264 message written -> first RTP packet at a webrtc-rs subscriber, {} samples, debug build)",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        video_latencies.last().expect("samples").as_secs_f64() * 1000.0,
        video_latencies.len()
    );

    // The good stream keeps going in the background while the bad inputs arrive.
    let streaming = tokio::spawn(async move {
        loop {
            if send_frame(&mut good, &frames, sent).await.is_err() {
                return sent;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(21)).await;
        }
    });
    let rss_before = rss_kib();

    let mut bad: Vec<(&str, TcpStream)> = Vec::new();
    let mut garbage = TcpStream::connect(addr).await?;
    garbage.write_all(&[0xff; 1537]).await?;
    bad.push(("garbage handshake", garbage));
    for (name, size) in [
        ("SetChunkSize 2147483647", 0x7fff_ffffu32),
        ("SetChunkSize 1", 1),
    ] {
        let mut socket = raw_after_handshake(addr).await?;
        socket
            .write_all(&chunks(1, 4, &size.to_be_bytes(), 128))
            .await?;
        bad.push((name, socket));
    }
    // Declares 16 MiB, sends 100 bytes, then nothing.
    let mut stalled = raw_after_handshake(addr).await?;
    stalled
        .write_all(&chunks(20, 0xff_ffff, &[0x02; 100], 128))
        .await?;
    bad.push(("declared length larger than the body (stalled)", stalled));
    // Declares 16 MiB and keeps sending.
    let mut flood = raw_after_handshake(addr).await?;
    let _ = flood
        .write_all(&chunks(20, 0xff_ffff, &vec![0x02; 200 * 1024], 128))
        .await;
    bad.push(("declared length larger than any command (flood)", flood));
    let mut deep = raw_after_handshake(addr).await?;
    let nested = nested_connect(10_000);
    deep.write_all(&chunks(20, nested.len(), &nested, 128))
        .await?;
    bad.push(("AMF nested 10000 deep", deep));

    for (name, socket) in bad {
        let took = closed_by_server(socket, Duration::from_secs(5))
            .await
            .with_context(|| format!("{name}: the server kept the connection"))?;
        let now = received.load(Ordering::Relaxed);
        wait_for_packets(&received, now + 10, Duration::from_secs(2))
            .await
            .with_context(|| format!("after {name}"))?;
        println!(
            "BAD_INPUT {name}: closed after {} ms; the good stream still flows",
            took.as_millis()
        );
    }

    let mut stranger = Publisher::connect(addr).await?;
    ensure!(
        stranger.publish("e2e-wrong-key-0123456789").await.is_err(),
        "an unknown key was accepted"
    );

    // A publisher that never sends the sequence header.
    let mut headless = Publisher::connect(addr).await?;
    headless.publish(HEADLESS_KEY).await?;
    headless
        .video(0, flv_video(true, 1, &avc_frame(true, 500)))
        .await?;
    closed_by_server(headless.socket, Duration::from_secs(5))
        .await
        .context("a stream without sequence header was kept")?;
    println!("BAD_INPUT stream without sequence header: closed");

    // A second publisher on the live key is refused; the first keeps streaming.
    let mut intruder = Publisher::connect(addr).await?;
    ensure!(
        intruder.publish(KEY).await.is_err(),
        "a second publisher on a live key was accepted"
    );

    let rss_after = rss_kib();
    println!("RSS_KIB before={rss_before} after={rss_after}");
    ensure!(
        rss_after < rss_before + 64 * 1024,
        "memory grew by {} KiB",
        rss_after - rss_before
    );
    let now = received.load(Ordering::Relaxed);
    wait_for_packets(&received, now + 10, Duration::from_secs(2)).await?;
    let stats = rtmp.stats();
    ensure!(
        stats
            .iter()
            .any(|(t, s)| t.room == ROOM && s.video_frames > 0 && s.audio_frames > 0),
        "{stats:?}"
    );
    streaming.abort();
    rtmp.shutdown().await;
    server.stop().await;
    Ok(())
}
