//! What a [`Room`](crate::Room) asks its owner to do, each an [`Output`].

use std::time::Duration;

use crate::ids::{ParticipantId, PublicationId, Ssrc, SubscriptionId};
use crate::layer::Layer;
use crate::packet::RtpPacket;

/// Something the owner of a [`Room`] must do, taken from [`Room::poll_output`].
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send `packet` to `subscriber` on `subscription`. The header is already rewritten
    /// for this subscription; the payload `Bytes` is shared with the other subscribers.
    Forward {
        /// The subscription the packet is for.
        subscription: SubscriptionId,
        /// Who receives it.
        subscriber: ParticipantId,
        /// The packet, header rewritten for the subscription.
        packet: RtpPacket,
    },
    /// Send a PLI to the publisher; `ssrc` is the media SSRC of the layer that needs one.
    RequestKeyframe {
        /// The publication that needs a keyframe.
        publication: PublicationId,
        /// Who publishes it (where the PLI goes).
        publisher: ParticipantId,
        /// The media SSRC of the layer that needs one.
        ssrc: Ssrc,
    },
    /// Tell the subscriber its layers changed: `current` is what it receives, `target` what
    /// it is being moved to (spatial layers, and the temporal layer within them; a stream
    /// without temporal layers reports the top one, 2, as "all").
    LayersChanged {
        /// The subscription whose layers changed.
        subscription: SubscriptionId,
        /// Who receives it.
        subscriber: ParticipantId,
        /// The layer forwarded; `None` before the first one starts.
        current: Option<Layer>,
        /// The layer being switched to (or kept).
        target: Layer,
        /// Why it changed.
        reason: LayerChangeReason,
    },
    /// Before moving `subscriber` up, send `bits_per_second` more than its media for
    /// `duration` to see whether its path carries that (a standing queue stops the probe and
    /// arrives as [`Input::Congested`], which cancels the upgrade).
    Probe {
        /// Whose path to probe.
        subscriber: ParticipantId,
        /// How much to send on top of the media.
        bits_per_second: u64,
        /// For how long.
        duration: Duration,
    },
    /// `subscriber`'s decoder restarts at `sequence_number` of `ssrc` (the keyframe of a new
    /// layer or source): it will never show a packet sent before it, so repairing those
    /// (a NACK storm for the layer a congested path was losing) would only delay the keyframe
    /// on the same path.
    RepairHorizon {
        /// The subscription whose decoder restarts.
        subscription: SubscriptionId,
        /// Who receives it.
        subscriber: ParticipantId,
        /// The SSRC the subscriber receives the subscription on.
        ssrc: Ssrc,
        /// The first output sequence number after the restart.
        sequence_number: u16,
    },
    /// `subscriber`'s path was just found congested (by any signal, a failed probe included):
    /// while its queue drains, send it nothing it can do without (no repeated retransmissions,
    /// no probe).
    PathCongested {
        /// Whose path.
        subscriber: ParticipantId,
    },
    /// Dynacast: tell the publisher which simulcast layers anyone needs (by index).
    PublisherLayers {
        /// The simulcast publication.
        publication: PublicationId,
        /// Who publishes it (where the layer change goes).
        publisher: ParticipantId,
        /// Whether each layer, lowest first, is needed by anyone.
        active: Vec<bool>,
    },
    /// Tell everyone in the room who is speaking: participants loudest first, each with its
    /// level (0.0..=1.0, linear amplitude as WebRTC's `audioLevel`: 1.0 = 0 dBov). Emitted only
    /// when the ordered list changes; an empty list once nobody speaks any more.
    ActiveSpeakers {
        /// Who speaks, loudest first, with their levels.
        speakers: Vec<(ParticipantId, f32)>,
    },
    /// Tell everyone in the room that a publication stopped sending media (no packet for the
    /// room's `publication_stall_timeout`): its publisher vanished or its source went away.
    /// The publication stays; [`Output::PublicationResumed`] follows when media returns.
    PublicationStalled {
        /// The silent publication.
        publication: PublicationId,
        /// Who publishes it.
        publisher: ParticipantId,
    },
    /// Tell everyone in the room that a stalled publication sends media again.
    PublicationResumed {
        /// The publication whose media returned.
        publication: PublicationId,
        /// Who publishes it.
        publisher: ParticipantId,
    },
}

/// Why a subscription's layer target or current layer changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerChangeReason {
    /// The subscriber asked for a different maximum.
    Requested,
    /// The subscriber's bandwidth estimate moved the cap.
    Bandwidth,
    /// The layer stopped (or started) arriving from the publisher.
    LayerUnavailable,
    /// A switch to the target completed on its keyframe.
    Switched,
}
