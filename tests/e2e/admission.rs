//! Admission of subscribers at the server's capacity on a real server (`max_subscribers` 2,
//! webrtc-rs clients): two viewers receive a publisher's video; a third joins, but its first
//! subscription is refused `serverFull` while the two keep receiving; a WHEP viewer is refused
//! `503` with `Retry-After`; a publisher joining at capacity publishes, and an admitted viewer
//! whose socket dropped resumes; `/metrics` counts the refusals; once a viewer leaves, the
//! third is admitted and receives. And by load (`admission_cpu_percent` 50): while the media
//! thread has been blocked (a test hook, as a machine too busy to run it) a new subscriber is
//! refused, and admitted once the thread has been idle for a window again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sluice_e2e::peer::ClientPeer;
use sluice_e2e::{SignalClient, TestServer, init_tracing, token, token_with};
use sluice_signaling::protocol::{ClientMessage, ErrorCode, ServerMessage};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use crate::liveness::{VideoPublisher, pace_video};
use crate::resume::resume;
use crate::shard::{Received, answer_offers, collect};
use crate::whip::{http, sdp_post};

const WAIT: Duration = Duration::from_secs(10);
const ROOM: &str = "full";

type Log = Arc<std::sync::Mutex<Vec<Received>>>;

/// A joined viewer, its receiving peer and what the peer received.
struct Viewer {
    signal: SignalClient,
    peer: ClientPeer,
    log: Log,
    participant_id: String,
    resume_token: String,
}

impl Viewer {
    async fn join(server: &TestServer, identity: &str) -> Result<Self> {
        let mut signal = SignalClient::connect(&server.ws_url()).await?;
        let ServerMessage::Joined {
            participant,
            resume_token,
            ..
        } = signal.join(token(ROOM, identity)).await?
        else {
            bail!("{identity}: join refused");
        };
        let mut peer = ClientPeer::new().await?;
        let log = collect(&mut peer);
        Ok(Self {
            signal,
            peer,
            log,
            participant_id: participant.participant_id,
            resume_token,
        })
    }

    async fn subscribe(&mut self, publication: &str) -> Result<ServerMessage> {
        let request_id = self.signal.next_id();
        self.signal
            .request(ClientMessage::Subscribe {
                request_id,
                publication_id: publication.to_owned(),
            })
            .await
    }

    /// Subscribes to `publication`, connects and waits for its first packets.
    async fn watch(&mut self, publication: &str) -> Result<()> {
        let subscribed = self.subscribe(publication).await?;
        ensure!(
            matches!(subscribed, ServerMessage::Subscribed { .. }),
            "{subscribed:?}"
        );
        answer_offers(&mut self.signal, &mut self.peer).await?;
        grows_past(&self.log, 0).await
    }
}

/// Video packets received so far.
fn packets(log: &Log) -> usize {
    log.lock().map_or(0, |log| {
        log.iter()
            .filter(|r| r.video)
            .map(|r| r.packets.len())
            .sum()
    })
}

/// Waits until more than `count` video packets have arrived.
async fn grows_past(log: &Log, count: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while packets(log) <= count {
        ensure!(
            Instant::now() < deadline,
            "no video arrived past {count} packets"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn is_server_full(message: &ServerMessage) -> bool {
    matches!(
        message,
        ServerMessage::Error {
            code: ErrorCode::ServerFull,
            ..
        }
    )
}

/// A WHEP viewer's recvonly video offer.
async fn whep_offer() -> Result<(ClientPeer, String)> {
    let viewer = ClientPeer::new().await?;
    viewer
        .pc
        .add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await?;
    let offer = viewer.offer().await?;
    Ok((viewer, offer))
}

/// The value of the sample `name` (with its labels) in `/metrics`.
async fn metric(server: &TestServer, name: &str) -> Result<f64> {
    let scraped = http(server, "GET", "/metrics", &[], "").await?;
    ensure!(scraped.status == 200, "/metrics: {}", scraped.status);
    scraped
        .body
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .with_context(|| format!("no {name} in /metrics"))?
        .trim()
        .parse()
        .context("a sample value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_past_the_capacity_are_refused_and_those_admitted_keep_receiving() -> Result<()>
{
    init_tracing();
    let server = TestServer::start_with(|config| config.limits.max_subscribers = 2).await?;
    let publisher = VideoPublisher::start(&server.ws_url(), ROOM, "publisher").await?;
    let publication = publisher.publication_id.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = pace_video(
        Arc::clone(&publisher.track),
        Arc::new(AtomicBool::new(true)),
        Arc::clone(&stop),
    );

    let mut first = Viewer::join(&server, "first").await?;
    first.watch(&publication).await?;
    let mut second = Viewer::join(&server, "second").await?;
    second.watch(&publication).await?;

    // The third joins (joining is not subscribing) but its first subscription is refused.
    let mut third = Viewer::join(&server, "third").await?;
    let refused = third.subscribe(&publication).await?;
    ensure!(is_server_full(&refused), "third viewer: {refused:?}");

    // WHEP: refused before it joins the room, with a time to come back.
    let (whep, offer) = whep_offer().await?;
    let bearer = format!("Bearer {}", token_with(ROOM, "whep", false, true, WAIT));
    let played = http(
        &server,
        "POST",
        &format!("/whep/{ROOM}"),
        &sdp_post(&bearer),
        &offer,
    )
    .await?;
    ensure!(
        played.status == 503,
        "WHEP at capacity: {} {}",
        played.status,
        played.body
    );
    ensure!(
        played.headers.get("retry-after").map(String::as_str) == Some("5"),
        "Retry-After: {:?}",
        played.headers
    );
    whep.close().await;

    // Publishers are not subscribers: one joining at capacity publishes.
    let late_publisher = VideoPublisher::start(&server.ws_url(), ROOM, "late-publisher").await?;

    // The admitted viewers keep receiving all along: half a second's worth of packets (one
    // each 10 ms) after the refusals, within 5 s.
    let (before_first, before_second) = (packets(&first.log), packets(&second.log));
    let gained = || {
        (
            packets(&first.log) - before_first,
            packets(&second.log) - before_second,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while (gained().0 < 50 || gained().1 < 50) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (gained_first, gained_second) = gained();
    ensure!(
        gained_first >= 50 && gained_second >= 50,
        "admitted viewers received {gained_first} and {gained_second} packets in 1 s"
    );

    // An admitted viewer whose socket drops resumes at capacity, its media flowing on.
    let Viewer {
        signal,
        participant_id,
        resume_token,
        ..
    } = second;
    signal.vanish(WAIT).await?;
    let (_second_again, resumed) = resume(&server, &participant_id, &resume_token).await?;
    ensure!(
        matches!(resumed, ServerMessage::Resumed { .. }),
        "resume at capacity: {resumed:?}"
    );
    grows_past(&second.log, packets(&second.log) + 20).await?;

    let refusals = metric(
        &server,
        "sluice_admission_refused_total{reason=\"max_subscribers\"}",
    )
    .await?;
    ensure!(refusals == 2.0, "refusals counted: {refusals}");
    let admitted = metric(&server, "sluice_admission_subscribers").await?;
    ensure!(admitted == 2.0, "subscribers admitted: {admitted}");

    // The first leaves: its place is free, and the third, asking again, is admitted.
    let request_id = first.signal.next_id();
    first
        .signal
        .request(ClientMessage::Leave { request_id })
        .await?;
    first.peer.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = third.subscribe(&publication).await?;
        if matches!(answer, ServerMessage::Subscribed { .. }) {
            break;
        }
        ensure!(is_server_full(&answer), "third viewer again: {answer:?}");
        ensure!(
            Instant::now() < deadline,
            "no place freed within {WAIT:?} of a leave"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answer_offers(&mut third.signal, &mut third.peer).await?;
    grows_past(&third.log, 20).await?;
    eprintln!(
        "admission: 2 admitted viewers got {gained_first} and {gained_second} packets in the second after 2 refusals; the third was admitted after a leave"
    );

    stop.store(true, Ordering::Relaxed);
    pacer.await.context("pacer")??;
    for peer in [
        &third.peer,
        &second.peer,
        &publisher.peer,
        &late_publisher.peer,
    ] {
        peer.close().await;
    }
    server.stop().await;
    Ok(())
}

/// Waits until the busiest media thread's share is above (or, with `above` false, at or
/// below) `ratio`.
async fn busy_ratio(server: &TestServer, ratio: f64, above: bool) -> Result<f64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let busy = metric(server, "sluice_shard_busy_ratio_max").await?;
        if (busy > ratio) == above {
            return Ok(busy);
        }
        ensure!(
            Instant::now() < deadline,
            "busy ratio still {busy} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscriber_is_refused_while_the_media_thread_is_busy() -> Result<()> {
    init_tracing();
    let server = TestServer::start_with(|config| config.limits.admission_cpu_percent = 50).await?;
    let publisher = VideoPublisher::start(&server.ws_url(), ROOM, "publisher").await?;
    let publication = publisher.publication_id.clone();

    // An idle media thread waits nearly all the time: admitted.
    let mut early = Viewer::join(&server, "early").await?;
    let subscribed = early.subscribe(&publication).await?;
    ensure!(
        matches!(subscribed, ServerMessage::Subscribed { .. }),
        "on an idle server: {subscribed:?}"
    );

    // The media threads work (are blocked) for 3 s: past 50 % of their window.
    for shard in server.sfu.shards() {
        shard.stall(Duration::from_secs(3)).await?;
    }
    let busy = busy_ratio(&server, 0.5, true).await?;
    let mut late = Viewer::join(&server, "late").await?;
    let refused = late.subscribe(&publication).await?;
    ensure!(
        is_server_full(&refused),
        "with the media thread {busy} busy: {refused:?}"
    );
    let refusals = metric(&server, "sluice_admission_refused_total{reason=\"cpu\"}").await?;
    ensure!(refusals == 1.0, "cpu refusals counted: {refusals}");

    // Idle again for a window: admitted.
    busy_ratio(&server, 0.5, false).await?;
    let subscribed = late.subscribe(&publication).await?;
    ensure!(
        matches!(subscribed, ServerMessage::Subscribed { .. }),
        "once idle again: {subscribed:?}"
    );
    eprintln!("admission: refused with the media thread {busy} busy, admitted once idle");

    for peer in [&early.peer, &late.peer, &publisher.peer] {
        peer.close().await;
    }
    server.stop().await;
    Ok(())
}
