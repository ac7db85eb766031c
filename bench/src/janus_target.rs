//! Driving Janus 1.1's VideoRoom (Debian's `janus` package) with the sans-IO generator, through
//! Janus's HTTP API on 127.0.0.1.
//!
//! Janus runs from a configuration folder of its own (made here, in the temp folder): only the
//! VideoRoom plugin and the HTTP transport are loaded, the API listens on 127.0.0.1 only,
//! sessions never time out.
//!
//! Media stays on 127.0.0.0/8, which takes a private network namespace: libnice never gathers
//! on a loopback interface, and it pins each socket to its interface (`IP_UNICAST_IF`), so
//! Janus cannot send to 127.0.0.1. `bench/janus-netns.sh` runs the benchmark in a namespace
//! whose veth pair carries 127.0.1.1 (`v0`, Janus's ICE interface) and 127.0.1.2 (`v1`, the
//! generator's connections for Janus), with the sysctls that let 127/8 cross it; nothing in
//! that namespace reaches another host. One API session holds
//! every handle; one long-poll loop takes its events and hands each to the request that waits
//! for its transaction. Each bench room is a VideoRoom room with one publisher
//! (`joinandconfigure` with the generator's offer) and its subscribers (`join` as subscriber →
//! Janus offers → `start` with the answer).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::client::{AbortOnDrop, KeepAlive, MediaSource, Reception, SentCounters};
use crate::media::{self, VideoShape};
use crate::process::ServerProcess;
use crate::ramp::{self, RampConfig, RampResult, Target};
use crate::rtcgen::{self, Generator, PeerHandle, Setup};
use crate::stats::StampMode;

/// A plain API request gives up after this long; a long poll after [`LONG_POLL_TIMEOUT`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Janus answers a long poll after 30 s without events.
const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(40);
/// Waiting for an asynchronous request's event (a join, a publish, a start).
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_RESPONSE: usize = 1 << 20;
/// Events taken per long poll.
const EVENTS_PER_POLL: usize = 50;

/// The interface Janus gathers ICE candidates on (see `bench/janus-netns.sh`).
const JANUS_INTERFACE: &str = "v0";

/// Where the Debian package puts Janus's plugins and transports.
pub const DEFAULT_LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// How Janus is run and reached.
#[derive(Debug, Clone)]
pub struct JanusSetup {
    /// The `janus` binary.
    pub binary: PathBuf,
    /// Where its `plugins/` and `transports/` are.
    pub lib_dir: PathBuf,
    /// The address of the generator's connections (see `bench/janus-netns.sh`).
    pub client_ip: std::net::IpAddr,
    pub generator_threads: usize,
    pub room_size: usize,
}

/// Starts Janus, runs the ramp against it with the sans-IO generator, stops it.
pub async fn run(
    setup: &JanusSetup,
    config: &RampConfig,
    direct: &Reception,
    started: Instant,
) -> Result<RampResult> {
    let (janus, lib_dir) = (setup.binary.as_path(), setup.lib_dir.as_path());
    eprintln!(
        "[{:6.1}s] janus: starting {}",
        started.elapsed().as_secs_f64(),
        janus.display()
    );
    let dir = std::env::temp_dir().join(format!("sluice-bench-janus-{}", std::process::id()));
    let port = free_port()?;
    write_config(&dir, lib_dir, port)?;
    let process = ServerProcess::spawn(
        "janus",
        janus,
        &[
            "-C".to_owned(),
            dir.join("janus.jcfg").display().to_string(),
            "-F".to_owned(),
            dir.display().to_string(),
            "--disable-colors".to_owned(),
        ],
        &[],
        format!("http://127.0.0.1:{port}"),
    )?;
    let result = async {
        let api = Api::connect(port).await?;
        let target = Arc::new(Janus {
            process,
            api,
            generator: Generator::start_on(setup.generator_threads, setup.client_ip)?,
            rooms: Mutex::new(HashMap::new()),
            room_size: setup.room_size,
        });
        let ramp = ramp::run(
            Arc::clone(&target) as Arc<dyn Target>,
            config,
            direct,
            started,
            None,
        )
        .await;
        if let Ok(t) = Arc::try_unwrap(target) {
            t.process.stop();
        }
        ramp
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A loopback TCP port free a moment ago (Janus's HTTP transport takes it).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Janus's configuration: VideoRoom and HTTP only, everything on 127.0.0.1 / `lo`.
fn write_config(dir: &Path, lib_dir: &Path, port: u16) -> Result<()> {
    let (plugins, transports, empty) = (
        dir.join("plugins"),
        dir.join("transports"),
        dir.join("empty"),
    );
    for d in [&plugins, &transports, &empty] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let link = |from: PathBuf, to: PathBuf| -> Result<()> {
        if !to.exists() {
            std::os::unix::fs::symlink(&from, &to)
                .with_context(|| format!("linking {}", from.display()))?;
        }
        Ok(())
    };
    link(
        lib_dir.join("plugins/libjanus_videoroom.so"),
        plugins.join("libjanus_videoroom.so"),
    )?;
    link(
        lib_dir.join("transports/libjanus_http.so"),
        transports.join("libjanus_http.so"),
    )?;
    let d = dir.display();
    std::fs::write(
        dir.join("janus.jcfg"),
        format!(
            "general: {{\n configs_folder = \"{d}\"\n plugins_folder = \"{d}/plugins\"\n transports_folder = \"{d}/transports\"\n events_folder = \"{d}/empty\"\n loggers_folder = \"{d}/empty\"\n debug_level = 3\n session_timeout = 0\n}}\ncertificates: {{\n}}\nmedia: {{\n rtp_port_range = \"20000-60000\"\n}}\nnat: {{\n nice_debug = false\n ice_enforce_list = \"{JANUS_INTERFACE}\"\n}}\nplugins: {{\n}}\ntransports: {{\n}}\nloggers: {{\n}}\nevents: {{\n}}\n"
        ),
    )?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!(
            "general: {{\n json = \"compact\"\n base_path = \"/janus\"\n http = true\n port = {port}\n ip = \"127.0.0.1\"\n https = false\n}}\nadmin: {{\n admin_http = false\n admin_https = false\n}}\n"
        ),
    )?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;
    Ok(())
}

/// Requests waiting for their transaction's event.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// Janus's HTTP API: one session, its event loop, numbered transactions.
struct Api {
    port: u16,
    session: u64,
    waiting: Waiting,
    next: AtomicU64,
    _events: AbortOnDrop,
}

impl Api {
    /// Waits (≤ 20 s) until Janus answers, then creates the session and starts its event loop.
    async fn connect(port: u16) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let created = loop {
            match http(
                port,
                "POST",
                "/janus",
                Some(&json!({"janus": "create", "transaction": "create"})),
            )
            .await
            {
                Ok(reply) => break reply,
                Err(err) if Instant::now() > deadline => {
                    return Err(err).context("janus did not answer within 20 s");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let session = created["data"]["id"]
            .as_u64()
            .context("no session id in janus's reply")?;
        let waiting: Waiting = Arc::default();
        let events = AbortOnDrop(tokio::spawn(poll_events(
            port,
            session,
            Arc::clone(&waiting),
        )));
        Ok(Self {
            port,
            session,
            waiting,
            next: AtomicU64::new(1),
            _events: events,
        })
    }

    fn transaction(&self) -> String {
        format!("t{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends `request` (its `transaction` added) to the session or one of its handles and
    /// returns the synchronous reply.
    async fn send(&self, handle: Option<u64>, mut request: Value) -> Result<Value> {
        if request.get("transaction").is_none() {
            request["transaction"] = json!(self.transaction());
        }
        let path = match handle {
            Some(h) => format!("/janus/{}/{h}", self.session),
            None => format!("/janus/{}", self.session),
        };
        let reply = http(self.port, "POST", &path, Some(&request)).await?;
        ensure!(
            reply["janus"] != "error",
            "janus refused {}: {reply}",
            request["janus"]
        );
        Ok(reply)
    }

    async fn attach(&self) -> Result<u64> {
        let reply = self
            .send(
                None,
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        reply["data"]["id"].as_u64().context("no handle id")
    }

    /// A VideoRoom request answered at once (`create`).
    async fn message(&self, handle: u64, body: Value) -> Result<Value> {
        let reply = self
            .send(Some(handle), json!({"janus": "message", "body": body}))
            .await?;
        let data = reply["plugindata"]["data"].clone();
        ensure!(data.get("error").is_none(), "videoroom refused: {data}");
        Ok(data)
    }

    /// A VideoRoom request answered by an event (`join`, `joinandconfigure`, `start`): returns
    /// the event's plugin data and JSEP.
    async fn message_async(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<(Value, Value)> {
        let transaction = self.transaction();
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(transaction.clone(), tx);
        let mut request = json!({"janus": "message", "body": body, "transaction": transaction});
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        let sent = self.send(Some(handle), request).await;
        let event = match sent {
            Ok(_) => tokio::time::timeout(EVENT_TIMEOUT, rx).await,
            Err(err) => {
                self.forget(&transaction);
                return Err(err);
            }
        };
        self.forget(&transaction);
        let event = event
            .context("no event from janus in time")?
            .context("janus's event loop ended")?;
        let data = event["plugindata"]["data"].clone();
        ensure!(data.get("error").is_none(), "videoroom refused: {data}");
        Ok((data, event["jsep"].clone()))
    }

    fn forget(&self, transaction: &str) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(transaction);
    }

    /// Trickles the connection's one candidate, then the end of candidates.
    async fn trickle(
        &self,
        handle: u64,
        candidate: &rtc::peer_connection::transport::RTCIceCandidateInit,
    ) -> Result<()> {
        self.send(
            Some(handle),
            json!({"janus": "trickle", "candidates": [
                {"candidate": candidate.candidate, "sdpMid": "0", "sdpMLineIndex": 0},
                {"completed": true},
            ]}),
        )
        .await
        .map(|_| ())
    }
}

/// The session's long-poll loop: every event that carries a waited-for transaction goes to
/// its waiter; the rest (webrtcup, media, slowlink…) are not needed.
async fn poll_events(port: u16, session: u64, waiting: Waiting) {
    let path = format!("/janus/{session}?maxev={EVENTS_PER_POLL}");
    let mut failures = 0;
    loop {
        let events = match http(port, "GET", &path, None).await {
            Ok(Value::Array(events)) => events,
            Ok(event) => vec![event],
            Err(err) => {
                failures += 1;
                tracing::debug!(%err, "janus long poll failed");
                if failures > 50 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        failures = 0;
        for event in events {
            let Some(transaction) = event["transaction"].as_str() else {
                continue;
            };
            let waiter = waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(transaction);
            if let Some(waiter) = waiter {
                let _ = waiter.send(event);
            }
        }
    }
}

/// One HTTP/1.1 exchange with Janus on 127.0.0.1:`port` (`Connection: close`).
async fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let wait = if method == "GET" {
        LONG_POLL_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    tokio::time::timeout(wait, async {
        let body = body.map(serde_json::to_vec).transpose()?.unwrap_or_default();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(chunk.get(..n).unwrap_or_default());
            ensure!(response.len() <= MAX_RESPONSE, "janus response too large");
        }
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("janus response without a head")?;
        let head = String::from_utf8_lossy(response.get(..split).unwrap_or_default()).into_owned();
        let body = response.get(split + 4..).unwrap_or_default();
        ensure!(
            head.lines().next().is_some_and(|l| l.contains(" 200")),
            "janus answered {}",
            head.lines().next().unwrap_or_default()
        );
        let chunked = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
        let body = if chunked { dechunk(body)? } else { body.to_vec() };
        serde_json::from_slice(&body).context("janus response is not JSON")
    })
    .await
    .with_context(|| format!("janus {method} {path} timed out"))?
}

/// The body of a chunked transfer.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size = std::str::from_utf8(rest.get(..line_end).unwrap_or_default())?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        let data = rest
            .get(line_end + 2..line_end + 2 + size)
            .context("short chunk")?;
        out.extend_from_slice(data);
        rest = rest.get(line_end + 4 + size..).context("chunk end")?;
    }
}

/// Gives the connection Janus's candidates from its SDP (`rtc` takes remote candidates by
/// trickle only), those on 127.0.0.0/8 only: the benchmark's traffic stays on loopback. Janus
/// never gathers on a loopback interface, so it is run where 127.0.1.1 sits on an interface of
/// its own (a network namespace with a veth pair, see docs/benchmarks.md); without such a
/// candidate this fails rather than send anywhere else.
fn add_loopback_candidates(peer: &PeerHandle, sdp: &str) -> Result<()> {
    let mut added = 0;
    for line in sdp.lines() {
        let Some(candidate) = line.trim().strip_prefix("a=") else {
            continue;
        };
        let Some(fields) = candidate.strip_prefix("candidate:") else {
            continue;
        };
        let loopback = fields
            .split_whitespace()
            .nth(4)
            .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
            .is_some_and(|ip| ip.is_loopback());
        if loopback {
            peer.add_candidate(rtc::peer_connection::transport::RTCIceCandidateInit {
                candidate: candidate.to_owned(),
                sdp_mid: Some("0".to_owned()),
                sdp_mline_index: Some(0),
                ..Default::default()
            })?;
            added += 1;
        }
    }
    ensure!(
        added > 0,
        "janus offered no candidate on 127.0.0.0/8: run the benchmark in a network namespace where 127.0.1.1 is on an interface other than lo (docs/benchmarks.md)"
    );
    Ok(())
}

/// A bench room's VideoRoom room and its publisher's feed id.
#[derive(Debug, Clone, Copy)]
struct Room {
    id: u64,
    feed: u64,
}

struct Janus {
    process: ServerProcess,
    api: Api,
    generator: Generator,
    rooms: Mutex<HashMap<String, Room>>,
    room_size: usize,
}

/// Room numbers: `bench-N` is VideoRoom room 7000 + N.
fn room_number(room: &str) -> Result<u64> {
    let n: u64 = room
        .strip_prefix("bench-")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected room name {room}"))?;
    Ok(7000 + n)
}

#[async_trait::async_trait]
impl Target for Janus {
    fn name(&self) -> &str {
        "janus-videoroom"
    }
    fn pid(&self) -> u32 {
        self.process.pid()
    }
    fn room_size(&self) -> usize {
        self.room_size
    }
    fn generator_threads(&self) -> Vec<u32> {
        self.generator.thread_ids().to_vec()
    }
    fn connections_lost(&self) -> Option<u64> {
        Some(self.generator.connections_lost())
    }

    async fn add_publisher(
        &self,
        room: &str,
        shape: VideoShape,
        ssrc_base: u32,
    ) -> Result<(MediaSource, KeepAlive)> {
        let id = room_number(room)?;
        let handle = self.api.attach().await?;
        // No bitrate cap (REMB), one publisher, subscribers as many as the ramp brings.
        self.api
            .message(
                handle,
                json!({"request": "create", "room": id, "publishers": 1, "bitrate": 0,
                       "audiocodec": "opus", "videocodec": "vp8", "notify_joining": false}),
            )
            .await?;
        let sent = Arc::new(SentCounters::default());
        let (peer, created) = self
            .generator
            .create(Setup::Publisher {
                shape,
                ssrc_base,
                simulcast: false,
                sent: Arc::clone(&sent),
            })
            .await?;
        let (data, jsep) = self
            .api
            .message_async(
                handle,
                json!({"request": "joinandconfigure", "ptype": "publisher", "room": id,
                       "display": "publisher", "audio": true, "video": true}),
                Some(json!({"type": "offer", "sdp": created.sdp})),
            )
            .await?;
        let feed = data["id"].as_u64().context("no publisher id")?;
        let answer = jsep["sdp"].as_str().context("no answer from janus")?;
        peer.apply_answer(answer.to_owned()).await?;
        add_loopback_candidates(&peer, answer)?;
        self.api.trickle(handle, &created.candidate).await?;
        let mut state = created.state;
        rtcgen::connected(&mut state, CONNECT_TIMEOUT).await?;
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.to_owned(), Room { id, feed });
        Ok((MediaSource::counted(sent), Box::new(peer)))
    }

    async fn add_subscriber(&self, room: &str, _identity: &str) -> Result<(Reception, KeepAlive)> {
        let Some(Room { id, feed }) = self
            .rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(room)
            .copied()
        else {
            bail!("nothing published in {room}");
        };
        let handle = self.api.attach().await?;
        let reception = Reception::new(StampMode::PacketTrailer, media::now_ns());
        let (_, jsep) = self
            .api
            .message_async(
                handle,
                json!({"request": "join", "ptype": "subscriber", "room": id,
                       "streams": [{"feed": feed}]}),
                None,
            )
            .await?;
        let offer = jsep["sdp"].as_str().context("no offer from janus")?;
        let (peer, created): (PeerHandle, _) = self
            .generator
            .create(Setup::Subscriber {
                offer: offer.to_owned(),
                reception: reception.clone(),
            })
            .await?;
        add_loopback_candidates(&peer, offer)?;
        self.api
            .message_async(
                handle,
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": created.sdp})),
            )
            .await?;
        self.api.trickle(handle, &created.candidate).await?;
        let mut state = created.state;
        rtcgen::connected(&mut state, CONNECT_TIMEOUT).await?;
        Ok((reception, Box::new(peer)))
    }
}
