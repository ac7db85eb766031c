//! The video of an ingested stream as renditions: track 0 (a legacy FLV video tag, an RTSP
//! camera's one stream) and the extra H.264 tracks of Enhanced RTMP multitrack video (OBS's
//! multitrack video, ffmpeg's FLV muxer given several video streams). Each rendition is its own
//! RTP source; together they are published as the simulcast layers of one publication, lowest
//! resolution first, so each viewer gets the rendition its bandwidth allows, as from a
//! browser's simulcast, without transcoding.

use tracing::warn;

use super::avc::AvcConfig;
use super::flv::VideoTag;
use super::video::{VideoError, VideoPipeline, VideoUpdate};
use crate::core::{RtpPacket, Ssrc};
use crate::transport::packetize::H264Packetizer;

/// Renditions published at most: the q/h/f layers of the SDK's picker and WHEP's `?layer=`.
/// The first whose sequence headers arrive win (encoders send them in track order).
pub const MAX_RENDITIONS: usize = 3;

#[derive(Debug)]
struct Rendition {
    track: u8,
    pipeline: VideoPipeline,
    config: Option<AvcConfig>,
}

/// What subscribers are offered: published before the packets that follow a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoLayout {
    /// The codec subscribers negotiate: the highest layer's, whose profile and level cover
    /// the lower layers' (decoders take any level up to the negotiated one).
    pub config: AvcConfig,
    /// Some rendition uses B-frames.
    pub b_frames: bool,
    /// Each layer's RTP source, lowest resolution first; one entry without multitrack.
    pub ssrcs: Vec<Ssrc>,
}

/// The outcome of one track's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenditionUpdate {
    Video(VideoUpdate),
    /// A track past [`MAX_RENDITIONS`]: not forwarded.
    Ignored,
}

#[derive(Debug, Default)]
pub struct VideoRenditions {
    /// Sorted by track id.
    renditions: Vec<Rendition>,
    /// A sequence header changed what is published since the last layout was taken.
    changed: bool,
    warned_ignored: bool,
}

impl VideoRenditions {
    /// The renditions of a reconnected encoder, continuing the parked sources (same SSRCs,
    /// next sequence numbers) so viewers see each layer as one continuous source.
    pub fn continuing(packetizers: Vec<(u8, H264Packetizer)>) -> Self {
        let mut renditions: Vec<Rendition> = packetizers
            .into_iter()
            .map(|(track, packetizer)| Rendition {
                track,
                pipeline: VideoPipeline::continuing(packetizer),
                config: None,
            })
            .collect();
        renditions.sort_by_key(|r| r.track);
        Self {
            renditions,
            ..Self::default()
        }
    }

    /// What a reconnect continues from.
    pub fn park(self) -> Vec<(u8, H264Packetizer)> {
        self.renditions
            .into_iter()
            .map(|r| (r.track, r.pipeline.into_packetizer().continuing()))
            .collect()
    }

    /// Handles one tag of `track` decoded at `dts_ms`; packets go to `out`.
    pub fn push(
        &mut self,
        track: u8,
        tag: VideoTag<'_>,
        dts_ms: i64,
        out: &mut Vec<RtpPacket>,
    ) -> Result<RenditionUpdate, VideoError> {
        let index = match self.renditions.binary_search_by_key(&track, |r| r.track) {
            Ok(index) => index,
            // A rendition starts with its sequence header. Track 0 is the stream's one
            // rendition without multitrack: a frame before its header is the encoder's error.
            Err(_) if track == 0 && matches!(tag, VideoTag::AvcNalus { .. }) => {
                return Err(VideoError::NoSequenceHeader);
            }
            Err(_) if !matches!(tag, VideoTag::AvcSequenceHeader(_)) => {
                return Ok(RenditionUpdate::Ignored);
            }
            Err(index) => match self.make_room(index) {
                Some(index) => {
                    self.renditions.insert(
                        index,
                        Rendition {
                            track,
                            pipeline: VideoPipeline::default(),
                            config: None,
                        },
                    );
                    index
                }
                None => {
                    if !self.warned_ignored {
                        self.warned_ignored = true;
                        warn!(
                            track,
                            max = MAX_RENDITIONS,
                            "video track ignored: more renditions than layers"
                        );
                    }
                    return Ok(RenditionUpdate::Ignored);
                }
            },
        };
        let rendition = &mut self.renditions[index];
        let update = rendition.pipeline.push(tag, dts_ms, out)?;
        if let VideoUpdate::Codec(config) = &update {
            rendition.config = Some(config.as_ref().clone());
            self.changed = true;
        }
        Ok(RenditionUpdate::Video(update))
    }

    /// Where a new rendition goes in before `index`: there when a slot is free, after evicting
    /// a rendition that has no sequence header in this session (a parked one whose track did
    /// not come back); `None` when all slots are taken by configured renditions.
    fn make_room(&mut self, index: usize) -> Option<usize> {
        if self.renditions.len() < MAX_RENDITIONS {
            return Some(index);
        }
        let stale = self.renditions.iter().position(|r| r.config.is_none())?;
        self.renditions.remove(stale);
        Some(if stale < index { index - 1 } else { index })
    }

    /// The layout to publish when a sequence header changed it since the last call.
    pub fn take_changed_layout(&mut self) -> Option<VideoLayout> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        let mut configured: Vec<(&AvcConfig, Ssrc, u8)> = self
            .renditions
            .iter()
            .filter_map(|r| Some((r.config.as_ref()?, r.pipeline.ssrc(), r.track)))
            .collect();
        configured.sort_by_key(|(config, _, track)| {
            (u64::from(config.width) * u64::from(config.height), *track)
        });
        let (highest, _, _) = configured.last()?;
        Some(VideoLayout {
            config: (*highest).clone(),
            b_frames: configured.iter().any(|(c, _, _)| c.has_b_frames()),
            ssrcs: configured.iter().map(|(_, ssrc, _)| *ssrc).collect(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ingest::avc::tests::{PPS, SPS_BASELINE_320, SPS_HIGH_720P, avcc, record};

    fn frame(renditions: &mut VideoRenditions, track: u8, out: &mut Vec<RtpPacket>) {
        let idr = avcc(&[&[0x65, 1, 2]]);
        let tag = VideoTag::AvcNalus {
            keyframe: true,
            composition_time_ms: 0,
            data: &idr,
        };
        renditions.push(track, tag, 0, out).unwrap();
    }

    #[test]
    fn tracks_become_layers_and_extra_tracks_are_ignored() {
        let mut renditions = VideoRenditions::default();
        let mut out = Vec::new();
        let header = record(SPS_HIGH_720P, PPS);
        let small = record(SPS_BASELINE_320, PPS);
        for (track, header) in [(0, &header), (3, &small), (1, &header)] {
            renditions
                .push(track, VideoTag::AvcSequenceHeader(header), 0, &mut out)
                .unwrap();
        }
        let layout = renditions.take_changed_layout().unwrap();
        assert_eq!(layout.ssrcs.len(), 3);
        assert_eq!(layout.config.height, 720, "the codec of the highest layer");
        assert_eq!(renditions.take_changed_layout(), None, "taken once");
        // Lowest resolution first; equal ones by track id.
        let mut by_layer = Vec::new();
        for track in [0, 1, 3] {
            out.clear();
            frame(&mut renditions, track, &mut out);
            by_layer.push(layout.ssrcs.iter().position(|s| *s == out[0].ssrc));
        }
        assert_eq!(by_layer, [Some(1), Some(2), Some(0)]);
        assert_eq!(
            renditions
                .push(7, VideoTag::AvcSequenceHeader(&header), 0, &mut out)
                .unwrap(),
            RenditionUpdate::Ignored
        );
        // Parked and resumed: the same sources, no layout until the headers come again.
        let mut resumed = VideoRenditions::continuing(renditions.park());
        assert_eq!(resumed.take_changed_layout(), None);
        for (track, header) in [(0, &header), (1, &header), (3, &small)] {
            resumed
                .push(track, VideoTag::AvcSequenceHeader(header), 0, &mut out)
                .unwrap();
        }
        assert_eq!(resumed.take_changed_layout().unwrap().ssrcs, layout.ssrcs);
    }

    #[test]
    fn a_rendition_starts_at_its_header_and_parked_ones_that_do_not_return_make_room() {
        let mut renditions = VideoRenditions::default();
        let mut out = Vec::new();
        let header = record(SPS_HIGH_720P, PPS);
        // Frames and commands of a track never announced take no slot.
        frame_of(&mut renditions, 5, &mut out, RenditionUpdate::Ignored);
        assert_eq!(
            renditions.push(6, VideoTag::Command, 0, &mut out).unwrap(),
            RenditionUpdate::Ignored
        );
        for track in [0, 1, 2] {
            renditions
                .push(track, VideoTag::AvcSequenceHeader(&header), 0, &mut out)
                .unwrap();
        }
        let before = renditions.take_changed_layout().unwrap();
        // The encoder comes back with tracks 0, 2 and 3: track 1's parked source makes room.
        let mut resumed = VideoRenditions::continuing(renditions.park());
        for track in [0, 2, 3] {
            assert!(matches!(
                resumed.push(track, VideoTag::AvcSequenceHeader(&header), 0, &mut out),
                Ok(RenditionUpdate::Video(VideoUpdate::Codec(_)))
            ));
        }
        let after = resumed.take_changed_layout().unwrap();
        assert_eq!(after.ssrcs.len(), 3);
        assert_eq!(
            after.ssrcs[..2],
            [before.ssrcs[0], before.ssrcs[2]],
            "0 and 2 continue"
        );
        assert!(!before.ssrcs.contains(&after.ssrcs[2]), "3 is a new source");
        // Track 0's frame before its header is still the encoder's error.
        let mut fresh = VideoRenditions::default();
        let idr = avcc(&[&[0x65, 1, 2]]);
        let tag = VideoTag::AvcNalus {
            keyframe: true,
            composition_time_ms: 0,
            data: &idr,
        };
        assert_eq!(
            fresh.push(0, tag, 0, &mut out),
            Err(VideoError::NoSequenceHeader)
        );
    }

    fn frame_of(
        renditions: &mut VideoRenditions,
        track: u8,
        out: &mut Vec<RtpPacket>,
        expected: RenditionUpdate,
    ) {
        let idr = avcc(&[&[0x65, 1, 2]]);
        let tag = VideoTag::AvcNalus {
            keyframe: true,
            composition_time_ms: 0,
            data: &idr,
        };
        assert_eq!(renditions.push(track, tag, 0, out).unwrap(), expected);
    }

    /// The video tags of an FLV file: (timestamp in ms, tag body).
    fn flv_video_tags(file: &[u8]) -> Vec<(u32, &[u8])> {
        let mut tags = Vec::new();
        // The 9-byte header and the first back-pointer.
        let mut at = 13;
        while at + 11 <= file.len() {
            let kind = file[at];
            let size = usize::from(file[at + 1]) << 16
                | usize::from(file[at + 2]) << 8
                | usize::from(file[at + 3]);
            let ms = u32::from_be_bytes([file[at + 7], file[at + 4], file[at + 5], file[at + 6]]);
            let body = &file[at + 11..at + 11 + size];
            if kind == 9 {
                tags.push((ms, body));
            }
            at += 11 + size + 4;
        }
        tags
    }

    /// ffmpeg 9's two renditions in one FLV (testdata/README.md) become one publication of two
    /// layers, announced before its first packets, the 160x90 rendition as layer 0.
    #[test]
    fn an_ffmpeg_multitrack_flv_becomes_two_layers() {
        use crate::ingest::media::{Announce, MediaPipeline, Origin};
        use std::time::Instant;

        let file = include_bytes!("testdata/multitrack.flv");
        let mut media = MediaPipeline::new(std::sync::Arc::default(), Origin::Rtmp);
        let mut layers = None;
        let mut packets = Vec::new();
        for (ms, tag) in flv_video_tags(file) {
            let mut out = Vec::new();
            let announce = media.push_video(Instant::now(), ms, tag, &mut out).unwrap();
            if let Announce::Codec {
                codec,
                layers: announced,
                ..
            } = announce
            {
                assert!(layers.is_none(), "announced once");
                assert!(packets.is_empty(), "announced before the first packets");
                assert_eq!(codec.mime_type, "video/H264");
                layers = Some(announced);
            }
            packets.extend(out);
        }
        let layers = layers.expect("announced");
        assert_eq!(layers.len(), 2);
        let bytes_of = |ssrc: Ssrc| -> usize {
            packets
                .iter()
                .filter(|p| p.ssrc == ssrc)
                .map(|p| p.payload.len())
                .sum()
        };
        let frames_of = |ssrc: Ssrc| {
            packets
                .iter()
                .filter(|p| p.ssrc == ssrc && p.marker)
                .count()
        };
        assert_eq!((frames_of(layers[0]), frames_of(layers[1])), (6, 6));
        // Each layer starts with its parameter sets: the SPS's resolution orders them.
        let sps_of = |ssrc: Ssrc| {
            let first = packets.iter().find(|p| p.ssrc == ssrc).unwrap();
            // STAP-A: type 24, then each NAL unit (SPS, PPS) after its 16-bit size.
            let stap = &first.payload;
            assert_eq!(stap[0] & 0x1f, 24);
            let sps_size = usize::from(u16::from_be_bytes([stap[1], stap[2]]));
            let sps = &stap[3..3 + sps_size];
            let at = 3 + sps_size;
            let pps_size = usize::from(u16::from_be_bytes([stap[at], stap[at + 1]]));
            let pps = &stap[at + 2..at + 2 + pps_size];
            let config = crate::ingest::avc::parse_config(&record(sps, pps)).unwrap();
            (config.width, config.height)
        };
        assert_eq!(sps_of(layers[0]), (160, 90));
        assert_eq!(sps_of(layers[1]), (320, 180));
        assert!(bytes_of(layers[0]) < bytes_of(layers[1]));
    }
}
