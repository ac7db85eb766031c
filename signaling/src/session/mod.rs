//! One client connection: a state machine from WebSocket frames to SFU calls and back.
//!
//! It is generic over a [`Stream`] of [`Inbound`] frames and a [`Sink`] of [`Outbound`]
//! frames, so it runs over axum's WebSocket in production and over in-memory channels in its
//! tests. `requests` answers each request, `wire` maps the media plane's types to the
//! protocol's, `rate_limit` holds each connection to its message rate, `outbox` bounds what
//! waits to be written to a client that does not read, `counters` counts the open sessions
//! (for `/metrics` and the drain).

mod counters;
mod outbox;
mod rate_limit;
mod requests;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Sink, Stream, StreamExt};
use sluice_sfu::runtime::{Participant, ParticipantEvent, Sfu};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span};

pub use self::counters::SessionCounters;
pub use self::outbox::{DEFAULT_OUTBOUND_BYTES, DEFAULT_OUTBOUND_QUEUE, DEFAULT_SEND_DEADLINE};
use self::outbox::{Outbox, Refused};
use self::rate_limit::{RateLimiter, Verdict};
use self::wire::event_message;
use crate::auth::TokenAuthority;
use crate::protocol::{ClientMessage, CloseCode, ErrorCode, RequestId, ServerMessage};
use crate::resume::{Attachment, Resumable, SessionControl};

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
    /// Boxed: a connection's queue allocates its slots in blocks of 32, and a server message
    /// is ten times the size of the pointer.
    Message(Box<ServerMessage>),
    Close {
        code: u16,
        reason: String,
    },
}

pub const CLOSE_NORMAL: u16 = CloseCode::Normal.code();
pub const CLOSE_GOING_AWAY: u16 = CloseCode::GoingAway.code();
pub const CLOSE_POLICY: u16 = CloseCode::Policy.code();
pub const CLOSE_TOO_BIG: u16 = CloseCode::TooBig.code();
/// Another connection resumed this participant, or a newer join of its identity replaced it;
/// the client must not reconnect from this one.
pub const CLOSE_REPLACED: u16 = CloseCode::Replaced.code();
/// The application removed the participant or closed the room; the client must not reconnect.
pub const CLOSE_REMOVED: u16 = CloseCode::Removed.code();
/// Test hook only: the server dropped the socket as a network failure would.
pub const CLOSE_DROPPED_BY_TEST_HOOK: u16 = CloseCode::DroppedByTestHook.code();

/// Everything sessions share.
#[derive(Clone)]
pub struct SessionContext {
    pub sfu: Sfu,
    pub auth: Arc<TokenAuthority>,
    pub max_message_rate: u32,
    pub max_message_burst: u32,
    /// How long a connection may stay without joining.
    pub join_timeout: Duration,
    /// Frames that may wait for a client that does not read before it is closed (1008).
    pub outbound_queue: usize,
    /// Bytes (JSON text) that may wait for a client that does not read before it is closed.
    pub outbound_bytes: usize,
    /// How long one frame may take to reach the socket before the connection is dropped.
    pub send_deadline: Duration,
    /// Flips to true when the server starts draining: every session closes with 1001.
    pub shutdown: watch::Receiver<bool>,
    /// Participants whose socket dropped, waiting for a `resume`.
    pub resumable: Arc<Resumable>,
    /// Counts open sessions and rate-limited messages across the server.
    pub counters: Arc<SessionCounters>,
    /// This node's cluster membership (`--redis`): where clients may reconnect to.
    pub cluster: Option<crate::cluster::Cluster>,
}

impl SessionContext {
    /// The other nodes a client of `room` may reconnect to; `None` without a cluster.
    fn fallback_urls(&self, room: &str) -> Option<Vec<String>> {
        self.cluster
            .as_ref()
            .map(|cluster| cluster.fallback_urls(room))
    }
}

/// What the session does after a frame.
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
    /// A newer join of its identity replaces it, or the application removed it: it leaves,
    /// and the sender is dropped once the room has been told.
    Replaced(tokio::sync::oneshot::Sender<()>),
}

/// Why the session closes a connection whose identity joined again elsewhere.
const REPLACED: &str = "replaced by a newer join of the same identity";

/// Why the session closes a client that does not read what it is sent.
const NOT_READING: &str = "outbound queue full: the client does not read";

/// Runs one client connection to its end. Never panics on client input; every request gets
/// exactly one response. Never waits on `outgoing`: frames go through a bounded queue, and a
/// client that does not read is closed (see `outbox`).
pub async fn run<I, O>(ctx: SessionContext, incoming: I, outgoing: O)
where
    I: Stream<Item = Inbound> + Unpin,
    O: Sink<Outbound> + Unpin,
{
    run_with_stall(ctx, incoming, outgoing, || {}).await;
}

/// [`run`], with `on_stall` called when a frame missed the send deadline, before the socket
/// is dropped (the server then resets the connection rather than leave its unsent data to
/// the kernel).
pub async fn run_with_stall<I, O>(
    ctx: SessionContext,
    incoming: I,
    outgoing: O,
    on_stall: impl FnOnce(),
) where
    I: Stream<Item = Inbound> + Unpin,
    O: Sink<Outbound> + Unpin,
{
    let _open = ctx.counters.enter();
    let span = info_span!("session", participant = tracing::field::Empty);
    let (outbox, writer) =
        outbox::channel(ctx.outbound_queue, ctx.outbound_bytes, ctx.send_deadline);
    // The writer's end (a dead or stalled socket) ends the incoming frames too.
    let (writer_done, writer_gone) = tokio::sync::oneshot::channel::<()>();
    let writer = async move {
        writer.run(outgoing, on_stall).await;
        drop(writer_done);
    };
    let session = Session {
        ctx,
        participant: None,
        attachment: None,
        after_response: Vec::new(),
        limiter: None,
        trickled: [0; 2],
        outbox,
    }
    .run(incoming.take_until(writer_gone));
    futures::future::join(session, writer)
        .instrument(span)
        .await;
}

struct Session {
    ctx: SessionContext,
    participant: Option<Participant>,
    /// This session's hold on its participant's resume entry.
    attachment: Option<Attachment>,
    /// Events to send right after the current response (a resume's kept events).
    after_response: Vec<ServerMessage>,
    limiter: Option<RateLimiter>,
    /// Candidates trickled since the last ICE restart: publisher, subscriber connection.
    trickled: [usize; 2],
    outbox: Outbox,
}

impl Session {
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
                            && let Err(refused) = self.send(message)
                        {
                            break refused_close(refused);
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
                    SessionControl::Replace(done) => {
                        info!("replaced by a newer join of the same identity");
                        break (
                            Some((CLOSE_REPLACED, REPLACED.to_owned())),
                            After::Replaced(done),
                        );
                    }
                    SessionControl::Remove(done) => {
                        info!("removed by the application");
                        break (
                            Some((CLOSE_REMOVED, "removed by the application".to_owned())),
                            After::Replaced(done),
                        );
                    }
                    SessionControl::SetPermissions { can_publish, can_subscribe, done } => {
                        if let Some(participant) = &self.participant
                            && let Err(err) = participant.set_permissions(can_publish, can_subscribe).await
                        {
                            debug!(%err, "grants not applied");
                        }
                        info!(?can_publish, ?can_subscribe, "grants changed by the application");
                        let _ = done.send(());
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
        // The participant first: a resuming connection waits for the handover.
        self.end(then);
        if let Some((code, reason)) = close {
            self.outbox.close(code, reason);
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
            After::Replaced(done) => {
                // The newer join waits for this leave, so the room hears it first.
                tokio::spawn(async move {
                    participant.leave_and_wait().await;
                    drop(done);
                });
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

    /// Queues a message for the client; never waits.
    fn send(&mut self, message: ServerMessage) -> Result<(), Refused> {
        self.outbox.push(message)
    }

    /// Queues a message; a client whose queue is full, or whose socket is gone, is closed.
    fn send_or_close(&mut self, message: ServerMessage) -> Flow {
        match self.send(message) {
            Ok(()) => Flow::Continue,
            Err(refused) => refused_flow(refused),
        }
    }

    async fn on_frame(&mut self, frame: Inbound) -> Flow {
        match frame {
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
            Inbound::Text(_) | Inbound::Binary => {}
        }
        // Every data frame counts against the rate, whatever it holds.
        let now = Instant::now();
        let limiter = self.limiter.get_or_insert_with(|| {
            RateLimiter::new(self.ctx.max_message_rate, self.ctx.max_message_burst, now)
        });
        let verdict = limiter.check(now);
        let text = match frame {
            Inbound::Text(text) => Some(text),
            _ => None,
        };
        match verdict {
            Verdict::Allowed => {}
            Verdict::Refused => {
                self.ctx.counters.count_rate_limited();
                let request_id = text.as_deref().and_then(peek_request_id);
                return self.send_or_close(error_message(
                    request_id,
                    ErrorCode::RateLimited,
                    "too many messages; slow down",
                ));
            }
            Verdict::Flooding => {
                return Flow::Close {
                    code: CLOSE_POLICY,
                    reason: "message rate limit exceeded".to_owned(),
                    then: After::Leave,
                };
            }
        }
        let Some(text) = text else {
            return self.send_or_close(error_message(
                None,
                ErrorCode::InvalidMessage,
                "binary frames are not supported",
            ));
        };
        let message = match parse(&text) {
            Ok(message) => message,
            Err((request_id, reason)) => {
                return self.send_or_close(error_message(
                    request_id,
                    ErrorCode::InvalidMessage,
                    reason,
                ));
            }
        };
        let request_id = message.request_id();
        let leaving = matches!(message, ClientMessage::Leave { .. });
        let response = match self.handle(message).await {
            Ok(response) => response,
            Err(failure) => error_message(Some(request_id), failure.code, failure.message),
        };
        let mut sent = self.send(response);
        for message in std::mem::take(&mut self.after_response) {
            sent = sent.and_then(|()| self.send(message));
        }
        if let Err(refused) = sent {
            return refused_flow(refused);
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
}

/// The close frame (if any is worth sending) and the participant's fate when a message could
/// not be queued: a client that does not read leaves; a broken socket parks for a resume.
fn refused_close(refused: Refused) -> (Option<(u16, String)>, After) {
    match refused {
        Refused::Full => (Some((CLOSE_POLICY, NOT_READING.to_owned())), After::Leave),
        Refused::Gone => (None, After::Park),
    }
}

/// [`refused_close`] as the flow after a frame.
fn refused_flow(refused: Refused) -> Flow {
    let (close, then) = refused_close(refused);
    let (code, reason) = close.unwrap_or((CLOSE_GOING_AWAY, String::new()));
    Flow::Close { code, reason, then }
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

/// Parses a frame and checks its fields' bounds; on failure returns the request id if one
/// could be found, and why.
pub(crate) fn parse(text: &str) -> Result<ClientMessage, (Option<RequestId>, String)> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| (None, format!("malformed JSON: {e}")))?;
    let request_id = value
        .get("requestId")
        .and_then(serde_json::Value::as_u64)
        .and_then(|id| RequestId::try_from(id).ok());
    let message: ClientMessage =
        serde_json::from_value(value).map_err(|e| (request_id, format!("invalid message: {e}")))?;
    message
        .check_limits()
        .map_err(|e| (request_id, format!("invalid message: {e}")))?;
    Ok(message)
}

fn peek_request_id(text: &str) -> Option<RequestId> {
    parse(text).ok().map(|m| m.request_id())
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
