//! Churn and soak on the shard plane: 100 join / publish / subscribe / leave cycles of
//! webrtc-rs clients against a server in this process, one in five ended abruptly (WebSocket
//! shut without `leave` or close frame, peer connections left without closing), then the
//! server's counts must return to their baseline: rooms, participants, publications and
//! subscriptions (its stats), the shard's peers and rooms, the process's open file
//! descriptors and tokio tasks, and RSS within a bound. The figures are printed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sluice_e2e::peer::ClientPeer;
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_signaling::protocol::{ClientMessage, ServerMessage};
use webrtc::media_stream::track_local::TrackLocal;

use crate::liveness::VideoPublisher;
use crate::shard::{answer_offers, collect};
use crate::synthetic::video_packet;

const CYCLES: usize = 100;
/// Cycles run at once (each in its own room of a few).
const PARALLEL: usize = 4;
/// Every fifth cycle ends abruptly.
const KILL_EVERY: usize = 5;
/// The whole churn must fit in this (debug build, 2 cores).
const CHURN_BUDGET: Duration = Duration::from_secs(60);
/// RSS may grow by this much over the churn (allocator caches, the DTLS and SRTP contexts'
/// freed memory the allocator keeps), not by a leak per cycle.
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;

/// What the process and the server hold at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Figures {
    rooms: usize,
    participants: usize,
    publications: usize,
    subscriptions: usize,
    shard_peers: u64,
    shard_rooms: u64,
    fds: usize,
    tasks: usize,
    rss_kib: u64,
}

impl Figures {
    async fn read(server: &TestServer) -> Result<Self> {
        let stats = server.sfu.stats().await;
        let shard = server.sfu.shard_stats().await?;
        Ok(Self {
            rooms: stats.rooms,
            participants: stats.participants,
            publications: stats.publications,
            subscriptions: stats.subscriptions,
            shard_peers: shard.peers,
            shard_rooms: shard.rooms,
            fds: std::fs::read_dir("/proc/self/fd")?.count(),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            rss_kib: rss_kib()?,
        })
    }

    /// Everything but RSS, which is bounded separately.
    fn counts(&self) -> [usize; 8] {
        [
            self.rooms,
            self.participants,
            self.publications,
            self.subscriptions,
            self.shard_peers as usize,
            self.shard_rooms as usize,
            self.fds,
            self.tasks,
        ]
    }
}

fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc/self/status")
}

/// The peer connections of an abruptly ended cycle, kept unclosed until the server has
/// removed their participants on its own.
type Abandoned = Option<(ClientPeer, ClientPeer)>;

/// One cycle: a publisher and a subscriber in `room`; media must reach the subscriber; then
/// both leave — or, with `kill`, vanish and return their peer connections unclosed.
async fn cycle(ws_url: &str, room: &str, index: usize, kill: bool) -> Result<Abandoned> {
    let publisher = VideoPublisher::start(ws_url, room, &format!("pub-{index}")).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (track, stop) = (Arc::clone(&publisher.track), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                track.write_rtp(video_packet(sent, 0, 0)).await?;
                sent += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        })
    };
    let mut subscriber = SignalClient::connect(ws_url).await?;
    subscriber
        .join(token(room, &format!("sub-{index}")))
        .await?;
    let mut peer = ClientPeer::new().await?;
    let log = collect(&mut peer);
    let request_id = subscriber.next_id();
    let response = subscriber
        .request(ClientMessage::Subscribe {
            request_id,
            publication_id: publisher.publication_id.clone(),
        })
        .await?;
    ensure!(
        matches!(response, ServerMessage::Subscribed { .. }),
        "subscribe failed: {response:?}"
    );
    answer_offers(&mut subscriber, &mut peer).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let media_arrived = || {
        log.lock()
            .expect("log")
            .first()
            .is_some_and(|r| !r.packets.is_empty())
    };
    while !media_arrived() {
        ensure!(Instant::now() < deadline, "cycle {index}: no media in 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    sender.await.context("sender")??;
    let VideoPublisher {
        signal: mut publisher_signal,
        peer: publisher_peer,
        ..
    } = publisher;
    if kill {
        // As if both processes died: no leave, no close frame, no DTLS close.
        subscriber.vanish(Duration::from_secs(5)).await?;
        publisher_signal.vanish(Duration::from_secs(5)).await?;
        return Ok(Some((peer, publisher_peer)));
    } else {
        for client in [&mut subscriber, &mut publisher_signal] {
            let request_id = client.next_id();
            client.request(ClientMessage::Leave { request_id }).await?;
        }
        peer.close().await;
        publisher_peer.close().await;
    }
    Ok(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_returns_the_server_to_its_baseline() -> Result<()> {
    init_tracing();
    // A short resume grace: abruptly ended participants are removed 1 s after their socket.
    let server = TestServer::start_with(|config| {
        config.resume_grace = Duration::from_secs(1);
    })
    .await?;
    // Warm up: one cycle creates what lives for the process (the runtime's threads, the
    // shard's first allocations, lazily initialised statics); the baseline is taken after it.
    ensure!(
        cycle(&server.ws_url(), "soak-warmup", 0, false)
            .await?
            .is_none()
    );
    let baseline = settle(&server, None).await?;

    let started = Instant::now();
    let mut abandoned = Vec::new();
    let mut next = 1;
    while next <= CYCLES {
        let batch: Vec<usize> = (next..(next + PARALLEL).min(CYCLES + 1)).collect();
        next += batch.len();
        let runs = batch.iter().map(|&index| {
            let room = format!("soak-{}", index % PARALLEL);
            let url = server.ws_url();
            async move { cycle(&url, &room, index, index % KILL_EVERY == 0).await }
        });
        for (result, index) in futures::future::join_all(runs)
            .await
            .into_iter()
            .zip(&batch)
        {
            abandoned.extend(result.with_context(|| format!("cycle {index}"))?);
        }
        ensure!(
            started.elapsed() < CHURN_BUDGET,
            "{} cycles took longer than {CHURN_BUDGET:?}",
            next - 1
        );
    }
    let churn = started.elapsed();
    // The server removes the abruptly ended participants by itself (resume grace), while
    // their clients' peer connections are still open and sending ICE checks.
    settle(&server, None).await?;
    let reaped = started.elapsed() - churn;
    // Only now are those clients' connections closed: a webrtc-rs peer connection dropped
    // without `close` keeps its socket and tasks in this process, which would hide the server's
    // own figures.
    for (subscriber, publisher) in abandoned {
        subscriber.close().await;
        publisher.close().await;
    }
    let after = settle(&server, Some(&baseline)).await?;
    let rss_growth = after.rss_kib.saturating_sub(baseline.rss_kib);
    eprintln!(
        "soak: {CYCLES} cycles ({} abrupt) in {churn:?}; the server empty {reaped:?} after the \
         last cycle; baseline {baseline:?}; after {after:?}; RSS +{rss_growth} KiB",
        CYCLES / KILL_EVERY,
    );
    ensure!(
        rss_growth <= RSS_GROWTH_BOUND_KIB,
        "RSS grew by {rss_growth} KiB over the churn (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
    server.stop().await;
    Ok(())
}

/// Waits (bounded) until the server holds nothing and, given a baseline, the process's counts
/// are back to it; returns the figures then.
async fn settle(server: &TestServer, baseline: Option<&Figures>) -> Result<Figures> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = Figures::read(server).await?;
        let empty = now.counts()[..6].iter().all(|&count| count == 0);
        let back = baseline.is_none_or(|b| {
            now.counts()
                .iter()
                .zip(b.counts())
                .all(|(now, then)| *now <= then)
        });
        if empty && back {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("not back to the baseline in 20 s: now {now:?}, baseline {baseline:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
