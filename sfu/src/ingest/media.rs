//! One ingested stream's media: FLV tags (RTMP) or access units and audio frames (RTSP) in,
//! RTP packets out, both tracks on the source's one timeline (milliseconds), so audio and
//! video stay in sync.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::audio::{AudioError, AudioToOpus, OPUS_RATE, OpusFrame};
use super::clock::StreamClock;
use super::flv::{self, AudioTag, FlvError, VideoTag};
use super::latency::IngestLatency;
use super::renditions::{RenditionUpdate, VideoRenditions};
use super::stats::StreamStats;
use super::timeline::SessionTimeline;
use super::video::{self, VideoError, VideoUpdate};
use crate::core::{MediaKind, RtpPacket, Ssrc};
use crate::transport::CodecInfo;
use crate::transport::packetize::{H264Packetizer, OpusPacketizer};

#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Flv(#[from] FlvError),
    #[error(transparent)]
    Video(#[from] VideoError),
    #[error("AAC frame before the AAC sequence header (the encoder must send it first)")]
    NoAudioConfig,
}

/// What a parked stream keeps of its last session, so that the same encoder reconnecting
/// continues the same RTP sources: same SSRCs, contiguous sequence numbers, and timestamps
/// that advance by the time it was away, equally for audio and video. New sources per track
/// would each be placed by the routing core at its own arrival time, and Chromium's lip sync
/// would hold the video back by the audio/video arrival skew (ADR 0016).
#[derive(Debug)]
pub struct MediaCarry {
    /// Each video rendition's source by its track id.
    video: Vec<(u8, H264Packetizer)>,
    opus: OpusPacketizer,
    /// The stream timeline's last millisecond (audio or video, whichever is later).
    last_ms: i64,
    last_media_at: Instant,
    /// The stream timeline on the server's clock: a resumed session continues the timeline,
    /// so it continues the mapping too.
    clock: Option<StreamClock>,
}

/// What the caller must do before sending the packets of this call.
#[derive(Debug)]
pub enum Announce {
    Nothing,
    /// (Re)publish the track of `codec`'s kind with this codec, under this publication name.
    Codec {
        codec: CodecInfo,
        name: String,
        /// The RTP source of each simulcast layer, lowest resolution first; empty for a
        /// track of one layer.
        layers: Vec<Ssrc>,
    },
}

/// Which ingest protocol feeds a stream; it names the stream's publications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Rtmp,
    Rtsp,
}

impl Origin {
    /// How the application's events name this ingest.
    pub fn ingest_kind(self) -> crate::runtime::IngestKind {
        match self {
            Origin::Rtmp => crate::runtime::IngestKind::Rtmp,
            Origin::Rtsp => crate::runtime::IngestKind::Rtsp,
        }
    }

    /// The video publication's name. A stream with B-frames says so in it: viewers (the watch
    /// page) show a warning when they see "B-frames".
    pub fn video_name(self, b_frames: bool) -> &'static str {
        match (self, b_frames) {
            (Origin::Rtmp, false) => "rtmp video",
            (Origin::Rtmp, true) => "rtmp video (B-frames)",
            (Origin::Rtsp, false) => "rtsp video",
            (Origin::Rtsp, true) => "rtsp video (B-frames)",
        }
    }

    pub fn audio_name(self) -> &'static str {
        match self {
            Origin::Rtmp => "rtmp audio",
            Origin::Rtsp => "rtsp audio",
        }
    }
}

pub struct MediaPipeline {
    stats: Arc<StreamStats>,
    origin: Origin,
    video: VideoRenditions,
    /// Both tracks' RTMP timestamps on the stream's timeline.
    timeline: SessionTimeline,
    audio: Option<AudioToOpus>,
    /// Audio is not AAC or not decodable: ignored (the video still plays), said once.
    audio_disabled: bool,
    opus: OpusPacketizer,
    opus_frames: Vec<OpusFrame>,
    warned_reordering: bool,
    warned_rendition_codec: bool,
    /// An H.264 rendition's sequence header arrived.
    video_configured: bool,
    /// When the last audio or video frame arrived: a reconnect's "time away" counts from it
    /// (a connection that dies silently ends only at its idle timeout, seconds later).
    last_media_at: Option<Instant>,
    /// When each timeline position was sampled; set by the first audio or video frame.
    clock: Option<StreamClock>,
    latency: IngestLatency,
}

impl MediaPipeline {
    pub fn new(stats: Arc<StreamStats>, origin: Origin) -> Self {
        Self {
            stats,
            origin,
            video: VideoRenditions::default(),
            timeline: SessionTimeline::first(),
            audio: None,
            audio_disabled: false,
            opus: OpusPacketizer::default(),
            opus_frames: Vec::new(),
            warned_reordering: false,
            warned_rendition_codec: false,
            video_configured: false,
            last_media_at: None,
            clock: None,
            latency: IngestLatency::default(),
        }
    }

    /// The pipeline of a reconnected encoder, continuing the sources of `carry` (see
    /// [`MediaCarry`]).
    pub fn resume(
        stats: Arc<StreamStats>,
        origin: Origin,
        carry: MediaCarry,
        now: Instant,
    ) -> Self {
        let away = now.saturating_duration_since(carry.last_media_at);
        let mut pipeline = Self::new(stats, origin);
        pipeline.video = VideoRenditions::continuing(carry.video);
        pipeline.opus = carry.opus;
        pipeline.opus.restart_spurt();
        pipeline.clock = carry.clock;
        pipeline.timeline = SessionTimeline::resumed(
            carry
                .last_ms
                .saturating_add(i64::try_from(away.as_millis()).unwrap_or(i64::MAX / 2)),
        );
        pipeline
    }

    /// What a reconnect of the same encoder continues from.
    pub fn park(self, now: Instant) -> MediaCarry {
        let last_ms = self.timeline.last_ms();
        MediaCarry {
            video: self.video.park(),
            opus: self.opus,
            last_ms,
            last_media_at: self.last_media_at.unwrap_or(now),
            clock: self.clock,
        }
    }

    /// One RTMP video message (one or more renditions' tags): appends its packets to `out`.
    pub fn push_video(
        &mut self,
        now: Instant,
        timestamp_ms: u32,
        data: &[u8],
        out: &mut Vec<RtpPacket>,
    ) -> Result<Announce, MediaError> {
        let mut announce = Announce::Nothing;
        for track in flv::parse_video(data)? {
            let (track, tag) = match track {
                Ok(track) => track,
                // A rendition in a codec Sluice does not forward: the H.264 renditions play
                // on. Its frames end a stream that has no H.264 rendition, with the reason.
                Err(FlvError::UnsupportedFourCc { fourcc, coded })
                    if self.video_configured || !coded =>
                {
                    self.warn_unsupported_rendition(fourcc);
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            if let Announce::Codec {
                codec,
                name,
                layers,
            } = self.push_track_tag(now, timestamp_ms, track, tag, out)?
            {
                announce = Announce::Codec {
                    codec,
                    name,
                    layers,
                };
            }
        }
        Ok(announce)
    }

    /// One video tag (an AVC sequence header or an AVCC access unit) of the stream's one
    /// rendition at `timestamp_ms` on the source's millisecond clock: appends its packets to
    /// `out`.
    pub fn push_video_tag(
        &mut self,
        now: Instant,
        timestamp_ms: u32,
        tag: VideoTag<'_>,
        out: &mut Vec<RtpPacket>,
    ) -> Result<Announce, MediaError> {
        self.push_track_tag(now, timestamp_ms, 0, tag, out)
    }

    fn warn_unsupported_rendition(&mut self, fourcc: [u8; 4]) {
        if !self.warned_rendition_codec {
            self.warned_rendition_codec = true;
            warn!(
                codec = %String::from_utf8_lossy(&fourcc),
                "video rendition ignored: only H.264 renditions are forwarded"
            );
        }
    }

    /// One tag of video track `track`. A changed layout (a sequence header) is announced with
    /// the first frame after it, so the renditions' headers that an encoder sends together
    /// publish one publication with all its layers.
    fn push_track_tag(
        &mut self,
        now: Instant,
        timestamp_ms: u32,
        track: u8,
        tag: VideoTag<'_>,
        out: &mut Vec<RtpPacket>,
    ) -> Result<Announce, MediaError> {
        // Only frames are on the timeline: an encoder may send its sequence header at another
        // timestamp than its first frame, and a resumed session is placed by its first frame.
        let (dts_ms, composition_ms) = match tag {
            VideoTag::AvcNalus {
                composition_time_ms,
                ..
            } => {
                self.last_media_at = Some(now);
                let dts_ms = self.timeline.place(MediaKind::Video, now, timestamp_ms);
                // Frames leave the encoder in decode order, so arrivals follow dts.
                observe_arrival(&mut self.clock, now, dts_ms);
                (dts_ms, i64::from(composition_time_ms))
            }
            _ => (0, 0),
        };
        let first_packet = out.len();
        let update = match self.video.push(track, tag, dts_ms, out)? {
            RenditionUpdate::Video(update) => update,
            RenditionUpdate::Ignored => return Ok(Announce::Nothing),
        };
        let pts_us = dts_ms.saturating_add(composition_ms).saturating_mul(1_000);
        let sampled_at = self.clock.and_then(|clock| clock.instant_of(pts_us));
        for packet in &mut out[first_packet..] {
            packet.sampled_at = sampled_at;
        }
        if out.len() > first_packet {
            self.latency.arrived(MediaKind::Video, now, sampled_at);
        }
        match update {
            VideoUpdate::Codec(config) => {
                self.video_configured = true;
                info!(
                    track,
                    profile_level_id = %config.profile_level_id,
                    width = config.width,
                    height = config.height,
                    b_frames = config.has_b_frames(),
                    "H.264 sequence header"
                );
                if config.has_b_frames() {
                    self.warn_b_frames();
                }
                Ok(Announce::Nothing)
            }
            VideoUpdate::Frame {
                keyframe,
                reordered,
            } => {
                // The stream's frame counts are its main rendition's.
                if out.len() > first_packet && track == 0 {
                    self.stats.count_video_frame(keyframe, reordered);
                }
                if reordered {
                    self.warn_b_frames();
                }
                if out.len() == first_packet {
                    return Ok(Announce::Nothing);
                }
                let Some(layout) = self.video.take_changed_layout() else {
                    return Ok(Announce::Nothing);
                };
                let name = self.origin.video_name(layout.b_frames);
                let layers = if layout.ssrcs.len() > 1 {
                    layout.ssrcs
                } else {
                    Vec::new()
                };
                Ok(Announce::Codec {
                    codec: video::codec_info(&layout.config),
                    name: name.to_owned(),
                    layers,
                })
            }
        }
    }

    /// Says once per connection that the stream will not play well (see docs/rtmp.md).
    pub fn warn_b_frames(&mut self) {
        if !self.warned_reordering {
            self.warned_reordering = true;
            warn!(
                "the encoder sends B-frames: Chromium decodes only the keyframes of such a \
                 stream (the video is forwarded unchanged, viewers see a slideshow); set \
                 B-frames to 0 (OBS: Keyframe settings / x264 options bframes=0; ffmpeg: -bf 0)"
            );
        }
    }

    /// One audio message: appends its packets to `out`. Audio that cannot be converted is
    /// reported once and then ignored, so the video keeps playing.
    pub fn push_audio(
        &mut self,
        now: Instant,
        timestamp_ms: u32,
        data: &[u8],
        out: &mut Vec<RtpPacket>,
    ) -> Result<Announce, MediaError> {
        if self.audio_disabled {
            return Ok(Announce::Nothing);
        }
        let tag = match flv::parse_audio(data) {
            Ok(tag) => tag,
            Err(err @ FlvError::UnsupportedAudioFormat(_)) => {
                warn!(reason = %err, "audio ignored: send AAC-LC");
                self.audio_disabled = true;
                return Ok(Announce::Nothing);
            }
            Err(err) => return Err(err.into()),
        };
        match tag {
            AudioTag::AacConfig(config) => Ok(self.start_audio(AudioToOpus::aac(config))),
            AudioTag::AacRaw(frame) => self.push_audio_frame(now, timestamp_ms, frame, out),
        }
    }

    /// Starts converting audio with `path` (built from the source's audio configuration); an
    /// unusable configuration is reported once and the audio ignored, so the video plays on.
    pub fn start_audio(&mut self, path: Result<AudioToOpus, AudioError>) -> Announce {
        match path {
            Ok(path) => {
                info!(
                    rate = path.input_rate(),
                    channels = path.channels(),
                    "audio configuration: converting to Opus"
                );
                self.audio = Some(path);
                Announce::Codec {
                    codec: opus_codec(),
                    name: self.origin.audio_name().to_owned(),
                    layers: Vec::new(),
                }
            }
            Err(err) => {
                warn!(reason = %err, "audio ignored: send AAC-LC or G.711, mono or stereo");
                self.audio_disabled = true;
                Announce::Nothing
            }
        }
    }

    /// One audio frame (raw AAC, or G.711 bytes) at `timestamp_ms` on the source's millisecond
    /// clock: appends its Opus packets to `out`.
    pub fn push_audio_frame(
        &mut self,
        now: Instant,
        timestamp_ms: u32,
        frame: &[u8],
        out: &mut Vec<RtpPacket>,
    ) -> Result<Announce, MediaError> {
        if self.audio_disabled {
            return Ok(Announce::Nothing);
        }
        let path = self.audio.as_mut().ok_or(MediaError::NoAudioConfig)?;
        self.last_media_at = Some(now);
        let ms = self.timeline.place(MediaKind::Audio, now, timestamp_ms);
        observe_arrival(&mut self.clock, now, ms);
        let sampled_at = self
            .clock
            .and_then(|c| c.instant_of(ms.saturating_mul(1_000)));
        self.latency.arrived(MediaKind::Audio, now, sampled_at);
        self.opus_frames.clear();
        match path.push(frame, ms, &mut self.opus_frames) {
            Ok(()) => self.stats.count_audio_frame(),
            Err(err) => {
                // One bad frame is a click, not a reason to stop the stream.
                if self.stats.count_audio_error() == 1 {
                    warn!(reason = %err, "audio frame skipped (further ones are only counted)");
                }
            }
        }
        let clock = self.clock;
        for frame in self.opus_frames.drain(..) {
            let mut packet = self.opus.packetize(frame.payload, frame.timestamp as u32);
            packet.audio_level = Some(frame.level);
            let timeline_us = frame.timestamp.saturating_mul(1_000_000) / i64::from(OPUS_RATE);
            packet.sampled_at = clock.and_then(|clock| clock.instant_of(timeline_us));
            self.latency.audio_departed(now, packet.sampled_at);
            out.push(packet);
        }
        Ok(Announce::Nothing)
    }
}

/// Keeps a stream clock's mapping (see [`StreamClock`]) up to date with an audio or video
/// frame of timeline position `timeline_ms` that arrived at `now`.
fn observe_arrival(clock: &mut Option<StreamClock>, now: Instant, timeline_ms: i64) {
    let timeline_us = timeline_ms.saturating_mul(1_000);
    match clock {
        Some(clock) => clock.observe(now, timeline_us),
        None => *clock = Some(StreamClock::starting(now, timeline_us)),
    }
}

/// What subscribers negotiate for the converted audio (the one Opus format WebRTC knows).
pub fn opus_codec() -> CodecInfo {
    CodecInfo {
        mime_type: "audio/opus".to_owned(),
        clock_rate: OPUS_RATE,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "media_tests.rs"]
mod tests;
