//! Step-downs: a standing queue, heavy loss, a failed probe or a falling REMB moves the
//! subscriber's video down at once, before the bandwidth estimate reacts.

use std::time::{Duration, Instant};

use tracing::debug;

use super::{CONGESTION_DRAIN, CONGESTION_HOLD, Downlink, Media};
use crate::ids::{PublicationId, SubscriptionId};
use crate::layer::Layer;
use crate::packet::MediaKind;
use crate::room::LayerChangeReason;

/// Loss is judged over windows this long.
const LOSS_WINDOW: Duration = Duration::from_millis(300);
/// NACKed packets, as a percentage of those sent in a window, that mean congestion. Random
/// loss of a few percent (which NACK/RTX repairs) must stay well below it: at 5 % random loss
/// a 30-packet window reaches 20 % about once in 400 windows.
const LOSS_STEP_DOWN_PERCENT: u64 = 20;
/// Fewer packets than this in a window say nothing about the loss rate.
const LOSS_MIN_PACKETS: u64 = 30;
/// Loss this heavy drops straight to the lowest layer: its keyframe is the only one small
/// enough to cross a path that congested quickly.
const LOSS_TO_LOWEST_PERCENT: u64 = 35;
/// A layer that caused heavy loss is not offered again for this long, whatever the estimate
/// says: after a quick step-down the path is clear again, so GCC may never see the congestion
/// and would otherwise send the subscriber straight back into it.
const LOSS_CEILING_HOLD: Duration = Duration::from_secs(12);
/// After a loss step-down, the next one waits this long: NACKs for packets already queued on
/// the congested path keep coming for a while and must not cascade.
const LOSS_STEP_DOWN_COOLDOWN: Duration = Duration::from_millis(1500);
/// A congested path's delivery rate, in percent, that its subscriber's video may use (before
/// the allocator's usual headroom) until [`CONGESTION_HOLD`] has passed: the queue built up
/// so far can only drain while less than the path's rate goes in.
const CONGESTION_BUDGET_PERCENT: u64 = 75;
/// How long a step-down's keyframe may take to cross a congested path (the viewer's picture
/// stops between the shed layer and that keyframe).
const KEYFRAME_CROSSING_LIMIT: Duration = Duration::from_millis(200);
/// A keyframe carries about 1/this of a second of its layer's stream (VP8 and H.264
/// keyframes of Chrome's camera layers weigh several average frames: ADR 0019).
const KEYFRAME_SHARE_OF_SECOND: u64 = 3;
/// How long after a REMB client's upgrade a REMB fall is taken for that upgrade's failure:
/// libwebrtc's estimator notices a layer only a little over the path seconds after it came
/// (ADR 0024).
const UPGRADE_TRIAL: Duration = Duration::from_secs(5);

/// How well a congestion signal knows the path's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathRate {
    /// What the path delivered while the queue stood (transport-wide feedback): the
    /// allocation can follow it to a temporal layer of the same resolution.
    Measured,
    /// Only an upper bound that may still be well above the path (a REMB, whose first value
    /// after overuse averages the second before the queue). A step chosen from it may not
    /// drain the queue, and its keyframe then waits behind it (ADR 0022), so the subscriber
    /// goes to the lowest layer, whose keyframe crosses first, and the allocator climbs from
    /// there within the budget after the usual hold, probing first.
    Bounded,
}

/// What one subscriber NACKed against what it was sent, in the current window.
#[derive(Debug, Clone, Copy)]
pub(super) struct LossWindow {
    started: Instant,
    forwarded_at_start: u64,
    nacked: u64,
    last_step_down: Option<Instant>,
}

/// How long a keyframe of a layer streaming `layer_bps` takes through `path_bps`.
fn keyframe_crossing(layer_bps: u64, path_bps: u64) -> Duration {
    Duration::from_millis(layer_bps * 1_000 / KEYFRAME_SHARE_OF_SECOND / path_bps.max(1))
}

impl Downlink {
    /// The loss window (which also remembers the last step-down), opened now if there is none.
    fn loss_window(&mut self, now: Instant, forwarded: u64) -> &mut LossWindow {
        self.loss.get_or_insert(LossWindow {
            started: now,
            forwarded_at_start: forwarded,
            nacked: 0,
            last_step_down: None,
        })
    }

    fn mark_stepped_down(&mut self, now: Instant) {
        if let Some(window) = &mut self.loss {
            window.last_step_down = Some(now);
        }
    }

    /// The subscriber's NACK named `packets` lost packets: heavy loss over a window steps its
    /// video down a layer at once.
    pub(crate) fn on_nacked(&mut self, now: Instant, media: &mut Media<'_>, packets: u64) {
        let forwarded = self.forwarded(media.publications);
        let subscriber = self.subscriber;
        let window = self.loss_window(now, forwarded);
        window.nacked += packets;
        if now.saturating_duration_since(window.started) < LOSS_WINDOW {
            return;
        }
        let sent = forwarded.saturating_sub(window.forwarded_at_start);
        let congested =
            sent >= LOSS_MIN_PACKETS && window.nacked * 100 >= sent * LOSS_STEP_DOWN_PERCENT;
        let cooled = window
            .last_step_down
            .is_none_or(|at| now.saturating_duration_since(at) >= LOSS_STEP_DOWN_COOLDOWN);
        let step_down = congested && cooled;
        let to_lowest = window.nacked * 100 >= sent * LOSS_TO_LOWEST_PERCENT;
        debug!(%subscriber, nacked = window.nacked, sent, step_down, "loss window");
        *window = LossWindow {
            started: now,
            forwarded_at_start: forwarded,
            nacked: 0,
            last_step_down: if step_down {
                Some(now)
            } else {
                window.last_step_down
            },
        };
        if step_down {
            self.step_down(now, media, to_lowest);
        }
    }

    /// Heavy loss: every simulcast video subscription goes one layer below the one it receives
    /// (or to the lowest, when `to_lowest`), at once; the bandwidth estimate moves it back up
    /// after the usual hold.
    fn step_down(&mut self, now: Instant, media: &mut Media<'_>, to_lowest: bool) {
        // The queue the loss came from is still draining: a probe now would fail on it
        // (ADR 0010).
        self.hold_upgrades_after_congestion(now, media.outputs, CONGESTION_DRAIN);
        for (publication, id) in self.subscriptions.clone() {
            let Some(publication) = media.publications.get_mut(&publication) else {
                continue;
            };
            if publication.kind() != MediaKind::Video || publication.layer_count() < 2 {
                continue;
            }
            let rates = publication.layer_bitrates(now);
            let Some(subscription) = publication.subscription_mut(id) else {
                continue;
            };
            let Some(current) = subscription
                .current_layer()
                .filter(|c| *c > 0 && c - 1 < subscription.cap_layer())
            else {
                continue;
            };
            if let Some(rate) = rates.get(usize::from(current)) {
                subscription.set_loss_ceiling(*rate, now + LOSS_CEILING_HOLD);
            }
            let to = if to_lowest { 0 } else { current - 1 };
            debug!(subscription = %id, from = current, to, "loss step-down");
            // Loss steps the spatial layer down (its keyframe is what must cross the congested
            // path quickly); the temporal cap does not apply below the cap.
            subscription.set_cap(Layer::new(to, u8::MAX));
            subscription.set_upgrade_candidate(None);
            publication.retarget(now, Some(id), LayerChangeReason::Bandwidth, media.outputs);
            if let Some(subscription) = publication.subscription_mut(id) {
                subscription.shed_until_switched();
            }
        }
    }

    /// A standing queue on the subscriber's downlink, measured by transport-wide feedback.
    pub(crate) fn on_congested(&mut self, now: Instant, media: &mut Media<'_>, delivered: u64) {
        self.congested(now, media, delivered, PathRate::Measured);
    }

    /// A standing queue (`Measured`) or a falling REMB (`Bounded`, which always goes to the
    /// lowest layer, see [`PathRate`]): the video is allocated from what the path delivered, at
    /// once, and that budget bounds it for [`CONGESTION_HOLD`] (the queue drains within a
    /// second, and nothing else would keep GCC from sending the subscriber straight back into
    /// it). A subscription that lands on a lower spatial layer sheds its current one until the
    /// switch (feeding it into the queue would only delay the lower layer's keyframe).
    pub(super) fn congested(
        &mut self,
        now: Instant,
        media: &mut Media<'_>,
        delivered_bps: u64,
        path_rate: PathRate,
    ) {
        let forwarded = self.forwarded(media.publications);
        if self
            .loss_window(now, forwarded)
            .last_step_down
            .is_some_and(|at| now.saturating_duration_since(at) < LOSS_STEP_DOWN_COOLDOWN)
        {
            return;
        }
        let receiving = self.receiving_simulcast(media.publications);
        self.hold_upgrades_after_congestion(now, media.outputs, CONGESTION_DRAIN);
        // Below what the path delivers, so the queue built up so far drains.
        let budget = delivered_bps.saturating_mul(CONGESTION_BUDGET_PERCENT) / 100;
        self.congestion_budget = Some((budget, now + CONGESTION_HOLD));
        self.allocate(now, media, budget);
        let mut stepped_down = false;
        for (publication, id, was) in receiving {
            stepped_down |= step_down_to_quick_layer(
                now,
                media,
                (publication, id, was),
                delivered_bps,
                path_rate,
            );
        }
        if stepped_down {
            self.mark_stepped_down(now);
        }
    }

    /// A probe of the path failed while the media ran at `media_bps`: the upgrade it tested is
    /// off, and no upgrade is tried for [`CONGESTION_HOLD`]. Nothing moves down: the media
    /// fitted before the probe, and a switch now would put a keyframe into the queue the probe
    /// left (ADR 0021).
    pub(crate) fn on_probe_failed(&mut self, now: Instant, media: &mut Media<'_>, media_bps: u64) {
        debug!(subscriber = %self.subscriber, media_bps, "probe failed");
        // The transport stops the probe (a REMB's fall is news to it) and repeats no repairs
        // into the queue the probe left.
        media.outputs.push_back(crate::room::Output::PathCongested {
            subscriber: self.subscriber,
        });
        // `last_probe` stays: a REMB falling on within the probe's window is still the probe's
        // queue draining (taken for congestion, it would step the subscriber down after the
        // probe already failed: ADR 0022).
        self.upgrades_held = Some(now + CONGESTION_HOLD);
        for (publication, id) in &self.subscriptions {
            if let Some(subscription) = media
                .publications
                .get_mut(publication)
                .and_then(|p| p.subscription_mut(*id))
            {
                subscription.set_upgrade_candidate(None);
            }
        }
    }

    /// A REMB client's path is congested and delivers less than `bound`: a recent upgrade is
    /// undone; on the lowest layers upgrades are held and nothing is lowered; otherwise the
    /// subscriber goes to the lowest layer (see [`PathRate::Bounded`]).
    pub(super) fn on_bounded_congestion(
        &mut self,
        now: Instant,
        media: &mut Media<'_>,
        bound: u64,
    ) {
        if self.undo_recent_upgrades(now, media) {
            return;
        }
        if self.receives_only_lowest_layers(media) {
            // A REMB never exceeds ~1.5× what arrives: a lower frame rate on the lowest
            // layer would only sink it further, and it grows back slowly (ADR 0024). Heavy
            // loss still steps down from here.
            debug!(subscriber = %self.subscriber, bound, "congested on the lowest layer: held, not lowered");
            self.hold_upgrades_after_congestion(now, media.outputs, CONGESTION_DRAIN);
            return;
        }
        self.congested(now, media, bound, PathRate::Bounded);
    }

    /// A REMB fell soon after upgrades: those upgrades are what the path could not carry (their
    /// layers had passed a probe, which a REMB client's estimator barely sees), so each
    /// subscription goes back to the cap it had, which carried it for seconds before, and
    /// nothing moves up for [`CONGESTION_HOLD`]. Within a layer that is at once and without a
    /// keyframe; to a lower resolution, the layer it leaves is shed until that keyframe.
    /// Returns false, touching nothing, unless every simulcast video subscription that
    /// receives a layer was upgraded within [`UPGRADE_TRIAL`].
    ///
    /// (Sent to the lowest layer instead, as after a cap, the subscriber would pay a switch
    /// freeze, and then wait for the REMB's slow growth to climb back: ADR 0024.)
    fn undo_recent_upgrades(&mut self, now: Instant, media: &mut Media<'_>) -> bool {
        let mut undo = Vec::new();
        for (publication, subscription) in self.each(media.publications) {
            if publication.kind() != MediaKind::Video || publication.layer_count() < 2 {
                continue;
            }
            if subscription.current_layer().is_none() {
                continue;
            }
            match subscription.last_upgrade() {
                Some((before, at)) if now.saturating_duration_since(at) <= UPGRADE_TRIAL => {
                    undo.push((publication.id, subscription.id(), before));
                }
                _ => return false,
            }
        }
        if undo.is_empty() {
            return false;
        }
        self.hold_upgrades_after_congestion(now, media.outputs, CONGESTION_HOLD);
        for (publication, id, before) in undo {
            let Some(publication) = media.publications.get_mut(&publication) else {
                continue;
            };
            let Some(subscription) = publication.subscription_mut(id) else {
                continue;
            };
            debug!(subscription = %id, to = ?before, "REMB fell after an upgrade: undone");
            subscription.set_cap(before);
            subscription.set_upgrade_candidate(None);
            subscription.set_last_upgrade(None);
            publication.retarget(now, Some(id), LayerChangeReason::Bandwidth, media.outputs);
            if let Some(subscription) = publication.subscription_mut(id) {
                subscription.shed_until_switched();
            }
        }
        self.mark_stepped_down(now);
        true
    }

    /// The subscriber receives simulcast video, and only the lowest layer of it.
    fn receives_only_lowest_layers(&self, media: &Media<'_>) -> bool {
        let receiving = self.receiving_simulcast(media.publications);
        !receiving.is_empty() && receiving.iter().all(|(_, _, layer)| *layer == 0)
    }
}

/// Moves one congested subscription (`was`: the spatial layer it receives) down to the highest
/// layer the allocation allows whose keyframe crosses the path quickly, shedding the layer it
/// leaves. Returns whether it was stepped down.
fn step_down_to_quick_layer(
    now: Instant,
    media: &mut Media<'_>,
    (publication, id, was): (PublicationId, SubscriptionId, u8),
    delivered_bps: u64,
    path_rate: PathRate,
) -> bool {
    let Some(publication) = media.publications.get_mut(&publication) else {
        return false;
    };
    let rates = publication.layer_bitrates(now);
    let Some(subscription) = publication.subscription_mut(id) else {
        return false;
    };
    let mut allocated = subscription.target();
    if path_rate == PathRate::Bounded && was > 0 {
        allocated = allocated.min(was - 1);
    }
    if allocated >= was {
        return false;
    }
    let crosses_quickly = |layer: u8| {
        rates
            .get(usize::from(layer))
            .is_some_and(|bps| keyframe_crossing(*bps, delivered_bps) <= KEYFRAME_CROSSING_LIMIT)
    };
    // The switch completes on the new layer's keyframe, which must cross the congested path
    // first: take the highest layer whose keyframe crosses quickly, and let the allocator climb
    // to the allocated one after the usual hold, while that layer plays.
    let to = if path_rate == PathRate::Bounded {
        0
    } else if crosses_quickly(allocated) {
        allocated
    } else {
        (0..allocated)
            .rev()
            .find(|l| crosses_quickly(*l))
            .unwrap_or(0)
    };
    // Against the cap, not the target: the target may sit below the allocated layer while that
    // layer is paused, and would climb to it as soon as it resumes.
    if to < subscription.cap_layer() {
        subscription.set_cap(Layer::new(to, u8::MAX));
        subscription.set_upgrade_candidate(None);
        publication.retarget(now, Some(id), LayerChangeReason::Bandwidth, media.outputs);
    }
    let Some(subscription) = publication.subscription_mut(id) else {
        return false;
    };
    debug!(subscription = %id, from = was, allocated, to = subscription.target(), delivered_bps, "congestion step-down");
    subscription.shed_until_switched();
    true
}
