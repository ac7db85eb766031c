//! The video half of an RTMP stream: FLV video tags → H.264 RTP, without transcoding.

use bytes::Bytes;

use super::avc::{self, AvcConfig, AvcError};
use super::flv::VideoTag;
use crate::core::RtpPacket;
use crate::transport::CodecInfo;
use crate::transport::packetize::H264Packetizer;

/// RTP clock rate of video.
pub const VIDEO_RATE: i64 = 90_000;

#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoError {
    #[error("video frame before the AVC sequence header (the encoder must send it first)")]
    NoSequenceHeader,
    #[error(transparent)]
    Avc(#[from] AvcError),
}

/// What one video tag changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoUpdate {
    /// A sequence header with new parameters: the publication must carry this codec before
    /// the next packets go out.
    Codec(Box<AvcConfig>),
    /// Packets were appended (possibly none).
    Frame {
        keyframe: bool,
        /// Presentation differs from decode time: the encoder uses B-frames.
        reordered: bool,
    },
}

#[derive(Debug, Default)]
pub struct VideoPipeline {
    config: Option<AvcConfig>,
    packetizer: H264Packetizer,
    /// The access unit in Annex B; handed over to the packets' shared payload each frame.
    scratch: Vec<u8>,
}

impl VideoPipeline {
    /// A pipeline for a reconnected encoder that keeps numbering packets where `packetizer`
    /// stopped (same SSRC, next sequence number), so subscribers see one continuous source.
    pub fn continuing(packetizer: H264Packetizer) -> Self {
        Self {
            config: None,
            packetizer,
            scratch: Vec::new(),
        }
    }

    pub fn into_packetizer(self) -> H264Packetizer {
        self.packetizer
    }

    /// The RTP source of this pipeline's packets.
    pub fn ssrc(&self) -> crate::core::Ssrc {
        self.packetizer.ssrc()
    }

    /// Handles one tag decoded at `dts_ms` on the stream's timeline; packets go to `out`.
    pub fn push(
        &mut self,
        tag: VideoTag<'_>,
        dts_ms: i64,
        out: &mut Vec<RtpPacket>,
    ) -> Result<VideoUpdate, VideoError> {
        let (data, composition_time_ms) = match tag {
            VideoTag::AvcSequenceHeader(record) => {
                let config = avc::parse_config(record)?;
                if self.config.as_ref() == Some(&config) {
                    // Encoders repeat the header; nothing changed.
                    return Ok(VideoUpdate::Frame {
                        keyframe: false,
                        reordered: false,
                    });
                }
                self.config = Some(config.clone());
                return Ok(VideoUpdate::Codec(Box::new(config)));
            }
            VideoTag::AvcNalus {
                data,
                composition_time_ms,
                ..
            } => (data, composition_time_ms),
            VideoTag::AvcEndOfSequence | VideoTag::Command => {
                return Ok(VideoUpdate::Frame {
                    keyframe: false,
                    reordered: false,
                });
            }
        };
        let config = self.config.as_ref().ok_or(VideoError::NoSequenceHeader)?;
        self.scratch.clear();
        let info = avc::to_annex_b(data, config, &mut self.scratch)?;
        if !self.scratch.is_empty() {
            let pts_ms = dts_ms + i64::from(composition_time_ms);
            // RTP timestamps are presentation times (RFC 6184 5.1), wrapping at 2^32.
            let timestamp = (pts_ms * VIDEO_RATE / 1000) as u32;
            let access_unit = Bytes::from(std::mem::take(&mut self.scratch));
            self.packetizer.packetize(access_unit, timestamp, out);
        }
        Ok(VideoUpdate::Frame {
            keyframe: info.idr,
            reordered: composition_time_ms != 0,
        })
    }
}

/// The codec a subscriber negotiates for this stream.
pub fn codec_info(config: &AvcConfig) -> CodecInfo {
    CodecInfo {
        mime_type: "video/H264".to_owned(),
        clock_rate: VIDEO_RATE as u32,
        channels: 0,
        sdp_fmtp_line: format!(
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={}",
            config.profile_level_id
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ingest::avc::tests::{PPS, SPS_HIGH_720P, avcc, record};

    #[test]
    fn frames_before_the_sequence_header_are_refused() {
        let mut video = VideoPipeline::default();
        let mut out = Vec::new();
        let frame = avcc(&[&[0x65, 1, 2]]);
        let tag = VideoTag::AvcNalus {
            keyframe: true,
            composition_time_ms: 0,
            data: &frame,
        };
        assert_eq!(
            video.push(tag, 0, &mut out),
            Err(VideoError::NoSequenceHeader)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn sequence_header_then_frames_with_presentation_timestamps() {
        let mut video = VideoPipeline::default();
        let mut out = Vec::new();
        let header = record(SPS_HIGH_720P, PPS);
        let update = video
            .push(VideoTag::AvcSequenceHeader(&header), 0, &mut out)
            .unwrap();
        let VideoUpdate::Codec(config) = update else {
            panic!("{update:?}")
        };
        assert_eq!(
            codec_info(&config).sdp_fmtp_line,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=f4001f"
        );
        // The same header again is not a change.
        assert!(matches!(
            video.push(VideoTag::AvcSequenceHeader(&header), 0, &mut out),
            Ok(VideoUpdate::Frame { .. })
        ));
        let idr = avcc(&[&[0x65, 1, 2]]);
        let update = video
            .push(
                VideoTag::AvcNalus {
                    keyframe: true,
                    composition_time_ms: 66,
                    data: &idr,
                },
                1000,
                &mut out,
            )
            .unwrap();
        assert_eq!(
            update,
            VideoUpdate::Frame {
                keyframe: true,
                reordered: true
            }
        );
        // STAP-A(SPS, PPS) + the IDR, stamped with dts + composition offset.
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|p| p.timestamp == 1066 * 90));
        assert!(out[1].marker && !out[0].marker);
    }
}
