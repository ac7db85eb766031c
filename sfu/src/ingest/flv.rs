//! FLV tag bodies as RTMP carries them in video (type 9) and audio (type 8) messages.
//!
//! Only what Sluice forwards is understood: H.264 (AVC) video and AAC audio. Everything else is a
//! typed error so the caller can say exactly what the encoder sent.

/// FLV video codec id of AVC (H.264).
const CODEC_AVC: u8 = 7;
/// FLV sound format of AAC.
const SOUND_AAC: u8 = 10;
/// Video frame type of a "video info / command frame": carries no picture.
const FRAME_COMMAND: u8 = 5;

/// One video message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// The AVCDecoderConfigurationRecord (SPS, PPS, NAL length size).
    AvcSequenceHeader(&'a [u8]),
    /// One access unit as length-prefixed NAL units (AVCC).
    AvcNalus {
        /// The FLV frame type says keyframe (1) or generated keyframe (4).
        keyframe: bool,
        /// Presentation minus decode time, in milliseconds (non-zero with B-frames).
        composition_time_ms: i32,
        data: &'a [u8],
    },
    AvcEndOfSequence,
    /// A command frame (seek start/end): no picture.
    Command,
}

/// One audio message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// The AudioSpecificConfig.
    AacConfig(&'a [u8]),
    /// One raw AAC frame.
    AacRaw(&'a [u8]),
}

#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("empty media message")]
    Empty,
    #[error("media message header truncated")]
    Truncated,
    #[error("video codec id {0} is not H.264 (only H.264 is forwarded)")]
    UnsupportedVideoCodec(u8),
    #[error("enhanced RTMP video (HEVC/AV1/VP9) is not supported; send H.264")]
    EnhancedRtmp,
    #[error("unknown AVC packet type {0}")]
    UnknownAvcPacketType(u8),
    #[error("sound format {0} is not AAC (only AAC is converted)")]
    UnsupportedAudioFormat(u8),
    #[error("unknown AAC packet type {0}")]
    UnknownAacPacketType(u8),
}

pub fn parse_video(data: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let &first = data.first().ok_or(FlvError::Empty)?;
    // E-RTMP sets the top bit and puts a FourCC where the legacy header has its codec id.
    if first & 0x80 != 0 {
        return Err(FlvError::EnhancedRtmp);
    }
    let frame_type = first >> 4;
    let codec = first & 0x0f;
    if frame_type == FRAME_COMMAND {
        return Ok(VideoTag::Command);
    }
    if codec != CODEC_AVC {
        return Err(FlvError::UnsupportedVideoCodec(codec));
    }
    let header = data.get(..5).ok_or(FlvError::Truncated)?;
    let body = &data[5..];
    match header[1] {
        0 => Ok(VideoTag::AvcSequenceHeader(body)),
        1 => Ok(VideoTag::AvcNalus {
            keyframe: frame_type == 1 || frame_type == 4,
            composition_time_ms: si24([header[2], header[3], header[4]]),
            data: body,
        }),
        2 => Ok(VideoTag::AvcEndOfSequence),
        other => Err(FlvError::UnknownAvcPacketType(other)),
    }
}

pub fn parse_audio(data: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let &first = data.first().ok_or(FlvError::Empty)?;
    let format = first >> 4;
    if format != SOUND_AAC {
        return Err(FlvError::UnsupportedAudioFormat(format));
    }
    let &packet_type = data.get(1).ok_or(FlvError::Truncated)?;
    let body = &data[2..];
    match packet_type {
        0 => Ok(AudioTag::AacConfig(body)),
        1 => Ok(AudioTag::AacRaw(body)),
        other => Err(FlvError::UnknownAacPacketType(other)),
    }
}

/// A signed big-endian 24-bit integer.
fn si24(bytes: [u8; 3]) -> i32 {
    // Place the bytes high and shift back down so the sign bit extends.
    i32::from_be_bytes([bytes[0], bytes[1], bytes[2], 0]) >> 8
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn avc_sequence_header_and_nalus() {
        assert_eq!(
            parse_video(&[0x17, 0, 0, 0, 0, 1, 2]),
            Ok(VideoTag::AvcSequenceHeader(&[1, 2]))
        );
        assert_eq!(
            parse_video(&[0x27, 1, 0, 0, 0x42, 9]),
            Ok(VideoTag::AvcNalus {
                keyframe: false,
                composition_time_ms: 0x42,
                data: &[9]
            })
        );
        assert_eq!(
            parse_video(&[0x17, 1, 0xff, 0xff, 0xdf, 9]),
            Ok(VideoTag::AvcNalus {
                keyframe: true,
                composition_time_ms: -33,
                data: &[9]
            })
        );
        assert_eq!(
            parse_video(&[0x17, 2, 0, 0, 0]),
            Ok(VideoTag::AvcEndOfSequence)
        );
    }

    #[test]
    fn video_errors() {
        assert_eq!(parse_video(&[]), Err(FlvError::Empty));
        assert_eq!(parse_video(&[0x17, 1, 0]), Err(FlvError::Truncated));
        assert_eq!(
            parse_video(&[0x12, 1, 0, 0, 0]),
            Err(FlvError::UnsupportedVideoCodec(2))
        );
        assert_eq!(
            parse_video(&[0x90, b'h', b'v', b'c', b'1']),
            Err(FlvError::EnhancedRtmp)
        );
        assert_eq!(
            parse_video(&[0x17, 7, 0, 0, 0]),
            Err(FlvError::UnknownAvcPacketType(7))
        );
        assert_eq!(parse_video(&[0x57, 0]), Ok(VideoTag::Command));
    }

    #[test]
    fn aac_tags() {
        assert_eq!(
            parse_audio(&[0xaf, 0, 0x12, 0x10]),
            Ok(AudioTag::AacConfig(&[0x12, 0x10]))
        );
        assert_eq!(parse_audio(&[0xaf, 1, 7]), Ok(AudioTag::AacRaw(&[7])));
        assert_eq!(
            parse_audio(&[0x2f, 1]),
            Err(FlvError::UnsupportedAudioFormat(2))
        );
        assert_eq!(parse_audio(&[0xaf]), Err(FlvError::Truncated));
        assert_eq!(parse_audio(&[]), Err(FlvError::Empty));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_video(&data);
            let _ = parse_audio(&data);
        }
    }
}
