//! RTSP ingest: Sluice pulls configured RTSP sources (IP cameras, NVRs, encoders) and publishes
//! each as an ordinary participant of its room, as an RTMP encoder is.
//!
//! ```text
//! RTSP (retina: DESCRIBE/SETUP/PLAY, Basic/Digest, TCP-interleaved or UDP, keepalives)
//!   ─▶ convert (stream selection; frames → AVC records, AVCC access units, AAC/G.711 frames)
//!   ─▶ media::MediaPipeline (the RTMP path's: H.264 forwarded, audio → Opus, one timeline)
//!   ─▶ stream_publisher::RoomStream (the room's publications, kept across reconnects)
//! ```
//!
//! - `session`: one source's task: connect, play, and on any failure a log line and another
//!   attempt after a backoff (0.5 s doubling to 4 s), continuing the same publications.
//! - `convert`: the part Sluice owns between retina's frames and the pipeline (fuzzed).
//!
//! ```no_run
//! use sluice_sfu::ingest::{RtspConfig, RtspSource, RtspSources, RtspTransport, StreamTarget};
//! use sluice_sfu::runtime::{Sfu, SfuConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let sfu = Sfu::start(SfuConfig::default())?;
//! let camera = RtspSource {
//!     url: "rtsp://192.0.2.10:554/stream1".parse()?,
//!     target: StreamTarget { room: "lobby".into(), identity: "door-camera".into() },
//!     credentials: None,
//!     transport: RtspTransport::Tcp,
//! };
//! let sources = RtspSources::start(RtspConfig::default(), vec![camera], sfu);
//! // … later, on shutdown:
//! sources.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod backoff;
pub(crate) mod convert;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::info;

use super::keys::StreamTarget;
use crate::runtime::Sfu;

/// How RTP travels from the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection: crosses NATs and firewalls, no loss.
    #[default]
    Tcp,
    /// RTP and RTCP over UDP ports the server sends to (a LAN; no reordering buffer).
    Udp,
}

impl std::str::FromStr for RtspTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            other => Err(format!(
                "invalid RTSP transport {other:?}: expected tcp or udp"
            )),
        }
    }
}

/// A username and password for the source (RTSP Basic or Digest, as the server asks).
#[derive(Clone, PartialEq, Eq)]
pub struct RtspCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RtspCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One source to pull and where it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspSource {
    /// `rtsp://host[:port]/path`, without credentials.
    pub url: url::Url,
    pub target: StreamTarget,
    pub credentials: Option<RtspCredentials>,
    pub transport: RtspTransport,
}

/// Settings shared by every RTSP source.
#[derive(Debug, Clone)]
pub struct RtspConfig {
    /// The delay before the first retry after a failure; it doubles with each failure.
    pub backoff_first: Duration,
    /// The longest delay between two attempts: a source back after any outage plays again
    /// within about this long (plus its setup and first keyframe).
    pub backoff_max: Duration,
    /// Time for the connection, DESCRIBE, SETUP and PLAY of one attempt.
    pub setup_timeout: Duration,
    /// Longest silence (no frame of any stream) of a playing session before it is dropped and
    /// the source reconnected. Keepalives are retina's (GET_PARAMETER or OPTIONS at half the
    /// server's session timeout).
    pub idle_timeout: Duration,
}

impl Default for RtspConfig {
    fn default() -> Self {
        Self {
            backoff_first: Duration::from_millis(500),
            backoff_max: Duration::from_secs(4),
            setup_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
        }
    }
}

/// A running source's id, for [`RtspSources::remove`].
pub type RtspSourceId = u64;

/// One running source, as [`RtspSources::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningSource {
    pub id: RtspSourceId,
    pub source: RtspSource,
}

/// Why a source was not added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtspSourceError {
    #[error("a source already publishes as {room}/{identity}")]
    Duplicate { room: String, identity: String },
    #[error("RTSP ingest has stopped")]
    Stopped,
}

struct Running {
    source: RtspSource,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Registry {
    next: RtspSourceId,
    running: std::collections::BTreeMap<RtspSourceId, Running>,
    stopped: bool,
}

/// The running RTSP sources: those configured at start, and those added and removed since
/// (the server API); [`RtspSources::shutdown`] stops them all.
pub struct RtspSources {
    config: RtspConfig,
    sfu: Sfu,
    registry: std::sync::Mutex<Registry>,
    playing: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RtspSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspSources")
            .field("sources", &self.len())
            .finish()
    }
}

impl RtspSources {
    /// Starts pulling every source into the rooms of `sfu`; each retries on its own until it
    /// is removed or [`RtspSources::shutdown`].
    pub fn start(config: RtspConfig, sources: Vec<RtspSource>, sfu: Sfu) -> Self {
        let this = Self {
            config,
            sfu,
            registry: std::sync::Mutex::default(),
            playing: Arc::new(AtomicUsize::new(0)),
        };
        let count = sources.len();
        for source in sources {
            if let Err(err) = this.add(source) {
                tracing::warn!(%err, "RTSP source not started");
            }
        }
        if count > 0 {
            info!(sources = count, "RTSP ingest started");
        }
        this
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while the lock was held leaves the map intact; keep serving it.
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts pulling `source`; refused when another source publishes as its room and
    /// identity.
    pub fn add(&self, source: RtspSource) -> Result<RtspSourceId, RtspSourceError> {
        let mut registry = self.registry();
        if registry.stopped {
            return Err(RtspSourceError::Stopped);
        }
        if registry
            .running
            .values()
            .any(|running| running.source.target == source.target)
        {
            return Err(RtspSourceError::Duplicate {
                room: source.target.room.clone(),
                identity: source.target.identity.clone(),
            });
        }
        registry.next += 1;
        let id = registry.next;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(session::run(
            source.clone(),
            self.config.clone(),
            self.sfu.clone(),
            stopped,
            Arc::clone(&self.playing),
        ));
        registry.running.insert(id, Running { source, stop, task });
        Ok(id)
    }

    /// Stops source `id` (its session torn down, its publications removed); `false` when no
    /// such source runs.
    pub async fn remove(&self, id: RtspSourceId) -> bool {
        let running = self.registry().running.remove(&id);
        let Some(running) = running else {
            return false;
        };
        let _ = running.stop.send(true);
        let _ = running.task.await;
        true
    }

    /// The sources running now (connecting, playing or waiting to retry), by id.
    pub fn list(&self) -> Vec<RunningSource> {
        self.registry()
            .running
            .iter()
            .map(|(id, running)| RunningSource {
                id: *id,
                source: running.source.clone(),
            })
            .collect()
    }

    /// How many sources run.
    pub fn len(&self) -> usize {
        self.registry().running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many sources are playing now (the others are connecting or waiting to retry).
    pub fn playing(&self) -> usize {
        self.playing.load(Ordering::Relaxed)
    }

    /// Stops every source: sessions are torn down and their publications removed; no source
    /// can be added afterwards.
    pub async fn shutdown(&self) {
        let running: Vec<Running> = {
            let mut registry = self.registry();
            registry.stopped = true;
            std::mem::take(&mut registry.running)
                .into_values()
                .collect()
        };
        for running in &running {
            let _ = running.stop.send(true);
        }
        for running in running {
            let _ = running.task.await;
        }
    }
}
