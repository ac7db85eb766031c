//! Per-track receive windows and percentile summaries.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::media;

/// Which stamp a track's latency and loss come from (see [`crate::media`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampMode {
    /// Every packet's trailer (RTP-level forwarders).
    PacketTrailer,
    /// The stamp at the start of each video frame (frame-level forwarders).
    FrameStamp,
}

/// What one receiving track saw since the last [`TrackStats::take`].
#[derive(Debug, Default)]
pub struct Window {
    pub packets: u64,
    /// Stamped units (packets or frames) seen.
    pub stamped: u64,
    /// The range of stamp indices seen, per index space: a simulcast publisher numbers each
    /// layer in its own space (the top two bits, see [`crate::media::layer_index_base`]), so
    /// a subscriber moved between layers is not counted as losing the gap between them.
    pub ranges: [Option<(u32, u32)>; 4],
    pub latencies_us: Vec<u32>,
}

impl Window {
    /// Units the sender emitted in the seen index ranges (0 when nothing was seen).
    pub fn expected(&self) -> u64 {
        self.ranges
            .iter()
            .flatten()
            .map(|(min, max)| u64::from(max.saturating_sub(*min)) + 1)
            .sum()
    }

    fn see(&mut self, index: u32) {
        let range = &mut self.ranges[(index >> 30) as usize];
        *range = Some(match *range {
            None => (index, index),
            Some((min, max)) => (min.min(index), max.max(index)),
        });
    }
}

/// Counters of one receiving track, shared between its reader task and the harness.
#[derive(Debug)]
pub struct TrackStats {
    mode: StampMode,
    window: Mutex<Window>,
    first_packet_ns: AtomicU64,
}

impl TrackStats {
    pub fn new(mode: StampMode) -> Self {
        Self {
            mode,
            window: Mutex::new(Window::default()),
            first_packet_ns: AtomicU64::new(0),
        }
    }

    /// Records one received RTP payload (video when `video`).
    pub fn record(&self, payload: &[u8], video: bool) {
        let now = media::now_ns();
        let _ = self
            .first_packet_ns
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        let stamp = match (self.mode, video) {
            (StampMode::FrameStamp, true) => media::read_frame_stamp(payload),
            _ => media::read_trailer(payload),
        };
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        w.packets += 1;
        if let Some((index, sent)) = stamp {
            w.stamped += 1;
            w.see(index);
            let us = now.saturating_sub(sent) / 1000;
            w.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }

    pub fn take(&self) -> Window {
        std::mem::take(&mut *self.window.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// When the first packet arrived (ns since the media epoch), if any did.
    pub fn first_packet_ns(&self) -> Option<u64> {
        match self.first_packet_ns.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}

/// p50/p99/max of a sample, in the sample's unit.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut sample: Vec<f64>) -> Self {
        sample.retain(|v| v.is_finite());
        if sample.is_empty() {
            return Self::default();
        }
        sample.sort_by(f64::total_cmp);
        let at = |q: f64| sample[((sample.len() - 1) as f64 * q).round() as usize];
        Self {
            count: sample.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_sample() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p99, p.max, p.count), (51.0, 99.0, 100.0, 100));
        assert_eq!(Percentiles::of(vec![]).count, 0);
    }
}
