//! FLV tag bodies as RTMP carries them in video (type 9) and audio (type 8) messages.
//!
//! Only what Sluice forwards is understood: H.264 (AVC) video and AAC audio. Everything else is a
//! typed error so the caller can say exactly what the encoder sent.
//!
//! Video comes in two framings. Legacy tags (codec id 7) carry one stream. Enhanced RTMP (v2)
//! tags carry a FourCC, and with the Multitrack packet type one or more numbered tracks: OBS's
//! multitrack video and ffmpeg's FLV muxer send each extra rendition that way (track 0 stays a
//! legacy tag), so [`parse_video`] yields `(track id, tag)` pairs.

/// FLV video codec id of AVC (H.264).
const CODEC_AVC: u8 = 7;
/// FLV sound format of AAC.
const SOUND_AAC: u8 = 10;
/// Video frame type of a "video info / command frame": carries no picture.
const FRAME_COMMAND: u8 = 5;
/// The FourCC of H.264 in Enhanced RTMP.
const FOURCC_AVC: [u8; 4] = *b"avc1";

/// Enhanced RTMP video packet types (the low nibble of an extended header).
mod ex_packet {
    pub const SEQUENCE_START: u8 = 0;
    pub const CODED_FRAMES: u8 = 1;
    pub const SEQUENCE_END: u8 = 2;
    /// Coded frames without the composition time offset (it is zero).
    pub const CODED_FRAMES_X: u8 = 3;
    pub const METADATA: u8 = 4;
    pub const MULTITRACK: u8 = 6;
    /// A modifier (e.g. a nanosecond timestamp offset) in front of the real packet type.
    pub const MOD_EX: u8 = 7;
}

/// How an Enhanced RTMP multitrack tag lays out its tracks.
mod multitrack {
    /// One track, to the end of the tag.
    pub const ONE_TRACK: u8 = 0;
    /// Several tracks of the tag's one codec, each prefixed by its size.
    pub const MANY_TRACKS: u8 = 1;
    /// Several tracks, each with its own FourCC and size.
    pub const MANY_TRACKS_MANY_CODECS: u8 = 2;
}

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
    /// A track in another codec than H.264; `coded`: it carries frames (not a sequence
    /// header or metadata).
    #[error(
        "enhanced RTMP video codec {} is not supported; send H.264",
        String::from_utf8_lossy(fourcc)
    )]
    UnsupportedFourCc { fourcc: [u8; 4], coded: bool },
    #[error("unknown enhanced RTMP video packet type {0}")]
    UnknownExPacketType(u8),
    #[error("unknown enhanced RTMP multitrack type {0}")]
    UnknownMultitrackType(u8),
    #[error("unknown AVC packet type {0}")]
    UnknownAvcPacketType(u8),
    #[error("sound format {0} is not AAC (only AAC is converted)")]
    UnsupportedAudioFormat(u8),
    #[error("unknown AAC packet type {0}")]
    UnknownAacPacketType(u8),
}

/// The tracks of one video message: a legacy tag is track 0; an Enhanced RTMP tag names its
/// tracks. Iterating stops at the first malformed track.
#[derive(Debug, Clone)]
pub struct VideoTracks<'a> {
    state: TracksState<'a>,
}

#[derive(Debug, Clone)]
enum TracksState<'a> {
    One(Option<Result<(u8, VideoTag<'a>), FlvError>>),
    Many {
        keyframe: bool,
        packet_type: u8,
        layout: u8,
        /// The tag's FourCC; `None` when each track carries its own.
        fourcc: Option<[u8; 4]>,
        rest: &'a [u8],
    },
}

impl<'a> Iterator for VideoTracks<'a> {
    type Item = Result<(u8, VideoTag<'a>), FlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.state {
            TracksState::One(item) => item.take(),
            TracksState::Many {
                keyframe,
                packet_type,
                layout,
                fourcc,
                rest,
            } => {
                if rest.is_empty() {
                    return None;
                }
                let item = next_track(*keyframe, *packet_type, *layout, *fourcc, rest);
                // A track in another codec was read whole: the tracks after it can be read.
                if matches!(item, Err(ref err) if !matches!(err, FlvError::UnsupportedFourCc { .. }))
                {
                    *rest = &[];
                }
                Some(item)
            }
        }
    }
}

/// Parses one track of a multitrack tag off the front of `rest`.
fn next_track<'a>(
    keyframe: bool,
    packet_type: u8,
    layout: u8,
    fourcc: Option<[u8; 4]>,
    rest: &mut &'a [u8],
) -> Result<(u8, VideoTag<'a>), FlvError> {
    let fourcc = match fourcc {
        Some(fourcc) => fourcc,
        None => take_array(rest)?,
    };
    let [track] = take_array(rest)?;
    let body = if layout == multitrack::ONE_TRACK {
        std::mem::take(rest)
    } else {
        let [high, middle, low] = take_array(rest)?;
        let size = usize::from(high) << 16 | usize::from(middle) << 8 | usize::from(low);
        let body = rest.get(..size).ok_or(FlvError::Truncated)?;
        *rest = &rest[size..];
        body
    };
    if fourcc != FOURCC_AVC {
        return Err(unsupported(fourcc, packet_type));
    }
    Ok((track, ex_avc_tag(keyframe, packet_type, body)?))
}

/// The error for a track of codec `fourcc` under `packet_type`.
fn unsupported(fourcc: [u8; 4], packet_type: u8) -> FlvError {
    let coded = matches!(
        packet_type,
        ex_packet::CODED_FRAMES | ex_packet::CODED_FRAMES_X
    );
    FlvError::UnsupportedFourCc { fourcc, coded }
}

/// Takes `N` bytes off the front of `rest`.
fn take_array<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], FlvError> {
    let bytes: [u8; N] = rest
        .get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or(FlvError::Truncated)?;
    *rest = &rest[N..];
    Ok(bytes)
}

/// One H.264 track's body under an Enhanced RTMP packet type.
fn ex_avc_tag(keyframe: bool, packet_type: u8, body: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    match packet_type {
        ex_packet::SEQUENCE_START => Ok(VideoTag::AvcSequenceHeader(body)),
        ex_packet::CODED_FRAMES => {
            let offset = body.get(..3).ok_or(FlvError::Truncated)?;
            Ok(VideoTag::AvcNalus {
                keyframe,
                composition_time_ms: si24([offset[0], offset[1], offset[2]]),
                data: &body[3..],
            })
        }
        ex_packet::CODED_FRAMES_X => Ok(VideoTag::AvcNalus {
            keyframe,
            composition_time_ms: 0,
            data: body,
        }),
        ex_packet::SEQUENCE_END => Ok(VideoTag::AvcEndOfSequence),
        ex_packet::METADATA => Ok(VideoTag::Command),
        other => Err(FlvError::UnknownExPacketType(other)),
    }
}

/// Parses one RTMP video message into its tracks.
pub fn parse_video(data: &[u8]) -> Result<VideoTracks<'_>, FlvError> {
    let &first = data.first().ok_or(FlvError::Empty)?;
    // E-RTMP sets the top bit and puts a FourCC where the legacy header has its codec id.
    if first & 0x80 != 0 {
        return parse_ex_video(first, &data[1..]);
    }
    Ok(VideoTracks {
        state: TracksState::One(Some(parse_legacy_video(first, data).map(|tag| (0, tag)))),
    })
}

fn parse_legacy_video(first: u8, data: &[u8]) -> Result<VideoTag<'_>, FlvError> {
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

/// An Enhanced RTMP video tag after its first byte.
fn parse_ex_video(first: u8, mut rest: &[u8]) -> Result<VideoTracks<'_>, FlvError> {
    let frame_type = (first >> 4) & 0x07;
    let keyframe = frame_type == 1 || frame_type == 4;
    let mut packet_type = first & 0x0f;
    // Modifiers only adjust timing below a millisecond: skipped. Each one takes at least two
    // bytes, so the loop ends with the tag.
    while packet_type == ex_packet::MOD_EX {
        let [size] = take_array(&mut rest)?;
        let size = match usize::from(size) + 1 {
            256 => usize::from(u16::from_be_bytes(take_array(&mut rest)?)) + 1,
            size => size,
        };
        rest = rest.get(size..).ok_or(FlvError::Truncated)?;
        let [next] = take_array(&mut rest)?;
        packet_type = next & 0x0f;
    }
    if frame_type == FRAME_COMMAND && packet_type != ex_packet::METADATA {
        return Ok(VideoTracks {
            state: TracksState::One(Some(Ok((0, VideoTag::Command)))),
        });
    }
    if packet_type != ex_packet::MULTITRACK {
        let fourcc: [u8; 4] = take_array(&mut rest)?;
        let tag = if fourcc == FOURCC_AVC {
            ex_avc_tag(keyframe, packet_type, rest).map(|tag| (0, tag))
        } else {
            Err(unsupported(fourcc, packet_type))
        };
        return Ok(VideoTracks {
            state: TracksState::One(Some(tag)),
        });
    }
    let [byte] = take_array(&mut rest)?;
    let (layout, packet_type) = (byte >> 4, byte & 0x0f);
    let fourcc = match layout {
        multitrack::ONE_TRACK | multitrack::MANY_TRACKS => Some(take_array(&mut rest)?),
        multitrack::MANY_TRACKS_MANY_CODECS => None,
        other => return Err(FlvError::UnknownMultitrackType(other)),
    };
    if packet_type == ex_packet::MULTITRACK || packet_type == ex_packet::MOD_EX {
        return Err(FlvError::UnknownExPacketType(packet_type));
    }
    Ok(VideoTracks {
        state: TracksState::Many {
            keyframe,
            packet_type,
            layout,
            fourcc,
            rest,
        },
    })
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

    /// The single track of a video message.
    fn single(data: &[u8]) -> Result<VideoTag<'_>, FlvError> {
        let tracks: Vec<_> = parse_video(data)?.collect::<Result<_, _>>()?;
        assert_eq!(tracks.len(), 1, "{tracks:?}");
        assert_eq!(tracks[0].0, 0);
        Ok(tracks[0].1)
    }

    #[test]
    fn avc_sequence_header_and_nalus() {
        assert_eq!(
            single(&[0x17, 0, 0, 0, 0, 1, 2]),
            Ok(VideoTag::AvcSequenceHeader(&[1, 2]))
        );
        assert_eq!(
            single(&[0x27, 1, 0, 0, 0x42, 9]),
            Ok(VideoTag::AvcNalus {
                keyframe: false,
                composition_time_ms: 0x42,
                data: &[9]
            })
        );
        assert_eq!(
            single(&[0x17, 1, 0xff, 0xff, 0xdf, 9]),
            Ok(VideoTag::AvcNalus {
                keyframe: true,
                composition_time_ms: -33,
                data: &[9]
            })
        );
        assert_eq!(single(&[0x17, 2, 0, 0, 0]), Ok(VideoTag::AvcEndOfSequence));
    }

    #[test]
    fn video_errors() {
        assert_eq!(single(&[]), Err(FlvError::Empty));
        assert_eq!(single(&[0x17, 1, 0]), Err(FlvError::Truncated));
        assert_eq!(
            single(&[0x12, 1, 0, 0, 0]),
            Err(FlvError::UnsupportedVideoCodec(2))
        );
        assert_eq!(
            single(&[0x90, b'h', b'v', b'c', b'1']),
            Err(FlvError::UnsupportedFourCc {
                fourcc: *b"hvc1",
                coded: false
            })
        );
        assert_eq!(
            single(&[0x17, 7, 0, 0, 0]),
            Err(FlvError::UnknownAvcPacketType(7))
        );
        assert_eq!(single(&[0x57, 0]), Ok(VideoTag::Command));
    }

    /// Tags as ffmpeg 9's FLV muxer writes a second H.264 rendition (track 1): a multitrack
    /// (OneTrack) sequence start, a keyframe and a delta frame as CodedFramesX.
    #[test]
    fn enhanced_multitrack_one_track_as_ffmpeg_writes_it() {
        let header = [
            0x96, 0x00, b'a', b'v', b'c', b'1', 1, 0x01, 0xf4, 0x00, 0x1e,
        ];
        let tracks: Vec<_> = parse_video(&header).unwrap().collect();
        assert_eq!(
            tracks,
            vec![Ok((
                1,
                VideoTag::AvcSequenceHeader(&[0x01, 0xf4, 0x00, 0x1e])
            ))]
        );
        let key = [0x96, 0x03, b'a', b'v', b'c', b'1', 1, 0, 0, 0, 1, 0x65];
        assert_eq!(
            parse_video(&key).unwrap().collect::<Vec<_>>(),
            vec![Ok((
                1,
                VideoTag::AvcNalus {
                    keyframe: true,
                    composition_time_ms: 0,
                    data: &[0, 0, 0, 1, 0x65]
                }
            ))]
        );
        let delta = [0xa6, 0x01, b'a', b'v', b'c', b'1', 2, 0, 0, 0x21, 7];
        assert_eq!(
            parse_video(&delta).unwrap().collect::<Vec<_>>(),
            vec![Ok((
                2,
                VideoTag::AvcNalus {
                    keyframe: false,
                    composition_time_ms: 0x21,
                    data: &[7]
                }
            ))]
        );
    }

    #[test]
    fn enhanced_many_tracks_with_sizes_and_codecs() {
        // ManyTracks, CodedFramesX: track 0 (2 bytes) and track 2 (1 byte).
        let many = [
            0x96, 0x13, b'a', b'v', b'c', b'1', 0, 0, 0, 2, 8, 9, 2, 0, 0, 1, 7,
        ];
        let tracks: Vec<_> = parse_video(&many).unwrap().map(Result::unwrap).collect();
        assert_eq!(tracks.len(), 2);
        assert_eq!(tracks[0].0, 0);
        assert!(matches!(
            tracks[0].1,
            VideoTag::AvcNalus {
                data: &[8, 9],
                keyframe: true,
                ..
            }
        ));
        assert_eq!(tracks[1].0, 2);
        // ManyTracksManyCodecs: an H.264 track, then an HEVC one, which is refused on its own.
        let mixed = [
            0xa6, 0x23, b'a', b'v', b'c', b'1', 0, 0, 0, 1, 5, b'h', b'v', b'c', b'1', 1, 0, 0, 1,
            6, b'a', b'v', b'c', b'1', 2, 0, 0, 1, 7,
        ];
        let tracks: Vec<_> = parse_video(&mixed).unwrap().collect();
        assert_eq!(tracks.len(), 3, "the track after the refused one is read");
        assert!(matches!(
            tracks[0],
            Ok((0, VideoTag::AvcNalus { data: &[5], .. }))
        ));
        assert!(matches!(
            tracks[2],
            Ok((2, VideoTag::AvcNalus { data: &[7], .. }))
        ));
        assert_eq!(
            tracks[1],
            Err(FlvError::UnsupportedFourCc {
                fourcc: *b"hvc1",
                coded: true
            })
        );
        assert_eq!(
            tracks[1].unwrap_err().to_string(),
            "enhanced RTMP video codec hvc1 is not supported; send H.264"
        );
        // A size past the end stops the iteration with an error.
        let short = [0x96, 0x13, b'a', b'v', b'c', b'1', 0, 0, 0, 9, 8];
        assert_eq!(
            parse_video(&short).unwrap().collect::<Vec<_>>(),
            vec![Err(FlvError::Truncated)]
        );
    }

    #[test]
    fn enhanced_single_track_and_modifiers() {
        // A non-multitrack E-RTMP tag with FourCC avc1 is track 0.
        assert_eq!(
            single(&[0x90, b'a', b'v', b'c', b'1', 0xaa]),
            Ok(VideoTag::AvcSequenceHeader(&[0xaa]))
        );
        // A ModEx of 2 bytes in front of a CodedFramesX.
        assert!(matches!(
            single(&[0x97, 1, 0xee, 0xee, 0x03, b'a', b'v', b'c', b'1', 4]),
            Ok(VideoTag::AvcNalus { data: &[4], .. })
        ));
        assert_eq!(
            parse_video(&[0x97, 9, 0xee]).err(),
            Some(FlvError::Truncated)
        );
        assert_eq!(
            parse_video(&[0x96, 0x30, b'a', b'v', b'c', b'1']).err(),
            Some(FlvError::UnknownMultitrackType(3))
        );
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
            if let Ok(tracks) = parse_video(&data) {
                // Each track takes at least one byte: the iteration is bounded by the tag.
                prop_assert!(tracks.take(100).count() <= data.len());
            }
            let _ = parse_audio(&data);
        }
    }
}
