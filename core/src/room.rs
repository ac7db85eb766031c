//! The media routing of one room, driven as a sans-IO state machine.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tracing::debug;

use super::downlink::{Downlink, Media};
use super::ids::{ParticipantId, PublicationId, Ssrc, SubscriptionId};
use super::packet::{Codec, DropReason, MediaKind, RtpPacket};
use super::publication::Publication;
use super::random::SplitMix64;
use super::speakers::SpeakerDetector;
use super::subscription::Subscription;

pub use super::stats::{DropCounts, PublicationStats, RoomStats, SubscriptionStats};

/// Configuration of a [`Room`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    /// At most one keyframe request per publication goes upstream per interval.
    pub keyframe_request_interval: Duration,
    /// First output sequence number of every subscription; `None` picks a random one
    /// per subscription (RFC 3550 §5.1). Tests pass `Some` to get predictable numbers.
    pub initial_output_sequence: Option<u16>,
    /// Seed of the room's random numbers (initial sequence numbers). The core reads no
    /// entropy of its own: the runtime passes a random seed, tests a fixed one.
    pub random_seed: u64,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            keyframe_request_interval: Duration::from_millis(500),
            initial_output_sequence: None,
            random_seed: 0,
        }
    }
}

impl RoomConfig {
    /// Checks the values a deployment could get wrong; `Room::new` trusts its config.
    pub fn validate(&self) -> Result<(), RoomConfigError> {
        let interval = self.keyframe_request_interval;
        if interval.is_zero() || interval > MAX_KEYFRAME_REQUEST_INTERVAL {
            return Err(RoomConfigError::KeyframeRequestInterval(interval));
        }
        Ok(())
    }
}

/// Longer than this, a subscriber whose first request was lost stays frozen too long.
const MAX_KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(10);

/// An invalid [`RoomConfig`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomConfigError {
    /// Zero would forward every PLI upstream (a keyframe storm); too long freezes video.
    #[error("keyframe request interval {0:?} must be above zero and at most 10 s")]
    KeyframeRequestInterval(Duration),
}

/// Something that happened, fed to [`Room::handle_input`].
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    PublicationAdded {
        publication: PublicationId,
        publisher: ParticipantId,
        kind: MediaKind,
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
        publication: PublicationId,
    },
    SubscriptionAdded {
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        publication: PublicationId,
        /// The SSRC negotiated towards the subscriber.
        ssrc: Ssrc,
        /// The payload type negotiated towards the subscriber.
        payload_type: u8,
    },
    SubscriptionRemoved {
        subscription: SubscriptionId,
    },
    /// Removes all the participant's publications (with their subscriptions) and all its
    /// subscriptions.
    ParticipantLeft {
        participant: ParticipantId,
    },
    /// One RTP packet received from a publication's publisher, on simulcast `layer`
    /// (0 without simulcast).
    Rtp {
        publication: PublicationId,
        layer: u8,
        packet: RtpPacket,
    },
    /// The subscriber wants at most this spatial layer and, if given, at most this temporal
    /// layer (`None`: all of them).
    SetPreferredLayer {
        subscription: SubscriptionId,
        spatial: u8,
        temporal: Option<u8>,
    },
    /// The subscriber pauses (nothing forwarded, no layer needed) or resumes a subscription.
    SetPaused {
        subscription: SubscriptionId,
        paused: bool,
    },
    /// A subscriber's NACK named this many lost packets of a subscription: heavy loss steps
    /// its video down a layer at once, before the bandwidth estimate reacts.
    Nacked {
        subscription: SubscriptionId,
        packets: u32,
    },
    /// The estimated downlink bandwidth of a subscriber's connection.
    Bandwidth {
        subscriber: ParticipantId,
        bits_per_second: u64,
    },
    /// A subscriber's downlink holds a standing queue and delivers this much: its video
    /// goes at once to what that rate carries, before the bandwidth estimate reacts.
    Congested {
        subscriber: ParticipantId,
        delivered_bits_per_second: u64,
    },
    /// A subscriber's own estimate of its downlink (REMB), from a client without transport-wide
    /// feedback. A REMB never exceeds ~1.5× what the client receives, so as an estimate it
    /// would keep the subscriber where it is; it is read as a signal instead (see `on_remb`).
    Remb {
        subscriber: ParticipantId,
        bits_per_second: u64,
    },
    /// The round trip to a subscriber without transport-wide feedback, from a receiver report
    /// that echoes one of our sender reports. A rise above the recent smallest one is a queue
    /// on its path, seen before its REMB falls (see `on_round_trip`).
    RoundTrip {
        subscriber: ParticipantId,
        round_trip: Duration,
    },
    /// A probe of a subscriber's path built a queue while its media ran at this rate: the
    /// upgrade it tested is off, and what it receives now is all its path is trusted with
    /// for the congestion hold (8 s).
    ProbeFailed {
        subscriber: ParticipantId,
        bits_per_second: u64,
    },
    /// A subscriber sent PLI or FIR.
    KeyframeRequested {
        subscription: SubscriptionId,
    },
}

/// Something the owner of a [`Room`] must do, taken from [`Room::poll_output`].
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send `packet` to `subscriber` on `subscription`. The header is already rewritten
    /// for this subscription; the payload `Bytes` is shared with the other subscribers.
    Forward {
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        packet: RtpPacket,
    },
    /// Send a PLI to the publisher; `ssrc` is the media SSRC of the layer that needs one.
    RequestKeyframe {
        publication: PublicationId,
        publisher: ParticipantId,
        ssrc: Ssrc,
    },
    /// Tell the subscriber its layers changed: `current` is what it receives, `target` what
    /// it is being moved to (spatial layers, and the temporal layer within them; a stream
    /// without temporal layers reports the top one, 2, as "all").
    LayersChanged {
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        current: Option<u8>,
        target: u8,
        /// The temporal layer forwarded; `None` exactly when `current` is.
        current_temporal: Option<u8>,
        target_temporal: u8,
        reason: LayerReason,
    },
    /// Before moving `subscriber` up, send `bits_per_second` more than its media for
    /// `duration` to see whether its path carries that (a standing queue stops the probe and
    /// arrives as [`Input::Congested`], which cancels the upgrade).
    Probe {
        subscriber: ParticipantId,
        bits_per_second: u64,
        duration: Duration,
    },
    /// `subscriber`'s decoder restarts at `sequence_number` of `ssrc` (the keyframe of a new
    /// layer or source): it will never show a packet sent before it, so repairing those
    /// (a NACK storm for the layer a congested path was losing) would only delay the keyframe
    /// on the same path.
    RepairHorizon {
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        ssrc: Ssrc,
        sequence_number: u16,
    },
    /// `subscriber`'s path was just found congested (by any signal, a failed probe included):
    /// while its queue drains, send it nothing it can do without (no repeated retransmissions,
    /// no probe).
    PathCongested { subscriber: ParticipantId },
    /// Dynacast: tell the publisher which simulcast layers anyone needs (by index).
    PublisherLayers {
        publication: PublicationId,
        publisher: ParticipantId,
        active: Vec<bool>,
    },
    /// Tell everyone in the room who is speaking: participants loudest first, each with its
    /// level (0.0..=1.0, linear amplitude as WebRTC's `audioLevel`: 1.0 = 0 dBov). Emitted only
    /// when the ordered list changes; an empty list once nobody speaks any more.
    ActiveSpeakers { speakers: Vec<(ParticipantId, f32)> },
}

/// Why a subscription's layer target or current layer changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerReason {
    /// The subscriber asked for a different maximum.
    Requested,
    /// The subscriber's bandwidth estimate moved the cap.
    Bandwidth,
    /// The layer stopped (or started) arriving from the publisher.
    LayerUnavailable,
    /// A switch to the target completed on its keyframe.
    Switched,
}

/// A control input referenced an id the room does not know, or re-used one.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("unknown publication {0}")]
    UnknownPublication(PublicationId),
    #[error("unknown subscription {0}")]
    UnknownSubscription(SubscriptionId),
    #[error("duplicate publication {0}")]
    DuplicatePublication(PublicationId),
    #[error("duplicate subscription {0}")]
    DuplicateSubscription(SubscriptionId),
}

/// The media routing of one room: which packets go to which subscriber, with which
/// header, and when to ask a publisher for a keyframe.
///
/// A `Room` does no IO and never reads the clock; one task owns it (`&mut`) and drives
/// it with this loop:
///
/// 1. [`handle_input`](Room::handle_input) for every event (a control change from
///    signaling, an RTP packet, a PLI/FIR from a subscriber), with the current time.
/// 2. Then drain [`poll_output`](Room::poll_output) until it returns `None`, sending
///    each [`Output`] (forwards to subscribers, PLIs to publishers). Outputs queue up
///    until drained, so drain after every input (or every batch of inputs).
/// 3. Then sleep until [`poll_timeout`](Room::poll_timeout) (or the next input, if it
///    is `None`), and when that time is reached call
///    [`handle_timeout`](Room::handle_timeout) and drain `poll_output` again.
///    Re-read `poll_timeout` after every `handle_input`/`handle_timeout`: inputs move it.
///
/// ```
/// use std::time::Instant;
/// use sluice_core::{Input, Output, Room, RoomConfig};
///
/// fn drive(room: &mut Room, input: Input) {
///     if let Err(err) = room.handle_input(Instant::now(), input) {
///         eprintln!("rejected control input: {err}");
///     }
///     while let Some(output) = room.poll_output() {
///         match output {
///             Output::Forward { subscriber, packet, .. } => { /* write packet to subscriber */ }
///             Output::RequestKeyframe { publisher, ssrc, .. } => { /* send PLI for ssrc */ }
///             Output::LayersChanged { subscriber, .. } => { /* tell the subscriber */ }
///             Output::PublisherLayers { publisher, active, .. } => { /* dynacast */ }
///             Output::ActiveSpeakers { speakers } => { /* tell everyone in the room */ }
///             Output::Probe { subscriber, bits_per_second, .. } => { /* probe its path */ }
///             Output::RepairHorizon { subscriber, ssrc, sequence_number, .. } => {
///                 /* ignore the subscriber's NACKs for earlier packets of ssrc */
///             }
///             Output::PathCongested { subscriber } => { /* stop probing, no extra copies */ }
///         }
///     }
///     // then: sleep until room.poll_timeout(), call room.handle_timeout(now), drain again
/// }
/// # drive(&mut Room::new(RoomConfig::default()), Input::ParticipantLeft { participant: sluice_core::ParticipantId(1) });
/// ```
#[derive(Debug)]
pub struct Room {
    config: RoomConfig,
    publications: HashMap<PublicationId, Publication>,
    /// Where each subscription lives (subscriptions are owned by their publication).
    subscription_index: HashMap<SubscriptionId, PublicationId>,
    outputs: VecDeque<Output>,
    stats: RoomStats,
    /// Each subscriber's bandwidth control, from its first subscription until it leaves.
    downlinks: HashMap<ParticipantId, Downlink>,
    speakers: SpeakerDetector,
    random: SplitMix64,
}

impl Room {
    pub fn new(config: RoomConfig) -> Self {
        Room {
            publications: HashMap::new(),
            subscription_index: HashMap::new(),
            outputs: VecDeque::new(),
            stats: RoomStats::default(),
            downlinks: HashMap::new(),
            speakers: SpeakerDetector::default(),
            random: SplitMix64::new(config.random_seed),
            config,
        }
    }

    /// Feeds one input; then drain [`poll_output`](Room::poll_output).
    ///
    /// Returns `Err` only for control inputs that reference unknown or duplicate ids
    /// (the room is left unchanged). Never for RTP: a packet that cannot be forwarded
    /// is a counted drop (see the stats methods).
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), CoreError> {
        match input {
            Input::Rtp {
                publication,
                layer,
                packet,
            } => {
                self.on_rtp(now, publication, layer, &packet);
                Ok(())
            }
            Input::SetPreferredLayer {
                subscription,
                spatial,
                temporal,
            } => {
                let publication = self
                    .subscription_index
                    .get(&subscription)
                    .and_then(|id| self.publications.get_mut(id))
                    .ok_or(CoreError::UnknownSubscription(subscription))?;
                if let Some(target) = publication.subscription_mut(subscription) {
                    target.set_max_layer(spatial);
                    target.set_max_temporal(temporal.unwrap_or(u8::MAX));
                }
                publication.retarget(
                    now,
                    Some(subscription),
                    LayerReason::Requested,
                    &mut self.outputs,
                );
                Ok(())
            }
            Input::SetPaused {
                subscription,
                paused,
            } => {
                let found = self
                    .subscription_index
                    .get(&subscription)
                    .and_then(|id| self.publications.get_mut(id))
                    .is_some_and(|publication| {
                        publication.set_paused(now, subscription, paused, &mut self.outputs)
                    });
                if found {
                    Ok(())
                } else {
                    Err(CoreError::UnknownSubscription(subscription))
                }
            }
            Input::Bandwidth {
                subscriber,
                bits_per_second,
            } => {
                self.with_downlink(subscriber, |d, media| {
                    d.on_bandwidth(now, media, bits_per_second);
                });
                Ok(())
            }
            Input::Congested {
                subscriber,
                delivered_bits_per_second,
            } => {
                self.with_downlink(subscriber, |d, media| {
                    d.on_congested(now, media, delivered_bits_per_second);
                });
                Ok(())
            }
            Input::ProbeFailed {
                subscriber,
                bits_per_second,
            } => {
                self.with_downlink(subscriber, |d, media| {
                    d.on_probe_failed(now, media, bits_per_second);
                });
                Ok(())
            }
            Input::Remb {
                subscriber,
                bits_per_second,
            } => {
                self.with_downlink(subscriber, |d, media| {
                    d.on_remb(now, media, bits_per_second);
                });
                Ok(())
            }
            Input::RoundTrip {
                subscriber,
                round_trip,
            } => {
                self.with_downlink(subscriber, |d, media| {
                    d.on_round_trip(now, media, round_trip);
                });
                Ok(())
            }
            Input::Nacked {
                subscription,
                packets,
            } => {
                let subscriber = self
                    .subscription_index
                    .get(&subscription)
                    .and_then(|id| self.publications.get(id))
                    .and_then(|p| p.subscription(subscription))
                    .map(|s| s.subscriber())
                    .ok_or(CoreError::UnknownSubscription(subscription))?;
                self.with_downlink(subscriber, |d, media| {
                    d.on_nacked(now, media, u64::from(packets));
                });
                Ok(())
            }
            Input::PublicationAdded {
                publication,
                publisher,
                kind,
                codec,
                clock_rate,
                cache_since_keyframe,
                layers,
            } => {
                if self.publications.contains_key(&publication) {
                    return Err(CoreError::DuplicatePublication(publication));
                }
                debug!(%publication, %publisher, ?kind, ?codec, "publication added");
                if kind == MediaKind::Audio {
                    self.speakers.add_publication(publication, publisher);
                }
                let interval = self.config.keyframe_request_interval;
                self.publications.insert(
                    publication,
                    Publication::new(
                        publication,
                        publisher,
                        kind,
                        codec,
                        clock_rate,
                        layers,
                        interval,
                    )
                    .with_keyframe_cache(cache_since_keyframe),
                );
                Ok(())
            }
            Input::PublicationRemoved { publication } => {
                if !self.publications.contains_key(&publication) {
                    return Err(CoreError::UnknownPublication(publication));
                }
                self.remove_publication(publication);
                Ok(())
            }
            Input::SubscriptionAdded {
                subscription,
                subscriber,
                publication,
                ssrc,
                payload_type,
            } => self.add_subscription(
                now,
                subscription,
                subscriber,
                publication,
                ssrc,
                payload_type,
            ),
            Input::SubscriptionRemoved { subscription } => {
                let publication = self
                    .subscription_index
                    .remove(&subscription)
                    .ok_or(CoreError::UnknownSubscription(subscription))?;
                if let Some(publication) = self.publications.get_mut(&publication) {
                    let subscriber = publication
                        .subscription(subscription)
                        .map(|s| s.subscriber());
                    publication.remove_subscription(now, subscription, &mut self.outputs);
                    if let Some(downlink) = subscriber.and_then(|id| self.downlinks.get_mut(&id)) {
                        downlink.remove_subscription(subscription);
                    }
                }
                debug!(%subscription, "subscription removed");
                Ok(())
            }
            Input::ParticipantLeft { participant } => {
                self.remove_participant(now, participant);
                Ok(())
            }
            Input::KeyframeRequested { subscription } => {
                let publication = self
                    .subscription_index
                    .get(&subscription)
                    .and_then(|id| self.publications.get_mut(id))
                    .ok_or(CoreError::UnknownSubscription(subscription))?;
                self.outputs
                    .extend(publication.subscriber_keyframe_request(now, subscription));
                Ok(())
            }
        }
    }

    /// The next thing to do, if any. Call repeatedly after each `handle_input` and
    /// `handle_timeout` until it returns `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Room::handle_timeout) must be called next (deferred
    /// keyframe requests, the next active speaker ranking while audio levels arrive); `None`
    /// means only a new input can create work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.publications
            .values()
            .filter_map(Publication::timeout)
            .chain(self.speakers.timeout())
            .min()
    }

    /// Does the work that was due at `now` (calling it early is harmless); then drain
    /// [`poll_output`](Room::poll_output).
    pub fn handle_timeout(&mut self, now: Instant) {
        for publication in self.publications.values_mut() {
            publication.handle_timeout(now, &mut self.outputs);
        }
        self.speakers.handle_timeout(now, &mut self.outputs);
    }

    pub fn subscription_stats(&self, id: SubscriptionId) -> Option<SubscriptionStats> {
        let publication = self.publications.get(self.subscription_index.get(&id)?)?;
        publication.subscription(id).map(|s| *s.stats())
    }

    pub fn publication_stats(&self, id: PublicationId) -> Option<PublicationStats> {
        self.publications.get(&id).map(Publication::stats)
    }

    /// Counters that belong to no publication (RTP for unknown publications).
    pub fn stats(&self) -> RoomStats {
        self.stats
    }

    /// What each layer of a publication costs up to each temporal layer (tests check the
    /// allocator against it).
    #[cfg(test)]
    pub(crate) fn temporal_bitrates(
        &mut self,
        publication: PublicationId,
        now: Instant,
    ) -> Option<Vec<[u64; super::temporal::TEMPORAL_LAYERS as usize]>> {
        self.publications
            .get_mut(&publication)
            .map(|p| p.temporal_bitrates(now))
    }

    pub fn publication_count(&self) -> usize {
        self.publications.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.subscription_index.len()
    }

    fn on_rtp(&mut self, now: Instant, publication: PublicationId, layer: u8, packet: &RtpPacket) {
        if let Some(level) = packet.audio_level {
            self.speakers.observe(now, publication, level);
        }
        match self.publications.get_mut(&publication) {
            Some(publication) => publication.handle_rtp(now, layer, packet, &mut self.outputs),
            None => {
                tracing::trace!(%publication, "rtp for unknown publication");
                self.stats.dropped.add(DropReason::UnknownPublication);
            }
        }
    }

    fn add_subscription(
        &mut self,
        now: Instant,
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        publication: PublicationId,
        ssrc: Ssrc,
        payload_type: u8,
    ) -> Result<(), CoreError> {
        if self.subscription_index.contains_key(&subscription) {
            return Err(CoreError::DuplicateSubscription(subscription));
        }
        let target = self
            .publications
            .get_mut(&publication)
            .ok_or(CoreError::UnknownPublication(publication))?;
        let initial_seq = self
            .config
            .initial_output_sequence
            .unwrap_or_else(|| self.random.next_u16());
        let new = Subscription::new(
            subscription,
            subscriber,
            ssrc,
            payload_type,
            target.kind(),
            initial_seq,
        );
        target.add_subscription(now, new, &mut self.outputs);
        self.subscription_index.insert(subscription, publication);
        self.downlinks
            .entry(subscriber)
            .or_insert_with(|| Downlink::new(subscriber))
            .add_subscription(publication, subscription);
        debug!(%subscription, %subscriber, %publication, "subscription added");
        if !target.replay_cached(now, subscription, &mut self.outputs) {
            // A new video subscriber can only start at a keyframe: ask for one on its target
            // layer now rather than wait for the encoder's next periodic keyframe.
            let layer = target.subscription(subscription).map_or(0, |s| s.target());
            self.outputs.extend(target.request_keyframe(now, layer));
        }
        Ok(())
    }

    /// Runs `f` on `subscriber`'s downlink, if it has one (a subscriber that never subscribed,
    /// or a late report after it left, has nothing to control).
    fn with_downlink(
        &mut self,
        subscriber: ParticipantId,
        f: impl FnOnce(&mut Downlink, &mut Media<'_>),
    ) {
        if let Some(downlink) = self.downlinks.get_mut(&subscriber) {
            let mut media = Media {
                publications: &mut self.publications,
                outputs: &mut self.outputs,
            };
            f(downlink, &mut media);
        }
    }

    fn remove_publication(&mut self, id: PublicationId) {
        self.speakers.remove_publication(id);
        if let Some(publication) = self.publications.remove(&id) {
            for subscription in &publication.subscriptions {
                self.subscription_index.remove(&subscription.id());
                if let Some(downlink) = self.downlinks.get_mut(&subscription.subscriber()) {
                    downlink.remove_publication(id);
                }
            }
            debug!(publication = %id, subscriptions = publication.subscriptions.len(), "publication removed");
        }
    }

    fn remove_participant(&mut self, now: Instant, participant: ParticipantId) {
        self.downlinks.remove(&participant);
        let owned: Vec<PublicationId> = self
            .publications
            .values()
            .filter(|p| p.publisher == participant)
            .map(|p| p.id)
            .collect();
        for id in owned {
            self.remove_publication(id);
        }
        for publication in self.publications.values_mut() {
            let theirs: Vec<SubscriptionId> = publication
                .subscriptions
                .iter()
                .filter(|s| s.subscriber() == participant)
                .map(|s| s.id())
                .collect();
            for id in theirs {
                self.subscription_index.remove(&id);
                publication.remove_subscription(now, id, &mut self.outputs);
            }
        }
        debug!(%participant, "participant left");
    }
}
