//! Which stream targets are live, and which wait for their encoder to come back.
//!
//! A target (room + identity) has at most one publisher. When its RTMP connection drops
//! without the encoder saying it stopped, the stream is *parked* for the grace period: the
//! same target publishing again within it resumes the parked publications; otherwise they are
//! removed when it ends. An encoder that stops on purpose (unpublish) is removed at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::info;

use super::keys::StreamTarget;
use super::stats::{StreamStats, StreamStatsSnapshot};
use super::stream_publisher::RoomStream;

enum Slot {
    Live(Arc<StreamStats>),
    Parked {
        stream: Box<RoomStream>,
        generation: u64,
    },
}

/// Why a target cannot be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this stream key is already live")]
pub struct AlreadyLive;

/// How many streams a [`Registry`] holds, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounts {
    /// Streams with a publishing encoder.
    pub live: usize,
    /// Streams whose encoder dropped, waiting for it within the grace period.
    pub parked: usize,
}

#[derive(Default)]
pub struct Registry {
    slots: Mutex<HashMap<StreamTarget, Slot>>,
    grace: Duration,
    next_generation: std::sync::atomic::AtomicU64,
}

impl Registry {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            ..Self::default()
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<StreamTarget, Slot>> {
        // The map stays consistent even if a holder panicked: every change is one insert or
        // remove.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `target` for a new publisher. Returns the parked stream to resume, if any.
    pub fn claim(&self, target: &StreamTarget) -> Result<Option<RoomStream>, AlreadyLive> {
        let mut slots = self.slots();
        match slots.remove(target) {
            Some(Slot::Live(stats)) => {
                slots.insert(target.clone(), Slot::Live(stats));
                Err(AlreadyLive)
            }
            Some(Slot::Parked { stream, .. }) => {
                slots.insert(target.clone(), Slot::Live(Arc::clone(stream.stats())));
                Ok(Some(*stream))
            }
            None => {
                slots.insert(target.clone(), Slot::Live(Arc::default()));
                Ok(None)
            }
        }
    }

    /// Records the stats of the stream now live on `target`.
    pub fn set_live(&self, stream: &RoomStream) {
        self.slots().insert(
            stream.target().clone(),
            Slot::Live(Arc::clone(stream.stats())),
        );
    }

    /// Gives up a claim that never became a stream (the join failed).
    pub fn abandon(&self, target: &StreamTarget) {
        let mut slots = self.slots();
        if matches!(slots.get(target), Some(Slot::Live(_))) {
            slots.remove(target);
        }
    }

    /// The publisher of `stream` is gone. `finished`: it said so, so the stream ends now;
    /// otherwise it is parked for the grace period.
    pub fn release(self: &Arc<Self>, stream: RoomStream, finished: bool) {
        let target = stream.target().clone();
        if finished || self.grace.is_zero() {
            self.slots().remove(&target);
            drop(stream);
            return;
        }
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.slots().insert(
            target.clone(),
            Slot::Parked {
                stream: Box::new(stream),
                generation,
            },
        );
        info!(
            grace_ms = self.grace.as_millis() as u64,
            "publisher gone: waiting for it to reconnect"
        );
        let registry = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(registry.grace).await;
            let expired = {
                let mut slots = registry.slots();
                match slots.get(&target) {
                    Some(Slot::Parked { generation: g, .. }) if *g == generation => {
                        slots.remove(&target)
                    }
                    _ => None,
                }
            };
            if expired.is_some() {
                info!(room = %target.room, identity = %target.identity, "no reconnect within the grace period: stream removed");
            }
            // Dropping the parked stream outside the lock removes its publications.
            drop(expired);
        });
    }

    /// Ends every stream (server shutdown).
    pub fn clear(&self) {
        let slots = std::mem::take(&mut *self.slots());
        drop(slots);
    }

    /// How many streams are live and how many parked.
    pub fn counts(&self) -> StreamCounts {
        let slots = self.slots();
        let live = slots
            .values()
            .filter(|slot| matches!(slot, Slot::Live(_)))
            .count();
        StreamCounts {
            live,
            parked: slots.len() - live,
        }
    }

    /// Counters of the live and parked streams.
    pub fn stats(&self) -> Vec<(StreamTarget, StreamStatsSnapshot)> {
        self.slots()
            .iter()
            .map(|(target, slot)| {
                let stats = match slot {
                    Slot::Live(stats) => stats.snapshot(),
                    Slot::Parked { stream, .. } => stream.stats().snapshot(),
                };
                (target.clone(), stats)
            })
            .collect()
    }
}
