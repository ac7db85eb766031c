//! `POST /whip/{room}`: an encoder's offer becomes a participant of the room that publishes
//! each audio and video section it sends (simulcast rids as q/h/f-style layers), exactly as a
//! WebSocket client's publish does, so every subscriber sees the publications.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sluice_sfu::core::MediaKind;
use sluice_sfu::runtime::{IngestKind, Permissions, ServerEvent, TrackRequest, TrackSource};
use tracing::info;

use super::sdp::{self, Section};
use super::{Kind, Refusal, WhipState, bearer, created, precheck, register, text};

/// Who publishes: the identity a credential names in its room.
pub(super) struct Publisher {
    room: String,
    identity: String,
}

pub(super) async fn post(
    State(state): State<WhipState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match publish(&state, &room, &headers, &body).await {
        Ok(response) => response,
        Err(refusal) => {
            let mut response = refusal.into_response();
            super::cors(&state, &headers, &mut response);
            response
        }
    }
}

async fn publish(
    state: &WhipState,
    room: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Refusal> {
    precheck(state, headers, Some("application/sdp"))?;
    super::refuse_while_draining(state)?;
    let publisher = authorize(state, headers, room)?;
    let offer = text(body)?;
    let sections =
        sdp::sections(offer).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let sending: Vec<&Section> = sections.iter().filter(|s| s.sends).collect();
    if sending.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "the offer sends no audio or video (a WHIP offer is sendonly)",
        ));
    }
    sdp::check_codecs(&sending)
        .map_err(|e| Refusal::new(StatusCode::NOT_ACCEPTABLE, e.to_string()))?;
    let owner = format!("{}/{}", publisher.room, publisher.identity);
    if !state
        .sessions
        .has_room_for(&owner, super::MAX_SESSIONS_PER_CREDENTIAL)
    {
        return Err(too_many());
    }
    let tracks = sending.iter().map(|s| track(s)).collect();
    let permissions = Permissions {
        can_publish: true,
        can_subscribe: false,
    };
    let (participant, _) = state
        .sfu
        .join(&publisher.room, publisher.identity.clone(), permissions)
        .await?;
    let (answer, publications) = participant.publish(offer.to_owned(), tracks).await?;
    let Some((id, etag)) = register(
        state,
        Kind::Whip,
        room,
        owner,
        offer,
        participant,
        Vec::new(),
        Some(ServerEvent::IngestEnded {
            room: publisher.room.clone(),
            identity: publisher.identity.clone(),
            kind: IngestKind::Whip,
        }),
    ) else {
        return Err(too_many());
    };
    state.sfu.notify(ServerEvent::IngestStarted {
        room: publisher.room.clone(),
        identity: publisher.identity.clone(),
        kind: IngestKind::Whip,
    });
    info!(
        room = %publisher.room,
        identity = %publisher.identity,
        session = %super::session::log_name(&id),
        publications = publications.len(),
        "WHIP session created"
    );
    Ok(created(
        state,
        headers,
        Kind::Whip,
        room,
        &id,
        &etag,
        answer,
    ))
}

fn too_many() -> Refusal {
    Refusal::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "at most {} sessions per credential",
            super::MAX_SESSIONS_PER_CREDENTIAL
        ),
    )
}

/// The publication a sending section becomes.
fn track(section: &Section) -> TrackRequest {
    let source = match section.kind {
        MediaKind::Audio => TrackSource::Microphone,
        MediaKind::Video => TrackSource::Camera,
    };
    TrackRequest {
        mid: section.mid.clone(),
        kind: section.kind,
        source,
        name: Some("whip".to_owned()),
        rids: section.rids.clone(),
    }
}

/// A stream key (the RTMP formats: configured or signed) or a room token with canPublish,
/// for this room.
pub(super) fn authorize(
    state: &WhipState,
    headers: &HeaderMap,
    room: &str,
) -> Result<Publisher, Refusal> {
    let credential = bearer(headers).ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer <room token or stream key> required",
        )
    })?;
    let publisher = match state.stream_keys.authorize(credential) {
        Ok(target) => Publisher {
            room: target.room,
            identity: target.identity,
        },
        Err(_) => {
            let grants = state.auth.verify(credential).map_err(|e| {
                Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    format!("not a stream key, and not a valid token: {e}"),
                )
            })?;
            if !grants.can_publish {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "the token does not allow publishing",
                ));
            }
            Publisher {
                room: grants.room,
                identity: grants.identity,
            }
        }
    };
    if publisher.room != room {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "the credential is for another room",
        ));
    }
    Ok(publisher)
}
