//! The tokio shell around the routing core.
//!
//! - One **room task** per room owns that room's [`core::Room`](crate::core::Room) as `&mut`,
//!   plus the room's control state (who is in it, what is published). Publishers' RTP, the
//!   subscribers' keyframe requests and control changes all arrive on its one bounded queue.
//! - One **participant task** per participant owns its two peer connections (publisher,
//!   subscriber) and runs their negotiation one step at a time.
//! - Per subscription, a writer task drains a bounded queue into the subscriber's track, so a
//!   slow subscriber never stalls the room: what does not fit is dropped and counted.
//!
//! - On the shard media plane ([`Sfu::with_shard`]) a participant's connections and the
//!   forwarding live on the [`Shard`](crate::shard::Shard); its participant task turns each
//!   command into one shard request, and the room task keeps only the room's control state.
//!
//! Signaling talks to this module only through [`Sfu::join`] and the returned
//! [`Participant`].

mod ingest;
mod participant;
mod room_task;
mod shard_participant;
mod stats;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;

pub use ingest::{IngestParticipant, IngestPublication};
pub use participant::{Participant, ParticipantEvent, Permissions, ResumeState, WhepAnswer};
pub use room_task::{LayersChanged, RoomEvent};
pub use stats::{MediaStats, STATS_WAIT, SfuStats};

use crate::core::{MediaKind, ParticipantId, PublicationId};
use crate::shard::{Shard, ShardError, ShardStats};
use crate::transport::{Transport, TransportConfig, TransportError};
use room_task::RoomHandle;

/// Where a publication's media comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
    Rtmp,
    Other,
}

impl PublicationInfo {
    /// The msid stream id a subscriber receives this publication's track in. A browser plays
    /// the audio and video of one stream in sync (by their sender reports), so an RTMP
    /// publisher's two tracks share one, and so do a browser's camera and microphone: their
    /// sender reports are on the publisher's capture clock, and a simulcast switch continues
    /// the timestamps by that clock (decisions §12, §21). A screen share and anything else
    /// play on their own.
    pub fn sync_group(&self) -> String {
        match self.source {
            TrackSource::Rtmp | TrackSource::Camera | TrackSource::Microphone => {
                self.participant.to_string()
            }
            TrackSource::Screen | TrackSource::Other => format!("{}-{}", self.participant, self.id),
        }
    }
}

/// What the room knows about a participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub identity: String,
}

/// What the room knows about a publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationInfo {
    pub id: PublicationId,
    pub participant: ParticipantId,
    pub kind: MediaKind,
    pub source: TrackSource,
    pub name: Option<String>,
    /// The negotiated codec's MIME type, e.g. `video/VP8`.
    pub codec: String,
    /// Simulcast encodings by rid, lowest resolution first; empty without simulcast.
    pub rids: Vec<String>,
}

/// A track the client announces in a publish offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRequest {
    pub mid: String,
    pub kind: MediaKind,
    pub source: TrackSource,
    pub name: Option<String>,
    /// Simulcast encodings by rid, lowest resolution first; empty without simulcast.
    pub rids: Vec<String>,
}

/// What a participant sees when it enters a room.
#[derive(Debug, Clone, Default)]
pub struct RoomSnapshot {
    pub participants: Vec<ParticipantInfo>,
    pub publications: Vec<PublicationInfo>,
}

/// Limits that protect the server from one client.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rooms open at once; the join that would open one more is refused.
    pub max_rooms: usize,
    pub max_participants_per_room: usize,
    pub max_publications_per_participant: usize,
    pub max_subscriptions_per_participant: usize,
    /// Packets queued per subscription before the newest are dropped.
    pub subscription_queue: usize,
    /// Commands (mostly RTP) queued per room before RTP is dropped.
    pub room_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rooms: 1024,
            max_participants_per_room: 100,
            max_publications_per_participant: 8,
            max_subscriptions_per_participant: 200,
            subscription_queue: 512,
            room_queue: 8192,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SfuConfig {
    pub transport: TransportConfig,
    pub limits: Limits,
    /// Every room's routing core (the keyframe-request throttle among others).
    pub room: crate::core::RoomConfig,
}

/// Why a participant request failed. Messages are lowercase and safe to show the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("the token does not allow {0}")]
    PermissionDenied(&'static str),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("limit reached: {0}")]
    LimitExceeded(&'static str),
    /// Well formed, but asks for what this server cannot do (a codec, a media plane).
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the participant has left")]
    Closed,
}

/// The media server: a registry of rooms. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<SfuInner>,
}

struct SfuInner {
    config: SfuConfig,
    transport: Transport,
    /// The shard media plane's shards (one per media thread), when the server runs on it
    /// instead of webrtc-rs connections; each room is placed whole on one of them.
    shards: Vec<Arc<Shard>>,
    /// Rooms placed on each shard now.
    shard_rooms: Vec<AtomicUsize>,
    rooms: DashMap<String, RoomHandle>,
    /// Rooms open now (`rooms.len()` without locking every shard of the map), counted when a
    /// room task is created and when it closes, against `Limits::max_rooms`.
    open_rooms: AtomicUsize,
    next_id: AtomicU64,
    /// The final counters of every room that has closed.
    closed_rooms: Mutex<MediaStats>,
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Self {
        Self::build(config, Vec::new())
    }

    /// A server whose participants' connections live on `shard` (one UDP port, ICE-lite)
    /// instead of one webrtc-rs connection and port each; RTMP ingest publications are
    /// forwarded by the shard too. The room tasks keep the rooms' control state.
    pub fn with_shard(config: SfuConfig, shard: Shard) -> Self {
        Self::with_shards(config, vec![shard])
    }

    /// As [`Sfu::with_shard`], with several shards (see [`Shard::spawn_group`]): each room is
    /// placed whole on the shard that holds the fewest rooms when it opens.
    pub fn with_shards(config: SfuConfig, shards: Vec<Shard>) -> Self {
        Self::build(config, shards.into_iter().map(Arc::new).collect())
    }

    fn build(config: SfuConfig, shards: Vec<Arc<Shard>>) -> Self {
        Self {
            inner: Arc::new(SfuInner {
                transport: Transport::new(config.transport.clone()),
                config,
                shard_rooms: shards.iter().map(|_| AtomicUsize::new(0)).collect(),
                shards,
                rooms: DashMap::new(),
                open_rooms: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                closed_rooms: Mutex::new(MediaStats::default()),
            }),
        }
    }

    /// The shard a new room goes to (the one holding the fewest rooms), counted as placed;
    /// `None` on the webrtc plane.
    pub(crate) fn place_room(&self) -> Option<usize> {
        let (index, rooms) = self
            .inner
            .shard_rooms
            .iter()
            .enumerate()
            .min_by_key(|(_, rooms)| rooms.load(Ordering::Relaxed))?;
        rooms.fetch_add(1, Ordering::Relaxed);
        Some(index)
    }

    /// The shard `room` was placed on; `None` on the webrtc plane.
    pub(crate) fn shard_of(&self, room: &RoomHandle) -> Option<Arc<Shard>> {
        self.inner.shards.get(room.shard()?).cloned()
    }

    /// A process-wide unique id for participants, publications and subscriptions.
    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Number of rooms with at least one participant.
    pub fn room_count(&self) -> usize {
        self.inner.rooms.len()
    }

    /// Enters `room` (created on first join) as `identity`.
    pub async fn join(
        &self,
        room: &str,
        identity: String,
        permissions: Permissions,
    ) -> Result<(Participant, RoomSnapshot), RequestError> {
        // A room task that just emptied may be closing while we join; it refuses the join and
        // has removed itself from the registry, so the next attempt creates a fresh room.
        for _ in 0..3 {
            let handle = self.room_handle(room)?;
            match Participant::join(self.clone(), handle, room, identity.clone(), permissions).await
            {
                Err(RequestError::Closed) => continue,
                other => return other,
            }
        }
        Err(RequestError::Closed)
    }

    /// The room's task, started when the room is not open yet and `max_rooms` allows one more.
    fn room_handle(&self, room: &str) -> Result<RoomHandle, RequestError> {
        match self.inner.rooms.entry(room.to_owned()) {
            dashmap::Entry::Occupied(open) => Ok(open.get().clone()),
            dashmap::Entry::Vacant(vacant) => {
                let max = self.limits().max_rooms;
                // Under the map's lock for this name: two joins opening the same room count once.
                self.inner
                    .open_rooms
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                        (open < max).then_some(open + 1)
                    })
                    .map_err(|_| RequestError::LimitExceeded("rooms on this server"))?;
                let handle = RoomHandle::spawn(room.to_owned(), self.clone());
                Ok(vacant.insert(handle).clone())
            }
        }
    }

    /// Whether the server runs on the shard media plane (WHIP/WHEP need it).
    pub fn on_shard(&self) -> bool {
        !self.inner.shards.is_empty()
    }

    /// The publications of `room` now, or `None` when no such room is open. Does not create
    /// the room.
    pub async fn room_publications(&self, room: &str) -> Option<Vec<PublicationInfo>> {
        let handle = self.inner.rooms.get(room).map(|r| r.value().clone())?;
        let (reply, snapshot) = tokio::sync::oneshot::channel();
        handle
            .send(room_task::RoomCommand::Snapshot { reply })
            .await
            .ok()?;
        snapshot.await.ok().map(|s| s.publications)
    }

    /// The shard media plane's counters, or `None` on the webrtc plane; an error when the
    /// shard's thread has stopped.
    pub async fn shard_stats(&self) -> Option<Result<ShardStats, ShardError>> {
        if self.inner.shards.is_empty() {
            return None;
        }
        let mut sum = ShardStats::default();
        for shard in &self.inner.shards {
            match shard.stats().await {
                Ok(stats) => sum.add(&stats),
                Err(err) => return Some(Err(err)),
            }
        }
        Some(Ok(sum))
    }

    /// What the rooms hold now and what they have counted since the server started. Asks
    /// every room, waiting at most [`STATS_WAIT`] in all; a room that has not answered by
    /// then is missing from this reading (see [`SfuStats::rooms_unanswered`]), so a counter
    /// may read lower than before: readers keep the highest value seen.
    pub async fn stats(&self) -> SfuStats {
        // The closed rooms first: a room closing meanwhile is then missed once rather than
        // counted twice.
        let mut stats = SfuStats {
            media: *self.closed_rooms(),
            ..SfuStats::default()
        };
        let rooms: Vec<RoomHandle> = self.inner.rooms.iter().map(|r| r.value().clone()).collect();
        stats.rooms = rooms.len();
        let deadline = tokio::time::Instant::now() + STATS_WAIT;
        for room in rooms {
            stats.deepest_room_queue = stats.deepest_room_queue.max(room.queued());
            match tokio::time::timeout_at(deadline, room.stats()).await {
                Ok(Some(reply)) => {
                    stats.participants += reply.participants;
                    stats.publications += reply.publications;
                    stats.subscriptions += reply.subscriptions;
                    stats.media.add(&reply.media);
                }
                // Closed meanwhile: its counts are in `closed_rooms` for the next reading.
                Ok(None) => {}
                Err(_) => stats.rooms_unanswered += 1,
            }
        }
        // On the shard plane the shard routes the media: its cores hold the subscriptions
        // and the media counters.
        for shard in &self.inner.shards {
            if let Ok(Ok(shard)) = tokio::time::timeout_at(deadline, shard.stats()).await {
                stats.subscriptions += usize::try_from(shard.subscriptions).unwrap_or(usize::MAX);
                stats.media.add(&shard.media);
            }
        }
        stats
    }

    fn closed_rooms(&self) -> std::sync::MutexGuard<'_, MediaStats> {
        // Plain counters: consistent even if a holder panicked.
        self.inner
            .closed_rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by a room task that has emptied and is ending, with its final counters.
    fn room_closed(&self, room: &str, handle_id: u64, shard: Option<usize>, media: MediaStats) {
        if self
            .inner
            .rooms
            .remove_if(room, |_, handle| handle.id() == handle_id)
            .is_some()
        {
            self.inner.open_rooms.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(rooms) = shard.and_then(|index| self.inner.shard_rooms.get(index)) {
            rooms.fetch_sub(1, Ordering::Relaxed);
        }
        self.closed_rooms().add(&media);
    }

    fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    fn room_config(&self) -> &crate::core::RoomConfig {
        &self.inner.config.room
    }
}
