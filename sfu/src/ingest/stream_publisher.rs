//! The room side of an ingested stream: its participant and publications. It outlives the
//! RTMP connection by the reconnect grace period (an RTSP source keeps it across its
//! reconnects), so a source that comes back continues the same publications and viewers keep
//! playing without renegotiating.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::keys::StreamTarget;
use super::media::{Announce, MediaCarry, MediaPipeline, Origin};
use super::stats::StreamStats;
use crate::core::{MediaKind, RtpPacket, Ssrc};
use crate::runtime::{IngestParticipant, IngestPublication, RequestError, Sfu, TrackSource};
use crate::transport::CodecInfo;

struct Track {
    publication: IngestPublication,
    codec: CodecInfo,
    name: String,
    /// Each layer's RTP source, lowest first; empty for a track of one layer.
    layers: Vec<Ssrc>,
}

/// How long a resumed session carries media without announcing a track of the parked one
/// before that track counts as gone. Encoders send both sequence headers before their first
/// frames (ffmpeg in its FLV header, OBS on connecting), so a track not announced by then will
/// not come: its publication is removed rather than left up with a stale picture. The
/// `onMetaData` flags are not used for this: encoders need not send them, and they tell what
/// the encoder has, not what Sluice can convert (MP3 audio is ignored).
const ABSENT_TRACK_BOUND: Duration = Duration::from_secs(1);

/// The parked session's tracks that a resumed session has not announced yet.
#[derive(Debug, Default)]
struct Unconfirmed {
    video: bool,
    audio: bool,
    /// When the resumed session's media started flowing.
    media_since: Option<Instant>,
}

pub struct RoomStream {
    target: StreamTarget,
    origin: Origin,
    participant: IngestParticipant,
    video: Option<Track>,
    audio: Option<Track>,
    stats: Arc<StreamStats>,
    /// The last session's media state while the stream is parked.
    parked_media: Option<MediaCarry>,
    /// Set while a resumed session may still announce the tracks of the parked one.
    unconfirmed: Option<Unconfirmed>,
}

impl std::fmt::Debug for RoomStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomStream")
            .field("target", &self.target)
            .field("participant", &self.participant.id())
            .finish()
    }
}

impl RoomStream {
    pub async fn join(
        sfu: &Sfu,
        target: StreamTarget,
        origin: Origin,
    ) -> Result<Self, RequestError> {
        let (participant, _) = sfu
            .join_ingest(&target.room, target.identity.clone(), origin.ingest_kind())
            .await?;
        Ok(Self {
            target,
            origin,
            participant,
            video: None,
            audio: None,
            stats: Arc::default(),
            parked_media: None,
            unconfirmed: None,
        })
    }

    pub fn target(&self) -> &StreamTarget {
        &self.target
    }

    pub fn stats(&self) -> &Arc<StreamStats> {
        &self.stats
    }

    /// The media pipeline for a session starting now: it continues the parked one's sources
    /// when the encoder reconnected. Its tracks then stay published only if the new session
    /// announces them (see [`RoomStream::media_flowed`]).
    pub fn start_media(&mut self, now: Instant) -> MediaPipeline {
        let stats = Arc::clone(&self.stats);
        match self.parked_media.take() {
            Some(carry) => {
                self.unconfirmed = Some(Unconfirmed {
                    video: self.video.is_some(),
                    audio: self.audio.is_some(),
                    media_since: None,
                });
                MediaPipeline::resume(stats, self.origin, carry, now)
            }
            None => MediaPipeline::new(stats, self.origin),
        }
    }

    /// The session's media (audio or video packets) flowed at `now`. Once a resumed session
    /// has carried media for [`ABSENT_TRACK_BOUND`] without announcing a track of the parked
    /// session, that track is unpublished: the encoder came back without it.
    pub async fn media_flowed(&mut self, now: Instant) -> Result<(), RequestError> {
        let Some(unconfirmed) = &mut self.unconfirmed else {
            return Ok(());
        };
        let since = *unconfirmed.media_since.get_or_insert(now);
        if now.saturating_duration_since(since) < ABSENT_TRACK_BOUND {
            return Ok(());
        }
        let Some(Unconfirmed { video, audio, .. }) = self.unconfirmed.take() else {
            return Ok(());
        };
        for (kind, absent) in [(MediaKind::Video, video), (MediaKind::Audio, audio)] {
            let slot = match kind {
                MediaKind::Video => &mut self.video,
                MediaKind::Audio => &mut self.audio,
            };
            if let Some(track) = slot.take_if(|_| absent) {
                info!(
                    publication = %track.publication.id(), ?kind,
                    "the reconnected encoder does not send this track: publication removed"
                );
                self.participant.unpublish(track.publication.id()).await?;
            }
        }
        Ok(())
    }

    /// Keeps what a reconnect of the encoder continues from.
    pub fn park_media(&mut self, media: MediaPipeline, now: Instant) {
        self.parked_media = Some(media.park(now));
    }

    /// Does what the media pipeline announced before the packets that follow it.
    pub async fn apply(&mut self, announce: Announce) -> Result<(), RequestError> {
        match announce {
            Announce::Nothing => Ok(()),
            Announce::Codec {
                codec,
                name,
                layers,
            } => self.announce(codec, name, layers).await,
        }
    }

    /// Makes sure the track of `codec`'s kind is published with exactly this codec, name and
    /// number of layers (`layers`: each one's RTP source, lowest first, or empty for one).
    /// The same after a reconnect keeps the publication; anything else (the encoder's settings
    /// changed) replaces it, since subscribers negotiated the old codec and layers.
    pub async fn announce(
        &mut self,
        codec: CodecInfo,
        name: String,
        layers: Vec<Ssrc>,
    ) -> Result<(), RequestError> {
        let kind = codec.kind();
        if let Some(unconfirmed) = &mut self.unconfirmed {
            match kind {
                MediaKind::Video => unconfirmed.video = false,
                MediaKind::Audio => unconfirmed.audio = false,
            }
        }
        let slot = match kind {
            MediaKind::Video => &mut self.video,
            MediaKind::Audio => &mut self.audio,
        };
        if let Some(track) = slot.as_mut().filter(|track| {
            track.codec == codec && track.name == name && track.layers.len() == layers.len()
        }) {
            track.layers = layers;
            return Ok(());
        }
        if let Some(old) = slot.take() {
            info!(publication = %old.publication.id(), "codec changed: replacing the publication");
            self.participant.unpublish(old.publication.id()).await?;
        }
        let layer_count = u8::try_from(layers.len().max(1)).unwrap_or(u8::MAX);
        let publication = self
            .participant
            .publish(
                TrackSource::Rtmp,
                Some(name.clone()),
                codec.clone(),
                layer_count,
            )
            .await?;
        info!(
            publication = %publication.id(), codec = %codec.mime_type, %name, layers = layer_count,
            "published"
        );
        *slot = Some(Track {
            publication,
            codec,
            name,
            layers,
        });
        Ok(())
    }

    /// Hands a packet to the room, on the layer its source was announced as; never blocks.
    /// Packets of a track or source not announced are dropped and counted.
    pub fn send(&self, kind: MediaKind, packet: RtpPacket) {
        let track = match kind {
            MediaKind::Video => &self.video,
            MediaKind::Audio => &self.audio,
        };
        let layer = track.as_ref().and_then(|track| {
            let layer = if track.layers.is_empty() {
                Some(0)
            } else {
                track.layers.iter().position(|ssrc| *ssrc == packet.ssrc)
            };
            Some((track, u8::try_from(layer?).ok()?))
        });
        match layer {
            Some((track, layer)) => track.publication.send(layer, packet),
            None => self.stats.count_unannounced_packet(),
        }
    }
}
