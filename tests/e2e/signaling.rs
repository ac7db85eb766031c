//! Signaling over a real WebSocket: limits, bad input (binary floods included), auth, one
//! participant per identity, and cleanup.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use sluice_e2e::{SignalClient, TestServer, init_tracing, token, token_with};
use sluice_signaling::protocol::{
    ClientMessage, ErrorCode, MediaKind, ServerMessage, TrackInfo, TrackSource,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn error_code(message: &ServerMessage) -> Option<ErrorCode> {
    match message {
        ServerMessage::Error { code, .. } => Some(*code),
        _ => None,
    }
}

async fn joined(server: &TestServer, room: &str, identity: &str) -> Result<SignalClient> {
    let mut client = SignalClient::connect(&server.ws_url()).await?;
    let response = client.join(token(room, identity)).await?;
    ensure!(
        matches!(response, ServerMessage::Joined { .. }),
        "join failed: {response:?}"
    );
    Ok(client)
}

#[tokio::test]
async fn oversize_frame_closes_with_1009() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let mut client = SignalClient::connect(&server.ws_url()).await?;
    let big = format!(
        r#"{{"type":"join","requestId":1,"token":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    client.send_raw(Message::Text(big.into())).await?;
    let code = client.closed(Duration::from_secs(5)).await?;
    ensure!(code == Some(1009), "expected close 1009, got {code:?}");
    // The server is fine: a new connection works.
    joined(&server, "after-oversize", "someone").await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn malformed_and_unknown_messages_get_error_responses() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let mut client = SignalClient::connect(&server.ws_url()).await?;

    client.send_raw(Message::Text("{not json".into())).await?;
    let response = client.next_event(Duration::from_secs(5)).await?;
    ensure!(
        matches!(
            response,
            ServerMessage::Error {
                request_id: None,
                code: ErrorCode::InvalidMessage,
                ..
            }
        ),
        "malformed JSON: {response:?}"
    );

    client
        .send_raw(Message::Text(
            r#"{"type":"teleport","requestId":41}"#.into(),
        ))
        .await?;
    let response = client.response_to(41).await?;
    ensure!(
        error_code(&response) == Some(ErrorCode::InvalidMessage),
        "unknown type: {response:?}"
    );

    client
        .send_raw(Message::Text(
            r#"{"type":"subscribe","requestId":42}"#.into(),
        ))
        .await?;
    let response = client.response_to(42).await?;
    ensure!(
        error_code(&response) == Some(ErrorCode::InvalidMessage),
        "missing field: {response:?}"
    );

    client
        .send_raw(Message::Binary(vec![1, 2, 3].into()))
        .await?;
    let response = client.next_event(Duration::from_secs(5)).await?;
    ensure!(
        error_code(&response) == Some(ErrorCode::InvalidMessage),
        "binary: {response:?}"
    );

    // Before join, everything but join is refused.
    let request_id = client.next_id();
    let response = client
        .request(ClientMessage::Subscribe {
            request_id,
            publication_id: "PU1".into(),
        })
        .await?;
    ensure!(
        error_code(&response) == Some(ErrorCode::NotJoined),
        "before join: {response:?}"
    );

    // The connection survived all of it.
    let response = client.join(token("survivor", "me")).await?;
    ensure!(
        matches!(response, ServerMessage::Joined { .. }),
        "join after bad input: {response:?}"
    );
    let response = client.join(token("survivor", "me")).await?;
    ensure!(
        error_code(&response) == Some(ErrorCode::AlreadyJoined),
        "second join: {response:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn bad_expired_and_wrong_room_tokens_are_refused() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let mut client = SignalClient::connect(&server.ws_url()).await?;

    for (what, bad) in [
        ("garbage", "not-a-token".to_owned()),
        ("tampered", {
            let mut t = token("room", "me");
            // Change the signature's last character (to one it is not: a 1-in-64 flake otherwise).
            let last = t.pop();
            t.push(if last == Some('A') { 'B' } else { 'A' });
            t
        }),
        ("other secret", {
            use sluice_signaling::auth::{Grants, TokenAuthority};
            TokenAuthority::new(b"some-other-secret-0123456789")
                .mint(
                    &Grants {
                        room: "room".into(),
                        identity: "me".into(),
                        can_publish: true,
                        can_subscribe: true,
                        ..Grants::default()
                    },
                    Duration::from_secs(60),
                )
                .expect("mint")
        }),
        ("expired", {
            use sluice_signaling::auth::{Grants, TokenAuthority};
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            TokenAuthority::new(sluice_e2e::SECRET.as_bytes())
                .mint_at(
                    &Grants {
                        room: "room".into(),
                        identity: "me".into(),
                        can_publish: true,
                        can_subscribe: true,
                        ..Grants::default()
                    },
                    now - 3600,
                    Duration::from_secs(60),
                )
                .expect("mint")
        }),
    ] {
        let response = client.join(bad).await?;
        ensure!(
            error_code(&response) == Some(ErrorCode::Unauthorized),
            "{what}: {response:?}"
        );
    }

    let request_id = client.next_id();
    let response = client
        .request(ClientMessage::Join {
            request_id,
            token: token("room-a", "me"),
            room: Some("room-b".into()),
        })
        .await?;
    ensure!(
        error_code(&response) == Some(ErrorCode::Unauthorized),
        "wrong room: {response:?}"
    );

    // A subscribe-only token cannot publish a track (an offer without tracks, which opens data
    // channels, is every participant's).
    let mut viewer = SignalClient::connect(&server.ws_url()).await?;
    viewer
        .join(token_with(
            "room-a",
            "viewer",
            false,
            true,
            Duration::from_secs(60),
        ))
        .await?;
    let request_id = viewer.next_id();
    let response = viewer
        .request(ClientMessage::Publish {
            request_id,
            sdp: "v=0".into(),
            tracks: vec![TrackInfo {
                mid: "0".into(),
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                name: None,
                rids: None,
            }],
        })
        .await?;
    ensure!(
        error_code(&response) == Some(ErrorCode::PermissionDenied),
        "publish without grant: {response:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn unknown_publication_and_subscription_are_not_found() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let mut client = joined(&server, "lonely", "me").await?;
    for publication_id in ["PU999999", "garbage", ""] {
        let request_id = client.next_id();
        let response = client
            .request(ClientMessage::Subscribe {
                request_id,
                publication_id: publication_id.into(),
            })
            .await?;
        ensure!(
            error_code(&response) == Some(ErrorCode::NotFound),
            "{publication_id:?}: {response:?}"
        );
    }
    let request_id = client.next_id();
    let response = client
        .request(ClientMessage::Unsubscribe {
            request_id,
            subscription_id: "SU12345".into(),
        })
        .await?;
    ensure!(
        error_code(&response) == Some(ErrorCode::NotFound),
        "unsubscribe: {response:?}"
    );
    let request_id = client.next_id();
    let response = client
        .request(ClientMessage::Unpublish {
            request_id,
            publication_id: "PU1".into(),
        })
        .await?;
    ensure!(
        error_code(&response) == Some(ErrorCode::NotFound),
        "unpublish: {response:?}"
    );
    let request_id = client.next_id();
    let response = client
        .request(ClientMessage::Publish {
            request_id,
            sdp: "this is not SDP".into(),
            tracks: vec![],
        })
        .await?;
    ensure!(
        error_code(&response) == Some(ErrorCode::NegotiationFailed),
        "bad SDP: {response:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn message_floods_are_rate_limited() -> Result<()> {
    init_tracing();
    let server = TestServer::start_with(|c| c.max_message_rate = 5).await?;
    let mut client = joined(&server, "flood", "me").await?;
    let mut limited = 0;
    for request_id in 100..140 {
        client
            .send(&ClientMessage::Unsubscribe {
                request_id,
                subscription_id: "SU1".into(),
            })
            .await?;
    }
    for request_id in 100..140 {
        let response = client.response_to(request_id).await?;
        if error_code(&response) == Some(ErrorCode::RateLimited) {
            limited += 1;
        }
    }
    ensure!(
        limited >= 20,
        "only {limited} of 40 flood messages were rate limited"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn dropped_websocket_is_cleaned_up_and_others_are_told() -> Result<()> {
    init_tracing();
    // Without a resume grace period a drop ends the participant at once (resume.rs covers
    // the grace period).
    let server = TestServer::start_with(|c| c.resume_grace = Duration::ZERO).await?;
    let mut stayer = joined(&server, "cleanup", "stayer").await?;
    let leaver = joined(&server, "cleanup", "leaver").await?;
    let left_id = stayer
        .wait_event(Duration::from_secs(5), |m| match m {
            ServerMessage::ParticipantJoined { participant } => {
                Some(participant.participant_id.clone())
            }
            _ => None,
        })
        .await?;
    // Another room, to show it is unaffected.
    let mut elsewhere = joined(&server, "elsewhere", "bystander").await?;

    let dropped_at = Instant::now();
    drop(leaver); // the TCP connection goes away without a leave message
    let gone = stayer
        .wait_event(Duration::from_secs(2), |m| match m {
            ServerMessage::ParticipantLeft { participant_id } => Some(participant_id.clone()),
            _ => None,
        })
        .await?;
    ensure!(gone == left_id, "wrong participant left: {gone}");
    eprintln!("participantLeft after {:?}", dropped_at.elapsed());

    let request_id = elsewhere.next_id();
    let response = elsewhere
        .request(ClientMessage::Leave { request_id })
        .await?;
    ensure!(
        matches!(response, ServerMessage::Ok { .. }),
        "leave: {response:?}"
    );
    let code = elsewhere.closed(Duration::from_secs(2)).await?;
    ensure!(code == Some(1000), "leave closes normally, got {code:?}");

    drop(stayer);
    // Every room empties and closes: nothing is left behind.
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.sfu.room_count() > 0 {
        if Instant::now() > deadline {
            bail!(
                "{} rooms still open after everyone left",
                server.sfu.room_count()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn origins_outside_the_allowlist_are_refused() -> Result<()> {
    init_tracing();
    let server =
        TestServer::start_with(|c| c.allowed_origins = vec!["https://app.example".into()]).await?;
    let connect = |origin: &'static str| {
        let mut request = server.ws_url().into_client_request().expect("request");
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header"));
        tokio_tungstenite::connect_async(request)
    };
    ensure!(
        connect("https://evil.example").await.is_err(),
        "foreign origin accepted"
    );
    ensure!(
        connect("https://app.example").await.is_ok(),
        "allowed origin refused"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_joined_many_times_holds_one_participant() -> Result<()> {
    init_tracing();
    const JOINS: usize = 20;
    let server = TestServer::start().await?;
    let mut bob = joined(&server, "twice", "bob").await?;
    let fds = || std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    let baseline = fds();
    // One token, joined again and again on new connections.
    let alice = token("twice", "alice");
    let mut previous: Option<SignalClient> = None;
    for _ in 0..JOINS {
        let mut client = SignalClient::connect(&server.ws_url()).await?;
        let response = client.join(alice.clone()).await?;
        let ServerMessage::Joined { participants, .. } = &response else {
            bail!("join failed: {response:?}");
        };
        // The room holds bob and no other alice.
        let identities: Vec<_> = participants.iter().map(|p| p.identity.as_str()).collect();
        ensure!(identities == ["bob"], "others in the room: {identities:?}");
        if let Some(mut older) = previous.take() {
            let code = older.closed(Duration::from_secs(5)).await?;
            ensure!(
                code == Some(4001),
                "the older connection closed with {code:?}"
            );
        }
        previous = Some(client);
    }
    // Bob saw each alice but the last leave: one left/joined pair per replacement.
    let mut joins = 0;
    let mut leaves = 0;
    while joins < JOINS || leaves < JOINS - 1 {
        match bob.next_event(Duration::from_secs(5)).await? {
            ServerMessage::ParticipantJoined { .. } => joins += 1,
            ServerMessage::ParticipantLeft { .. } => {
                ensure!(leaves < joins, "a leave before its join");
                leaves += 1;
            }
            _ => {}
        }
    }
    // The room's state as a newcomer sees it: bob and one alice.
    let mut carol = SignalClient::connect(&server.ws_url()).await?;
    let response = carol.join(token("twice", "carol")).await?;
    let ServerMessage::Joined { participants, .. } = &response else {
        bail!("join failed: {response:?}");
    };
    let mut identities: Vec<_> = participants.iter().map(|p| p.identity.as_str()).collect();
    identities.sort_unstable();
    ensure!(identities == ["alice", "bob"], "the room: {identities:?}");
    eprintln!(
        "{JOINS} joins of one token: fds {baseline} before, {} after (one alice, carol)",
        fds()
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_binary_flood_is_closed_with_1008() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let mut client = joined(&server, "binary", "alice").await?;
    // Default rate: 50 a second, bursts of 100; four bursts' worth of refusals in a row close.
    for _ in 0..600 {
        if client
            .send_raw(Message::Binary(vec![0u8; 16].into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let code = client.closed(Duration::from_secs(5)).await?;
    ensure!(code == Some(1008), "closed with {code:?}");
    server.stop().await;
    Ok(())
}
