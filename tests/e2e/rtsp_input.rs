//! RTSP sources that are not H.264 + audio, or not RTSP at all: audio-only and video-only
//! cameras publish their one track; an H.265 camera is refused with a clear log line while its
//! audio plays; and servers answering garbage, bogus interleaved frames or an SDP without a
//! usable codec are each a log line and a retry with backoff, while a good source on the same
//! server keeps playing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use sluice_e2e::TestServer;
use sluice_sfu::ingest::{RtspConfig, RtspSources};
use sluice_signaling::protocol::MediaKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::rtsp::{Captured, Received, RtspServer, source, until, view_kinds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_and_video_only_sources_publish_their_one_track() -> Result<()> {
    sluice_e2e::init_tracing();
    let cases: [(&[&str], &[MediaKind], &str); 2] = [
        (
            &["--video", "none", "--audio", "pcmu"],
            &[MediaKind::Audio],
            "rtsp-audio-only",
        ),
        (&["--audio", "none"], &[MediaKind::Video], "rtsp-video-only"),
    ];
    for (args, kinds, room) in cases {
        let camera = RtspServer::start(args).await?;
        let server = TestServer::start().await?;
        let sources = RtspSources::start(
            RtspConfig::default(),
            vec![source(camera.url(), room, None)],
            server.sfu.clone(),
        );
        let received = Arc::new(Received::default());
        let (_signal, peer, _) = view_kinds(&server, room, kinds, Arc::clone(&received)).await?;
        until(Duration::from_secs(10), room, || {
            let audio = received.audio_packets.load(Ordering::Relaxed);
            let video = received.video_packets.load(Ordering::Relaxed);
            match kinds {
                [MediaKind::Audio] => audio >= 100 && video == 0,
                _ => video >= 60 && audio == 0,
            }
        })
        .await?;
        peer.close().await;
        sources.shutdown().await;
        server.stop().await;
    }
    Ok(())
}

/// A TCP server that answers every RTSP request with `reply(cseq)` and counts connections.
async fn fake_rtsp(reply: fn(&str) -> Vec<u8>) -> Result<(url::Url, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("rtsp://{}/cam", listener.local_addr()?).parse()?;
    let connections = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&request[..end]).into_owned();
                    request.drain(..end + 4);
                    let cseq = head
                        .lines()
                        .find_map(|l| l.strip_prefix("CSeq: "))
                        .unwrap_or("1")
                        .trim()
                        .to_owned();
                    if socket.write_all(&reply(&cseq)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((url, connections))
}

fn garbage(_: &str) -> Vec<u8> {
    (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect()
}

fn bogus_interleaved(cseq: &str) -> Vec<u8> {
    // An OK without a session, then interleaved frames with lengths past what follows.
    let mut out =
        format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n").into_bytes();
    out.extend_from_slice(b"$\x00\xff\xff\x80\x60");
    out.extend_from_slice(b"$\x07\x00\x10short");
    out
}

fn no_usable_codec(cseq: &str) -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
               m=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\na=control:track1\r\n\
               m=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\n\
               a=control:track2\r\n";
    format!(
        "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n\
         Content-Base: rtsp://127.0.0.1/cam/\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

// One thread: every task logs to this thread's subscriber.
#[tokio::test]
async fn bad_servers_are_logged_and_retried_while_a_good_source_plays() -> Result<()> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("sluice_sfu=info"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    // An H.265 camera with PCMU audio: the video is refused, the audio plays.
    let h265 = RtspServer::start(&["--video", "h265", "--audio", "pcmu"]).await?;
    let server = TestServer::start().await?;
    let mut bad = Vec::new();
    for (name, reply) in [
        ("garbage", garbage as fn(&str) -> Vec<u8>),
        ("interleaved", bogus_interleaved),
        ("sdp", no_usable_codec),
    ] {
        let (url, connections) = fake_rtsp(reply).await?;
        bad.push((
            name,
            connections,
            source(url, &format!("rtsp-bad-{name}"), None),
        ));
    }
    let config = RtspConfig {
        backoff_first: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        ..RtspConfig::default()
    };
    let mut all = vec![source(h265.url(), "rtsp-h265", None)];
    all.extend(bad.iter().map(|(_, _, source)| source.clone()));
    let sources = RtspSources::start(config, all, server.sfu.clone());

    let received = Arc::new(Received::default());
    let (_signal, peer, _) = view_kinds(
        &server,
        "rtsp-h265",
        &[MediaKind::Audio],
        Arc::clone(&received),
    )
    .await?;
    // Each bad server is tried again and again (100, 200, 400, 400 … ms apart).
    until(
        Duration::from_secs(10),
        "retries of every bad server",
        || {
            bad.iter()
                .all(|(_, connections, _)| connections.load(Ordering::Relaxed) >= 4)
        },
    )
    .await?;
    until(Duration::from_secs(5), "the H.265 camera's audio", || {
        received.audio_packets.load(Ordering::Relaxed) >= 100
    })
    .await?;
    let log = captured.text();
    anyhow::ensure!(
        log.contains("H.265 video refused"),
        "no H.265 refusal logged"
    );
    anyhow::ensure!(
        log.contains("no stream Sluice can play (H.264 video, AAC or G.711 audio) among: video/h265, application/vnd.onvif.metadata"),
        "no SDP refusal logged"
    );
    for (name, _, _) in &bad {
        let room = format!("room=rtsp-bad-{name}");
        anyhow::ensure!(
            log.lines()
                .any(|l| l.contains(&room) && l.contains("rtsp source unavailable; retrying")),
            "{name}: no retry logged"
        );
    }
    anyhow::ensure!(!log.contains("panicked"), "a panic was caught: {log}");
    anyhow::ensure!(
        sources.playing() == 1,
        "only the H.265 camera's audio plays"
    );
    peer.close().await;
    sources.shutdown().await;
    server.stop().await;
    Ok(())
}
