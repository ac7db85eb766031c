//! Bounds on every string and list a client sends, checked once when a message is parsed
//! ([`ClientMessage::check_limits`]), so no field of absurd length reaches the media plane or
//! is replayed to the other participants. SDPs are bounded by the frame size
//! (`max_message_bytes`, 64 KiB by default); identities and room names by the token's own
//! checks (`crate::auth`), and the token's length too.

use super::{ClientMessage, IceCandidate, TrackInfo};

/// A room name or a track name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// An id: publication, subscription, participant, a `mid`, a `rid`, an `sdpMid`, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// A resume token (32 hex digits), in bytes.
pub const MAX_RESUME_TOKEN_BYTES: usize = 64;
/// An ICE candidate line, in bytes (a real one is under 200).
pub const MAX_CANDIDATE_BYTES: usize = 512;
/// An ICE username fragment, in bytes (RFC 8839 allows at most 256 characters).
pub const MAX_UFRAG_BYTES: usize = 256;
/// Tracks in one `publish`.
pub const MAX_TRACKS_PER_PUBLISH: usize = 16;
/// Simulcast encodings of one track.
pub const MAX_RIDS_PER_TRACK: usize = 8;
/// Candidates a client may trickle to one of its peer connections, counted again from zero
/// at each ICE restart (checked by the session, answered `limitExceeded`).
pub const MAX_TRICKLED_CANDIDATES: usize = 64;

/// A field over its bound; the message names the field as the wire spells it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    #[error("`{field}` is too long: {len} bytes, at most {max}")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("`{field}` has too many entries: {count}, at most {max}")]
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
}

fn check(field: impl FnOnce() -> String, value: &str, max: usize) -> Result<(), FieldError> {
    if value.len() > max {
        return Err(FieldError::TooLong {
            field: field(),
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn count(field: &str, count: usize, max: usize) -> Result<(), FieldError> {
    if count > max {
        return Err(FieldError::TooMany {
            field: field.to_owned(),
            count,
            max,
        });
    }
    Ok(())
}

impl ClientMessage {
    /// Checks every string and list of the message against its bound.
    pub fn check_limits(&self) -> Result<(), FieldError> {
        match self {
            // The token's length is the token check's own (`unauthorized`).
            Self::Join { room, .. } => {
                if let Some(room) = room {
                    check(|| "room".into(), room, MAX_NAME_BYTES)?;
                }
            }
            Self::Publish { tracks, .. } => {
                count("tracks", tracks.len(), MAX_TRACKS_PER_PUBLISH)?;
                for (i, track) in tracks.iter().enumerate() {
                    check_track(i, track)?;
                }
            }
            Self::Unpublish { publication_id, .. }
            | Self::SetMuted { publication_id, .. }
            | Self::Subscribe { publication_id, .. } => {
                check(|| "publicationId".into(), publication_id, MAX_ID_BYTES)?;
            }
            Self::Unsubscribe {
                subscription_id, ..
            }
            | Self::SetPreferredLayer {
                subscription_id, ..
            }
            | Self::SetSubscriptionPaused {
                subscription_id, ..
            } => check(|| "subscriptionId".into(), subscription_id, MAX_ID_BYTES)?,
            Self::Trickle { candidate, .. } => check_candidate(candidate)?,
            Self::Resume {
                participant_id,
                resume_token,
                ..
            } => {
                check(|| "participantId".into(), participant_id, MAX_ID_BYTES)?;
                check(
                    || "resumeToken".into(),
                    resume_token,
                    MAX_RESUME_TOKEN_BYTES,
                )?;
            }
            Self::Answer { .. }
            | Self::Ping { .. }
            | Self::Leave { .. }
            | Self::RestartIce { .. } => {}
        }
        Ok(())
    }
}

fn check_track(i: usize, track: &TrackInfo) -> Result<(), FieldError> {
    check(|| format!("tracks[{i}].mid"), &track.mid, MAX_ID_BYTES)?;
    if let Some(name) = &track.name {
        check(|| format!("tracks[{i}].name"), name, MAX_NAME_BYTES)?;
    }
    if let Some(rids) = &track.rids {
        count(&format!("tracks[{i}].rids"), rids.len(), MAX_RIDS_PER_TRACK)?;
        for (j, rid) in rids.iter().enumerate() {
            check(|| format!("tracks[{i}].rids[{j}]"), rid, MAX_ID_BYTES)?;
        }
    }
    Ok(())
}

fn check_candidate(candidate: &IceCandidate) -> Result<(), FieldError> {
    check(
        || "candidate.candidate".into(),
        &candidate.candidate,
        MAX_CANDIDATE_BYTES,
    )?;
    if let Some(mid) = &candidate.sdp_mid {
        check(|| "candidate.sdpMid".into(), mid, MAX_ID_BYTES)?;
    }
    if let Some(ufrag) = &candidate.username_fragment {
        check(
            || "candidate.usernameFragment".into(),
            ufrag,
            MAX_UFRAG_BYTES,
        )?;
    }
    Ok(())
}
