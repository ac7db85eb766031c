//! Where one RTMP session's timestamps go on the stream's timeline (milliseconds), for audio and
//! video at once, so RTP timestamps towards viewers stay monotonic and continuous.
//!
//! RTMP timestamps are 32-bit milliseconds that wrap after 49 days and may step back a little.
//! An encoder's clock may also jump: back to 0 when its timeline restarts, or far ahead. Passed
//! on, a backward jump makes Chromium hold every frame until the timestamps catch up (a 3 s
//! freeze was seen) and a forward one stalls playout just as long. So a step of one track's
//! timestamps that real time cannot explain is a jump: the session's offset is rebased there,
//! which moves both tracks by the same amount, and A/V sync holds.

use std::time::Instant;

use tracing::{debug, warn};

use crate::core::MediaKind;

/// A track's timestamps stepping back further than this is a jump. Encoders' small steps back
/// (rounding, audio interleaving) stay below it.
const BACKWARD_JUMP_MS: i64 = 200;
/// A track's timestamps advancing this much more than the real time since its last message
/// is a jump. A stall on the way only delays messages (their timestamps advance less than real
/// time); a burst advances each message by one frame interval.
const FORWARD_JUMP_MS: i64 = 1_000;

/// The last message of one track on the stream's timeline.
#[derive(Debug, Clone, Copy)]
struct Last {
    stream_ms: i64,
    arrived: Instant,
}

/// One RTMP session's mapping onto the stream's timeline: stream ms = RTMP ms (extended past
/// its wrap) + `offset_ms`.
#[derive(Debug)]
pub(super) struct SessionTimeline {
    /// Where the session's first timestamp lands: `None` keeps the RTMP timestamps as they are
    /// (a stream's first session); a reconnect continues where the last session stopped.
    start_ms: Option<i64>,
    offset_ms: Option<i64>,
    /// The last RTMP timestamp seen (audio or video) and its extension to 64 bits.
    last_raw: Option<(u32, i64)>,
    video: Option<Last>,
    audio: Option<Last>,
    jumps: u64,
}

impl SessionTimeline {
    /// A stream's first session: RTMP timestamps are the timeline.
    pub(super) fn first() -> Self {
        Self {
            start_ms: None,
            offset_ms: None,
            last_raw: None,
            video: None,
            audio: None,
            jumps: 0,
        }
    }

    /// A reconnected encoder's session: its first timestamp (audio or video) lands at
    /// `start_ms`.
    pub(super) fn resumed(start_ms: i64) -> Self {
        Self {
            start_ms: Some(start_ms),
            ..Self::first()
        }
    }

    /// The stream position of a `kind` message with RTMP timestamp `timestamp_ms` that
    /// arrived at `now`. A jump is rebased (see the module docs) and logged.
    pub(super) fn place(&mut self, kind: MediaKind, now: Instant, timestamp_ms: u32) -> i64 {
        let extended = match self.last_raw {
            None => i64::from(timestamp_ms),
            Some((raw, ext)) => ext + i64::from(timestamp_ms.wrapping_sub(raw) as i32),
        };
        self.last_raw = Some((timestamp_ms, extended));
        let offset = *self
            .offset_ms
            .get_or_insert_with(|| self.start_ms.map_or(0, |start| start - extended));
        let mut stream_ms = extended + offset;
        let last = match kind {
            MediaKind::Video => self.video,
            MediaKind::Audio => self.audio,
        };
        if let Some(last) = last {
            let elapsed_ms = i64::try_from(now.saturating_duration_since(last.arrived).as_millis())
                .unwrap_or(i64::MAX / 4);
            let step_ms = stream_ms - last.stream_ms;
            if step_ms < -BACKWARD_JUMP_MS || step_ms - elapsed_ms > FORWARD_JUMP_MS {
                // Continue from the track's last message by the real time since it, and at
                // least a millisecond, so no two frames share a timestamp.
                let continued_ms = last.stream_ms + elapsed_ms.max(1);
                self.offset_ms = Some(offset + continued_ms - stream_ms);
                stream_ms = continued_ms;
                self.jumps += 1;
                if self.jumps == 1 {
                    warn!(
                        ?kind,
                        step_ms,
                        rtmp_ms = timestamp_ms,
                        "the encoder's timestamps jumped: RTP timestamps continue from the \
                         last frame, audio and video alike"
                    );
                } else {
                    debug!(
                        ?kind,
                        step_ms,
                        rtmp_ms = timestamp_ms,
                        jumps = self.jumps,
                        "encoder timestamp jump rebased"
                    );
                }
            }
        }
        let placed = Some(Last {
            stream_ms,
            arrived: now,
        });
        match kind {
            MediaKind::Video => self.video = placed,
            MediaKind::Audio => self.audio = placed,
        }
        stream_ms
    }

    /// The stream's latest position (audio or video, whichever is later); where the session
    /// started if it placed nothing yet.
    pub(super) fn last_ms(&self) -> i64 {
        match (self.video, self.audio) {
            (Some(v), Some(a)) => v.stream_ms.max(a.stream_ms),
            (Some(last), None) | (None, Some(last)) => last.stream_ms,
            (None, None) => self.start_ms.unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const VIDEO: MediaKind = MediaKind::Video;
    const AUDIO: MediaKind = MediaKind::Audio;

    #[test]
    fn timestamps_extend_across_the_wrap_and_small_steps_back() {
        let now = Instant::now();
        let mut timeline = SessionTimeline::first();
        assert_eq!(timeline.place(VIDEO, now, 100), 100);
        assert_eq!(timeline.place(VIDEO, now, 90), 90);
        assert_eq!(timeline.place(VIDEO, now, u32::MAX - 5), -6);
        let mut timeline = SessionTimeline::first();
        assert_eq!(
            timeline.place(VIDEO, now, u32::MAX - 5),
            i64::from(u32::MAX) - 5
        );
        assert_eq!(timeline.place(VIDEO, now, 10), i64::from(u32::MAX) + 11);
    }

    #[test]
    fn a_resumed_session_starts_where_it_is_told_for_both_tracks() {
        let now = Instant::now();
        let mut timeline = SessionTimeline::resumed(5_000);
        assert_eq!(timeline.last_ms(), 5_000);
        assert_eq!(timeline.place(AUDIO, now, 70_000), 5_000);
        assert_eq!(timeline.place(VIDEO, now, 70_010), 5_010);
        assert_eq!(timeline.last_ms(), 5_010);
    }

    /// 30 fps video and 20 ms audio from RTMP time `from_ms`, arriving in real time from `at`.
    fn stream(timeline: &mut SessionTimeline, at: Instant, from_ms: u32, ms: u32) -> Vec<i64> {
        (0..ms)
            .step_by(10)
            .filter_map(|t| {
                let kind = match (t % 30 == 0, t % 20 == 0) {
                    (true, _) => VIDEO,
                    (false, true) => AUDIO,
                    _ => return None,
                };
                let arrived = at + Duration::from_millis(u64::from(t));
                Some(timeline.place(kind, arrived, from_ms + t))
            })
            .collect()
    }

    #[test]
    fn jumps_back_and_ahead_are_rebased_on_real_time_for_both_tracks() {
        for (jump, to_ms) in [("back", 1_000), ("ahead", 3_650_000)] {
            let t0 = Instant::now();
            let mut timeline = SessionTimeline::first();
            let before = stream(&mut timeline, t0, 50_000, 990);
            assert_eq!(before.last(), Some(&50_980));
            // The encoder's clock jumps between two messages 20 ms apart.
            let after = stream(&mut timeline, t0 + Duration::from_millis(1_000), to_ms, 990);
            assert_eq!(after[0], 51_000, "{jump}: video continues by the real time");
            assert_eq!(after[1], 51_020, "{jump}: audio moved by the same offset");
            assert!(after.windows(2).all(|w| w[1] > w[0]), "{jump}: {after:?}");
            assert_eq!(timeline.jumps, 1, "{jump}: one jump, found by one track");
        }
    }

    #[test]
    fn stalls_bursts_and_slow_frame_rates_are_not_jumps() {
        let t0 = Instant::now();
        let mut timeline = SessionTimeline::first();
        stream(&mut timeline, t0, 0, 1_000);
        // The connection stalls 3 s, then the backlog arrives at once.
        let burst = t0 + Duration::from_secs(4);
        for i in 1..=90 {
            assert_eq!(
                timeline.place(VIDEO, burst, 990 + i * 33),
                i64::from(990 + i * 33)
            );
        }
        // One frame every 2 s.
        for i in 1..=3 {
            let at = burst + Duration::from_secs(2 * u64::from(i));
            let ms = 990 + 90 * 33 + i * 2_000;
            assert_eq!(timeline.place(VIDEO, at, ms), i64::from(ms));
        }
        assert_eq!(timeline.jumps, 0);
    }
}
