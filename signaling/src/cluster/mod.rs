//! Sluice nodes in a cluster, coordinated through Redis (`--redis`): the node registry and
//! the room placements. Relay legs between nodes (media of a room spanning nodes) are not
//! here yet; docs/cluster.md says what exists and what comes next.
//!
//! Each node runs one heartbeat task ([`heartbeat`]) that every [`HEARTBEAT`] writes its
//! [`NodeRecord`] (addresses and load) with a [`NODE_TTL`] lifetime, and claims or renews the
//! placement (`room → origin node`, [`ROOM_TTL`]) of every room open here, releasing those
//! that closed; a room that opens or closes is placed at once. A node that stops
//! heart-beating is gone for every node within [`NODE_TTL`]; a draining or stopped node
//! removes its record and placements itself.
//!
//! Redis is never in the path of a client: when it cannot be reached the node goes on serving
//! its rooms, [`Cluster::is_up`] turns false (`/readyz` says `cluster: degraded`, the metric
//! `sluice_cluster_redis_up` reads 0) and the task reconnects with a doubling backoff
//! ([`FIRST_RETRY`] to [`MAX_RETRY`]), re-registering and re-placing its rooms once back.
//! The key layout is in [`store`].

mod heartbeat;
mod node;
mod store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use sluice_sfu::runtime::Sfu;
use tokio::sync::watch;

pub use node::{NodeAddresses, NodeRecord};
pub use store::REQUEST_TIMEOUT;

use crate::config::RedisUrl;

/// How often a node writes its record and renews its placements.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node's record lives without a heartbeat: a node silent for this long is gone.
pub const NODE_TTL: Duration = Duration::from_secs(3);
/// How long a placement lives without its origin renewing it.
pub const ROOM_TTL: Duration = Duration::from_secs(3);
/// The wait before reconnecting after Redis failed; doubled after each failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest wait between reconnection attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// Why a cluster request failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No connection to Redis now (the heartbeat is reconnecting).
    #[error("redis unreachable")]
    Unreachable,
    /// Redis refused the request or the connection broke.
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
    /// Redis did not answer within [`REQUEST_TIMEOUT`].
    #[error("redis did not answer within {REQUEST_TIMEOUT:?}")]
    Timeout,
    /// This node's record could not be encoded.
    #[error("encoding the node record: {0}")]
    Encode(#[source] serde_json::Error),
}

/// What the heartbeat task and the request handlers share.
struct Shared {
    node_id: String,
    /// Registered and heart-beating now.
    up: AtomicBool,
    /// The heartbeat's connection while it works; handlers clone it (never held across
    /// `.await`).
    connection: Mutex<Option<MultiplexedConnection>>,
}

/// This node's membership of the cluster: its id, whether Redis is reachable, and the
/// cluster's view for the server API. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

/// What starts a node's membership.
pub struct ClusterStart {
    pub redis: RedisUrl,
    /// `None`: a random id.
    pub node_id: Option<String>,
    pub addresses: NodeAddresses,
}

impl Cluster {
    /// Starts the heartbeat task; it runs until `draining` or `stop` turns true (or their
    /// sender is dropped), then removes this node from the registry and ends. Never waits for
    /// Redis: the node serves whether or not Redis answers.
    pub fn start(
        start: ClusterStart,
        sfu: Sfu,
        draining: watch::Receiver<bool>,
        stop: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let node_id = start.node_id.unwrap_or_else(node::random_id);
        let shared = Arc::new(Shared {
            node_id,
            up: AtomicBool::new(false),
            connection: Mutex::new(None),
        });
        let task = tokio::spawn(heartbeat::run(
            heartbeat::Heartbeat {
                shared: Arc::clone(&shared),
                redis: start.redis,
                addresses: start.addresses,
                sfu,
            },
            draining,
            stop,
        ));
        (Self { shared }, task)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// Whether this node is registered and heart-beating now (Redis reachable).
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// The live nodes, this one included while it is registered, sorted by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        store::live_nodes(&mut self.connection()?).await
    }

    /// The id of `room`'s origin node; `None` when no live node holds it.
    pub async fn origin(&self, room: &str) -> Result<Option<String>, ClusterError> {
        store::origin(&mut self.connection()?, room).await
    }

    fn connection(&self) -> Result<MultiplexedConnection, ClusterError> {
        self.shared
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(ClusterError::Unreachable)
    }
}

impl Shared {
    /// Records the heartbeat's connection (`None`: lost) and whether the node is registered.
    fn set_connection(&self, connection: Option<MultiplexedConnection>) {
        self.up.store(connection.is_some(), Ordering::Relaxed);
        *self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = connection;
    }
}
