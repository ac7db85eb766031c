//! One RTMP stream's media: FLV tags in, RTP packets out, both tracks on the encoder's one
//! timeline (RTMP timestamps, in milliseconds), so audio and video stay in sync.

use std::sync::Arc;

use tracing::{info, warn};

use super::audio::{AacToOpus, OPUS_RATE, OpusFrame};
use super::flv::{self, AudioTag, FlvError};
use super::packetize::OpusPacketizer;
use super::stats::StreamStats;
use super::video::{self, VideoError, VideoPipeline, VideoUpdate};
use crate::core::RtpPacket;
use crate::transport::CodecInfo;

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

/// RTMP timestamps are 32-bit milliseconds that wrap (after 49 days) and may step back a
/// little; this keeps a monotonic-enough 64-bit timeline.
#[derive(Debug, Default)]
struct Timeline {
    last: Option<(u32, i64)>,
}

impl Timeline {
    fn extend(&mut self, timestamp_ms: u32) -> i64 {
        let extended = match self.last {
            None => i64::from(timestamp_ms),
            Some((raw, ext)) => ext + i64::from(timestamp_ms.wrapping_sub(raw) as i32),
        };
        self.last = Some((timestamp_ms, extended));
        extended
    }
}

/// What the caller must do before sending the packets of this call.
#[derive(Debug)]
pub enum Announce {
    Nothing,
    /// (Re)publish the track with this codec, under this publication name.
    Codec(CodecInfo, String),
}

/// Name of the video publication of a stream with B-frames: viewers (the watch page) show a
/// warning when they see it.
pub const B_FRAMES_NAME: &str = "rtmp video (B-frames)";

pub struct MediaPipeline {
    stats: Arc<StreamStats>,
    video: VideoPipeline,
    video_clock: Timeline,
    audio: Option<AacToOpus>,
    /// Audio is not AAC or not decodable: ignored (the video still plays), said once.
    audio_disabled: bool,
    audio_clock: Timeline,
    opus: OpusPacketizer,
    opus_frames: Vec<OpusFrame>,
    warned_reordering: bool,
}

impl MediaPipeline {
    pub fn new(stats: Arc<StreamStats>) -> Self {
        Self {
            stats,
            video: VideoPipeline::default(),
            video_clock: Timeline::default(),
            audio: None,
            audio_disabled: false,
            audio_clock: Timeline::default(),
            opus: OpusPacketizer::default(),
            opus_frames: Vec::new(),
            warned_reordering: false,
        }
    }

    /// One video message: appends its packets to `out`.
    pub fn push_video(
        &mut self,
        timestamp_ms: u32,
        data: &[u8],
        out: &mut Vec<RtpPacket>,
    ) -> Result<Announce, MediaError> {
        let tag = flv::parse_video(data)?;
        let dts_ms = self.video_clock.extend(timestamp_ms);
        match self.video.push(tag, dts_ms, out)? {
            VideoUpdate::Codec(config) => {
                info!(
                    profile_level_id = %config.profile_level_id,
                    width = config.width,
                    height = config.height,
                    b_frames = config.has_b_frames(),
                    "H.264 sequence header"
                );
                let name = if config.has_b_frames() {
                    self.warn_b_frames();
                    B_FRAMES_NAME
                } else {
                    "rtmp video"
                };
                Ok(Announce::Codec(video::codec_info(&config), name.to_owned()))
            }
            VideoUpdate::Frame {
                keyframe,
                reordered,
            } => {
                if !out.is_empty() {
                    self.stats.count_video_frame(keyframe, reordered);
                }
                if reordered {
                    self.warn_b_frames();
                }
                Ok(Announce::Nothing)
            }
        }
    }

    /// Says once per connection that the stream will not play well (see docs/rtmp.md).
    fn warn_b_frames(&mut self) {
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
        let ms = self.audio_clock.extend(timestamp_ms);
        match tag {
            AudioTag::AacConfig(config) => match AacToOpus::new(config) {
                Ok(path) => {
                    info!(
                        rate = path.input_rate(),
                        channels = path.channels(),
                        "AAC sequence header: converting to Opus"
                    );
                    self.audio = Some(path);
                    Ok(Announce::Codec(opus_codec(), "rtmp audio".to_owned()))
                }
                Err(err) => {
                    warn!(reason = %err, "audio ignored: send AAC-LC, mono or stereo");
                    self.audio_disabled = true;
                    Ok(Announce::Nothing)
                }
            },
            AudioTag::AacRaw(frame) => {
                let path = self.audio.as_mut().ok_or(MediaError::NoAudioConfig)?;
                self.opus_frames.clear();
                match path.push(frame, ms, &mut self.opus_frames) {
                    Ok(()) => self.stats.count_audio_frame(),
                    Err(err) => {
                        // One bad frame is a click, not a reason to stop the stream.
                        if self.stats.count_audio_error() == 1 {
                            warn!(reason = %err, "AAC frame skipped (further ones are only counted)");
                        }
                    }
                }
                for frame in self.opus_frames.drain(..) {
                    out.push(self.opus.packetize(frame.payload, frame.timestamp as u32));
                }
                Ok(Announce::Nothing)
            }
        }
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
    fn timeline_extends_across_wrap_and_small_steps_back() {
        let mut clock = Timeline::default();
        assert_eq!(clock.extend(100), 100);
        assert_eq!(clock.extend(90), 90);
        assert_eq!(clock.extend(u32::MAX - 5), -6);
        let mut clock = Timeline::default();
        assert_eq!(clock.extend(u32::MAX - 5), i64::from(u32::MAX) - 5);
        assert_eq!(clock.extend(10), i64::from(u32::MAX) + 11);
    }

    #[test]
    fn audio_before_its_config_closes_and_other_formats_are_ignored() {
        let mut media = MediaPipeline::new(Arc::default());
        let mut out = Vec::new();
        assert_eq!(
            media.push_audio(0, &[0xaf, 1, 0x21], &mut out).err(),
            Some(MediaError::NoAudioConfig)
        );
        // MP3 is skipped, and so is everything after it.
        assert!(matches!(
            media.push_audio(0, &[0x2f, 0xff], &mut out),
            Ok(Announce::Nothing)
        ));
        assert!(matches!(
            media.push_audio(0, &[0xaf, 1, 0x21], &mut out),
            Ok(Announce::Nothing)
        ));
    }

    #[test]
    fn aac_becomes_opus_packets_on_the_stream_timeline() {
        let (config, frames) =
            super::super::audio::tests::adts_frames(super::super::audio::tests::SINE_48K_MONO);
        let mut media = MediaPipeline::new(Arc::default());
        let mut out = Vec::new();
        let mut header = vec![0xaf, 0];
        header.extend(&config);
        assert!(matches!(
            media.push_audio(500, &header, &mut out),
            Ok(Announce::Codec(ref c, _)) if c.mime_type == "audio/opus"
        ));
        for (i, frame) in frames.iter().enumerate() {
            let mut tag = vec![0xaf, 1];
            tag.extend(*frame);
            let ms = 500 + (i * 1024 * 1000 / 48_000) as u32;
            media.push_audio(ms, &tag, &mut out).unwrap();
        }
        assert!(out.len() >= 45, "{} packets", out.len());
        assert_eq!(out[0].timestamp, 500 * 48);
        assert!(
            out.windows(2)
                .all(|w| w[1].timestamp == w[0].timestamp + 960)
        );
    }
}
