//! Counters of one RTMP stream, kept across reconnects within the grace period.

use std::sync::atomic::{AtomicU64, Ordering};

/// Updated by the stream's connection task, read by anyone (`RtmpServer::stats`).
#[derive(Debug, Default)]
pub struct StreamStats {
    video_frames: AtomicU64,
    keyframes: AtomicU64,
    reordered_frames: AtomicU64,
    audio_frames: AtomicU64,
    audio_errors: AtomicU64,
    sessions: AtomicU64,
    unannounced_packets: AtomicU64,
}

/// A copy of a stream's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStatsSnapshot {
    /// H.264 access units forwarded.
    pub video_frames: u64,
    pub keyframes: u64,
    /// Frames presented at another time than decoded: the encoder uses B-frames.
    pub reordered_frames: u64,
    /// AAC frames converted to Opus.
    pub audio_frames: u64,
    /// AAC frames that did not decode (skipped).
    pub audio_errors: u64,
    /// RTMP sessions that fed this stream (more than one after a resume).
    pub sessions: u64,
    /// RTP packets dropped because their track or rendition was not published (yet).
    pub unannounced_packets: u64,
}

impl StreamStats {
    pub fn count_video_frame(&self, keyframe: bool, reordered: bool) {
        self.video_frames.fetch_add(1, Ordering::Relaxed);
        if keyframe {
            self.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        if reordered {
            self.reordered_frames.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn count_audio_frame(&self) {
        self.audio_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an AAC frame that did not decode; returns how many have failed so far.
    pub fn count_audio_error(&self) -> u64 {
        self.audio_errors.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn count_unannounced_packet(&self) {
        self.unannounced_packets.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_session(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StreamStatsSnapshot {
        StreamStatsSnapshot {
            video_frames: self.video_frames.load(Ordering::Relaxed),
            keyframes: self.keyframes.load(Ordering::Relaxed),
            reordered_frames: self.reordered_frames.load(Ordering::Relaxed),
            audio_frames: self.audio_frames.load(Ordering::Relaxed),
            audio_errors: self.audio_errors.load(Ordering::Relaxed),
            sessions: self.sessions.load(Ordering::Relaxed),
            unannounced_packets: self.unannounced_packets.load(Ordering::Relaxed),
        }
    }
}
