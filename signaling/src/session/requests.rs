//! Handling of each client request once it parsed: `join`, `resume`, and the requests of a
//! joined participant, each answered with exactly one response or a [`Failure`].

use std::str::FromStr;
use std::time::Duration;

use sluice_sfu::core::{ParticipantId, PublicationId, SubscriptionId};
use sluice_sfu::runtime::{
    ParticipantEvent, Permissions, Profile, RequestError, RoomEvent, TrackRequest,
};
use sluice_sfu::transport::TransportError;
use tracing::{debug, info, warn};

use super::Session;
use super::wire::event_message;
use crate::protocol::{
    ClientMessage, ErrorCode, MAX_TRICKLED_CANDIDATES, ParticipantInfo, PeerRole, PublicationInfo,
    RequestId, ServerMessage, SubscriptionInfo,
};
use crate::resume::{Claimed, Evicted};

/// How long a `resume` waits for the previous session to hand its participant over, and a
/// `join` for the participant of the same identity it replaces to end.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// A request failure on its way to the client.
pub(super) struct Failure {
    pub(super) code: ErrorCode,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<RequestError> for Failure {
    fn from(err: RequestError) -> Self {
        let code = match &err {
            RequestError::NotFound(_) => ErrorCode::NotFound,
            RequestError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            RequestError::Invalid(_) => ErrorCode::InvalidMessage,
            RequestError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            RequestError::ServerFull(_) => ErrorCode::ServerFull,
            RequestError::Transport(TransportError::Peer(_)) => ErrorCode::Internal,
            RequestError::Transport(_) => ErrorCode::NegotiationFailed,
            _ => ErrorCode::Internal,
        };
        Self::new(code, err.to_string())
    }
}

impl Session {
    /// Answers one parsed request.
    pub(super) async fn handle(
        &mut self,
        message: ClientMessage,
    ) -> Result<ServerMessage, Failure> {
        if let ClientMessage::Join {
            request_id,
            token,
            room,
        } = message
        {
            return self.join(request_id, &token, room.as_deref()).await;
        }
        if let ClientMessage::Resume {
            request_id,
            participant_id,
            resume_token,
        } = message
        {
            return self
                .resume(request_id, &participant_id, &resume_token)
                .await;
        }
        if let ClientMessage::Ping { request_id } = message {
            return Ok(ServerMessage::Ok { request_id });
        }
        let Some(participant) = &self.participant else {
            return Err(Failure::new(ErrorCode::NotJoined, "send join first"));
        };
        match message {
            ClientMessage::Join { .. }
            | ClientMessage::Resume { .. }
            | ClientMessage::Ping { .. } => {
                unreachable!("handled above")
            }
            ClientMessage::RestartIce { request_id } => {
                participant.restart_ice().await?;
                self.trickled[trickle_slot(PeerRole::Subscriber)] = 0;
                Ok(ServerMessage::Ok { request_id })
            }
            ClientMessage::Leave { request_id } => Ok(ServerMessage::Ok { request_id }),
            ClientMessage::Publish {
                request_id,
                sdp,
                tracks,
            } => {
                // An offer without tracks is the client's ICE restart of its publisher.
                if tracks.is_empty() {
                    self.trickled[trickle_slot(PeerRole::Publisher)] = 0;
                }
                let tracks = tracks.into_iter().map(TrackRequest::from).collect();
                let (sdp, publications) = participant.publish(sdp, tracks).await?;
                Ok(ServerMessage::Published {
                    request_id,
                    sdp,
                    publications: publications
                        .into_iter()
                        .map(PublicationInfo::from)
                        .collect(),
                })
            }
            ClientMessage::Unpublish {
                request_id,
                publication_id,
            } => {
                let id = parse_id::<PublicationId>("publication", &publication_id)?;
                participant.unpublish(id).await?;
                Ok(ServerMessage::Ok { request_id })
            }
            ClientMessage::SetMuted {
                request_id,
                publication_id,
                muted,
            } => {
                let id = parse_id::<PublicationId>("publication", &publication_id)?;
                participant.set_muted(id, muted).await?;
                Ok(ServerMessage::Ok { request_id })
            }
            ClientMessage::Subscribe {
                request_id,
                publication_id,
            } => {
                let id = parse_id::<PublicationId>("publication", &publication_id)?;
                let subscription = participant.subscribe(id).await?;
                Ok(ServerMessage::Subscribed {
                    request_id,
                    subscription_id: subscription.to_string(),
                    publication_id,
                })
            }
            ClientMessage::Unsubscribe {
                request_id,
                subscription_id,
            } => {
                let id = parse_id::<SubscriptionId>("subscription", &subscription_id)?;
                participant.unsubscribe(id).await?;
                Ok(ServerMessage::Ok { request_id })
            }
            ClientMessage::Answer { request_id, sdp } => {
                participant.apply_answer(sdp).await?;
                Ok(ServerMessage::Ok { request_id })
            }
            ClientMessage::SetPreferredLayer {
                request_id,
                subscription_id,
                spatial,
                temporal,
            } => {
                let id = parse_id::<SubscriptionId>("subscription", &subscription_id)?;
                participant
                    .set_preferred_layer(id, spatial, temporal)
                    .await?;
                Ok(ServerMessage::Ok { request_id })
            }
            ClientMessage::SetSubscriptionPaused {
                request_id,
                subscription_id,
                paused,
            } => {
                let id = parse_id::<SubscriptionId>("subscription", &subscription_id)?;
                participant.set_paused(id, paused).await?;
                Ok(ServerMessage::Ok { request_id })
            }
            ClientMessage::Trickle {
                request_id,
                target,
                candidate,
            } => {
                let trickled = &mut self.trickled[trickle_slot(target)];
                if *trickled >= MAX_TRICKLED_CANDIDATES {
                    return Err(Failure::new(
                        ErrorCode::LimitExceeded,
                        format!(
                            "at most {MAX_TRICKLED_CANDIDATES} candidates per peer connection until an ICE restart"
                        ),
                    ));
                }
                *trickled += 1;
                participant
                    .add_ice_candidate(target.into(), candidate.into())
                    .await?;
                Ok(ServerMessage::Ok { request_id })
            }
        }
    }

    async fn join(
        &mut self,
        request_id: RequestId,
        token: &str,
        room: Option<&str>,
    ) -> Result<ServerMessage, Failure> {
        if self.participant.is_some() {
            return Err(Failure::new(
                ErrorCode::AlreadyJoined,
                "this connection already joined",
            ));
        }
        let grants = self.ctx.auth.verify(token).map_err(|err| {
            Failure::new(ErrorCode::Unauthorized, format!("invalid token: {err}"))
        })?;
        if room.is_some_and(|room| room != grants.room) {
            return Err(Failure::new(
                ErrorCode::Unauthorized,
                "the token is for another room",
            ));
        }
        // One participant per identity per room: the newer join replaces the older, which
        // leaves first.
        for evicted in self.ctx.resumable.evict(&grants.room, &grants.identity) {
            let ended = async {
                match evicted {
                    Evicted::Session(ended) => {
                        let _ = ended.await;
                    }
                    Evicted::Parked(participant) => participant.leave_and_wait().await,
                }
            };
            if tokio::time::timeout(TAKEOVER_TIMEOUT, ended).await.is_err() {
                warn!(identity = %grants.identity, "the replaced participant did not end in time");
            }
        }
        let permissions = Permissions {
            can_publish: grants.can_publish,
            can_subscribe: grants.can_subscribe,
        };
        let profile = Profile {
            identity: grants.identity.clone(),
            name: grants.name.clone(),
            metadata: grants.metadata.clone(),
        };
        let (participant, snapshot) = self
            .ctx
            .sfu
            .join_as(&grants.room, profile, permissions)
            .await?;
        tracing::Span::current().record("participant", tracing::field::display(participant.id()));
        info!(room = %grants.room, identity = %grants.identity, "joined");
        let me = ParticipantInfo {
            participant_id: participant.id().to_string(),
            identity: grants.identity.clone(),
            name: grants.name,
            metadata: grants.metadata,
        };
        let (resume_token, attachment) =
            self.ctx
                .resumable
                .register(participant.id(), grants.room.clone(), grants.identity);
        self.participant = Some(participant);
        self.attachment = Some(attachment);
        let fallback_urls = self.ctx.fallback_urls(&grants.room);
        Ok(ServerMessage::Joined {
            request_id,
            resume_token: resume_token.to_string(),
            room: grants.room,
            participant: me,
            participants: snapshot
                .participants
                .into_iter()
                .map(ParticipantInfo::from)
                .collect(),
            publications: snapshot
                .publications
                .into_iter()
                .map(PublicationInfo::from)
                .collect(),
            fallback_urls,
        })
    }

    /// Re-attaches a participant whose connection dropped (or is being replaced).
    async fn resume(
        &mut self,
        request_id: RequestId,
        participant_id: &str,
        resume_token: &str,
    ) -> Result<ServerMessage, Failure> {
        if self.participant.is_some() {
            return Err(Failure::new(
                ErrorCode::AlreadyJoined,
                "this connection already joined",
            ));
        }
        let refused = || {
            Failure::new(
                ErrorCode::ResumeFailed,
                "nothing to resume (unknown participant, wrong token or grace period over): join again",
            )
        };
        let id: ParticipantId = participant_id.parse().map_err(|_| refused())?;
        let claim = self.ctx.resumable.claim(id, resume_token).map_err(|err| {
            debug!(participant = %id, %err, "resume refused");
            refused()
        })?;
        let mut participant = match claim.participant {
            Claimed::Parked(participant) => participant,
            Claimed::Takeover(handover) => {
                match tokio::time::timeout(TAKEOVER_TIMEOUT, handover).await {
                    Ok(Ok(participant)) => participant,
                    _ => {
                        warn!(participant = %id, "the previous connection did not hand over");
                        self.ctx.resumable.release(id);
                        return Err(refused());
                    }
                }
            }
        };
        // What happened while nobody read is summed up by the room state below; only the
        // layer events, which the snapshot does not carry, are still worth sending.
        let kept: Vec<ServerMessage> = participant
            .take_queued_events()
            .into_iter()
            .filter(|event| {
                matches!(
                    event,
                    ParticipantEvent::Room(
                        RoomEvent::LayersChanged(_) | RoomEvent::PublisherLayers { .. }
                    )
                )
            })
            .filter_map(event_message)
            .collect();
        let state = match participant.resume().await {
            Ok(state) => state,
            Err(err) => {
                self.ctx.resumable.release(id);
                return Err(err.into());
            }
        };
        tracing::Span::current().record("participant", tracing::field::display(id));
        info!(room = %claim.room, identity = %claim.identity, "resumed");
        let (mine, others): (Vec<_>, Vec<_>) = state
            .room
            .participants
            .into_iter()
            .partition(|p| p.id == id);
        let me = mine
            .into_iter()
            .next()
            .map(ParticipantInfo::from)
            .unwrap_or_else(|| ParticipantInfo {
                participant_id: id.to_string(),
                identity: claim.identity,
                name: None,
                metadata: None,
            });
        self.participant = Some(participant);
        self.attachment = Some(claim.attachment);
        self.after_response = kept;
        let fallback_urls = self.ctx.fallback_urls(&claim.room);
        Ok(ServerMessage::Resumed {
            request_id,
            room: claim.room,
            participant: me,
            participants: others.into_iter().map(ParticipantInfo::from).collect(),
            publications: state
                .room
                .publications
                .into_iter()
                .map(PublicationInfo::from)
                .collect(),
            subscriptions: state
                .subscriptions
                .into_iter()
                .map(|(subscription, publication)| SubscriptionInfo {
                    subscription_id: subscription.to_string(),
                    publication_id: publication.to_string(),
                })
                .collect(),
            fallback_urls,
        })
    }
}

/// Where a connection's trickled candidates are counted.
fn trickle_slot(target: PeerRole) -> usize {
    match target {
        PeerRole::Publisher => 0,
        PeerRole::Subscriber => 1,
    }
}

fn parse_id<T: FromStr>(what: &str, id: &str) -> Result<T, Failure> {
    id.parse()
        .map_err(|_| Failure::new(ErrorCode::NotFound, format!("{what} {id:?} not found")))
}
