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
    /// The other live nodes as of the last heartbeat. Kept while Redis is unreachable: a node
    /// in it that died meanwhile only costs a client one failed try.
    others: Mutex<Vec<NodeRecord>>,
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
            others: Mutex::new(Vec::new()),
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

    /// The signaling WebSocket URLs of the other live nodes, where a client of `room`
    /// reconnects when this node stops answering. Every client of a room gets them in the same
    /// order (rendezvous hashing of the room and each node's id), so a dead node's clients of
    /// one room land together on one node, and its rooms spread over the others. Read from
    /// memory (the heartbeat refreshes it), never from Redis, so a join never waits for Redis.
    pub fn fallback_urls(&self, room: &str) -> Vec<String> {
        let mut others: Vec<(u64, String)> = self
            .shared
            .others
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|node| Some((rendezvous(room, &node.id), websocket_url(&node.url)?)))
            .collect();
        others.sort_unstable();
        others.into_iter().map(|(_, url)| url).collect()
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

/// The rank of node `node_id` for `room` (lowest first). FNV-1a, so every node, whatever its
/// build, ranks alike.
fn rendezvous(room: &str, node_id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes().chain([0xff]).chain(node_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The signaling WebSocket URL of a node reached at the HTTP(S) URL `http_url`.
fn websocket_url(http_url: &str) -> Option<String> {
    let mut url = url::Url::parse(http_url).ok()?;
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        _ => return None,
    };
    url.set_scheme(scheme).ok()?;
    url.set_path(&format!("{}/ws", url.path().trim_end_matches('/')));
    Some(url.to_string())
}

impl Shared {
    /// Keeps the other live nodes of `nodes` (all the live ones).
    fn set_others(&self, mut nodes: Vec<NodeRecord>) {
        nodes.retain(|node| node.id != self.node_id);
        *self
            .others
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = nodes;
    }

    /// Records the heartbeat's connection (`None`: lost) and whether the node is registered.
    fn set_connection(&self, connection: Option<MultiplexedConnection>) {
        self.up.store(connection.is_some(), Ordering::Relaxed);
        *self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = connection;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(id: &str, url: &str, participants: usize, cpu: Option<f64>) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            url: url.into(),
            media_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            udp_port: 7000,
            rooms: 0,
            participants,
            publications: 0,
            subscriptions: 0,
            cpu,
            updated_at: 0,
        }
    }

    #[test]
    fn websocket_urls_of_nodes() {
        assert_eq!(
            websocket_url("http://127.0.0.1:7000").as_deref(),
            Some("ws://127.0.0.1:7000/ws")
        );
        assert_eq!(
            websocket_url("https://sfu-3.example.com/media/").as_deref(),
            Some("wss://sfu-3.example.com/media/ws")
        );
        assert_eq!(websocket_url("ftp://x.example"), None);
        assert_eq!(websocket_url("not a url"), None);
    }

    #[test]
    fn fallbacks_are_the_other_nodes_in_one_order_per_room() {
        let shared = Shared {
            node_id: "a".into(),
            up: AtomicBool::new(true),
            connection: Mutex::new(None),
            others: Mutex::new(Vec::new()),
        };
        shared.set_others(vec![
            record("a", "http://a.example", 0, None),
            record("b", "http://b.example", 40, Some(0.5)),
            record("c", "http://c.example", 3, Some(0.9)),
            record("d", "http://d.example", 3, Some(0.2)),
        ]);
        let cluster = Cluster {
            shared: Arc::new(shared),
        };
        let stage = cluster.fallback_urls("stage");
        // The others, by their rank for the room: what any node of the cluster computes.
        let mut ranked = ["b", "c", "d"].map(|id| (rendezvous("stage", id), id));
        ranked.sort_unstable();
        let expected: Vec<String> = ranked
            .iter()
            .map(|(_, id)| format!("ws://{id}.example/ws"))
            .collect();
        assert_eq!(stage, expected);
        // Rooms spread: over 64 rooms, each other node comes first for some.
        let firsts: std::collections::HashSet<String> = (0..64)
            .filter_map(|i| cluster.fallback_urls(&format!("room-{i}")).first().cloned())
            .collect();
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }
}
