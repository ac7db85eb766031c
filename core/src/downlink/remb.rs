//! Clients without transport-wide feedback: their REMB and the round trips of their receiver
//! reports, read as congestion signals and as room to probe the next layer.

use std::time::{Duration, Instant};

use tracing::{debug, trace};

use super::round_trip::Reading;
use super::{Downlink, Media};

/// A REMB that falls below this share of what its subscriber is sent means congestion. On overuse
/// libwebrtc's receiver lowers its REMB to 85 % of what it receives; after a step-down it
/// grows again towards 150 % of it, so a tighter threshold would read its recovery as
/// more congestion.
const REMB_CONGESTED_PERCENT: u64 = 75;
/// A REMB this much below the one before it is a fall (libwebrtc sends a new REMB at once
/// when its estimate drops by 3 % or more).
const REMB_FALL_PERCENT: u64 = 97;
/// A REMB this far above what is sent means the client saw no queue at this rate.
const REMB_UNCONGESTED_PERCENT: u64 = 130;
/// What an uncongested REMB lets the allocator try, as a multiple of what is sent: the next
/// layer up (h over q, f over h with Chrome's camera layers), never more in one step. Taken
/// from the REMB itself it would be f straight from q (a REMB holds its value for seconds after
/// a step-down), a probe that overruns a narrow path so far that the REMB collapses and grows
/// back only slowly (ADR 0022).
const REMB_UPGRADE_PERCENT: u64 = 400;
/// How long after a video restarts at a keyframe a queue in the round trip may be that
/// keyframe's burst (the report echoed must have crossed behind it, and comes with the client's
/// next REMB, 200–300 ms on).
const KEYFRAME_BURST: Duration = Duration::from_millis(500);

impl Downlink {
    /// A client's own downlink estimate (REMB). libwebrtc's receiver lets it grow to ~1.5× what
    /// it receives while nothing queues, and drops it to 85 % of what it receives on overuse.
    /// So: a REMB that falls to far below what is sent is congestion (any fall during a probe:
    /// the probe failed); above ~1.3× what is sent it means "not congested at this rate", which
    /// says nothing about the next layer up, so the allocator is told [`REMB_UPGRADE_PERCENT`]
    /// of what is sent and the upgrade goes through the usual hold and probe.
    /// (Without transport-wide feedback the probe's copies show only as the REMB falling.)
    pub(crate) fn on_remb(&mut self, now: Instant, media: &mut Media<'_>, remb: u64) {
        // The REMB covers every stream the client receives, audio too (at low video rates
        // audio is a third of it).
        let sent = self.sent_rate(now, media);
        let subscriber = self.subscriber;
        debug!(%subscriber, remb, sent, "REMB");
        if sent == 0 {
            // Nothing subscribed (or a REMB that arrived after its subscriber left): no
            // baseline is kept for it.
            return;
        }
        let previous = self.last_remb.replace(remb);
        let probing = self.probing(now);
        // libwebrtc lowers its REMB only on overuse (or to 1.5× what arrives, when that
        // falls). A REMB that merely stays below what is sent is lagging behind an upgrade
        // (it grows by ~8 % a second): read as congestion, it would step a subscriber straight
        // back down from the layer it had just been given.
        // Chrome may send its first REMB only once it has seen overuse (ADR 0022): the first
        // one is measured against what is sent.
        let before = previous.unwrap_or(sent);
        let fell = remb.saturating_mul(100) < before.saturating_mul(REMB_FALL_PERCENT);
        if probing && fell {
            // The media holds still during a probe: the fall is the probe's queue.
            debug!(%subscriber, remb, ?previous, sent, "REMB fell during a probe");
            self.on_probe_failed(now, media, sent);
        } else if fell && remb.saturating_mul(100) < sent.saturating_mul(REMB_CONGESTED_PERCENT) {
            debug!(%subscriber, remb, sent, "REMB below what is sent");
            // On overuse the REMB is 85 % of what arrived over the last second, which still
            // holds the time before the queue: even the REMB itself is above the path at first
            // (ADR 0022), so it is taken only as a bound.
            self.on_bounded_congestion(now, media, remb);
        } else if remb.saturating_mul(100) >= sent.saturating_mul(REMB_UNCONGESTED_PERCENT) {
            self.try_next_layer_up(now, media, sent);
        }
        // In between the REMB is still growing back towards 1.5× what arrives: no news.
    }

    /// A REMB client's round trip. A queue in it, outside a probe, is congestion, known only
    /// to be below what is sent (and below its last REMB); during a probe, the probe failed.
    /// The round trip grows from the first packet that waits in the queue, so it shows the
    /// queue before the REMB falls (ADR 0025). A clear one says what an uncongested REMB says:
    /// the next layer up may be probed. The REMB itself says so late: after congestion
    /// libwebrtc grows it by a few kbit/s a second, and may hold it flat for seconds after the
    /// path widened (ADR 0025).
    pub(crate) fn on_round_trip(
        &mut self,
        now: Instant,
        media: &mut Media<'_>,
        round_trip: Duration,
    ) {
        let sent = self.sent_rate(now, media);
        let subscriber = self.subscriber;
        if sent == 0 {
            // Nothing subscribed, or a report that arrived after its subscriber left: no watch
            // is kept for it.
            return;
        }
        let reading = self
            .round_trips
            .get_or_insert_with(Default::default)
            .on_round_trip(now, round_trip);
        trace!(%subscriber, ?round_trip, ?reading, "round trip");
        let queue = match reading {
            Reading::Queue(queue) if self.keyframe_burst(now, media) => {
                // Without a pacer a keyframe crosses the path as a burst: the queue it leaves
                // for a moment is no congestion (an upgrade's own keyframe would undo it).
                debug!(%subscriber, ?queue, "queue behind a keyframe: not acted on");
                return;
            }
            Reading::Queue(queue) => queue,
            Reading::Clear => {
                self.try_next_layer_up(now, media, sent);
                return;
            }
            Reading::Unsure => return,
        };
        debug!(%subscriber, ?round_trip, ?queue, sent, "queue in the round trip");
        if self.probing(now) {
            self.on_probe_failed(now, media, sent);
            return;
        }
        let bound = self.last_remb.map_or(sent, |remb| sent.min(remb));
        self.on_bounded_congestion(now, media, bound);
    }

    /// Whether a keyframe that restarted one of the subscriber's videos went out within
    /// [`KEYFRAME_BURST`].
    fn keyframe_burst(&self, now: Instant, media: &Media<'_>) -> bool {
        self.each(media.publications).any(|(_, s)| {
            s.restarted_at()
                .is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_BURST)
        })
    }

    /// A REMB client's path shows no queue at what it is sent: the allocator may try the next
    /// layer up (probed first), never more in one step.
    fn try_next_layer_up(&mut self, now: Instant, media: &mut Media<'_>, sent: u64) {
        self.allocate(now, media, sent.saturating_mul(REMB_UPGRADE_PERCENT) / 100);
    }
}
