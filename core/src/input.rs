//! What a [`Room`](crate::Room) is fed: control changes, RTP and feedback, each an [`Input`].

use std::time::Duration;

use crate::ids::{ParticipantId, PublicationId, Ssrc, SubscriptionId};
use crate::packet::{Codec, MediaKind, RtpPacket};

/// Something that happened, fed to [`Room::handle_input`].
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A publisher's track became a publication of the room.
    PublicationAdded {
        /// The new publication's id (unique in the room).
        publication: PublicationId,
        /// Who publishes it.
        publisher: ParticipantId,
        /// Audio or video.
        kind: MediaKind,
        /// The codec its RTP carries.
        codec: Codec,
        /// RTP clock rate of the codec (90 000 for video, 48 000 for Opus).
        clock_rate: u32,
        /// Keep the packets since the last keyframe and start each new subscriber from
        /// them at once. For publishers that cannot be asked for a keyframe (RTMP encoders).
        cache_since_keyframe: bool,
        /// Simulcast spatial layers (1 without simulcast), lowest resolution first.
        layers: u8,
    },
    /// Also removes the publication's subscriptions.
    PublicationRemoved {
        /// The publication that ended.
        publication: PublicationId,
    },
    /// A participant subscribed to a publication.
    SubscriptionAdded {
        /// The new subscription's id (unique in the room).
        subscription: SubscriptionId,
        /// Who receives it.
        subscriber: ParticipantId,
        /// What it receives.
        publication: PublicationId,
        /// The SSRC negotiated towards the subscriber.
        ssrc: Ssrc,
        /// The payload type negotiated towards the subscriber.
        payload_type: u8,
        /// The layer the subscriber asked for before its subscription started (spatial, and
        /// temporal if given), as [`Input::SetPreferredLayer`] sets it: applied before the
        /// first packet, so a capped subscriber starts on its own layer.
        preferred: Option<(u8, Option<u8>)>,
        /// Created paused ([`Input::SetPaused`]): nothing is forwarded, not even a cached
        /// keyframe, until it is resumed.
        paused: bool,
    },
    /// Moves a subscription to another publication of its kind (`Some`), or parks it
    /// (`None`: it forwards nothing and outlives the end of the publication it had) until it is
    /// moved again. It keeps its SSRC, payload type and numbering: the subscriber sees its
    /// stream go on from the new publication's next start point (a keyframe for video), the
    /// sequence numbers following the last one sent and the timestamps advanced by the time in
    /// between, as across a publisher's new incarnation. (A WHEP viewer of a room follows the
    /// room's publications this way.)
    SubscriptionMoved {
        /// The subscription moved (live or parked).
        subscription: SubscriptionId,
        /// Where it goes; `None` parks it.
        publication: Option<PublicationId>,
    },
    /// A subscription ended.
    SubscriptionRemoved {
        /// The subscription that ended.
        subscription: SubscriptionId,
    },
    /// Removes all the participant's publications (with their subscriptions) and all its
    /// subscriptions.
    ParticipantLeft {
        /// The participant that left.
        participant: ParticipantId,
    },
    /// One RTP packet received from a publication's publisher, on simulcast `layer`
    /// (0 without simulcast).
    Rtp {
        /// The publication the packet belongs to.
        publication: PublicationId,
        /// Its simulcast layer (0 without simulcast).
        layer: u8,
        /// The packet as received.
        packet: RtpPacket,
    },
    /// The subscriber wants at most this spatial layer and, if given, at most this temporal
    /// layer (`None`: all of them).
    SetPreferredLayer {
        /// The subscription it applies to.
        subscription: SubscriptionId,
        /// The highest spatial layer wanted.
        spatial: u8,
        /// The highest temporal layer wanted (`None`: all of them).
        temporal: Option<u8>,
    },
    /// The publication is muted (nothing forwarded to any subscriber, no layer needed, not
    /// an active speaker) or unmuted (video restarts at a keyframe).
    SetMuted {
        /// The publication it applies to.
        publication: PublicationId,
        /// Muted (true) or unmuted (false).
        muted: bool,
    },
    /// The subscriber pauses (nothing forwarded, no layer needed) or resumes a subscription.
    SetPaused {
        /// The subscription it applies to.
        subscription: SubscriptionId,
        /// Paused (true) or resumed (false).
        paused: bool,
    },
    /// A subscriber's NACK named this many lost packets of a subscription: heavy loss steps
    /// its video down a layer at once, before the bandwidth estimate reacts.
    Nacked {
        /// The subscription the NACK was about.
        subscription: SubscriptionId,
        /// How many lost packets it named.
        packets: u32,
    },
    /// The estimated downlink bandwidth of a subscriber's connection.
    Bandwidth {
        /// Whose downlink the estimate is for.
        subscriber: ParticipantId,
        /// The estimate.
        bits_per_second: u64,
    },
    /// A subscriber's downlink holds a standing queue and delivers this much: its video
    /// goes at once to what that rate carries, before the bandwidth estimate reacts.
    Congested {
        /// Whose downlink is congested.
        subscriber: ParticipantId,
        /// What the path delivered while the queue stood.
        delivered_bits_per_second: u64,
    },
    /// A subscriber's own estimate of its downlink (REMB), from a client without transport-wide
    /// feedback. A REMB never exceeds ~1.5× what the client receives, so as an estimate it
    /// would keep the subscriber where it is; it is read as a signal instead (see `on_remb`).
    Remb {
        /// Whose client sent the REMB.
        subscriber: ParticipantId,
        /// The REMB's bitrate.
        bits_per_second: u64,
    },
    /// The round trip to a subscriber without transport-wide feedback, from a receiver report
    /// that echoes one of our sender reports. A rise above the recent smallest one is a queue
    /// on its path, seen before its REMB falls (see `on_round_trip`).
    RoundTrip {
        /// Whose client the round trip is to.
        subscriber: ParticipantId,
        /// The round trip measured.
        round_trip: Duration,
    },
    /// A probe of a subscriber's path built a queue while its media ran at this rate: the
    /// upgrade it tested is off, and what it receives now is all its path is trusted with
    /// for the congestion hold (8 s).
    ProbeFailed {
        /// Whose path was probed.
        subscriber: ParticipantId,
        /// What the media ran at during the probe.
        bits_per_second: u64,
    },
    /// Media of a publication's simulcast `layer` was discarded before it reached the room (it
    /// waited in a queue past the freshness bound): for video the room asks the publisher for
    /// a keyframe (throttled like subscribers' requests), so subscribers recover from a fresh
    /// picture instead of decoding around the hole.
    MediaDropped {
        /// The publication whose media was discarded.
        publication: PublicationId,
        /// Its simulcast layer (0 without simulcast).
        layer: u8,
    },
    /// A subscriber sent PLI or FIR.
    KeyframeRequested {
        /// The subscription whose subscriber asked.
        subscription: SubscriptionId,
    },
}

/// A control input referenced an id the room does not know, or re-used one.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("unknown publication {0}")]
    /// The publication id is not in the room.
    UnknownPublication(PublicationId),
    #[error("unknown subscription {0}")]
    /// The subscription id is not in the room.
    UnknownSubscription(SubscriptionId),
    #[error("duplicate publication {0}")]
    /// The publication id is already in use.
    DuplicatePublication(PublicationId),
    #[error("duplicate subscription {0}")]
    /// The subscription id is already in use.
    DuplicateSubscription(SubscriptionId),
    #[error("subscription {subscription} cannot move to publication {publication}: another kind")]
    /// A subscription can only move to a publication of its own kind.
    KindMismatch {
        /// The subscription asked to move.
        subscription: SubscriptionId,
        /// The publication of the other kind.
        publication: PublicationId,
    },
}
