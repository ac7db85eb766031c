//! Publications produced inside the server (RTMP, RTSP ingest) on the shard: the publisher has
//! no peer connection, its RTP arrives on one bounded queue from the ingest tasks, and new
//! subscribers start from the packets since the last keyframe (an encoder cannot be asked for
//! one).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::debug;

use super::ShardError;
use super::routing::PublicationSlot;
use super::worker::Worker;
use crate::core::{Input, MediaKind, ParticipantId, PublicationId, RtpPacket};
use crate::transport::CodecInfo;

/// One ingested packet on its way into the shard.
pub(crate) struct IngestPacket {
    pub(crate) publication: PublicationId,
    /// The simulcast layer (the rendition) of a layered publication; 0 otherwise.
    pub(crate) layer: u8,
    pub(crate) packet: RtpPacket,
    /// When it was queued: one that waited past the freshness bound is discarded.
    pub(crate) queued: Instant,
}

/// Where ingest tasks hand their RTP to a shard; cheap to clone.
#[derive(Clone)]
pub struct IngestSink {
    pub(crate) tx: mpsc::Sender<IngestPacket>,
    pub(crate) dropped: Arc<AtomicU64>,
}

impl IngestSink {
    /// Queues one packet of `publication`'s `layer`; never blocks (a full queue drops and
    /// counts).
    pub fn send(&self, publication: PublicationId, layer: u8, packet: RtpPacket) {
        if self
            .tx
            .try_send(IngestPacket {
                publication,
                layer,
                packet,
                queued: Instant::now(),
            })
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Packets dropped because the shard's ingest queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Worker {
    /// Adds an ingest publication of `participant` (already joined) to its room, with
    /// `layers` simulcast layers (the renditions of a multitrack encoder).
    pub(super) fn ingest_publish(
        &mut self,
        participant: ParticipantId,
        publication: PublicationId,
        codec: CodecInfo,
        layers: u8,
        now: Instant,
    ) -> Result<(), ShardError> {
        let room = self
            .members
            .get(&participant)
            .map(|m| m.room)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        if self.publications.contains_key(&publication) {
            return Err(ShardError::Invalid(format!(
                "publication {publication} exists"
            )));
        }
        let input = Input::PublicationAdded {
            publication,
            publisher: participant,
            kind: codec.kind(),
            codec: codec.codec(),
            clock_rate: codec.clock_rate,
            cache_since_keyframe: codec.kind() == MediaKind::Video,
            layers: layers.max(1),
        };
        let slot = self
            .rooms
            .get_mut(&room)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        slot.core
            .handle_input(now, input)
            .map_err(|e| ShardError::Invalid(e.to_string()))?;
        debug!(%publication, codec = %codec.mime_type, "ingest publication");
        self.publications.insert(
            publication,
            PublicationSlot {
                publisher: participant,
                peer: None,
                room,
                codec,
            },
        );
        self.rebind_followers(room, now);
        Ok(())
    }

    /// One ingested packet into its publication's room.
    pub(super) fn ingest_packet(&mut self, packet: IngestPacket, now: Instant) {
        let IngestPacket {
            publication,
            layer,
            packet,
            queued,
        } = packet;
        let waited = now.saturating_duration_since(queued);
        self.ingress_ages.observe(waited);
        if waited > self.config.max_ingress_age {
            // A starved shard: the media is stale. An RTMP encoder cannot be asked for a
            // keyframe; subscribers' decoders recover at its next one (its GOP).
            self.stats.stale_dropped += 1;
            return;
        }
        let Some(room) = self.publications.get(&publication).map(|slot| slot.room) else {
            return;
        };
        let Some(slot) = self.rooms.get_mut(&room) else {
            return;
        };
        let input = Input::Rtp {
            publication,
            layer,
            packet,
        };
        // RTP never fails: what cannot be forwarded is a counted drop in the core.
        let _ = slot.core.handle_input(now, input);
        self.drain_room(room, now);
    }
}
