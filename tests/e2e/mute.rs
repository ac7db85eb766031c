//! Mute state through signaling and the server API on a real server: a publisher mutes its
//! video (`setMuted`), the room is told `publicationMuted`, a subscriber stops receiving its
//! packets and a participant joining meanwhile sees it muted; the application unmutes it
//! through `POST /api/rooms/{room}/publications/{id}/mute`, the room is told
//! `publicationUnmuted` and the subscriber receives again, from a keyframe.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;
use sluice_e2e::peer::ClientPeer;
use sluice_e2e::{SECRET, SignalClient, TestServer, init_tracing, token};
use sluice_signaling::auth::TokenAuthority;
use sluice_signaling::protocol::{ClientMessage, ServerMessage};

use crate::liveness::{VideoPublisher, pace_video};
use crate::shard::{Received, answer_offers, collect};
use crate::synthetic::{KEYFRAME_EVERY, video_index};

const WAIT: Duration = Duration::from_secs(10);

/// Video packets the subscriber has received so far, and the index of the first one after
/// `after` packets.
fn received(log: &std::sync::Mutex<Vec<Received>>) -> Vec<u32> {
    log.lock()
        .map(|log| {
            log.iter()
                .filter(|r| r.video)
                .flat_map(|r| r.packets.iter().filter_map(|p| video_index(&p.payload)))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the subscriber has received more than `count` video packets.
async fn grows_past(log: &std::sync::Mutex<Vec<Received>>, count: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while received(log).len() <= count {
        ensure!(
            Instant::now() < deadline,
            "no video arrived past {count} packets"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_publication_stops_reaching_subscribers_until_the_application_unmutes_it()
-> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let room = "mute";
    let mut publisher = VideoPublisher::start(&server.ws_url(), room, "publisher").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = pace_video(
        Arc::clone(&publisher.track),
        Arc::new(AtomicBool::new(true)),
        Arc::clone(&stop),
    );

    let mut subscriber = SignalClient::connect(&server.ws_url()).await?;
    subscriber.join(token(room, "subscriber")).await?;
    let mut peer = ClientPeer::new().await?;
    let log = collect(&mut peer);
    let request_id = subscriber.next_id();
    let subscribed = subscriber
        .request(ClientMessage::Subscribe {
            request_id,
            publication_id: publisher.publication_id.clone(),
        })
        .await?;
    ensure!(
        matches!(subscribed, ServerMessage::Subscribed { .. }),
        "{subscribed:?}"
    );
    answer_offers(&mut subscriber, &mut peer).await?;
    grows_past(&log, 20).await?;

    // The publisher mutes: the room is told, and nothing more arrives.
    let request_id = publisher.signal.next_id();
    let muted = publisher
        .signal
        .request(ClientMessage::SetMuted {
            request_id,
            publication_id: publisher.publication_id.clone(),
            muted: true,
        })
        .await?;
    ensure!(matches!(muted, ServerMessage::Ok { .. }), "{muted:?}");
    let publication = publisher.publication_id.clone();
    subscriber
        .wait_event(WAIT, |event| match event {
            ServerMessage::PublicationMuted { publication_id, .. }
                if *publication_id == publication =>
            {
                Some(())
            }
            _ => None,
        })
        .await?;
    // What was in flight when the mute landed arrives; then nothing for a second.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = received(&log).len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = received(&log).len();
    ensure!(
        during == before,
        "{} packets arrived in the second after the mute",
        during - before
    );

    // Someone joining now sees the publication muted.
    let mut late = SignalClient::connect(&server.ws_url()).await?;
    let joined = late.join(token(room, "late")).await?;
    let ServerMessage::Joined { publications, .. } = joined else {
        anyhow::bail!("join refused: {joined:?}");
    };
    let seen = publications
        .iter()
        .find(|p| p.publication_id == publication)
        .context("the late joiner does not see the publication")?;
    ensure!(seen.muted == Some(true), "muted in the snapshot: {seen:?}");

    // Another participant cannot mute it.
    let request_id = late.next_id();
    let refused = late
        .request(ClientMessage::SetMuted {
            request_id,
            publication_id: publication.clone(),
            muted: false,
        })
        .await?;
    ensure!(
        matches!(refused, ServerMessage::Error { .. }),
        "{refused:?}"
    );

    // The application unmutes it; media flows again from a keyframe.
    let admin = TokenAuthority::new(SECRET.as_bytes()).mint_admin("backend", WAIT)?;
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/rooms/{room}/publications/{publication}/mute",
            server.addr
        ))
        .bearer_auth(admin)
        .header("content-type", "application/json")
        .body(json!({"muted": false}).to_string())
        .send()
        .await?;
    ensure!(response.status() == 200, "unmute: {}", response.status());
    let answer: serde_json::Value = serde_json::from_str(&response.text().await?)?;
    ensure!(answer["publication"].get("muted").is_none(), "{answer}");
    subscriber
        .wait_event(WAIT, |event| match event {
            ServerMessage::PublicationUnmuted { publication_id, .. }
                if *publication_id == publication =>
            {
                Some(())
            }
            _ => None,
        })
        .await?;
    grows_past(&log, during + 5).await?;
    let after = received(&log);
    let first = after
        .get(during)
        .copied()
        .context("no packet after the unmute")?;
    ensure!(
        first.is_multiple_of(KEYFRAME_EVERY),
        "the stream restarts at a keyframe, not at packet {first}"
    );
    eprintln!(
        "mute: {before} packets before, none for 1 s while muted, resumed at keyframe {first}"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pacer.await.context("pacer")??;
    peer.close().await;
    publisher.peer.close().await;
    server.stop().await;
    Ok(())
}
