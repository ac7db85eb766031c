//! What Sluice takes from an RTSP presentation: which of its streams to play, and retina's
//! frames turned into the ingest pipeline's inputs (AVC records and AVCC access units, AAC or
//! G.711 frames) on the presentation's one millisecond timeline.
//!
//! Plain values in, so this part is tested with arbitrary input; `session` reads them off
//! retina's types.

use std::time::Instant;

use tracing::warn;

use crate::core::RtpPacket;
use crate::ingest::audio::AudioToOpus;
use crate::ingest::flv::VideoTag;
use crate::ingest::g711::Law;
use crate::ingest::media::{Announce, MediaError, MediaPipeline};

/// The largest access unit forwarded (an RTMP message's bound too); larger ones are dropped.
pub const MAX_ACCESS_UNIT: usize = 4 * 1024 * 1024;

/// An audio codec Sluice converts to Opus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
    G711(Law),
}

/// The streams of a presentation Sluice sets up (indexes into its SDP's media).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub video: Option<usize>,
    pub audio: Option<(usize, AudioCodec)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no stream Sluice can play (H.264 video, AAC or G.711 audio) among: {0}")]
pub struct NoUsableStream(pub String);

/// Picks the first H.264 video and the first AAC or G.711 audio stream of a presentation,
/// given each stream's SDP media type and encoding name. H.265 video is refused with a log
/// line (browsers do not all decode it, and Sluice does not transcode).
pub fn select<'a>(
    streams: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Selection, NoUsableStream> {
    let mut selection = Selection::default();
    let mut seen = Vec::new();
    for (i, (media, encoding)) in streams.into_iter().enumerate() {
        let encoding = encoding.to_ascii_lowercase();
        seen.push(format!("{media}/{encoding}"));
        match (media, encoding.as_str()) {
            ("video", "h264") if selection.video.is_none() => selection.video = Some(i),
            ("video", "h265") => warn!(
                stream = i,
                "H.265 video refused: browsers cannot all decode it and Sluice does not \
                 transcode; set the camera's stream to H.264"
            ),
            ("audio", codec) if selection.audio.is_none() => {
                let codec = match codec {
                    "mpeg4-generic" => AudioCodec::Aac,
                    "pcmu" => AudioCodec::G711(Law::Mu),
                    "pcma" => AudioCodec::G711(Law::A),
                    other => {
                        warn!(
                            stream = i,
                            encoding = other,
                            "audio codec not converted: ignored"
                        );
                        continue;
                    }
                };
                selection.audio = Some((i, codec));
            }
            _ => {}
        }
    }
    if selection.video.is_none() && selection.audio.is_none() {
        return Err(NoUsableStream(seen.join(", ")));
    }
    Ok(selection)
}

/// A frame's timestamp: RTP clock ticks since the presentation's start, and the clock's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticks {
    pub elapsed: i64,
    pub clock_rate: u32,
}

impl Ticks {
    /// Milliseconds on the pipeline's 32-bit clock (it extends wraps). A sample before the
    /// start (a B-frame's presentation time just after PLAY) is placed at the start.
    pub fn millis(self) -> u32 {
        let rate = i128::from(self.clock_rate.max(1));
        let ms = i128::from(self.elapsed.max(0)) * 1_000 / rate;
        // Wraps by design: the timeline extends the 32-bit clock across its wrap.
        ms as u32
    }
}

/// One H.264 access unit from retina (4-byte length-prefixed NAL units, no parameter sets
/// added), with the parameters in force when they are new.
#[derive(Debug, Clone, Copy)]
pub struct VideoInput<'a> {
    pub at: Ticks,
    /// The AVCDecoderConfigurationRecord, when the stream's parameters are new (the SDP's or
    /// in-band SPS/PPS).
    pub new_parameters: Option<&'a [u8]>,
    pub data: &'a [u8],
}

/// How the presentation's audio is set up, from its SDP.
#[derive(Debug, Clone, Copy)]
pub enum AudioSetup<'a> {
    /// The AudioSpecificConfig (the SDP's `config`).
    Aac {
        config: &'a [u8],
    },
    G711 {
        law: Law,
        rate: u32,
        channels: u16,
    },
}

/// The conversion state of one RTSP session.
#[derive(Debug, Default)]
pub struct Frames {
    audio_started: bool,
    /// The last video presentation time: a frame presented before it is a B-frame.
    last_video_ms: Option<u32>,
    oversized: u64,
}

impl Frames {
    /// One video frame: its sequence header first when the parameters are new, then the
    /// access unit. Returns what to publish first.
    pub fn video(
        &mut self,
        media: &mut MediaPipeline,
        now: Instant,
        input: VideoInput<'_>,
        out: &mut Vec<RtpPacket>,
    ) -> Result<Announce, MediaError> {
        let ms = input.at.millis();
        let mut announce = Announce::Nothing;
        if let Some(record) = input.new_parameters {
            announce = media.push_video_tag(now, ms, VideoTag::AvcSequenceHeader(record), out)?;
        }
        if input.data.len() > MAX_ACCESS_UNIT {
            self.oversized += 1;
            if self.oversized == 1 {
                warn!(
                    bytes = input.data.len(),
                    limit = MAX_ACCESS_UNIT,
                    "oversized access unit dropped (further ones are only counted)"
                );
            }
            return Ok(announce);
        }
        if self
            .last_video_ms
            .is_some_and(|last| (ms.wrapping_sub(last) as i32) < 0)
        {
            media.warn_b_frames();
        }
        self.last_video_ms = Some(ms);
        let tag = VideoTag::AvcNalus {
            // The pipeline finds IDRs in the NAL units; this flag is not used for that.
            keyframe: false,
            composition_time_ms: 0,
            data: input.data,
        };
        let frame = media.push_video_tag(now, ms, tag, out)?;
        Ok(match announce {
            Announce::Nothing => frame,
            codec => codec,
        })
    }

    /// One audio frame: starts the Opus conversion at the first one. Returns what to publish
    /// first.
    pub fn audio(
        &mut self,
        media: &mut MediaPipeline,
        now: Instant,
        setup: AudioSetup<'_>,
        at: Ticks,
        data: &[u8],
        out: &mut Vec<RtpPacket>,
    ) -> Result<Announce, MediaError> {
        let mut announce = Announce::Nothing;
        if !self.audio_started {
            self.audio_started = true;
            announce = media.start_audio(match setup {
                AudioSetup::Aac { config } => AudioToOpus::aac(config),
                AudioSetup::G711 {
                    law,
                    rate,
                    channels,
                } => AudioToOpus::g711(law, rate, usize::from(channels)),
            });
        }
        media.push_audio_frame(now, at.millis(), data, out)?;
        Ok(announce)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::ingest::avc::tests::{PPS, SPS_BASELINE_320, avcc, record};
    use crate::ingest::media::Origin;

    fn pipeline() -> MediaPipeline {
        MediaPipeline::new(Arc::default(), Origin::Rtsp)
    }

    fn ticks(ms: i64, clock_rate: u32) -> Ticks {
        Ticks {
            elapsed: ms * i64::from(clock_rate) / 1000,
            clock_rate,
        }
    }

    #[test]
    fn selection_takes_h264_and_a_convertible_audio_and_refuses_h265() {
        let pick = |streams: &[(&'static str, &'static str)]| select(streams.iter().copied());
        assert_eq!(
            pick(&[("video", "H264"), ("audio", "MPEG4-GENERIC")]),
            Ok(Selection {
                video: Some(0),
                audio: Some((1, AudioCodec::Aac))
            })
        );
        assert_eq!(
            pick(&[("audio", "PCMU"), ("video", "h265")]),
            Ok(Selection {
                video: None,
                audio: Some((0, AudioCodec::G711(Law::Mu)))
            })
        );
        assert_eq!(
            pick(&[("audio", "opus"), ("audio", "pcma"), ("video", "jpeg")]),
            Ok(Selection {
                video: None,
                audio: Some((1, AudioCodec::G711(Law::A)))
            })
        );
        let err = pick(&[("video", "h265"), ("application", "vnd.onvif.metadata")]).unwrap_err();
        assert!(err.to_string().contains("video/h265"), "{err}");
    }

    #[test]
    fn timestamps_become_milliseconds_from_the_start() {
        assert_eq!(ticks(1_500, 90_000).millis(), 1_500);
        assert_eq!(ticks(20, 8_000).millis(), 20);
        assert_eq!(
            Ticks {
                elapsed: -3_000,
                clock_rate: 90_000
            }
            .millis(),
            0
        );
        let day = 86_400_000i64 * 60;
        assert_eq!(ticks(day, 90_000).millis(), day as u32);
        assert_eq!(
            Ticks {
                elapsed: 5,
                clock_rate: 0
            }
            .millis(),
            5_000
        );
    }

    #[test]
    fn h264_with_new_parameters_announces_then_forwards_with_sps_pps_before_the_idr() {
        let mut frames = Frames::default();
        let mut media = pipeline();
        let mut out = Vec::new();
        let record = record(SPS_BASELINE_320, PPS);
        // retina's MP4 framing: 4-byte lengths.
        let idr = avcc(&[&[0x65, 0x88, 0x84]]);
        let announce = frames
            .video(
                &mut media,
                Instant::now(),
                VideoInput {
                    at: ticks(0, 90_000),
                    new_parameters: Some(&record),
                    data: &idr,
                },
                &mut out,
            )
            .unwrap();
        let Announce::Codec { codec, name, .. } = announce else {
            panic!("{announce:?}")
        };
        assert_eq!(codec.mime_type, "video/H264");
        assert_eq!(name, "rtsp video");
        // One STAP-A with SPS and PPS, then the IDR, the frame's last packet marked.
        assert_eq!(out.len(), 2);
        assert!(out[1].marker);
        let delta = avcc(&[&[0x41, 0x9a, 0x02]]);
        out.clear();
        let announce = frames
            .video(
                &mut media,
                Instant::now(),
                VideoInput {
                    at: ticks(33, 90_000),
                    new_parameters: None,
                    data: &delta,
                },
                &mut out,
            )
            .unwrap();
        assert!(matches!(announce, Announce::Nothing));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].timestamp, 33 * 90);
    }

    #[test]
    fn pcmu_becomes_opus_at_20_ms_a_packet() {
        let mut frames = Frames::default();
        let mut media = pipeline();
        let mut out = Vec::new();
        let setup = AudioSetup::G711 {
            law: Law::Mu,
            rate: 8_000,
            channels: 1,
        };
        // A 440 Hz tone, 20 ms (160 samples) per RTP packet as cameras send it, for 1 s.
        let mut announced = None;
        for packet in 0..50 {
            let bytes: Vec<u8> = (0..160)
                .map(|i| {
                    let t = f64::from(packet * 160 + i) / 8_000.0;
                    mu_law_of((t * 440.0 * std::f64::consts::TAU).sin() * 8_000.0)
                })
                .collect();
            let announce = frames
                .audio(
                    &mut media,
                    Instant::now(),
                    setup,
                    ticks(i64::from(packet) * 20, 8_000),
                    &bytes,
                    &mut out,
                )
                .unwrap();
            if let Announce::Codec { codec, name, .. } = announce {
                announced = Some((codec.mime_type, name));
            }
        }
        assert_eq!(
            announced,
            Some(("audio/opus".to_owned(), "rtsp audio".to_owned()))
        );
        assert!(out.len() >= 45, "{} Opus packets", out.len());
        assert!(
            out.windows(2)
                .all(|w| w[1].timestamp.wrapping_sub(w[0].timestamp) == 960)
        );
        // The tone is audible: levels well above silence (127).
        assert!(out[10..].iter().all(|p| p.audio_level.unwrap() < 40));
    }

    /// The µ-law code whose decoded value is nearest `sample` (a test encoder).
    fn mu_law_of(sample: f64) -> u8 {
        let mut decoded = Vec::new();
        Law::Mu.decode(&(0..=255).collect::<Vec<u8>>(), &mut decoded);
        (0..=255u8)
            .min_by(|&a, &b| {
                let da = (f64::from(decoded[usize::from(a)]) * 32_768.0 - sample).abs();
                let db = (f64::from(decoded[usize::from(b)]) * 32_768.0 - sample).abs();
                da.total_cmp(&db)
            })
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever a camera sends as parameters and access units, the conversion returns
        /// (an error or packets), never panics, and emits packets only within the MTU.
        #[test]
        fn arbitrary_video_input_never_panics(
            parameters in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            frames in proptest::collection::vec(
                (any::<i64>(), proptest::collection::vec(any::<u8>(), 0..3000)), 1..8),
        ) {
            let mut state = Frames::default();
            let mut media = pipeline();
            let mut out = Vec::new();
            for (i, (elapsed, data)) in frames.iter().enumerate() {
                let input = VideoInput {
                    at: Ticks { elapsed: *elapsed, clock_rate: 90_000 },
                    new_parameters: if i == 0 { parameters.as_deref() } else { None },
                    data,
                };
                let _ = state.video(&mut media, Instant::now(), input, &mut out);
            }
            prop_assert!(out.iter().all(|p| p.payload.len() <= 1200));
        }

        /// Valid parameters with arbitrary access units: still no panic, and each output
        /// packet carries at most the access unit's bytes plus the parameter sets.
        #[test]
        fn arbitrary_access_units_after_valid_parameters(
            units in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5000), 1..6),
        ) {
            let mut state = Frames::default();
            let mut media = pipeline();
            let record = record(SPS_BASELINE_320, PPS);
            let mut out = Vec::new();
            for (i, data) in units.iter().enumerate() {
                let input = VideoInput {
                    at: ticks(i as i64 * 33, 90_000),
                    new_parameters: (i == 0).then_some(record.as_slice()),
                    data,
                };
                let _ = state.video(&mut media, Instant::now(), input, &mut out);
            }
            let budget: usize = units.iter().map(Vec::len).sum::<usize>()
                + units.len() * (SPS_BASELINE_320.len() + PPS.len() + 64);
            prop_assert!(out.iter().map(|p| p.payload.len()).sum::<usize>() <= budget * 2);
        }

        /// Any bytes as G.711 or AAC frames, of any length at any spacing: no panic, and every
        /// Opus packet fits a datagram. (Frames whose length disagrees with their spacing make
        /// the output resynchronise to the camera's timestamps, off the 20 ms grid.)
        #[test]
        fn arbitrary_audio_frames_never_panic(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 1..20),
            aac_config in proptest::collection::vec(any::<u8>(), 0..8),
            rate in prop_oneof![Just(8_000u32), Just(16_000), any::<u32>()],
            channels in 0u16..4,
        ) {
            for setup in [
                AudioSetup::G711 { law: Law::A, rate, channels },
                AudioSetup::Aac { config: &aac_config },
            ] {
                let mut state = Frames::default();
                let mut media = pipeline();
                let mut out = Vec::new();
                for (i, data) in frames.iter().enumerate() {
                    let _ = state.audio(
                        &mut media,
                        Instant::now(),
                        setup,
                        ticks(i as i64 * 20, 8_000),
                        data,
                        &mut out,
                    );
                }
                prop_assert!(out.iter().all(|p| p.payload.len() <= 1200));
            }
        }

        /// G.711 frames whose length matches their 20 ms spacing, whatever their bytes, come out
        /// on Opus's 20 ms grid.
        #[test]
        fn g711_frames_on_time_stay_on_the_20_ms_grid(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 160), 1..20),
            mu in any::<bool>(),
        ) {
            let law = if mu { Law::Mu } else { Law::A };
            let mut state = Frames::default();
            let mut media = pipeline();
            let mut out = Vec::new();
            for (i, data) in frames.iter().enumerate() {
                let _ = state.audio(
                    &mut media,
                    Instant::now(),
                    AudioSetup::G711 { law, rate: 8_000, channels: 1 },
                    ticks(i as i64 * 20, 8_000),
                    data,
                    &mut out,
                );
            }
            prop_assert!(out.windows(2).all(|w| w[1].timestamp.wrapping_sub(w[0].timestamp) % 960 == 0));
        }
    }
}
