//! The HTTP side: `/ws` (signaling), WHIP and WHEP ([`crate::whip`]), the server API
//! ([`crate::api`]), `/healthz`, `/readyz`,
//! `/metrics`, the demo pages, the browser SDK as an ES module ([`SDK_PATH`]) and, in demo mode
//! only, a loopback-only token endpoint; and the drain that ends it ([`Server::shutdown`]).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use sluice_sfu::ingest::{RtspConfig, RtspSources};
use sluice_sfu::runtime::Sfu;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite;
use tracing::{debug, warn};

use crate::accept::{self, ConnectionLimits, ResetOnClose};
use crate::auth::{Grants, TokenAuthority};
use crate::cluster::{Cluster, ClusterStart, NodeAddresses};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::resume::Resumable;
use crate::session::{self, Inbound, Outbound, SessionContext, SessionCounters};
use crate::whip::WhipState;

/// How the server got its token secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMode {
    /// From configuration: tokens are minted elsewhere (`sluice token`, your backend).
    Configured,
    /// Generated at start: the demo page may fetch tokens from loopback.
    Generated,
}

#[derive(Clone)]
struct AppState {
    config: Arc<Config>,
    session: SessionContext,
    secret_mode: SecretMode,
    /// `None` with `--metrics off`.
    metrics: Option<Arc<Metrics>>,
    /// True once the server drains: `/readyz` and `/ws` answer 503.
    draining: watch::Receiver<bool>,
    /// `None` without `--redis`.
    cluster: Option<Cluster>,
}

/// A running server; dropped or [`Server::shutdown`] stops it.
pub struct Server {
    local_addr: SocketAddr,
    /// Starts the drain: sessions close (1001), `/readyz` and `/ws` answer 503.
    drain: watch::Sender<bool>,
    /// Ends the accept loop.
    stop: watch::Sender<bool>,
    sessions: Arc<SessionCounters>,
    metrics: Option<Arc<Metrics>>,
    /// The generated secret's authority in demo mode (for the tokens printed at start).
    demo_auth: Option<Arc<TokenAuthority>>,
    task: tokio::task::JoinHandle<()>,
    /// The cluster heartbeat (with `--redis`); it leaves the cluster when the drain starts.
    cluster_task: Option<tokio::task::JoinHandle<()>>,
    /// The RTSP sources pulled: `[[rtsp_sources]]` and those the server API adds.
    rtsp: Arc<RtspSources>,
}

/// How long `/readyz` waits for the media plane to answer.
const READY_WAIT: Duration = Duration::from_secs(1);

/// What each signaling WebSocket allocates up front for reading (tungstenite's default is
/// 128 KiB, held for the life of every session). Signaling messages are small; a larger one
/// (an SDP offer with many tracks) grows the buffer to its own size, up to `max_message_bytes`.
const WEBSOCKET_READ_BUFFER: usize = 4 * 1024;

impl Server {
    /// Binds `config.listen` and starts serving, with the configured [`ConnectionLimits`].
    pub async fn start(config: Config, sfu: Sfu) -> std::io::Result<Self> {
        let limits = config.limits.connections();
        Self::start_with_limits(config, sfu, limits).await
    }

    /// Binds `config.listen` and starts serving with `limits` on connections.
    pub async fn start_with_limits(
        config: Config,
        sfu: Sfu,
        limits: ConnectionLimits,
    ) -> std::io::Result<Self> {
        let (secret, secret_mode) = match &config.secret {
            Some(secret) => (secret.clone(), SecretMode::Configured),
            None => (TokenAuthority::generate_secret(), SecretMode::Generated),
        };
        let (drain, draining) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let sessions = Arc::new(SessionCounters::default());
        let metrics = config.metrics.then(|| Arc::new(Metrics::new()));
        let auth = Arc::new(TokenAuthority::new(secret.as_bytes()));
        let stream_keys = config.stream_keys().map_err(std::io::Error::other)?;
        let rtsp_sources = config.rtsp_sources().map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let cluster = config.cluster.redis.clone().map(|redis| {
            let udp_port = sfu.shards().first().map_or(0, |s| s.local_addr().port());
            let start = ClusterStart {
                redis,
                node_id: config.cluster.node_id.clone(),
                addresses: NodeAddresses::of(&config, local_addr, udp_port),
            };
            Cluster::start(start, sfu.clone(), draining.clone(), stop_rx.clone())
        });
        let (cluster_view, cluster_task) = cluster.unzip();
        if let (Some(metrics), Some(cluster)) = (&metrics, &cluster_view) {
            metrics.watch_cluster(cluster.clone());
        }
        let config = Arc::new(config);
        let whip = WhipState::new(
            sfu.clone(),
            Arc::clone(&auth),
            stream_keys,
            Arc::clone(&config),
            secret_mode == SecretMode::Generated,
            draining.clone(),
        );
        let demo_auth = (secret_mode == SecretMode::Generated).then(|| Arc::clone(&auth));
        let resumable = Resumable::new(config.resume_grace);
        // Validation refuses webhooks without a configured secret: a generated one is of no
        // use to a receiver.
        if secret_mode == SecretMode::Configured {
            crate::webhooks::start(&sfu, config.webhook_urls.clone(), secret.clone());
        }
        // Pulled from now on; each source retries on its own until removed or the drain.
        let rtsp = Arc::new(RtspSources::start(
            RtspConfig::default(),
            rtsp_sources,
            sfu.clone(),
        ));
        let api = crate::api::ApiState {
            rtsp: Arc::clone(&rtsp),
            sfu: sfu.clone(),
            auth: Arc::clone(&auth),
            resumable: Arc::clone(&resumable),
            whip: whip.clone(),
            cluster: cluster_view.clone(),
        };
        let state = AppState {
            session: SessionContext {
                sfu,
                auth,
                max_message_rate: config.max_message_rate,
                max_message_burst: config.max_message_burst(),
                join_timeout: Duration::from_secs(10),
                outbound_queue: session::DEFAULT_OUTBOUND_QUEUE,
                outbound_bytes: session::DEFAULT_OUTBOUND_BYTES,
                send_deadline: session::DEFAULT_SEND_DEADLINE,
                shutdown: draining.clone(),
                resumable,
                counters: Arc::clone(&sessions),
                cluster: cluster_view.clone(),
            },
            config,
            secret_mode,
            metrics: metrics.clone(),
            draining,
            cluster: cluster_view,
        };
        let app = router(state)
            .merge(crate::whip::router(whip))
            .merge(crate::api::router(api));
        let task = tokio::spawn(accept::serve(listener, app, limits, stop_rx));
        Ok(Self {
            local_addr,
            drain,
            stop,
            sessions,
            metrics,
            demo_auth,
            task,
            cluster_task,
            rtsp,
        })
    }

    /// In demo mode (no secret configured), a token for `grants` signed with the generated
    /// secret, valid for `ttl`; `None` when a secret is configured.
    pub fn demo_token(&self, grants: &Grants, ttl: Duration) -> Option<String> {
        self.demo_auth.as_ref()?.mint(grants, ttl).ok()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's metrics (to add the RTMP ingest's); `None` with `--metrics off`.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The RTSP sources this server pulls (configured, and added through the server API).
    pub fn rtsp(&self) -> &Arc<RtspSources> {
        &self.rtsp
    }

    /// Starts draining, without waiting: `/readyz` and new `/ws` upgrades answer 503, and
    /// every session closes with 1001 (going away), which tells the SDK to reconnect — to
    /// another server, behind a load balancer that follows `/readyz`. The HTTP listener stays
    /// open until [`shutdown`](Self::shutdown).
    pub fn begin_drain(&self) {
        let _ = self.drain.send(true);
    }

    /// Drains (see [`begin_drain`](Self::begin_drain)), waits for the sessions to end, then
    /// stops accepting and lets the HTTP connections finish their requests; all within
    /// `deadline`, after which the server task is stopped wherever it is.
    pub async fn shutdown(mut self, deadline: Duration) {
        let deadline = tokio::time::Instant::now() + deadline;
        self.begin_drain();
        if let Some(task) = self.cluster_task.take()
            && tokio::time::timeout_at(deadline, task).await.is_err()
        {
            warn!("still leaving the cluster at the drain deadline");
        }
        if tokio::time::timeout_at(deadline, self.sessions.all_closed())
            .await
            .is_err()
        {
            warn!(
                open = self.sessions.open(),
                "sessions still open at the drain deadline"
            );
        }
        let _ = self.stop.send(true);
        match tokio::time::timeout_at(deadline, &mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(%err, "server task failed"),
            Err(_) => {
                warn!("connections still open at the drain deadline; stopping anyway");
                self.task.abort();
            }
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/watch/{room}", get(watch))
        .route("/assets/{file}", get(asset))
        .route(SDK_PATH, get(sdk))
        .route("/ws", get(websocket))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/dev/token", get(dev_token))
        .route("/debug/drop-socket", post(drop_socket))
        .with_state(state)
}

async fn websocket(
    State(state): State<AppState>,
    reset: Option<Extension<ResetOnClose>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if *state.draining.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "server draining: connect to another one",
        )
            .into_response();
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !state.config.origin_allowed(origin) {
        debug!(?origin, "websocket refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let limit = state.config.max_message_bytes;
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(WEBSOCKET_READ_BUFFER)
        .on_upgrade(move |socket| serve_socket(state.session, socket, reset.map(|r| r.0)))
}

async fn serve_socket(ctx: SessionContext, socket: WebSocket, reset: Option<ResetOnClose>) {
    let (sink, stream) = socket.split();
    let incoming = stream
        .filter_map(|frame| async move {
            match frame {
                Ok(Message::Text(text)) => Some(Some(Inbound::Text(text.to_string()))),
                Ok(Message::Binary(_)) => Some(Some(Inbound::Binary)),
                Ok(Message::Close(_)) => Some(Some(Inbound::Closed)),
                Ok(_) => None, // ping/pong: answered by tungstenite
                Err(err) => {
                    let too_large = err
                        .into_inner()
                        .downcast_ref::<tungstenite::Error>()
                        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
                    Some(too_large.then_some(Inbound::TooLarge))
                }
            }
        })
        // End the stream after a close frame, or at an unrecoverable error (a dropped
        // connection: the session parks its participant for a resume).
        .scan(false, |closed, frame| {
            let item = match (*closed, frame) {
                (true, _) | (false, None) => None,
                (false, Some(frame)) => {
                    *closed = matches!(frame, Inbound::Closed);
                    Some(frame)
                }
            };
            std::future::ready(item)
        });
    let outgoing = sink.with(|frame: Outbound| async move {
        Ok::<_, axum::Error>(match frame {
            Outbound::Message(message) => {
                let text = serde_json::to_string(&message).unwrap_or_else(|_| {
                    r#"{"type":"error","code":"internal","message":"unserializable response"}"#
                        .to_owned()
                });
                Message::Text(text.into())
            }
            Outbound::Close { code, reason } => Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })),
        })
    });
    // A client that stopped reading gets a reset: its unsent answers are freed at once.
    let on_stall = move || {
        if let Some(reset) = reset {
            reset.arm();
        }
    };
    session::run_with_stall(ctx, Box::pin(incoming), Box::pin(outgoing), on_stall).await;
}

/// Ready for new clients: the media plane answers and the server is not draining. A load
/// balancer sends new clients only to ready servers; `/healthz` says only that the process
/// serves HTTP. In a cluster a second line tells whether Redis is reachable
/// (`cluster: up` / `cluster: degraded`); an unreachable Redis keeps the node ready, since
/// it serves its rooms without it.
async fn readyz(State(state): State<AppState>) -> Response {
    let unready = |why: &'static str| (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    if *state.draining.borrow() {
        return unready("draining");
    }
    match tokio::time::timeout(READY_WAIT, state.session.sfu.shard_stats()).await {
        Ok(Ok(_)) => match &state.cluster {
            None => "ready".into_response(),
            Some(cluster) if cluster.is_up() => "ready\ncluster: up".into_response(),
            Some(_) => "ready\ncluster: degraded (redis unreachable)".into_response(),
        },
        Ok(Err(_)) => unready("media plane stopped"),
        Err(_) => unready("media plane not answering"),
    }
}

/// Prometheus text exposition; 404 with `--metrics off`.
async fn metrics(State(state): State<AppState>) -> Response {
    let Some(metrics) = &state.metrics else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let draining = *state.draining.borrow();
    let text = metrics
        .render(&state.session.sfu, &state.session.counters, draining)
        .await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    room: String,
    identity: String,
}

/// Demo mode only: hands out tokens to pages on this machine, so the bundled demo works
/// without a backend while a configured secret keeps real deployments closed. The page must
/// also have been opened under a loopback name ([`is_loopback_host`]): a DNS-rebinding page
/// reaches us from loopback too, but under its own name.
async fn dev_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    if state.secret_mode != SecretMode::Generated || !peer.ip().is_loopback() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !host.is_some_and(is_loopback_host) {
        debug!(?host, "demo token refused: Host is not a loopback name");
        return (
            StatusCode::FORBIDDEN,
            "demo tokens are only for pages opened at localhost, 127.0.0.1 or [::1]",
        )
            .into_response();
    }
    let grants = Grants {
        room: query.room,
        identity: query.identity,
        can_publish: true,
        can_subscribe: true,
        ..Grants::default()
    };
    match state.session.auth.mint(&grants, Duration::from_secs(3600)) {
        Ok(token) => axum::Json(serde_json::json!({ "token": token })).into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    }
}

/// Whether a `Host` header names this machine's loopback: `localhost`, an address in
/// 127.0.0.0/8 or `[::1]`, each with an optional port.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let is_port =
        |port: &str| (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok && address.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return false,
        None => host,
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

#[derive(Deserialize)]
struct DropQuery {
    participant: String,
}

/// TESTS ONLY (`--test-hooks`, loopback clients only; 404 otherwise): closes a participant's
/// WebSocket from the server side as a network drop would, keeping the participant for a
/// resume, so browser tests can exercise reconnection without touching the browser's network.
async fn drop_socket(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<DropQuery>,
) -> Response {
    if !state.config.test_hooks || !peer.ip().is_loopback() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(participant) = query.participant.parse() else {
        return (StatusCode::BAD_REQUEST, "malformed participant id").into_response();
    };
    if state.session.resumable.drop_socket(participant) {
        warn!(%participant, "test hook: dropping the participant's socket");
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            "no connected participant with that id",
        )
            .into_response()
    }
}

async fn index() -> Response {
    asset_response("index.html")
}

/// The viewer page; it reads the room from its own path.
async fn watch() -> Response {
    asset_response("watch.html")
}

async fn asset(Path(file): Path<String>) -> Response {
    asset_response(&file)
}

/// Where the browser SDK (client-js) is served as one ES module, for the demo pages and for apps
/// (`import { Room } from "https://sfu.example/sdk/v0/sluice-client.js"`). `v0` is the SDK's
/// major version: the path stays while the API stays compatible.
pub const SDK_PATH: &str = "/sdk/v0/sluice-client.js";

/// The SDK module; any origin may import it (it is public code, fetched without credentials).
async fn sdk() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        include_str!("../assets/sluice-client.js"),
    )
        .into_response()
}

/// The demo pages, compiled into the binary so `sluice` runs from anywhere.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    ),
    (
        "conference.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/conference.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../assets/style.css"),
    ),
    (
        "watch.html",
        "text/html; charset=utf-8",
        include_str!("../assets/watch.html"),
    ),
    (
        "watch.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/watch.js"),
    ),
];

fn asset_response(file: &str) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:7880",
            "127.255.0.9:1",
            "[::1]",
            "[::1]:7880",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            ":8080",
            "rebind.example",
            "rebind.example:8080",
            "localhost.rebind.example",
            "127.0.0.1.rebind.example",
            "127.0.0.1:8080@rebind.example",
            "127.0.0.1:",
            "127.0.0.1:123456",
            "127.1",
            "0.0.0.0",
            "10.0.0.1:80",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[::ffff:127.0.0.1]",
            "[::2]:80",
            "localhost.",
        ] {
            assert!(!is_loopback_host(host), "{host:?}");
        }
    }
}
