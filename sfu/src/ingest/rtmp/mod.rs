//! The RTMP server: accepts encoder connections on one TCP port.
//!
//! - [`protocol`]: Sluice's own trait over an RTMP implementation (sans-IO), so an
//!   Enhanced-RTMP crate can replace rml_rtmp.
//! - `rml`: that trait on rml_rtmp, behind `guard` (chunk-size bounds, AMF nesting depth,
//!   message size, panics of the decoder turned into errors).
//! - `connection`: one connection's task (the only IO besides the accept loop here).
pub(crate) mod amf;
mod connection;
mod guard;
pub mod protocol;
pub(crate) mod rml;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

use super::keys::{StreamKeys, StreamTarget};
use super::registry::{Registry, StreamCounts};
use super::stats::StreamStatsSnapshot;
use crate::admission::PerAddress;
use crate::runtime::Sfu;

pub use guard::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
pub use rml::RmlProtocol;

/// Settings of the RTMP server.
#[derive(Debug, Clone)]
pub struct RtmpConfig {
    /// Where to listen, e.g. `127.0.0.1:1935`.
    pub listen: SocketAddr,
    /// The application name in `rtmp://host/<app>/<key>`.
    pub app: String,
    /// How long a stream whose connection dropped waits for its encoder to come back.
    pub reconnect_grace: Duration,
    /// Time from TCP accept to a completed RTMP handshake. Short: an encoder sends its
    /// handshake at once, and a socket that does not holds a connection slot meanwhile.
    pub handshake_timeout: Duration,
    /// Time from TCP accept to an accepted publish.
    pub setup_timeout: Duration,
    /// Longest silence from a publishing encoder.
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// Connections in setup (before their publish is accepted) from one source address (an
    /// IPv6 client: its /64); more are closed at accept. Publishing connections do not count,
    /// so one address may carry any number of encoders.
    pub max_setup_per_address: usize,
    /// Largest RTMP message (one video frame) accepted while publishing.
    pub max_message_bytes: usize,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 1935)),
            app: "live".to_owned(),
            reconnect_grace: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(3),
            setup_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_connections: 64,
            max_setup_per_address: 4,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What every connection task needs.
struct Shared {
    config: RtmpConfig,
    keys: StreamKeys,
    sfu: Sfu,
    registry: Arc<Registry>,
}

/// A running RTMP server; [`RtmpServer::shutdown`] stops it.
pub struct RtmpServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RtmpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl RtmpServer {
    /// Binds `config.listen` and starts accepting encoders; their streams join rooms of `sfu`.
    pub async fn start(config: RtmpConfig, keys: StreamKeys, sfu: Sfu) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        if keys.is_empty() {
            warn!("RTMP ingest has no stream keys: every publish will be refused");
        }
        let shared = Arc::new(Shared {
            registry: Arc::new(Registry::new(config.reconnect_grace)),
            config,
            keys,
            sfu,
        });
        let (shutdown, stop) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop));
        info!(%local_addr, "RTMP ingest listening");
        Ok(Self {
            local_addr,
            shared,
            shutdown,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters of every live or parked stream.
    pub fn stats(&self) -> Vec<(StreamTarget, StreamStatsSnapshot)> {
        self.shared.registry.stats()
    }

    /// A handle on the streams' counts that outlives this server value (for metrics).
    pub fn streams(&self) -> RtmpStreams {
        RtmpStreams {
            registry: Arc::clone(&self.shared.registry),
        }
    }

    /// Stops accepting, closes every connection and removes every stream.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        self.shared.registry.clear();
    }
}

/// The RTMP server's streams, to count them from elsewhere; cheap to clone.
#[derive(Clone)]
pub struct RtmpStreams {
    registry: Arc<Registry>,
}

impl RtmpStreams {
    /// How many streams are live and how many parked (waiting for their encoder).
    pub fn counts(&self) -> StreamCounts {
        self.registry.counts()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    let in_setup = PerAddress::new(shared.config.max_setup_per_address);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                warn!(%err, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(setup) = in_setup.admit(peer.ip()) else {
            debug!(%peer, "RTMP connection refused: too many connections in setup from this address");
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "RTMP connection refused: too many connections");
            continue;
        };
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        tokio::spawn(async move {
            connection::serve(socket, peer, shared, setup, stop).await;
            drop(permit);
        });
    }
}
