//! The task that owns a room's `core::Room`: its commands, events and handle.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::stats::{MediaStats, RoomStatsReply};
use super::{ParticipantInfo, PublicationInfo, RequestError, RoomSnapshot, Sfu};
use crate::core::{
    self, Input, LayerChangeReason, Output, ParticipantId, PublicationId, RtpPacket, Ssrc,
    SubscriptionId,
};
use crate::transport::{CodecInfo, RemoteTrack, RepairHorizons, RtpSink};

/// What the room tells a participant: about the others, and about its own subscriptions and
/// publications.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    ParticipantJoined(ParticipantInfo),
    ParticipantLeft(ParticipantId),
    PublicationAdded(PublicationInfo),
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
    /// To a subscriber's own task: probe its path before an upgrade (never sent to a client).
    Probe {
        bits_per_second: u64,
        duration: std::time::Duration,
    },
    /// To a subscriber's own task: its path was just found congested (never sent to a client).
    PathCongested,
}

/// A subscription's layer change, as the room reports it.
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
    /// The publisher's connection came back after an ICE restart: packets were lost in the
    /// switch and cannot be repaired, so every subscriber of its publications needs a keyframe.
    PublisherReconnected {
        participant: ParticipantId,
    },
    /// The room as it is now (a resuming client reconciles with it).
    Snapshot {
        reply: oneshot::Sender<RoomSnapshot>,
    },
    /// What the room holds and has counted (for metrics).
    Stats {
        reply: oneshot::Sender<RoomStatsReply>,
    },
    AddPublication {
        info: PublicationInfo,
        codec: CodecInfo,
        /// Start new subscribers from the packets since the last keyframe (RTMP ingest).
        cache_since_keyframe: bool,
    },
    /// The publication's first RTP arrived: its track can now take keyframe requests.
    AttachTrack {
        publication: PublicationId,
        track: RemoteTrack,
    },
    RemovePublication {
        participant: ParticipantId,
        publication: PublicationId,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    GetPublication {
        publication: PublicationId,
        reply: oneshot::Sender<Option<(PublicationInfo, CodecInfo)>>,
    },
    AddSubscription {
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        publication: PublicationId,
        ssrc: Ssrc,
        payload_type: u8,
        sink: mpsc::Sender<RtpPacket>,
        /// The subscriber connection's repair horizons, set as the core reports restarts.
        horizons: Arc<RepairHorizons>,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    RemoveSubscription {
        subscription: SubscriptionId,
    },
    Rtp {
        publication: PublicationId,
        layer: u8,
        packet: RtpPacket,
    },
    KeyframeRequested {
        subscription: SubscriptionId,
    },
    /// A subscriber's NACK named this many lost packets.
    Nacked {
        subscription: SubscriptionId,
        packets: u32,
    },
    SetPreferredLayer {
        subscription: SubscriptionId,
        spatial: u8,
        temporal: Option<u8>,
    },
    SetPaused {
        subscription: SubscriptionId,
        paused: bool,
    },
    Bandwidth {
        subscriber: ParticipantId,
        bits_per_second: u64,
    },
    /// The subscriber's own estimate of its downlink (REMB).
    Remb {
        subscriber: ParticipantId,
        bits_per_second: u64,
    },
    /// The round trip to a subscriber without transport-wide feedback.
    RoundTrip {
        subscriber: ParticipantId,
        round_trip: Duration,
    },
    /// The subscriber's path holds a standing queue and delivers this much.
    Congested {
        subscriber: ParticipantId,
        delivered_bits_per_second: u64,
        /// Set when a probe was running: the media's own rate, which the path carried.
        media_bits_per_second: Option<u64>,
    },
}

#[derive(Clone)]
pub(crate) struct RoomHandle {
    id: u64,
    /// The shard the room is placed on (shard media plane).
    shard: Option<usize>,
    tx: mpsc::Sender<RoomCommand>,
    rtp_dropped: Arc<AtomicU64>,
}

impl RoomHandle {
    pub(crate) fn spawn(name: String, sfu: Sfu) -> Self {
        let (tx, rx) = mpsc::channel(sfu.limits().room_queue);
        // Each room draws its own initial sequence numbers unless the config pins them.
        let core = core::Room::new(core::RoomConfig {
            random_seed: rand::random(),
            ..sfu.room_config().clone()
        });
        let handle = Self {
            id: sfu.next_id(),
            shard: sfu.place_room(),
            tx,
            rtp_dropped: Arc::new(AtomicU64::new(0)),
        };
        let task = RoomTask {
            name,
            handle_id: handle.id,
            shard: handle.shard,
            sfu,
            core,
            participants: HashMap::new(),
            publications: HashMap::new(),
            subscriptions: HashMap::new(),
            sink_full_drops: 0,
            rtp_dropped: Arc::clone(&handle.rtp_dropped),
            counted: MediaStats::default(),
            active_speakers: Vec::new(),
        };
        tokio::spawn(task.run(rx));
        handle
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn shard(&self) -> Option<usize> {
        self.shard
    }

    /// Sends a control command; fails only when the room has closed.
    pub(crate) async fn send(&self, command: RoomCommand) -> Result<(), RequestError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| RequestError::Closed)
    }

    /// Commands (mostly RTP) waiting in the room's queue now.
    pub(crate) fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// What the room holds and has counted; `None` once it has closed.
    pub(crate) async fn stats(&self) -> Option<RoomStatsReply> {
        let (reply, answer) = oneshot::channel();
        self.send(RoomCommand::Stats { reply }).await.ok()?;
        answer.await.ok()
    }

    /// Sends without waiting; for the media path and for drop-time cleanup.
    pub(crate) fn try_send(&self, command: RoomCommand) -> bool {
        self.tx.try_send(command).is_ok()
    }

    pub(crate) fn rtp_sink(&self, publication: PublicationId) -> Arc<dyn RtpSink> {
        Arc::new(RoomRtpSink {
            room: self.clone(),
            publication,
        })
    }
}

/// Feeds one publication's RTP into the room queue; when the queue is full the packet is
/// dropped (and counted) rather than stalling the WebRTC driver that delivers it.
struct RoomRtpSink {
    room: RoomHandle,
    publication: PublicationId,
}

impl RtpSink for RoomRtpSink {
    fn deliver(&self, layer: u8, packet: RtpPacket) {
        let command = RoomCommand::Rtp {
            publication: self.publication,
            layer,
            packet,
        };
        if !self.room.try_send(command) {
            self.room.rtp_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct ParticipantEntry {
    info: ParticipantInfo,
    events: mpsc::Sender<RoomEvent>,
}

struct PublicationEntry {
    info: PublicationInfo,
    codec: CodecInfo,
    track: Option<RemoteTrack>,
}

struct SubscriptionEntry {
    subscriber: ParticipantId,
    publication: PublicationId,
    sink: mpsc::Sender<RtpPacket>,
    horizons: Arc<RepairHorizons>,
}

struct RoomTask {
    name: String,
    handle_id: u64,
    shard: Option<usize>,
    sfu: Sfu,
    core: core::Room,
    participants: HashMap<ParticipantId, ParticipantEntry>,
    publications: HashMap<PublicationId, PublicationEntry>,
    subscriptions: HashMap<SubscriptionId, SubscriptionEntry>,
    sink_full_drops: u64,
    /// RTP dropped at the room's full queue (counted by the senders).
    rtp_dropped: Arc<AtomicU64>,
    /// Counts the core no longer holds (of removed publications and subscriptions) and those
    /// the task keeps itself (subscribers' NACKs and keyframe requests).
    counted: MediaStats,
    /// The last `ActiveSpeakers` list, for participants who join while someone speaks (the
    /// core announces only changes).
    active_speakers: Vec<(ParticipantId, f32)>,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

mod stats;
mod task;
