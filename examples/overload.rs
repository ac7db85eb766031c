//! Overload figures: how far behind live viewers fall, and the server's RSS, while the `sluice`
//! process is starved of CPU (a cgroup v1 CPU quota) and after the quota lifts, with the
//! freshness bound on and off (`--max-ingress-age-ms`), in one run. With `--joins N`, instead:
//! the longest forwarding gap the viewers see while N more join at once (each with its own
//! ICE, DTLS and SRTP set-up on the same media thread). A benchmark, not a test: it prints
//! tables (docs/benchmarks.md, "Overload: lag behind live under a CPU cap" and "Forwarding
//! while peers join").
//!
//! ```sh
//! cargo build --release -p sluice-signaling --bin sluice
//! cargo run --release -p sluice-e2e --example overload -- --sluice target/release/sluice
//! ```
//!
//! Needs root (it creates `/sys/fs/cgroup/cpu/sluice-overload-PID` and removes it). One
//! webrtc-rs publisher sends synthetic VP8 at `--pps` packets a second, each stamped with its
//! index; `--viewers` webrtc-rs subscribers record when each index arrives. Three phases of
//! `--phase-secs`: uncapped, capped at `--cap-percent` of one core, uncapped again. Loopback
//! only; it ends only the processes it started.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sluice_e2e::peer::{ClientPeer, VP8};
use sluice_e2e::{SECRET, SignalClient, token};
use sluice_signaling::protocol::{ClientMessage, MediaKind, ServerMessage, TrackInfo, TrackSource};
use tokio::io::{AsyncBufReadExt, BufReader};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// Options, from `--name value` pairs.
struct Options {
    sluice: PathBuf,
    viewers: usize,
    pps: u32,
    cap_percent: u32,
    phase: Duration,
    ages: Vec<u64>,
    /// With N > 0: instead of the CPU cap, N more viewers join at once (ICE, DTLS, SRTP each)
    /// while the forwarding to the others is watched.
    joins: usize,
}

fn options() -> Result<Options> {
    let mut options = Options {
        sluice: PathBuf::from("target/release/sluice"),
        viewers: 20,
        pps: 600,
        cap_percent: 10,
        phase: Duration::from_secs(8),
        ages: vec![0, 250],
        joins: 0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [name, value] = pair else {
            bail!("options come as --name value pairs");
        };
        match name.as_str() {
            "--sluice" => options.sluice = PathBuf::from(value),
            "--viewers" => options.viewers = value.parse()?,
            "--pps" => options.pps = value.parse()?,
            "--cap-percent" => options.cap_percent = value.parse()?,
            "--phase-secs" => options.phase = Duration::from_secs(value.parse()?),
            "--joins" => options.joins = value.parse()?,
            "--ages" => {
                options.ages = value.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            other => bail!("unknown option {other}"),
        }
    }
    ensure!(options.viewers > 0 && options.pps > 0, "nothing to measure");
    Ok(options)
}

/// A synthetic VP8 packet whose payload carries its index (keyframe every 3 s).
fn packet(index: u32, pps: u32) -> rtc::rtp::Packet {
    let keyframe = index.is_multiple_of(pps * 3);
    let mut payload = vec![0x10, u8::from(!keyframe), 0, 0];
    payload.extend_from_slice(&index.to_be_bytes());
    payload.resize(1000, 0xab);
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type: 96,
            sequence_number: index as u16,
            timestamp: index.wrapping_mul(90_000 / pps),
            ssrc: 0x0ad,
            marker: true,
            ..Default::default()
        },
        payload: payload.into(),
    }
}

fn index_of(payload: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = payload.get(4..8)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// What one run measured, per phase: lag percentiles (ms), packets delivered, RSS (MiB).
struct Phase {
    name: &'static str,
    lags: Vec<Duration>,
    expected: usize,
    rss_mib: f64,
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// A CPU quota for one process (cgroup v1), removed on drop.
struct CpuCap {
    dir: PathBuf,
}

impl CpuCap {
    fn new(pid: u32) -> Result<Self> {
        let dir = PathBuf::from(format!(
            "/sys/fs/cgroup/cpu/sluice-overload-{}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).context("creating the cgroup (needs root and cgroup v1)")?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        Ok(Self { dir })
    }

    /// `percent` of one core (100 ms period); `None` lifts the quota.
    fn set(&self, percent: Option<u32>) -> Result<()> {
        let quota = percent.map_or(-1, |p| i64::from(p) * 1000);
        std::fs::write(self.dir.join("cpu.cfs_quota_us"), quota.to_string())?;
        Ok(())
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // The process is gone by now; its cgroup is empty and can go.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Arrivals at the viewers: which viewer, which packet index, when.
type Arrivals = Arc<Mutex<Vec<(usize, u32, Instant)>>>;

/// Joins viewer `n`, subscribes it to `publication` and records what it receives in `log`.
async fn add_viewer(
    url: &str,
    n: usize,
    publication: &str,
    log: Arrivals,
) -> Result<(SignalClient, ClientPeer)> {
    let mut viewer = SignalClient::connect(url).await?;
    viewer
        .join(token("overload", &format!("viewer-{n}")))
        .await?;
    let mut peer = ClientPeer::new().await?;
    let mut tracks = std::mem::replace(&mut peer.tracks, tokio::sync::mpsc::unbounded_channel().1);
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let track: Arc<dyn TrackRemote> = track;
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(packet) = event
                        && let (Some(index), Ok(mut log)) = (index_of(&packet.payload), log.lock())
                    {
                        log.push((n, index, Instant::now()));
                    }
                }
            });
        }
    });
    let request_id = viewer.next_id();
    viewer
        .request(ClientMessage::Subscribe {
            request_id,
            publication_id: publication.to_owned(),
        })
        .await?;
    let offer = viewer
        .wait_event(Duration::from_secs(20), |event| match event {
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
    Ok((viewer, peer))
}

/// The longest time between two consecutive arrivals at any of `viewers` within
/// `[start, end)`, and the 99th percentile of the viewers' longest gaps.
fn gaps(
    arrived: &[(usize, u32, Instant)],
    viewers: usize,
    start: Instant,
    end: Instant,
) -> (f64, f64) {
    let mut longest: Vec<Duration> = (0..viewers)
        .map(|viewer| {
            let times: Vec<Instant> = arrived
                .iter()
                .filter(|(v, _, at)| *v == viewer && *at >= start && *at < end)
                .map(|(_, _, at)| *at)
                .collect();
            times
                .windows(2)
                .map(|pair| pair[1].duration_since(pair[0]))
                .max()
                .unwrap_or(end.duration_since(start))
        })
        .collect();
    longest.sort_unstable();
    (percentile(&longest, 1.0), percentile(&longest, 0.99))
}

/// The join burst: a window as things are, then `options.joins` viewers joining at once;
/// prints the forwarding gaps the first viewers saw and how long the joins took.
async fn join_burst(
    options: &Options,
    url: &str,
    publication: &str,
    sent: &Arc<Mutex<HashMap<u32, Instant>>>,
    arrived: &Arrivals,
) -> Result<Vec<Phase>> {
    let window = Duration::from_secs(3);
    let before = Instant::now();
    tokio::time::sleep(window).await;
    let burst = Instant::now();
    let joining: Vec<_> = (0..options.joins)
        .map(|k| {
            let (url, publication, log) =
                (url.to_owned(), publication.to_owned(), Arc::clone(arrived));
            let n = options.viewers + k;
            tokio::spawn(async move { add_viewer(&url, n, &publication, log).await })
        })
        .collect();
    let mut joined = Vec::new();
    for task in joining {
        joined.push(task.await??);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_packets = loop {
        let firsts: Vec<Option<Instant>> = {
            let log = arrived.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            (options.viewers..options.viewers + options.joins)
                .map(|n| log.iter().find(|(v, _, _)| *v == n).map(|(_, _, at)| *at))
                .collect()
        };
        if firsts.iter().all(Option::is_some) || Instant::now() > deadline {
            break firsts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = Instant::now();
    let mut join_times: Vec<Duration> = first_packets
        .iter()
        .flatten()
        .map(|at| at.duration_since(burst))
        .collect();
    join_times.sort_unstable();
    let log = arrived.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let sent = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let (quiet_max, quiet_p99) = gaps(&log, options.viewers, before, burst);
    let (burst_max, burst_p99) = gaps(&log, options.viewers, burst, end);
    println!(
        "  {} joins at once: {} receiving, join to first packet p50 {:.0} ms, max {:.0} ms",
        options.joins,
        join_times.len(),
        percentile(&join_times, 0.5),
        percentile(&join_times, 1.0)
    );
    println!(
        "  longest gap at the {} earlier viewers: {:.0} ms (p99 of viewers {:.0} ms) during the \
         joins, {:.0} ms ({:.0} ms) in the {:?} before",
        options.viewers, burst_max, burst_p99, quiet_max, quiet_p99, window
    );
    let lags = |start: Instant, end: Instant| {
        let mut lags: Vec<Duration> = log
            .iter()
            .filter(|(v, _, at)| *v < options.viewers && *at >= start && *at < end)
            .filter_map(|(_, index, at)| Some(at.duration_since(*sent.get(index)?)))
            .collect();
        lags.sort_unstable();
        lags
    };
    drop(joined);
    Ok(vec![
        Phase {
            name: "before joins",
            lags: lags(before, burst),
            expected: 0,
            rss_mib: f64::NAN,
        },
        Phase {
            name: "during joins",
            lags: lags(burst, end),
            expected: 0,
            rss_mib: f64::NAN,
        },
    ])
}

async fn run(options: &Options, age: u64) -> Result<Vec<Phase>> {
    let mut child = tokio::process::Command::new(&options.sluice)
        .args(["--listen", "127.0.0.1:0", "--public-ip", "127.0.0.1"])
        .args(["--rtmp", "127.0.0.1:0", "--media-threads", "1"])
        .args(["--max-ingress-age-ms", &age.to_string()])
        .env("SLUICE_SECRET", SECRET)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting sluice")?;
    let pid = child.id().context("no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let http = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                return Ok(rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned());
            }
        }
        bail!("sluice exited before listening")
    })
    .await
    .context("sluice did not start")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = format!("ws://{http}/ws");
    let cap = CpuCap::new(pid)?;

    // The publisher.
    let mut signal = SignalClient::connect(&url).await?;
    signal.join(token("overload", "camera")).await?;
    let mut publisher = ClientPeer::new().await?;
    let track = publisher.add_send_track(VP8, 0x0ad).await?;
    let offer = publisher.offer().await?;
    let mid = sluice_sfu::transport::negotiated_codecs(&offer)
        .into_keys()
        .next()
        .context("no media section")?;
    let request_id = signal.next_id();
    let ServerMessage::Published {
        sdp, publications, ..
    } = signal
        .request(ClientMessage::Publish {
            request_id,
            sdp: offer,
            tracks: vec![TrackInfo {
                mid,
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                name: None,
                rids: None,
            }],
        })
        .await?
    else {
        bail!("publish refused");
    };
    publisher.apply_answer(sdp).await?;
    publisher.wait_connected(Duration::from_secs(10)).await?;
    let publication = publications
        .first()
        .context("no publication")?
        .publication_id
        .clone();

    let sent: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();
    let arrived: Arrivals = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = {
        let (sent, stop, pps) = (Arc::clone(&sent), Arc::clone(&stop), options.pps);
        tokio::spawn(async move {
            let start = Instant::now();
            let mut index = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut sent) = sent.lock() {
                    sent.insert(index, Instant::now());
                }
                track.write_rtp(packet(index, pps)).await?;
                index += 1;
                let next = start + Duration::from_secs_f64(f64::from(index) / f64::from(pps));
                tokio::time::sleep_until(next.into()).await;
            }
            anyhow::Ok(())
        })
    };

    // The viewers.
    let mut viewers = Vec::new();
    for n in 0..options.viewers {
        viewers.push(add_viewer(&url, n, &publication, Arc::clone(&arrived)).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut phases = Vec::new();
    if options.joins > 0 {
        phases = join_burst(options, &url, &publication, &sent, &arrived).await?;
    } else {
        for (name, percent) in [
            ("before", None),
            ("capped", Some(options.cap_percent)),
            ("after", None),
        ] {
            cap.set(percent)?;
            let start = Instant::now();
            tokio::time::sleep(options.phase).await;
            let end = Instant::now();
            let sent = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let arrived = arrived.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let mut lags: Vec<Duration> = arrived
                .iter()
                .filter(|(_, _, at)| *at >= start && *at < end)
                .filter_map(|(_, index, at)| Some(at.duration_since(*sent.get(index)?)))
                .collect();
            lags.sort_unstable();
            let expected = sent
                .values()
                .filter(|at| **at >= start && **at < end)
                .count()
                * options.viewers;
            phases.push(Phase {
                name,
                lags,
                expected,
                rss_mib: rss_mib(pid),
            });
        }
    }
    stop.store(true, Ordering::Relaxed);
    pacer.await??;
    for (_, peer) in &viewers {
        peer.close().await;
    }
    publisher.close().await;
    child.start_kill()?;
    child.wait().await?;
    drop(cap);
    Ok(phases)
}

#[tokio::main]
async fn main() -> Result<()> {
    let options = options()?;
    println!(
        "overload: {} viewers, {} packets/s, cap {} % of a core for {:?}",
        options.viewers, options.pps, options.cap_percent, options.phase
    );
    println!(
        "| max_ingress_age_ms | phase | lag p50 ms | lag p99 ms | lag max ms | delivered | RSS MiB |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for age in &options.ages {
        for phase in run(&options, *age).await? {
            let delivered = if phase.expected == 0 {
                "—".to_owned()
            } else {
                format!(
                    "{:.0} %",
                    100.0 * phase.lags.len() as f64 / phase.expected as f64
                )
            };
            println!(
                "| {age} | {} | {:.0} | {:.0} | {:.0} | {delivered} | {:.1} |",
                phase.name,
                percentile(&phase.lags, 0.5),
                percentile(&phase.lags, 0.99),
                percentile(&phase.lags, 1.0),
                phase.rss_mib
            );
        }
    }
    Ok(())
}
