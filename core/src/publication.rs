//! One publication: its layers (one, or three for simulcast), its subscriptions, and the
//! decisions that span them — which layer each subscription targets, when to ask the
//! publisher for a keyframe, which layers anyone still needs (dynacast).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use super::ids::{ParticipantId, PublicationId, Ssrc, SubscriptionId};
use super::keyframe_cache::KeyframeCache;
use super::packet::{Codec, DropReason, MediaKind, PacketMeta, RtpPacket};
use super::rewrite::vp8::Vp8Meta;
use super::room::{LayerChangeReason, Output};
use super::simulcast_layer::SimulcastLayer;
use super::stats::{DropCounts, PublicationStats};
use super::subscription::{Decision, Subscription};
use super::temporal::TEMPORAL_LAYERS;

/// While a simulcast publication has subscriptions, layer liveness is re-checked this often,
/// so a subscription on a layer that stopped falls back quickly.
const LIVENESS_CHECK: Duration = Duration::from_millis(100);

/// How long dynacast waits for a layer it turned on to flow before it also turns on the next
/// layer down. Chrome sends a resumed layer only once its uplink estimate covers it, which on
/// a young or lowered estimate can take seconds.
const RESUME_GRACE: Duration = Duration::from_millis(1500);

/// How long dynacast keeps a layer nobody watches before pausing it. Resuming a layer costs
/// the publisher a keyframe (in libvpx simulcast, a keyframe on every layer) and the subscriber
/// a wait for it, so a subscriber that steps down and back up within this time, or moves
/// between layers, does not restart encoders. The publisher's uplink pays for the layer a few
/// seconds longer; no subscriber's downlink does.
pub(crate) const PAUSE_DELAY: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub(crate) struct Publication {
    pub id: PublicationId,
    pub publisher: ParticipantId,
    kind: MediaKind,
    codec: Codec,
    clock_rate: u32,
    layers: Vec<SimulcastLayer>,
    next_incarnation_id: u64,
    pub subscriptions: Vec<Subscription>,
    received_packets: u64,
    received_bytes: u64,
    keyframes_requested: u64,
    keyframes_received: u64,
    incarnation_changes: u64,
    dropped: DropCounts,
    /// One cache per layer when enabled, else empty.
    keyframe_caches: Vec<KeyframeCache>,
    /// Dynacast: the layers the publisher was last told to send (all at first).
    active_layers: Vec<bool>,
    /// Since when each active layer has been on (set on the first decision for the initial ones).
    active_since: Vec<Option<Instant>>,
    /// Since when each layer has been needed by no subscription (dynacast pauses it
    /// [`PAUSE_DELAY`] later); `None` while it is needed.
    unneeded_since: Vec<Option<Instant>>,
    /// When a layer kept only by [`PAUSE_DELAY`] is due to be paused.
    next_pause_check: Option<Instant>,
    /// Set by ingest when a layer (re)appears: subscriptions are retargeted before the
    /// packet's decisions, so the packet that brought the layer back can start the switch.
    layer_came_live: bool,
    next_liveness_check: Option<Instant>,
    /// Muted by its publisher or the application: nothing is forwarded.
    muted: bool,
}

impl Publication {
    pub(crate) fn new(
        id: PublicationId,
        publisher: ParticipantId,
        kind: MediaKind,
        codec: Codec,
        clock_rate: u32,
        layer_count: u8,
        keyframe_request_interval: Duration,
    ) -> Self {
        let layer_count = layer_count.max(1);
        Publication {
            id,
            publisher,
            kind,
            codec,
            clock_rate,
            layers: (0..layer_count)
                .map(|i| SimulcastLayer::new(i, keyframe_request_interval))
                .collect(),
            next_incarnation_id: 0,
            subscriptions: Vec::new(),
            received_packets: 0,
            received_bytes: 0,
            keyframes_requested: 0,
            keyframes_received: 0,
            incarnation_changes: 0,
            dropped: DropCounts::default(),
            keyframe_caches: Vec::new(),
            active_layers: vec![true; usize::from(layer_count)],
            active_since: vec![None; usize::from(layer_count)],
            unneeded_since: vec![None; usize::from(layer_count)],
            next_pause_check: None,
            layer_came_live: false,
            next_liveness_check: None,
            muted: false,
        }
    }

    pub(crate) fn muted(&self) -> bool {
        self.muted
    }

    /// Mutes (nothing forwarded, no layer needed, dynacast pauses every layer) or unmutes
    /// the publication; unmuted video restarts at a keyframe the publisher is asked for.
    pub(crate) fn set_muted(&mut self, now: Instant, muted: bool, outputs: &mut VecDeque<Output>) {
        if self.muted == muted {
            return;
        }
        self.muted = muted;
        for subscription in &mut self.subscriptions {
            subscription.set_muted(muted);
        }
        self.after_decisions(now, outputs);
    }

    /// Enables the cache of packets since the last keyframe (instant join), one per layer: for
    /// publishers that cannot be asked for a keyframe (ingest, whose renditions are layers).
    pub(crate) fn with_keyframe_cache(mut self, enabled: bool) -> Self {
        self.keyframe_caches = if enabled {
            vec![KeyframeCache::default(); self.layers.len()]
        } else {
            Vec::new()
        };
        self
    }

    pub(crate) fn kind(&self) -> MediaKind {
        self.kind
    }

    pub(crate) fn layer_count(&self) -> u8 {
        u8::try_from(self.layers.len()).unwrap_or(u8::MAX)
    }

    pub(crate) fn subscription(&self, id: SubscriptionId) -> Option<&Subscription> {
        self.subscriptions.iter().find(|s| s.id() == id)
    }

    pub(crate) fn subscription_mut(&mut self, id: SubscriptionId) -> Option<&mut Subscription> {
        self.subscriptions.iter_mut().find(|s| s.id() == id)
    }

    pub(crate) fn remove_subscription(
        &mut self,
        now: Instant,
        id: SubscriptionId,
        outputs: &mut VecDeque<Output>,
    ) -> Option<Subscription> {
        let index = self.subscriptions.iter().position(|s| s.id() == id)?;
        let removed = self.subscriptions.remove(index);
        self.update_dynacast(now, outputs);
        Some(removed)
    }

    /// Adds a subscription; it targets the best layer available now.
    pub(crate) fn add_subscription(
        &mut self,
        now: Instant,
        mut subscription: Subscription,
        outputs: &mut VecDeque<Output>,
    ) {
        let target = self.best_available(subscription.desired_layer(self.layer_count()), now);
        subscription.set_initial_target(target, self.layer_count());
        subscription.set_muted(self.muted);
        self.subscriptions.push(subscription);
        self.update_dynacast(now, outputs);
    }

    /// Starts the subscription `id` from the cached packets since the last keyframe, so it
    /// shows a picture at once; returns false when there was nothing to replay.
    pub(crate) fn replay_cached(
        &mut self,
        now: Instant,
        id: SubscriptionId,
        outputs: &mut VecDeque<Output>,
    ) -> bool {
        if self.muted {
            return false;
        }
        let Some(subscription) = self.subscriptions.iter_mut().find(|s| s.id() == id) else {
            return false;
        };
        let Some(cache) = self.keyframe_caches.get(usize::from(subscription.target())) else {
            return false;
        };
        if cache.packets.is_empty() {
            return false;
        }
        for (meta, packet) in &cache.packets {
            if let Decision::Send(rewrite) =
                subscription.decide(meta, packet.payload.len(), now, self.clock_rate)
            {
                outputs.push_back(Output::Forward {
                    subscription: subscription.id(),
                    subscriber: subscription.subscriber(),
                    packet: rewrite.apply(packet),
                });
            }
        }
        subscription.take_layer_events(outputs);
        debug!(publication = %self.id, subscription = %id, packets = cache.packets.len(), "replayed since keyframe");
        true
    }

    pub(crate) fn handle_rtp(
        &mut self,
        now: Instant,
        layer: u8,
        packet: &RtpPacket,
        outputs: &mut VecDeque<Output>,
    ) {
        let meta = match self.ingest(now, layer, packet) {
            Ok(meta) => meta,
            Err(reason) => {
                trace!(publication = %self.id, ssrc = %packet.ssrc, %reason, "drop");
                self.dropped.add(reason);
                return;
            }
        };
        if let Some(cache) = self.keyframe_caches.get_mut(usize::from(layer)) {
            let keyframe_start = meta.start_point && self.codec.detects_keyframes();
            cache.record(&meta, packet, keyframe_start);
        }
        if std::mem::take(&mut self.layer_came_live) {
            self.retarget(now, None, LayerChangeReason::LayerUnavailable, outputs);
        }
        for subscription in &mut self.subscriptions {
            if let Decision::Send(rewrite) =
                subscription.decide(&meta, packet.payload.len(), now, self.clock_rate)
            {
                outputs.push_back(Output::Forward {
                    subscription: subscription.id(),
                    subscriber: subscription.subscriber(),
                    packet: rewrite.apply(packet),
                });
            }
            subscription.take_layer_events(outputs);
        }
        self.after_decisions(now, outputs);
        if self.layers.len() > 1 && self.next_liveness_check.is_none() {
            self.next_liveness_check = Some(now + LIVENESS_CHECK);
        }
    }

    /// After packets moved subscriptions (a switch completed), dynacast may change, and
    /// subscriptions still waiting for a keyframe ask for one (throttled per layer).
    fn after_decisions(&mut self, now: Instant, outputs: &mut VecDeque<Output>) {
        self.update_dynacast(now, outputs);
        if self.kind != MediaKind::Video {
            return;
        }
        if !self.keyframe_caches.is_empty() {
            self.start_waiting_from_cache(now, outputs);
        }
        for index in 0..self.layers.len() {
            let wanted = self
                .subscriptions
                .iter()
                .any(|s| s.awaited_layer() == Some(index as u8));
            let request = if wanted {
                self.request_keyframe(now, index as u8)
            } else {
                self.poll_keyframe_request(now, index)
            };
            outputs.extend(request);
        }
    }

    /// Starts from its layer's cache each subscription that has forwarded nothing yet and
    /// waits for a layer with a cached keyframe: one whose cap or bandwidth estimate moved it
    /// off the layer it joined on starts at once, as a new one does. (A subscription that
    /// already forwarded waits for the live keyframe: a replayed GOP would put its picture
    /// behind live.)
    fn start_waiting_from_cache(&mut self, now: Instant, outputs: &mut VecDeque<Output>) {
        for index in 0..self.subscriptions.len() {
            let subscription = &self.subscriptions[index];
            if subscription.stats().forwarded_packets > 0 {
                continue;
            }
            let cached = subscription.awaited_layer().is_some_and(|layer| {
                self.keyframe_caches
                    .get(usize::from(layer))
                    .is_some_and(|cache| !cache.packets.is_empty())
            });
            if cached {
                let id = subscription.id();
                self.replay_cached(now, id, outputs);
            }
        }
    }

    /// A subscriber asked for a keyframe: ask for one on the layer it receives.
    pub(crate) fn subscriber_keyframe_request(
        &mut self,
        now: Instant,
        id: SubscriptionId,
    ) -> Option<Output> {
        let layer = self.subscription(id)?.keyframe_layer();
        self.request_keyframe(now, layer)
    }

    pub(crate) fn request_keyframe(&mut self, now: Instant, layer: u8) -> Option<Output> {
        if self.kind != MediaKind::Video {
            return None;
        }
        let target = self.layers.get_mut(usize::from(layer))?;
        let Some(ssrc) = target.ssrc() else {
            target.throttle.defer();
            return None;
        };
        target
            .throttle
            .request(now)
            .then(|| self.keyframe_request(ssrc))
    }

    fn poll_keyframe_request(&mut self, now: Instant, layer: usize) -> Option<Output> {
        if self.kind != MediaKind::Video {
            return None;
        }
        let target = self.layers.get_mut(layer)?;
        let ssrc = target.ssrc()?;
        target
            .throttle
            .poll(now)
            .then(|| self.keyframe_request(ssrc))
    }

    pub(crate) fn timeout(&self) -> Option<Instant> {
        let deferred = self
            .layers
            .iter()
            .filter(|l| l.ssrc().is_some())
            .filter_map(|l| l.throttle.deadline())
            .min();
        [deferred, self.next_liveness_check, self.next_pause_check]
            .into_iter()
            .flatten()
            .min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, outputs: &mut VecDeque<Output>) {
        for index in 0..self.layers.len() {
            outputs.extend(self.poll_keyframe_request(now, index));
        }
        if let Some(check) = self.next_liveness_check
            && now >= check
        {
            self.next_liveness_check = (!self.subscriptions.is_empty()
                && self.layers.iter().any(|l| l.is_live(now)))
            .then(|| now + LIVENESS_CHECK);
            self.retarget(now, None, LayerChangeReason::LayerUnavailable, outputs);
        }
        if self.next_pause_check.is_some_and(|check| now >= check) {
            self.update_dynacast(now, outputs);
        }
    }

    /// Re-chooses the target layer of every subscription (or only `only`), given each one's
    /// wishes and what the publisher sends now; reports changes with `reason`.
    pub(crate) fn retarget(
        &mut self,
        now: Instant,
        only: Option<SubscriptionId>,
        reason: LayerChangeReason,
        outputs: &mut VecDeque<Output>,
    ) {
        if self.kind != MediaKind::Video {
            return;
        }
        let count = self.layer_count();
        for index in 0..self.subscriptions.len() {
            if only.is_some_and(|id| self.subscriptions[index].id() != id) {
                continue;
            }
            let desired = self.subscriptions[index].desired_layer(count);
            let target = self.best_available(desired, now);
            let subscription = &mut self.subscriptions[index];
            subscription.retarget(target, reason);
            subscription.take_layer_events(outputs);
        }
        self.after_decisions(now, outputs);
    }

    /// The highest live layer at or below `desired`; if none is, the lowest live layer above
    /// it; if nothing is live, `desired`. A paused layer the subscriber wants is resumed by
    /// dynacast and becomes the target once it is live again, so joining never waits for an
    /// encoder to restart.
    fn best_available(&self, desired: u8, now: Instant) -> u8 {
        if self.layers.len() == 1 {
            return 0;
        }
        let desired = desired.min(self.layer_count() - 1);
        let live = |l: &u8| self.layers[usize::from(*l)].is_live(now);
        (0..=desired)
            .rev()
            .find(live)
            .or_else(|| (desired + 1..self.layer_count()).find(live))
            .unwrap_or(desired)
    }

    /// Pauses or resumes one subscription; a resumed video subscription asks for a keyframe.
    pub(crate) fn set_paused(
        &mut self,
        now: Instant,
        id: SubscriptionId,
        paused: bool,
        outputs: &mut VecDeque<Output>,
    ) -> bool {
        let Some(subscription) = self.subscription_mut(id) else {
            return false;
        };
        subscription.set_paused(paused);
        self.after_decisions(now, outputs);
        true
    }

    /// What forwarding each layer costs now, in bits per second.
    pub(crate) fn layer_bitrates(&mut self, now: Instant) -> Vec<u64> {
        self.layers.iter_mut().map(|l| l.bitrate(now)).collect()
    }

    /// What forwarding each layer up to each of its temporal layers costs now (cumulative:
    /// T0, T0+T1, all), in bits per second.
    pub(crate) fn temporal_bitrates(
        &mut self,
        now: Instant,
    ) -> Vec<[u64; TEMPORAL_LAYERS as usize]> {
        self.layers
            .iter_mut()
            .map(|l| l.temporal_bitrates(now))
            .collect()
    }

    /// Dynacast: tells the publisher which layers anyone needs. For each subscription: the
    /// layers it targets and receives, the layer it wants, and below that every layer down to
    /// the first one that flows (or was just turned on and may still come) — so when the
    /// publisher cannot send the wanted layer, the next one down is there to fall back to,
    /// while the wanted one stays on for the moment it can. Layers are never turned off
    /// because they failed to come, only because nobody needs them, so this cannot flap.
    /// The lowest layer always stays on, so a new subscriber starts at once.
    fn update_dynacast(&mut self, now: Instant, outputs: &mut VecDeque<Output>) {
        if self.layers.len() < 2 {
            return;
        }
        for (since, &active) in self.active_since.iter_mut().zip(&self.active_layers) {
            if active && since.is_none() {
                *since = Some(now);
            }
        }
        let count = self.layer_count();
        let mut needed = vec![false; self.layers.len()];
        needed[0] = true;
        for subscription in self.subscriptions.iter().filter(|s| !s.paused()) {
            for layer in [Some(subscription.target()), subscription.current_layer()]
                .into_iter()
                .flatten()
            {
                if let Some(slot) = needed.get_mut(usize::from(layer)) {
                    *slot = true;
                }
            }
            for layer in (0..=subscription.desired_layer(count)).rev() {
                let index = usize::from(layer);
                needed[index] = true;
                let may_still_come = match (self.active_layers[index], self.active_since[index]) {
                    (false, _) => true,
                    (true, Some(since)) => now.saturating_duration_since(since) < RESUME_GRACE,
                    (true, None) => false,
                };
                if self.layers[index].is_live(now) || may_still_come {
                    break;
                }
            }
        }
        // A layer needed by nobody stays on for PAUSE_DELAY, then is paused.
        self.next_pause_check = None;
        for (index, wanted) in needed.iter_mut().enumerate() {
            if *wanted {
                self.unneeded_since[index] = None;
                continue;
            }
            let since = *self.unneeded_since[index].get_or_insert(now);
            let pause_at = since + PAUSE_DELAY;
            if self.active_layers[index] && now < pause_at {
                *wanted = true;
                self.next_pause_check = Some(
                    self.next_pause_check
                        .map_or(pause_at, |check| check.min(pause_at)),
                );
            }
        }
        if needed != self.active_layers {
            debug!(publication = %self.id, ?needed, "dynacast");
            for (index, &on) in needed.iter().enumerate() {
                if !on {
                    self.active_since[index] = None;
                } else if !self.active_layers[index] {
                    self.active_since[index] = Some(now);
                }
            }
            self.active_layers = needed.clone();
            outputs.push_back(Output::PublisherLayers {
                publication: self.id,
                publisher: self.publisher,
                active: needed,
            });
        }
    }

    pub(crate) fn stats(&self) -> PublicationStats {
        PublicationStats {
            publisher: self.publisher,
            publication: self.id,
            received_packets: self.received_packets,
            received_bytes: self.received_bytes,
            keyframes_requested: self.keyframes_requested,
            keyframes_received: self.keyframes_received,
            incarnation_changes: self.incarnation_changes,
            dropped: self.dropped,
            subscriptions: self.subscriptions.len(),
        }
    }

    fn keyframe_request(&mut self, ssrc: Ssrc) -> Output {
        self.keyframes_requested += 1;
        debug!(publication = %self.id, %ssrc, "keyframe request");
        Output::RequestKeyframe {
            publication: self.id,
            publisher: self.publisher,
            ssrc,
        }
    }

    fn ingest(
        &mut self,
        now: Instant,
        layer: u8,
        packet: &RtpPacket,
    ) -> Result<PacketMeta, DropReason> {
        self.received_packets += 1;
        self.received_bytes += packet.payload.len() as u64;
        let Some(target) = self.layers.get_mut(usize::from(layer)) else {
            return Err(DropReason::UnknownLayer);
        };
        let (incarnation, changed) =
            target.incarnation_for(now, packet.ssrc, &mut self.next_incarnation_id)?;
        let seq = incarnation.seq.unwrap(packet.sequence_number);
        let ts = incarnation.ts.unwrap(packet.timestamp);
        incarnation.seen.insert(seq)?;
        let meta = PacketMeta {
            incarnation: incarnation.id,
            layer,
            seq,
            ts,
            start_point: self.codec.is_start_point(&packet.payload),
            vp8: (self.codec == Codec::Vp8)
                .then(|| Vp8Meta::parse(&packet.payload))
                .flatten(),
            sampled_at: packet.sampled_at,
        };
        if changed {
            self.incarnation_changes += 1;
        }
        let temporal = meta.vp8.and_then(|vp8| vp8.temporal_id).unwrap_or(0);
        if temporal > 0 && !target.saw_temporal_layers {
            target.saw_temporal_layers = true;
            debug!(publication = %self.id, layer, temporal, "temporal layers arrive");
        }
        let became_live = target.record_arrival(now, packet.payload.len(), temporal);
        if meta.start_point {
            target.throttle.keyframe_arrived();
            if self.codec.detects_keyframes()
                && target.last_keyframe != Some((meta.incarnation, ts))
            {
                self.keyframes_received += 1;
                target.last_keyframe = Some((meta.incarnation, ts));
            }
        }
        if became_live && self.layers.len() > 1 {
            debug!(publication = %self.id, layer, "layer live");
            self.layer_came_live = true;
        }
        Ok(meta)
    }
}
