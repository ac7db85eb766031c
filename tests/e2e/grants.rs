//! Grants revoked through the server API end what they allowed, on a real server with media
//! flowing: `PATCH …/participants/{identity}` with `canSubscribe: false` tells the viewer
//! (`subscriptionEnded`), takes its track off its connection (a new offer without it) and stops
//! its media, and its next `subscribe` is refused; `canPublish: false` ends the publisher's publication for the whole
//! room (`publicationRemoved`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use sluice_e2e::peer::ClientPeer;
use sluice_e2e::{SECRET, SignalClient, TestServer, init_tracing, token};
use sluice_signaling::auth::TokenAuthority;
use sluice_signaling::protocol::{ClientMessage, ErrorCode, ServerMessage, SubscriptionEndReason};

use crate::liveness::{VideoPublisher, pace_video};
use crate::shard::{Received, collect};

const WAIT: Duration = Duration::from_secs(10);

fn packets(log: &std::sync::Mutex<Vec<Received>>) -> usize {
    log.lock()
        .map(|log| log.iter().map(|r| r.packets.len()).sum())
        .unwrap_or(0)
}

async fn grows_past(log: &std::sync::Mutex<Vec<Received>>, count: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while packets(log) <= count {
        ensure!(Instant::now() < deadline, "no media past {count} packets");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn patch(server: &TestServer, room: &str, identity: &str, body: Value) -> Result<()> {
    let admin = TokenAuthority::new(SECRET.as_bytes()).mint_admin("backend", WAIT)?;
    let response = reqwest::Client::new()
        .patch(format!(
            "http://{}/api/rooms/{room}/participants/{identity}",
            server.addr
        ))
        .bearer_auth(admin)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "PATCH {identity}: {}",
        response.status()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_grants_end_the_subscriptions_and_publications_they_allowed() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let room = "grants";
    let mut publisher = VideoPublisher::start(&server.ws_url(), room, "alice").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = pace_video(
        Arc::clone(&publisher.track),
        Arc::new(AtomicBool::new(true)),
        Arc::clone(&stop),
    );

    let mut viewer = SignalClient::connect(&server.ws_url()).await?;
    viewer.join(token(room, "bob")).await?;
    let mut peer = ClientPeer::new().await?;
    let log = collect(&mut peer);
    let request_id = viewer.next_id();
    let subscribed = viewer
        .request(ClientMessage::Subscribe {
            request_id,
            publication_id: publisher.publication_id.clone(),
        })
        .await?;
    let offer = viewer
        .wait_event(WAIT, |event| match event {
            ServerMessage::Offer { sdp } => Some(sdp.clone()),
            _ => None,
        })
        .await?;
    let answer = peer.answer(offer).await?;
    let request_id = viewer.next_id();
    viewer
        .request(ClientMessage::Answer {
            request_id,
            sdp: answer,
        })
        .await?;
    grows_past(&log, 20).await?;

    let subscription = match subscribed {
        ServerMessage::Subscribed {
            subscription_id, ..
        } => subscription_id,
        other => anyhow::bail!("{other:?}"),
    };

    // canSubscribe revoked: the server tells the viewer, renegotiates the track away and stops
    // sending it.
    patch(&server, room, "bob", json!({"canSubscribe": false})).await?;
    let ended = viewer
        .wait_event(WAIT, |event| match event {
            ServerMessage::SubscriptionEnded {
                subscription_id,
                reason,
            } => Some((subscription_id.clone(), *reason)),
            _ => None,
        })
        .await?;
    ensure!(
        ended == (subscription, SubscriptionEndReason::PermissionRevoked),
        "{ended:?}"
    );
    let offer = viewer
        .wait_event(WAIT, |event| match event {
            ServerMessage::Offer { sdp } => Some(sdp.clone()),
            _ => None,
        })
        .await?;
    ensure!(
        !offer.contains("a=sendonly") && !offer.contains("a=sendrecv"),
        "the new offer still sends a track:\n{offer}"
    );
    let answer = peer.answer(offer).await?;
    let request_id = viewer.next_id();
    viewer
        .request(ClientMessage::Answer {
            request_id,
            sdp: answer,
        })
        .await?;
    // What was in flight lands; then nothing for a second.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = packets(&log);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = packets(&log);
    ensure!(
        after == before,
        "{} packets arrived after canSubscribe was revoked",
        after - before
    );
    let request_id = viewer.next_id();
    let refused = viewer
        .request(ClientMessage::Subscribe {
            request_id,
            publication_id: publisher.publication_id.clone(),
        })
        .await?;
    ensure!(
        matches!(
            refused,
            ServerMessage::Error {
                code: ErrorCode::PermissionDenied,
                ..
            }
        ),
        "subscribe after the revoke: {refused:?}"
    );

    // canPublish revoked: the publication ends for everyone, its publisher included.
    patch(&server, room, "alice", json!({"canPublish": false})).await?;
    let publication = publisher.publication_id.clone();
    for (who, signal) in [("bob", &mut viewer), ("alice", &mut publisher.signal)] {
        signal
            .wait_event(WAIT, |event| match event {
                ServerMessage::PublicationRemoved { publication_id, .. }
                    if *publication_id == publication =>
                {
                    Some(())
                }
                _ => None,
            })
            .await
            .with_context(|| format!("{who}: publicationRemoved"))?;
    }
    let remaining = server
        .sfu
        .room_publications(room)
        .await
        .context("the room is gone")?;
    ensure!(remaining.is_empty(), "still published: {remaining:?}");
    eprintln!("grants: {before} packets before the revoke, none after; publication removed");

    stop.store(true, Ordering::Relaxed);
    pacer.await.context("pacer")??;
    peer.close().await;
    publisher.peer.close().await;
    server.stop().await;
    Ok(())
}
