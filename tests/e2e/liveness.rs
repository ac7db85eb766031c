//! Publisher liveness on the shard plane through signaling: a webrtc-rs publisher whose media
//! stops is announced `publicationStalled` to the room within 2 s, `publicationResumed` when
//! it sends again, a participant joining meanwhile is told at once, and a publisher dropped
//! without closing anything (its process gone) is announced the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sluice_e2e::peer::{ClientPeer, VP8};
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_signaling::protocol::{
    ClientMessage, MediaKind as WireKind, ServerMessage, TrackInfo, TrackSource,
};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use crate::shard::mid_of;
use crate::synthetic::video_packet;

const CONNECT_WAIT: Duration = Duration::from_secs(15);
/// What subscribers are promised: told within 2 s that a publisher's media stopped.
const STALL_GOAL: Duration = Duration::from_secs(2);

/// A webrtc-rs client publishing one VP8 track through signaling, connected.
pub(crate) struct VideoPublisher {
    pub(crate) signal: SignalClient,
    pub(crate) peer: ClientPeer,
    pub(crate) track: Arc<TrackLocalStaticRTP>,
    pub(crate) publication_id: String,
}

impl VideoPublisher {
    /// Joins `room` as `identity` on the server at `ws_url` (the shard plane) and publishes one
    /// video track; the shard must answer as ICE-lite.
    pub(crate) async fn start(ws_url: &str, room: &str, identity: &str) -> Result<Self> {
        let mut signal = SignalClient::connect(ws_url).await?;
        let joined = signal.join(token(room, identity)).await?;
        ensure!(
            matches!(joined, ServerMessage::Joined { .. }),
            "join refused: {joined:?}"
        );
        let mut peer = ClientPeer::new().await?;
        let track = peer.add_send_track(VP8, 0x1111).await?;
        let offer = peer.offer().await?;
        let request_id = signal.next_id();
        let published = signal
            .request(ClientMessage::Publish {
                request_id,
                tracks: vec![TrackInfo {
                    mid: mid_of(&offer, VP8)?,
                    kind: WireKind::Video,
                    source: TrackSource::Camera,
                    name: None,
                    rids: None,
                }],
                sdp: offer,
            })
            .await?;
        let ServerMessage::Published {
            sdp, publications, ..
        } = published
        else {
            bail!("publish failed: {published:?}");
        };
        ensure!(sdp.contains("a=ice-lite"), "the shard answers as ICE-lite");
        peer.apply_answer(sdp).await?;
        peer.wait_connected(CONNECT_WAIT).await?;
        let publication_id = publications
            .first()
            .map(|p| p.publication_id.clone())
            .context("no publication")?;
        Ok(Self {
            signal,
            peer,
            track,
            publication_id,
        })
    }
}

/// Sends a packet every 10 ms while `sending` is set; returns when `stop` is set.
pub(crate) fn pace_video(
    track: Arc<TrackLocalStaticRTP>,
    sending: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let mut index = 0;
        while !stop.load(Ordering::Relaxed) {
            if sending.load(Ordering::Relaxed) {
                track.write_rtp(video_packet(index, 0, 0)).await?;
                index += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    })
}

/// Waits for `publicationStalled` (or, with `stalled` false, `publicationResumed`) of
/// `publication`.
async fn liveness_event(
    client: &mut SignalClient,
    publication: &str,
    stalled: bool,
    wait: Duration,
) -> Result<()> {
    client
        .wait_event(wait, |event| match event {
            ServerMessage::PublicationStalled { publication_id, .. }
                if stalled && publication_id == publication =>
            {
                Some(())
            }
            ServerMessage::PublicationResumed { publication_id, .. }
                if !stalled && publication_id == publication =>
            {
                Some(())
            }
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_media_stops_is_announced_stalled_within_two_seconds() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let room = "liveness";
    let publisher = VideoPublisher::start(&server.ws_url(), room, "camera").await?;
    let publication = publisher.publication_id.clone();
    let (sending, stop) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let sender = pace_video(
        Arc::clone(&publisher.track),
        Arc::clone(&sending),
        Arc::clone(&stop),
    );

    let mut viewer = SignalClient::connect(&server.ws_url()).await?;
    viewer.join(token(room, "viewer")).await?;
    // Media flows: no stall while it does.
    let quiet = liveness_event(&mut viewer, &publication, true, Duration::from_secs(3)).await;
    ensure!(quiet.is_err(), "stalled while media flowed");

    // The encoder pauses: stalled within the goal, resumed with its first packet back.
    sending.store(false, Ordering::Relaxed);
    let paused_at = Instant::now();
    liveness_event(&mut viewer, &publication, true, Duration::from_secs(5)).await?;
    let paused_delay = paused_at.elapsed();
    ensure!(
        paused_delay <= STALL_GOAL,
        "told {paused_delay:?} after the media stopped"
    );
    let mut late = SignalClient::connect(&server.ws_url()).await?;
    late.join(token(room, "late")).await?;
    liveness_event(&mut late, &publication, true, Duration::from_secs(1))
        .await
        .context("a participant joining during the stall is told")?;
    sending.store(true, Ordering::Relaxed);
    let resumed_at = Instant::now();
    liveness_event(&mut viewer, &publication, false, Duration::from_secs(2)).await?;
    let resume_delay = resumed_at.elapsed();
    liveness_event(&mut late, &publication, false, Duration::from_secs(2)).await?;

    // The publisher's process dies: no leave, no DTLS close, no WebSocket close.
    let quiet = liveness_event(&mut viewer, &publication, true, Duration::from_secs(2)).await;
    ensure!(quiet.is_err(), "stalled again while media flowed");
    stop.store(true, Ordering::Relaxed);
    sender.await.context("sender task")??;
    let killed_at = Instant::now();
    let VideoPublisher { signal, peer, .. } = publisher;
    drop(peer);
    drop(signal);
    liveness_event(&mut viewer, &publication, true, Duration::from_secs(5)).await?;
    let killed_delay = killed_at.elapsed();
    ensure!(
        killed_delay <= STALL_GOAL,
        "told {killed_delay:?} after the publisher vanished"
    );
    eprintln!(
        "liveness: stalled {paused_delay:?} after the media paused, resumed {resume_delay:?} \
         after it returned; stalled {killed_delay:?} after the publisher vanished"
    );
    server.stop().await;
    Ok(())
}

/// A publisher whose WebSocket vanished is parked for a resume; once its connection fails
/// (ICE consent lost: its process is gone), it is removed without waiting out the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_publisher_whose_connection_fails_is_removed_before_the_grace_ends() -> Result<()>
{
    init_tracing();
    const GRACE: Duration = Duration::from_secs(120);
    let server = TestServer::start_with(|config| config.resume_grace = GRACE).await?;
    let room = "liveness-failed";
    let publisher = VideoPublisher::start(&server.ws_url(), room, "camera").await?;
    let mut viewer = SignalClient::connect(&server.ws_url()).await?;
    let ServerMessage::Joined { participants, .. } = viewer.join(token(room, "viewer")).await?
    else {
        bail!("join refused");
    };
    let publisher_id = participants
        .first()
        .map(|p| p.participant_id.clone())
        .context("the publisher is in the room")?;
    let VideoPublisher { signal, peer, .. } = publisher;
    let vanished_at = Instant::now();
    signal.vanish(Duration::from_secs(5)).await?;
    // Its media connection ends without a word to the server: the client stops answering.
    peer.close().await;
    viewer
        .wait_event(Duration::from_secs(45), |event| match event {
            ServerMessage::ParticipantLeft { participant_id }
                if *participant_id == publisher_id =>
            {
                Some(())
            }
            _ => None,
        })
        .await
        .context("the parked publisher was still in the room 45 s later")?;
    let removed_after = vanished_at.elapsed();
    ensure!(removed_after < GRACE);
    eprintln!(
        "liveness: a parked publisher whose connection ended was removed {removed_after:?} after it vanished (grace {GRACE:?})"
    );
    server.stop().await;
    Ok(())
}
