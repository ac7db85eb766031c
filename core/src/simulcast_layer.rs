//! One simulcast layer (spatial encoding) of a publication: its own SSRC, sequence and
//! timestamp spaces, keyframe-request throttle, liveness and bitrate (in total and up to each
//! temporal layer).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::dedup::SeenWindow;
use super::ids::Ssrc;
use super::keyframe_requests::KeyframeThrottle;
use super::packet::DropReason;
use super::rewrite::seq::SeqUnwrapper;
use super::rewrite::timestamp::{ExtTs, TsUnwrapper};
use super::temporal::TEMPORAL_LAYERS;

/// A layer that sent nothing for this long is considered stopped (the publisher paused it,
/// or its uplink cannot carry it); subscriptions on it fall back to a live layer. Chrome
/// sends every layer at the camera frame rate, so a real gap this long is not jitter.
pub(crate) const LAYER_STALL: Duration = Duration::from_millis(500);

/// Late packets of a replaced SSRC are dropped for this long instead of being taken for a
/// switch back.
const STALE_INCARNATION_GRACE: Duration = Duration::from_secs(2);

/// Bitrate is measured over this window.
const RATE_WINDOW: Duration = Duration::from_millis(1000);

/// Bitrates assumed for a layer that has not been measured (it is paused), by spatial index;
/// the browser SDK's default encodings.
const DEFAULT_LAYER_BPS: [u64; 3] = [150_000, 500_000, 1_500_000];

#[derive(Clone, Debug)]
pub(crate) struct Incarnation {
    pub id: u64,
    pub ssrc: Ssrc,
    pub seq: SeqUnwrapper,
    pub ts: TsUnwrapper,
    pub seen: SeenWindow,
}

/// Per mille of a layer's bytes in temporal layers 0..=t, for t = 0, 1, 2 (cumulative).
type TemporalShares = [u64; TEMPORAL_LAYERS as usize];

/// Without a measurement, a layer is taken to have no temporal layers: every step costs all.
const UNLAYERED: TemporalShares = [1000; TEMPORAL_LAYERS as usize];

/// Payload bytes received per instant, and per temporal layer, over the last [`RATE_WINDOW`].
#[derive(Clone, Debug, Default)]
struct RateMeter {
    samples: VecDeque<(Instant, u32, u8)>,
    bytes: u64,
    bytes_by_temporal: [u64; TEMPORAL_LAYERS as usize],
}

impl RateMeter {
    /// `temporal`: the packet's TID (0 without one: everything else is the base layer).
    fn add(&mut self, now: Instant, bytes: usize, temporal: u8) {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        let temporal = temporal.min(TEMPORAL_LAYERS - 1);
        self.samples.push_back((now, bytes, temporal));
        self.bytes += u64::from(bytes);
        self.bytes_by_temporal[usize::from(temporal)] += u64::from(bytes);
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, bytes, temporal)) = self.samples.front().copied() {
            if now.saturating_duration_since(at) <= RATE_WINDOW {
                break;
            }
            self.samples.pop_front();
            self.bytes -= u64::from(bytes);
            self.bytes_by_temporal[usize::from(temporal)] -= u64::from(bytes);
        }
    }

    fn temporal_shares(&self) -> TemporalShares {
        if self.bytes == 0 {
            return UNLAYERED;
        }
        let mut shares = UNLAYERED;
        let mut cumulative = 0;
        for (share, bytes) in shares.iter_mut().zip(self.bytes_by_temporal) {
            cumulative += bytes;
            *share = cumulative * 1000 / self.bytes;
        }
        shares
    }

    fn bits_per_second(&self) -> u64 {
        self.bytes * 8 * 1000 / RATE_WINDOW.as_millis() as u64
    }
}

#[derive(Clone, Debug)]
pub(crate) struct SimulcastLayer {
    pub index: u8,
    pub incarnation: Option<Incarnation>,
    replaced: Option<(Ssrc, Instant)>,
    pub throttle: KeyframeThrottle,
    last_packet_at: Option<Instant>,
    rate: RateMeter,
    /// Highest bitrate measured while the layer was live, for when it is paused.
    last_known_bps: Option<u64>,
    /// How that bitrate splits over temporal layers, from the last full window.
    last_known_shares: TemporalShares,
    pub last_keyframe: Option<(u64, ExtTs)>,
    /// A packet above temporal layer 0 arrived: the encoder sends temporal layers.
    pub saw_temporal_layers: bool,
}

impl SimulcastLayer {
    pub(crate) fn new(index: u8, keyframe_request_interval: Duration) -> Self {
        SimulcastLayer {
            index,
            incarnation: None,
            replaced: None,
            throttle: KeyframeThrottle::new(keyframe_request_interval),
            last_packet_at: None,
            rate: RateMeter::default(),
            last_known_bps: None,
            last_known_shares: UNLAYERED,
            last_keyframe: None,
            saw_temporal_layers: false,
        }
    }

    pub(crate) fn ssrc(&self) -> Option<Ssrc> {
        self.incarnation.as_ref().map(|s| s.ssrc)
    }

    pub(crate) fn is_live(&self, now: Instant) -> bool {
        self.last_packet_at
            .is_some_and(|at| now.saturating_duration_since(at) < LAYER_STALL)
    }

    /// Records an arrival of a packet of temporal layer `temporal`; returns true when the
    /// layer was not live before it.
    pub(crate) fn record_arrival(&mut self, now: Instant, bytes: usize, temporal: u8) -> bool {
        let was_live = self.is_live(now);
        self.last_packet_at = Some(now);
        self.rate.add(now, bytes, temporal);
        // Only a full window is a measurement; the first second of a layer under-counts.
        if self
            .rate
            .samples
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) >= RATE_WINDOW * 9 / 10)
        {
            let bps = self.rate.bits_per_second();
            self.last_known_bps = Some(
                self.last_known_bps
                    .map_or(bps, |known| known.max(bps) * 7 / 8 + bps / 8),
            );
            self.last_known_shares = self.rate.temporal_shares();
        }
        !was_live
    }

    /// What forwarding this layer costs, in bits per second.
    pub(crate) fn bitrate(&mut self, now: Instant) -> u64 {
        self.rate.expire(now);
        let fallback = DEFAULT_LAYER_BPS
            .get(usize::from(self.index))
            .copied()
            .unwrap_or(2_500_000);
        if self.is_live(now) {
            self.last_known_bps
                .unwrap_or_else(|| self.rate.bits_per_second().max(fallback))
        } else {
            self.last_known_bps.unwrap_or(fallback)
        }
    }

    /// What forwarding temporal layers 0..=t of this layer costs, for t = 0, 1, 2 (the last
    /// is [`bitrate`](SimulcastLayer::bitrate)). Measured shares of the last full window; a layer
    /// without temporal layers costs its full bitrate at every step.
    pub(crate) fn temporal_bitrates(&mut self, now: Instant) -> [u64; TEMPORAL_LAYERS as usize] {
        let total = self.bitrate(now);
        self.last_known_shares.map(|share| total * share / 1000)
    }

    /// The incarnation (SSRC epoch) a packet with `ssrc` belongs to, starting a new one on a new
    /// SSRC. `next_incarnation_id` numbers incarnations across all layers of the publication.
    pub(crate) fn incarnation_for(
        &mut self,
        now: Instant,
        ssrc: Ssrc,
        next_incarnation_id: &mut u64,
    ) -> Result<(&mut Incarnation, bool), DropReason> {
        let current = self.ssrc();
        let mut changed = false;
        if current != Some(ssrc) {
            if let Some((replaced, at)) = self.replaced
                && replaced == ssrc
                && now.saturating_duration_since(at) < STALE_INCARNATION_GRACE
            {
                return Err(DropReason::StaleIncarnation);
            }
            if let Some(current) = current {
                tracing::debug!(layer = self.index, from = %current, to = %ssrc, "incarnation change");
                self.replaced = Some((current, now));
                changed = true;
            }
            let id = *next_incarnation_id;
            *next_incarnation_id += 1;
            self.incarnation = Some(Incarnation {
                id,
                ssrc,
                seq: SeqUnwrapper::default(),
                ts: TsUnwrapper::default(),
                seen: SeenWindow::default(),
            });
        }
        let incarnation = self
            .incarnation
            .as_mut()
            .expect("invariant: the incarnation was just checked or created");
        Ok((incarnation, changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_arrivals() {
        let start = Instant::now();
        let mut layer = SimulcastLayer::new(0, Duration::from_millis(500));
        assert!(!layer.is_live(start));
        assert!(
            layer.record_arrival(start, 100, 0),
            "first arrival makes it live"
        );
        assert!(!layer.record_arrival(start + Duration::from_millis(30), 100, 0));
        assert!(layer.is_live(start + LAYER_STALL));
        assert!(!layer.is_live(start + Duration::from_millis(30) + LAYER_STALL));
        assert!(
            layer.record_arrival(start + Duration::from_secs(5), 100, 0),
            "live again"
        );
    }

    #[test]
    fn bitrate_is_measured_over_a_full_window_and_remembered_while_paused() {
        let start = Instant::now();
        let mut layer = SimulcastLayer::new(1, Duration::from_millis(500));
        assert_eq!(layer.bitrate(start), 500_000, "unmeasured: the default");
        // 100 packets of 1250 bytes over one second = 1 Mb/s.
        for i in 0..=100u64 {
            layer.record_arrival(start + Duration::from_millis(i * 10), 1250, 0);
        }
        let now = start + Duration::from_millis(1000);
        let live = layer.bitrate(now);
        assert!((900_000..=1_100_000).contains(&live), "{live}");
        let paused = layer.bitrate(now + Duration::from_secs(10));
        assert_eq!(paused, live, "a paused layer keeps its last measurement");
        assert_eq!(
            layer.temporal_bitrates(now),
            [live; 3],
            "no temporal layers: every step costs all"
        );
    }

    #[test]
    fn temporal_bitrates_are_cumulative_shares() {
        let start = Instant::now();
        let mut layer = SimulcastLayer::new(2, Duration::from_millis(500));
        // L1T3 at 30 fps: TIDs 0 2 1 2; base frames twice the size of the others.
        for i in 0..=30u64 {
            let tid = [0, 2, 1, 2][(i % 4) as usize];
            let bytes = if tid == 0 { 2000 } else { 1000 };
            layer.record_arrival(start + Duration::from_millis(i * 33), bytes, tid);
        }
        let now = start + Duration::from_millis(990);
        let [t0, t1, all] = layer.temporal_bitrates(now);
        assert_eq!(all, layer.bitrate(now));
        assert!(t0 < t1 && t1 < all, "{t0} {t1} {all}");
        // 8 base frames of 2000 bytes out of 8*2000 + 23*1000 = 39000.
        assert!((395..=425).contains(&(t0 * 1000 / all)), "{t0} of {all}");
    }
}
