//! The allocator: gives a subscriber's video subscriptions the highest layers its estimate
//! carries together, and moves them up only after a hold and a probe.

use std::time::{Duration, Instant};

use tracing::debug;

use super::{AUDIO_BPS, Downlink, Media, PROBE_DURATION};
use crate::ids::{PublicationId, SubscriptionId};
use crate::layer::Layer;
use crate::packet::MediaKind;
use crate::room::{LayerChangeReason, Output};
use crate::temporal::TOP_TEMPORAL_LAYER;

/// Bandwidth allocation keeps this share of the estimate for audio, RTCP and
/// retransmissions.
const BANDWIDTH_HEADROOM_PERCENT: u64 = 85;
/// A higher layer must fit the estimate this long before the subscriber is moved up, so a
/// noisy estimate does not flap between layers (downgrades apply at once).
const UPGRADE_HOLD: Duration = Duration::from_secs(3);
/// An upgrade is probed at this share of what it adds: a little more, for the headroom. A
/// bigger probe builds a bigger queue before it is refused, and the media waits behind it
/// (ADR 0021).
const PROBE_PERCENT: u64 = 110;
/// A REMB client's probe adds this share of the upgraded rate on top of what the upgrade adds.
/// Its estimator never sees the copies (SRTP drops them as replays), only the queue they build
/// in front of the media, and libwebrtc notices a slowly growing queue late: a probe only a
/// little over a path can pass, and the REMB then falls seconds after the upgrade it let
/// through (ADR 0024).
const REMB_PROBE_MARGIN_PERCENT: u64 = 25;
/// After an upgrade, nothing else moves up (nor is probed) for this long, so a queue it builds
/// shows as its own (and undoes it) rather than as the next probe's failure.
const UPGRADE_SETTLE: Duration = Duration::from_secs(2);

/// One rung of a subscription's ladder.
struct Step {
    spatial: u8,
    temporal: u8,
    bps: u64,
}

/// A subscription's ladder and how far up it the budget reaches.
struct Wanted {
    publication: PublicationId,
    subscription: SubscriptionId,
    steps: Vec<Step>,
    granted: usize,
}

impl Downlink {
    /// Gives each of the subscriber's video subscriptions the highest layers that fit its
    /// estimated bandwidth together. Each subscription climbs a ladder of steps (spatial,
    /// temporal): (0,0), (0,1), (0,2), (1,0), … — every temporal layer of a spatial layer
    /// before the next spatial layer, so a shrinking budget first lowers the frame rate of the
    /// layer received and only then its resolution. Everyone gets the lowest step first, then
    /// subscriptions move up one step at a time, round-robin, while the budget allows. Lower
    /// caps apply at once; a higher cap only after it has fit for [`UPGRADE_HOLD`].
    pub(super) fn allocate(&mut self, now: Instant, media: &mut Media<'_>, estimate: u64) {
        let bits_per_second = match self.congestion_budget {
            Some((delivered, until)) if now < until => estimate.min(delivered),
            Some(_) => {
                self.congestion_budget = None;
                estimate
            }
            None => estimate,
        };
        let (mut wanted, audio) = self.ladders(now, media);
        let budget = (bits_per_second.saturating_mul(BANDWIDTH_HEADROOM_PERCENT) / 100)
            .saturating_sub(audio);
        climb(&mut wanted, budget);
        // A probe started right after an upgrade cannot tell whose queue it meets: the queue
        // of an upgrade the path cannot carry would fail the probe instead of undoing the
        // upgrade, which then stays and freezes the picture (ADR 0025).
        let settling = self.each(media.publications).any(|(_, s)| {
            s.last_upgrade()
                .is_some_and(|(_, at)| now.saturating_duration_since(at) < UPGRADE_SETTLE)
        });
        let upgrades_held = settling
            || match self.upgrades_held {
                Some(until) if now < until => true,
                Some(_) => {
                    self.upgrades_held = None;
                    false
                }
                None => false,
            };
        let mut probe_bps = 0;
        for w in wanted {
            probe_bps += apply(now, media, &w, bits_per_second, upgrades_held);
        }
        if probe_bps > 0 {
            let probe_bps = if self.last_remb.is_some() {
                let upgraded = self.sent_rate(now, media).saturating_add(probe_bps);
                probe_bps.saturating_add(upgraded.saturating_mul(REMB_PROBE_MARGIN_PERCENT) / 100)
            } else {
                probe_bps.saturating_mul(PROBE_PERCENT) / 100
            };
            debug!(subscriber = %self.subscriber, probe_bps, "probing before an upgrade");
            self.last_probe = Some(now);
            media.outputs.push_back(Output::Probe {
                subscriber: self.subscriber,
                bits_per_second: probe_bps,
                duration: PROBE_DURATION,
            });
        }
    }

    /// Every unpaused video subscription's ladder, and what the unpaused audio ones take.
    fn ladders(&self, now: Instant, media: &mut Media<'_>) -> (Vec<Wanted>, u64) {
        let mut wanted = Vec::new();
        let mut audio = 0u64;
        for (publication_id, id) in &self.subscriptions {
            let Some(publication) = media.publications.get_mut(publication_id) else {
                continue;
            };
            let Some(subscription) = publication.subscription(*id) else {
                continue;
            };
            if subscription.paused() {
                continue;
            }
            if publication.kind() == MediaKind::Audio {
                audio += AUDIO_BPS;
                continue;
            }
            let max = subscription.max_layer();
            let max_temporal = subscription.max_temporal().min(TOP_TEMPORAL_LAYER);
            let ceiling = subscription.loss_ceiling(now);
            let count = publication.layer_count();
            let rates = publication.temporal_bitrates(now);
            let mut steps = Vec::new();
            for (spatial, temporal_rates) in (0..=max.min(count - 1)).zip(&rates) {
                let full = temporal_rates[usize::from(TOP_TEMPORAL_LAYER)];
                // A layer that caused heavy loss is off limits at any frame rate, but the
                // lowest one always stays.
                if spatial > 0 && ceiling.is_some_and(|ceiling| full >= ceiling) {
                    break;
                }
                // Base frames alone (a quarter of the frame rate with Chrome's L1T3) are a
                // slideshow: above the lowest layer, the next layer down at full rate is
                // the better picture, so the ladder skips them unless they were asked for.
                let lowest = if spatial > 0 && max_temporal > 0 {
                    1
                } else {
                    0
                };
                for temporal in lowest..=max_temporal {
                    steps.push(Step {
                        spatial,
                        temporal,
                        bps: temporal_rates[usize::from(temporal)],
                    });
                }
            }
            wanted.push(Wanted {
                publication: *publication_id,
                subscription: *id,
                steps,
                granted: 0,
            });
        }
        (wanted, audio)
    }
}

/// Everyone takes the first step; then one step each, round-robin, while `budget` allows.
fn climb(wanted: &mut [Wanted], budget: u64) {
    let mut spent: u64 = wanted
        .iter()
        .filter_map(|w| w.steps.first())
        .map(|s| s.bps)
        .sum();
    let mut moved = true;
    while moved {
        moved = false;
        for w in wanted.iter_mut() {
            let (Some(from), Some(to)) = (w.steps.get(w.granted), w.steps.get(w.granted + 1))
            else {
                continue;
            };
            let extra = to.bps.saturating_sub(from.bps);
            // A step that costs nothing (a layer without temporal layers) is always taken.
            if extra == 0 || spent + extra <= budget {
                spent += extra;
                w.granted += 1;
                moved = true;
            }
        }
    }
}

/// Applies one subscription's granted step as its cap: at once when lower, after the upgrade
/// hold (and a probe) when higher. Returns what a probe for it must show fits (0: no probe).
fn apply(
    now: Instant,
    media: &mut Media<'_>,
    w: &Wanted,
    bits_per_second: u64,
    upgrades_held: bool,
) -> u64 {
    let Some(publication) = media.publications.get_mut(&w.publication) else {
        return 0;
    };
    let top_spatial = publication.layer_count() - 1;
    let rates = publication.temporal_bitrates(now);
    let Some(subscription) = publication.subscription_mut(w.subscription) else {
        return 0;
    };
    let Some(granted) = w.steps.get(w.granted) else {
        return 0;
    };
    // "Everything up to max fits" means no cap at all: a later request for a higher layer is
    // then not held back by a stale cap. (A loss ceiling shortens the ladder, so its top is
    // then a real cap.)
    let top = w.granted + 1 == w.steps.len()
        && subscription.loss_ceiling(now).is_none()
        && granted.spatial >= subscription.max_layer().min(top_spatial);
    let mut cap = if top {
        Layer::MAX
    } else {
        Layer::new(granted.spatial, granted.temporal)
    };
    let current_cap = subscription.cap();
    let mut probe_bps = 0;
    let apply = if cap < current_cap {
        subscription.set_upgrade_candidate(None);
        true
    } else if cap > current_cap && upgrades_held {
        subscription.set_upgrade_candidate(None);
        false
    } else if cap > current_cap {
        match subscription.upgrade_candidate() {
            Some((candidate, since)) if candidate <= cap => {
                // Only as far as the probe went: a higher layer that fits the estimate now is
                // a new candidate, probed in its turn (applied unprobed, it would enter a path
                // that was probed only for the lower one: ADR 0021).
                cap = candidate;
                now.saturating_duration_since(since) >= UPGRADE_HOLD
            }
            _ => {
                subscription.set_upgrade_candidate(Some((cap, now)));
                // The extra the upgrade would cost: what the probe must show fits.
                let from = w
                    .steps
                    .iter()
                    .rev()
                    .find(|s| Layer::new(s.spatial, s.temporal) <= current_cap)
                    .map_or(0, |s| s.bps);
                probe_bps = granted.bps.saturating_sub(from);
                false
            }
        }
    } else {
        subscription.set_upgrade_candidate(None);
        false
    };
    if apply {
        debug!(subscription = %w.subscription, bits_per_second, from = ?current_cap, to = ?cap, ?rates, "bandwidth cap");
        subscription.set_last_upgrade((cap > current_cap).then_some((current_cap, now)));
        subscription.set_cap(cap);
        subscription.set_upgrade_candidate(None);
        publication.retarget(
            now,
            Some(w.subscription),
            LayerChangeReason::Bandwidth,
            media.outputs,
        );
    }
    probe_bps
}
