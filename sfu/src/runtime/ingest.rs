//! Publishers whose media is produced inside the server (RTMP ingest): participants without
//! peer connections that feed RTP straight into their room.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::room_task::{RoomCommand, RoomHandle};
use super::{ParticipantInfo, PublicationInfo, RequestError, RoomSnapshot, Sfu, TrackSource};
use crate::core::{ParticipantId, PublicationId, RtpPacket};
use crate::shard::{IngestSink, Shard};
use crate::transport::{CodecInfo, RtpSink};

/// Feeds an ingest publication's RTP to the shard's ingest queue (drops counted there).
struct ShardRtpSink {
    sink: IngestSink,
    publication: PublicationId,
}

impl RtpSink for ShardRtpSink {
    fn deliver(&self, _layer: u8, packet: RtpPacket) {
        self.sink.send(self.publication, packet);
    }
}

/// A server-side publisher in a room. Dropping it removes its publications and tells the
/// room's other participants.
pub struct IngestParticipant {
    id: ParticipantId,
    sfu: Sfu,
    room: RoomHandle,
    /// On the shard plane, the shard that forwards its media (the room task keeps only the
    /// room's control state there).
    shard: Option<Arc<Shard>>,
}

impl std::fmt::Debug for IngestParticipant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestParticipant")
            .field("id", &self.id)
            .finish()
    }
}

/// One publication of an [`IngestParticipant`]; cheap to clone.
#[derive(Clone)]
pub struct IngestPublication {
    info: PublicationInfo,
    sink: Arc<dyn RtpSink>,
}

impl std::fmt::Debug for IngestPublication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestPublication")
            .field("info", &self.info)
            .finish()
    }
}

impl IngestPublication {
    pub fn id(&self) -> PublicationId {
        self.info.id
    }

    pub fn info(&self) -> &PublicationInfo {
        &self.info
    }

    /// Hands one packet to the room; never blocks (a full room queue drops and counts).
    pub fn send(&self, packet: RtpPacket) {
        self.sink.deliver(0, packet);
    }
}

impl Sfu {
    /// Enters `room` as a server-side publisher named `identity`.
    pub async fn join_ingest(
        &self,
        room: &str,
        identity: String,
    ) -> Result<(IngestParticipant, RoomSnapshot), RequestError> {
        for _ in 0..3 {
            let handle = self.room_handle(room)?;
            let id = ParticipantId(self.next_id());
            // The room's events are of no use to an encoder; drain them so the room never
            // sees a full queue.
            let (events, mut drain) = mpsc::channel(64);
            tokio::spawn(async move { while drain.recv().await.is_some() {} });
            let (reply, snapshot) = oneshot::channel();
            let sent = handle
                .send(RoomCommand::Join {
                    info: ParticipantInfo {
                        id,
                        identity: identity.clone(),
                    },
                    events,
                    reply,
                })
                .await;
            let result = match sent {
                Ok(()) => snapshot.await.unwrap_or(Err(RequestError::Closed)),
                Err(err) => Err(err),
            };
            match result {
                Ok(snapshot) => {
                    let shard = self.shard_of(&handle);
                    if let Some(shard) = &shard {
                        let (events, mut drain) = mpsc::channel(64);
                        tokio::spawn(async move { while drain.recv().await.is_some() {} });
                        let room_name = room;
                        if let Err(err) = shard.join(room_name, id, events).await {
                            handle.try_send(RoomCommand::Leave { participant: id });
                            return Err(RequestError::Invalid(err.to_string()));
                        }
                    }
                    let participant = IngestParticipant {
                        id,
                        sfu: self.clone(),
                        room: handle,
                        shard,
                    };
                    return Ok((participant, snapshot));
                }
                Err(RequestError::Closed) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(RequestError::Closed)
    }
}

impl IngestParticipant {
    pub fn id(&self) -> ParticipantId {
        self.id
    }

    /// Announces a publication. Video publications keep their packets since the last
    /// keyframe, so new subscribers start at once: an RTMP encoder cannot be asked for one.
    pub async fn publish(
        &self,
        source: TrackSource,
        name: Option<String>,
        codec: CodecInfo,
    ) -> Result<IngestPublication, RequestError> {
        let info = PublicationInfo {
            id: PublicationId(self.sfu.next_id()),
            participant: self.id,
            kind: codec.kind(),
            source,
            name,
            codec: codec.mime_type.clone(),
            rids: Vec::new(),
        };
        let sink: Arc<dyn RtpSink> = match &self.shard {
            Some(shard) => {
                shard
                    .ingest_publish(self.id, info.id, codec.clone())
                    .await
                    .map_err(|err| RequestError::Invalid(err.to_string()))?;
                Arc::new(ShardRtpSink {
                    sink: shard.ingest_sink(),
                    publication: info.id,
                })
            }
            None => self.room.rtp_sink(info.id),
        };
        self.room
            .send(RoomCommand::AddPublication {
                info: info.clone(),
                cache_since_keyframe: codec.kind() == crate::core::MediaKind::Video,
                codec,
            })
            .await?;
        Ok(IngestPublication { sink, info })
    }

    /// Removes one publication (subscribers are told).
    pub async fn unpublish(&self, publication: PublicationId) -> Result<(), RequestError> {
        let (reply, result) = oneshot::channel();
        self.room
            .send(RoomCommand::RemovePublication {
                participant: self.id,
                publication,
                reply,
            })
            .await?;
        result.await.map_err(|_| RequestError::Closed)??;
        if let Some(shard) = &self.shard {
            shard
                .unpublish(self.id, publication)
                .await
                .map_err(|err| RequestError::Invalid(err.to_string()))?;
        }
        Ok(())
    }

    /// Leaves the room; dropping does the same.
    pub fn leave(self) {}
}

impl Drop for IngestParticipant {
    fn drop(&mut self) {
        let room = self.room.clone();
        let participant = self.id;
        if let Some(shard) = self.shard.take() {
            tokio::spawn(async move { shard.leave(participant).await });
        }
        if !room.try_send(RoomCommand::Leave { participant }) {
            // The room queue is full of media: wait for space rather than leave a ghost.
            tokio::spawn(async move {
                let _ = room.send(RoomCommand::Leave { participant }).await;
            });
        }
    }
}
