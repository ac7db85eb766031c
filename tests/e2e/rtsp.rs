//! RTSP ingest against a real RTSP server: GStreamer's gst-rtsp-server (tests/rtsp/serve.py)
//! serves a test pattern and a tone on loopback; Sluice pulls it and a webrtc-rs subscriber
//! must receive H.264 starting at a keyframe and Opus audio, for H.264 + AAC (TCP-interleaved)
//! and H.264 + PCMU (UDP).
//! A Digest-protected server plays with the right credentials, and with wrong ones Sluice
//! logs why and retries with a growing delay.
//!
//! The server needs `gir1.2-gst-rtsp-server-1.0`, `python3-gi` and GStreamer's base, good,
//! ugly and libav plugins (scripts/test.sh installs them).

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sluice_e2e::peer::ClientPeer;
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_sfu::ingest::{
    RtspConfig, RtspCredentials, RtspSource, RtspSources, RtspTransport, StreamTarget,
};
use sluice_signaling::protocol::{
    ClientMessage, MediaKind, PeerRole, PublicationInfo, ServerMessage,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

/// A gst-rtsp-server process serving `rtsp://127.0.0.1:PORT/cam`; killed on drop.
pub(crate) struct RtspServer {
    pub(crate) port: u16,
    _child: Child,
}

impl RtspServer {
    /// Starts tests/rtsp/serve.py with `args` (e.g. `["--audio", "pcmu"]`) on a free port.
    pub(crate) async fn start(args: &[&str]) -> Result<Self> {
        Self::start_on(0, args).await
    }

    /// Starts tests/rtsp/serve.py on `port` (0: a free one), e.g. again on the port of a
    /// camera that went away.
    pub(crate) async fn start_on(port: u16, args: &[&str]) -> Result<Self> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/rtsp/serve.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting tests/rtsp/serve.py (GStreamer RTSP server)")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the RTSP server did not start in 10 s")??
            .context("the RTSP server exited before it was ready")?;
        let port = line
            .strip_prefix("ready ")
            .context("unexpected first line")?
            .parse()?;
        Ok(Self {
            port,
            _child: child,
        })
    }

    pub(crate) fn url(&self) -> url::Url {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
            .parse()
            .expect("a valid URL")
    }
}

/// What a webrtc-rs viewer of the camera's room received.
#[derive(Default)]
pub(crate) struct Received {
    pub(crate) audio_packets: AtomicU64,
    pub(crate) video_packets: AtomicU64,
    /// A STAP-A carrying the SPS arrived (the H.264 stream is decodable from there).
    pub(crate) keyframes: AtomicU64,
}

/// Joins `room`, waits for its audio and video publications, subscribes to both and counts
/// what arrives.
async fn view(
    server: &TestServer,
    room: &str,
    received: Arc<Received>,
) -> Result<(SignalClient, ClientPeer, Vec<PublicationInfo>)> {
    view_kinds(
        server,
        room,
        &[MediaKind::Audio, MediaKind::Video],
        received,
    )
    .await
}

/// Like [`view`], for a room whose source publishes exactly `kinds`: waits for them, then
/// checks no other track is published 1 s later.
pub(crate) async fn view_kinds(
    server: &TestServer,
    room: &str,
    kinds: &[MediaKind],
    received: Arc<Received>,
) -> Result<(SignalClient, ClientPeer, Vec<PublicationInfo>)> {
    let mut signal = SignalClient::connect(&server.ws_url()).await?;
    let ServerMessage::Joined { publications, .. } = signal.join(token(room, "viewer")).await?
    else {
        bail!("join refused");
    };
    let mut publications = publications;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !kinds
        .iter()
        .all(|kind| publications.iter().any(|p| p.kind == *kind))
    {
        let wait = deadline.saturating_duration_since(Instant::now());
        ensure!(!wait.is_zero(), "no {kinds:?} publications in 15 s");
        let added = signal
            .wait_event(wait, |m| match m {
                ServerMessage::PublicationAdded { publication } => Some(publication.clone()),
                _ => None,
            })
            .await?;
        publications.push(added);
    }
    if let Ok(extra) = signal
        .wait_event(Duration::from_secs(1), |m| match m {
            ServerMessage::PublicationAdded { publication } => Some(publication.clone()),
            _ => None,
        })
        .await
    {
        bail!("a track the source does not send was published: {extra:?}");
    }
    ensure!(publications.len() == kinds.len(), "{publications:?}");
    let mut peer = ClientPeer::new().await?;
    for publication in &publications {
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
    let mut answered = 0;
    while *peer.state.borrow() != webrtc::peer_connection::RTCPeerConnectionState::Connected
        || answered < publications.len()
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
            let is_video = track.kind().await == RtpCodecKind::Video;
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    let TrackRemoteEvent::OnRtpPacket(packet) = event else {
                        continue;
                    };
                    if !is_video {
                        received.audio_packets.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    received.video_packets.fetch_add(1, Ordering::Relaxed);
                    // STAP-A (24) whose first unit (after its 2-byte size) is an SPS (7).
                    let payload = &packet.payload;
                    if payload.len() > 3 && payload[0] & 0x1f == 24 && payload[3] & 0x1f == 7 {
                        received.keyframes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    Ok((signal, peer, publications))
}

pub(crate) fn source(
    url: url::Url,
    room: &str,
    credentials: Option<RtspCredentials>,
) -> RtspSource {
    RtspSource {
        url,
        target: StreamTarget {
            room: room.into(),
            identity: "camera".into(),
        },
        credentials,
        transport: RtspTransport::Tcp,
    }
}

/// Waits until `done` holds, polling every 20 ms, for at most `within`.
pub(crate) async fn until(within: Duration, what: &str, done: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + within;
    while !done() {
        ensure!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_with_aac_over_tcp_and_with_pcmu_over_udp_reach_a_webrtc_subscriber() -> Result<()> {
    init_tracing();
    // AAC over TCP (interleaved), PCMU over UDP.
    let cases = [
        ("aac", "rtsp-aac", RtspTransport::Tcp),
        ("pcmu", "rtsp-pcmu", RtspTransport::Udp),
    ];
    for (audio, room, transport) in cases {
        let camera = RtspServer::start(&["--audio", audio]).await?;
        let server = TestServer::start().await?;
        let source = RtspSource {
            transport,
            ..source(camera.url(), room, None)
        };
        let sources = RtspSources::start(RtspConfig::default(), vec![source], server.sfu.clone());
        let received = Arc::new(Received::default());
        let (_signal, peer, publications) = view(&server, room, Arc::clone(&received)).await?;
        for publication in &publications {
            let expected = match publication.kind {
                MediaKind::Audio => ("audio/opus", "rtsp audio"),
                MediaKind::Video => ("video/h264", "rtsp video"),
            };
            ensure!(
                publication.codec.eq_ignore_ascii_case(expected.0)
                    && publication.name.as_deref() == Some(expected.1),
                "{audio}: {publication:?}"
            );
        }
        // Two seconds of media: 100 Opus packets at 20 ms, 60 frames of video and a keyframe
        // (the subscriber starts at one, the GOP is 2 s).
        until(Duration::from_secs(10), &format!("{audio}: media"), || {
            received.audio_packets.load(Ordering::Relaxed) >= 100
                && received.video_packets.load(Ordering::Relaxed) >= 60
                && received.keyframes.load(Ordering::Relaxed) >= 1
        })
        .await?;
        ensure!(sources.playing() == 1, "{audio}: the source is playing");
        peer.close().await;
        sources.shutdown().await;
        server.stop().await;
    }
    Ok(())
}

/// What the server under test logged.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

// One thread: every task logs to this thread's subscriber.
#[tokio::test]
async fn digest_auth_plays_with_the_right_credentials_and_retries_on_wrong_ones() -> Result<()> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("sluice_sfu=info"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let camera = RtspServer::start(&[
        "--audio",
        "pcmu",
        "--user",
        "viewer",
        "--password",
        "s3cret-pass",
        "--auth",
        "digest",
    ])
    .await?;
    let server = TestServer::start().await?;
    let credentials = |password: &str| {
        Some(RtspCredentials {
            username: "viewer".into(),
            password: password.into(),
        })
    };
    let config = RtspConfig {
        backoff_first: Duration::from_millis(200),
        backoff_max: Duration::from_millis(800),
        ..RtspConfig::default()
    };
    let right = RtspSources::start(
        config.clone(),
        vec![source(
            camera.url(),
            "rtsp-auth",
            credentials("s3cret-pass"),
        )],
        server.sfu.clone(),
    );
    let wrong = RtspSources::start(
        config,
        vec![source(
            camera.url(),
            "rtsp-auth-wrong",
            credentials("wrong-pass"),
        )],
        server.sfu.clone(),
    );
    let received = Arc::new(Received::default());
    let (_signal, peer, _) = view(&server, "rtsp-auth", Arc::clone(&received)).await?;
    until(Duration::from_secs(10), "authenticated media", || {
        received.video_packets.load(Ordering::Relaxed) >= 30
            && received.audio_packets.load(Ordering::Relaxed) >= 50
    })
    .await?;
    // The wrong password: a clear reason, retried after 200, 400, 800, 800 … ms.
    until(Duration::from_secs(10), "three refusals logged", || {
        captured.text().matches("refused the credentials").count() >= 3
    })
    .await?;
    let log = captured.text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("refused the credentials"))
        .collect();
    for (line, delay) in
        refusals
            .iter()
            .zip(["retry_in_ms=200", "retry_in_ms=400", "retry_in_ms=800"])
    {
        ensure!(
            line.contains(delay) && line.contains("rtsp-auth-wrong"),
            "expected {delay} for the wrong source: {line}"
        );
    }
    ensure!(
        !log.contains("s3cret-pass") && !log.contains("wrong-pass"),
        "a password was logged"
    );
    ensure!(wrong.playing() == 0 && right.playing() == 1);
    peer.close().await;
    right.shutdown().await;
    wrong.shutdown().await;
    server.stop().await;
    Ok(())
}
