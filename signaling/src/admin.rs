//! The client side of the server API ([`crate::api`]): what the `sluice rooms`, `room`,
//! `kick`, `update`, `mute`, `unmute` and `close-room` subcommands send, each with a fresh admin token signed
//! by the secret it is given and valid for one minute.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::api::ParticipantPatch;
use crate::auth::{AuthError, TokenAuthority};
use crate::secret::Secret;

/// How long an admin subcommand's token is valid.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How long an admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("cannot mint the admin token: {0}")]
    Token(#[from] AuthError),
    #[error("invalid server URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("server answered {status}: {body}")]
    Status { status: StatusCode, body: String },
}

/// What an admin subcommand asks.
#[derive(Debug)]
pub enum AdminRequest {
    ListRooms,
    GetRoom {
        room: String,
    },
    Remove {
        room: String,
        identity: String,
    },
    Update {
        room: String,
        identity: String,
        patch: ParticipantPatch,
    },
    CloseRoom {
        room: String,
    },
    Mute {
        room: String,
        publication: String,
        muted: bool,
    },
}

impl AdminRequest {
    fn method_and_path(&self) -> (Method, String) {
        let room_path = |room: &str| format!("api/rooms/{}", segment(room));
        match self {
            Self::ListRooms => (Method::GET, "api/rooms".to_owned()),
            Self::GetRoom { room } => (Method::GET, room_path(room)),
            Self::CloseRoom { room } => (Method::DELETE, room_path(room)),
            Self::Remove { room, identity } => (
                Method::DELETE,
                format!("{}/participants/{}", room_path(room), segment(identity)),
            ),
            Self::Mute {
                room, publication, ..
            } => (
                Method::POST,
                format!(
                    "{}/publications/{}/mute",
                    room_path(room),
                    segment(publication)
                ),
            ),
            Self::Update { room, identity, .. } => (
                Method::PATCH,
                format!("{}/participants/{}", room_path(room), segment(identity)),
            ),
        }
    }
}

/// `value` as one URL path segment.
fn segment(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Sends `request` to the server API at `base` and returns the answer's JSON body.
pub async fn send(
    base: &url::Url,
    secret: &Secret,
    request: &AdminRequest,
) -> Result<serde_json::Value, AdminError> {
    let token = TokenAuthority::new(secret.as_bytes()).mint_admin("sluice-cli", TOKEN_TTL)?;
    let (method, path) = request.method_and_path();
    let url = base.join(&path)?;
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let mut builder = client.request(method, url).bearer_auth(token);
    let body = match request {
        AdminRequest::Update { patch, .. } => Some(serde_json::to_vec(patch)),
        AdminRequest::Mute { muted, .. } => Some(serde_json::to_vec(&crate::api::MuteRequest {
            muted: *muted,
        })),
        _ => None,
    };
    if let Some(body) = body {
        let body = body.unwrap_or_default();
        builder = builder
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let response = builder.send().await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        return Err(AdminError::Status { status, body });
    }
    Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
}
