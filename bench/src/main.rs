//! `sluice-bench`: Sluice's cost per forwarded packet against the per-packet floor and a peer
//! SFU, in one bounded run on this machine. See docs/benchmarks.md.
//!
//! One run: (1) the floor microbenchmark (SRTP protect + UDP send, plain and batched);
//! (2) Sluice as a child process, ramped with publishers and subscribers of the sans-IO
//! generator (`rtcgen`; or webrtc-rs peers with `--generator webrtc`) while a direct
//! publisher → subscriber pair on the same client stack gives the latency baseline, then with
//! `--overload` a step at twice its lossless capacity; (3) the same ramp against Janus's
//! VideoRoom (`--janus`, sans-IO generator) and str0m's `chat` example (`--str0m-chat`,
//! webrtc-rs peers) when their binaries are given; (4) the same ramp against the prototype
//! relay on the sans-IO `rtc` core (`--rtc-relay`, one ramp per `--rtc-relay-variants` entry);
//! (5) results.json, results.md and SVG plots in `--out`.

mod client;
mod direct;
mod floor;
mod janus_target;
mod media;
mod overload;
mod process;
mod procfs;
mod profiler;
mod ramp;
mod report;
mod rtc_relay_target;
mod rtcgen;
mod sluice_rtc;
mod sluice_target;
mod stats;
mod str0m_target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::media::VideoShape;
use crate::process::ServerProcess;
use crate::ramp::{RampConfig, RampResult, Target};

const SECRET: &str = "sluice-bench-secret-0123456789abcdef";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Sluice load generator and benchmark harness (loopback only)"
)]
struct Args {
    /// A few subscribers for a few seconds: what the test suite runs.
    #[arg(long)]
    smoke: bool,
    /// Subscriber counts to step through (each step adds subscribers up to the count).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,50,100,150,200,300,400"
    )]
    steps: Vec<usize>,
    /// No step above this many subscribers.
    #[arg(long, default_value_t = 400)]
    max_subscribers: usize,
    /// Wall-clock budget of each SFU's ramp, seconds.
    #[arg(long, default_value_t = 120)]
    budget: u64,
    /// Measurement window per step, seconds.
    #[arg(long, default_value_t = 8)]
    window: u64,
    /// Pause after a step's joins before measuring, seconds.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// Subscribers joining at once.
    #[arg(long, default_value_t = 8)]
    join_concurrency: usize,
    /// Subscribers per Sluice room (each room has its own publisher; Sluice allows 100
    /// participants per room).
    #[arg(long, default_value_t = 99)]
    room_size: usize,
    /// Sluice's publishers send simulcast video: three layers by rid (q, h, f at 1/10, 1/3
    /// and all of --video-bps), as a browser does; subscribers get the layer Sluice selects.
    /// The peer SFUs get one layer at --video-bps.
    #[arg(long)]
    simulcast: bool,
    /// Video bitrate of each publisher, bits/s (30 fps, a 5× keyframe every 2.5 s).
    #[arg(long, default_value_t = 1_500_000)]
    video_bps: u64,
    /// Stop a ramp after a step whose mean loss exceeds this percentage.
    #[arg(long, default_value_t = 5.0)]
    stop_loss_percent: f64,
    /// The `sluice` server binary (default: next to this binary; else this binary's `serve`).
    #[arg(long)]
    sluice_bin: Option<PathBuf>,
    /// Run the server under test as this binary's `serve` (same library code as `sluice`);
    /// the smoke test uses it so it never picks up a stale `sluice` binary.
    #[arg(long)]
    self_serve: bool,
    /// str0m 0.25's `chat` example, built as described in docs/benchmarks.md (skipped if absent).
    #[arg(long)]
    str0m_chat: Option<PathBuf>,
    /// Janus 1.1's `janus` binary (Debian's package): its VideoRoom plugin is ramped after
    /// Sluice with the sans-IO generator, over Janus's HTTP API on 127.0.0.1.
    #[arg(long)]
    janus: Option<PathBuf>,
    /// The address of the generator's connections to Janus (run the benchmark through
    /// `bench/janus-netns.sh`, which puts it on the veth peer of Janus's interface).
    #[arg(long, default_value = "127.0.1.2")]
    janus_client_ip: std::net::IpAddr,
    /// Where Janus's `plugins/` and `transports/` are.
    #[arg(long, default_value = janus_target::DEFAULT_LIB_DIR)]
    janus_lib_dir: PathBuf,
    /// The prototype relay on the sans-IO `rtc` core (`sluice-rtc-relay`, built from this
    /// crate): ramped after Sluice and str0m, as a further system in the results.
    #[arg(long)]
    rtc_relay: Option<PathBuf>,
    /// Configurations of `--rtc-relay` to ramp, one ramp each: `plain`, `batch` (sendmmsg
    /// egress), `no-gcc` (no GCC/TWCC on subscriber legs), combined with `+`.
    #[arg(long, value_delimiter = ',', default_value = "plain")]
    rtc_relay_variants: Vec<String>,
    /// Skip the Sluice ramp (e.g. to measure only `--rtc-relay` variants).
    #[arg(long)]
    no_sluice: bool,
    /// Skip the floor microbenchmark.
    #[arg(long)]
    no_floor: bool,
    /// Milliseconds per floor measurement (median of 3).
    #[arg(long, default_value_t = 300)]
    floor_ms: u64,
    /// Record a `perf` profile of Sluice (and of each `--rtc-relay` variant) during the window
    /// of this step (subscriber count).
    #[arg(long)]
    perf_step: Option<usize>,
    /// Count the instructions each SFU (Sluice, and the --rtc-relay prototype) executes per
    /// forwarded packet during the window of this step (valgrind's callgrind; instruction
    /// counts are stable on a shared machine where times are not). The servers then run under
    /// valgrind for their whole ramp, so those ramps' CPU, latency and loss figures are
    /// valgrind's: use it in a run of its own, with few subscribers and a low bitrate (e.g.
    /// `--no-floor --steps 2 --callgrind-step 2 --video-bps 300000`).
    #[arg(long)]
    callgrind_step: Option<usize>,
    /// After the last step, an overload step at `--overload-factor` × the largest lossless step
    /// (Sluice only): RSS at capacity against RSS under overload, whether the subscribers that
    /// were there keep receiving, and signaling probes (a join and a ping each second).
    #[arg(long)]
    overload: bool,
    /// The overload step's size as a multiple of the largest lossless step.
    #[arg(long, default_value_t = 2.0)]
    overload_factor: f64,
    /// Start Sluice with admission control at this many subscriber connections
    /// (`--max-subscribers`; e.g. the capacity a previous run measured): subscribers it
    /// refuses (`serverFull`) are counted as refused, not as failed joins.
    #[arg(long, value_name = "N")]
    sluice_max_subscribers: Option<usize>,
    /// The load generator's client stack: `rtc` (sans-IO `rtc` 0.21 connections, many per
    /// generator thread, no decoding) or `webrtc` (a webrtc-rs peer with its own tasks per
    /// client), for Sluice. Janus is always driven by `rtc`, `--str0m-chat` and `--rtc-relay`
    /// by `webrtc`.
    #[arg(long, value_enum, default_value_t = GeneratorKind::Rtc)]
    generator: GeneratorKind,
    /// Subscriber threads of the `rtc` generator (each owns its connections and their
    /// sockets); its publishers have one more thread of their own.
    #[arg(long, default_value_t = 1)]
    generator_threads: usize,
    /// Where results.json, results.md and the SVG plots go.
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GeneratorKind {
    Rtc,
    Webrtc,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Runs a Sluice server in this process (used when no `sluice` binary is found).
    Serve {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
}

/// Everything one run measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub command: String,
    pub smoke: bool,
    pub video_bps: u64,
    pub floor: Vec<floor::FloorResult>,
    pub ramps: Vec<RampResult>,
    pub notes: Vec<String>,
    pub elapsed_s: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(Command::Serve { listen }) = args.command {
        return runtime.block_on(serve(listen));
    }
    runtime.block_on(run(args))
}

/// The same server `sluice` runs, in this process.
async fn serve(listen: std::net::SocketAddr) -> Result<()> {
    use sluice_sfu::runtime::SfuConfig;
    use sluice_signaling::config::Config;
    let config = Config {
        listen,
        secret: Some(SECRET.into()),
        public_ip: Some("127.0.0.1".parse()?),
        ..Config::default()
    };
    let sfu = sluice_signaling::media_plane::start_sfu(&config, SfuConfig::default())?;
    let server = sluice_signaling::server::Server::start(config, sfu).await?;
    println!("sluice listening on http://{}", server.local_addr());
    tokio::signal::ctrl_c().await.ok();
    Ok(())
}

fn sluice_command(args: &Args) -> Result<(PathBuf, Vec<String>)> {
    let (bin, mut flags) = sluice_binary(args)?;
    if let Some(max) = args.sluice_max_subscribers {
        flags.extend(["--max-subscribers".to_owned(), max.to_string()]);
    }
    Ok((bin, flags))
}

/// The `sluice` binary to run and its flags.
fn sluice_binary(args: &Args) -> Result<(PathBuf, Vec<String>)> {
    let flags = |extra: &[&str]| -> Vec<String> {
        extra.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
    };
    let me = std::env::current_exe().context("locating this binary")?;
    if args.self_serve {
        return Ok((me, flags(&["serve", "--listen", "127.0.0.1:0"])));
    }
    if let Some(bin) = &args.sluice_bin {
        return Ok((bin.clone(), sluice_flags()));
    }
    let sibling = me.with_file_name("sluice");
    if sibling.exists() {
        return Ok((sibling, sluice_flags()));
    }
    Ok((me, flags(&["serve", "--listen", "127.0.0.1:0"])))
}

fn sluice_flags() -> Vec<String> {
    [
        "--listen",
        "127.0.0.1:0",
        "--public-ip",
        "127.0.0.1",
        "--secret",
        SECRET,
        "--log",
        "error",
        "--max-message-rate",
        "1000",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

struct SluiceUnderTest {
    process: ServerProcess,
    client: sluice_target::SluiceTarget,
    /// The sans-IO generator, when it drives the clients (else webrtc-rs peers do).
    generator: Option<rtcgen::Generator>,
    room_size: usize,
}

#[async_trait::async_trait]
impl Target for SluiceUnderTest {
    fn name(&self) -> &str {
        "sluice"
    }
    fn pid(&self) -> u32 {
        self.process.pid()
    }
    fn room_size(&self) -> usize {
        self.room_size
    }
    async fn add_publisher(
        &self,
        room: &str,
        shape: VideoShape,
        ssrc_base: u32,
    ) -> Result<(client::MediaSource, client::KeepAlive)> {
        match &self.generator {
            Some(generator) => {
                sluice_rtc::add_publisher(&self.client, generator, room, shape, ssrc_base).await
            }
            None => self.client.add_publisher(room, shape, ssrc_base).await,
        }
    }
    async fn add_subscriber(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<(client::Reception, client::KeepAlive)> {
        match &self.generator {
            Some(generator) => {
                sluice_rtc::add_subscriber(&self.client, generator, room, identity).await
            }
            None => self.client.add_subscriber(room, identity).await,
        }
    }
    async fn probe_signaling(&self, n: usize) -> Result<overload::Probe> {
        self.client.probe(n).await
    }
    fn connections_lost(&self) -> Option<u64> {
        self.generator
            .as_ref()
            .map(rtcgen::Generator::connections_lost)
    }
    fn generator_threads(&self) -> Vec<u32> {
        self.generator
            .as_ref()
            .map(|g| g.thread_ids().to_vec())
            .unwrap_or_default()
    }
}

async fn run(mut args: Args) -> Result<()> {
    let started = Instant::now();
    if args.smoke {
        args.steps = vec![2, 4];
        args.max_subscribers = 4;
        args.window = 3;
        args.settle = 3;
        args.budget = 40;
        args.floor_ms = 30;
        args.join_concurrency = 4;
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let shape = VideoShape {
        bitrate_bps: args.video_bps,
        fps: 30,
        keyframe_interval: Duration::from_millis(2500),
        keyframe_factor: 5,
    };
    let mut notes = Vec::new();
    let floor = if args.no_floor {
        Vec::new()
    } else {
        eprintln!(
            "[{:6.1}s] floor: SRTP protect + UDP send on loopback …",
            0.0
        );
        let reps = if args.smoke { 1 } else { 3 };
        let budget = Duration::from_millis(args.floor_ms);
        let floor = tokio::task::spawn_blocking(move || floor::run_all(budget, reps)).await??;
        for f in &floor {
            eprintln!(
                "[{:6.1}s] floor {}: protect {:.0} ns, send_to {:.0} ns, protect+send_to {:.0} ns ({:.0}k pkt/s/core), +sendmmsg×32 {:.0} ns, +GSO×{} {:.0} ns",
                started.elapsed().as_secs_f64(),
                f.profile,
                f.protect_ns,
                f.send_to_ns,
                f.protect_send_to_ns,
                f.pps_per_core() / 1e3,
                f.protect_sendmmsg_ns,
                f.gso_segments,
                f.protect_gso_ns
            );
        }
        floor
    };
    let ramp_config = RampConfig {
        steps: args.steps.clone(),
        max_subscribers: args.max_subscribers,
        budget: Duration::from_secs(args.budget),
        settle: Duration::from_secs(args.settle),
        window: Duration::from_secs(args.window),
        join_concurrency: args.join_concurrency,
        shape,
        stop_loss: args.stop_loss_percent / 100.0,
        overload: None,
    };

    // The direct baselines run for the whole run (every SFU's windows see them): the sans-IO
    // pair for the targets the sans-IO generator drives (Sluice by default, Janus), the
    // webrtc-rs pair for those webrtc-rs clients drive.
    let sluice_on_rtc = args.generator == GeneratorKind::Rtc && !args.no_sluice;
    let sluice_on_webrtc = args.generator == GeneratorKind::Webrtc && !args.no_sluice;
    let rtc_direct = if sluice_on_rtc || args.janus.is_some() {
        Some(direct::start_rtc(shape).await?)
    } else {
        None
    };
    let webrtc_direct = if sluice_on_webrtc
        || args.str0m_chat.is_some()
        || args.rtc_relay.is_some()
        || rtc_direct.is_none()
    {
        Some(direct::start(shape).await?)
    } else {
        None
    };
    let Some((_, direct, _)) = webrtc_direct.as_ref().or(rtc_direct.as_ref()) else {
        bail!("no direct baseline started");
    };
    let sluice_direct = rtc_direct
        .as_ref()
        .map_or(direct, |(_, reception, _)| reception);

    let mut ramps = Vec::new();
    // --callgrind-step counts instructions for every SFU ramped (Sluice and the prototype relay).
    let perf = match (args.callgrind_step, args.perf_step) {
        (Some(step), _) => Some(ramp::Profiler::Callgrind { step }),
        (None, Some(step)) => Some(ramp::Profiler::Perf {
            step,
            dir: args.out.clone(),
        }),
        (None, None) => None,
    };
    if args.no_sluice {
        notes.push("Sluice not ramped (--no-sluice)".to_owned());
    } else {
        let (bin, flags) = sluice_command(&args)?;
        eprintln!(
            "[{:6.1}s] sluice: starting {}",
            started.elapsed().as_secs_f64(),
            bin.display()
        );
        let process = ramp::start_server("sluice", &bin, &flags, &[], perf.as_ref())?;
        let target = Arc::new(SluiceUnderTest {
            client: sluice_target::SluiceTarget {
                ws_url: format!("ws://{}/ws", process.host_port()),
                secret: SECRET.to_owned(),
                simulcast: args.simulcast,
            },
            process,
            generator: match args.generator {
                GeneratorKind::Rtc => Some(rtcgen::Generator::start(args.generator_threads)?),
                GeneratorKind::Webrtc => None,
            },
            room_size: args.room_size,
        });
        let sluice_config = RampConfig {
            overload: args.overload.then_some(args.overload_factor),
            ..ramp_config.clone()
        };
        let ramp = ramp::run(
            Arc::clone(&target) as Arc<dyn Target>,
            &sluice_config,
            sluice_direct,
            started,
            perf.clone(),
        )
        .await;
        match Arc::try_unwrap(target) {
            Ok(t) => process::stop_and_clean(t.process),
            Err(_) => notes.push("sluice process outlived its ramp (stopped on exit)".to_owned()),
        }
        ramps.push(ramp.context("sluice ramp")?);
    }

    if let Some(janus) = &args.janus {
        let rtc_direct = rtc_direct
            .as_ref()
            .map(|(_, reception, _)| reception)
            .context("the sans-IO direct pair")?;
        let setup = janus_target::JanusSetup {
            binary: janus.clone(),
            lib_dir: args.janus_lib_dir.clone(),
            client_ip: args.janus_client_ip,
            generator_threads: args.generator_threads,
            room_size: args.room_size,
        };
        match janus_target::run(&setup, &ramp_config, rtc_direct, started).await {
            Ok(r) => ramps.push(r),
            Err(err) => {
                eprintln!("janus: {err:#}");
                notes.push(format!("janus could not be driven: {err:#}"));
            }
        }
    }

    if let Some(chat) = &args.str0m_chat {
        match str0m_target::run(chat, &ramp_config, direct, started).await {
            Ok(r) => ramps.push(r),
            Err(err) => {
                eprintln!("str0m chat: {err:#}");
                notes.push(format!("str0m chat could not be driven: {err:#}"));
            }
        }
    } else if args.janus.is_none() {
        notes.push("no peer SFU given (--janus, --str0m-chat): peer ratio not measured".to_owned());
    }

    if let Some(relay) = &args.rtc_relay {
        for spec in &args.rtc_relay_variants {
            let variant = rtc_relay_target::Variant::parse(spec)?;
            match rtc_relay_target::run(
                relay,
                &variant,
                args.room_size,
                &ramp_config,
                direct,
                started,
                perf.clone(),
            )
            .await
            {
                Ok(r) => ramps.push(r),
                Err(err) => {
                    eprintln!("{}: {err:#}", variant.name);
                    notes.push(format!("{} could not be driven: {err:#}", variant.name));
                }
            }
        }
    }

    let report = Report {
        command,
        smoke: args.smoke,
        video_bps: args.video_bps,
        floor,
        ramps,
        notes,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    report::write(&report, &args.out)?;
    eprintln!(
        "[{:6.1}s] done: {}",
        started.elapsed().as_secs_f64(),
        args.out.join("results.md").display()
    );
    Ok(())
}
