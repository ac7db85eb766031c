//! The session over in-memory channels (a real `Sfu` behind it): what a client sees for
//! join, a malformed message, a flood and leave.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use sluice_sfu::runtime::{Sfu, SfuConfig};

use super::*;
use crate::auth::Grants;
use crate::protocol::{IceCandidate, MediaKind, PeerRole, TrackInfo, TrackSource};

const SECRET: &[u8] = b"session-test-secret-0123456789";
/// Bound on every wait for the session; it answers in microseconds.
const WAIT: Duration = Duration::from_secs(5);

fn context(max_message_rate: u32) -> SessionContext {
    let (_shutdown, shutdown_rx) = watch::channel(false);
    SessionContext {
        sfu: Sfu::start(SfuConfig::default()).expect("a shard on loopback"),
        auth: Arc::new(TokenAuthority::new(SECRET)),
        max_message_rate,
        max_message_burst: max_message_rate.saturating_mul(2),
        join_timeout: Duration::from_secs(10),
        outbound_queue: DEFAULT_OUTBOUND_QUEUE,
        outbound_bytes: DEFAULT_OUTBOUND_BYTES,
        send_deadline: DEFAULT_SEND_DEADLINE,
        // A dropped sender means "never shutting down" to the session.
        shutdown: shutdown_rx,
        resumable: Resumable::new(Duration::from_secs(15)),
        counters: Arc::default(),
        cluster: None,
    }
}

fn token(room: &str, identity: &str) -> String {
    TokenAuthority::new(SECRET)
        .mint(
            &Grants {
                room: room.to_owned(),
                identity: identity.to_owned(),
                can_publish: true,
                can_subscribe: true,
                ..Grants::default()
            },
            Duration::from_secs(600),
        )
        .unwrap()
}

/// One client connection: the two channel ends the session does not hold.
struct Client {
    to_session: mpsc::UnboundedSender<Inbound>,
    from_session: mpsc::UnboundedReceiver<Outbound>,
    next_request_id: RequestId,
}

impl Client {
    fn connect(ctx: &SessionContext) -> Self {
        let (to_session, incoming) = mpsc::unbounded();
        let (outgoing, from_session) = mpsc::unbounded();
        tokio::spawn(run(ctx.clone(), incoming, outgoing));
        Self {
            to_session,
            from_session,
            next_request_id: 1,
        }
    }

    fn send_text(&self, text: impl Into<String>) {
        self.to_session
            .unbounded_send(Inbound::Text(text.into()))
            .unwrap();
    }

    /// Sends a request made for the next request id; returns that id.
    fn send(&mut self, request: impl FnOnce(RequestId) -> ClientMessage) -> RequestId {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send_text(serde_json::to_string(&request(request_id)).unwrap());
        request_id
    }

    async fn next(&mut self) -> Option<Outbound> {
        tokio::time::timeout(WAIT, self.from_session.next())
            .await
            .expect("the session answers in time")
    }

    /// The next message with a request id (or an error without one), skipping events.
    async fn response(&mut self) -> ServerMessage {
        loop {
            match self.next().await {
                Some(Outbound::Message(message)) if is_response(&message) => return *message,
                Some(Outbound::Message(_event)) => {}
                other => panic!("expected a response, got {other:?}"),
            }
        }
    }

    /// The close frame, skipping events; then the session must be gone.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Some(Outbound::Close { code, reason }) => {
                    assert_eq!(self.next().await, None, "nothing after the close frame");
                    return (code, reason);
                }
                Some(Outbound::Message(message)) if !is_response(&message) => {}
                other => panic!("expected the close frame, got {other:?}"),
            }
        }
    }

    async fn join(&mut self, room: &str, identity: &str) -> ServerMessage {
        let token = token(room, identity);
        let id = self.send(|request_id| ClientMessage::Join {
            request_id,
            token,
            room: None,
        });
        let response = self.response().await;
        assert!(
            matches!(&response, ServerMessage::Joined { request_id, .. } if *request_id == id),
            "{response:?}"
        );
        response
    }
}

fn is_response(message: &ServerMessage) -> bool {
    matches!(
        message,
        ServerMessage::Joined { .. }
            | ServerMessage::Resumed { .. }
            | ServerMessage::Published { .. }
            | ServerMessage::Subscribed { .. }
            | ServerMessage::Ok { .. }
            | ServerMessage::Error { .. }
    )
}

fn error_code(message: &ServerMessage) -> Option<(Option<RequestId>, ErrorCode)> {
    match message {
        ServerMessage::Error {
            request_id, code, ..
        } => Some((*request_id, *code)),
        _ => None,
    }
}

#[tokio::test]
async fn join_answers_with_the_room_and_who_is_in_it() {
    let ctx = context(50);
    let mut alice = Client::connect(&ctx);
    let ServerMessage::Joined {
        room,
        participant,
        participants,
        resume_token,
        ..
    } = alice.join("lobby", "alice").await
    else {
        unreachable!("join asserts Joined");
    };
    assert_eq!(room, "lobby");
    assert_eq!(participant.identity, "alice");
    assert!(participants.is_empty(), "{participants:?}");
    assert_eq!(resume_token.len(), 32);

    // The next one to join sees alice, and alice hears of them.
    let mut bob = Client::connect(&ctx);
    let ServerMessage::Joined { participants, .. } = bob.join("lobby", "bob").await else {
        unreachable!("join asserts Joined");
    };
    let identities: Vec<_> = participants.iter().map(|p| p.identity.as_str()).collect();
    assert_eq!(identities, ["alice"]);
    match alice.next().await.map(unboxed) {
        Some(Some(ServerMessage::ParticipantJoined { participant })) => {
            assert_eq!(participant.identity, "bob");
        }
        other => panic!("expected participantJoined, got {other:?}"),
    }

    // A second join on the same connection is refused, the first still holds.
    let token = token("lobby", "alice");
    let id = alice.send(|request_id| ClientMessage::Join {
        request_id,
        token,
        room: None,
    });
    let response = alice.response().await;
    assert_eq!(
        error_code(&response),
        Some((Some(id), ErrorCode::AlreadyJoined))
    );
}

#[tokio::test]
async fn a_malformed_message_gets_an_error_and_the_session_goes_on() {
    let ctx = context(50);
    let mut client = Client::connect(&ctx);

    client.send_text("{");
    let response = client.response().await;
    assert_eq!(
        error_code(&response),
        Some((None, ErrorCode::InvalidMessage))
    );

    // The request id is echoed when it can be read.
    client.send_text(r#"{"type":"nope","requestId":7}"#);
    let response = client.response().await;
    assert_eq!(
        error_code(&response),
        Some((Some(7), ErrorCode::InvalidMessage))
    );

    client.to_session.unbounded_send(Inbound::Binary).unwrap();
    let response = client.response().await;
    assert_eq!(
        error_code(&response),
        Some((None, ErrorCode::InvalidMessage))
    );

    // A request that needs a participant before join.
    let id = client.send(|request_id| ClientMessage::RestartIce { request_id });
    let response = client.response().await;
    assert_eq!(
        error_code(&response),
        Some((Some(id), ErrorCode::NotJoined))
    );

    // Still serving: a ping, then a join.
    let id = client.send(|request_id| ClientMessage::Ping { request_id });
    assert_eq!(
        client.response().await,
        ServerMessage::Ok { request_id: id }
    );
    client.join("lobby", "alice").await;
}

#[tokio::test]
async fn a_flood_is_refused_then_disconnected() {
    // One message a second, bursts of two.
    let ctx = context(1);
    let mut client = Client::connect(&ctx);
    for _ in 0..2 {
        let id = client.send(|request_id| ClientMessage::Ping { request_id });
        assert_eq!(
            client.response().await,
            ServerMessage::Ok { request_id: id }
        );
    }
    // Over the rate: each message is refused with its own request id, the connection stays.
    for _ in 0..8 {
        let id = client.send(|request_id| ClientMessage::Ping { request_id });
        let response = client.response().await;
        assert_eq!(
            error_code(&response),
            Some((Some(id), ErrorCode::RateLimited))
        );
    }
    // Refused more than four bursts in a row: closed with 1008.
    client.send(|request_id| ClientMessage::Ping { request_id });
    assert_eq!(
        client.closed().await,
        (CLOSE_POLICY, "message rate limit exceeded".to_owned())
    );
}

#[tokio::test]
async fn leave_answers_closes_and_the_room_sees_it() {
    let ctx = context(50);
    let mut alice = Client::connect(&ctx);
    alice.join("lobby", "alice").await;
    let mut bob = Client::connect(&ctx);
    let ServerMessage::Joined { participant, .. } = bob.join("lobby", "bob").await else {
        unreachable!("join asserts Joined");
    };

    let id = bob.send(|request_id| ClientMessage::Leave { request_id });
    assert_eq!(bob.response().await, ServerMessage::Ok { request_id: id });
    assert_eq!(bob.closed().await, (CLOSE_NORMAL, "left".to_owned()));

    // Gone for good, not parked for a resume.
    loop {
        match alice.next().await.map(unboxed) {
            Some(Some(ServerMessage::ParticipantLeft { participant_id })) => {
                assert_eq!(participant_id, participant.participant_id);
                break;
            }
            Some(Some(_event)) => {}
            other => panic!("expected participantLeft, got {other:?}"),
        }
    }
    assert_eq!(ctx.resumable.parked_count(), 0);
}

#[tokio::test]
async fn a_connection_that_never_joins_is_closed() {
    let ctx = SessionContext {
        join_timeout: Duration::from_millis(100),
        ..context(50)
    };
    let mut client = Client::connect(&ctx);
    assert_eq!(
        client.closed().await,
        (CLOSE_POLICY, "join timeout".to_owned())
    );
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

#[tokio::test]
async fn a_binary_flood_is_refused_then_disconnected() {
    // One message a second, bursts of two: binary frames count like text ones.
    let ctx = context(1);
    let mut client = Client::connect(&ctx);
    for _ in 0..2 {
        client.to_session.unbounded_send(Inbound::Binary).unwrap();
        let response = client.response().await;
        assert_eq!(
            error_code(&response),
            Some((None, ErrorCode::InvalidMessage))
        );
    }
    for _ in 0..8 {
        client.to_session.unbounded_send(Inbound::Binary).unwrap();
        let response = client.response().await;
        assert_eq!(error_code(&response), Some((None, ErrorCode::RateLimited)));
    }
    client.to_session.unbounded_send(Inbound::Binary).unwrap();
    assert_eq!(
        client.closed().await,
        (CLOSE_POLICY, "message rate limit exceeded".to_owned())
    );
}

/// The message a frame carries; `None` for the close frame.
fn unboxed(frame: Outbound) -> Option<ServerMessage> {
    match frame {
        Outbound::Message(message) => Some(*message),
        Outbound::Close { .. } => None,
    }
}

/// Skips events until a `participantLeft` or `participantJoined`; returns it.
async fn next_membership_event(client: &mut Client) -> ServerMessage {
    loop {
        match client.next().await.map(unboxed) {
            Some(Some(
                message @ (ServerMessage::ParticipantLeft { .. }
                | ServerMessage::ParticipantJoined { .. }),
            )) => return message,
            Some(Some(_event)) => {}
            other => panic!("expected a membership event, got {other:?}"),
        }
    }
}

fn participant_id(joined: &ServerMessage) -> String {
    match joined {
        ServerMessage::Joined { participant, .. } => participant.participant_id.clone(),
        other => panic!("not joined: {other:?}"),
    }
}

#[tokio::test]
async fn a_newer_join_of_the_same_identity_replaces_the_older() {
    let ctx = context(50);
    let mut bob = Client::connect(&ctx);
    bob.join("lobby", "bob").await;
    let mut first = Client::connect(&ctx);
    let first_id = participant_id(&first.join("lobby", "alice").await);
    assert!(matches!(
        next_membership_event(&mut bob).await,
        ServerMessage::ParticipantJoined { .. }
    ));

    let mut second = Client::connect(&ctx);
    let joined = second.join("lobby", "alice").await;
    let second_id = participant_id(&joined);
    // The room holds one alice: the newer one sees only bob.
    let ServerMessage::Joined { participants, .. } = joined else {
        unreachable!("participant_id asserts Joined");
    };
    let others: Vec<_> = participants.iter().map(|p| p.identity.as_str()).collect();
    assert_eq!(others, ["bob"]);
    // The older connection is closed with 4001: its client must not reconnect.
    assert_eq!(
        first.closed().await,
        (
            CLOSE_REPLACED,
            "replaced by a newer join of the same identity".to_owned()
        )
    );
    // The others see the older leave, then the newer join.
    assert_eq!(
        next_membership_event(&mut bob).await,
        ServerMessage::ParticipantLeft {
            participant_id: first_id
        }
    );
    match next_membership_event(&mut bob).await {
        ServerMessage::ParticipantJoined { participant } => {
            assert_eq!(participant.participant_id, second_id);
        }
        other => panic!("expected the newer join, got {other:?}"),
    }

    // A parked alice (its socket dropped) is replaced too.
    drop(second.to_session);
    tokio::time::timeout(WAIT, async {
        while ctx.resumable.parked_count() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let mut third = Client::connect(&ctx);
    let third_id = participant_id(&third.join("lobby", "alice").await);
    assert_eq!(
        next_membership_event(&mut bob).await,
        ServerMessage::ParticipantLeft {
            participant_id: second_id
        }
    );
    match next_membership_event(&mut bob).await {
        ServerMessage::ParticipantJoined { participant } => {
            assert_eq!(participant.participant_id, third_id);
        }
        other => panic!("expected the third join, got {other:?}"),
    }
    assert_eq!(ctx.resumable.parked_count(), 0);
}

mod limits;
mod outbox;
