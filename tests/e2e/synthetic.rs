//! The synthetic media the relay tests publish, and the check that a subscriber received it:
//! every packet from the first forwarded one on, in order, byte for byte, with the header
//! rewritten for the subscriber (contiguous sequence numbers).

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use rtc::rtp;

/// Every this many video packets is a keyframe.
pub(crate) const KEYFRAME_EVERY: u32 = 30;

/// A synthetic VP8 packet: a real payload descriptor and frame tag (keyframe or not), then the
/// packet index and a filler that differs per packet, so any corruption or mix-up shows.
pub(crate) fn video_payload(index: u32) -> Bytes {
    let keyframe = index.is_multiple_of(KEYFRAME_EVERY);
    let mut payload = vec![0x10]; // S=1, PID=0
    // Frame tag: P bit (bit 0) is 0 for a keyframe; keyframes carry the start code and size.
    payload.extend_from_slice(&[if keyframe { 0x00 } else { 0x01 }, 0x00, 0x00]);
    if keyframe {
        payload.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    }
    payload.extend_from_slice(&index.to_be_bytes());
    payload.extend((0..900u32).map(|i| (i.wrapping_mul(31) ^ index) as u8));
    Bytes::from(payload)
}

/// A synthetic Opus packet: a TOC byte, the packet index, a filler that differs per packet.
pub(crate) fn audio_payload(index: u32) -> Bytes {
    let mut payload = vec![0xfc];
    payload.extend_from_slice(&index.to_be_bytes());
    payload.extend((0..100u32).map(|i| (i ^ index.wrapping_mul(7)) as u8));
    Bytes::from(payload)
}

/// Video packet `index` of a synthetic stream on SSRC 0x1111 (PT 96), three packets a frame,
/// numbered from `first_sequence` and timed from `first_timestamp`.
pub(crate) fn video_packet(index: u32, first_sequence: u16, first_timestamp: u32) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: 96,
            sequence_number: first_sequence.wrapping_add(index as u16),
            timestamp: first_timestamp + (index / 3) * 3000,
            ssrc: 0x1111,
            marker: index % 3 == 2,
            ..Default::default()
        },
        payload: video_payload(index),
    }
}

/// Audio packet `index` of a synthetic stream on SSRC 0x2222 (PT 111), 20 ms a packet.
pub(crate) fn audio_packet(index: u32) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: 111,
            sequence_number: index as u16,
            timestamp: index * 960,
            ssrc: 0x2222,
            ..Default::default()
        },
        payload: audio_payload(index),
    }
}

/// The big-endian index at `offset`.
pub(crate) fn index_of(payload: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        payload.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

/// The index of a [`video_payload`].
pub(crate) fn video_index(payload: &[u8]) -> Option<u32> {
    let keyframe = payload.get(1)? & 0x01 == 0;
    index_of(payload, if keyframe { 11 } else { 4 })
}

/// The index of a [`video_payload`] or an [`audio_payload`].
pub(crate) fn payload_index(video: bool, payload: &[u8]) -> Option<u32> {
    if video {
        video_index(payload)
    } else {
        index_of(payload, 1)
    }
}

/// Checks what `who` received of a stream of `total` packets: video starts on a keyframe, and
/// from the first packet on every packet arrives, in order, byte for byte, with contiguous
/// sequence numbers. Returns the index of the first packet received.
pub(crate) fn check_received(
    who: &str,
    video: bool,
    packets: &[rtp::Packet],
    total: u32,
) -> Result<u32> {
    let kind = if video { "video" } else { "audio" };
    ensure!(!packets.is_empty(), "{who}: no {kind} packets");
    let indices: Vec<u32> = packets
        .iter()
        .map(|p| payload_index(video, &p.payload).context("payload too short"))
        .collect::<Result<_>>()?;
    let first = indices[0];
    if video {
        ensure!(
            first.is_multiple_of(KEYFRAME_EVERY),
            "{who}: video started on a delta frame ({first})"
        );
    }
    let expected: Vec<u32> = (first..total).collect();
    ensure!(
        indices == expected,
        "{who}: {kind} indices {:?}…, expected {first}..{total}",
        &indices[..indices.len().min(10)]
    );
    for (packet, index) in packets.iter().zip(&indices) {
        let sent = if video {
            video_payload(*index)
        } else {
            audio_payload(*index)
        };
        ensure!(
            packet.payload == sent,
            "{who}: {kind} packet {index} differs"
        );
    }
    // The header was rewritten for this subscriber: contiguous sequence numbers.
    for pair in packets.windows(2) {
        ensure!(
            pair[1].header.sequence_number == pair[0].header.sequence_number.wrapping_add(1),
            "{who}: {kind} sequence numbers not contiguous"
        );
    }
    Ok(first)
}
