//! Configured limits enforced by a real server on the shard plane: a room limited to two
//! participants refuses a third, and a server limited to two rooms refuses the join that would
//! open a third until one of them closes.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_signaling::protocol::{ClientMessage, ErrorCode, ServerMessage};

/// Joins `room` as `identity`; returns the client and the server's answer.
async fn join(
    server: &TestServer,
    room: &str,
    identity: &str,
) -> Result<(SignalClient, ServerMessage)> {
    let mut client = SignalClient::connect(&server.ws_url()).await?;
    let answer = client.join(token(room, identity)).await?;
    Ok((client, answer))
}

fn refused_for_limit(answer: &ServerMessage, what: &str) -> Result<()> {
    match answer {
        ServerMessage::Error { code, message, .. }
            if *code == ErrorCode::LimitExceeded && message.contains(what) =>
        {
            Ok(())
        }
        other => bail!("expected limitExceeded ({what}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_participant_is_refused_in_a_room_limited_to_two() -> Result<()> {
    init_tracing();
    let server =
        TestServer::start_with(|config| config.limits.max_participants_per_room = 2).await?;
    let (_alice, answer) = join(&server, "small", "alice").await?;
    ensure!(matches!(answer, ServerMessage::Joined { .. }), "{answer:?}");
    let (_bob, answer) = join(&server, "small", "bob").await?;
    ensure!(matches!(answer, ServerMessage::Joined { .. }), "{answer:?}");
    let (_carol, answer) = join(&server, "small", "carol").await?;
    refused_for_limit(&answer, "participants in this room")?;
    // Another room is not affected.
    let (_dave, answer) = join(&server, "other", "dave").await?;
    ensure!(matches!(answer, ServerMessage::Joined { .. }), "{answer:?}");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_beyond_the_rooms_per_node_is_refused_until_one_closes() -> Result<()> {
    init_tracing();
    let server = TestServer::start_with(|config| config.limits.max_rooms = 2).await?;
    let (mut first, answer) = join(&server, "room-1", "alice").await?;
    ensure!(matches!(answer, ServerMessage::Joined { .. }), "{answer:?}");
    let (_second, answer) = join(&server, "room-2", "bob").await?;
    ensure!(matches!(answer, ServerMessage::Joined { .. }), "{answer:?}");
    let (_third, answer) = join(&server, "room-3", "carol").await?;
    refused_for_limit(&answer, "rooms on this server")?;
    // Joining a room that is open is still allowed.
    let (_fourth, answer) = join(&server, "room-2", "dave").await?;
    ensure!(matches!(answer, ServerMessage::Joined { .. }), "{answer:?}");

    // The first room empties and closes: room 3 opens now.
    let request_id = first.next_id();
    first.request(ClientMessage::Leave { request_id }).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_client, answer) = join(&server, "room-3", "carol").await?;
        if matches!(answer, ServerMessage::Joined { .. }) {
            break;
        }
        refused_for_limit(&answer, "rooms on this server")?;
        ensure!(Instant::now() < deadline, "room 1 did not close within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
    Ok(())
}
