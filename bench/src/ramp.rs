//! The ramp: publishers, then subscribers added in bounded steps; after each step a settle
//! pause and a measurement window (server CPU and RSS from /proc, what every subscriber
//! received, latency against the direct baseline, join times).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::client::{KeepAlive, MediaSource, Reception};
use crate::media::VideoShape;
use crate::procfs;
pub use crate::profiler::{Profiler, callgrind_out, start_server};
use crate::profiler::{callgrind_control, callgrind_instructions, finish_perf, start_perf};
use crate::stats::{Percentiles, Window};

/// A system under test, reachable by the load generator.
#[async_trait::async_trait]
pub trait Target: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn pid(&self) -> u32;
    /// Subscribers one publisher may have (rooms are filled in order).
    fn room_size(&self) -> usize;
    async fn add_publisher(
        &self,
        room: &str,
        shape: VideoShape,
        ssrc_base: u32,
    ) -> Result<(MediaSource, KeepAlive)>;
    async fn add_subscriber(&self, room: &str, identity: &str) -> Result<(Reception, KeepAlive)>;
    /// Kernel thread ids (in this process) of the sans-IO generator driving this target's
    /// clients, if it does: their CPU is reported on its own.
    fn generator_threads(&self) -> Vec<u32> {
        Vec::new()
    }
    /// Client connections the sans-IO generator saw fail or close after they were up, so far
    /// (`None` for other clients).
    fn connections_lost(&self) -> Option<u64> {
        None
    }
    /// Times the target's signaling from a fresh connection (`n` numbers the probes): what
    /// the overload step asks while the media plane is past capacity.
    async fn probe_signaling(&self, n: usize) -> Result<crate::overload::Probe> {
        let _ = n;
        bail!("{} has no signaling probe", self.name())
    }
}

/// A subscriber the target refused at its capacity (Sluice's `serverFull`): what admission
/// control promises, counted apart from failures.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused at the server's capacity: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// How one step's joins ended, besides those that joined.
#[derive(Debug, Clone, Copy, Default)]
pub struct Joins {
    pub failed: usize,
    /// Refused at the server's capacity ([`Refused`]).
    pub refused: usize,
}

/// CPU time of the generator threads `tids` of this process (0 for none).
fn generator_cpu(tids: &[u32]) -> Duration {
    let pid = std::process::id();
    tids.iter()
        .filter_map(|&tid| procfs::thread_cpu_time_of(pid, tid).ok())
        .sum()
}

#[derive(Debug, Clone)]
pub struct RampConfig {
    pub steps: Vec<usize>,
    pub max_subscribers: usize,
    /// Wall-clock budget of this target's ramp; no step starts that would overrun it.
    pub budget: Duration,
    pub settle: Duration,
    pub window: Duration,
    pub join_concurrency: usize,
    pub shape: VideoShape,
    /// Stop after a step whose mean loss exceeds this fraction.
    pub stop_loss: f64,
    /// After the last step, the overload step at this multiple of the largest lossless step.
    pub overload: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    pub subscribers: usize,
    pub publishers: usize,
    pub window_s: f64,
    /// Server CPU (user + sys) in the window, in cores (1.0 = one core busy).
    pub server_cores: f64,
    /// The load generator's own CPU in cores (it shares the machine): the whole bench
    /// process (clients, signaling, the direct baseline pair).
    pub loadgen_cores: f64,
    /// Of `loadgen_cores`, the sans-IO generator's threads (when it drives the clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_cores: Option<f64>,
    pub forwarded_pps: f64,
    pub cpu_us_per_packet: f64,
    pub pps_per_core: f64,
    pub rss_mb: f64,
    pub rss_per_subscriber_kb: f64,
    pub loss_mean: f64,
    pub loss_worst: f64,
    pub subscribers_silent: usize,
    /// Receive − send, µs, through the SFU (all stamped packets of all subscribers).
    pub latency_us: Percentiles,
    /// Receive − send, µs, on the direct publisher → subscriber path in the same window.
    pub direct_latency_us: Percentiles,
    pub join_audio_ms: Percentiles,
    pub join_video_ms: Percentiles,
    pub joins_failed: usize,
    /// Joins the server refused at its capacity (admission control), not failures.
    #[serde(default)]
    pub joins_refused: usize,
    /// Packets/s all publishers sent in the window (what a lossless SFU receives).
    pub published_pps: f64,
    /// The machine's 1-minute load average at the end of the window (2 cores, shared).
    pub load_average: f64,
    /// Instructions the server executed in the window per forwarded packet, when it ran under
    /// callgrind for this step (then its CPU and latency figures are valgrind's, not its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions_per_packet: Option<f64>,
    /// Client connections that failed or closed after they were up, counted by the sans-IO
    /// generator since the ramp began (at the end of the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_lost: Option<u64>,
    /// Of the first `count` subscribers (those present before an overload step), how many
    /// received nothing and their mean loss (overload step only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_subscribers: Option<FirstSubscribers>,
}

/// What the subscribers that were there before an overload step received during it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirstSubscribers {
    pub count: usize,
    /// Of them, how many received nothing in the window.
    pub silent: usize,
    pub loss_mean: f64,
}

impl StepResult {
    /// Added forwarding latency (SFU path − direct path), µs: (p50, p99).
    pub fn added_latency_us(&self) -> (f64, f64) {
        (
            self.latency_us.p50 - self.direct_latency_us.p50,
            self.latency_us.p99 - self.direct_latency_us.p99,
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RampResult {
    pub target: String,
    pub steps: Vec<StepResult>,
    /// Why the ramp ended.
    pub ended: String,
    /// The overload step, when asked for (`--overload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overload: Option<crate::overload::OverloadResult>,
}

struct Subscriber {
    reception: Reception,
    _keep: KeepAlive,
}

pub(crate) fn progress(start: Instant, what: &str) {
    eprintln!("[{:6.1}s] {what}", start.elapsed().as_secs_f64());
}

/// Tasks aborted when dropped.
struct AbortAll<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortAll<T> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A ramp in progress: the target, its clients, and what every window is measured against.
pub struct Ramp<'a> {
    pub target: Arc<dyn Target>,
    pub config: &'a RampConfig,
    pub direct: &'a Reception,
    pub started: Instant,
    pub name: String,
    pub pid: u32,
    publishers: Vec<(MediaSource, KeepAlive)>,
    subscribers: Vec<Subscriber>,
    /// Subscribers refused at the server's capacity since the ramp began.
    pub refused: usize,
    /// The server's RSS with the first publisher connected and no subscriber, kB.
    rss_base: u64,
}

impl<'a> Ramp<'a> {
    /// Connects the first room's publisher and takes the baseline RSS without subscribers.
    pub async fn start(
        target: Arc<dyn Target>,
        config: &'a RampConfig,
        direct: &'a Reception,
        started: Instant,
    ) -> Result<Self> {
        let name = target.name().to_owned();
        let pid = target.pid();
        let publisher = target
            .add_publisher("bench-0", config.shape, 0x1000_0000)
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_base = procfs::rss_kb(pid)?;
        progress(
            started,
            &format!("{name}: publisher connected, RSS {} MB", rss_base / 1024),
        );
        Ok(Self {
            target,
            config,
            direct,
            started,
            name,
            pid,
            publishers: vec![publisher],
            subscribers: Vec::new(),
            refused: 0,
            rss_base,
        })
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.len()
    }

    /// Adds publishers for the rooms `step` subscribers need, then subscribers up to `step`,
    /// `join_concurrency` at a time; returns how many failed to join and how many were
    /// refused (also counted in `refused` as they come, should this future be dropped).
    pub async fn grow(&mut self, step: usize) -> Result<Joins> {
        let rooms = step.div_ceil(self.target.room_size());
        while self.publishers.len() < rooms {
            let room = format!("bench-{}", self.publishers.len());
            let ssrc = 0x1000_0000 + 16 * self.publishers.len() as u32;
            self.publishers.push(
                self.target
                    .add_publisher(&room, self.config.shape, ssrc)
                    .await?,
            );
        }
        let gate = Arc::new(Semaphore::new(self.config.join_concurrency.max(1)));
        // Joins still running when this future is dropped (the overload step bounds it in
        // time) are aborted, not left to connect and leave during the next window.
        let mut joins = AbortAll(Vec::new());
        for i in self.subscribers.len()..step {
            let (target, gate) = (Arc::clone(&self.target), Arc::clone(&gate));
            let room = format!("bench-{}", i / target.room_size());
            joins.0.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await?;
                target.add_subscriber(&room, &format!("sub-{i}")).await
            }));
        }
        let first_new = self.subscribers.len();
        let mut failed = 0;
        let refused_before = self.refused;
        for n in 0..joins.0.len() {
            let Some(join) = joins.0.get_mut(n) else {
                break;
            };
            match join.await? {
                Ok((reception, keep)) => self.subscribers.push(Subscriber {
                    reception,
                    _keep: keep,
                }),
                Err(err) if err.is::<Refused>() => {
                    self.refused += 1;
                    if self.refused == 1 {
                        progress(
                            self.started,
                            &format!("{}: a subscriber was {err:#}", self.name),
                        );
                    }
                }
                Err(err) => {
                    failed += 1;
                    if failed <= 3 {
                        progress(
                            self.started,
                            &format!("{}: a subscriber failed to join: {err:#}", self.name),
                        );
                    }
                }
            }
            if (n + 1) % 25 == 0 {
                progress(
                    self.started,
                    &format!(
                        "{}: {} joins done, {} subscribers connected ({} refused)",
                        self.name,
                        first_new + n + 1,
                        self.subscribers.len(),
                        self.refused - refused_before
                    ),
                );
            }
        }
        Ok(Joins {
            failed,
            refused: self.refused - refused_before,
        })
    }

    /// Settles, then measures one window: the server's CPU and RSS, what every subscriber
    /// received, latency against the direct pair; join times of the subscribers from
    /// `first_new` on. `step` is the step's nominal size (what `profiler` is keyed by). With
    /// `existing`, the first that many subscribers are also summarized on their own.
    pub async fn measure(
        &self,
        step: usize,
        first_new: usize,
        joins: Joins,
        profiler: Option<&Profiler>,
        existing: Option<usize>,
    ) -> Result<StepResult> {
        let (config, pid, name, started) = (self.config, self.pid, &self.name, self.started);
        let (subscribers, publishers, direct) = (&self.subscribers, &self.publishers, self.direct);
        let loadgen_pid = std::process::id();
        tokio::time::sleep(config.settle).await;
        for s in subscribers {
            s.reception.audio.take();
            s.reception.video.take();
        }
        direct.audio.take();
        direct.video.take();
        let sent = |publishers: &[(MediaSource, KeepAlive)]| -> u64 {
            publishers
                .iter()
                .map(|(m, _)| {
                    m.sent.video_packets.load(Ordering::Relaxed)
                        + m.sent.audio_packets.load(Ordering::Relaxed)
                })
                .sum()
        };
        let sent0 = sent(publishers);
        let generator_tids = self.target.generator_threads();
        let (cpu0, lg0, gen0, t0) = (
            procfs::cpu_time(pid)?,
            procfs::cpu_time(loadgen_pid)?,
            generator_cpu(&generator_tids),
            Instant::now(),
        );
        let perf = match profiler {
            Some(Profiler::Perf { step: at, dir }) if *at == step => {
                Some(start_perf(pid, config.window, dir, name)?)
            }
            _ => None,
        };
        let counting = matches!(profiler, Some(Profiler::Callgrind { step: at }) if *at == step);
        if counting {
            callgrind_control(pid, &["--instr=on"])?;
            callgrind_control(pid, &["--zero"])?;
        }
        tokio::time::sleep(config.window).await;
        let instructions = if counting {
            let counted = callgrind_instructions(pid)?;
            callgrind_control(pid, &["--instr=off"])?;
            Some(counted)
        } else {
            None
        };
        if let Some((child, data, text)) = perf {
            finish_perf(child, &data, &text, name, started);
        }
        let (cpu1, lg1, gen1, elapsed) = (
            procfs::cpu_time(pid)?,
            procfs::cpu_time(loadgen_pid)?,
            generator_cpu(&generator_tids),
            t0.elapsed().as_secs_f64(),
        );
        let rss = procfs::rss_kb(pid)?;
        let published = sent(publishers) - sent0;
        let windows: Vec<(Window, Window)> = subscribers
            .iter()
            .map(|s| (s.reception.audio.take(), s.reception.video.take()))
            .collect();
        let direct_windows = [direct.audio.take(), direct.video.take()];

        let forwarded: u64 = windows.iter().map(|(a, v)| a.packets + v.packets).sum();
        let cpu = cpu1.saturating_sub(cpu0).as_secs_f64();
        let losses: Vec<f64> = windows.iter().map(|(a, v)| loss(a, v)).collect();
        let latency = |ws: &mut dyn Iterator<Item = &Window>| {
            Percentiles::of(
                ws.flat_map(|w| w.latencies_us.iter().map(|&u| f64::from(u)))
                    .collect(),
            )
        };
        let joined = subscribers.get(first_new..).unwrap_or_default();
        let result = StepResult {
            subscribers: subscribers.len(),
            publishers: publishers.len(),
            window_s: elapsed,
            server_cores: cpu / elapsed,
            loadgen_cores: lg1.saturating_sub(lg0).as_secs_f64() / elapsed,
            generator_cores: (!generator_tids.is_empty())
                .then(|| gen1.saturating_sub(gen0).as_secs_f64() / elapsed),
            forwarded_pps: forwarded as f64 / elapsed,
            cpu_us_per_packet: cpu * 1e6 / forwarded.max(1) as f64,
            pps_per_core: if cpu > 0.0 {
                forwarded as f64 / cpu
            } else {
                0.0
            },
            rss_mb: rss as f64 / 1024.0,
            rss_per_subscriber_kb: rss.saturating_sub(self.rss_base) as f64
                / subscribers.len().max(1) as f64,
            loss_mean: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
            loss_worst: losses.iter().copied().fold(0.0, f64::max),
            subscribers_silent: windows
                .iter()
                .filter(|(a, v)| a.packets + v.packets == 0)
                .count(),
            latency_us: latency(&mut windows.iter().flat_map(|(a, v)| [a, v])),
            direct_latency_us: latency(&mut direct_windows.iter()),
            join_audio_ms: Percentiles::of(
                joined
                    .iter()
                    .filter_map(|s| s.reception.join_ms().0)
                    .collect(),
            ),
            join_video_ms: Percentiles::of(
                joined
                    .iter()
                    .filter_map(|s| s.reception.join_ms().1)
                    .collect(),
            ),
            joins_failed: joins.failed,
            joins_refused: joins.refused,
            published_pps: published as f64 / elapsed,
            load_average: procfs::load_average(),
            instructions_per_packet: instructions.map(|ir| ir as f64 / forwarded.max(1) as f64),
            connections_lost: self.target.connections_lost(),
            first_subscribers: existing.map(|count| {
                let first = windows.get(..count.min(windows.len())).unwrap_or_default();
                FirstSubscribers {
                    count: first.len(),
                    silent: first
                        .iter()
                        .filter(|(a, v)| a.packets + v.packets == 0)
                        .count(),
                    loss_mean: first.iter().map(|(a, v)| loss(a, v)).sum::<f64>()
                        / first.len().max(1) as f64,
                }
            }),
        };
        if let Some(per_packet) = result.instructions_per_packet {
            progress(
                started,
                &format!("{name}: callgrind: {per_packet:.0} instructions per forwarded packet"),
            );
        }
        let (added50, added99) = result.added_latency_us();
        progress(
            started,
            &format!(
                "{name}: {} subs | {:.0} pkt/s published, {:.0} fwd | server {:.2} cores, {:.1} µs/pkt, {:.0} pkt/s/core | RSS {:.0} MB ({:.0} kB/sub) | loss {:.2}% (worst {:.2}%) | added latency p50 {:.0} µs p99 {:.0} µs | load gen {:.2} cores{} | loadavg {:.1}",
                result.subscribers,
                result.published_pps,
                result.forwarded_pps,
                result.server_cores,
                result.cpu_us_per_packet,
                result.pps_per_core,
                result.rss_mb,
                result.rss_per_subscriber_kb,
                result.loss_mean * 100.0,
                result.loss_worst * 100.0,
                added50,
                added99,
                result.loadgen_cores,
                result
                    .generator_cores
                    .map(|g| format!(" (generator threads {g:.2})"))
                    .unwrap_or_default(),
                result.load_average,
            ),
        );
        Ok(result)
    }
}

/// Loss of one subscriber in a window: 1 − stamped units received / units sent over the index
/// ranges it saw (1 when it saw nothing).
fn loss(audio: &Window, video: &Window) -> f64 {
    let expected = audio.expected() + video.expected();
    if expected == 0 {
        1.0
    } else {
        (1.0 - (audio.stamped + video.stamped) as f64 / expected as f64).max(0.0)
    }
}

/// Runs the ramp against `target`; `direct` is the baseline pair's reception (same run).
/// With `config.overload`, the overload step follows the last step (see [`crate::overload`]).
pub async fn run(
    target: Arc<dyn Target>,
    config: &RampConfig,
    direct: &Reception,
    started: Instant,
    profiler: Option<Profiler>,
) -> Result<RampResult> {
    let ramp_start = Instant::now();
    let mut ramp = Ramp::start(target, config, direct, started).await?;
    let mut results = Vec::new();
    let mut ended = "all steps done".to_owned();
    let mut join_seconds_per_subscriber = 0.3;
    for &step in config
        .steps
        .iter()
        .filter(|&&s| s <= config.max_subscribers)
    {
        if step <= ramp.subscribers() {
            continue;
        }
        let new = step - ramp.subscribers();
        let estimate = config.settle
            + config.window
            + Duration::from_secs_f64(new as f64 * join_seconds_per_subscriber);
        if ramp_start.elapsed() + estimate > config.budget {
            ended = format!(
                "time budget: step {step} would end after {:.0} s (budget {:.0} s)",
                (ramp_start.elapsed() + estimate).as_secs_f64(),
                config.budget.as_secs_f64()
            );
            break;
        }
        let join_start = Instant::now();
        let first_new = ramp.subscribers();
        let joins = ramp.grow(step).await?;
        let failed = joins.failed;
        join_seconds_per_subscriber = (join_start.elapsed().as_secs_f64() / new as f64).max(0.05);
        if failed * 10 > new {
            ended = format!("{failed} of {new} subscribers failed to join at step {step}");
            if ramp.subscribers() == 0 {
                bail!(ended);
            }
            break;
        }
        let result = ramp
            .measure(step, first_new, joins, profiler.as_ref(), None)
            .await?;
        let saturated = result.loss_mean > config.stop_loss;
        results.push(result);
        if saturated {
            ended = format!(
                "mean loss above {:.0}% at {step} subscribers",
                config.stop_loss * 100.0
            );
            break;
        }
    }
    let overload = match config.overload {
        Some(factor) => crate::overload::run(&mut ramp, &results, factor).await,
        None => None,
    };
    Ok(RampResult {
        target: ramp.name.clone(),
        steps: results,
        ended,
        overload,
    })
}
