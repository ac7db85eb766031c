//! A session resource (`/{whip|whep}/{room}/session/{id}`): `PATCH` with trickled candidates
//! or an ICE restart, and `DELETE`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_sfu::runtime::RequestError;
use tokio::sync::oneshot;

use super::session::{self, Kind, Request};
use super::{Refusal, WhipState, cors, precheck, random_id, sdp, text};

/// The session a PATCH or DELETE names, checked against the path's kind and room.
fn find(
    state: &WhipState,
    kind: Kind,
    room: &str,
    id: &str,
) -> Result<Arc<session::Session>, Refusal> {
    state
        .sessions
        .get(id)
        .filter(|s| s.kind == kind && s.room == room)
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "no such session"))
}

pub(super) async fn patch_whip(
    State(state): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut response = patch_session(&state, Kind::Whip, &room, &id, &headers, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    cors(&state, &headers, &mut response);
    response
}

pub(super) async fn patch_whep(
    State(state): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut response = patch_session(&state, Kind::Whep, &room, &id, &headers, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    cors(&state, &headers, &mut response);
    response
}

/// Trickle (204) or an ICE restart (200 with the new credentials and a new ETag).
async fn patch_session(
    state: &WhipState,
    kind: Kind,
    room: &str,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Refusal> {
    precheck(state, headers, Some("application/trickle-ice-sdpfrag"))?;
    let session = find(state, kind, room, id)?;
    let fragment = sdp::fragment(text(body)?)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if let Some(expected) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
        && expected.trim() != "*"
        && expected.trim() != session.etag()
    {
        return Err(Refusal::new(
            StatusCode::PRECONDITION_FAILED,
            "If-Match does not match the session's ETag",
        ));
    }
    let offer = session
        .offer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let (current, _) = sdp::credentials(&offer);
    let restart = fragment.ufrag.is_some() && fragment.ufrag != current;
    if !restart {
        let (reply, result) = oneshot::channel();
        let request = Request::Trickle {
            candidates: fragment.candidates,
            reply,
        };
        ask(&session, request, result).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (Some(ufrag), Some(pwd)) = (fragment.ufrag, fragment.pwd) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "an ICE restart fragment needs a=ice-ufrag and a=ice-pwd",
        ));
    };
    let renewed = sdp::with_credentials(&offer, &ufrag, &pwd);
    let (reply, result) = oneshot::channel();
    let request = Request::Restart {
        offer: renewed.clone(),
        reply,
    };
    let answer = ask(&session, request, result).await?;
    let body = session::restart_fragment(&answer).ok_or_else(|| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the restarted answer has no ICE credentials",
        )
    })?;
    *session
        .offer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = renewed;
    let etag = format!("\"{}\"", random_id());
    *session
        .etag
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = etag.clone();
    let mut response = (StatusCode::OK, body).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    Ok(response)
}

/// Sends `request` to the session's task and waits for its answer.
async fn ask<T>(
    session: &session::Session,
    request: Request,
    result: oneshot::Receiver<Result<T, RequestError>>,
) -> Result<T, Refusal> {
    let gone = || Refusal::new(StatusCode::NOT_FOUND, "the session has ended");
    session.requests.send(request).await.map_err(|_| gone())?;
    Ok(result.await.map_err(|_| gone())??)
}

pub(super) async fn delete_whip(
    State(state): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    delete_session(&state, Kind::Whip, &room, &id, &headers).await
}

pub(super) async fn delete_whep(
    State(state): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    delete_session(&state, Kind::Whep, &room, &id, &headers).await
}

/// Ends the session and answers once its participant has left and its entry is gone.
async fn delete_session(
    state: &WhipState,
    kind: Kind,
    room: &str,
    id: &str,
    headers: &HeaderMap,
) -> Response {
    let deleted = async {
        precheck(state, headers, None)?;
        let session = find(state, kind, room, id)?;
        let close = session
            .close
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(close) = close {
            let (done, freed) = oneshot::channel();
            if close.send(done).is_ok() {
                let _ = freed.await;
            }
        }
        Ok::<_, Refusal>(StatusCode::OK.into_response())
    };
    let mut response = deleted.await.unwrap_or_else(IntoResponse::into_response);
    cors(state, headers, &mut response);
    response
}
