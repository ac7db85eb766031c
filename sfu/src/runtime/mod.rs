//! The tokio shell around the shards.
//!
//! - One **room task** per room keeps the room's control state — who is in it and what is
//!   published — and tells every participant about it. It never sees media: the room is placed
//!   whole on one [`Shard`](crate::shard::Shard), whose thread owns its
//!   [`core::Room`](crate::core::Room) and forwards its packets.
//! - One **participant task** per participant serves its handle's commands, turning each into
//!   one room or shard request, and relays room and shard events to its client.
//!
//! Signaling talks to this module only through [`Sfu::join`] and the returned
//! [`Participant`].

mod admission;
mod events;
mod ingest;
mod participant;
mod room_task;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

pub use admission::{Admission, AdmissionConfig, AdmissionCounts, Refusal, SubscriberSlot};
pub use events::{IngestKind, SERVER_EVENT_BACKLOG, ServerEvent};
pub use ingest::{IngestParticipant, IngestPublication};
pub use participant::{Participant, ParticipantEvent, Permissions, ResumeState, WhepAnswer};
pub use room_task::{LayersChanged, RoomEvent};
pub use stats::{MediaStats, STATS_WAIT, SfuStats};

use crate::core::{MediaKind, ParticipantId, PublicationId};
use crate::shard::{Shard, ShardConfig, ShardError, ShardStats};
use crate::transport::TransportError;
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
    /// A display name the application chose (from the token or the server API).
    pub name: Option<String>,
    /// Opaque application data (from the token or the server API), relayed as is.
    pub metadata: Option<String>,
}

/// Who joins: the identity and what the application says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub identity: String,
    pub name: Option<String>,
    pub metadata: Option<String>,
}

impl Profile {
    /// A profile with an identity only.
    pub fn identity(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            ..Self::default()
        }
    }
}

/// A change to a participant's name or metadata; `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileUpdate {
    pub name: Option<String>,
    pub metadata: Option<String>,
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
    /// Muted by its publisher or the application: nothing of it is forwarded.
    pub muted: bool,
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
    /// Control commands queued per room before senders wait.
    pub room_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rooms: 1024,
            max_participants_per_room: 100,
            max_publications_per_participant: 8,
            max_subscriptions_per_participant: 200,
            room_queue: 8192,
        }
    }
}

/// How the media server starts: its shards and the limits it holds clients to.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Every shard's socket, bounds and rooms' routing core (the keyframe-request throttle
    /// among others).
    pub shard: ShardConfig,
    /// Shards (media threads) on the one port; at least one is started.
    pub media_threads: usize,
    pub limits: Limits,
    /// The capacity new subscriber connections are admitted against.
    pub admission: AdmissionConfig,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            shard: ShardConfig::default(),
            media_threads: 1,
            limits: Limits::default(),
            admission: AdmissionConfig::default(),
        }
    }
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
    /// Well formed, but asks for what this server cannot do (a codec).
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the participant has left")]
    Closed,
    /// A new subscriber connection past the server's capacity (see [`AdmissionConfig`]).
    #[error("server full: {0}")]
    ServerFull(#[from] Refusal),
}

/// The media server: a registry of rooms, each placed on one of its shards. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<SfuInner>,
}

struct SfuInner {
    limits: Limits,
    admission: Arc<Admission>,
    /// One per media thread, never empty; each room is placed whole on one of them.
    shards: Vec<Arc<Shard>>,
    /// Rooms placed on each shard now.
    shard_rooms: Vec<AtomicUsize>,
    rooms: DashMap<String, RoomHandle>,
    /// Rooms open now (`rooms.len()` without locking every shard of the map), counted when a
    /// room task is created and when it closes, against `Limits::max_rooms`.
    open_rooms: AtomicUsize,
    next_id: AtomicU64,
    events: events::ServerEvents,
}

impl Sfu {
    /// Binds the media port and starts `config.media_threads` shards on it (see
    /// [`Shard::spawn_group`]).
    pub fn start(config: SfuConfig) -> Result<Self, ShardError> {
        let shards = Shard::spawn_group(config.shard, config.media_threads)?;
        Ok(Self {
            inner: Arc::new(SfuInner {
                limits: config.limits,
                admission: Admission::new(config.admission),
                shard_rooms: shards.iter().map(|_| AtomicUsize::new(0)).collect(),
                shards: shards.into_iter().map(Arc::new).collect(),
                rooms: DashMap::new(),
                open_rooms: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                events: events::ServerEvents::default(),
            }),
        })
    }

    /// The shards, one per media thread.
    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.inner.shards
    }

    /// The shard a new room goes to (the one holding the fewest rooms), counted as placed.
    fn place_room(&self) -> (usize, Arc<Shard>) {
        let (index, rooms) = self
            .inner
            .shard_rooms
            .iter()
            .enumerate()
            .min_by_key(|(_, rooms)| rooms.load(Ordering::Relaxed))
            .expect("invariant: Sfu::start starts at least one shard");
        rooms.fetch_add(1, Ordering::Relaxed);
        (index, Arc::clone(&self.inner.shards[index]))
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
        self.join_as(room, Profile::identity(identity), permissions)
            .await
    }

    /// Enters `room` (created on first join) as `profile`.
    pub async fn join_as(
        &self,
        room: &str,
        profile: Profile,
        permissions: Permissions,
    ) -> Result<(Participant, RoomSnapshot), RequestError> {
        // A room task that just emptied may be closing while we join; it refuses the join and
        // has removed itself from the registry, so the next attempt creates a fresh room.
        for _ in 0..3 {
            let handle = self.room_handle(room)?;
            match Participant::join(self.clone(), handle, room, profile.clone(), permissions).await
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

    /// Listens to the server-wide events ([`ServerEvent`]) from now on.
    pub fn server_events(&self) -> tokio::sync::broadcast::Receiver<ServerEvent> {
        self.inner.events.subscribe()
    }

    /// Tells the server-wide listeners `event` (the signaling side's WHIP sessions use it).
    pub fn notify(&self, event: ServerEvent) {
        self.inner.events.send(event);
    }

    /// The publications of `room` now, or `None` when no such room is open. Does not create
    /// the room.
    pub async fn room_publications(&self, room: &str) -> Option<Vec<PublicationInfo>> {
        self.room_snapshot(room).await.map(|s| s.publications)
    }

    /// The handle of `room` if it is open (never creates it).
    fn open_room(&self, room: &str) -> Result<RoomHandle, RequestError> {
        self.inner
            .rooms
            .get(room)
            .map(|r| r.value().clone())
            .ok_or_else(|| RequestError::NotFound("room".into()))
    }

    /// Mutes or unmutes a publication of `room` (the application's server API) and tells the
    /// room.
    pub async fn set_muted(
        &self,
        room: &str,
        publication: PublicationId,
        muted: bool,
    ) -> Result<PublicationInfo, RequestError> {
        self.open_room(room)?
            .set_muted(publication, muted, None)
            .await
    }

    /// The participants and publications of `room` now, or `None` when no such room is open.
    /// Does not create the room.
    pub async fn room_snapshot(&self, room: &str) -> Option<RoomSnapshot> {
        let handle = self.open_room(room).ok()?;
        let (reply, snapshot) = tokio::sync::oneshot::channel();
        handle
            .send(room_task::RoomCommand::Snapshot { reply })
            .await
            .ok()?;
        snapshot.await.ok()
    }

    /// The names of the open rooms.
    pub fn room_names(&self) -> Vec<String> {
        self.inner.rooms.iter().map(|r| r.key().clone()).collect()
    }

    /// Changes the name or metadata of every participant of `identity` in `room` and tells the
    /// room (`ParticipantUpdated`). Returns the participants as they are now; empty when none
    /// has that identity.
    pub async fn update_profile(
        &self,
        room: &str,
        identity: &str,
        update: ProfileUpdate,
    ) -> Result<Vec<ParticipantInfo>, RequestError> {
        let (reply, updated) = tokio::sync::oneshot::channel();
        self.open_room(room)?
            .send(room_task::RoomCommand::UpdateProfile {
                identity: identity.to_owned(),
                update,
                reply,
            })
            .await?;
        updated.await.map_err(|_| RequestError::Closed)
    }

    /// The shards' counters added up; an error when a shard's thread has stopped.
    pub async fn shard_stats(&self) -> Result<ShardStats, ShardError> {
        let mut sum = ShardStats::default();
        for shard in &self.inner.shards {
            sum.add(&shard.stats().await?);
        }
        Ok(sum)
    }

    /// What the rooms and shards hold now and what the shards have counted since the server
    /// started. Asks every room and shard, waiting at most [`STATS_WAIT`] in all; one that
    /// has not answered by then is missing from this reading (see
    /// [`SfuStats::rooms_unanswered`]), so a counter may read lower than before: readers keep
    /// the highest value seen.
    pub async fn stats(&self) -> SfuStats {
        let mut stats = SfuStats::default();
        let rooms: Vec<RoomHandle> = self.inner.rooms.iter().map(|r| r.value().clone()).collect();
        stats.rooms = rooms.len();
        let deadline = tokio::time::Instant::now() + STATS_WAIT;
        for room in rooms {
            stats.deepest_room_queue = stats.deepest_room_queue.max(room.queued());
            match tokio::time::timeout_at(deadline, room.stats()).await {
                Ok(Some(reply)) => {
                    stats.participants += reply.participants;
                    stats.publications += reply.publications;
                }
                // Closed meanwhile.
                Ok(None) => {}
                Err(_) => stats.rooms_unanswered += 1,
            }
        }
        // The shards route the media: their cores hold the subscriptions and the counters.
        for shard in &self.inner.shards {
            if let Ok(Ok(shard)) = tokio::time::timeout_at(deadline, shard.stats()).await {
                stats.subscriptions += usize::try_from(shard.subscriptions).unwrap_or(usize::MAX);
                stats.media.add(&shard.media);
            }
        }
        stats
    }

    /// Subscriber connections held and refused (see [`AdmissionConfig`]).
    pub fn admission_counts(&self) -> AdmissionCounts {
        self.inner.admission.counts()
    }

    /// The busy share of the busiest media thread over its last window, in percent.
    pub fn busiest_shard_percent(&self) -> f64 {
        self.inner
            .shards
            .iter()
            .map(|shard| shard.busy_percent())
            .fold(0.0, f64::max)
    }

    /// Whether a new subscriber connection to `room` would be admitted now, without taking a
    /// slot (a refusal is counted): a WHEP viewer is refused before it joins the room. The
    /// participant's task admits it for good (see [`Admission::admit`]). A room not open yet
    /// is checked against the capacity alone.
    pub fn check_subscriber_admission(&self, room: &str) -> Result<(), RequestError> {
        let busy = self
            .inner
            .rooms
            .get(room)
            .map_or(0.0, |handle| handle.shard().busy_percent());
        Ok(self.inner.admission.check(busy)?)
    }

    /// A slot for a new subscriber connection on `shard`, or the refusal.
    fn admit_subscriber(&self, shard: &Shard) -> Result<SubscriberSlot, RequestError> {
        Ok(self.inner.admission.admit(shard.busy_percent())?)
    }

    /// Called by a room task that has emptied and is ending.
    fn room_closed(&self, room: &str, handle_id: u64, shard: usize) {
        if self
            .inner
            .rooms
            .remove_if(room, |_, handle| handle.id() == handle_id)
            .is_some()
        {
            self.inner.open_rooms.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(rooms) = self.inner.shard_rooms.get(shard) {
            rooms.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }
}
