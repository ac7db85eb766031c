//! A fast congestion signal for subscriber connections: the core's standing-queue detector
//! ([`QueueDelayDetector`]) run beside GCC on the same transport-wide feedback, and the
//! per-connection [`PathState`] the retransmission repeater reads.

use std::time::{Duration, Instant};

use crate::core::downlink::queue_delay::{Congestion, PacketFeedback, QueueDelayDetector};
use rtc::interceptor::{BandwidthEstimator, EstimatorStats, PacketReport};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::interceptors::BandwidthEstimate;
use super::probe::ProbeControl;
use std::sync::Arc;

/// How long after a congestion signal the path counts as congested for [`PathState`].
const CONGESTED_FOR: Duration = Duration::from_secs(2);

/// What the rest of a subscriber connection's chain should know about its path: whether it was
/// just found congested (the retransmission repeater then stops doubling its repairs, which
/// would only deepen the queue the step-down is draining).
#[derive(Debug, Default)]
pub struct PathState {
    congested_until: std::sync::Mutex<Option<Instant>>,
}

impl PathState {
    pub fn mark_congested(&self, now: Instant) {
        if let Ok(mut until) = self.congested_until.lock() {
            *until = Some(now + CONGESTED_FOR);
        }
    }

    pub fn congested(&self, now: Instant) -> bool {
        self.congested_until
            .lock()
            .ok()
            .and_then(|until| *until)
            .is_some_and(|until| now < until)
    }
}

/// GCC with a [`QueueDelayDetector`] beside it. GCC's estimate is passed on unchanged (it
/// drives upgrades); a congestion signal goes to the application as a [`Congestion`].
pub struct QueueDelayWatch<E> {
    estimator: E,
    detector: QueueDelayDetector,
    events: mpsc::Sender<Congestion>,
    /// A running probe stops at the first sign of a queue, before the application hears of it.
    probe: Arc<ProbeControl>,
    path: Arc<PathState>,
    /// GCC's target after each update, for a driver that reads it without a stats report.
    estimate: Arc<BandwidthEstimate>,
}

impl<E: BandwidthEstimator> QueueDelayWatch<E> {
    pub fn new(
        estimator: E,
        events: mpsc::Sender<Congestion>,
        probe: Arc<ProbeControl>,
        path: Arc<PathState>,
        estimate: Arc<BandwidthEstimate>,
    ) -> Self {
        Self {
            estimator,
            detector: QueueDelayDetector::default(),
            events,
            probe,
            path,
            estimate,
        }
    }
}

impl<E: BandwidthEstimator> BandwidthEstimator for QueueDelayWatch<E> {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.estimator.on_reports(now, reports);
        self.estimate.set(self.estimator.target_bitrate());
        let probing = self.probe.running(now);
        if let Some(mut congestion) = self.detector.on_reports(
            now,
            reports.iter().map(|report| PacketFeedback {
                departure: report.departure,
                arrival: report.arrival.filter(|_| report.arrived),
                size: report.size,
            }),
            probing,
        ) {
            // A probe that ended a moment ago may still be what the queue holds.
            congestion.during_probe = self.probe.stop(now) || probing;
            self.path.mark_congested(now);
            debug!(?congestion, "subscriber path congested");
            if let Err(err) = self.events.try_send(congestion) {
                warn!(%err, "congestion signal dropped");
            }
        }
    }

    fn target_bitrate(&self) -> f64 {
        self.estimator.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.estimator.handle_timeout(now);
        self.estimate.set(self.estimator.target_bitrate());
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.estimator.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.estimator.stats()
    }
}
