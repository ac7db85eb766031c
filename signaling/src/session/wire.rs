//! Mapping between the media plane's runtime types (`sluice_sfu`) and the wire types of
//! [`crate::protocol`]: `From` impls both ways, and [`event_message`] for participant events.

use sluice_sfu::core::{
    Layer as CoreLayer, LayerChangeReason as CoreLayerChangeReason, MediaKind as CoreMediaKind,
};
use sluice_sfu::runtime::{
    ParticipantEvent, ParticipantInfo as CoreParticipantInfo,
    PublicationInfo as CorePublicationInfo, RoomEvent, TrackRequest,
    TrackSource as CoreTrackSource,
};
use sluice_sfu::shard::DataRejection as CoreDataRejection;
use sluice_sfu::transport::{IceCandidate as CoreIceCandidate, PeerRole as CorePeerRole};

use crate::protocol::{
    DataRejection, IceCandidate, Layer, LayerActivity, LayerChangeReason, MediaKind,
    ParticipantInfo, PeerRole, PublicationInfo, ServerMessage, SpeakerInfo, SubscriptionEndReason,
    TrackInfo, TrackSource,
};

/// The message a participant event becomes for the client; `None` for the events that are
/// the participant's own business (a probe never leaves its task).
pub(super) fn event_message(event: ParticipantEvent) -> Option<ServerMessage> {
    Some(match event {
        ParticipantEvent::Offer(sdp) => ServerMessage::Offer { sdp },
        ParticipantEvent::Candidate(role, candidate) => ServerMessage::Trickle {
            target: role.into(),
            candidate: candidate.into(),
        },
        ParticipantEvent::Room(RoomEvent::ParticipantJoined(info)) => {
            ServerMessage::ParticipantJoined {
                participant: info.into(),
            }
        }
        ParticipantEvent::Room(RoomEvent::ParticipantUpdated(info)) => {
            ServerMessage::ParticipantUpdated {
                participant: info.into(),
            }
        }
        ParticipantEvent::Room(RoomEvent::ParticipantLeft(id)) => ServerMessage::ParticipantLeft {
            participant_id: id.to_string(),
        },
        ParticipantEvent::Room(RoomEvent::PublicationAdded(info)) => {
            ServerMessage::PublicationAdded {
                publication: info.into(),
            }
        }
        ParticipantEvent::Room(RoomEvent::PublicationMuted {
            publication,
            participant,
            muted,
        }) => {
            let (publication_id, participant_id) =
                (publication.to_string(), participant.to_string());
            if muted {
                ServerMessage::PublicationMuted {
                    publication_id,
                    participant_id,
                }
            } else {
                ServerMessage::PublicationUnmuted {
                    publication_id,
                    participant_id,
                }
            }
        }
        ParticipantEvent::Room(RoomEvent::PublicationRemoved {
            publication,
            participant,
        }) => ServerMessage::PublicationRemoved {
            publication_id: publication.to_string(),
            participant_id: participant.to_string(),
        },
        ParticipantEvent::Room(RoomEvent::LayersChanged(change)) => ServerMessage::LayersChanged {
            subscription_id: change.subscription.to_string(),
            current: change.current.map(Layer::from),
            target: change.target.into(),
            reason: change.reason.into(),
        },
        ParticipantEvent::Room(RoomEvent::PublisherLayers {
            publication,
            layers,
        }) => ServerMessage::PublisherLayers {
            publication_id: publication.to_string(),
            layers: layers
                .into_iter()
                .map(|(rid, active)| LayerActivity { rid, active })
                .collect(),
        },
        ParticipantEvent::Room(RoomEvent::ActiveSpeakers(speakers)) => {
            ServerMessage::ActiveSpeakers {
                speakers: speakers
                    .into_iter()
                    .map(|(participant, level)| SpeakerInfo {
                        participant_id: participant.to_string(),
                        // Four decimals tell -70 dBov from silence; more is noise on the wire.
                        level: (f64::from(level) * 10_000.0).round() / 10_000.0,
                    })
                    .collect(),
            }
        }
        ParticipantEvent::Room(RoomEvent::PublicationStalled {
            publication,
            participant,
        }) => ServerMessage::PublicationStalled {
            publication_id: publication.to_string(),
            participant_id: participant.to_string(),
        },
        ParticipantEvent::Room(RoomEvent::PublicationResumed {
            publication,
            participant,
        }) => ServerMessage::PublicationResumed {
            publication_id: publication.to_string(),
            participant_id: participant.to_string(),
        },
        ParticipantEvent::SubscriptionRevoked(subscription) => ServerMessage::SubscriptionEnded {
            subscription_id: subscription.to_string(),
            reason: SubscriptionEndReason::PermissionRevoked,
        },
        ParticipantEvent::DataRejected { reason, dropped } => ServerMessage::DataRejected {
            reason: match reason {
                CoreDataRejection::TooLarge => DataRejection::TooLarge,
                CoreDataRejection::RateLimited => DataRejection::RateLimited,
                CoreDataRejection::Invalid => DataRejection::Invalid,
            },
            dropped,
        },
        // The client sees its own connections' states.
        ParticipantEvent::Connection(..) => return None,
    })
}

impl From<CoreParticipantInfo> for ParticipantInfo {
    fn from(info: CoreParticipantInfo) -> Self {
        Self {
            participant_id: info.id.to_string(),
            identity: info.identity,
            name: info.name,
            metadata: info.metadata,
        }
    }
}

impl From<CorePublicationInfo> for PublicationInfo {
    fn from(info: CorePublicationInfo) -> Self {
        Self {
            publication_id: info.id.to_string(),
            participant_id: info.participant.to_string(),
            kind: info.kind.into(),
            source: info.source.into(),
            name: info.name,
            codec: info.codec,
            rids: (!info.rids.is_empty()).then_some(info.rids),
            muted: info.muted.then_some(true),
        }
    }
}

impl From<TrackInfo> for TrackRequest {
    fn from(track: TrackInfo) -> Self {
        Self {
            mid: track.mid,
            kind: track.kind.into(),
            source: track.source.into(),
            name: track.name,
            rids: track.rids.unwrap_or_default(),
        }
    }
}

impl From<CoreMediaKind> for MediaKind {
    fn from(kind: CoreMediaKind) -> Self {
        match kind {
            CoreMediaKind::Audio => Self::Audio,
            CoreMediaKind::Video => Self::Video,
        }
    }
}

impl From<MediaKind> for CoreMediaKind {
    fn from(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Audio => Self::Audio,
            MediaKind::Video => Self::Video,
        }
    }
}

impl From<CoreTrackSource> for TrackSource {
    fn from(source: CoreTrackSource) -> Self {
        match source {
            CoreTrackSource::Camera => Self::Camera,
            CoreTrackSource::Microphone => Self::Microphone,
            CoreTrackSource::Screen => Self::Screen,
            CoreTrackSource::Rtmp => Self::Rtmp,
            CoreTrackSource::Other => Self::Other,
        }
    }
}

impl From<TrackSource> for CoreTrackSource {
    fn from(source: TrackSource) -> Self {
        match source {
            TrackSource::Camera => Self::Camera,
            TrackSource::Microphone => Self::Microphone,
            TrackSource::Screen => Self::Screen,
            TrackSource::Rtmp => Self::Rtmp,
            TrackSource::Other => Self::Other,
        }
    }
}

impl From<CoreLayer> for Layer {
    fn from(layer: CoreLayer) -> Self {
        Self {
            spatial: layer.spatial,
            temporal: layer.temporal,
        }
    }
}

impl From<CorePeerRole> for PeerRole {
    fn from(role: CorePeerRole) -> Self {
        match role {
            CorePeerRole::Publisher => Self::Publisher,
            CorePeerRole::Subscriber => Self::Subscriber,
        }
    }
}

impl From<PeerRole> for CorePeerRole {
    fn from(role: PeerRole) -> Self {
        match role {
            PeerRole::Publisher => Self::Publisher,
            PeerRole::Subscriber => Self::Subscriber,
        }
    }
}

impl From<CoreIceCandidate> for IceCandidate {
    fn from(candidate: CoreIceCandidate) -> Self {
        Self {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_m_line_index: candidate.sdp_m_line_index,
            username_fragment: candidate.username_fragment,
        }
    }
}

impl From<IceCandidate> for CoreIceCandidate {
    fn from(candidate: IceCandidate) -> Self {
        Self {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_m_line_index: candidate.sdp_m_line_index,
            username_fragment: candidate.username_fragment,
        }
    }
}

impl From<CoreLayerChangeReason> for LayerChangeReason {
    fn from(reason: CoreLayerChangeReason) -> Self {
        match reason {
            CoreLayerChangeReason::Requested => Self::Requested,
            CoreLayerChangeReason::Bandwidth => Self::Bandwidth,
            CoreLayerChangeReason::LayerUnavailable => Self::LayerUnavailable,
            CoreLayerChangeReason::Switched => Self::Switched,
        }
    }
}
