//! H.264 as FLV carries it: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.2.4.1) and
//! access units of length-prefixed NAL units (AVCC), turned into the Annex B byte stream the RTP
//! payloader takes.
//!
//! The record's layout is walked here with every length checked (h264-reader's record iterators
//! index without checks on some malformed inputs); the SPS itself is parsed with h264-reader.

use bytes::Bytes;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::nal::{Nal, RefNal};

use crate::codec::h264::{NAL_IDR, NAL_PPS, NAL_SPS, nal_type};

/// NAL unit types that carry nothing a WebRTC receiver uses: access unit delimiter, end of
/// sequence, end of stream, filler. Dropped to save bytes.
const DROPPED_NAL_TYPES: [u8; 4] = [9, 10, 11, 12];
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// What the AVC sequence header says about the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// Parameter sets without length prefix or start code.
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    /// Bytes of each NAL unit's length prefix in the access units (1, 2 or 4).
    pub nal_length_size: usize,
    /// The SDP `profile-level-id`: the profile as browsers name it, and the stream's level.
    pub profile_level_id: String,
    pub width: u32,
    pub height: u32,
    /// Frames the decoder may have to hold back for reordering (B-frames), from the SPS's
    /// bitstream restrictions; `None` when the SPS does not say.
    pub max_num_reorder_frames: Option<u32>,
}

impl AvcConfig {
    /// Whether the SPS says pictures are reordered (B-frames): a baseline stream cannot be, and
    /// otherwise the SPS's bitstream restrictions must say so (an SPS silent about it is not
    /// flagged; its B-frames show as composition offsets instead).
    pub fn has_b_frames(&self) -> bool {
        !self.profile_level_id.starts_with("42")
            && self.max_num_reorder_frames.is_some_and(|n| n > 0)
    }
}

#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvcError {
    #[error("avc sequence header truncated at byte {0}")]
    Truncated(usize),
    #[error("avc sequence header has configuration version {0}, expected 1")]
    Version(u8),
    #[error("avc sequence header has no {0}")]
    Missing(&'static str),
    #[error("avc sequence header has an empty {0}")]
    EmptyParameterSet(&'static str),
    #[error("avc sequence header has a NAL unit of type {found} where a {expected} belongs")]
    WrongParameterSet { expected: &'static str, found: u8 },
    #[error("sps does not parse: {0}")]
    Sps(String),
    #[error("H.264 profile_idc {0} is not playable in browsers (use baseline, main or high)")]
    UnsupportedProfile(u8),
    #[error("NAL length size {0} is invalid")]
    NalLengthSize(usize),
    #[error(
        "access unit truncated: NAL unit of {declared} bytes at offset {offset}, {available} left"
    )]
    NalOverrun {
        offset: usize,
        declared: usize,
        available: usize,
    },
    #[error("access unit has an empty NAL unit at offset {0}")]
    EmptyNal(usize),
}

/// Parses an AVCDecoderConfigurationRecord.
pub fn parse_config(record: &[u8]) -> Result<AvcConfig, AvcError> {
    let mut reader = Reader {
        data: record,
        pos: 0,
    };
    let header = reader.take(5)?;
    if header[0] != 1 {
        return Err(AvcError::Version(header[0]));
    }
    let nal_length_size = usize::from(header[4] & 0x03) + 1;
    if nal_length_size == 3 {
        return Err(AvcError::NalLengthSize(3));
    }
    let sps_count = reader.take(1)?[0] & 0x1f;
    let sps = reader.parameter_sets(sps_count, NAL_SPS, "sps")?;
    let pps_count = reader.take(1)?[0];
    let pps = reader.parameter_sets(pps_count, NAL_PPS, "pps")?;
    // High-profile records may carry chroma/bit-depth fields after this; nothing needed there.
    let first_sps = sps.first().ok_or(AvcError::Missing("sps"))?;
    if pps.is_empty() {
        return Err(AvcError::Missing("pps"));
    }
    let parsed = SeqParameterSet::from_bits(RefNal::new(first_sps, &[], true).rbsp_bits())
        .map_err(|e| AvcError::Sps(format!("{e:?}")))?;
    let (width, height) = parsed
        .pixel_dimensions()
        .map_err(|e| AvcError::Sps(format!("{e:?}")))?;
    Ok(AvcConfig {
        profile_level_id: profile_level_id(&parsed)?,
        max_num_reorder_frames: parsed
            .vui_parameters
            .as_ref()
            .and_then(|vui| vui.bitstream_restrictions.as_ref())
            .map(|r| r.max_num_reorder_frames),
        sps,
        pps,
        nal_length_size,
        width,
        height,
    })
}

/// The profile to announce in SDP, as browsers name it (negotiation matches by profile),
/// followed by the stream's own level.
///
/// High is announced as High 4:4:4 Predictive (`f400`): Chromium offers to receive
/// `42001f`, `42e01f`, `4d001f` and `f4001f` but not `64001f`, and a High 4:4:4 Predictive
/// decoder must decode High bitstreams (H.264 A.2.7), so the claim is true and Chromium accepts
/// it. See docs/rtmp.md.
fn profile_level_id(sps: &SeqParameterSet) -> Result<String, AvcError> {
    let profile_idc = u8::from(sps.profile_idc);
    let constraints = u8::from(sps.constraint_flags);
    let profile = match profile_idc {
        // constraint_set1 makes baseline "constrained baseline", what browsers encode.
        66 if constraints & 0x40 != 0 => "42e0",
        66 => "4200",
        77 => "4d00",
        100 => "f400",
        other => return Err(AvcError::UnsupportedProfile(other)),
    };
    Ok(format!("{profile}{:02x}", sps.level_idc))
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AvcError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(AvcError::Truncated(self.pos))?;
        let bytes = self
            .data
            .get(self.pos..end)
            .ok_or(AvcError::Truncated(self.pos))?;
        self.pos = end;
        Ok(bytes)
    }

    fn parameter_sets(
        &mut self,
        count: u8,
        expected_type: u8,
        name: &'static str,
    ) -> Result<Vec<Bytes>, AvcError> {
        (0..count)
            .map(|_| {
                let len = self.take(2)?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                let unit = self.take(len)?;
                let &header = unit.first().ok_or(AvcError::EmptyParameterSet(name))?;
                if nal_type(header) != expected_type {
                    return Err(AvcError::WrongParameterSet {
                        expected: name,
                        found: nal_type(header),
                    });
                }
                Ok(Bytes::copy_from_slice(unit))
            })
            .collect()
    }
}

/// The NAL units of one AVCC access unit, every length checked.
pub fn nal_units(
    data: &[u8],
    length_size: usize,
) -> impl Iterator<Item = Result<&[u8], AvcError>> + '_ {
    let mut offset = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || offset >= data.len() {
            return None;
        }
        let unit = next_nal(data, offset, length_size);
        match &unit {
            Ok((_, next)) => offset = *next,
            Err(_) => failed = true,
        }
        Some(unit.map(|(nal, _)| nal))
    })
}

fn next_nal(data: &[u8], offset: usize, length_size: usize) -> Result<(&[u8], usize), AvcError> {
    if !matches!(length_size, 1 | 2 | 4) {
        return Err(AvcError::NalLengthSize(length_size));
    }
    let available = data.len() - offset;
    let prefix = data
        .get(offset..offset + length_size)
        .ok_or(AvcError::NalOverrun {
            offset,
            declared: length_size,
            available,
        })?;
    let declared = prefix
        .iter()
        .fold(0usize, |len, &b| (len << 8) | usize::from(b));
    if declared == 0 {
        return Err(AvcError::EmptyNal(offset));
    }
    let start = offset + length_size;
    let end = start
        .checked_add(declared)
        .filter(|&end| end <= data.len())
        .ok_or(AvcError::NalOverrun {
            offset,
            declared,
            available: data.len() - start,
        })?;
    Ok((&data[start..end], end))
}

/// What [`to_annex_b`] found in an access unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessUnitInfo {
    /// It holds an IDR slice: a decoder can start here.
    pub idr: bool,
    /// SPS/PPS from the sequence header were put in front of the IDR.
    pub parameter_sets_added: bool,
}

/// Appends the access unit as Annex B (start code before each NAL unit) to `out`. When it holds
/// an IDR without its own SPS and PPS, those of `config` go first, so every keyframe is
/// decodable on its own (a subscriber may start at any of them).
pub fn to_annex_b(
    data: &[u8],
    config: &AvcConfig,
    out: &mut Vec<u8>,
) -> Result<AccessUnitInfo, AvcError> {
    let mut info = AccessUnitInfo::default();
    let (mut has_sps, mut has_pps) = (false, false);
    for unit in nal_units(data, config.nal_length_size) {
        match nal_type(unit?[0]) {
            NAL_IDR => info.idr = true,
            NAL_SPS => has_sps = true,
            NAL_PPS => has_pps = true,
            _ => {}
        }
    }
    if info.idr && !(has_sps && has_pps) {
        for set in config.sps.iter().chain(&config.pps) {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(set);
        }
        info.parameter_sets_added = true;
    }
    // Already validated above, so the units are well formed.
    for unit in nal_units(data, config.nal_length_size).flatten() {
        if DROPPED_NAL_TYPES.contains(&nal_type(unit[0])) {
            continue;
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(unit);
    }
    Ok(info)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// x264's SPS for 1280x720 High@3.1 (default settings: B-frames).
    pub const SPS_HIGH_720P: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];
    /// x264's SPS for 320x240 constrained baseline @1.3.
    pub const SPS_BASELINE_320: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40,
        0x00, 0x00, 0x0f, 0x03, 0xc5, 0x0a, 0xa8,
    ];
    pub const PPS: &[u8] = &[0x68, 0xef, 0x8f, 0xcb];

    pub fn record(sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut out = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        out.extend((sps.len() as u16).to_be_bytes());
        out.extend(sps);
        out.push(1);
        out.extend((pps.len() as u16).to_be_bytes());
        out.extend(pps);
        out
    }

    pub fn avcc(units: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for unit in units {
            out.extend((unit.len() as u32).to_be_bytes());
            out.extend(*unit);
        }
        out
    }

    #[test]
    fn parses_a_high_profile_record() {
        let config = parse_config(&record(SPS_HIGH_720P, PPS)).unwrap();
        assert_eq!(config.profile_level_id, "f4001f");
        assert_eq!((config.width, config.height), (1280, 720));
        assert_eq!(config.nal_length_size, 4);
        assert_eq!(config.sps, vec![Bytes::from_static(SPS_HIGH_720P)]);
        assert_eq!(config.pps, vec![Bytes::from_static(PPS)]);
        assert_eq!(config.max_num_reorder_frames, Some(2));
        assert!(config.has_b_frames());
    }

    #[test]
    fn parses_a_constrained_baseline_record() {
        let config = parse_config(&record(SPS_BASELINE_320, PPS)).unwrap();
        assert_eq!(config.profile_level_id, "42e00d");
        assert_eq!((config.width, config.height), (320, 240));
        assert!(!config.has_b_frames());
    }

    #[test]
    fn rejects_malformed_records() {
        let good = record(SPS_HIGH_720P, PPS);
        for cut in 0..good.len() {
            assert!(parse_config(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut version = good.clone();
        version[0] = 2;
        assert_eq!(parse_config(&version), Err(AvcError::Version(2)));
        // Empty SPS (LiveKit GHSA-qxj9-fmqx-r7j8) and empty PPS.
        assert_eq!(
            parse_config(&[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 0, 1, 0, 0]),
            Err(AvcError::EmptyParameterSet("sps"))
        );
        let mut empty_pps = record(SPS_HIGH_720P, PPS);
        empty_pps.truncate(empty_pps.len() - PPS.len() - 2);
        empty_pps.extend([0, 0]);
        assert_eq!(
            parse_config(&empty_pps),
            Err(AvcError::EmptyParameterSet("pps"))
        );
        let swapped = record(PPS, SPS_HIGH_720P);
        assert!(matches!(
            parse_config(&swapped),
            Err(AvcError::WrongParameterSet { .. })
        ));
        let mut no_pps = record(SPS_HIGH_720P, PPS);
        no_pps.truncate(6 + 2 + SPS_HIGH_720P.len());
        no_pps.push(0);
        assert_eq!(parse_config(&no_pps), Err(AvcError::Missing("pps")));
    }

    #[test]
    fn high_10_is_refused() {
        let mut sps = SPS_HIGH_720P.to_vec();
        sps[1] = 110;
        let err = parse_config(&record(&sps, PPS)).unwrap_err();
        assert!(
            matches!(err, AvcError::UnsupportedProfile(110) | AvcError::Sps(_)),
            "{err}"
        );
    }

    #[test]
    fn splits_length_prefixed_units() {
        let data = avcc(&[&[0x09, 0xf0], &[0x65, 1, 2, 3]]);
        let units: Vec<_> = nal_units(&data, 4).collect::<Result<_, _>>().unwrap();
        assert_eq!(units, vec![&[0x09, 0xf0][..], &[0x65, 1, 2, 3][..]]);
        let two = [0, 2, 0x41, 7, 0, 1, 0x06];
        let units: Vec<_> = nal_units(&two, 2).collect::<Result<_, _>>().unwrap();
        assert_eq!(units, vec![&[0x41, 7][..], &[0x06][..]]);
        assert!(matches!(
            nal_units(&[0, 0, 0, 9, 0x65], 4).next(),
            Some(Err(AvcError::NalOverrun { declared: 9, .. }))
        ));
        assert!(matches!(
            nal_units(&[0, 0, 0, 0, 0x65], 4).next(),
            Some(Err(AvcError::EmptyNal(0)))
        ));
        assert!(matches!(
            nal_units(&[0, 0, 0], 4).next(),
            Some(Err(AvcError::NalOverrun { .. }))
        ));
    }

    #[test]
    fn annex_b_puts_parameter_sets_before_every_idr() {
        let config = parse_config(&record(SPS_HIGH_720P, PPS)).unwrap();
        let idr = [0x65, 0x88, 0x84];
        let mut out = Vec::new();
        let info = to_annex_b(&avcc(&[&[0x09, 0xf0], &idr]), &config, &mut out).unwrap();
        assert_eq!(
            info,
            AccessUnitInfo {
                idr: true,
                parameter_sets_added: true
            }
        );
        let mut expected = vec![0, 0, 0, 1];
        expected.extend(SPS_HIGH_720P);
        expected.extend([0, 0, 0, 1]);
        expected.extend(PPS);
        expected.extend([0, 0, 0, 1]);
        expected.extend(idr);
        assert_eq!(out, expected, "AUD dropped, SPS/PPS first");

        // An IDR that brings its own parameter sets is left alone.
        let mut out = Vec::new();
        let own = avcc(&[SPS_HIGH_720P, PPS, &idr]);
        let info = to_annex_b(&own, &config, &mut out).unwrap();
        assert!(info.idr && !info.parameter_sets_added);
        assert_eq!(out, expected);

        // A delta frame gets no parameter sets.
        let mut out = Vec::new();
        let info = to_annex_b(&avcc(&[&[0x41, 0x9a]]), &config, &mut out).unwrap();
        assert_eq!(info, AccessUnitInfo::default());
        assert_eq!(out, vec![0, 0, 0, 1, 0x41, 0x9a]);
    }

    #[test]
    fn annex_b_rejects_a_truncated_access_unit_without_output() {
        let config = parse_config(&record(SPS_HIGH_720P, PPS)).unwrap();
        let mut data = avcc(&[&[0x65, 1, 2, 3]]);
        data.truncate(6);
        let mut out = Vec::new();
        assert!(to_annex_b(&data, &config, &mut out).is_err());
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_records_never_panic(data in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = parse_config(&data);
        }

        #[test]
        fn arbitrary_access_units_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..96),
            size in prop::sample::select(vec![1usize, 2, 4]),
        ) {
            let config = AvcConfig { nal_length_size: size, ..parse_config(&record(SPS_HIGH_720P, PPS)).unwrap() };
            let mut out = Vec::new();
            let _ = to_annex_b(&data, &config, &mut out);
        }

        #[test]
        fn sps_fields_after_a_valid_header_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut sps = vec![0x67, 0x64, 0x00, 0x1f];
            sps.extend(tail);
            let _ = parse_config(&record(&sps, PPS));
        }
    }
}
