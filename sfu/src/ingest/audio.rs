//! AAC or G.711 → Opus: what encoders send over RTMP and cameras over RTSP, converted to what
//! browsers play over WebRTC.
//!
//! AAC-LC frames are decoded (symphonia), G.711 by its table ([`super::g711`]); the samples are resampled to 48 kHz when needed (rubato, a short
//! sinc filter: well under a millisecond of delay), cut into 20 ms frames and encoded (libopus).
//! Mono stays mono (browsers upmix); stereo stays stereo.
//!
//! Timing: each Opus frame's timestamp comes from a 48 kHz sample clock started at the first
//! AAC frame's FLV timestamp, so audio and video stay on the encoder's one timeline. The FLV
//! timestamps (whole milliseconds) are only used to detect a gap or jump, which restarts the
//! clock there.

use bytes::Bytes;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};
use symphonia::core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::packet::PacketRef;
use symphonia::core::units::{Duration, Timestamp};
use symphonia::default::codecs::AacDecoder;

use super::g711::Law;

/// The Opus clock rate and the one rate WebRTC negotiates for it.
pub const OPUS_RATE: u32 = 48_000;
/// 20 ms at 48 kHz: the frame duration browsers send and expect.
pub const OPUS_FRAME: usize = 960;
/// A timestamp this far (ms) from where the sample count says the next AAC frame belongs is a
/// discontinuity (the encoder dropped audio or restarted), not FLV rounding jitter.
const RESYNC_MS: i64 = 200;
/// The largest Opus packet we let libopus write (its recommended maximum).
const MAX_OPUS_PACKET: usize = 4000;
/// The rates of the sampling-frequency indexes 0–12 of ISO/IEC 14496-3 (1.6.3.4): every rate
/// an AudioSpecificConfig can name without an explicit frequency, each one accepted.
const AAC_SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];
/// The lowest G.711 rate accepted (cameras send 8 kHz; RFC 3551 allows others).
const MIN_G711_RATE: u32 = 8_000;
/// How much input the resampler takes at a time at 44.1 kHz; other rates take the same
/// duration (≈ 23 ms), so a low rate is not held back longer than a high one.
const RESAMPLER_CHUNK_44K: usize = 1024;

#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    #[error("unusable AAC configuration: {0}")]
    Config(String),
    #[error("AAC frame does not decode: {0}")]
    Decode(String),
    #[error("resampling failed: {0}")]
    Resample(String),
    #[error("opus encoder: {0}")]
    Encode(String),
}

/// One 20 ms Opus frame and its time in 48 kHz units on the stream's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusFrame {
    pub payload: Bytes,
    pub timestamp: i64,
    /// Its RFC 6464 level (-dBov, 0 loudest, 127 silence), what a browser publisher puts in
    /// its `ssrc-audio-level` extension: the routing core ranks active speakers by it.
    pub level: u8,
}

/// RFC 6464 level of interleaved float samples: the RMS over all channels in dB below the
/// overload point (a full-scale square wave, RMS 1.0), as a positive number, 127 for silence.
pub fn audio_level(samples: &[f32]) -> u8 {
    if samples.is_empty() {
        return 127;
    }
    let energy: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / samples.len() as f64).sqrt();
    if rms <= 0.0 || !rms.is_finite() {
        return 127;
    }
    // Clamped to 0..=127, so the cast cannot truncate.
    (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8
}

/// What turns one stream's frames into samples.
enum Decoder {
    Aac(Box<AacDecoder>),
    G711(Law),
}

/// The AAC or G.711 → Opus path of one stream.
pub struct AudioToOpus {
    decoder: Decoder,
    channels: usize,
    input_rate: u32,
    resampler: Option<Async<f32>>,
    /// Decoded samples (interleaved, input rate) not yet taken by the resampler.
    input: Vec<f32>,
    /// 48 kHz samples (interleaved) not yet encoded, and the time of the first of them.
    pcm: Vec<f32>,
    clock: Option<i64>,
    /// Where the next AAC frame belongs (FLV milliseconds), from the samples decoded so far.
    expected_ms: Option<f64>,
    encoder: opus::Encoder,
    scratch: Vec<f32>,
    encoded: Vec<u8>,
}

impl std::fmt::Debug for AudioToOpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioToOpus")
            .field("channels", &self.channels)
            .field("input_rate", &self.input_rate)
            .finish()
    }
}

impl AudioToOpus {
    /// Sets up the path from an AudioSpecificConfig (the FLV AAC sequence header).
    pub fn aac(audio_specific_config: &[u8]) -> Result<Self, AudioError> {
        let mut params = AudioCodecParameters::new();
        params
            .for_codec(CODEC_ID_AAC)
            .with_extra_data(audio_specific_config.into());
        let decoder = AacDecoder::try_new(&params, &AudioDecoderOptions::default())
            .map_err(|e| AudioError::Config(e.to_string()))?;
        let decoded = decoder.codec_params();
        let input_rate = decoded
            .sample_rate
            .filter(|rate| AAC_SAMPLE_RATES.contains(rate))
            .ok_or_else(|| AudioError::Config("no usable sample rate".into()))?;
        let channels = decoded.channels.as_ref().map_or(0, |c| c.count());
        Self::with_decoder(Decoder::Aac(Box::new(decoder)), input_rate, channels)
    }

    /// Sets up the path for G.711 of this law at `input_rate` (8 kHz from cameras).
    pub fn g711(law: Law, input_rate: u32, channels: usize) -> Result<Self, AudioError> {
        if !(MIN_G711_RATE..=OPUS_RATE).contains(&input_rate) {
            return Err(AudioError::Config(format!(
                "G.711 at {input_rate} Hz (expected {MIN_G711_RATE}..={OPUS_RATE})"
            )));
        }
        Self::with_decoder(Decoder::G711(law), input_rate, channels)
    }

    fn with_decoder(
        decoder: Decoder,
        input_rate: u32,
        channels: usize,
    ) -> Result<Self, AudioError> {
        let opus_channels = match channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => {
                return Err(AudioError::Config(format!(
                    "{n} channels (send mono or stereo)"
                )));
            }
        };
        let resampler = (input_rate != OPUS_RATE)
            .then(|| new_resampler(input_rate, channels))
            .transpose()?;
        let mut encoder = opus::Encoder::new(OPUS_RATE, opus_channels, opus::Application::Audio)
            .map_err(|e| AudioError::Encode(e.to_string()))?;
        let bitrate = if channels == 2 { 96_000 } else { 48_000 };
        encoder
            .set_bitrate(opus::Bitrate::Bits(bitrate))
            .map_err(|e| AudioError::Encode(e.to_string()))?;
        Ok(Self {
            decoder,
            channels,
            input_rate,
            resampler,
            input: Vec::new(),
            pcm: Vec::new(),
            clock: None,
            expected_ms: None,
            encoder,
            scratch: Vec::new(),
            encoded: vec![0; MAX_OPUS_PACKET],
        })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    /// Decodes one raw AAC frame (or a run of G.711 samples) presented at `timestamp_ms` and
    /// appends the Opus frames it completes to `out`. A frame that does not decode is an error
    /// the caller may skip.
    pub fn push(
        &mut self,
        frame: &[u8],
        timestamp_ms: i64,
        out: &mut Vec<OpusFrame>,
    ) -> Result<(), AudioError> {
        if let Some(expected) = self.expected_ms
            && (timestamp_ms as f64 - expected).abs() > RESYNC_MS as f64
        {
            self.restart();
        }
        let frames = match &mut self.decoder {
            Decoder::Aac(decoder) => {
                let packet = PacketRef::new(0, Timestamp::new(timestamp_ms), Duration::ZERO, frame);
                let decoded = decoder
                    .decode_ref(&packet)
                    .map_err(|e| AudioError::Decode(e.to_string()))?;
                decoded.copy_to_vec_interleaved(&mut self.scratch);
                decoded.frames()
            }
            Decoder::G711(law) => {
                self.scratch.clear();
                law.decode(frame, &mut self.scratch);
                // A trailing partial sample frame of a stereo stream is dropped.
                self.scratch
                    .truncate(self.scratch.len() - self.scratch.len() % self.channels);
                self.scratch.len() / self.channels
            }
        };
        self.clock
            .get_or_insert(timestamp_ms * i64::from(OPUS_RATE) / 1000);
        let started_ms = self.expected_ms.unwrap_or(timestamp_ms as f64);
        self.expected_ms = Some(started_ms + frames as f64 * 1000.0 / f64::from(self.input_rate));
        match &mut self.resampler {
            None => self.pcm.extend_from_slice(&self.scratch),
            Some(resampler) => {
                self.input.extend_from_slice(&self.scratch);
                resample(resampler, self.channels, &mut self.input, &mut self.pcm)?;
            }
        }
        self.encode_ready(out)
    }

    /// Forgets buffered audio and the clock: the next frame starts a new run.
    fn restart(&mut self) {
        self.input.clear();
        self.pcm.clear();
        self.clock = None;
        self.expected_ms = None;
        if let Some(resampler) = &mut self.resampler {
            resampler.reset();
        }
    }

    fn encode_ready(&mut self, out: &mut Vec<OpusFrame>) -> Result<(), AudioError> {
        let frame_samples = OPUS_FRAME * self.channels;
        let mut consumed = 0;
        while self.pcm.len() - consumed >= frame_samples {
            let frame = &self.pcm[consumed..consumed + frame_samples];
            let len = self
                .encoder
                .encode_float(frame, &mut self.encoded)
                .map_err(|e| AudioError::Encode(e.to_string()))?;
            let clock = self.clock.get_or_insert(0);
            out.push(OpusFrame {
                payload: Bytes::copy_from_slice(&self.encoded[..len]),
                timestamp: *clock,
                level: audio_level(frame),
            });
            *clock += OPUS_FRAME as i64;
            consumed += frame_samples;
        }
        self.pcm.drain(..consumed);
        Ok(())
    }
}

fn new_resampler(input_rate: u32, channels: usize) -> Result<Async<f32>, AudioError> {
    // A 64-tap sinc keeps the passband flat to ~19 kHz at a small fraction of the default
    // filter's cost, with a delay of 32 input samples.
    let params = SincInterpolationParameters::new(64, WindowFunction::BlackmanHarris2)
        .oversampling_factor(128)
        .interpolation(SincInterpolationType::Linear);
    let chunk = (RESAMPLER_CHUNK_44K as u64 * u64::from(input_rate) / 44_100).max(64) as usize;
    Async::new_sinc(
        f64::from(OPUS_RATE) / f64::from(input_rate),
        1.0,
        &params,
        chunk,
        channels,
        FixedAsync::Input,
    )
    .map_err(|e| AudioError::Resample(e.to_string()))
}

/// Runs the resampler over every full chunk in `input`, appending to `output`.
fn resample(
    resampler: &mut Async<f32>,
    channels: usize,
    input: &mut Vec<f32>,
    output: &mut Vec<f32>,
) -> Result<(), AudioError> {
    let err = |e: &dyn std::fmt::Display| AudioError::Resample(e.to_string());
    let mut consumed = 0;
    loop {
        let needed = resampler.input_frames_next();
        if (input.len() - consumed) / channels < needed {
            break;
        }
        let start = output.len();
        let room = resampler.output_frames_max();
        output.resize(start + room * channels, 0.0);
        let chunk = &input[consumed..consumed + needed * channels];
        let source = InterleavedSlice::new(chunk, channels, needed).map_err(|e| err(&e))?;
        let mut sink =
            InterleavedSlice::new_mut(&mut output[start..], channels, room).map_err(|e| err(&e))?;
        let (read, written) = resampler
            .process_into_buffer(&source, &mut sink, None)
            .map_err(|e| err(&e))?;
        output.truncate(start + written * channels);
        consumed += read * channels;
    }
    input.drain(..consumed);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// 1 s of a 440 Hz sine, AAC-LC in ADTS (made with Debian's ffmpeg 5.1, see
    /// `testdata/README.md`).
    pub const SINE_44K_STEREO: &[u8] = include_bytes!("testdata/sine440_44100_stereo.aac");
    pub const SINE_48K_MONO: &[u8] = include_bytes!("testdata/sine440_48000_mono.aac");
    /// Two seconds at 7.35 kHz, the lowest AAC sampling-frequency index (12).
    pub const SINE_7350_MONO: &[u8] = include_bytes!("testdata/sine440_7350_mono.aac");

    /// The raw AAC frames of an ADTS stream and the AudioSpecificConfig they imply.
    pub fn adts_frames(mut data: &[u8]) -> (Vec<u8>, Vec<&[u8]>) {
        let mut frames = Vec::new();
        let mut config = Vec::new();
        while data.len() > 7 {
            assert_eq!(data[0], 0xff, "ADTS sync");
            let protection_absent = data[1] & 1 == 1;
            let profile = (data[2] >> 6) + 1;
            let rate_index = (data[2] >> 2) & 0x0f;
            let channels = ((data[2] & 1) << 2) | (data[3] >> 6);
            let len = (usize::from(data[3] & 3) << 11)
                | (usize::from(data[4]) << 3)
                | usize::from(data[5] >> 5);
            let header = if protection_absent { 7 } else { 9 };
            frames.push(&data[header..len]);
            config = vec![
                (profile << 3) | (rate_index >> 1),
                ((rate_index & 1) << 7) | (channels << 3),
            ];
            data = &data[len..];
        }
        (config, frames)
    }

    /// The strongest of a few candidate frequencies, by the Goertzel algorithm.
    fn dominant(samples: &[f32], rate: f64, candidates: &[f64]) -> f64 {
        let power = |freq: f64| {
            let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
            let (mut s1, mut s2) = (0.0, 0.0);
            for &x in samples {
                let s0 = f64::from(x) + coeff * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            s1 * s1 + s2 * s2 - coeff * s1 * s2
        };
        candidates
            .iter()
            .copied()
            .max_by(|a, b| power(*a).total_cmp(&power(*b)))
            .unwrap()
    }

    /// Transcodes `adts`, decodes the Opus back and checks the tone, the level and the timing.
    fn round_trip(adts: &[u8], rate: u32, channels: usize) {
        let (config, frames) = adts_frames(adts);
        let mut path = AudioToOpus::aac(&config).unwrap();
        assert_eq!((path.input_rate(), path.channels()), (rate, channels));
        let mut opus_frames = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let ms = (i as f64 * 1024.0 * 1000.0 / f64::from(rate)).round() as i64;
            path.push(frame, 1000 + ms, &mut opus_frames).unwrap();
        }
        let duration = frames.len() as f64 * 1024.0 / f64::from(rate);
        let expected = (duration * 50.0) as usize;
        assert!(
            opus_frames.len() + 2 >= expected && opus_frames.len() <= expected,
            "{} frames for {duration} s",
            opus_frames.len()
        );
        for (i, frame) in opus_frames.iter().enumerate() {
            assert_eq!(frame.timestamp, 48_000 + 960 * i as i64, "20 ms apart");
        }
        let channel_mode = if channels == 1 {
            opus::Channels::Mono
        } else {
            opus::Channels::Stereo
        };
        let mut decoder = opus::Decoder::new(48_000, channel_mode).unwrap();
        let mut pcm = Vec::new();
        let mut buf = vec![0f32; 960 * channels];
        for frame in &opus_frames {
            let n = decoder
                .decode_float(&frame.payload, &mut buf, false)
                .unwrap();
            assert_eq!(n, 960);
            pcm.extend(buf.iter().step_by(channels));
        }
        // Skip the codecs' start-up, then look at 0.5 s of the first channel.
        let steady = &pcm[9600..9600 + 24_000];
        let tone = dominant(
            steady,
            48_000.0,
            &[220.0, 400.0, 430.0, 440.0, 450.0, 480.0, 880.0],
        );
        assert_eq!(tone, 440.0);
        let crossings = steady
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        assert!(
            (435..=445).contains(&crossings),
            "{crossings} zero crossings in 0.5 s"
        );
        let rms = (steady.iter().map(|x| x * x).sum::<f32>() / steady.len() as f32).sqrt();
        // ffmpeg's sine source is at 1/8 full scale (rms ≈ 0.088).
        assert!((0.06..0.12).contains(&rms), "rms {rms}");
        // …which is -21 dBov, and -24 in each channel of the stereo file (ffmpeg's `-ac 2` upmix
        // puts a mono source at -3 dB): the level every steady frame carries for the speaker
        // detector.
        let expected_level: u8 = if channels == 1 { 21 } else { 24 };
        // One AAC frame (1024 samples) at each end is the codecs' start-up and the fade of the
        // stream's last frame: 21 ms at 48 kHz, 139 ms at 7.35 kHz.
        let aac_frame_in_opus_frames = 1024 * 50 / rate as usize;
        let steady_frames =
            1 + aac_frame_in_opus_frames..opus_frames.len() - aac_frame_in_opus_frames;
        for frame in &opus_frames[steady_frames] {
            assert!(
                frame.level.abs_diff(expected_level) <= 1,
                "level {} where {expected_level} was expected",
                frame.level
            );
        }
    }

    #[test]
    fn levels_follow_rfc_6464() {
        assert_eq!(audio_level(&[]), 127);
        assert_eq!(audio_level(&[0.0; 960]), 127, "digital silence");
        let square: Vec<f32> = (0..960)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert_eq!(
            audio_level(&square),
            0,
            "a full-scale square wave is the overload point"
        );
        let sine = |amplitude: f32| -> Vec<f32> {
            (0..960)
                .map(|i| {
                    amplitude * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 48_000.0).sin()
                })
                .collect()
        };
        assert_eq!(audio_level(&sine(1.0)), 3, "a full-scale sine is -3 dBov");
        assert_eq!(audio_level(&sine(0.5)), 9);
        assert_eq!(audio_level(&sine(1e-9)), 127, "below -127 dBov is silence");
        assert_eq!(audio_level(&[f32::NAN; 4]), 127, "garbage is not loud");
    }

    #[test]
    fn aac_44k_stereo_to_opus_keeps_440_hz() {
        round_trip(SINE_44K_STEREO, 44_100, 2);
    }

    #[test]
    fn aac_48k_mono_to_opus_keeps_440_hz() {
        round_trip(SINE_48K_MONO, 48_000, 1);
    }

    #[test]
    fn aac_7350_hz_mono_to_opus_keeps_440_hz() {
        let (config, _) = adts_frames(SINE_7350_MONO);
        assert_eq!(
            (u16::from(config[0] & 7) << 1) | u16::from(config[1] >> 7),
            12,
            "sampling-frequency index 12"
        );
        round_trip(SINE_7350_MONO, 7_350, 1);
    }

    #[test]
    fn every_aac_sampling_frequency_index_is_accepted() {
        // AudioSpecificConfig: object type 2 (AAC-LC), the index, channel configuration 1.
        let config = |index: u8| [(2 << 3) | (index >> 1), ((index & 1) << 7) | (1 << 3)];
        for (index, rate) in AAC_SAMPLE_RATES.iter().enumerate() {
            let path = AudioToOpus::aac(&config(index as u8));
            assert_eq!(
                path.map(|p| p.input_rate()),
                Ok(*rate),
                "sampling-frequency index {index}"
            );
        }
        // 13 and 14 are reserved.
        assert!(AudioToOpus::aac(&config(13)).is_err());
    }

    #[test]
    fn a_timestamp_jump_restarts_the_clock() {
        let (config, frames) = adts_frames(SINE_48K_MONO);
        let mut path = AudioToOpus::aac(&config).unwrap();
        let mut out = Vec::new();
        for (i, frame) in frames[..20].iter().enumerate() {
            path.push(frame, i as i64 * 1024 / 48, &mut out).unwrap();
        }
        out.clear();
        // The encoder skipped 5 s.
        for (i, frame) in frames[20..30].iter().enumerate() {
            path.push(frame, 5000 + i as i64 * 1024 / 48, &mut out)
                .unwrap();
        }
        assert_eq!(out.first().map(|f| f.timestamp), Some(5000 * 48));
    }

    #[test]
    fn bad_configs_and_frames_are_errors() {
        assert!(AudioToOpus::aac(&[]).is_err());
        assert!(AudioToOpus::aac(&[0xff]).is_err());
        // HE-AAC (object type 5) is not decoded.
        assert!(AudioToOpus::aac(&[0x2b, 0x92, 0x08, 0x00]).is_err());
        let (config, _) = adts_frames(SINE_48K_MONO);
        let mut path = AudioToOpus::aac(&config).unwrap();
        let mut out = Vec::new();
        let _ = path.push(&[0xff; 7], 0, &mut out);
        let _ = path.push(&[], 20, &mut out);
    }

    #[test]
    fn cpu_per_second_of_audio() {
        // Prints the cost of the whole path; the budget is 5 % of a core (50 ms per
        // second of audio). Debug builds are several times slower than release.
        let (config, frames) = adts_frames(SINE_44K_STEREO);
        let mut path = AudioToOpus::aac(&config).unwrap();
        let mut out = Vec::new();
        let rounds = 3;
        let start = std::time::Instant::now();
        let mut ms = 0;
        for _ in 0..rounds {
            for frame in &frames {
                path.push(frame, ms, &mut out).unwrap();
                ms += 1024 * 1000 / 44_100;
            }
        }
        let audio_seconds = (rounds * frames.len()) as f64 * 1024.0 / 44_100.0;
        let cpu = start.elapsed().as_secs_f64() / audio_seconds;
        println!(
            "AUDIO_PATH_CPU_PCT={:.2} (44.1 kHz stereo AAC -> 48 kHz Opus, {} build)",
            cpu * 100.0,
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        assert!(
            cpu < 0.5,
            "the audio path takes {:.0} % of a core",
            cpu * 100.0
        );
    }
}
