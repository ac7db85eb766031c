//! Shared helpers for the end-to-end tests: an in-process Sluice server on loopback, a
//! signaling client over a real WebSocket, and a webrtc-rs client peer (an independent
//! WebRTC stack doing real ICE/DTLS/SRTP against the server).
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use sluice_sfu::runtime::{Sfu, SfuConfig};
use sluice_signaling::accept::ConnectionLimits;
use sluice_signaling::auth::{Grants, TokenAuthority};
use sluice_signaling::config::Config;
use sluice_signaling::protocol::{ClientMessage, IceCandidate, PeerRole, ServerMessage};
use sluice_signaling::server::Server;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "e2e-test-secret-0123456789abcdef";

/// A Sluice server in this process, on an ephemeral loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub sfu: Sfu,
    server: Option<Server>,
}

impl TestServer {
    pub async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        Self::start_with_sfu(|config, _| adjust(config)).await
    }

    /// Like [`start_with`](Self::start_with), and the media server's own config too (its
    /// shards' sockets, advertised address and count come from the adjusted `Config`).
    pub async fn start_with_sfu(adjust: impl FnOnce(&mut Config, &mut SfuConfig)) -> Result<Self> {
        Self::start_with_sfu_and_limits(adjust, None).await
    }

    /// Like [`start_with`](Self::start_with), with the HTTP accept loop's limits set by the test.
    pub async fn start_with_limits(
        adjust: impl FnOnce(&mut Config),
        limits: ConnectionLimits,
    ) -> Result<Self> {
        Self::start_with_sfu_and_limits(|config, _| adjust(config), Some(limits)).await
    }

    async fn start_with_sfu_and_limits(
        adjust: impl FnOnce(&mut Config, &mut SfuConfig),
        limits: Option<ConnectionLimits>,
    ) -> Result<Self> {
        let mut config = Config {
            listen: "127.0.0.1:0".parse()?,
            secret: Some(SECRET.into()),
            public_ip: Some("127.0.0.1".parse()?),
            ..Config::default()
        };
        let mut sfu_config = SfuConfig::default();
        adjust(&mut config, &mut sfu_config);
        // The configured limits (tests set them on `Config`), the test's room config with the
        // configured stall timeout.
        let room = sluice_sfu::core::RoomConfig {
            publication_stall_timeout: config.limits.room().publication_stall_timeout,
            ..sfu_config.shard.room
        };
        let sfu = sluice_signaling::media_plane::start_sfu(
            &config,
            SfuConfig {
                limits: config.limits.sfu(),
                admission: config.limits.admission(),
                shard: sluice_sfu::shard::ShardConfig {
                    room,
                    data: config.limits.data(),
                    ..sfu_config.shard
                },
                ..sfu_config
            },
        )?;
        let limits = limits.unwrap_or_else(|| config.limits.connections());
        let server = Server::start_with_limits(config, sfu.clone(), limits).await?;
        Ok(Self {
            addr: server.local_addr(),
            sfu,
            server: Some(server),
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn stop(self) {
        self.drain(Duration::from_secs(2)).await;
    }

    /// Starts the server's drain without waiting (see `Server::begin_drain`).
    pub fn begin_drain(&self) {
        if let Some(server) = &self.server {
            server.begin_drain();
        }
    }

    /// Drains and stops the server within `deadline` (see `Server::shutdown`).
    pub async fn drain(mut self, deadline: Duration) {
        if let Some(server) = self.server.take() {
            server.shutdown(deadline).await;
        }
    }
}

pub fn token(room: &str, identity: &str) -> String {
    token_with(room, identity, true, true, Duration::from_secs(600))
}

pub fn token_with(
    room: &str,
    identity: &str,
    can_publish: bool,
    can_subscribe: bool,
    ttl: Duration,
) -> String {
    TokenAuthority::new(SECRET.as_bytes())
        .mint(
            &Grants {
                room: room.to_owned(),
                identity: identity.to_owned(),
                can_publish,
                can_subscribe,
                ..Grants::default()
            },
            ttl,
        )
        .expect("minting a test token")
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the server sent that was not a response we were waiting for.
#[derive(Debug)]
pub enum Received {
    Message(ServerMessage),
    /// Raw text that did not parse as a ServerMessage.
    Unparsed(String),
    Closed(Option<u16>),
}

/// A signaling client over a real WebSocket.
pub struct SignalClient {
    write: futures::stream::SplitSink<Ws, Message>,
    inbox: mpsc::UnboundedReceiver<Received>,
    pending_events: VecDeque<ServerMessage>,
    next_request_id: u32,
    reader: tokio::task::JoinHandle<()>,
    /// The connection's TCP socket, to end it without a close frame ([`Self::vanish`]).
    socket: std::net::TcpStream,
}

impl Drop for SignalClient {
    /// Dropping the client drops the TCP connection (no close frame), like a vanished peer.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl SignalClient {
    pub async fn connect(url: &str) -> Result<Self> {
        let request = url.into_client_request().context("websocket url")?;
        let host = request.uri().host().context("websocket url without host")?;
        let port = request
            .uri()
            .port_u16()
            .context("websocket url without port")?;
        let tcp = TcpStream::connect((host, port))
            .await
            .context("tcp connect")?;
        Self::over(request, tcp).await
    }

    /// Connects from the loopback address `local` (e.g. 127.0.0.2), to test per-address limits.
    pub async fn connect_from(url: &str, server: SocketAddr, local: IpAddr) -> Result<Self> {
        let request = url.into_client_request().context("websocket url")?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(local, 0))?;
        let tcp = socket.connect(server).await.context("tcp connect")?;
        Self::over(request, tcp).await
    }

    async fn over(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
        tcp: TcpStream,
    ) -> Result<Self> {
        let tcp = tcp.into_std()?;
        let socket = tcp.try_clone()?;
        let (ws, _) = tokio_tungstenite::client_async(
            request,
            MaybeTlsStream::Plain(TcpStream::from_std(tcp)?),
        )
        .await
        .context("websocket connect")?;
        let (write, mut read) = ws.split();
        let (tx, inbox) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(frame) = read.next().await {
                let item = match frame {
                    Ok(Message::Text(text)) => match serde_json::from_str(&text) {
                        Ok(message) => Received::Message(message),
                        Err(_) => Received::Unparsed(text.to_string()),
                    },
                    Ok(Message::Close(frame)) => {
                        let _ = tx.send(Received::Closed(frame.map(|f| f.code.into())));
                        return;
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if tx.send(item).is_err() {
                    return;
                }
            }
            let _ = tx.send(Received::Closed(None));
        });
        Ok(Self {
            write,
            inbox,
            pending_events: VecDeque::new(),
            next_request_id: 1,
            reader,
            socket,
        })
    }

    /// Ends the connection as a vanished peer would — no close frame, no `leave` — and waits
    /// until the server has closed its side, which it does once the session has ended (and
    /// parked the participant for a resume).
    pub async fn vanish(mut self, wait: Duration) -> Result<()> {
        self.socket
            .shutdown(std::net::Shutdown::Write)
            .context("shutting down the socket")?;
        match self.closed(wait).await? {
            None => Ok(()),
            Some(code) => bail!("the server sent a close frame ({code}) to a vanished client"),
        }
    }

    pub fn next_id(&mut self) -> u32 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    pub async fn send_raw(&mut self, frame: Message) -> Result<()> {
        self.write.send(frame).await.context("websocket send")
    }

    pub async fn send(&mut self, message: &ClientMessage) -> Result<()> {
        let text = serde_json::to_string(message)?;
        self.send_raw(Message::Text(text.into())).await
    }

    /// Sends a request and returns its response; events that arrive meanwhile are kept.
    pub async fn request(&mut self, message: ClientMessage) -> Result<ServerMessage> {
        let id = message.request_id();
        self.send(&message).await?;
        self.response_to(id).await
    }

    pub async fn response_to(&mut self, id: u32) -> Result<ServerMessage> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let received = timeout_at(deadline, self.inbox.recv())
                .await
                .with_context(|| format!("no response to request {id}"))?
                .ok_or_else(|| anyhow!("connection ended"))?;
            match received {
                Received::Message(message) if response_id(&message) == Some(id) => {
                    return Ok(message);
                }
                Received::Message(message) => self.pending_events.push_back(message),
                Received::Unparsed(text) => bail!("unparsable server frame: {text}"),
                Received::Closed(code) => bail!("closed ({code:?}) while waiting for {id}"),
            }
        }
    }

    /// The next event (a message without requestId), waiting up to `wait`.
    pub async fn next_event(&mut self, wait: Duration) -> Result<ServerMessage> {
        if let Some(event) = self.pending_events.pop_front() {
            return Ok(event);
        }
        match timeout(wait, self.inbox.recv()).await {
            Ok(Some(Received::Message(message))) => Ok(message),
            Ok(Some(other)) => bail!("expected an event, got {other:?}"),
            Ok(None) => bail!("connection ended"),
            Err(_) => bail!("no event within {wait:?}"),
        }
    }

    /// Waits for the first event matching `pick`, keeping the others for later.
    pub async fn wait_event<T>(
        &mut self,
        wait: Duration,
        mut pick: impl FnMut(&ServerMessage) -> Option<T>,
    ) -> Result<T> {
        if let Some(pos) = self.pending_events.iter().position(|m| pick(m).is_some()) {
            let message = self.pending_events.remove(pos).expect("position is valid");
            return Ok(pick(&message).expect("matched above"));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let received = timeout_at(deadline, self.inbox.recv())
                .await
                .context("no matching event in time")?
                .ok_or_else(|| anyhow!("connection ended"))?;
            match received {
                Received::Message(message) => match pick(&message) {
                    Some(found) => return Ok(found),
                    None => self.pending_events.push_back(message),
                },
                other => bail!("while waiting for an event: {other:?}"),
            }
        }
    }

    /// Waits for the server to close the connection; returns the close code.
    pub async fn closed(&mut self, wait: Duration) -> Result<Option<u16>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match timeout_at(deadline, self.inbox.recv())
                .await
                .context("connection not closed in time")?
            {
                Some(Received::Closed(code)) => return Ok(code),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// Drains events already received (used to collect trickle candidates).
    pub fn take_events(&mut self) -> Vec<ServerMessage> {
        while let Ok(received) = self.inbox.try_recv() {
            if let Received::Message(message) = received {
                self.pending_events.push_back(message);
            }
        }
        self.pending_events.drain(..).collect()
    }

    pub async fn join(&mut self, token: String) -> Result<ServerMessage> {
        let request_id = self.next_id();
        self.request(ClientMessage::Join {
            request_id,
            token,
            room: None,
        })
        .await
    }

    pub async fn trickle(&mut self, target: PeerRole, candidate: IceCandidate) -> Result<()> {
        let request_id = self.next_id();
        match self
            .request(ClientMessage::Trickle {
                request_id,
                target,
                candidate,
            })
            .await?
        {
            ServerMessage::Ok { .. } => Ok(()),
            other => bail!("trickle refused: {other:?}"),
        }
    }
}

async fn timeout_at<F: std::future::Future>(
    deadline: tokio::time::Instant,
    f: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout_at(deadline, f).await
}

pub fn response_id(message: &ServerMessage) -> Option<u32> {
    match message {
        ServerMessage::Joined { request_id, .. }
        | ServerMessage::Resumed { request_id, .. }
        | ServerMessage::Published { request_id, .. }
        | ServerMessage::Subscribed { request_id, .. }
        | ServerMessage::Ok { request_id } => Some(*request_id),
        ServerMessage::Error { request_id, .. } => *request_id,
        _ => None,
    }
}

pub mod peer;

/// Shortcut for an `Arc<dyn Fn>`-free pause used only to pace synthetic media.
pub async fn pace(interval: Duration) {
    tokio::time::sleep(interval).await;
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_TEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub type SharedLog<T> = Arc<std::sync::Mutex<Vec<T>>>;
