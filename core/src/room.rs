//! The media routing of one room, driven as a sans-IO state machine.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use tracing::debug;

use super::downlink::{Downlink, Media};
use super::ids::{ParticipantId, PublicationId, Ssrc, SubscriptionId};
use super::liveness::Liveness;
use super::packet::{DropReason, MediaKind, RtpPacket};
use super::publication::Publication;
use super::random::SplitMix64;
use super::speakers::SpeakerDetector;
use super::subscription::Subscription;

pub use super::config::{RoomConfig, RoomConfigError};
pub use super::input::{CoreError, Input};
pub use super::output::{LayerChangeReason, Output};
pub use super::stats::{DropCounts, PublicationStats, RoomStats, SubscriptionStats};

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
///             Output::PublicationStalled { publication, .. }
///             | Output::PublicationResumed { publication, .. } => { /* tell everyone */ }
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
    /// Subscriptions parked by [`Input::SubscriptionMoved`] (on no publication).
    parked: HashMap<SubscriptionId, Subscription>,
    outputs: VecDeque<Output>,
    stats: RoomStats,
    /// Each subscriber's bandwidth control, from its first subscription until it leaves.
    downlinks: HashMap<ParticipantId, Downlink>,
    speakers: SpeakerDetector,
    liveness: Liveness,
    random: SplitMix64,
}

impl Room {
    /// A room with no publications, configured by `config` (see [`RoomConfig::validate`]).
    pub fn new(config: RoomConfig) -> Self {
        Room {
            publications: HashMap::new(),
            subscription_index: HashMap::new(),
            parked: HashMap::new(),
            outputs: VecDeque::new(),
            stats: RoomStats::default(),
            downlinks: HashMap::new(),
            speakers: SpeakerDetector::default(),
            liveness: Liveness::new(config.publication_stall_timeout),
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
                    LayerChangeReason::Requested,
                    &mut self.outputs,
                );
                Ok(())
            }
            Input::SetMuted { publication, muted } => {
                let target = self
                    .publications
                    .get_mut(&publication)
                    .ok_or(CoreError::UnknownPublication(publication))?;
                target.set_muted(now, muted, &mut self.outputs);
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
                preferred,
                paused,
            } => self.add_subscription(
                now,
                subscription,
                (subscriber, publication),
                (ssrc, payload_type),
                preferred,
                paused,
            ),
            Input::SubscriptionMoved {
                subscription,
                publication,
            } => self.move_subscription(now, subscription, publication),
            Input::SubscriptionRemoved { subscription } => {
                if self.parked.remove(&subscription).is_some() {
                    debug!(%subscription, "parked subscription removed");
                    return Ok(());
                }
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
            Input::MediaDropped { publication, layer } => {
                let publication = self
                    .publications
                    .get_mut(&publication)
                    .ok_or(CoreError::UnknownPublication(publication))?;
                self.outputs
                    .extend(publication.request_keyframe(now, layer));
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
            .chain(self.liveness.timeout())
            .min()
    }

    /// Does the work that was due at `now` (calling it early is harmless); then drain
    /// [`poll_output`](Room::poll_output).
    pub fn handle_timeout(&mut self, now: Instant) {
        for publication in self.publications.values_mut() {
            publication.handle_timeout(now, &mut self.outputs);
        }
        self.speakers.handle_timeout(now, &mut self.outputs);
        self.liveness.handle_timeout(now, &mut self.outputs);
    }

    /// The publications stalled now (see [`Output::PublicationStalled`]), for a participant
    /// that joins while they are.
    pub fn stalled_publications(&self) -> Vec<PublicationId> {
        let mut stalled: Vec<PublicationId> = self.liveness.stalled().collect();
        stalled.sort_unstable_by_key(|id| id.0);
        stalled
    }

    /// Counters of one subscription, if it is in the room.
    pub fn subscription_stats(&self, id: SubscriptionId) -> Option<SubscriptionStats> {
        if let Some(parked) = self.parked.get(&id) {
            return Some(*parked.stats());
        }
        let publication = self.publications.get(self.subscription_index.get(&id)?)?;
        publication.subscription(id).map(|s| *s.stats())
    }

    /// Counters of one publication, if it is in the room.
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

    /// How many publications the room holds.
    pub fn publication_count(&self) -> usize {
        self.publications.len()
    }

    /// How many subscriptions the room holds (parked ones included).
    pub fn subscription_count(&self) -> usize {
        self.subscription_index.len() + self.parked.len()
    }

    fn on_rtp(&mut self, now: Instant, publication: PublicationId, layer: u8, packet: &RtpPacket) {
        match self.publications.get_mut(&publication) {
            Some(publication) => {
                // The speakers know only the room's publications: one lookup serves both.
                if let Some(level) = packet.audio_level.filter(|_| !publication.muted()) {
                    self.speakers.observe(now, publication.id, level);
                }
                self.liveness.observe(
                    now,
                    publication.id,
                    publication.publisher,
                    &mut self.outputs,
                );
                publication.handle_rtp(now, layer, packet, &mut self.outputs);
            }
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
        (subscriber, publication): (ParticipantId, PublicationId),
        (ssrc, payload_type): (Ssrc, u8),
        preferred: Option<(u8, Option<u8>)>,
        paused: bool,
    ) -> Result<(), CoreError> {
        if self.subscription_index.contains_key(&subscription)
            || self.parked.contains_key(&subscription)
        {
            return Err(CoreError::DuplicateSubscription(subscription));
        }
        let kind = self
            .publications
            .get(&publication)
            .ok_or(CoreError::UnknownPublication(publication))?
            .kind();
        let initial_seq = self
            .config
            .initial_output_sequence
            .unwrap_or_else(|| self.random.next_u16());
        let mut new = Subscription::new(
            subscription,
            subscriber,
            ssrc,
            payload_type,
            kind,
            initial_seq,
        );
        if let Some((spatial, temporal)) = preferred {
            new.set_max_layer(spatial);
            new.set_max_temporal(temporal.unwrap_or(u8::MAX));
        }
        if paused {
            new.set_paused(true);
        }
        self.attach(now, new, publication);
        debug!(%subscription, %subscriber, %publication, "subscription added");
        Ok(())
    }

    /// See [`Input::SubscriptionMoved`]. The room is left unchanged on error.
    fn move_subscription(
        &mut self,
        now: Instant,
        subscription: SubscriptionId,
        to: Option<PublicationId>,
    ) -> Result<(), CoreError> {
        let from = self.subscription_index.get(&subscription).copied();
        let kind = match (from, self.parked.get(&subscription)) {
            (Some(from), _) => self.publications.get(&from).map(Publication::kind),
            (None, Some(parked)) => Some(parked.kind()),
            (None, None) => None,
        }
        .ok_or(CoreError::UnknownSubscription(subscription))?;
        if let Some(to) = to {
            let target = self
                .publications
                .get(&to)
                .ok_or(CoreError::UnknownPublication(to))?;
            if target.kind() != kind {
                return Err(CoreError::KindMismatch {
                    subscription,
                    publication: to,
                });
            }
            if from == Some(to) {
                return Ok(());
            }
        }
        let taken = match from {
            Some(from) => {
                self.subscription_index.remove(&subscription);
                let taken = self.publications.get_mut(&from).and_then(|publication| {
                    publication.remove_subscription(now, subscription, &mut self.outputs)
                });
                if let Some(downlink) = taken
                    .as_ref()
                    .and_then(|s| self.downlinks.get_mut(&s.subscriber()))
                {
                    downlink.remove_subscription(subscription);
                }
                taken
            }
            None => self.parked.remove(&subscription),
        };
        let mut taken = taken.ok_or(CoreError::UnknownSubscription(subscription))?;
        taken.detach();
        debug!(%subscription, ?from, ?to, "subscription moved");
        match to {
            Some(to) => self.attach(now, taken, to),
            None => {
                self.parked.insert(subscription, taken);
            }
        }
        Ok(())
    }

    /// Adds `subscription` to `publication` (which exists) and starts it: from the keyframe
    /// cache when there is one, else with a keyframe request.
    fn attach(&mut self, now: Instant, subscription: Subscription, publication: PublicationId) {
        let Some(target) = self.publications.get_mut(&publication) else {
            return;
        };
        let (id, subscriber) = (subscription.id(), subscription.subscriber());
        target.add_subscription(now, subscription, &mut self.outputs);
        self.subscription_index.insert(id, publication);
        self.downlinks
            .entry(subscriber)
            .or_insert_with(|| Downlink::new(subscriber))
            .add_subscription(publication, id);
        let subscription = id;
        if !target.replay_cached(now, subscription, &mut self.outputs) {
            // A new video subscriber can only start at a keyframe: ask for one on its target
            // layer now rather than wait for the encoder's next periodic keyframe.
            let layer = target.subscription(subscription).map_or(0, |s| s.target());
            self.outputs.extend(target.request_keyframe(now, layer));
        }
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
        self.liveness.remove(id);
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
        self.parked.retain(|_, s| s.subscriber() != participant);
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
