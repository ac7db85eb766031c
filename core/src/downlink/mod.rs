//! Bandwidth control of each subscriber's downlink: which layers its video subscriptions may
//! receive, given its bandwidth estimate and every congestion signal its path gives.
//!
//! One [`Downlink`] per subscriber owns that subscriber's allocation state (congestion budget,
//! upgrade holds, probes, loss window, REMB baseline, round-trip watch) and an index of its
//! subscriptions, so a report about one subscriber walks only that subscriber's subscriptions.
//! It decides caps; the [`Publication`]s it is handed (through [`Media`]) carry them out at the
//! next keyframe. Signals, each in its own file:
//! - the estimate ([`allocate`]): the ladder of (spatial, temporal) steps within the estimate,
//!   upgrades only after a hold and a probe;
//! - a standing queue or heavy loss ([`congestion`]): a step-down at once, sized to what the
//!   path delivered, and a budget that bounds the allocation while the queue drains;
//! - REMB and the round trips of receiver reports, for clients without transport-wide feedback
//!   ([`remb`]);
//! - [`queue_delay`]: the standing-queue detector the transport runs on transport-wide feedback.

mod allocate;
mod congestion;
pub mod queue_delay;
mod remb;
mod round_trip;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ids::{ParticipantId, PublicationId, SubscriptionId};
use crate::packet::MediaKind;
use crate::publication::Publication;
use crate::room::Output;
use crate::subscription::Subscription;
use crate::temporal::TOP_TEMPORAL_LAYER;

use congestion::LossWindow;
use round_trip::RoundTripWatch;

/// Audio subscriptions are budgeted at this rate.
const AUDIO_BPS: u64 = 48_000;
/// How long a congested path's budget bounds its subscriber's allocation. After it, an upgrade
/// the estimate allows is probed first, so a path still narrow costs a short probe, not a
/// switch into a queue.
const CONGESTION_HOLD: Duration = Duration::from_secs(8);
/// After a congestion signal, nothing moves up (nor is probed) for this long: the queue is
/// still draining, and feedback describes the rate before the step-down, so a probe would
/// fail on the fall the draining queue causes (ADR 0021).
const CONGESTION_DRAIN: Duration = Duration::from_secs(2);
/// An upgrade is probed for this long, starting when it first fits the estimate (so within
/// its upgrade hold).
const PROBE_DURATION: Duration = Duration::from_millis(1_500);
/// How long after a probe ended a REMB fall is still taken for its queue draining.
const PROBE_REMB_ECHO: Duration = Duration::from_millis(500);

/// The room's media as one subscriber's downlink sees it: the publications its subscriptions
/// belong to, and the room's output queue.
pub(crate) struct Media<'a> {
    pub(crate) publications: &'a mut HashMap<PublicationId, Publication>,
    pub(crate) outputs: &'a mut VecDeque<Output>,
}

/// One subscriber's downlink: its subscriptions and the state of its bandwidth control.
#[derive(Debug)]
pub(crate) struct Downlink {
    subscriber: ParticipantId,
    /// Every subscription of the subscriber, with the publication that owns it.
    subscriptions: Vec<(PublicationId, SubscriptionId)>,
    /// What the subscriber NACKed against what it was sent (and its last loss step-down).
    loss: Option<LossWindow>,
    /// What its congested path delivered, and until when that bounds its allocation whatever
    /// the bandwidth estimate says.
    congestion_budget: Option<(u64, Instant)>,
    /// Until when it is not moved up (its last probe failed, or its path was just found
    /// congested and is draining).
    upgrades_held: Option<Instant>,
    /// When its path was last asked to be probed.
    last_probe: Option<Instant>,
    /// A REMB client's last REMB: the baseline a fall is measured from. `Some` marks the
    /// subscriber as a REMB client.
    last_remb: Option<u64>,
    /// A REMB client's round trips, watched for a queue.
    round_trips: Option<RoundTripWatch>,
}

impl Downlink {
    pub(crate) fn new(subscriber: ParticipantId) -> Self {
        Downlink {
            subscriber,
            subscriptions: Vec::new(),
            loss: None,
            congestion_budget: None,
            upgrades_held: None,
            last_probe: None,
            last_remb: None,
            round_trips: None,
        }
    }

    pub(crate) fn add_subscription(&mut self, publication: PublicationId, id: SubscriptionId) {
        self.subscriptions.push((publication, id));
    }

    pub(crate) fn remove_subscription(&mut self, id: SubscriptionId) {
        self.subscriptions.retain(|(_, s)| *s != id);
    }

    /// Forgets every subscription of `publication` (it was removed with them).
    pub(crate) fn remove_publication(&mut self, publication: PublicationId) {
        self.subscriptions.retain(|(p, _)| *p != publication);
    }

    /// The bandwidth estimate of the subscriber's connection.
    pub(crate) fn on_bandwidth(&mut self, now: Instant, media: &mut Media<'_>, bps: u64) {
        self.allocate(now, media, bps);
    }

    /// Every subscription of the subscriber, with its publication.
    fn each<'m>(
        &'m self,
        publications: &'m HashMap<PublicationId, Publication>,
    ) -> impl Iterator<Item = (&'m Publication, &'m Subscription)> + 'm {
        self.subscriptions.iter().filter_map(|(p, s)| {
            let publication = publications.get(p)?;
            Some((publication, publication.subscription(*s)?))
        })
    }

    /// The subscriber's simulcast video subscriptions that receive a layer: (publication,
    /// subscription, the spatial layer received).
    fn receiving_simulcast(
        &self,
        publications: &HashMap<PublicationId, Publication>,
    ) -> Vec<(PublicationId, SubscriptionId, u8)> {
        self.each(publications)
            .filter(|(p, _)| p.kind() == MediaKind::Video && p.layer_count() > 1)
            .filter_map(|(p, s)| s.current_layer().map(|c| (p.id, s.id(), c)))
            .collect()
    }

    /// Packets forwarded to the subscriber so far, over all its subscriptions.
    fn forwarded(&self, publications: &HashMap<PublicationId, Publication>) -> u64 {
        self.each(publications)
            .map(|(_, s)| s.stats().forwarded_packets)
            .sum()
    }

    /// What the subscriber's subscriptions cost at the layers they receive now.
    fn sent_rate(&self, now: Instant, media: &mut Media<'_>) -> u64 {
        let mut total = 0;
        for (publication, id) in &self.subscriptions {
            let Some(publication) = media.publications.get_mut(publication) else {
                continue;
            };
            let Some(subscription) = publication.subscription(*id) else {
                continue;
            };
            if subscription.paused() {
                continue;
            }
            if publication.kind() != MediaKind::Video {
                // At the rate the allocator budgets it: a silent or new audio track has no
                // measured rate, and its layer's fallback is video's.
                total += AUDIO_BPS;
                continue;
            }
            let Some(spatial) = subscription.current_layer() else {
                continue;
            };
            let temporal = subscription.current_temporal();
            let rates = publication.temporal_bitrates(now);
            total += rates
                .get(usize::from(spatial))
                .and_then(|r| r.get(usize::from(temporal.min(TOP_TEMPORAL_LAYER))))
                .copied()
                .unwrap_or(0);
        }
        total
    }

    /// Whether the subscriber's path is being probed, or was until lately: a queue now is the
    /// probe's (its feedback comes after it ended).
    fn probing(&self, now: Instant) -> bool {
        self.last_probe
            .is_some_and(|at| now.saturating_duration_since(at) <= PROBE_DURATION + PROBE_REMB_ECHO)
    }

    /// A congestion signal: the transport is told, and nothing moves up for `hold` (at least
    /// [`CONGESTION_DRAIN`] while the queue drains).
    fn hold_upgrades_after_congestion(
        &mut self,
        now: Instant,
        outputs: &mut VecDeque<Output>,
        hold: Duration,
    ) {
        outputs.push_back(Output::PathCongested {
            subscriber: self.subscriber,
        });
        let until = now + hold;
        let held = self.upgrades_held.get_or_insert(until);
        *held = (*held).max(until);
    }
}
