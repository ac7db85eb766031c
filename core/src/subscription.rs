//! One subscriber's view of one publication: which simulcast layer it receives (`max` asked,
//! `cap` from its bandwidth, `target` chosen, `current` forwarded) and, within it, which
//! temporal layers; when forwarding may start or switch (keyframes, layer-sync frames) and how
//! each packet's header is rewritten.

use std::time::Instant;

use tracing::{debug, trace};

use std::collections::VecDeque;

use super::ids::{ParticipantId, Ssrc, SubscriptionId};
use super::layer::Layer;
use super::packet::{DropReason, MediaKind, PacketMeta, RtpPacket};
use super::rewrite::numbering::Numbering;
use super::rewrite::vp8::{Vp8Continuity, Vp8Patch};
use super::room::{LayerChangeReason, Output};
use super::stats::SubscriptionStats;
use super::temporal::{TOP_TEMPORAL_LAYER, TemporalSelector};

/// The per-subscription verdict on one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Send(Rewrite),
    Drop(DropReason),
}

/// The header fields that differ per subscription; everything else (payload included)
/// is shared with the publisher's packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rewrite {
    pub ssrc: Ssrc,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    /// VP8 descriptor continuity; `None` for other codecs.
    pub vp8: Option<Vp8Patch>,
}

impl Rewrite {
    pub(crate) fn apply(&self, packet: &RtpPacket) -> RtpPacket {
        RtpPacket {
            ssrc: self.ssrc,
            payload_type: self.payload_type,
            sequence_number: self.sequence_number,
            timestamp: self.timestamp,
            marker: packet.marker,
            payload: match &self.vp8 {
                Some(patch) => patch.apply(&packet.payload),
                None => packet.payload.clone(),
            },
            // The level travels as a value; the subscriber's transport writes it with the
            // extension id negotiated there (other header extensions are not forwarded).
            audio_level: packet.audio_level,
            sampled_at: packet.sampled_at,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Subscription {
    id: SubscriptionId,
    subscriber: ParticipantId,
    ssrc: Ssrc,
    payload_type: u8,
    kind: MediaKind,
    numbering: Numbering,
    vp8: Vp8Continuity,
    stats: SubscriptionStats,
    /// The highest spatial layer the subscriber asked for.
    max_layer: u8,
    /// The highest spatial layer its bandwidth allows.
    cap_layer: u8,
    /// The layer being switched to (or kept).
    target: u8,
    /// The layer being forwarded; `None` before the first start.
    current: Option<u8>,
    /// The highest temporal layer the subscriber asked for.
    max_temporal: u8,
    /// The highest temporal layer its bandwidth allows on the `cap_layer` spatial layer
    /// (lower spatial layers fit with all their temporal layers).
    cap_temporal: u8,
    /// Target and current temporal layer within the forwarded spatial layer.
    temporal: TemporalSelector,
    /// The current layer's incarnation changed and its keyframe has not come yet.
    waiting_keyframe: bool,
    /// Bandwidth allocation: a higher cap (spatial, temporal) must hold this long before it
    /// applies.
    upgrade_candidate: Option<(Layer, Instant)>,
    /// The cap (spatial, temporal) before the last bandwidth upgrade, and when it was raised.
    last_upgrade: Option<(Layer, Instant)>,
    /// Layers at or above this bitrate caused heavy loss: not offered until the instant.
    loss_ceiling: Option<(u64, Instant)>,
    /// The path is congested: stop sending the current layer until the switch down lands,
    /// so the lower layer's keyframe is not queued behind packets that would be lost anyway.
    shed_current: bool,
    /// Report the first layer forwarded (simulcast publications only).
    reports_first_layer: bool,
    /// Paused by the subscriber: nothing is forwarded, no layer is needed.
    paused: bool,
    /// The publication is muted: nothing is forwarded, no layer is needed.
    muted: bool,
    /// Resumed after a pause: the next packet forwarded restarts the numbering (at a keyframe
    /// for video), so the packets dropped meanwhile leave no sequence gap to NACK.
    restart_pending: bool,
    /// Forwarding restarted at a keyframe (a new layer or incarnation, or a resume) and its first
    /// packet is still to be sent: that packet becomes the repair horizon.
    restarted: bool,
    /// When the last restart's keyframe went out: it crosses the path as a burst.
    restarted_at: Option<Instant>,
    /// The output sequence number the subscriber's decoder restarts at, to report
    /// ([`Output::RepairHorizon`]).
    repair_horizon: Option<u16>,
    /// Layer changes to report, drained into outputs.
    events: Vec<LayerEvent>,
}

/// A layer change to report: spatial and temporal, current and target.
#[derive(Clone, Copy, Debug)]
struct LayerEvent {
    current: Option<Layer>,
    target: Layer,
    reason: LayerChangeReason,
}

impl Subscription {
    pub(crate) fn new(
        id: SubscriptionId,
        subscriber: ParticipantId,
        ssrc: Ssrc,
        payload_type: u8,
        kind: MediaKind,
        initial_seq: u16,
    ) -> Self {
        Subscription {
            id,
            subscriber,
            ssrc,
            payload_type,
            kind,
            numbering: Numbering::new(initial_seq),
            vp8: Vp8Continuity::default(),
            stats: SubscriptionStats::default(),
            max_layer: u8::MAX,
            cap_layer: u8::MAX,
            target: 0,
            current: None,
            max_temporal: u8::MAX,
            cap_temporal: u8::MAX,
            temporal: TemporalSelector::default(),
            waiting_keyframe: false,
            upgrade_candidate: None,
            last_upgrade: None,
            loss_ceiling: None,
            shed_current: false,
            reports_first_layer: false,
            paused: false,
            muted: false,
            restart_pending: false,
            restarted: false,
            restarted_at: None,
            repair_horizon: None,
            events: Vec::new(),
        }
    }

    pub(crate) fn id(&self) -> SubscriptionId {
        self.id
    }

    pub(crate) fn subscriber(&self) -> ParticipantId {
        self.subscriber
    }

    pub(crate) fn kind(&self) -> MediaKind {
        self.kind
    }

    pub(crate) fn stats(&self) -> &SubscriptionStats {
        &self.stats
    }

    /// A higher cap (spatial, temporal) waiting out the upgrade hold, and since when.
    pub(crate) fn upgrade_candidate(&self) -> Option<(Layer, Instant)> {
        self.upgrade_candidate
    }

    pub(crate) fn set_upgrade_candidate(&mut self, candidate: Option<(Layer, Instant)>) {
        self.upgrade_candidate = candidate;
    }

    /// The cap before the last bandwidth upgrade, and when it was raised.
    pub(crate) fn last_upgrade(&self) -> Option<(Layer, Instant)> {
        self.last_upgrade
    }

    pub(crate) fn set_last_upgrade(&mut self, upgrade: Option<(Layer, Instant)>) {
        self.last_upgrade = upgrade;
    }

    /// When the last restart's keyframe went out.
    pub(crate) fn restarted_at(&self) -> Option<Instant> {
        self.restarted_at
    }

    pub(crate) fn target(&self) -> u8 {
        self.target
    }

    pub(crate) fn current_layer(&self) -> Option<u8> {
        self.current
    }

    pub(crate) fn cap_layer(&self) -> u8 {
        self.cap_layer
    }

    pub(crate) fn max_layer(&self) -> u8 {
        self.max_layer
    }

    /// The temporal layer forwarded within the current spatial layer.
    pub(crate) fn current_temporal(&self) -> u8 {
        self.temporal.current()
    }

    pub(crate) fn max_temporal(&self) -> u8 {
        self.max_temporal
    }

    /// The bandwidth cap as (spatial, temporal); `u8::MAX` in both when nothing is capped.
    pub(crate) fn cap(&self) -> Layer {
        Layer::new(self.cap_layer, self.cap_temporal)
    }

    /// The layer the subscriber should get, before availability is considered.
    pub(crate) fn desired_layer(&self, layer_count: u8) -> u8 {
        self.max_layer
            .min(self.cap_layer)
            .min(layer_count.saturating_sub(1))
    }

    /// The bitrate from which layers are off limits after heavy loss, while it holds.
    pub(crate) fn loss_ceiling(&self, now: Instant) -> Option<u64> {
        self.loss_ceiling
            .filter(|(_, until)| now < *until)
            .map(|(bps, _)| bps)
    }

    pub(crate) fn set_loss_ceiling(&mut self, bits_per_second: u64, until: Instant) {
        self.loss_ceiling = Some((bits_per_second, until));
    }

    /// Congestion: drop the current layer's packets until the switch to the target lands.
    pub(crate) fn shed_until_switched(&mut self) {
        self.shed_current = self.current.is_some_and(|c| c != self.target);
    }

    /// Whether nothing is forwarded: the subscriber paused it or the publication is muted.
    pub(crate) fn paused(&self) -> bool {
        self.paused || self.muted
    }

    /// Pauses or resumes forwarding; a resumed video subscription waits for a keyframe.
    pub(crate) fn set_paused(&mut self, paused: bool) {
        let was = self.paused();
        self.paused = paused;
        self.restart_if_resumed(was);
    }

    /// Mutes or unmutes the publication for this subscription; an unmuted video
    /// subscription waits for a keyframe.
    pub(crate) fn set_muted(&mut self, muted: bool) {
        let was = self.paused();
        self.muted = muted;
        self.restart_if_resumed(was);
    }

    /// After a pause or mute ended, the stream restarts at a keyframe with continuous
    /// numbering, as after a switch.
    fn restart_if_resumed(&mut self, was_paused: bool) {
        if was_paused && !self.paused() && self.current.is_some() {
            self.restart_pending = true;
            self.waiting_keyframe = true;
        }
    }

    /// Taken off its publication (to another, or parked): what it forwards next starts at a
    /// start point of whatever it then receives, its numbering continuing after what was sent.
    pub(crate) fn detach(&mut self) {
        self.numbering.detach();
        self.current = None;
        self.waiting_keyframe = false;
        self.restart_pending = false;
        self.shed_current = false;
        self.upgrade_candidate = None;
        self.muted = false;
    }

    pub(crate) fn set_max_layer(&mut self, layer: u8) {
        self.max_layer = layer;
    }

    pub(crate) fn set_max_temporal(&mut self, temporal: u8) {
        self.max_temporal = temporal;
    }

    /// Caps the spatial layer, and the temporal layer on that spatial layer.
    pub(crate) fn set_cap(&mut self, cap: Layer) {
        self.cap_layer = cap.spatial;
        self.cap_temporal = cap.temporal;
    }

    /// The temporal layer to forward on spatial layer `target`: the subscriber's maximum, and
    /// on the spatial layer the bandwidth caps (or above it, when only that one is live) the
    /// cap's temporal layer.
    fn temporal_target_for(&self, target: u8) -> u8 {
        let capped = if target >= self.cap_layer {
            self.cap_temporal
        } else {
            u8::MAX
        };
        self.max_temporal.min(capped).min(TOP_TEMPORAL_LAYER)
    }

    fn push_event(&mut self, reason: LayerChangeReason) {
        let current_temporal = self.temporal.current();
        self.events.push(LayerEvent {
            current: self
                .current
                .map(|spatial| Layer::new(spatial, current_temporal)),
            target: Layer::new(self.target, self.temporal.target()),
            reason,
        });
    }

    /// Sets the target of a new subscription; with several layers to choose from, the first
    /// layer forwarded is reported as a switch.
    pub(crate) fn set_initial_target(&mut self, target: u8, layer_count: u8) {
        self.target = target;
        self.temporal.set_target(self.temporal_target_for(target));
        self.reports_first_layer = layer_count > 1;
    }

    /// Moves the target; a spatial switch happens on the target layer's next keyframe, a
    /// temporal one at the next frame (down) or layer-sync frame (up).
    pub(crate) fn retarget(&mut self, target: u8, reason: LayerChangeReason) {
        let temporal = self.temporal_target_for(target);
        if target != self.target || temporal != self.temporal.target() {
            debug!(
                subscription = %self.id,
                from = self.target,
                to = target,
                from_temporal = self.temporal.target(),
                to_temporal = temporal,
                ?reason,
                "layer target"
            );
            self.target = target;
            self.temporal.set_target(temporal);
            self.push_event(reason);
        }
    }

    /// The layer this subscription waits for a keyframe on, if any: a spatial switch, a new
    /// incarnation, or a temporal up-switch that no layer-sync frame will complete.
    pub(crate) fn awaited_layer(&self) -> Option<u8> {
        (self.kind == MediaKind::Video
            && !self.paused()
            && (self.current != Some(self.target)
                || self.waiting_keyframe
                || self.temporal.wants_keyframe()))
        .then_some(self.target)
    }

    /// The layer a keyframe request from this subscriber is about.
    pub(crate) fn keyframe_layer(&self) -> u8 {
        self.current.unwrap_or(self.target)
    }

    /// Drains what happened to this subscription into outputs: the layer changes to report,
    /// and where its decoder restarted.
    pub(crate) fn take_layer_events(&mut self, outputs: &mut VecDeque<Output>) {
        if let Some(sequence_number) = self.repair_horizon.take() {
            outputs.push_back(Output::RepairHorizon {
                subscription: self.id,
                subscriber: self.subscriber,
                ssrc: self.ssrc,
                sequence_number,
            });
        }
        for event in self.events.drain(..) {
            outputs.push_back(Output::LayersChanged {
                subscription: self.id,
                subscriber: self.subscriber,
                current: event.current,
                target: event.target,
                reason: event.reason,
            });
        }
    }

    /// Decides about one packet of the publication and counts the outcome.
    pub(crate) fn decide(
        &mut self,
        meta: &PacketMeta,
        payload_len: usize,
        now: Instant,
        clock_rate: u32,
    ) -> Decision {
        let decision = self.decide_uncounted(meta, now, clock_rate);
        match decision {
            Decision::Send(_) => {
                self.stats.forwarded_packets += 1;
                self.stats.forwarded_bytes += payload_len as u64;
            }
            Decision::Drop(reason) => {
                trace!(subscription = %self.id, %reason, "drop");
                self.stats.drops.add(reason);
            }
        }
        decision
    }

    fn decide_uncounted(&mut self, meta: &PacketMeta, now: Instant, clock_rate: u32) -> Decision {
        if self.muted {
            return Decision::Drop(DropReason::Muted);
        }
        if self.paused {
            return Decision::Drop(DropReason::Paused);
        }
        let on_current = self.current == Some(meta.layer);
        if on_current && self.shed_current && meta.layer != self.target {
            return Decision::Drop(DropReason::Congestion);
        }
        if self.restart_pending
            || !(on_current && self.numbering.incarnation() == Some(meta.incarnation))
        {
            // A packet of another layer, or the first of a new incarnation on the current one:
            // forwarding moves here only to the target layer (or restarts the current one),
            // and for video only at a keyframe, so the decoder never sees a broken picture.
            if !on_current && meta.layer != self.target {
                return Decision::Drop(DropReason::NotCurrentLayer);
            }
            if self.kind == MediaKind::Video && !meta.start_point {
                self.waiting_keyframe |= on_current;
                return Decision::Drop(DropReason::WaitingForKeyframe);
            }
            debug!(
                subscription = %self.id,
                incarnation = meta.incarnation,
                layer = meta.layer,
                reason = if !self.numbering.started() { "first-incarnation" } else if self.current.is_none() { "moved" } else if on_current { "incarnation-change" } else { "layer-switch" },
                "forwarding starts"
            );
            // Not the first incarnation: the decoder had a picture, which this keyframe replaces.
            self.restarted = self.kind == MediaKind::Video && self.numbering.started();
            self.numbering.start_incarnation(meta, now, clock_rate);
            self.shed_current = false;
            self.restart_pending = false;
            if let Some(vp8) = &meta.vp8 {
                self.vp8.start_incarnation(vp8);
            }
            self.temporal
                .start_incarnation(meta.vp8.is_some_and(|vp8| vp8.temporal_id.is_some()));
            self.waiting_keyframe = false;
            let previous = self.current.replace(meta.layer);
            // The first layer is news too where there are layers to choose from: the
            // subscriber learns what it receives without waiting for a change.
            if previous != self.current && (previous.is_some() || self.reports_first_layer) {
                self.push_event(LayerChangeReason::Switched);
            }
        }
        if let Some(vp8) = &meta.vp8
            && let Some(tid) = vp8.temporal_id
        {
            let reported_before = self.temporal.current();
            let decision = self
                .temporal
                .decide(meta.ts, tid, vp8.layer_sync, meta.start_point);
            if decision.switched || reported_before != self.temporal.current() {
                debug!(subscription = %self.id, from = reported_before, to = self.temporal.current(), "temporal layer switch");
                self.push_event(LayerChangeReason::Switched);
            }
            if !decision.forward {
                self.numbering.skip(meta);
                self.vp8.on_drop(vp8);
                return Decision::Drop(DropReason::TemporalLayer);
            }
        }
        match self.numbering.map(meta, now) {
            Ok(numbers) => {
                if std::mem::take(&mut self.restarted) {
                    self.repair_horizon = Some(numbers.sequence_number);
                    self.restarted_at = Some(now);
                }
                Decision::Send(Rewrite {
                    ssrc: self.ssrc,
                    payload_type: self.payload_type,
                    sequence_number: numbers.sequence_number,
                    timestamp: numbers.timestamp,
                    vp8: meta.vp8.as_ref().map(|vp8| self.vp8.on_send(vp8)),
                })
            }
            Err(reason) => Decision::Drop(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::seq::ExtSeq;
    use crate::rewrite::timestamp::ExtTs;

    fn meta(incarnation: u64, seq: u64, start_point: bool) -> PacketMeta {
        PacketMeta {
            incarnation,
            layer: 0,
            seq: ExtSeq((1 << 32) + seq),
            ts: ExtTs((1 << 40) + seq * 100),
            start_point,
            vp8: None,
            sampled_at: None,
        }
    }

    fn sub(kind: MediaKind) -> Subscription {
        Subscription::new(
            SubscriptionId(1),
            ParticipantId(2),
            Ssrc(77),
            96,
            kind,
            1000,
        )
    }

    #[test]
    fn video_waits_for_a_start_point_of_each_incarnation() {
        let now = Instant::now();
        let mut s = sub(MediaKind::Video);
        assert_eq!(
            s.decide(&meta(0, 1, false), 10, now, 90_000),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        let Decision::Send(rewrite) = s.decide(&meta(0, 2, true), 10, now, 90_000) else {
            panic!("keyframe must start forwarding");
        };
        assert_eq!(
            (rewrite.ssrc, rewrite.payload_type, rewrite.sequence_number),
            (Ssrc(77), 96, 1000)
        );
        assert!(matches!(
            s.decide(&meta(0, 3, false), 10, now, 90_000),
            Decision::Send(_)
        ));
        assert_eq!(
            s.decide(&meta(1, 9, false), 10, now, 90_000),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(s.stats.forwarded_packets, 2);
        assert_eq!(s.stats.forwarded_bytes, 20);
        assert_eq!(s.stats.drops.get(DropReason::WaitingForKeyframe), 2);
    }

    #[test]
    fn audio_starts_at_once() {
        let now = Instant::now();
        let mut s = sub(MediaKind::Audio);
        assert!(matches!(
            s.decide(&meta(0, 1, false), 10, now, 48_000),
            Decision::Send(_)
        ));
        assert!(matches!(
            s.decide(&meta(1, 1, false), 10, now, 48_000),
            Decision::Send(_)
        ));
    }
}
