//! The requests signaling sends a shard's thread, one per [`Shard`](super::Shard) method, each
//! with the channel its reply comes back on.

use tokio::sync::{mpsc, oneshot};

use super::{
    PublishTrack, ShardError, ShardEvent, ShardStats, SubscriptionChange, WhepOptions,
    WhepSubscription,
};
use crate::core::{ParticipantId, PublicationId, SubscriptionId};
use crate::transport::{CodecInfo, IceCandidate, PeerRole};

pub(crate) enum Command {
    Join {
        room: String,
        participant: ParticipantId,
        /// Who recipients of its data messages are told they come from.
        identity: String,
        events: mpsc::Sender<ShardEvent>,
        reply: oneshot::Sender<Result<(), ShardError>>,
    },
    Publish {
        participant: ParticipantId,
        offer: String,
        tracks: Vec<PublishTrack>,
        reply: oneshot::Sender<Result<String, ShardError>>,
    },
    Subscribe {
        participant: ParticipantId,
        subscription: SubscriptionId,
        publication: PublicationId,
        reply: oneshot::Sender<Result<(), ShardError>>,
    },
    Offer {
        participant: ParticipantId,
        ice_restart: bool,
        reply: oneshot::Sender<Result<String, ShardError>>,
    },
    Answer {
        participant: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<(), ShardError>>,
    },
    Candidate {
        participant: ParticipantId,
        role: PeerRole,
        candidate: IceCandidate,
        reply: oneshot::Sender<Result<(), ShardError>>,
    },
    Unpublish {
        participant: ParticipantId,
        publication: PublicationId,
        reply: oneshot::Sender<Result<(), ShardError>>,
    },
    Change {
        participant: ParticipantId,
        subscription: SubscriptionId,
        change: SubscriptionChange,
        reply: oneshot::Sender<Result<(), ShardError>>,
    },
    SetMuted {
        publication: PublicationId,
        muted: bool,
        reply: oneshot::Sender<Result<(), ShardError>>,
    },
    IngestPublish {
        participant: ParticipantId,
        publication: PublicationId,
        codec: CodecInfo,
        layers: u8,
        reply: oneshot::Sender<Result<(), ShardError>>,
    },
    Whep {
        participant: ParticipantId,
        offer: String,
        subscriptions: Vec<WhepSubscription>,
        options: WhepOptions,
        reply: oneshot::Sender<Result<String, ShardError>>,
    },
    WhepReoffer {
        participant: ParticipantId,
        offer: String,
        reply: oneshot::Sender<Result<String, ShardError>>,
    },
    Leave {
        participant: ParticipantId,
    },
    Stats {
        reply: oneshot::Sender<ShardStats>,
    },
    /// Blocks the shard's thread (see [`Shard::stall`]).
    Stall(std::time::Duration),
}
