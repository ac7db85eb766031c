//! Freshness over completeness on a real server: while a publisher streams video to a viewer,
//! the shard's thread is blocked for 1.5 s (a machine too busy to run it) and its socket
//! queues the publisher's packets meanwhile. When the shard runs again it discards that
//! backlog unread (it is older than the 250 ms bound) and asks the publisher for a keyframe:
//! the viewer gets no packet that waited more than the bound plus scheduling slack, instead of
//! a burst of 1.5 s of stale video.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use sluice_e2e::peer::ClientPeer;
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_signaling::protocol::{ClientMessage, ServerMessage};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::liveness::VideoPublisher;
use crate::shard::answer_offers;
use crate::synthetic::{video_index, video_packet};

const WAIT: Duration = Duration::from_secs(10);
const STALL: Duration = Duration::from_millis(1500);
/// The shard's default `max_ingress_age`.
const BOUND: Duration = Duration::from_millis(250);
/// What a loaded test machine may add between the socket and the viewer's track.
const SLACK: Duration = Duration::from_millis(150);

/// When each packet index was sent, and when each arrived at the viewer.
#[derive(Default)]
struct Timeline {
    sent: HashMap<u32, Instant>,
    arrived: Vec<(u32, Instant)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_shard_discards_its_stale_backlog_and_asks_for_a_keyframe() -> Result<()> {
    init_tracing();
    // One media thread: the stalled shard is the room's, and every datagram's reader.
    let server = TestServer::start_with(|config| config.media_threads = 1).await?;
    let room = "freshness";
    let publisher = VideoPublisher::start(&server.ws_url(), room, "camera").await?;
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = {
        let (track, timeline, stop) = (
            Arc::clone(&publisher.track),
            Arc::clone(&timeline),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            let mut index = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut timeline) = timeline.lock() {
                    timeline.sent.insert(index, Instant::now());
                }
                track.write_rtp(video_packet(index, 0, 0)).await?;
                index += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        })
    };

    let mut viewer = SignalClient::connect(&server.ws_url()).await?;
    viewer.join(token(room, "viewer")).await?;
    let mut peer = ClientPeer::new().await?;
    let mut tracks = std::mem::replace(&mut peer.tracks, tokio::sync::mpsc::unbounded_channel().1);
    {
        let timeline = Arc::clone(&timeline);
        tokio::spawn(async move {
            while let Some(track) = tracks.recv().await {
                let track: Arc<dyn TrackRemote> = track;
                let timeline = Arc::clone(&timeline);
                tokio::spawn(async move {
                    while let Some(event) = track.poll().await {
                        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
                            continue;
                        };
                        if let (Some(index), Ok(mut timeline)) =
                            (video_index(&packet.payload), timeline.lock())
                        {
                            timeline.arrived.push((index, Instant::now()));
                        }
                    }
                });
            }
        });
    }
    let request_id = viewer.next_id();
    let subscribed = viewer
        .request(ClientMessage::Subscribe {
            request_id,
            publication_id: publisher.publication_id.clone(),
        })
        .await?;
    ensure!(
        matches!(subscribed, ServerMessage::Subscribed { .. }),
        "{subscribed:?}"
    );
    answer_offers(&mut viewer, &mut peer).await?;
    let deadline = Instant::now() + WAIT;
    while timeline.lock().map(|t| t.arrived.len()).unwrap_or(0) < 50 {
        ensure!(Instant::now() < deadline, "no video before the stall");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shard = server.sfu.shards().first().context("no shard")?;
    let before = server.sfu.shard_stats().await?;

    let stalled_at = Instant::now();
    shard.stall(STALL).await?;
    let resumed_at = stalled_at + STALL;
    // Once the shard has read its backlog, the queue's age (what /metrics shows) is the
    // backlog's. (A stats request waits for the stall to end.)
    let deadline = Instant::now() + STALL + WAIT;
    let queue_age = loop {
        let stats = server.sfu.shard_stats().await?;
        if stats.stale_dropped - before.stale_dropped >= 75 {
            break stats.ingress_age_max_ms;
        }
        ensure!(
            Instant::now() < deadline,
            "the backlog was not discarded: {} dropped",
            stats.stale_dropped - before.stale_dropped
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Live video after the stall: 100 packets (a second's worth).
    let arrived_after = || {
        timeline
            .lock()
            .map(|t| t.arrived.iter().filter(|(_, at)| *at >= resumed_at).count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + WAIT;
    while arrived_after() < 100 {
        ensure!(
            Instant::now() < deadline,
            "video did not continue after the stall: {} packets",
            arrived_after()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    pacer.await.context("pacer")??;

    let after = server.sfu.shard_stats().await?;
    let stale = after.stale_dropped - before.stale_dropped;
    let keyframes = after.media.keyframe_requests_sent - before.media.keyframe_requests_sent;
    let late: Vec<(u32, Duration)> = {
        let timeline = timeline
            .lock()
            .map_err(|_| anyhow::anyhow!("timeline poisoned"))?;
        timeline
            .arrived
            .iter()
            .filter(|(_, at)| *at >= resumed_at)
            .filter_map(|(index, at)| Some((*index, at.duration_since(*timeline.sent.get(index)?))))
            .collect()
    };
    let oldest = late.iter().map(|(_, age)| *age).max().unwrap_or_default();
    let delivered_after = late.len();
    eprintln!(
        "freshness: {stale} stale datagrams discarded, {keyframes} keyframe requests, \
         queue age {queue_age} ms, {delivered_after} packets after the stall, the oldest \
         {oldest:?} after it was sent"
    );
    ensure!(
        stale >= 75,
        "the 1.5 s backlog (~150 packets) was not discarded: {stale} dropped"
    );
    ensure!(keyframes >= 1, "no keyframe was asked for after the loss");
    ensure!(
        queue_age >= 1000,
        "the queue age after a 1.5 s stall reads {queue_age} ms"
    );
    ensure!(
        delivered_after >= 100,
        "video did not continue after the stall: {delivered_after} packets"
    );
    ensure!(
        oldest <= STALL.min(BOUND + SLACK + Duration::from_millis(100)),
        "a packet reached the viewer {oldest:?} after it was sent"
    );
    peer.close().await;
    publisher.peer.close().await;
    server.stop().await;
    Ok(())
}
