//! The server API for application backends: authenticated HTTP JSON under `/api` to list
//! rooms and participants, update a participant's name and metadata, remove a participant
//! (its tokens issued until then stop working), mute or unmute a publication and close a room;
//! in a cluster (`--redis`), list the live nodes and tell a room's origin node.
//! The `sluice` subcommands `rooms`, `room`, `kick`, `update`, `mute`, `unmute` and
//! `close-room` call it ([`crate::admin`]).
//!
//! Every request carries `Authorization: Bearer <admin token>` (minted with the server
//! secret: `sluice token --admin`, or [`TokenAuthority::mint_admin`]). Errors are JSON
//! `{"error": "<code>", "message": "<why>"}` with the status the code implies. The endpoints
//! and their answers are in docs/api.md.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sluice_sfu::core::PublicationId;
use sluice_sfu::ingest::RtspSources;
use sluice_sfu::runtime::{ProfileUpdate, RequestError, RoomSnapshot, Sfu};
use tracing::info;

use crate::auth::{AuthError, TokenAuthority, check_name, check_profile, unix_now};
use crate::cluster::{Cluster, ClusterError, NodeRecord};
use crate::protocol::{ParticipantInfo, PublicationInfo};
use crate::resume::{Evicted, Resumable};
use crate::whip::WhipState;

/// Largest request body the API reads, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub sfu: Sfu,
    pub auth: Arc<TokenAuthority>,
    pub resumable: Arc<Resumable>,
    pub whip: WhipState,
    /// `None` without `--redis`.
    pub cluster: Option<Cluster>,
    /// The RTSP sources pulled, which the API lists, adds and removes.
    pub rtsp: Arc<RtspSources>,
}

/// The `/api` routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/nodes", get(list_nodes))
        .route("/api/rooms", get(list_rooms))
        .route("/api/rooms/{room}", get(get_room).delete(close_room))
        .route(
            "/api/rooms/{room}/participants/{identity}",
            axum::routing::patch(update_participant).delete(remove_participant),
        )
        .route(
            "/api/rooms/{room}/publications/{publication}/mute",
            axum::routing::post(mute_publication),
        )
        .route(
            "/api/rtsp-sources",
            get(crate::api_rtsp::list).post(crate::api_rtsp::add),
        )
        .route(
            "/api/rtsp-sources/{id}",
            axum::routing::delete(crate::api_rtsp::remove),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// One room in `GET /api/rooms`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoomSummary {
    pub room: String,
    pub participants: usize,
    pub publications: usize,
}

/// `GET /api/rooms`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomList {
    pub rooms: Vec<RoomSummary>,
}

/// A participant with its publications, in `GET /api/rooms/{room}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantDetail {
    #[serde(flatten)]
    pub participant: ParticipantInfo,
    pub publications: Vec<PublicationInfo>,
}

/// `GET /api/rooms/{room}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomDetail {
    pub room: String,
    /// The participants on this node.
    pub participants: Vec<ParticipantDetail>,
    /// In a cluster, the id of the room's origin node (absent when unknown: no cluster, or
    /// Redis unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// `GET /api/nodes`: the cluster's live nodes, as the answering node sees them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeList {
    /// The id of the node that answered.
    pub node: String,
    pub nodes: Vec<NodeRecord>,
}

/// `DELETE` answers: how many participants (or WHIP/WHEP sessions) ended.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    pub removed: usize,
}

/// `PATCH /api/rooms/{room}/participants/{identity}`: what to change; absent fields stay.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParticipantPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// A live participant's grant to publish; revoking it ends its publications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    /// A live participant's grant to subscribe; revoking it ends its subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
}

/// `PATCH` answer: the participants of that identity as they are now.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Updated {
    pub participants: Vec<ParticipantInfo>,
}

/// `POST /api/rooms/{room}/publications/{publication}/mute`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MuteRequest {
    pub muted: bool,
}

/// The `mute` answer: the publication as it is now.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MuteAnswer {
    pub publication: PublicationInfo,
}

/// An API error: its status, code and message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "notFound",
            format!("{what} not found"),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalidRequest", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ClusterError> for ApiError {
    fn from(err: ClusterError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "clusterUnavailable",
            err.to_string(),
        )
    }
}

impl From<RequestError> for ApiError {
    fn from(err: RequestError) -> Self {
        match err {
            RequestError::NotFound(what) => Self::not_found(&what),
            RequestError::Invalid(why) => Self::invalid(why),
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

/// Checks the bearer's admin token; returns its subject for the logs.
pub(crate) fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<String, ApiError> {
    let unauthorized = |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <admin token>"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("expected Authorization: Bearer <admin token>"))?;
    state
        .auth
        .verify_admin(token.trim())
        .map_err(|err| match err {
            AuthError::NotAdmin => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the token is not an admin token",
            ),
            other => unauthorized(&format!("invalid token: {other}")),
        })
}

/// The answer's JSON, or the error's.
fn respond<T: Serialize>(answer: Result<T, ApiError>) -> Response {
    match answer {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(err) => err.into_response(),
    }
}

fn check_room(room: &str) -> Result<(), ApiError> {
    check_name("room", room).map_err(ApiError::invalid)
}

async fn snapshot(state: &ApiState, room: &str) -> Result<RoomSnapshot, ApiError> {
    check_room(room)?;
    state
        .sfu
        .room_snapshot(room)
        .await
        .ok_or_else(|| ApiError::not_found("room"))
}

async fn list_rooms(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(err) = authorize(&state, &headers) {
        return err.into_response();
    }
    let mut rooms = Vec::new();
    for room in state.sfu.room_names() {
        // A room that closed meanwhile is left out.
        if let Some(snapshot) = state.sfu.room_snapshot(&room).await {
            rooms.push(RoomSummary {
                room,
                participants: snapshot.participants.len(),
                publications: snapshot.publications.len(),
            });
        }
    }
    rooms.sort_by(|a, b| a.room.cmp(&b.room));
    axum::Json(RoomList { rooms }).into_response()
}

async fn get_room(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    let detail = async {
        authorize(&state, &headers)?;
        check_room(&room)?;
        // Unknown while Redis is unreachable: the local answer stands without it.
        let origin = match &state.cluster {
            Some(cluster) => cluster.origin(&room).await.ok().flatten(),
            None => None,
        };
        let Some(snapshot) = state.sfu.room_snapshot(&room).await else {
            // Open on another node only: its origin, and no participant here.
            return match origin {
                Some(origin) => Ok(RoomDetail {
                    room: room.clone(),
                    participants: Vec::new(),
                    origin: Some(origin),
                }),
                None => Err(ApiError::not_found("room")),
            };
        };
        let participants = snapshot
            .participants
            .into_iter()
            .map(|p| {
                let publications = snapshot
                    .publications
                    .iter()
                    .filter(|publication| publication.participant == p.id)
                    .cloned()
                    .map(PublicationInfo::from)
                    .collect();
                ParticipantDetail {
                    participant: p.into(),
                    publications,
                }
            })
            .collect();
        Ok::<_, ApiError>(RoomDetail {
            room: room.clone(),
            participants,
            origin,
        })
    };
    respond(detail.await)
}

/// `GET /api/nodes`: 404 without `--redis`, 503 while Redis is unreachable.
async fn list_nodes(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let nodes = async {
        authorize(&state, &headers)?;
        let cluster = state.cluster.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "notFound",
                "this node is not in a cluster (no --redis)",
            )
        })?;
        Ok::<_, ApiError>(NodeList {
            node: cluster.node_id().to_owned(),
            nodes: cluster.nodes().await?,
        })
    };
    respond(nodes.await)
}

async fn update_participant(
    State(state): State<ApiState>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let updated = async {
        let admin = authorize(&state, &headers)?;
        check_room(&room)?;
        check_name("identity", &identity).map_err(ApiError::invalid)?;
        let patch: ParticipantPatch = serde_json::from_slice(&body)
            .map_err(|err| ApiError::invalid(format!("body: {err}")))?;
        check_profile(patch.name.as_deref(), patch.metadata.as_deref())
            .map_err(ApiError::invalid)?;
        let grants = patch.can_publish.is_some() || patch.can_subscribe.is_some();
        if !grants && patch.name.is_none() && patch.metadata.is_none() {
            return Err(ApiError::invalid("nothing to change"));
        }
        let mut regranted = 0;
        if grants {
            for applied in state.resumable.set_permissions(
                &room,
                &identity,
                patch.can_publish,
                patch.can_subscribe,
            ) {
                regranted += usize::from(applied.await.is_ok());
            }
        }
        // Without a name or metadata the update changes nothing but answers who is there.
        let participants = state
            .sfu
            .update_profile(
                &room,
                &identity,
                ProfileUpdate {
                    name: patch.name,
                    metadata: patch.metadata,
                },
            )
            .await?;
        if participants.is_empty() || (grants && regranted == 0) {
            return Err(ApiError::not_found("participant"));
        }
        info!(%admin, %room, %identity, "participant updated");
        Ok(Updated {
            participants: participants.into_iter().map(Into::into).collect(),
        })
    };
    respond(updated.await)
}

async fn mute_publication(
    State(state): State<ApiState>,
    Path((room, publication)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let muted = async {
        let admin = authorize(&state, &headers)?;
        check_room(&room)?;
        let request: MuteRequest = serde_json::from_slice(&body)
            .map_err(|err| ApiError::invalid(format!("body: {err}")))?;
        let id: PublicationId = publication
            .parse()
            .map_err(|_| ApiError::not_found("publication"))?;
        let info = state.sfu.set_muted(&room, id, request.muted).await?;
        info!(%admin, %room, %publication, muted = request.muted, "publication muted");
        Ok::<_, ApiError>(MuteAnswer {
            publication: info.into(),
        })
    };
    respond(muted.await)
}

/// Ends every participant in `room` (of `identity` only, when given): signaling sessions
/// close with 4003, parked ones leave, WHIP/WHEP sessions end. Returns how many ended.
async fn end_participants(state: &ApiState, room: &str, identity: Option<&str>) -> usize {
    let evicted = state.resumable.remove(room, identity);
    let mut removed = evicted.len();
    for evicted in evicted {
        match evicted {
            Evicted::Session(ended) => {
                let _ = ended.await;
            }
            Evicted::Parked(participant) => participant.leave_and_wait().await,
        }
    }
    removed += state.whip.end_sessions(room, identity).await;
    removed
}

async fn remove_participant(
    State(state): State<ApiState>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let removed = async {
        let admin = authorize(&state, &headers)?;
        check_room(&room)?;
        check_name("identity", &identity).map_err(ApiError::invalid)?;
        // Revoked first, so the client cannot come back between its removal and the revoke.
        state.auth.revoke(&room, &identity, unix_now());
        let removed = end_participants(&state, &room, Some(&identity)).await;
        info!(%admin, %room, %identity, removed, "participant removed; its tokens revoked");
        if removed == 0 {
            return Err(ApiError::not_found("participant"));
        }
        Ok(Removed { removed })
    };
    respond(removed.await)
}

async fn close_room(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    let closed = async {
        let admin = authorize(&state, &headers)?;
        snapshot(&state, &room).await?;
        let removed = end_participants(&state, &room, None).await;
        info!(%admin, %room, removed, "room closed");
        Ok::<_, ApiError>(Removed { removed })
    };
    respond(closed.await)
}
