//! Entry points for the coverage-guided fuzz targets (`fuzz/`, see docs/fuzzing.md): each feeds
//! arbitrary bytes to a parser of network bytes this crate owns, through the calls its live
//! path makes. Compiled only with the `fuzzing` feature; not part of the API.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ingest::audio::AudioToOpus;
use crate::ingest::avc;
use crate::ingest::flv;
use crate::ingest::g711::Law;
use crate::ingest::media::{MediaPipeline, Origin};
use crate::ingest::rtmp::amf::{MAX_AMF_DEPTH, nests_deeper_than};
use crate::ingest::rtmp::protocol::{ProtocolEvent, RtmpProtocol};
use crate::ingest::rtmp::rml::RmlProtocol;
use crate::ingest::rtsp::convert::{self, AudioSetup, Frames, Ticks, VideoInput};
use crate::shard::{ssrc_gate, stun, tcp};
use crate::transport::feedback;

thread_local! {
    /// How many calls of the RTMP guard's `contain` the current thread is inside.
    static CONTAINING: Cell<u32> = const { Cell::new(0) };
}

/// Marks the current thread as inside the RTMP guard's `contain` while it lives.
pub(crate) struct Containing;

impl Containing {
    pub(crate) fn enter() -> Self {
        CONTAINING.with(|depth| depth.set(depth.get() + 1));
        Containing
    }
}

impl Drop for Containing {
    fn drop(&mut self) {
        CONTAINING.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// Whether a panic raised now is one the RTMP guard contains: raised inside `contain` (a call
/// into rml_rtmp on the peer's bytes), which ends the connection with `DecoderPanicked`. A fuzz
/// target's panic hook lets those through and aborts on every other.
pub fn panic_is_contained() -> bool {
    CONTAINING.with(Cell::get) > 0
}

/// The largest RTMP message the fuzzed session accepts once publishing (the server's default
/// is larger; a smaller bound keeps each run fast without changing which paths exist).
const FUZZ_MAX_MESSAGE: usize = 1 << 20;

/// A client's RTMP handshake (C0, C1, C2) in the plain format: the session skips it when
/// `data` starts with a byte whose low bit is set, so the fuzzer starts at the chunk stream.
fn plain_handshake() -> Vec<u8> {
    let mut bytes = vec![3u8];
    bytes.resize(1 + 2 * 1536, 0);
    bytes
}

/// One RTMP connection: `data[0]` picks whether the handshake is done for the input, the rest
/// arrives in reads of the sizes `data[1]` seeds. Every media message goes through the ingest
/// pipeline as on a live connection (FLV, AVC, AAC to Opus).
pub fn rtmp_session(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = if mode & 1 == 1 {
        plain_handshake()
    } else {
        Vec::new()
    };
    input.extend_from_slice(rest);
    let read_size = 1 + usize::from(mode >> 1) * 64;

    let mut protocol = RmlProtocol::new(FUZZ_MAX_MESSAGE);
    let mut media = MediaPipeline::new(Arc::default(), Origin::Rtmp);
    let mut publishing = false;
    let mut events = Vec::new();
    let mut out = Vec::new();
    let now = Instant::now();
    for read in input.chunks(read_size) {
        if protocol
            .handle_input(read, publishing, &mut events)
            .is_err()
        {
            return;
        }
        for event in std::mem::take(&mut events) {
            let result = match event {
                ProtocolEvent::PublishRequested { request, .. } => {
                    publishing = true;
                    protocol.accept_publish(request, &mut events).map(drop)
                }
                ProtocolEvent::PlayRequested { request } => protocol
                    .reject_publish(request, "NetStream.Play.Failed", "refused", &mut events)
                    .map(drop),
                ProtocolEvent::Video { timestamp_ms, data } => {
                    let _ = media.push_video(now, timestamp_ms, &data, &mut out);
                    Ok(())
                }
                ProtocolEvent::Audio { timestamp_ms, data } => {
                    let _ = media.push_audio(now, timestamp_ms, &data, &mut out);
                    Ok(())
                }
                ProtocolEvent::Send(_) | ProtocolEvent::PublishFinished => Ok(()),
            };
            if result.is_err() {
                return;
            }
        }
        out.clear();
    }
}

/// The AMF depth check the RTMP guard runs on every command and data message.
pub fn amf_depth(data: &[u8]) {
    let _ = nests_deeper_than(data, MAX_AMF_DEPTH);
}

/// The media configurations a publisher sends: `data[0]` picks an FLV video tag, an FLV audio
/// tag, an AVCDecoderConfigurationRecord (then an access unit under it), or an AAC
/// AudioSpecificConfig (then one frame under it).
pub fn media_config(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            let _ = flv::parse_video(rest);
        }
        1 => {
            let _ = flv::parse_audio(rest);
        }
        2 => {
            let (record, unit) = split_at_byte(rest);
            if let Ok(config) = avc::parse_config(record) {
                let _ = config.has_b_frames();
                let mut annex_b = Vec::new();
                let _ = avc::to_annex_b(unit, &config, &mut annex_b);
            }
        }
        _ => {
            let (config, frame) = split_at_byte(rest);
            if let Ok(mut decoder) = AudioToOpus::aac(config) {
                let mut out = Vec::new();
                let _ = decoder.push(frame, 0, &mut out);
            }
        }
    }
}

/// Splits at the length its first byte gives (the rest, when shorter).
fn split_at_byte(data: &[u8]) -> (&[u8], &[u8]) {
    match data.split_first() {
        Some((&len, rest)) => rest.split_at(usize::from(len).min(rest.len())),
        None => (&[], &[]),
    }
}

/// What the shard reads off a datagram before any peer connection sees it (STUN, the SSRC it
/// names), and the RFC 4571 frames of an ICE-TCP connection.
pub fn shard_datagram(data: &[u8]) {
    let _ = stun::local_ufrag(data);
    let _ = stun::is_binding_success(data);
    let _ = ssrc_gate::SsrcGate::default().admit(data, || 1);
    let mut reader = data;
    let mut frames = 0usize;
    while let Ok(Some(frame)) = futures::executor::block_on(tcp::read_frame(&mut reader)) {
        assert!(!frame.is_empty() && frame.len() <= tcp::MAX_FRAME);
        frames += 1;
        assert!(
            frames <= data.len() / 3,
            "invariant: each frame takes 3 bytes or more"
        );
    }
}

/// A camera's presentation as the RTSP session hands it over after retina: `data[0]` picks the
/// stream selection (SDP media and encoding names), video (parameters, then access units) or
/// audio (a setup, then frames).
pub fn rtsp_frames(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut media = MediaPipeline::new(Arc::default(), Origin::Rtsp);
    let mut frames = Frames::default();
    let mut out = Vec::new();
    let start = Instant::now();
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => {
            let streams = text.lines().filter_map(|line| line.split_once('/'));
            let _ = convert::select(streams);
        }
        1 => {
            let (parameters, mut rest) = split_at_byte(rest);
            let mut at = 0i64;
            let mut first = true;
            while !rest.is_empty() {
                let (unit, next) = split_at_u16(rest);
                rest = next;
                at += i64::from(unit.first().copied().unwrap_or(0)) * 300 - 3_000;
                let input = VideoInput {
                    at: Ticks {
                        elapsed: at,
                        clock_rate: 90_000,
                    },
                    new_parameters: first.then_some(parameters),
                    data: unit,
                };
                first = false;
                let now = start + Duration::from_millis(at.unsigned_abs() / 90);
                let _ = frames.video(&mut media, now, input, &mut out);
            }
        }
        _ => {
            let (setup, mut rest) = split_at_byte(rest);
            let setup = match setup.first() {
                None => AudioSetup::Aac { config: setup },
                Some(&kind) if kind < 0x80 => AudioSetup::Aac {
                    config: setup.get(1..).unwrap_or_default(),
                },
                Some(&kind) => AudioSetup::G711 {
                    law: if kind & 1 == 0 { Law::Mu } else { Law::A },
                    rate: u32::from(setup.get(1).copied().unwrap_or(0)) * 1000,
                    channels: u16::from(kind >> 1 & 3),
                },
            };
            let mut at = 0i64;
            while !rest.is_empty() {
                let (frame, next) = split_at_u16(rest);
                rest = next;
                at += 20;
                let ticks = Ticks {
                    elapsed: at * 8,
                    clock_rate: 8_000,
                };
                let now = start + Duration::from_millis(at.unsigned_abs());
                let _ = frames.audio(&mut media, now, setup, ticks, frame, &mut out);
            }
        }
    }
}

/// Splits at the big-endian 16-bit length in front (the rest, when shorter).
fn split_at_u16(data: &[u8]) -> (&[u8], &[u8]) {
    match data {
        [a, b, rest @ ..] => {
            rest.split_at(usize::from(u16::from_be_bytes([*a, *b])).min(rest.len()))
        }
        _ => (&[], &[]),
    }
}

/// A compound RTCP packet as a subscriber sends it: what the feedback helpers read from it
/// (NACKed packets, REMB).
pub fn rtcp_feedback(data: &[u8]) {
    let mut buf = data;
    let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut buf) else {
        return;
    };
    let _ = feedback::remb_bits_per_second(&packets);
    for packet in &packets {
        if let Some(nack) = packet
            .as_any()
            .downcast_ref::<rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack>()
        {
            let _ = feedback::nacked_packets(nack);
        }
    }
}
