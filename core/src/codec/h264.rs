//! H.264 RTP payloads (RFC 6184, packetization modes 0 and 1) and keyframe detection.

/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// Single-time aggregation packet.
pub const STAP_A: u8 = 24;
/// Fragmentation unit (non-interleaved).
pub const FU_A: u8 = 28;

#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
/// A malformed H.264 RTP payload (RFC 6184).
pub enum H264Error {
    /// No bytes at all.
    #[error("empty h264 payload")]
    Empty,
    /// A fragmentation unit shorter than its headers.
    #[error("h264 fu-a header truncated")]
    TruncatedFragment,
    /// An aggregation packet cut inside a NAL unit size field at this offset.
    #[error("h264 stap-a nal unit size truncated at offset {0}")]
    TruncatedSize(usize),
    /// A NAL unit whose size runs past the end of the payload.
    #[error("h264 stap-a nal unit at offset {offset} of size {size} exceeds the payload")]
    NalUnitOverrun {
        /// Where the NAL unit starts in the payload.
        offset: usize,
        /// The size its header claims.
        size: usize,
    },
    /// A NAL unit of size zero, at this offset.
    #[error("h264 stap-a contains an empty nal unit at offset {0}")]
    EmptyNalUnit(usize),
}

/// The NAL unit type in the low 5 bits of a NAL header byte.
pub fn nal_type(header: u8) -> u8 {
    header & 0x1f
}

/// Whether a decoder can start at this RTP payload: it carries an IDR slice or an SPS as
/// a single NAL unit, inside a STAP-A, or as the first fragment of an FU-A.
/// Malformed aggregates are errors even when an earlier unit looked like a keyframe.
pub fn is_keyframe(payload: &[u8]) -> Result<bool, H264Error> {
    let &header = payload.first().ok_or(H264Error::Empty)?;
    match nal_type(header) {
        STAP_A => {
            let mut keyframe = false;
            for unit in stap_a_units(payload) {
                keyframe |= starts_keyframe(unit?);
            }
            Ok(keyframe)
        }
        FU_A => {
            let &fu_header = payload.get(1).ok_or(H264Error::TruncatedFragment)?;
            let start = fu_header & 0x80 != 0;
            Ok(start && is_keyframe_type(nal_type(fu_header)))
        }
        _ => Ok(starts_keyframe(header)),
    }
}

/// The NAL header bytes of the units of a STAP-A payload (whose first byte is the
/// STAP-A header), with every size checked against the payload.
pub fn stap_a_units(payload: &[u8]) -> impl Iterator<Item = Result<u8, H264Error>> + '_ {
    let mut offset = 1;
    std::iter::from_fn(move || {
        if offset >= payload.len() {
            return None;
        }
        let unit = stap_a_unit(payload, offset);
        // After an error, stop: the following sizes cannot be trusted.
        offset = match unit {
            Ok((_, next)) => next,
            Err(_) => payload.len(),
        };
        Some(unit.map(|(header, _)| header))
    })
}

fn stap_a_unit(payload: &[u8], offset: usize) -> Result<(u8, usize), H264Error> {
    let size_bytes = payload
        .get(offset..offset + 2)
        .ok_or(H264Error::TruncatedSize(offset))?;
    let size = usize::from(u16::from_be_bytes([size_bytes[0], size_bytes[1]]));
    let start = offset + 2;
    if size == 0 {
        return Err(H264Error::EmptyNalUnit(offset));
    }
    let unit = payload
        .get(start..start + size)
        .ok_or(H264Error::NalUnitOverrun { offset, size })?;
    Ok((unit[0], start + size))
}

fn starts_keyframe(nal_header: u8) -> bool {
    is_keyframe_type(nal_type(nal_header))
}

fn is_keyframe_type(nal_type: u8) -> bool {
    nal_type == NAL_IDR || nal_type == NAL_SPS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stap_a(units: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0x78];
        for unit in units {
            out.extend((unit.len() as u16).to_be_bytes());
            out.extend(*unit);
        }
        out
    }

    #[test]
    fn single_nal_units() {
        assert_eq!(is_keyframe(&[0x65, 0x88]), Ok(true), "IDR");
        assert_eq!(is_keyframe(&[0x67, 0x42]), Ok(true), "SPS");
        assert_eq!(is_keyframe(&[0x68, 0xce]), Ok(false), "PPS");
        assert_eq!(is_keyframe(&[0x41, 0x9a]), Ok(false), "non-IDR slice");
        assert_eq!(is_keyframe(&[0x06]), Ok(false), "SEI");
    }

    #[test]
    fn stap_a_with_sps_pps_idr() {
        let payload = stap_a(&[&[0x67, 0x42, 0x00], &[0x68, 0xce], &[0x65, 0x88, 0x84]]);
        assert_eq!(is_keyframe(&payload), Ok(true));
        let headers: Vec<_> = stap_a_units(&payload).collect();
        assert_eq!(headers, vec![Ok(0x67), Ok(0x68), Ok(0x65)]);
    }

    #[test]
    fn stap_a_without_keyframe_units() {
        let payload = stap_a(&[&[0x06, 0x05], &[0x41, 0x9a]]);
        assert_eq!(is_keyframe(&payload), Ok(false));
    }

    #[test]
    fn stap_a_bounds_are_checked() {
        let mut overrun = stap_a(&[&[0x67, 0x42]]);
        overrun[2] = 9;
        assert_eq!(
            is_keyframe(&overrun),
            Err(H264Error::NalUnitOverrun { offset: 1, size: 9 })
        );
        let mut truncated = stap_a(&[&[0x65, 0x88]]);
        truncated.push(0x00);
        assert_eq!(is_keyframe(&truncated), Err(H264Error::TruncatedSize(5)));
        assert_eq!(
            is_keyframe(&[0x78, 0x00, 0x00]),
            Err(H264Error::EmptyNalUnit(1))
        );
        assert_eq!(is_keyframe(&[0x78]), Ok(false));
    }

    #[test]
    fn fu_a_start_of_idr_or_sps() {
        assert_eq!(is_keyframe(&[0x7c, 0x85, 0xb8]), Ok(true), "start, IDR");
        assert_eq!(is_keyframe(&[0x7c, 0x87, 0x00]), Ok(true), "start, SPS");
        assert_eq!(is_keyframe(&[0x7c, 0x05, 0xb8]), Ok(false), "middle, IDR");
        assert_eq!(is_keyframe(&[0x7c, 0x45, 0xb8]), Ok(false), "end, IDR");
        assert_eq!(
            is_keyframe(&[0x5c, 0x81, 0x9a]),
            Ok(false),
            "start, non-IDR"
        );
        assert_eq!(is_keyframe(&[0x7c]), Err(H264Error::TruncatedFragment));
    }

    #[test]
    fn empty_payload_is_an_error() {
        assert_eq!(is_keyframe(&[]), Err(H264Error::Empty));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = is_keyframe(&bytes);
            for unit in stap_a_units(&bytes) {
                let _ = unit;
            }
        }

        #[test]
        fn never_panics_on_stap_a_shaped_bytes(rest in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = vec![0x78];
            bytes.extend(rest);
            let _ = is_keyframe(&bytes);
        }

        #[test]
        fn well_formed_stap_a_is_keyframe_iff_a_unit_is(
            units in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 1..6)
        ) {
            let slices: Vec<&[u8]> = units.iter().map(Vec::as_slice).collect();
            let expected = units.iter().any(|u| matches!(u[0] & 0x1f, NAL_IDR | NAL_SPS));
            prop_assert_eq!(is_keyframe(&stap_a(&slices)), Ok(expected));
        }
    }
}
