//! WHIP ingest (RFC 9725) and WHEP playback over HTTP: `POST /whip/{room}` publishes an SDP
//! offer as a participant of the room, `POST /whep/{room}[/{publication}]` plays the room (or
//! one publication) to a client that offers recvonly; each answer is `201 Created` with the
//! session resource at `/{whip|whep}/{room}/session/{id}`, which takes `PATCH`
//! (trickle-ice-sdpfrag) and `DELETE`. `OPTIONS` answers CORS preflights for the origins
//! `--allowed-origins` admits.
//!
//! The resource model, status codes and limits are in docs/protocol.md.

mod play;
mod publish;
mod resource;
pub mod sdp;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use sluice_sfu::ingest::StreamKeys;
use sluice_sfu::runtime::{RequestError, Sfu};
use sluice_sfu::transport::TransportError;
use tokio::sync::{oneshot, watch};
use tracing::debug;

use crate::auth::TokenAuthority;
use crate::config::Config;
use session::Registry;
pub use session::{CONNECT_TIMEOUT, Kind};

/// Sessions one credential (a token's or stream key's room and identity) may hold at once.
pub const MAX_SESSIONS_PER_CREDENTIAL: usize = 4;

/// What the WHIP/WHEP handlers share.
#[derive(Clone)]
pub struct WhipState {
    pub sfu: Sfu,
    pub auth: Arc<TokenAuthority>,
    pub stream_keys: Arc<StreamKeys>,
    pub config: Arc<Config>,
    /// No secret configured: WHEP plays without a token to loopback clients.
    pub demo: bool,
    /// True once the server drains: new sessions are refused (503).
    draining: watch::Receiver<bool>,
    sessions: Arc<Registry>,
}

impl WhipState {
    pub fn new(
        sfu: Sfu,
        auth: Arc<TokenAuthority>,
        stream_keys: StreamKeys,
        config: Arc<Config>,
        demo: bool,
        draining: watch::Receiver<bool>,
    ) -> Self {
        Self {
            sfu,
            auth,
            stream_keys: Arc::new(stream_keys),
            config,
            demo,
            draining,
            sessions: Arc::new(Registry::default()),
        }
    }

    /// Live WHIP and WHEP sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Ends the WHIP and WHEP sessions in `room` (of `identity` only, when given); returns
    /// how many there were.
    pub async fn end_sessions(&self, room: &str, identity: Option<&str>) -> usize {
        self.sessions.end_matching(room, identity).await
    }
}

/// The routes of both protocols.
pub fn router(state: WhipState) -> Router {
    Router::new()
        .route("/whip/{room}", post(publish::post).options(options_whip))
        .route("/whep/{room}", post(play::post_room).options(options_whep))
        .route(
            "/whep/{room}/{publication}",
            post(play::post_publication).options(options_whep),
        )
        .route(
            "/whip/{room}/session/{id}",
            patch(resource::patch_whip)
                .delete(resource::delete_whip)
                .options(|h: HeaderMap, s: State<WhipState>| preflight(h, s, "PATCH, DELETE")),
        )
        .route(
            "/whep/{room}/session/{id}",
            patch(resource::patch_whep)
                .delete(resource::delete_whep)
                .options(|h: HeaderMap, s: State<WhipState>| preflight(h, s, "PATCH, DELETE")),
        )
        // Past the SDP cap axum answers 413 before a handler runs.
        .layer(DefaultBodyLimit::max(sdp::MAX_SDP_BYTES))
        .with_state(state)
}

/// A refusal: its status and a plain-text reason.
pub(crate) struct Refusal {
    status: StatusCode,
    why: String,
    /// Seconds the client should wait before it asks again (`Retry-After`).
    retry_after: Option<u32>,
}

/// How long a WHEP viewer refused at the server's capacity should wait before it asks again:
/// long enough that refused viewers retrying add little load, short enough to get a place
/// soon after one frees.
const SERVER_FULL_RETRY_AFTER_SECS: u32 = 5;

impl Refusal {
    pub(crate) fn new(status: StatusCode, why: impl Into<String>) -> Self {
        Self {
            status,
            why: why.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.why).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<RequestError> for Refusal {
    fn from(err: RequestError) -> Self {
        let status = match &err {
            RequestError::NotFound(_) => StatusCode::NOT_FOUND,
            RequestError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            RequestError::Invalid(_)
            | RequestError::Transport(
                TransportError::InvalidSdp(_) | TransportError::InvalidCandidate(_),
            ) => StatusCode::BAD_REQUEST,
            RequestError::Unsupported(_) => StatusCode::NOT_ACCEPTABLE,
            RequestError::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            RequestError::Closed | RequestError::ServerFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after =
            matches!(err, RequestError::ServerFull(_)).then_some(SERVER_FULL_RETRY_AFTER_SECS);
        Self {
            status,
            why: err.to_string(),
            retry_after,
        }
    }
}

/// The checks every request starts with: the Origin, the content type.
fn precheck(
    state: &WhipState,
    headers: &HeaderMap,
    content_type: Option<&str>,
) -> Result<(), Refusal> {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !state.config.origin_allowed(origin) {
        debug!(?origin, "WHIP/WHEP refused: origin not allowed");
        return Err(Refusal::new(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    if let Some(expected) = content_type {
        let given = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .and_then(|c| c.split(';').next())
            .map(str::trim);
        if !given.is_some_and(|g| g.eq_ignore_ascii_case(expected)) {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("the body must be {expected}"),
            ));
        }
    }
    Ok(())
}

/// New sessions are refused while the server drains (as `/ws` upgrades are).
fn refuse_while_draining(state: &WhipState) -> Result<(), Refusal> {
    if *state.draining.borrow() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server draining: publish or play on another one",
        ));
    }
    Ok(())
}

/// The body as text.
fn text(body: &Bytes) -> Result<&str, Refusal> {
    std::str::from_utf8(body)
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "the body is not UTF-8"))
}

/// The `Authorization: Bearer` value, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(credential.trim())
}

/// CORS headers for a request from an allowed `Origin` (none without one).
fn cors(state: &WhipState, headers: &HeaderMap, response: &mut Response) {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return;
    };
    if !state.config.origin_allowed(origin.to_str().ok()) {
        return;
    }
    let out = response.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    out.insert(header::VARY, HeaderValue::from_static("Origin"));
    out.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Accept-Patch, Link"),
    );
}

/// A CORS preflight (or a plain OPTIONS): what the resource accepts.
async fn preflight(
    headers: HeaderMap,
    State(state): State<WhipState>,
    methods: &'static str,
) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_str(&format!("{methods}, OPTIONS"))
            .unwrap_or(HeaderValue::from_static("OPTIONS")),
    );
    out.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    out.insert("accept-post", HeaderValue::from_static("application/sdp"));
    out.insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    cors(&state, &headers, &mut response);
    response
}

/// `OPTIONS /whip/{room}`: the preflight's headers and the ICE servers (RFC 9725 §4.6),
/// those with credentials only for a request whose `Authorization` may publish here.
async fn options_whip(
    headers: HeaderMap,
    State(state): State<WhipState>,
    Path(room): Path<String>,
) -> Response {
    let authorized = publish::authorize(&state, &headers, &room).is_ok();
    let mut response = preflight(headers, State(state.clone()), "POST").await;
    ice_links(&state, response.headers_mut(), authorized);
    response
}

/// `OPTIONS /whep/{room}[/{publication}]`: as for WHIP, credentials for a request that may
/// play here.
async fn options_whep(
    headers: HeaderMap,
    State(state): State<WhipState>,
    Path(params): Path<HashMap<String, String>>,
    peer: ConnectInfo<SocketAddr>,
) -> Response {
    let room = params.get("room").map_or("", String::as_str);
    let authorized = play::authorize(&state, &headers, &peer, room).is_ok();
    let mut response = preflight(headers, State(state.clone()), "POST").await;
    ice_links(&state, response.headers_mut(), authorized);
    response
}

/// One `Link: <url>; rel="ice-server"…` per configured ICE server URL; a server with
/// credentials only when `credentials`.
fn ice_links(state: &WhipState, out: &mut HeaderMap, credentials: bool) {
    for server in &state.config.ice_servers {
        for link in server.links(credentials) {
            // `Config::validate` admits only printable ASCII, so every value converts.
            if let Ok(value) = HeaderValue::from_str(&link) {
                out.append(header::LINK, value);
            }
        }
    }
}

/// The absolute URL of a session resource, from the request's `Host` (RFC 9725 allows a
/// relative one, but ffmpeg's WHIP muxer resolves only absolute ones).
fn location(headers: &HeaderMap, kind: Kind, room: &str, id: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|p| p.to_str().ok())
        .filter(|p| matches!(*p, "http" | "https"))
        .unwrap_or("http");
    format!(
        "{scheme}://{host}/{}/{}/session/{id}",
        kind.path(),
        percent_encode(room)
    )
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A new random id (resource ids and ETags): 128 bits, hex.
fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The `201 Created` of a new session.
fn created(
    state: &WhipState,
    headers: &HeaderMap,
    kind: Kind,
    room: &str,
    id: &str,
    etag: &str,
    answer: String,
) -> Response {
    let mut response = (StatusCode::CREATED, answer).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(value) = HeaderValue::from_str(&location(headers, kind, room, id)) {
        out.insert(header::LOCATION, value);
    }
    if let Ok(value) = HeaderValue::from_str(etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    ice_links(state, out, true);
    cors(state, headers, &mut response);
    response
}

/// Registers a session and starts its task; `None` when the credential's cap was reached.
/// `ended` is told to the server-wide listeners when the session ends.
#[allow(clippy::too_many_arguments)]
fn register(
    state: &WhipState,
    kind: Kind,
    room: &str,
    owner: String,
    offer: &str,
    participant: sluice_sfu::runtime::Participant,
    playing: Vec<sluice_sfu::core::PublicationId>,
    ended: Option<sluice_sfu::runtime::ServerEvent>,
) -> Option<(String, String)> {
    let id = random_id();
    let etag = format!("\"{}\"", random_id());
    let (requests_tx, requests) = tokio::sync::mpsc::channel(8);
    let (close_tx, close) = oneshot::channel();
    let entry = Arc::new(session::Session {
        kind,
        room: room.to_owned(),
        owner,
        requests: requests_tx,
        etag: std::sync::Mutex::new(etag.clone()),
        offer: std::sync::Mutex::new(offer.to_owned()),
        close: std::sync::Mutex::new(Some(close_tx)),
    });
    if !state
        .sessions
        .insert_capped(id.clone(), entry, MAX_SESSIONS_PER_CREDENTIAL)
    {
        return None;
    }
    let ended = ended.map(|event| (state.sfu.clone(), event));
    session::spawn(
        Arc::clone(&state.sessions),
        id.clone(),
        kind,
        participant,
        playing,
        requests,
        close,
        ended,
    );
    Some((id, etag))
}

/// Whether a request came from this machine under a loopback name (demo-mode playback).
fn from_loopback(peer: &ConnectInfo<SocketAddr>, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    peer.0.ip().is_loopback() && host.is_some_and(crate::server::is_loopback_host)
}
