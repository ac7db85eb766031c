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

/// The running RTSP sources; [`RtspSources::shutdown`] stops them.
pub struct RtspSources {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    playing: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RtspSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspSources")
            .field("sources", &self.tasks.len())
            .finish()
    }
}

impl RtspSources {
    /// Starts pulling every source into the rooms of `sfu`; each retries on its own until
    /// [`RtspSources::shutdown`].
    pub fn start(config: RtspConfig, sources: Vec<RtspSource>, sfu: Sfu) -> Self {
        let (stop, stopped) = watch::channel(false);
        let playing = Arc::new(AtomicUsize::new(0));
        let tasks = sources
            .into_iter()
            .map(|source| {
                tokio::spawn(session::run(
                    source,
                    config.clone(),
                    sfu.clone(),
                    stopped.clone(),
                    Arc::clone(&playing),
                ))
            })
            .collect::<Vec<_>>();
        if !tasks.is_empty() {
            info!(sources = tasks.len(), "RTSP ingest started");
        }
        Self {
            stop,
            tasks,
            playing,
        }
    }

    /// How many sources are configured.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// How many sources are playing now (the others are connecting or waiting to retry).
    pub fn playing(&self) -> usize {
        self.playing.load(Ordering::Relaxed)
    }

    /// Stops every source: sessions are torn down and their publications removed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
