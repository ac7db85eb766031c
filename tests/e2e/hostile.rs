//! Hostile clients, against a real server on loopback: sockets that never speak or send half
//! a request, more connections than the caps allow, WebSockets that flood and never read, a
//! demo token asked for under a foreign `Host` header (DNS rebinding), a token not valid yet,
//! and RTMP sockets that never finish the handshake. Each must cost the attacker its own slots only:
//! a real client on another loopback address still gets in.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_sfu::ingest::{RtmpConfig, RtmpServer, StreamKeys, StreamTarget};
use sluice_signaling::accept::ConnectionLimits;
use sluice_signaling::protocol::{ClientMessage, ErrorCode, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::rtmp::Publisher;

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A TCP connection to `server` from the loopback address `local`.
async fn tcp_from(server: SocketAddr, local: IpAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(server).await.context("tcp connect")
}

/// Waits until the server closes `socket` (EOF or reset); returns what it sent before.
async fn closed_by_server(mut socket: TcpStream, within: Duration) -> Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => bail!("still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => return Ok(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends one `GET path` from `local` with `host` as the Host header (none when `None`);
/// returns the status.
async fn get_status(
    server: SocketAddr,
    local: IpAddr,
    path: &str,
    host: Option<&str>,
) -> Result<u16> {
    let mut socket = tcp_from(server, local).await?;
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\n{host}Connection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    timeout(Duration::from_secs(5), socket.read_to_end(&mut response))
        .await
        .context("no response")??;
    let status = std::str::from_utf8(&response)
        .ok()
        .and_then(|r| r.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    Ok(status)
}

async fn joins(client: &mut SignalClient, room: &str, identity: &str) -> Result<()> {
    let response = client.join(token(room, identity)).await?;
    ensure!(
        matches!(response, ServerMessage::Joined { .. }),
        "join failed: {response:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_http_connections_are_closed_at_the_header_timeout() -> Result<()> {
    init_tracing();
    let header_timeout = Duration::from_millis(500);
    let limits = ConnectionLimits {
        header_read_timeout: header_timeout,
        ..ConnectionLimits::default()
    };
    let server = TestServer::start_with_limits(|_| {}, limits).await?;
    let mut idle = Vec::new();
    for i in 0..40 {
        let mut socket = tcp_from(server.addr, loopback(1)).await?;
        if i % 4 == 0 {
            socket
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await?;
        }
        idle.push(socket);
    }
    let opened = Instant::now();

    // While they are held, a real client joins.
    let mut client = SignalClient::connect(&server.ws_url()).await?;
    joins(&mut client, "held", "alice").await?;

    // Every one of them is closed by the server at the header timeout.
    let closes = idle
        .into_iter()
        .map(|socket| closed_by_server(socket, header_timeout + Duration::from_secs(2)));
    for closed in futures::future::join_all(closes).await {
        closed?;
    }
    eprintln!(
        "40 idle sockets closed {:?} after they were opened",
        opened.elapsed()
    );

    // The WebSocket outlived the header timeout: an upgraded connection is not subject to it.
    ensure!(opened.elapsed() > header_timeout);
    let request_id = client.next_id();
    let response = client
        .request(ClientMessage::Unsubscribe {
            request_id,
            subscription_id: "SU1".into(),
        })
        .await?;
    ensure!(
        matches!(
            response,
            ServerMessage::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "the joined client after the timeout: {response:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_caps_are_refused_and_other_addresses_still_join() -> Result<()> {
    init_tracing();
    let limits = ConnectionLimits {
        max_connections: 12,
        max_connections_per_address: 8,
        ..ConnectionLimits::default()
    };
    let server = TestServer::start_with_limits(|_| {}, limits).await?;
    let refused = async |from: IpAddr| -> Result<()> {
        let socket = tcp_from(server.addr, from).await?;
        let answer = closed_by_server(socket, Duration::from_secs(2)).await?;
        ensure!(
            answer.starts_with(b"HTTP/1.1 503"),
            "refused connection answered {:?}",
            String::from_utf8_lossy(&answer)
        );
        Ok(())
    };

    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tcp_from(server.addr, loopback(1)).await?);
    }
    // A ninth from the same address is refused at once...
    refused(loopback(1))
        .await
        .context("past the per-address cap")?;
    // ...while a client from another address joins.
    let mut client = SignalClient::connect_from(&server.ws_url(), server.addr, loopback(2)).await?;
    joins(&mut client, "caps", "alice").await?;

    // 8 + 1 (the WebSocket counts while it lives) + 3 reach the total.
    for _ in 0..3 {
        held.push(tcp_from(server.addr, loopback(3)).await?);
    }
    refused(loopback(4)).await.context("past the total cap")?;

    // A closed connection frees its place.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match get_status(server.addr, loopback(4), "/healthz", Some("127.0.0.1")).await {
            Ok(200) => break,
            other if Instant::now() > deadline => {
                bail!("no place freed after a connection closed: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn demo_tokens_need_a_loopback_host_header() -> Result<()> {
    init_tracing();
    // No secret: demo mode, where /dev/token exists.
    let server = TestServer::start_with(|c| c.secret = None).await?;
    let port = server.addr.port();
    let path = "/dev/token?room=lobby&identity=alice";
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
        format!("127.1.2.3:{port}"),
        format!("localhost:{port}"),
        "LocalHost".to_owned(),
        format!("[::1]:{port}"),
        "[::1]".to_owned(),
    ] {
        let status = get_status(server.addr, loopback(1), path, Some(&host)).await?;
        ensure!(status == 200, "Host {host}: {status}");
    }
    // What a DNS-rebinding page sends: its own name, resolved to 127.0.0.1.
    for host in [
        format!("rebind.example:{port}"),
        "rebind.example".to_owned(),
        format!("localhost.rebind.example:{port}"),
        format!("127.0.0.1.rebind.example:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::ffff:7f00:1]:{port}"),
        format!("127.0.0.1:{port}@rebind.example"),
        String::new(),
    ] {
        let status = get_status(server.addr, loopback(1), path, Some(&host)).await?;
        ensure!(status == 403, "Host {host:?}: {status}");
    }
    let status = get_status(server.addr, loopback(1), path, None).await?;
    ensure!(status != 200, "no Host header: {status}");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let not_yet = |nbf: u64| {
        let claims = serde_json::json!({
            "sub": "alice", "room": "later", "identity": "alice",
            "canPublish": true, "canSubscribe": true,
            "iat": now, "nbf": nbf, "exp": now + 3600,
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(sluice_e2e::SECRET.as_bytes()),
        )
    };
    let mut client = SignalClient::connect(&server.ws_url()).await?;
    let response = client.join(not_yet(now + 600)?).await?;
    match &response {
        ServerMessage::Error {
            code: ErrorCode::Unauthorized,
            message,
            ..
        } if message.contains("not valid yet") => {}
        other => bail!("a token valid in ten minutes: {other:?}"),
    }
    // The same token once its time has come (clock skew within the leeway included).
    let response = client.join(not_yet(now + 2)?).await?;
    ensure!(
        matches!(response, ServerMessage::Joined { .. }),
        "a token valid now: {response:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_sockets_that_never_handshake_cannot_lock_out_an_encoder() -> Result<()> {
    init_tracing();
    const KEY: &str = "e2e-lockout-stream-key-0123";
    let server = TestServer::start().await?;
    let mut keys = StreamKeys::new();
    keys.add(
        KEY,
        StreamTarget {
            room: "lockout".into(),
            identity: "encoder".into(),
        },
    )?;
    let config = RtmpConfig {
        listen: "127.0.0.1:0".parse()?,
        ..RtmpConfig::default()
    };
    let slots = config.max_connections;
    let rtmp = RtmpServer::start(config, keys, server.sfu.clone()).await?;
    let addr = rtmp.local_addr();

    // One address opens more silent sockets than the server has connection slots.
    let mut idle = Vec::new();
    for _ in 0..slots + 4 {
        idle.push(tcp_from(addr, loopback(1)).await?);
    }
    let opened = Instant::now();

    // An encoder on another address still publishes.
    let mut encoder = Publisher::connect_from(addr, loopback(2))
        .await
        .context("encoder connect")?;
    encoder.publish(KEY).await.context("encoder publish")?;

    // The silent sockets are all closed: those past the per-address limit at once, the others
    // at the handshake deadline, well before the setup timeout.
    let closes = idle.into_iter().map(|socket| async {
        closed_by_server(socket, Duration::from_secs(6)).await?;
        Ok::<_, anyhow::Error>(opened.elapsed())
    });
    let mut closed_at = Vec::new();
    for closed in futures::future::join_all(closes).await {
        closed_at.push(closed?);
    }
    closed_at.sort();
    eprintln!(
        "{} silent RTMP sockets: {} closed within 1 s, the last after {:?}",
        closed_at.len(),
        closed_at
            .iter()
            .filter(|t| **t < Duration::from_secs(1))
            .count(),
        closed_at.last()
    );
    ensure!(
        closed_at[slots - 1] < Duration::from_secs(1),
        "sockets past the per-address limit held: {closed_at:?}"
    );
    ensure!(
        closed_at[slots + 3] < RtmpConfig::default().setup_timeout / 2,
        "sockets still in the handshake held too long: {closed_at:?}"
    );
    rtmp.shutdown().await;
    server.stop().await;
    Ok(())
}

/// Open file descriptors and resident memory of this process (the server runs in it).
fn fds_and_rss() -> (usize, String) {
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_owned())
        })
        .unwrap_or_default();
    (fds, rss)
}

/// A WebSocket from `local` that upgrades, then sends `frames` messages of an unknown type
/// named by 60,000 characters (the server's error answer quotes it: 60 KB back for each) and
/// never reads a byte of the answers, which fill the socket buffers. Returns once the server
/// stopped reading or closed it.
async fn never_reading_flood(server: SocketAddr, local: IpAddr, frames: u32) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    socket.set_recv_buffer_size(4096)?;
    let mut socket = socket.connect(server).await?;
    socket
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await?;
    // Read the upgrade response only (byte by byte, so no answer is read with it).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        timeout(Duration::from_secs(5), socket.read_exact(&mut byte))
            .await
            .context("no upgrade response")??;
        head.push(byte[0]);
    }
    ensure!(
        head.starts_with(b"HTTP/1.1 101"),
        "upgrade refused: {:?}",
        String::from_utf8_lossy(&head)
    );
    let message = format!(r#"{{"type":"{}","requestId":1}}"#, "x".repeat(60_000));
    let len = u16::try_from(message.len())?;
    // A masked text frame (mask key 0: the payload stays as is), 16-bit length.
    let mut frame = vec![0x81, 0x80 | 126];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(message.as_bytes());
    for _ in 0..frames {
        match timeout(Duration::from_secs(1), socket.write_all(&frame)).await {
            Ok(Ok(())) => {}
            // The server already closed it (a reset, its queue for us being full).
            Ok(Err(_)) => break,
            // The server stopped reading: its writes to us are stuck.
            Err(_) => break,
        }
    }
    Ok(socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_that_never_read_are_closed_and_others_are_served() -> Result<()> {
    init_tracing();
    const FLOODERS: usize = 20;
    let server = TestServer::start().await?;
    let mut client = SignalClient::connect_from(&server.ws_url(), server.addr, loopback(8)).await?;
    joins(&mut client, "slow", "alice").await?;
    let baseline = fds_and_rss();
    let started = Instant::now();
    let floods = (0..FLOODERS).map(|_| never_reading_flood(server.addr, loopback(7), 200));
    let mut flooders = Vec::new();
    for flood in futures::future::join_all(floods).await {
        flooders.push(flood?);
    }
    let flooding = fds_and_rss();
    eprintln!(
        "{FLOODERS} never-reading floods written or refused after {:?}",
        started.elapsed()
    );

    // Meanwhile the other client is served.
    let request_id = client.next_id();
    let response = client.request(ClientMessage::Ping { request_id }).await?;
    ensure!(
        response == ServerMessage::Ok { request_id },
        "ping: {response:?}"
    );

    // The server drops its end of every flooder (they never read, so they cannot see it);
    // the test still holds its own ends.
    let server_held = || fds_and_rss().0.saturating_sub(baseline.0 + FLOODERS);
    let deadline = Instant::now() + Duration::from_secs(15);
    while server_held() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = fds_and_rss();
    eprintln!(
        "fds/RSS: baseline {baseline:?}, {FLOODERS} flooders {flooding:?}, \
         {:?} later {after:?}; server-side sockets still held: {}",
        started.elapsed(),
        server_held()
    );
    ensure!(
        server_held() == 0,
        "{} never-reading sockets still held by the server",
        server_held()
    );
    let request_id = client.next_id();
    let response = client.request(ClientMessage::Ping { request_id }).await?;
    ensure!(
        response == ServerMessage::Ok { request_id },
        "ping: {response:?}"
    );
    // What the server had queued for them is gone too: a flooder that reads now gets at most
    // the outbound bound (1 MiB) and its own buffer, then the end (FIN, or a reset when the
    // server dropped it with data unsent or unread) — not megabytes left in the kernel.
    let mut ends = Vec::new();
    for mut flooder in flooders {
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0;
        let end = loop {
            match timeout(Duration::from_secs(2), flooder.read(&mut buf)).await {
                Err(_) => bail!("a never-reading socket still open after {read} bytes"),
                Ok(Ok(0)) => break "closed",
                Ok(Ok(n)) => read += n,
                Ok(Err(_)) => break "reset",
            }
        };
        ensure!(
            read <= 1024 * 1024 + 64 * 1024,
            "a never-reading socket still got {read} bytes"
        );
        ends.push((end, read));
    }
    eprintln!("flooders' ends (how, bytes read): {ends:?}");
    server.stop().await;
    Ok(())
}
