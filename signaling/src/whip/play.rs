//! `POST /whep/{room}[/{publication}]`: a viewer's recvonly offer is answered with the room's
//! media (or one publication's, with the same publisher's track of the other kind) on a
//! subscriber connection with the full downlink machinery: layer by the viewer's bandwidth
//! estimate, keyframe-gated switches, NACK/RTX. `?layer=q|h|f` (or `0|1|2`) caps the video's
//! simulcast layer.
//!
//! A room session follows the room: a track whose publication ends moves to another of its
//! kind and codec, now or once one is published, on the same SSRC (`sluice_sfu::shard`'s
//! `follow`); a section nothing in the room fits yet waits for a publication of the first
//! codec it lists that Sluice forwards, so a session may start in an empty room. A
//! publication session plays that publisher's tracks: one that ends stops its track, and the
//! session ends with the last of them.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sluice_sfu::core::{ParticipantId, PublicationId};
use sluice_sfu::runtime::{Permissions, PublicationInfo};
use sluice_sfu::shard::{WhepOptions, WhepSource};
use sluice_sfu::transport::forwarded_codec;
use tracing::info;

use super::sdp::{self, Section};
use super::{Kind, Refusal, WhipState, bearer, created, from_loopback, precheck, register, text};

#[derive(Debug, Default, Deserialize)]
pub(super) struct PlayQuery {
    /// The highest simulcast layer wanted: `q`, `h`, `f` or its index.
    layer: Option<String>,
}

pub(super) async fn post_room(
    State(state): State<WhipState>,
    Path(room): Path<String>,
    Query(query): Query<PlayQuery>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(
        &state,
        &headers,
        play(&state, &room, None, &query, &peer, &headers, &body).await,
    )
}

pub(super) async fn post_publication(
    State(state): State<WhipState>,
    Path((room, publication)): Path<(String, String)>,
    Query(query): Query<PlayQuery>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let played = play(
        &state,
        &room,
        Some(&publication),
        &query,
        &peer,
        &headers,
        &body,
    )
    .await;
    respond(&state, &headers, played)
}

fn respond(state: &WhipState, headers: &HeaderMap, played: Result<Response, Refusal>) -> Response {
    played.unwrap_or_else(|refusal| {
        let mut response = refusal.into_response();
        super::cors(state, headers, &mut response);
        response
    })
}

async fn play(
    state: &WhipState,
    room: &str,
    publication: Option<&str>,
    query: &PlayQuery,
    peer: &ConnectInfo<SocketAddr>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Refusal> {
    precheck(state, headers, Some("application/sdp"))?;
    super::refuse_while_draining(state)?;
    let identity = authorize(state, headers, peer, room)?;
    let max_spatial = query.layer.as_deref().map(parse_layer).transpose()?;
    let offer = text(body)?;
    let sections =
        sdp::sections(offer).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let receiving: Vec<&Section> = sections.iter().filter(|s| s.receives).collect();
    if receiving.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "the offer receives no audio or video (a WHEP offer is recvonly)",
        ));
    }
    let available = state.sfu.room_publications(room).await.unwrap_or_default();
    if publication.is_some() && available.is_empty() {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("room {room:?} publishes nothing"),
        ));
    }
    let wanted = match publication {
        Some(text) => {
            let id: PublicationId = text.parse().map_err(|_| {
                Refusal::new(StatusCode::NOT_FOUND, format!("no publication {text:?}"))
            })?;
            let first = available.iter().find(|p| p.id == id).ok_or_else(|| {
                Refusal::new(StatusCode::NOT_FOUND, format!("no publication {text:?}"))
            })?;
            Some(first.clone())
        }
        None => None,
    };
    let chosen = pair(&receiving, &available, wanted.as_ref())?;
    let owner = format!("{room}/{identity}");
    if !state
        .sessions
        .has_room_for(&owner, super::MAX_SESSIONS_PER_CREDENTIAL)
    {
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "at most {} sessions per credential",
                super::MAX_SESSIONS_PER_CREDENTIAL
            ),
        ));
    }
    // Refused at the server's capacity before it joins: the room never sees the viewer.
    state.sfu.check_subscriber_admission(room)?;
    let permissions = Permissions {
        can_publish: false,
        can_subscribe: true,
    };
    let (participant, _) = state.sfu.join(room, identity.clone(), permissions).await?;
    let options = WhepOptions {
        max_spatial,
        follow_room: wanted.is_none(),
    };
    let answer = participant
        .whep(offer.to_owned(), chosen.clone(), options)
        .await?;
    // A room session lives on while its publications come and go; a publication session
    // ends with what it plays.
    let playing = if options.follow_room {
        Vec::new()
    } else {
        chosen
            .iter()
            .filter_map(|source| match source {
                WhepSource::Publication(id) => Some(*id),
                WhepSource::Waiting(_) => None,
            })
            .collect()
    };
    let Some((id, etag)) = register(
        state,
        Kind::Whep,
        room,
        owner,
        offer,
        participant,
        playing,
        None,
    ) else {
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many sessions for this credential",
        ));
    };
    info!(%room, %identity, session = %super::session::log_name(&id), tracks = chosen.len(), follows_room = options.follow_room, ?max_spatial, "WHEP session created");
    Ok(created(
        state,
        headers,
        Kind::Whep,
        room,
        &id,
        &etag,
        answer.sdp,
    ))
}

/// `q`/`h`/`f` or `0`/`1`/`2`.
fn parse_layer(layer: &str) -> Result<u8, Refusal> {
    match layer {
        "q" | "0" => Ok(0),
        "h" | "1" => Ok(1),
        "f" | "2" => Ok(2),
        other => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("layer must be q, h, f, 0, 1 or 2, not {other:?}"),
        )),
    }
}

/// One source per receiving section, by kind and in the offer's order: the asked publication
/// first, then its publisher's other tracks, then anyone's. Without an asked publication (a
/// room session), a section nothing fits waits for a publication of the first codec it lists
/// that Sluice forwards. Nothing to play at all is refused: 406 when the room has publications
/// the offer's codecs cannot carry, else 404.
fn pair(
    receiving: &[&Section],
    available: &[PublicationInfo],
    wanted: Option<&PublicationInfo>,
) -> Result<Vec<WhepSource>, Refusal> {
    let lead: Option<ParticipantId> = wanted.map(|p| p.participant).or_else(|| {
        // The room's first video publisher leads, so audio and video come from one source.
        available
            .iter()
            .find(|p| p.kind == sluice_sfu::core::MediaKind::Video)
            .map(|p| p.participant)
    });
    let mut ranked: Vec<&PublicationInfo> = available.iter().collect();
    ranked.sort_by_key(|p| {
        let asked = wanted.is_some_and(|w| w.id == p.id);
        let same = Some(p.participant) == lead;
        (!asked, !same, p.id.0)
    });
    if wanted.is_some() {
        ranked.retain(|p| Some(p.participant) == lead);
    }
    let mut chosen: Vec<PublicationId> = Vec::new();
    let mut sources = Vec::new();
    let mut refused_codecs = Vec::new();
    for section in receiving {
        let fits = ranked.iter().position(|p| {
            p.kind == section.kind && !chosen.contains(&p.id) && carries(section, &p.codec)
        });
        if let Some(i) = fits {
            chosen.push(ranked[i].id);
            sources.push(WhepSource::Publication(ranked[i].id));
            continue;
        }
        let waiting = section.codecs.iter().find_map(|c| forwarded_codec(c));
        match waiting {
            Some(codec) if wanted.is_none() => sources.push(WhepSource::Waiting(codec)),
            _ => refused_codecs.extend(
                ranked
                    .iter()
                    .filter(|p| p.kind == section.kind && !chosen.contains(&p.id))
                    .map(|p| p.codec.clone()),
            ),
        }
    }
    if sources.is_empty() {
        if !refused_codecs.is_empty() {
            refused_codecs.sort_unstable();
            refused_codecs.dedup();
            return Err(Refusal::new(
                StatusCode::NOT_ACCEPTABLE,
                format!("the offer can receive none of the room's codecs: {refused_codecs:?}"),
            ));
        }
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "nothing published of the kinds the offer receives",
        ));
    }
    Ok(sources)
}

/// Whether a section lists the codec of a publication (`video/VP8`).
fn carries(section: &Section, mime: &str) -> bool {
    let name = mime.split_once('/').map_or(mime, |(_, n)| n);
    section.codecs.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// A canSubscribe token for this room; without one, demo mode lets loopback clients play.
pub(super) fn authorize(
    state: &WhipState,
    headers: &HeaderMap,
    peer: &ConnectInfo<SocketAddr>,
    room: &str,
) -> Result<String, Refusal> {
    let Some(token) = bearer(headers) else {
        if state.demo && from_loopback(peer, headers) {
            return Ok(format!("whep-{:08x}", rand::random::<u32>()));
        }
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer <room token with canSubscribe> required",
        ));
    };
    let grants = state
        .auth
        .verify(token)
        .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, format!("invalid token: {e}")))?;
    if grants.room != room {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "the token is for another room",
        ));
    }
    if !grants.can_subscribe {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "the token does not allow subscribing",
        ));
    }
    Ok(grants.identity)
}

#[cfg(test)]
mod tests {
    use sluice_sfu::core::MediaKind;
    use sluice_sfu::runtime::TrackSource;

    use super::*;

    fn publication(id: u64, participant: u64, kind: MediaKind, codec: &str) -> PublicationInfo {
        PublicationInfo {
            id: PublicationId(id),
            participant: ParticipantId(participant),
            kind,
            source: TrackSource::Other,
            name: None,
            codec: codec.to_owned(),
            rids: Vec::new(),
            muted: false,
        }
    }

    fn section(kind: MediaKind, codecs: &[&str]) -> Section {
        Section {
            kind,
            mid: "0".to_owned(),
            sends: false,
            receives: true,
            codecs: codecs.iter().map(|c| (*c).to_owned()).collect(),
            rids: Vec::new(),
        }
    }

    fn room() -> Vec<PublicationInfo> {
        vec![
            publication(1, 10, MediaKind::Audio, "audio/opus"),
            publication(2, 20, MediaKind::Audio, "audio/opus"),
            publication(3, 20, MediaKind::Video, "video/VP8"),
            publication(4, 10, MediaKind::Video, "video/H264"),
        ]
    }

    fn played(sources: Vec<WhepSource>) -> Vec<Option<PublicationId>> {
        sources
            .into_iter()
            .map(|source| match source {
                WhepSource::Publication(id) => Some(id),
                WhepSource::Waiting(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_first_video_publisher_plays_with_its_own_audio() {
        let audio = section(MediaKind::Audio, &["opus"]);
        let video = section(MediaKind::Video, &["VP8", "H264"]);
        let chosen = pair(&[&audio, &video], &room(), None)
            .map(played)
            .map_err(|r| r.why);
        assert_eq!(
            chosen,
            Ok(vec![Some(PublicationId(2)), Some(PublicationId(3))])
        );
    }

    #[test]
    fn a_room_session_waits_on_sections_nothing_fits_yet() {
        let audio = section(MediaKind::Audio, &["opus"]);
        let video = section(MediaKind::Video, &["AV1", "H264", "VP8"]);
        let Ok(sources) = pair(&[&audio, &video], &[], None) else {
            panic!("an empty room is played by waiting tracks");
        };
        let codecs: Vec<String> = sources
            .iter()
            .map(|s| match s {
                WhepSource::Waiting(codec) => codec.mime_type.clone(),
                WhepSource::Publication(id) => format!("{id}"),
            })
            .collect();
        assert_eq!(
            codecs,
            ["audio/opus", "video/H264"],
            "the first codec Sluice forwards"
        );
        let audio_only = vec![publication(1, 10, MediaKind::Audio, "audio/opus")];
        let chosen = pair(&[&audio, &video], &audio_only, None)
            .map(played)
            .map_err(|r| r.why);
        assert_eq!(chosen, Ok(vec![Some(PublicationId(1)), None]));
        // A publication session never waits.
        let only_audio = pair(&[&audio, &video], &audio_only, Some(&audio_only[0]))
            .map(played)
            .map_err(|r| r.why);
        assert_eq!(only_audio, Ok(vec![Some(PublicationId(1))]));
    }

    #[test]
    fn an_asked_publication_brings_its_publishers_other_track_only() {
        let audio = section(MediaKind::Audio, &["opus"]);
        let video = section(MediaKind::Video, &["VP8", "H264"]);
        let available = room();
        let chosen = pair(&[&audio, &video], &available, Some(&available[3]))
            .map(played)
            .map_err(|r| r.why);
        assert_eq!(
            chosen,
            Ok(vec![Some(PublicationId(1)), Some(PublicationId(4))])
        );
        let only_video = pair(&[&video], &available, Some(&available[0]))
            .map(played)
            .map_err(|r| r.status);
        assert_eq!(only_video, Ok(vec![Some(PublicationId(4))]));
    }

    #[test]
    fn a_section_without_the_codec_takes_another_publication_or_refuses() {
        let vp8_only = section(MediaKind::Video, &["VP8"]);
        let chosen = pair(&[&vp8_only], &room(), None)
            .map(played)
            .map_err(|r| r.why);
        assert_eq!(chosen, Ok(vec![Some(PublicationId(3))]));
        let av1 = section(MediaKind::Video, &["AV1"]);
        let refused = pair(&[&av1], &room(), None).map_err(|r| (r.status, r.why));
        let Err((status, reason)) = refused else {
            panic!("an AV1-only offer cannot play VP8 or H.264");
        };
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
        assert!(
            reason.contains("video/H264") && reason.contains("video/VP8"),
            "{reason}"
        );
        let nothing = pair(&[&av1], &[], None).map_err(|r| r.status);
        assert_eq!(nothing, Err(StatusCode::NOT_FOUND));
    }

    #[test]
    fn layers_by_name_or_index() {
        assert_eq!(parse_layer("q").ok(), Some(0));
        assert_eq!(parse_layer("1").ok(), Some(1));
        assert_eq!(parse_layer("f").ok(), Some(2));
        assert!(parse_layer("x").is_err());
    }
}
