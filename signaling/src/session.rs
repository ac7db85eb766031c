//! One client connection: a state machine from WebSocket frames to SFU calls and back.
//!
//! It is generic over a [`Stream`] of [`Inbound`] frames and a [`Sink`] of [`Outbound`]
//! frames, so it runs over axum's WebSocket in production and over channels in tests.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Sink, SinkExt, Stream, StreamExt};
use sluice_sfu::core::{
    LayerReason, MediaKind as CoreMediaKind, ParticipantId, PublicationId, SubscriptionId,
};
use sluice_sfu::runtime::{
    Participant, ParticipantEvent, ParticipantInfo as CoreParticipantInfo, Permissions,
    PublicationInfo as CorePublicationInfo, RequestError, RoomEvent, Sfu, Source, TrackRequest,
};
use sluice_sfu::transport::{IceCandidate as CoreIceCandidate, PeerRole, TransportError};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::auth::TokenAuthority;
use crate::protocol::{
    ClientMessage, ErrorCode, IceCandidate, LayerActivity, LayerChangeReason, LayerRef, MediaKind,
    ParticipantInfo, PeerTarget, PublicationInfo, RequestId, ServerMessage, SpeakerInfo,
    SubscriptionInfo, TrackSource,
};
use crate::resume::{Attachment, Claimed, Resumable, SessionControl};

/// The temporal layer that means "all of them" (VP8 L1T3 has 3); the room reports it for
/// streams without temporal layers.
const ALL_TEMPORAL_LAYERS: u8 = 2;

/// A frame from the client, as the server layer classified it.
#[derive(Debug)]
pub enum Inbound {
    Text(String),
    /// A binary frame: the protocol is JSON text only.
    Binary,
    /// A message over the size limit; the connection must close with 1009.
    TooLarge,
    /// The client sent a close frame: it ended the connection on purpose (a browser does when
    /// its page goes away), unlike a network drop, which sends none.
    Closed,
}

/// A frame to the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Message(ServerMessage),
    Close { code: u16, reason: String },
}

pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Another connection resumed this participant; the client must not reconnect from this one.
pub const CLOSE_REPLACED: u16 = 4001;
/// Test hook only: the server dropped the socket as a network failure would.
pub const CLOSE_DROPPED_BY_TEST_HOOK: u16 = 4002;

/// How long a `resume` waits for the previous session to hand its participant over.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything sessions share.
#[derive(Clone)]
pub struct SessionContext {
    pub sfu: Sfu,
    pub auth: Arc<TokenAuthority>,
    pub max_message_rate: u32,
    pub max_message_burst: u32,
    /// How long a connection may stay without joining.
    pub join_timeout: Duration,
    /// Flips to true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Participants whose socket dropped, waiting for a `resume`.
    pub resumable: Arc<Resumable>,
}

/// Token bucket over messages: `rate` per second, up to `burst` at once.
#[derive(Debug)]
struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Consecutive refusals; a client that keeps flooding is disconnected.
    refused_in_a_row: u32,
}

impl RateLimiter {
    fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
            refused_in_a_row: 0,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            true
        } else {
            self.refused_in_a_row += 1;
            false
        }
    }
}

/// A request failure on its way to the client.
struct Failure {
    code: ErrorCode,
    message: String,
}

impl Failure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
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
            RequestError::Transport(TransportError::NoFreePort(_) | TransportError::Peer(_)) => {
                ErrorCode::Internal
            }
            RequestError::Transport(_) => ErrorCode::NegotiationFailed,
            _ => ErrorCode::Internal,
        };
        Self::new(code, err.to_string())
    }
}

enum Flow {
    Continue,
    Close {
        code: u16,
        reason: String,
        then: After,
    },
}

/// What becomes of the participant when its session ends.
enum After {
    /// It leaves the room (`leave`, shutdown, a policy close).
    Leave,
    /// The socket dropped: it waits for a `resume` during the grace period.
    Park,
    /// Another connection resumed it.
    HandOver(tokio::sync::oneshot::Sender<Participant>),
}

/// Runs one client connection to its end. Never panics on client input; every request gets
/// exactly one response.
pub async fn run<I, O>(ctx: SessionContext, incoming: I, outgoing: O)
where
    I: Stream<Item = Inbound> + Unpin,
    O: Sink<Outbound> + Unpin,
{
    let span = info_span!("session", participant = tracing::field::Empty);
    Session {
        ctx,
        participant: None,
        attachment: None,
        after_response: Vec::new(),
        limiter: None,
        outgoing,
    }
    .run(incoming)
    .instrument(span)
    .await;
}

struct Session<O> {
    ctx: SessionContext,
    participant: Option<Participant>,
    /// This session's hold on its participant's resume entry.
    attachment: Option<Attachment>,
    /// Events to send right after the current response (a resume's kept events).
    after_response: Vec<ServerMessage>,
    limiter: Option<RateLimiter>,
    outgoing: O,
}

impl<O: Sink<Outbound> + Unpin> Session<O> {
    async fn run<I: Stream<Item = Inbound> + Unpin>(mut self, mut incoming: I) {
        let shutdown = stopped(self.ctx.shutdown.clone());
        tokio::pin!(shutdown);
        let join_deadline = tokio::time::Instant::now() + self.ctx.join_timeout;
        let (close, then) = loop {
            let joined = self.participant.is_some();
            tokio::select! {
                frame = incoming.next() => {
                    // A connection that breaks without a close frame may come back: park.
                    let Some(frame) = frame else { break (None, After::Park) };
                    // A close frame is the client's decision to go: leave at once.
                    if matches!(frame, Inbound::Closed) { break (None, After::Leave) };
                    match self.on_frame(frame).await {
                        Flow::Continue => {}
                        Flow::Close { code, reason, then } => break (Some((code, reason)), then),
                    }
                }
                event = next_event(&mut self.participant) => match event {
                    Some(event) => {
                        if let Some(message) = event_message(event)
                            && self.send(message).await.is_err()
                        {
                            break (None, After::Park);
                        }
                    }
                    // The participant ended under us (should not happen while we hold it).
                    None => break (Some((CLOSE_GOING_AWAY, "participant ended".to_owned())), After::Leave),
                },
                control = next_control(&mut self.attachment) => match control {
                    SessionControl::Takeover(handover) => {
                        info!("resumed on another connection");
                        break (
                            Some((CLOSE_REPLACED, "resumed on another connection".to_owned())),
                            After::HandOver(handover),
                        );
                    }
                    SessionControl::Drop => {
                        info!("socket dropped by the test hook");
                        break (
                            Some((CLOSE_DROPPED_BY_TEST_HOOK, "dropped by test hook".to_owned())),
                            After::Park,
                        );
                    }
                },
                () = tokio::time::sleep_until(join_deadline), if !joined => {
                    break (Some((CLOSE_POLICY, "join timeout".to_owned())), After::Leave);
                }
                () = &mut shutdown => {
                    break (Some((CLOSE_GOING_AWAY, "server shutting down".to_owned())), After::Leave);
                }
            }
        };
        // The participant first: a resuming connection waits for the handover, and a close
        // frame to a dead socket may take long to write.
        self.end(then);
        if let Some((code, reason)) = close {
            let _ = self.outgoing.send(Outbound::Close { code, reason }).await;
        }
    }

    /// Decides the participant's fate once the socket is done.
    fn end(&mut self, then: After) {
        let Some(participant) = self.participant.take() else {
            return;
        };
        let Some(mut attachment) = self.attachment.take() else {
            participant.leave();
            return;
        };
        // A resume that raced with this ending wins: its client is the live one.
        let then = match (attachment.take_takeover(), then) {
            (Some(handover), _) | (None, After::HandOver(handover)) => After::HandOver(handover),
            (None, then) => then,
        };
        match then {
            After::HandOver(handover) => {
                if handover.send(participant).is_err() {
                    debug!("the resuming connection went away before the handover");
                }
            }
            After::Leave => {
                self.ctx.resumable.release(attachment.participant);
                info!("participant left");
                participant.leave();
            }
            After::Park => match self.ctx.resumable.park(&attachment, participant) {
                None => {
                    info!(grace = ?self.ctx.resumable.grace(), "connection dropped; waiting for a resume")
                }
                Some(participant) => match attachment.take_takeover() {
                    Some(handover) => {
                        let _ = handover.send(participant);
                    }
                    None => {
                        info!("participant left");
                        participant.leave();
                    }
                },
            },
        }
    }

    async fn send(&mut self, message: ServerMessage) -> Result<(), ()> {
        self.outgoing
            .send(Outbound::Message(message))
            .await
            .map_err(|_| ())
    }

    async fn on_frame(&mut self, frame: Inbound) -> Flow {
        let text = match frame {
            Inbound::Text(text) => text,
            Inbound::Closed => {
                return Flow::Close {
                    code: CLOSE_NORMAL,
                    reason: String::new(),
                    then: After::Leave,
                };
            }
            Inbound::TooLarge => {
                return Flow::Close {
                    code: CLOSE_TOO_BIG,
                    reason: "message too large".to_owned(),
                    then: After::Leave,
                };
            }
            Inbound::Binary => {
                let _ = self
                    .send(error_message(
                        None,
                        ErrorCode::InvalidMessage,
                        "binary frames are not supported",
                    ))
                    .await;
                return Flow::Continue;
            }
        };
        let now = Instant::now();
        let limiter = self.limiter.get_or_insert_with(|| {
            RateLimiter::new(self.ctx.max_message_rate, self.ctx.max_message_burst, now)
        });
        if !limiter.allow(now) {
            if limiter.refused_in_a_row > 4 * self.ctx.max_message_burst.max(1) {
                return Flow::Close {
                    code: CLOSE_POLICY,
                    reason: "message rate limit exceeded".to_owned(),
                    then: After::Leave,
                };
            }
            let request_id = peek_request_id(&text);
            let _ = self
                .send(error_message(
                    request_id,
                    ErrorCode::RateLimited,
                    "too many messages; slow down",
                ))
                .await;
            return Flow::Continue;
        }
        let message = match parse(&text) {
            Ok(message) => message,
            Err((request_id, reason)) => {
                let _ = self
                    .send(error_message(request_id, ErrorCode::InvalidMessage, reason))
                    .await;
                return Flow::Continue;
            }
        };
        let request_id = message.request_id();
        let leaving = matches!(message, ClientMessage::Leave { .. });
        let response = match self.handle(message).await {
            Ok(response) => response,
            Err(failure) => error_message(Some(request_id), failure.code, failure.message),
        };
        if self.send(response).await.is_err() {
            return Flow::Close {
                code: CLOSE_GOING_AWAY,
                reason: String::new(),
                then: After::Park,
            };
        }
        for message in std::mem::take(&mut self.after_response) {
            if self.send(message).await.is_err() {
                return Flow::Close {
                    code: CLOSE_GOING_AWAY,
                    reason: String::new(),
                    then: After::Park,
                };
            }
        }
        if leaving {
            return Flow::Close {
                code: CLOSE_NORMAL,
                reason: "left".to_owned(),
                then: After::Leave,
            };
        }
        Flow::Continue
    }

    async fn handle(&mut self, message: ClientMessage) -> Result<ServerMessage, Failure> {
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
                Ok(ServerMessage::Ok { request_id })
            }
            ClientMessage::Leave { request_id } => Ok(ServerMessage::Ok { request_id }),
            ClientMessage::Publish {
                request_id,
                sdp,
                tracks,
            } => {
                let tracks = tracks
                    .into_iter()
                    .map(|t| TrackRequest {
                        mid: t.mid,
                        kind: core_kind(t.kind),
                        source: core_source(t.source),
                        name: t.name,
                        rids: t.rids.unwrap_or_default(),
                    })
                    .collect();
                let (sdp, publications) = participant.publish(sdp, tracks).await?;
                Ok(ServerMessage::Published {
                    request_id,
                    sdp,
                    publications: publications.into_iter().map(publication_info).collect(),
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
                let role = match target {
                    PeerTarget::Publisher => PeerRole::Publisher,
                    PeerTarget::Subscriber => PeerRole::Subscriber,
                };
                participant
                    .add_ice_candidate(
                        role,
                        CoreIceCandidate {
                            candidate: candidate.candidate,
                            sdp_mid: candidate.sdp_mid,
                            sdp_m_line_index: candidate.sdp_m_line_index,
                            username_fragment: candidate.username_fragment,
                        },
                    )
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
        let permissions = Permissions {
            can_publish: grants.can_publish,
            can_subscribe: grants.can_subscribe,
        };
        let (participant, snapshot) = self
            .ctx
            .sfu
            .join(&grants.room, grants.identity.clone(), permissions)
            .await?;
        tracing::Span::current().record("participant", tracing::field::display(participant.id()));
        info!(room = %grants.room, identity = %grants.identity, "joined");
        let me = ParticipantInfo {
            participant_id: participant.id().to_string(),
            identity: grants.identity.clone(),
        };
        let (resume_token, attachment) =
            self.ctx
                .resumable
                .register(participant.id(), grants.room.clone(), grants.identity);
        self.participant = Some(participant);
        self.attachment = Some(attachment);
        Ok(ServerMessage::Joined {
            request_id,
            resume_token: resume_token.to_string(),
            room: grants.room,
            participant: me,
            participants: snapshot
                .participants
                .into_iter()
                .map(participant_info)
                .collect(),
            publications: snapshot
                .publications
                .into_iter()
                .map(publication_info)
                .collect(),
        })
    }
}

impl<O: Sink<Outbound> + Unpin> Session<O> {
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
        self.participant = Some(participant);
        self.attachment = Some(claim.attachment);
        self.after_response = kept;
        Ok(ServerMessage::Resumed {
            request_id,
            room: claim.room,
            participant: ParticipantInfo {
                participant_id: id.to_string(),
                identity: claim.identity,
            },
            participants: state
                .room
                .participants
                .into_iter()
                .filter(|p| p.id != id)
                .map(participant_info)
                .collect(),
            publications: state
                .room
                .publications
                .into_iter()
                .map(publication_info)
                .collect(),
            subscriptions: state
                .subscriptions
                .into_iter()
                .map(|(subscription, publication)| SubscriptionInfo {
                    subscription_id: subscription.to_string(),
                    publication_id: publication.to_string(),
                })
                .collect(),
        })
    }
}

async fn next_control(attachment: &mut Option<Attachment>) -> SessionControl {
    match attachment {
        Some(attachment) => match attachment.control.recv().await {
            Some(control) => control,
            // The registry dropped the sender (the entry was released): nothing will come.
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Resolves once the server starts shutting down (never, if the sender is gone without it).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn next_event(participant: &mut Option<Participant>) -> Option<ParticipantEvent> {
    match participant {
        Some(participant) => participant.next_event().await,
        None => std::future::pending().await,
    }
}

/// Parses a frame; on failure returns the request id if one could be found, and why.
fn parse(text: &str) -> Result<ClientMessage, (Option<RequestId>, String)> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| (None, format!("malformed JSON: {e}")))?;
    let request_id = value
        .get("requestId")
        .and_then(serde_json::Value::as_u64)
        .and_then(|id| RequestId::try_from(id).ok());
    serde_json::from_value(value).map_err(|e| (request_id, format!("invalid message: {e}")))
}

fn peek_request_id(text: &str) -> Option<RequestId> {
    parse(text).ok().map(|m| m.request_id())
}

fn parse_id<T: FromStr>(what: &str, id: &str) -> Result<T, Failure> {
    id.parse()
        .map_err(|_| Failure::new(ErrorCode::NotFound, format!("{what} {id:?} not found")))
}

fn error_message(
    request_id: Option<RequestId>,
    code: ErrorCode,
    message: impl Into<String>,
) -> ServerMessage {
    let message = message.into();
    debug!(?request_id, code = code.as_str(), %message, "request failed");
    ServerMessage::Error {
        request_id,
        code,
        message,
    }
}

/// The message a participant event becomes for the client; `None` for the events that are
/// the participant's own business (a probe never leaves its task).
fn event_message(event: ParticipantEvent) -> Option<ServerMessage> {
    Some(match event {
        ParticipantEvent::Offer(sdp) => ServerMessage::Offer { sdp },
        ParticipantEvent::Candidate(role, c) => ServerMessage::Trickle {
            target: match role {
                PeerRole::Publisher => PeerTarget::Publisher,
                PeerRole::Subscriber => PeerTarget::Subscriber,
            },
            candidate: IceCandidate {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_m_line_index: c.sdp_m_line_index,
                username_fragment: c.username_fragment,
            },
        },
        ParticipantEvent::Room(RoomEvent::ParticipantJoined(info)) => {
            ServerMessage::ParticipantJoined {
                participant: participant_info(info),
            }
        }
        ParticipantEvent::Room(RoomEvent::ParticipantLeft(id)) => ServerMessage::ParticipantLeft {
            participant_id: id.to_string(),
        },
        ParticipantEvent::Room(RoomEvent::PublicationAdded(info)) => {
            ServerMessage::PublicationAdded {
                publication: publication_info(info),
            }
        }
        ParticipantEvent::Room(RoomEvent::PublicationRemoved {
            publication,
            participant,
        }) => ServerMessage::PublicationRemoved {
            publication_id: publication.to_string(),
            participant_id: participant.to_string(),
        },
        ParticipantEvent::Room(RoomEvent::LayersChanged(change)) => ServerMessage::LayersChanged {
            subscription_id: change.subscription.to_string(),
            current: change.current.map(|spatial| LayerRef {
                spatial,
                temporal: change.current_temporal.unwrap_or(ALL_TEMPORAL_LAYERS),
            }),
            target: LayerRef {
                spatial: change.target,
                temporal: change.target_temporal,
            },
            reason: match change.reason {
                LayerReason::Requested => LayerChangeReason::Requested,
                LayerReason::Bandwidth => LayerChangeReason::Bandwidth,
                LayerReason::LayerUnavailable => LayerChangeReason::LayerUnavailable,
                LayerReason::Switched => LayerChangeReason::Switched,
            },
        },
        ParticipantEvent::Room(RoomEvent::PublisherLayers {
            publication,
            layers,
        }) => ServerMessage::PublisherLayers {
            publication_id: publication.to_string(),
            layers: layers
                .into_iter()
                .map(|(rid, active)| LayerActivity { rid, active })
                .collect(),
        },
        ParticipantEvent::Room(RoomEvent::ActiveSpeakers(speakers)) => {
            ServerMessage::ActiveSpeakers {
                speakers: speakers
                    .into_iter()
                    .map(|(participant, level)| SpeakerInfo {
                        participant_id: participant.to_string(),
                        // Four decimals tell -70 dBov from silence; more is noise on the wire.
                        level: (f64::from(level) * 10_000.0).round() / 10_000.0,
                    })
                    .collect(),
            }
        }
        // A subscriber task's own business, never the client's.
        ParticipantEvent::Room(RoomEvent::Probe { .. } | RoomEvent::PathCongested) => return None,
    })
}

fn participant_info(info: CoreParticipantInfo) -> ParticipantInfo {
    ParticipantInfo {
        participant_id: info.id.to_string(),
        identity: info.identity,
    }
}

fn publication_info(info: CorePublicationInfo) -> PublicationInfo {
    PublicationInfo {
        publication_id: info.id.to_string(),
        participant_id: info.participant.to_string(),
        kind: match info.kind {
            CoreMediaKind::Audio => MediaKind::Audio,
            CoreMediaKind::Video => MediaKind::Video,
        },
        source: match info.source {
            Source::Camera => TrackSource::Camera,
            Source::Microphone => TrackSource::Microphone,
            Source::Screen => TrackSource::Screen,
            Source::Rtmp => TrackSource::Rtmp,
            Source::Other => TrackSource::Other,
        },
        name: info.name,
        codec: info.codec,
        rids: (!info.rids.is_empty()).then_some(info.rids),
    }
}

fn core_kind(kind: MediaKind) -> CoreMediaKind {
    match kind {
        MediaKind::Audio => CoreMediaKind::Audio,
        MediaKind::Video => CoreMediaKind::Video,
    }
}

fn core_source(source: TrackSource) -> Source {
    match source {
        TrackSource::Camera => Source::Camera,
        TrackSource::Microphone => Source::Microphone,
        TrackSource::Screen => Source::Screen,
        TrackSource::Rtmp => Source::Rtmp,
        TrackSource::Other => Source::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_allows_burst_then_refills() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 20, start);
        assert!((0..20).all(|_| limiter.allow(start)));
        assert!(!limiter.allow(start));
        assert!(limiter.allow(start + Duration::from_millis(150)));
    }

    #[test]
    fn parse_reports_request_id_when_it_can() {
        assert_eq!(parse("{").err().map(|e| e.0), Some(None));
        assert_eq!(
            parse(r#"{"type":"nope","requestId":7}"#).err().map(|e| e.0),
            Some(Some(7))
        );
        assert_eq!(
            parse(r#"{"type":"join","requestId":3}"#).err().map(|e| e.0),
            Some(Some(3))
        );
        assert!(parse(r#"{"type":"leave","requestId":1}"#).is_ok());
    }
}
