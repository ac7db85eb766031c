//! Unit tests of `wire.rs`.

use super::*;
use proptest::prelude::*;
use rtc::shared::marshal::Unmarshal;

/// An RTP packet (PT 111, seq 1, ts 960, SSRC 0x01020304) with a header extension block
/// of `profile` holding `extension` (already padded to 32 bits) and a 3-byte payload.
fn wire(profile: [u8; 2], extension: &[u8]) -> rtp::Packet {
    let mut bytes = vec![0x90, 111, 0, 1, 0, 0, 0x03, 0xc0, 1, 2, 3, 4];
    bytes.extend_from_slice(&profile);
    let words = u16::try_from(extension.len() / 4).expect("short test extension");
    bytes.extend_from_slice(&words.to_be_bytes());
    bytes.extend_from_slice(extension);
    bytes.extend_from_slice(&[0xfc, 0xff, 0xfe]);
    rtp::Packet::unmarshal(&mut bytes.as_slice()).expect("test packet parses")
}

#[test]
fn reads_the_level_of_the_one_byte_form() {
    // id 1, length 1 (L = 0): V = 1, level 33; then padding.
    let packet = wire([0xbe, 0xde], &[0x10, 0x80 | 33, 0, 0]);
    assert_eq!(audio_level(&packet.header, 1), Some(33));
    assert_eq!(audio_level(&packet.header, 2), None, "another id");
    assert_eq!(from_wire(packet.clone(), Some(1)).audio_level, Some(33));
    assert_eq!(from_wire(packet, None).audio_level, None, "not negotiated");
}

#[test]
fn reads_the_level_of_the_two_byte_form() {
    // id 3, length 2: V = 0, level 127 (silence), then the zero pad byte.
    let packet = wire([0x10, 0x00], &[3, 2, 127, 0]);
    assert_eq!(audio_level(&packet.header, 3), Some(127));
}

#[test]
fn an_empty_extension_or_none_at_all_is_no_level() {
    // Two-byte form, id 1 with length 0.
    let packet = wire([0x10, 0x00], &[1, 0, 0, 0]);
    assert_eq!(audio_level(&packet.header, 1), None);
    let plain = [0x80, 111, 0, 1, 0, 0, 0x03, 0xc0, 1, 2, 3, 4, 0xfc];
    let packet = rtp::Packet::unmarshal(&mut plain.as_slice()).expect("parses");
    assert_eq!(audio_level(&packet.header, 1), None);
}

proptest! {
    /// Whatever a publisher sends that parses as RTP, reading its level never panics and
    /// stays in the RFC 6464 range.
    #[test]
    fn arbitrary_packets_never_panic(
        extension in proptest::collection::vec(any::<u8>(), 0..24),
        two_byte in any::<bool>(),
        id in 0u8..16,
    ) {
        let mut bytes = vec![0x90, 111, 0, 1, 0, 0, 0x03, 0xc0, 1, 2, 3, 4];
        bytes.extend_from_slice(if two_byte { &[0x10, 0x00] } else { &[0xbe, 0xde] });
        let words = (extension.len() / 4) as u16;
        bytes.extend_from_slice(&words.to_be_bytes());
        bytes.extend_from_slice(&extension);
        if let Ok(packet) = rtp::Packet::unmarshal(&mut bytes.as_slice()) {
            let level = audio_level(&packet.header, id);
            prop_assert!(level.is_none_or(|l| l <= 127));
        }
    }
}
