//! The server API's RTSP sources: list the sources the server pulls (`[[rtsp_sources]]` and
//! those added here), add one (`POST /api/rtsp-sources`) and remove one (`DELETE
//! /api/rtsp-sources/{id}`). Sources added here live as long as the process; the file's are
//! pulled again at the next start.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sluice_sfu::ingest::{
    RtspCredentials, RtspSource, RtspSourceError, RtspTransport, StreamTarget,
};

use crate::api::{ApiError, ApiState, authorize};
use crate::config::check_source;

/// Longest username or password accepted for a source.
const MAX_CREDENTIAL_LEN: usize = 256;

/// `POST /api/rtsp-sources`: a source to pull.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRtspSource {
    /// `rtsp://host[:port]/path`, without credentials.
    pub url: String,
    pub room: String,
    pub identity: String,
    /// Basic or Digest credentials, both or neither.
    pub username: Option<String>,
    pub password: Option<String>,
    /// `tcp` (the default) or `udp`.
    pub transport: Option<String>,
}

/// One source as the API shows it (never its credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtspSourceInfo {
    pub id: u64,
    pub url: String,
    pub room: String,
    pub identity: String,
    pub transport: String,
    /// Whether it authenticates.
    pub credentials: bool,
}

/// `GET /api/rtsp-sources`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtspSourceList {
    pub sources: Vec<RtspSourceInfo>,
}

fn info(id: u64, source: &RtspSource) -> RtspSourceInfo {
    RtspSourceInfo {
        id,
        url: source.url.to_string(),
        room: source.target.room.clone(),
        identity: source.target.identity.clone(),
        transport: match source.transport {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
        .to_owned(),
        credentials: source.credentials.is_some(),
    }
}

pub(crate) async fn list(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(err) = authorize(&state, &headers) {
        return err.into_response();
    }
    let sources = state
        .rtsp
        .list()
        .iter()
        .map(|running| info(running.id, &running.source))
        .collect();
    axum::Json(RtspSourceList { sources }).into_response()
}

fn parse(body: &[u8]) -> Result<RtspSource, ApiError> {
    let new: NewRtspSource =
        serde_json::from_slice(body).map_err(|err| ApiError::invalid(format!("body: {err}")))?;
    let (url, transport) = check_source(
        "source",
        &new.url,
        &new.room,
        &new.identity,
        new.transport.as_deref(),
    )
    .map_err(ApiError::invalid)?;
    let credentials = match (new.username, new.password) {
        (None, None) => None,
        (Some(username), Some(password)) => {
            if username.len() > MAX_CREDENTIAL_LEN || password.len() > MAX_CREDENTIAL_LEN {
                return Err(ApiError::invalid(format!(
                    "username and password are at most {MAX_CREDENTIAL_LEN} bytes"
                )));
            }
            Some(RtspCredentials { username, password })
        }
        _ => {
            return Err(ApiError::invalid(
                "give both username and password, or neither",
            ));
        }
    };
    Ok(RtspSource {
        url,
        target: StreamTarget {
            room: new.room,
            identity: new.identity,
        },
        credentials,
        transport,
    })
}

pub(crate) async fn add(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let added = (|| {
        authorize(&state, &headers)?;
        let source = parse(&body)?;
        let id = state.rtsp.add(source.clone()).map_err(|err| match err {
            RtspSourceError::Duplicate { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", err.to_string()),
        })?;
        Ok::<_, ApiError>(info(id, &source))
    })();
    match added {
        Ok(info) => (StatusCode::CREATED, axum::Json(info)).into_response(),
        Err(err) => err.into_response(),
    }
}

pub(crate) async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(err) = authorize(&state, &headers) {
        return err.into_response();
    }
    let Ok(id) = id.parse::<u64>() else {
        return ApiError::not_found("RTSP source").into_response();
    };
    if state.rtsp.remove(id).await {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::not_found("RTSP source").into_response()
    }
}
