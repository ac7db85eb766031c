//! The heartbeat task of a cluster node: it connects to Redis, writes the node's record and
//! places its rooms every [`HEARTBEAT`] and whenever a room opens or closes, reconnects with
//! backoff when Redis fails, and removes the node from the registry when the server drains or
//! stops.

use std::collections::HashSet;

use redis::aio::MultiplexedConnection;
use sluice_sfu::runtime::{ServerEvent, Sfu};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::node::{CpuMeter, NodeAddresses, NodeRecord};
use super::{ClusterError, FIRST_RETRY, HEARTBEAT, MAX_RETRY, NODE_TTL, Shared, store};
use crate::config::RedisUrl;

/// What the task works with.
pub(super) struct Heartbeat {
    pub shared: std::sync::Arc<Shared>,
    pub redis: RedisUrl,
    pub addresses: NodeAddresses,
    pub sfu: Sfu,
}

/// What the task keeps between beats.
struct Link {
    /// `None` while Redis is unreachable.
    connection: Option<MultiplexedConnection>,
    /// The rooms this node is the origin of, as of the last placement.
    held: HashSet<String>,
    cpu: CpuMeter,
    /// The wait before the next reconnection attempt.
    retry: std::time::Duration,
    /// Whether the loss of Redis has been logged since it was last reachable.
    loss_reported: bool,
}

/// Runs until `draining` or `stop` turns true (or its sender is gone), then leaves the
/// cluster.
pub(super) async fn run(
    beat: Heartbeat,
    mut draining: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("cluster", node = %beat.shared.node_id);
    async move {
        info!(redis = %beat.redis, url = %beat.addresses.url, "joining the cluster");
        let mut link = Link {
            connection: None,
            held: HashSet::new(),
            cpu: CpuMeter::default(),
            retry: FIRST_RETRY,
            loss_reported: false,
        };
        let mut events = Some(beat.sfu.server_events());
        let mut next = Instant::now();
        loop {
            tokio::select! {
                () = ended(&mut draining, &mut stop) => break,
                () = tokio::time::sleep_until(next) => {
                    next = match beat.beat(&mut link).await {
                        Ok(()) => Instant::now() + HEARTBEAT,
                        Err(err) => beat.lost(&mut link, &err),
                    };
                }
                event = next_event(&mut events) => {
                    let placement = matches!(
                        event,
                        Ok(ServerEvent::RoomStarted { .. } | ServerEvent::RoomFinished { .. })
                            | Err(broadcast::error::RecvError::Lagged(_))
                    );
                    if placement
                        && link.connection.is_some()
                        && let Err(err) = beat.place(&mut link).await
                    {
                        next = beat.lost(&mut link, &err);
                    }
                }
            }
        }
        beat.leave(&mut link).await;
    }
    .instrument(span)
    .await;
}

/// Completes when either receiver reads true or loses its sender.
async fn ended(draining: &mut watch::Receiver<bool>, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = draining.wait_for(|draining| *draining) => {}
        _ = stop.wait_for(|stop| *stop) => {}
    }
}

/// The next server event; never completes once the channel has closed.
async fn next_event(
    events: &mut Option<broadcast::Receiver<ServerEvent>>,
) -> Result<ServerEvent, broadcast::error::RecvError> {
    let Some(receiver) = events else {
        return std::future::pending().await;
    };
    let event = receiver.recv().await;
    if matches!(event, Err(broadcast::error::RecvError::Closed)) {
        *events = None;
    }
    event
}

impl Heartbeat {
    /// Connects when needed, writes this node's record and places its rooms.
    async fn beat(&self, link: &mut Link) -> Result<(), ClusterError> {
        if link.connection.is_none() {
            link.connection = Some(store::connect(&self.redis).await?);
        }
        let stats = self.sfu.stats().await;
        let record = NodeRecord::new(
            &self.shared.node_id,
            &self.addresses,
            &stats,
            link.cpu.sample(),
        );
        let Some(connection) = link.connection.as_mut() else {
            return Err(ClusterError::Unreachable);
        };
        store::register(connection, &record).await?;
        self.shared.set_others(store::live_nodes(connection).await?);
        self.place(link).await?;
        if !self.shared.up.load(std::sync::atomic::Ordering::Relaxed) {
            info!(rooms = link.held.len(), "registered in the cluster");
            self.shared.set_connection(link.connection.clone());
        }
        link.retry = FIRST_RETRY;
        link.loss_reported = false;
        Ok(())
    }

    /// Claims or renews the placement of every room open here; releases the closed ones.
    async fn place(&self, link: &mut Link) -> Result<(), ClusterError> {
        let Some(connection) = link.connection.as_mut() else {
            return Err(ClusterError::Unreachable);
        };
        let open = self.sfu.room_names();
        link.held = store::place(connection, &self.shared.node_id, &open, &link.held).await?;
        debug!(
            open = open.len(),
            origin_of = link.held.len(),
            "rooms placed"
        );
        Ok(())
    }

    /// Drops the connection after `err`; returns when to try again (a doubling backoff with
    /// jitter, at most [`MAX_RETRY`]).
    fn lost(&self, link: &mut Link, err: &ClusterError) -> Instant {
        link.connection = None;
        self.shared.set_connection(None);
        let wait = link.retry.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        link.retry = (link.retry * 2).min(MAX_RETRY);
        if link.loss_reported {
            debug!(%err, ?wait, "redis still unreachable");
        } else {
            warn!(%err, ?wait, "redis unreachable: serving local rooms, cluster degraded; reconnecting");
            link.loss_reported = true;
        }
        Instant::now() + wait
    }

    /// Removes this node's record and placements, when Redis is reachable (otherwise they
    /// expire within [`NODE_TTL`]).
    async fn leave(&self, link: &mut Link) {
        self.shared.set_connection(None);
        let Some(connection) = link.connection.as_mut() else {
            info!(ttl = ?NODE_TTL, "left the cluster (redis unreachable: the record expires)");
            return;
        };
        match store::deregister(connection, &self.shared.node_id, &link.held).await {
            Ok(()) => info!(released = link.held.len(), "left the cluster"),
            Err(err) => {
                warn!(%err, ttl = ?NODE_TTL, "could not leave the cluster: the record expires")
            }
        }
    }
}
