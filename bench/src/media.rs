//! Synthetic media with send timestamps: VP8-shaped video frames (keyframe flags, realistic
//! sizes) and Opus-sized audio, each packet stamped so a receiver on the same host can compute
//! `receive − send`.
//!
//! Two stamps, because SFUs differ in what they keep:
//! - a **packet trailer** (last 16 bytes of every payload: magic, packet index, send time) that an
//!   RTP-level forwarder such as Sluice delivers unchanged, so every packet is measured;
//! - a **frame stamp** (16 bytes at the start of each frame's data, right after the VP8 frame
//!   header) that survives a frame-level forwarder which depacketizes and repacketizes video
//!   (str0m's `chat` example does), read from the first packet of each frame.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// "SLBC" — marks a stamp.
const MAGIC: u32 = 0x534c_4243;
pub const STAMP_LEN: usize = 16;
/// Largest RTP payload the publisher emits (a browser's VP8 packetizer uses ≈ 1100–1200).
pub const MAX_PAYLOAD: usize = 1100;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide epoch; publishers and subscribers share it.
pub fn now_ns() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn stamp(index: u32, sent_ns: u64) -> [u8; STAMP_LEN] {
    let mut out = [0u8; STAMP_LEN];
    out[..4].copy_from_slice(&MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&index.to_be_bytes());
    out[8..].copy_from_slice(&sent_ns.to_be_bytes());
    out
}

fn read_stamp(bytes: &[u8]) -> Option<(u32, u64)> {
    let bytes: &[u8; STAMP_LEN] = bytes.get(..STAMP_LEN)?.try_into().ok()?;
    let magic = u32::from_be_bytes(bytes[..4].try_into().ok()?);
    (magic == MAGIC).then(|| {
        (
            u32::from_be_bytes(bytes[4..8].try_into().unwrap_or_default()),
            u64::from_be_bytes(bytes[8..].try_into().unwrap_or_default()),
        )
    })
}

/// The packet trailer: `(packet index, send time ns)`.
pub fn read_trailer(payload: &[u8]) -> Option<(u32, u64)> {
    read_stamp(payload.get(payload.len().checked_sub(STAMP_LEN)?..)?)
}

/// Simulcast layers number their packets in separate index spaces (the top two bits), so a
/// receiver can tell the layers' ranges apart.
pub fn layer_index_base(layer: usize) -> u32 {
    u32::try_from(layer & 3).unwrap_or(0) << 30
}

/// Video shape: average bitrate at `fps`, a keyframe `keyframe_factor`× a delta frame every
/// `keyframe_interval`.
#[derive(Debug, Clone, Copy)]
pub struct VideoShape {
    pub bitrate_bps: u64,
    pub fps: u32,
    pub keyframe_interval: Duration,
    pub keyframe_factor: u32,
}

impl VideoShape {
    pub fn frames_per_keyframe(&self) -> u64 {
        (self.keyframe_interval.as_secs_f64() * f64::from(self.fps))
            .round()
            .max(1.0) as u64
    }

    /// Bytes of one frame, so that the average over a keyframe interval is `bitrate_bps`.
    pub fn frame_bytes(&self, frame: u64) -> usize {
        let n = self.frames_per_keyframe();
        let units = (n - 1) + u64::from(self.keyframe_factor);
        let interval_bytes = self.bitrate_bps as f64 / 8.0 / f64::from(self.fps) * n as f64;
        let unit = interval_bytes / units as f64;
        let factor = if self.is_keyframe(frame) {
            f64::from(self.keyframe_factor)
        } else {
            1.0
        };
        (unit * factor) as usize
    }

    pub fn is_keyframe(&self, frame: u64) -> bool {
        frame.is_multiple_of(self.frames_per_keyframe())
    }

    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.fps))
    }
}

/// Builds the RTP payloads of one VP8 frame. `first_packet_index` is the stream-wide index of
/// the frame's first packet; returns the payloads (the caller sets marker on the last).
pub fn video_frame(
    shape: &VideoShape,
    frame: u64,
    first_packet_index: u32,
    sent_ns: u64,
) -> Vec<Vec<u8>> {
    let keyframe = shape.is_keyframe(frame);
    let total = shape.frame_bytes(frame).max(STAMP_LEN * 3);
    let per_packet = MAX_PAYLOAD - 1 - STAMP_LEN;
    let count = total.div_ceil(per_packet).max(1);
    let mut remaining = total;
    let frame_index = u32::try_from(frame).unwrap_or(u32::MAX);
    (0..count)
        .map(|i| {
            let chunk = remaining.min(per_packet);
            remaining -= chunk;
            let mut payload = Vec::with_capacity(chunk + 1 + STAMP_LEN + 10);
            if i == 0 {
                payload.push(0x10); // S=1, PID=0
                // Frame tag: P (bit 0) = 0 on a keyframe, which also carries start code and size.
                payload.extend_from_slice(&[if keyframe { 0x00 } else { 0x01 }, 0x00, 0x00]);
                if keyframe {
                    payload.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
                }
                payload.extend_from_slice(&stamp(frame_index, sent_ns));
            } else {
                payload.push(0x00);
            }
            let index = first_packet_index.wrapping_add(i as u32);
            let filler = (chunk + 1 + STAMP_LEN).saturating_sub(payload.len() + STAMP_LEN);
            payload.extend((0..filler).map(|b| (b as u32 ^ index) as u8));
            payload.extend_from_slice(&stamp(index, sent_ns));
            payload
        })
        .collect()
}

/// One Opus-sized audio payload (TOC byte, ≈ 64 kb/s at 20 ms), stamped.
pub fn audio_packet(index: u32, sent_ns: u64) -> Vec<u8> {
    let mut payload = vec![0xfc];
    payload.extend((0..143u32).map(|i| (i ^ index) as u8));
    payload.extend_from_slice(&stamp(index, sent_ns));
    payload
}

/// Where the VP8 frame data starts in a payload (after the RFC 7741 descriptor), and whether
/// this packet starts a frame (S=1, PID=0).
pub fn vp8_data(payload: &[u8]) -> Option<(bool, &[u8])> {
    let first = *payload.first()?;
    let mut at = 1;
    if first & 0x80 != 0 {
        let x = *payload.get(at)?;
        at += 1;
        if x & 0x80 != 0 {
            let m = *payload.get(at)? & 0x80 != 0;
            at += if m { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    let starts_frame = first & 0x10 != 0 && first & 0x07 == 0;
    Some((starts_frame, payload.get(at..)?))
}

/// The frame stamp `(frame index, send time ns)` of a packet that starts a frame.
pub fn read_frame_stamp(payload: &[u8]) -> Option<(u32, u64)> {
    let (starts, data) = vp8_data(payload)?;
    if !starts {
        return None;
    }
    let keyframe = data.first()? & 0x01 == 0;
    read_stamp(data.get(if keyframe { 10 } else { 3 }..)?)
}

/// Whether a payload starts a VP8 keyframe.
#[cfg(test)]
fn is_vp8_keyframe_start(payload: &[u8]) -> bool {
    vp8_data(payload)
        .is_some_and(|(starts, data)| starts && data.first().is_some_and(|t| t & 1 == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: VideoShape = VideoShape {
        bitrate_bps: 1_500_000,
        fps: 30,
        keyframe_interval: Duration::from_millis(2500),
        keyframe_factor: 5,
    };

    #[test]
    fn frames_average_to_the_bitrate_and_carry_stamps() {
        let n = SHAPE.frames_per_keyframe();
        let bytes: usize = (0..n).map(|f| SHAPE.frame_bytes(f)).sum();
        let bps = bytes as f64 * 8.0 / SHAPE.keyframe_interval.as_secs_f64();
        assert!((bps - 1.5e6).abs() < 1e4, "{bps}");
        let mut index = 7;
        for frame in [0, 1] {
            let packets = video_frame(&SHAPE, frame, index, 42);
            assert!(packets.iter().all(|p| p.len() <= MAX_PAYLOAD));
            assert_eq!(is_vp8_keyframe_start(&packets[0]), frame == 0);
            assert_eq!(read_frame_stamp(&packets[0]), Some((frame as u32, 42)));
            assert_eq!(read_frame_stamp(&packets[1]), None);
            for (i, p) in packets.iter().enumerate() {
                assert_eq!(read_trailer(p), Some((index + i as u32, 42)));
            }
            index += packets.len() as u32;
        }
        assert_eq!(read_trailer(&audio_packet(3, 9)), Some((3, 9)));
    }
}
