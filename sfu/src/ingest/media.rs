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
                // A rendition in a codec Sluice does not forward, beside an H.264 one that it
                // does: the H.264 renditions play on.
                Err(FlvError::UnsupportedFourCc(fourcc)) if self.video_configured => {
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
mod tests {
    use super::*;

    #[test]
    fn audio_before_its_config_closes_and_other_formats_are_ignored() {
        let mut media = MediaPipeline::new(Arc::default(), Origin::Rtmp);
        let mut out = Vec::new();
        assert_eq!(
            media
                .push_audio(Instant::now(), 0, &[0xaf, 1, 0x21], &mut out)
                .err(),
            Some(MediaError::NoAudioConfig)
        );
        // MP3 is skipped, and so is everything after it.
        assert!(matches!(
            media.push_audio(Instant::now(), 0, &[0x2f, 0xff], &mut out),
            Ok(Announce::Nothing)
        ));
        assert!(matches!(
            media.push_audio(Instant::now(), 0, &[0xaf, 1, 0x21], &mut out),
            Ok(Announce::Nothing)
        ));
    }

    #[test]
    fn aac_becomes_opus_packets_on_the_stream_timeline() {
        let (config, frames) =
            super::super::audio::tests::adts_frames(super::super::audio::tests::SINE_48K_MONO);
        let mut media = MediaPipeline::new(Arc::default(), Origin::Rtmp);
        let mut out = Vec::new();
        let mut header = vec![0xaf, 0];
        header.extend(&config);
        assert!(matches!(
            media.push_audio(Instant::now(), 500, &header, &mut out),
            Ok(Announce::Codec { ref codec, .. }) if codec.mime_type == "audio/opus"
        ));
        for (i, frame) in frames.iter().enumerate() {
            let mut tag = vec![0xaf, 1];
            tag.extend(*frame);
            let ms = 500 + (i * 1024 * 1000 / 48_000) as u32;
            media
                .push_audio(Instant::now(), ms, &tag, &mut out)
                .unwrap();
        }
        assert!(out.len() >= 45, "{} packets", out.len());
        assert_eq!(out[0].timestamp, 500 * 48);
        assert!(
            out.windows(2)
                .all(|w| w[1].timestamp == w[0].timestamp + 960)
        );
    }

    /// FLV tags of one encoder session: AVC and AAC headers, then `frames` video frames at
    /// 30 fps and the AAC frames of the same span, all from RTMP time `start_ms`; each AAC
    /// frame arrives `audio_late` after the video frame it follows.
    fn session(
        media: &mut MediaPipeline,
        at: Instant,
        start_ms: u32,
        frames_count: u32,
        audio_late: std::time::Duration,
    ) -> Vec<RtpPacket> {
        use crate::ingest::avc::tests::{PPS, SPS_HIGH_720P, record};
        let (config, _) =
            super::super::audio::tests::adts_frames(super::super::audio::tests::SINE_48K_MONO);
        let mut out = Vec::new();
        let mut header = vec![0x17, 0, 0, 0, 0];
        header.extend(record(SPS_HIGH_720P, PPS));
        media.push_video(at, start_ms, &header, &mut out).unwrap();
        let mut audio_header = vec![0xaf, 0];
        audio_header.extend(&config);
        media
            .push_audio(at, start_ms, &audio_header, &mut out)
            .unwrap();
        out.extend(frames(media, at, start_ms, frames_count, audio_late));
        out
    }

    /// The media of [`session`] without its sequence headers: `frames` video frames at 30 fps
    /// from RTMP time `start_ms`, arriving in real time from `at`, and the AAC frames of the
    /// same span.
    fn frames(
        media: &mut MediaPipeline,
        at: Instant,
        start_ms: u32,
        frames: u32,
        audio_late: std::time::Duration,
    ) -> Vec<RtpPacket> {
        use crate::ingest::avc::tests::avcc;
        let (_, aac) =
            super::super::audio::tests::adts_frames(super::super::audio::tests::SINE_48K_MONO);
        let mut out = Vec::new();
        let mut next_audio = 0;
        for i in 0..frames {
            let ms = start_ms + i * 1000 / 30;
            let now = at + std::time::Duration::from_millis(u64::from(ms - start_ms));
            let mut tag = vec![if i == 0 { 0x17 } else { 0x27 }, 1, 0, 0, 0];
            tag.extend(avcc(&[&[if i == 0 { 0x65 } else { 0x41 }, 1, 2, 3]]));
            media.push_video(now, ms, &tag, &mut out).unwrap();
            while next_audio < aac.len()
                && (next_audio * 1024 * 1000 / 48_000) as u32 <= ms - start_ms
            {
                let mut tag = vec![0xaf, 1];
                tag.extend(aac[next_audio]);
                let at = start_ms + (next_audio * 1024 * 1000 / 48_000) as u32;
                media
                    .push_audio(now + audio_late, at, &tag, &mut out)
                    .unwrap();
                next_audio += 1;
            }
        }
        out
    }

    #[test]
    fn a_jump_in_the_encoder_timeline_is_rebased_equally_for_audio_and_video() {
        // The encoder's clock steps back to 0, or ahead by an hour, between two frames.
        for (jump, after_ms) in [("backward", 0), ("forward", 3_600_000)] {
            let start = Instant::now();
            let mut media = MediaPipeline::new(Arc::default(), Origin::Rtmp);
            // One second each side of the jump (the AAC test data is one second long).
            let mut packets = session(&mut media, start, 60_000, 30, std::time::Duration::ZERO);
            let resumed_at = start + std::time::Duration::from_millis(1_000);
            let first_after = packets.len();
            packets.extend(frames(
                &mut media,
                resumed_at,
                after_ms,
                30,
                std::time::Duration::ZERO,
            ));
            let video_pt = packets[0].payload_type;
            let video = by_payload_type(&packets, video_pt);
            for pair in video.windows(2) {
                let step = pair[1].timestamp.wrapping_sub(pair[0].timestamp) as i32;
                assert!(
                    (0..=40 * 90).contains(&step),
                    "{jump}: video RTP timestamp stepped by {step}"
                );
            }
            let audio = by_payload_type(&packets, 111);
            for pair in audio.windows(2) {
                assert_eq!(
                    pair[1].timestamp.wrapping_sub(pair[0].timestamp),
                    960,
                    "{jump}: audio RTP timestamps continue 20 ms apart"
                );
            }
            // The first frame after the jump is placed where real time says, and the audio of
            // the same encoder instant with it (lip sync holds).
            let video_after = packets[first_after..]
                .iter()
                .find(|p| p.payload_type == video_pt)
                .unwrap();
            assert_eq!(video_after.timestamp, 61_000 * 90, "{jump}");
            assert_eq!(video_after.sampled_at, Some(resumed_at), "{jump}");
            let audio_after = packets[first_after..]
                .iter()
                .find(|p| p.payload_type == 111)
                .unwrap();
            let skew_ms = i64::from(audio_after.timestamp / 48) - 61_000;
            assert!(
                skew_ms.abs() <= 25,
                "{jump}: audio placed {skew_ms} ms from the video of the same instant"
            );
        }
    }

    fn by_payload_type(packets: &[RtpPacket], payload_type: u8) -> Vec<&RtpPacket> {
        packets
            .iter()
            .filter(|p| p.payload_type == payload_type)
            .collect()
    }

    #[test]
    fn a_reconnected_encoder_continues_the_same_sources_with_audio_and_video_aligned() {
        let start = Instant::now();
        let mut media = MediaPipeline::new(Arc::default(), Origin::Rtmp);
        // The first session's last frame is at 966 ms; the connection is found dead 5 s later.
        let first = session(&mut media, start, 0, 30, std::time::Duration::ZERO);
        let carry = media.park(start + std::time::Duration::from_secs(6));
        // The new encoder process starts its clock anew, at an arbitrary RTMP time.
        let mut media = MediaPipeline::resume(
            Arc::default(),
            Origin::Rtmp,
            carry,
            start + std::time::Duration::from_millis(2_966),
        );
        let second = session(
            &mut media,
            start + std::time::Duration::from_millis(2_966),
            7_000,
            30,
            std::time::Duration::ZERO,
        );
        let (video_pt, audio_pt) = (first[0].payload_type, 111);
        for pt in [video_pt, audio_pt] {
            let (a, b) = (by_payload_type(&first, pt), by_payload_type(&second, pt));
            assert!(!a.is_empty() && !b.is_empty(), "payload type {pt}");
            assert_eq!(a[0].ssrc, b[0].ssrc, "the same source continues");
            let last = a.last().unwrap();
            assert_eq!(
                b[0].sequence_number,
                last.sequence_number.wrapping_add(1),
                "contiguous sequence numbers"
            );
        }
        // Both tracks resume at the same instant of the stream's timeline: the last one of the
        // first session plus the 2 s the encoder was away.
        let video = by_payload_type(&second, video_pt);
        let audio = by_payload_type(&second, audio_pt);
        let last_ms_before = 29 * 1000 / 30;
        assert_eq!(
            i64::from(video[0].timestamp),
            (last_ms_before + 2_000) * 90,
            "video resumes 2 s after its last frame"
        );
        let audio_resume_ms = i64::from(audio[0].timestamp) / 48;
        assert!(
            (audio_resume_ms - (last_ms_before + 2_000)).abs() <= 1,
            "audio resumes at {audio_resume_ms} ms, video at {} ms",
            last_ms_before + 2_000
        );
        assert!(audio[0].marker, "a new talk spurt");
        // The stream clock continues too: the resumed frames are placed at the restart.
        assert_eq!(
            video[0].sampled_at,
            Some(start + std::time::Duration::from_millis(2_966))
        );
    }

    /// Sender reports are derived from `sampled_at`: audio and video of the same encoder
    /// moment must carry the same instant, however late the audio path delivers them.
    #[test]
    fn audio_and_video_are_placed_on_one_clock_whatever_their_arrival_skew() {
        let start = Instant::now();
        let mut media = MediaPipeline::new(Arc::default(), Origin::Rtmp);
        let packets = session(
            &mut media,
            start,
            1_000,
            60,
            std::time::Duration::from_millis(80),
        );
        let video_pt = packets[0].payload_type;
        let mut seen = [0, 0];
        for packet in &packets {
            let (rate, kind) = if packet.payload_type == video_pt {
                (90, 0)
            } else {
                (48, 1)
            };
            let timeline_ms = u64::from(packet.timestamp / rate);
            let sampled = packet.sampled_at.expect("every media packet is placed");
            let placed_ms = (sampled - start).as_millis() as u64;
            // The video's first frame (timeline 1000 ms) arrived at `start`.
            assert!(
                placed_ms.abs_diff(timeline_ms - 1_000) <= 1,
                "{} packet of {timeline_ms} ms placed at {placed_ms} ms",
                ["video", "audio"][kind]
            );
            seen[kind] += 1;
        }
        assert!(seen[0] >= 60 && seen[1] >= 40, "{seen:?}");
    }
}
