//! Where an RTMP stream's latency goes inside Sluice, from timestamps the pipeline already has:
//! each message's arrival against the instant its media was sampled (the stream clock's
//! `sampled_at`), and each packet's departure against the same instant.
//!
//! The stream clock takes the earliest arrival (of either track) as "no delay", so an arrival
//! figure is how much later than the stream's quickest message this one came: a track the
//! encoder holds back (its muxer waits to interleave, its audio encoder looks ahead) shows
//! here. Logged at `DEBUG` once per window; nothing is kept beyond one window.

use std::time::{Duration, Instant};

use tracing::debug;

use crate::core::MediaKind;

/// How often the figures are logged, and the span each one covers.
const WINDOW: Duration = Duration::from_secs(5);

/// Milliseconds observed for one stage within the current window.
#[derive(Debug, Default)]
struct Stage(Vec<f64>);

impl Stage {
    fn add(&mut self, delay: Duration) {
        self.0.push(delay.as_secs_f64() * 1_000.0);
    }

    /// `p50/max` in whole milliseconds, or `-` when the window saw nothing.
    fn summary(&mut self) -> String {
        if self.0.is_empty() {
            return "-".to_owned();
        }
        self.0.sort_by(f64::total_cmp);
        let p50 = self.0[self.0.len() / 2];
        let max = self.0[self.0.len() - 1];
        self.0.clear();
        format!("{p50:.0}/{max:.0}")
    }
}

/// The per-stage delays of one stream (see the module docs).
#[derive(Debug, Default)]
pub(super) struct IngestLatency {
    window_start: Option<Instant>,
    /// A video message's arrival after its frame's sampled instant.
    video_arrival: Stage,
    /// An AAC message's arrival after the sampled instant of its first sample.
    audio_arrival: Stage,
    /// An Opus packet's departure after the sampled instant of its first sample: its 20 ms,
    /// the AAC frame it waited for, the resampler's chunking and the codecs' work.
    audio_departure: Stage,
}

impl IngestLatency {
    /// A `kind` message whose media was sampled at `sampled_at` arrived at `now`.
    pub(super) fn arrived(&mut self, kind: MediaKind, now: Instant, sampled_at: Option<Instant>) {
        let Some(sampled_at) = sampled_at else { return };
        let delay = now.saturating_duration_since(sampled_at);
        match kind {
            MediaKind::Video => self.video_arrival.add(delay),
            MediaKind::Audio => self.audio_arrival.add(delay),
        }
        self.maybe_log(now);
    }

    /// An Opus packet of media sampled at `sampled_at` leaves ingest at `now`.
    pub(super) fn audio_departed(&mut self, now: Instant, sampled_at: Option<Instant>) {
        if let Some(sampled_at) = sampled_at {
            self.audio_departure
                .add(now.saturating_duration_since(sampled_at));
        }
    }

    fn maybe_log(&mut self, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_duration_since(start) < WINDOW {
            return;
        }
        self.window_start = Some(now);
        debug!(
            video_arrival_ms = %self.video_arrival.summary(),
            audio_arrival_ms = %self.audio_arrival.summary(),
            opus_departure_ms = %self.audio_departure.summary(),
            "ingest latency (p50/max over 5 s, after the stream's earliest arrival)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_summarises_and_forgets() {
        let mut stage = Stage::default();
        assert_eq!(stage.summary(), "-");
        for ms in [5, 1, 9] {
            stage.add(Duration::from_millis(ms));
        }
        assert_eq!(stage.summary(), "5/9");
        assert_eq!(stage.summary(), "-");
    }
}
