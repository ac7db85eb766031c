//! The cluster's state in Redis: the keys, and every command a node sends. Each call is
//! bounded by [`REQUEST_TIMEOUT`]; a value read from Redis is network data and is parsed,
//! never trusted.
//!
//! | key | type | value | lifetime |
//! |---|---|---|---|
//! | `sluice:node:{id}` | string | the node's [`NodeRecord`] as JSON | [`NODE_TTL`], renewed each heartbeat |
//! | `sluice:nodes` | set | the ids of nodes that registered | members whose node key expired are removed by readers |
//! | `sluice:room:{room}` | string | the id of the room's origin node | [`ROOM_TTL`], renewed by the origin each heartbeat |

use std::collections::HashSet;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tracing::debug;

use super::node::NodeRecord;
use super::{ClusterError, NODE_TTL, ROOM_TTL};
use crate::config::RedisUrl;

/// How long one connection attempt or one request to Redis may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The set of registered node ids.
const NODES: &str = "sluice:nodes";

/// Sets the room's origin to ARGV[1] when no node holds it and renews it when ARGV[1] does;
/// returns the origin. Atomic in Redis, so two nodes opening a room at once agree on one.
const CLAIM: &str = "local v = redis.call('GET', KEYS[1]) \
    if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return ARGV[1] end \
    if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
    return v";

/// Deletes the key only while it still names ARGV[1]: a node releases its own placements,
/// never one another node took over.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

fn node_key(id: &str) -> String {
    format!("sluice:node:{id}")
}

fn room_key(room: &str) -> String {
    format!("sluice:room:{room}")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Runs `request` within [`REQUEST_TIMEOUT`].
async fn bounded<T>(
    request: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(ClusterError::Redis(err)),
        Err(_) => Err(ClusterError::Timeout),
    }
}

/// Opens one multiplexed connection (its reader task ends when the last clone is dropped).
pub async fn connect(url: &RedisUrl) -> Result<MultiplexedConnection, ClusterError> {
    let client = redis::Client::open(url.expose()).map_err(ClusterError::Redis)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REQUEST_TIMEOUT))
        .set_response_timeout(Some(REQUEST_TIMEOUT));
    bounded(client.get_multiplexed_async_connection_with_config(&config)).await
}

/// Writes this node's record with [`NODE_TTL`] and lists it in the node set.
pub async fn register(
    conn: &mut MultiplexedConnection,
    record: &NodeRecord,
) -> Result<(), ClusterError> {
    let json = serde_json::to_string(record).map_err(ClusterError::Encode)?;
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(node_key(&record.id))
        .arg(json)
        .arg("PX")
        .arg(millis(NODE_TTL))
        .ignore()
        .cmd("SADD")
        .arg(NODES)
        .arg(&record.id)
        .ignore();
    bounded(pipe.query_async::<()>(conn)).await
}

/// Removes this node's record and releases the placements it holds.
pub async fn deregister(
    conn: &mut MultiplexedConnection,
    id: &str,
    rooms: &HashSet<String>,
) -> Result<(), ClusterError> {
    let mut pipe = redis::pipe();
    pipe.cmd("DEL")
        .arg(node_key(id))
        .ignore()
        .cmd("SREM")
        .arg(NODES)
        .arg(id)
        .ignore();
    for room in rooms {
        pipe.cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(room_key(room))
            .arg(id)
            .ignore();
    }
    bounded(pipe.query_async::<()>(conn)).await
}

/// Makes the placements match the rooms open here: claims (or renews) every room in `open`
/// and releases those in `held` no longer open. Returns the rooms this node is the origin of.
pub async fn place(
    conn: &mut MultiplexedConnection,
    id: &str,
    open: &[String],
    held: &HashSet<String>,
) -> Result<HashSet<String>, ClusterError> {
    let mut pipe = redis::pipe();
    for room in open {
        pipe.cmd("EVAL")
            .arg(CLAIM)
            .arg(1)
            .arg(room_key(room))
            .arg(id)
            .arg(millis(ROOM_TTL));
    }
    let gone: Vec<&String> = held.iter().filter(|room| !open.contains(room)).collect();
    for room in &gone {
        pipe.cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(room_key(room))
            .arg(id)
            .ignore();
    }
    if open.is_empty() && gone.is_empty() {
        return Ok(HashSet::new());
    }
    let origins: Vec<String> = bounded(pipe.query_async(conn)).await?;
    Ok(open
        .iter()
        .zip(origins)
        .filter(|(_, origin)| origin == id)
        .map(|(room, _)| room.clone())
        .collect())
}

/// The live nodes (those whose record has not expired), sorted by id. Ids whose record
/// expired are removed from the node set; a record that does not parse is left out.
pub async fn live_nodes(conn: &mut MultiplexedConnection) -> Result<Vec<NodeRecord>, ClusterError> {
    let ids: Vec<String> = bounded(redis::cmd("SMEMBERS").arg(NODES).query_async(conn)).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
    let values: Vec<Option<String>> =
        bounded(redis::cmd("MGET").arg(&keys).query_async(conn)).await?;
    let mut nodes = Vec::new();
    let mut expired = Vec::new();
    for (id, value) in ids.iter().zip(values) {
        match value.map(|json| serde_json::from_str::<NodeRecord>(&json)) {
            None => expired.push(id),
            Some(Ok(record)) if record.id == *id => nodes.push(record),
            Some(Ok(_)) => debug!(%id, "node record names another node; left out"),
            Some(Err(err)) => debug!(%id, %err, "node record does not parse; left out"),
        }
    }
    if !expired.is_empty() {
        bounded(
            redis::cmd("SREM")
                .arg(NODES)
                .arg(expired)
                .query_async::<()>(conn),
        )
        .await?;
    }
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(nodes)
}

/// The id of `room`'s origin node, `None` when no live node holds it.
pub async fn origin(
    conn: &mut MultiplexedConnection,
    room: &str,
) -> Result<Option<String>, ClusterError> {
    bounded(redis::cmd("GET").arg(room_key(room)).query_async(conn)).await
}
