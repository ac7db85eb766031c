//! Operations over real HTTP and WebSocket: `/metrics` follows a client that joins and
//! publishes, `/readyz` turns 503 when the server drains while `/healthz` stays 200, and a
//! drain closes clients with 1001 (going away), refuses new ones and ends within its deadline;
//! `/readyz` asks the shards and `/metrics` shows their counters.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sluice_e2e::peer::{ClientPeer, VP8};
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_sfu::transport::negotiated_codecs;
use sluice_signaling::protocol::{
    ClientMessage, MediaKind, PeerRole, ServerMessage, TrackInfo, TrackSource,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use webrtc::media_stream::track_local::TrackLocal;

use crate::synthetic::video_packet;

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(15);

/// One `GET path`; the status and the body.
async fn get(server: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut socket = TcpStream::connect(server).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    timeout(WAIT, socket.read_to_end(&mut response))
        .await
        .context("no response")??;
    let response = String::from_utf8(response).context("response is not UTF-8")?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of the sample named exactly `name` (labels included) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(server: SocketAddr) -> Result<String> {
    let (status, body) = get(server, "/metrics").await?;
    ensure!(status == 200, "/metrics answered {status}");
    Ok(body)
}

/// Joins, publishes one VP8 track from a webrtc-rs peer and waits until its connection is up.
pub(crate) async fn publish_video(server: &TestServer) -> Result<(SignalClient, ClientPeer)> {
    let mut signal = SignalClient::connect(&server.ws_url()).await?;
    signal.join(token("ops", "publisher")).await?;
    let peer = ClientPeer::new().await?;
    let video = peer.add_send_track(VP8, 0x1111).await?;
    let offer = peer.offer().await?;
    let mid = negotiated_codecs(&offer)
        .into_iter()
        .find(|(_, c)| c.mime_type.eq_ignore_ascii_case(VP8))
        .map(|(mid, _)| mid)
        .context("offered video track missing")?;
    let request_id = signal.next_id();
    let published = signal
        .request(ClientMessage::Publish {
            request_id,
            sdp: offer,
            tracks: vec![TrackInfo {
                mid,
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                name: None,
                rids: None,
            }],
        })
        .await?;
    let ServerMessage::Published { sdp, .. } = published else {
        bail!("publish failed: {published:?}");
    };
    peer.apply_answer(sdp).await?;
    let mut peer = peer;
    let deadline = Instant::now() + WAIT;
    while *peer.state.borrow() != webrtc::peer_connection::RTCPeerConnectionState::Connected {
        ensure!(Instant::now() < deadline, "publisher did not connect");
        while let Ok(candidate) = peer.candidates.try_recv() {
            signal.trickle(PeerRole::Publisher, candidate).await?;
        }
        if let Ok(ServerMessage::Trickle { candidate, .. }) =
            signal.next_event(Duration::from_millis(50)).await
        {
            peer.add_candidate(candidate).await?;
        }
    }
    // Media, paced, in the background for as long as the test runs.
    tokio::spawn(async move {
        for index in 0..1000 {
            if video.write_rtp(video_packet(index, 1, 1000)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    Ok((signal, peer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_client_that_joins_and_publishes() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let idle = scrape(server.addr).await?;
    ensure!(sample(&idle, "sluice_rooms") == Some(0.0), "{idle}");
    ensure!(sample(&idle, "sluice_participants") == Some(0.0), "{idle}");
    ensure!(
        sample(&idle, "sluice_packets_in_total") == Some(0.0),
        "{idle}"
    );
    ensure!(
        sample(&idle, "sluice_process_resident_memory_bytes").is_some_and(|rss| rss > 0.0),
        "{idle}"
    );

    let (mut signal, peer) = publish_video(&server).await?;
    // The packets reach the room's core while we poll; every scrape is a fresh reading.
    let deadline = Instant::now() + WAIT;
    let busy = loop {
        let text = scrape(server.addr).await?;
        if sample(&text, "sluice_packets_in_total").is_some_and(|n| n >= 10.0) {
            break text;
        }
        ensure!(Instant::now() < deadline, "packets never counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(sample(&busy, "sluice_rooms") == Some(1.0), "{busy}");
    ensure!(sample(&busy, "sluice_participants") == Some(1.0), "{busy}");
    ensure!(sample(&busy, "sluice_publications") == Some(1.0), "{busy}");
    ensure!(
        sample(&busy, "sluice_websocket_sessions") == Some(1.0),
        "{busy}"
    );
    ensure!(
        sample(&busy, "sluice_bytes_in_total").is_some_and(|bytes| bytes >= 9000.0),
        "{busy}"
    );

    // Once the room has closed, its counts stay in the totals.
    let counted = sample(&busy, "sluice_packets_in_total").unwrap_or_default();
    let request_id = signal.next_id();
    signal.request(ClientMessage::Leave { request_id }).await?;
    peer.close().await;
    let deadline = Instant::now() + WAIT;
    let after = loop {
        let stats = server.sfu.stats().await;
        if stats.rooms == 0 {
            break stats;
        }
        ensure!(
            Instant::now() < deadline,
            "the room never closed: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(
        after.participants == 0 && after.media.packets_in as f64 >= counted,
        "after the room closed: {after:?}, {counted} packets counted before"
    );
    let text = scrape(server.addr).await?;
    ensure!(sample(&text, "sluice_participants") == Some(0.0), "{text}");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn metrics_can_be_turned_off() -> Result<()> {
    init_tracing();
    let server = TestServer::start_with(|c| c.metrics = false).await?;
    let (status, _) = get(server.addr, "/metrics").await?;
    ensure!(status == 404, "/metrics with metrics off answered {status}");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn readyz_turns_503_when_the_server_drains() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    ensure!(get(server.addr, "/readyz").await? == (200, "ready".to_owned()));
    let mut client = SignalClient::connect(&server.ws_url()).await?;
    client.join(token("ops", "viewer")).await?;

    server.begin_drain();
    let code = client.closed(WAIT).await?;
    ensure!(
        code == Some(1001),
        "expected close 1001 (going away), got {code:?}"
    );
    let (status, body) = get(server.addr, "/readyz").await?;
    ensure!(
        status == 503 && body == "draining",
        "/readyz: {status} {body}"
    );
    // Still alive, still scraped.
    ensure!(get(server.addr, "/healthz").await?.0 == 200);
    let metrics = scrape(server.addr).await?;
    ensure!(
        sample(&metrics, "sluice_draining") == Some(1.0),
        "{metrics}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_shards_are_ready_and_export_their_counters() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    ensure!(get(server.addr, "/readyz").await? == (200, "ready".to_owned()));
    let metrics = scrape(server.addr).await?;
    ensure!(
        sample(&metrics, "sluice_shard_datagrams_in_total") == Some(0.0),
        "{metrics}"
    );
    ensure!(
        sample(&metrics, "sluice_shard_peers") == Some(0.0),
        "{metrics}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_drain_moves_clients_away_and_ends_within_its_deadline() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let mut joined = SignalClient::connect(&server.ws_url()).await?;
    joined.join(token("ops", "joined")).await?;
    let mut waiting = SignalClient::connect(&server.ws_url()).await?;
    // A client stuck halfway through its request headers: the HTTP connection cannot finish
    // gracefully before its header-read timeout (10 s), longer than the deadline.
    let mut stuck = TcpStream::connect(server.addr).await?;
    stuck
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await?;

    server.begin_drain();
    // New clients are sent elsewhere while the HTTP listener still answers.
    let refused = SignalClient::connect(&server.ws_url()).await;
    ensure!(
        refused
            .as_ref()
            .err()
            .is_some_and(|e| format!("{e:#}").contains("503")),
        "a WebSocket during the drain: {:?}",
        refused.map(|_| ())
    );
    for client in [&mut joined, &mut waiting] {
        let code = client.closed(WAIT).await?;
        ensure!(
            code == Some(1001),
            "expected close 1001 (going away), got {code:?}"
        );
    }

    let deadline = Duration::from_secs(2);
    let started = Instant::now();
    timeout(WAIT, server.drain(deadline))
        .await
        .context("the drain did not end")?;
    let took = started.elapsed();
    ensure!(
        took < deadline + Duration::from_millis(500),
        "the drain took {took:?}, over its {deadline:?} deadline"
    );
    drop(stuck);
    Ok(())
}
