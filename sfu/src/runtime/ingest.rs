//! Publishers whose media is produced inside the server (RTMP and RTSP ingest): participants
//! without peer connections that feed RTP straight into their room's shard.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::room_task::{RoomCommand, RoomHandle};
use super::{
    IngestKind, ParticipantInfo, PublicationInfo, RequestError, RoomSnapshot, ServerEvent, Sfu,
    TrackSource,
};
use crate::core::{ParticipantId, PublicationId, RtpPacket};
use crate::shard::{IngestSink, Shard};
use crate::transport::CodecInfo;

/// The names of an ingest publication's layers, lowest first: the q/h/f names browsers'
/// simulcast uses, so the SDK's picker and WHEP's `?layer=` address them alike.
const LAYER_RIDS: [&str; 3] = ["q", "h", "f"];

/// A server-side publisher in a room. Dropping it removes its publications and tells the
/// room's other participants.
pub struct IngestParticipant {
    id: ParticipantId,
    sfu: Sfu,
    room: RoomHandle,
    /// The shard that forwards its media.
    shard: Arc<Shard>,
    room_name: String,
    identity: String,
    kind: IngestKind,
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
    sink: IngestSink,
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

    /// Hands one packet of simulcast layer `layer` (0 without layers) to the room's shard;
    /// never blocks (a full ingest queue drops and counts).
    pub fn send(&self, layer: u8, packet: RtpPacket) {
        self.sink.send(self.info.id, layer, packet);
    }
}

impl Sfu {
    /// Enters `room` as a server-side publisher named `identity`, fed by `kind`.
    pub async fn join_ingest(
        &self,
        room: &str,
        identity: String,
        kind: IngestKind,
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
                        name: None,
                        metadata: None,
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
                    let shard = Arc::clone(handle.shard());
                    let (events, mut drain) = mpsc::channel(64);
                    tokio::spawn(async move { while drain.recv().await.is_some() {} });
                    if let Err(err) = shard.join(room, id, &identity, events).await {
                        handle.try_send(RoomCommand::Leave { participant: id });
                        return Err(RequestError::Invalid(err.to_string()));
                    }
                    let participant = IngestParticipant {
                        id,
                        sfu: self.clone(),
                        room: handle,
                        shard,
                        room_name: room.to_owned(),
                        identity: identity.clone(),
                        kind,
                    };
                    self.notify(ServerEvent::IngestStarted {
                        room: room.to_owned(),
                        identity,
                        kind,
                    });
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

    /// Announces a publication of `layers` simulcast layers (an encoder's renditions, lowest
    /// resolution first; 1 without). Video publications keep each layer's packets since its
    /// last keyframe, so new subscribers start at once: an RTMP encoder cannot be asked for
    /// one.
    pub async fn publish(
        &self,
        source: TrackSource,
        name: Option<String>,
        codec: CodecInfo,
        layers: u8,
    ) -> Result<IngestPublication, RequestError> {
        let layers = layers.clamp(1, LAYER_RIDS.len() as u8);
        let info = PublicationInfo {
            id: PublicationId(self.sfu.next_id()),
            participant: self.id,
            kind: codec.kind(),
            source,
            name,
            codec: codec.mime_type.clone(),
            rids: if layers > 1 {
                LAYER_RIDS[..usize::from(layers)]
                    .iter()
                    .map(|rid| (*rid).to_owned())
                    .collect()
            } else {
                Vec::new()
            },
            muted: false,
        };
        self.shard
            .ingest_publish(self.id, info.id, codec, layers)
            .await
            .map_err(|err| RequestError::Invalid(err.to_string()))?;
        self.room
            .send(RoomCommand::AddPublication { info: info.clone() })
            .await?;
        Ok(IngestPublication {
            sink: self.shard.ingest_sink(),
            info,
        })
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
        self.shard
            .unpublish(self.id, publication)
            .await
            .map_err(|err| RequestError::Invalid(err.to_string()))
    }

    /// Leaves the room; dropping does the same.
    pub fn leave(self) {}
}

impl Drop for IngestParticipant {
    fn drop(&mut self) {
        self.sfu.notify(ServerEvent::IngestEnded {
            room: std::mem::take(&mut self.room_name),
            identity: std::mem::take(&mut self.identity),
            kind: self.kind,
        });
        let room = self.room.clone();
        let participant = self.id;
        let shard = Arc::clone(&self.shard);
        tokio::spawn(async move { shard.leave(participant).await });
        if !room.try_send(RoomCommand::Leave { participant }) {
            // The room queue is full: wait for space rather than leave a ghost.
            tokio::spawn(async move {
                let _ = room.send(RoomCommand::Leave { participant }).await;
            });
        }
    }
}
