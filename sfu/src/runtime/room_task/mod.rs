//! The task that keeps a room's control state: who is in it, what is published, and the
//! events that tell every participant. The room's media is its shard's.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::stats::RoomStatsReply;
use super::{
    ParticipantInfo, ProfileUpdate, PublicationInfo, RequestError, RoomSnapshot, ServerEvent, Sfu,
};
use crate::core::{self, LayerChangeReason, ParticipantId, PublicationId, SubscriptionId};
use crate::shard::Shard;

/// What a participant's client is told: about the others, and about its own subscriptions and
/// publications.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    ParticipantJoined(ParticipantInfo),
    /// A participant's name or metadata changed (server API).
    ParticipantUpdated(ParticipantInfo),
    ParticipantLeft(ParticipantId),
    PublicationAdded(PublicationInfo),
    /// To everyone: a publication was muted or unmuted.
    PublicationMuted {
        publication: PublicationId,
        participant: ParticipantId,
        muted: bool,
    },
    PublicationRemoved {
        publication: PublicationId,
        participant: ParticipantId,
    },
    /// To a subscriber: the layers of one of its subscriptions changed.
    LayersChanged(LayersChanged),
    /// To a publisher (dynacast): which encodings of its publication anyone needs, by rid.
    PublisherLayers {
        publication: PublicationId,
        layers: Vec<(String, bool)>,
    },
    /// To everyone: who speaks now, loudest first, with a level in 0.0..=1.0 (linear
    /// amplitude, 1.0 = 0 dBov); empty when nobody does any more.
    ActiveSpeakers(Vec<(ParticipantId, f32)>),
    /// To everyone: a publication stopped sending media (its publisher vanished or its source
    /// went away); it stays published.
    PublicationStalled {
        publication: PublicationId,
        participant: ParticipantId,
    },
    /// To everyone: a stalled publication sends media again.
    PublicationResumed {
        publication: PublicationId,
        participant: ParticipantId,
    },
}

/// A subscription's layer change, as the room's routing core reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayersChanged {
    pub subscription: SubscriptionId,
    /// The layer forwarded; `None` before the first one (temporal 2 = all for streams without
    /// temporal layers).
    pub current: Option<core::Layer>,
    pub target: core::Layer,
    pub reason: LayerChangeReason,
}

pub(crate) enum RoomCommand {
    Join {
        info: ParticipantInfo,
        events: mpsc::Sender<RoomEvent>,
        reply: oneshot::Sender<Result<RoomSnapshot, RequestError>>,
    },
    Leave {
        participant: ParticipantId,
    },
    /// Mutes or unmutes a publication (of `by` only, when given: a participant mutes its own;
    /// the application any); replies with it as it is now.
    SetMuted {
        publication: PublicationId,
        muted: bool,
        by: Option<ParticipantId>,
        reply: oneshot::Sender<Result<PublicationInfo, RequestError>>,
    },
    /// Changes the name or metadata of the participants of `identity`; replies with them as
    /// they are now.
    UpdateProfile {
        identity: String,
        update: ProfileUpdate,
        reply: oneshot::Sender<Vec<ParticipantInfo>>,
    },
    /// The room as it is now (a resuming client reconciles with it).
    Snapshot {
        reply: oneshot::Sender<RoomSnapshot>,
    },
    /// What the room holds (for metrics).
    Stats {
        reply: oneshot::Sender<RoomStatsReply>,
    },
    /// A publication the shard has accepted: announced to everyone else.
    AddPublication {
        info: PublicationInfo,
    },
    RemovePublication {
        participant: ParticipantId,
        publication: PublicationId,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    GetPublication {
        publication: PublicationId,
        reply: oneshot::Sender<Option<PublicationInfo>>,
    },
}

#[derive(Clone)]
pub(crate) struct RoomHandle {
    id: u64,
    /// The shard the room is placed on.
    shard: Arc<Shard>,
    tx: mpsc::Sender<RoomCommand>,
}

impl RoomHandle {
    pub(crate) fn spawn(name: String, sfu: Sfu) -> Self {
        let (tx, rx) = mpsc::channel(sfu.limits().room_queue);
        let (shard_index, shard) = sfu.place_room();
        let handle = Self {
            id: sfu.next_id(),
            shard,
            tx,
        };
        let task = RoomTask {
            name,
            handle_id: handle.id,
            shard_index,
            sfu,
            participants: HashMap::new(),
            publications: HashMap::new(),
            started: false,
        };
        tokio::spawn(task.run(rx));
        handle
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The shard that owns the room's media.
    pub(crate) fn shard(&self) -> &Arc<Shard> {
        &self.shard
    }

    /// Sends a command, waiting for space in the queue; fails only when the room has closed.
    pub(crate) async fn send(&self, command: RoomCommand) -> Result<(), RequestError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| RequestError::Closed)
    }

    /// Commands waiting in the room's queue now.
    /// Mutes or unmutes a publication; see [`RoomCommand::SetMuted`].
    pub(crate) async fn set_muted(
        &self,
        publication: PublicationId,
        muted: bool,
        by: Option<ParticipantId>,
    ) -> Result<PublicationInfo, RequestError> {
        let (reply, result) = oneshot::channel();
        self.send(RoomCommand::SetMuted {
            publication,
            muted,
            by,
            reply,
        })
        .await?;
        result.await.map_err(|_| RequestError::Closed)?
    }

    pub(crate) fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// What the room holds; `None` once it has closed.
    pub(crate) async fn stats(&self) -> Option<RoomStatsReply> {
        let (reply, answer) = oneshot::channel();
        self.send(RoomCommand::Stats { reply }).await.ok()?;
        answer.await.ok()
    }

    /// Sends without waiting; for drop-time cleanup.
    pub(crate) fn try_send(&self, command: RoomCommand) -> bool {
        self.tx.try_send(command).is_ok()
    }
}

struct ParticipantEntry {
    info: ParticipantInfo,
    events: mpsc::Sender<RoomEvent>,
}

struct RoomTask {
    name: String,
    handle_id: u64,
    shard_index: usize,
    sfu: Sfu,
    participants: HashMap<ParticipantId, ParticipantEntry>,
    publications: HashMap<PublicationId, PublicationInfo>,
    /// Whether a participant has joined (the application was told the room started).
    started: bool,
}

mod task;
