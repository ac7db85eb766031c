//! The VP8 RTP payload descriptor (RFC 7741 §4.2) and keyframe detection.
//!
//! ```text
//!       0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+
//!      |X|R|N|S|R| PID | (required)
//!      +-+-+-+-+-+-+-+-+
//! X:   |I|L|T|K| RSV   | (present when X)
//!      +-+-+-+-+-+-+-+-+
//! I:   |M| PictureID   | (present when I; M=1 makes PictureID 15 bits)
//!      +-+-+-+-+-+-+-+-+
//!      |   PictureID   | (present when M)
//!      +-+-+-+-+-+-+-+-+
//! L:   |   TL0PICIDX   | (present when L)
//!      +-+-+-+-+-+-+-+-+
//! T/K: |TID|Y| KEYIDX  | (present when T or K)
//!      +-+-+-+-+-+-+-+-+
//! ```

/// A VP8 picture id: 7 bits (M=0) or 15 bits (M=1) on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PictureId {
    /// A 7-bit picture id.
    Short(u8),
    /// A 15-bit picture id.
    Long(u16),
}

/// The parsed payload descriptor of one VP8 RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// N: the frame can be discarded without affecting others.
    pub non_reference: bool,
    /// S: the packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index (0..=7).
    pub partition_index: u8,
    /// The picture id, when the descriptor carries one.
    pub picture_id: Option<PictureId>,
    /// The TL0PICIDX, when the descriptor carries one.
    pub tl0_pic_idx: Option<u8>,
    /// TID (present when T=1).
    pub temporal_id: Option<u8>,
    /// Y: layer sync (present when T=1).
    pub layer_sync: Option<bool>,
    /// KEYIDX (present when K=1).
    pub key_index: Option<u8>,
    /// Length of the descriptor; the VP8 payload starts here.
    pub header_len: usize,
}

#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
/// A malformed VP8 payload descriptor (RFC 7741).
pub enum Vp8Error {
    /// No bytes at all.
    #[error("empty vp8 payload")]
    Empty,
    /// The descriptor runs past the end of the payload.
    #[error("vp8 payload descriptor truncated")]
    Truncated,
}

impl Descriptor {
    /// Parses the descriptor at the start of an RTP payload.
    pub fn parse(payload: &[u8]) -> Result<Descriptor, Vp8Error> {
        let mut reader = Reader {
            bytes: payload,
            pos: 0,
        };
        let first = reader.byte().map_err(|_| Vp8Error::Empty)?;
        let mut descriptor = Descriptor {
            non_reference: first & 0x20 != 0,
            start_of_partition: first & 0x10 != 0,
            partition_index: first & 0x07,
            picture_id: None,
            tl0_pic_idx: None,
            temporal_id: None,
            layer_sync: None,
            key_index: None,
            header_len: 0,
        };
        if first & 0x80 != 0 {
            let ext = reader.byte()?;
            let (has_i, has_l, has_t, has_k) = (
                ext & 0x80 != 0,
                ext & 0x40 != 0,
                ext & 0x20 != 0,
                ext & 0x10 != 0,
            );
            if has_i {
                let b = reader.byte()?;
                descriptor.picture_id = Some(if b & 0x80 != 0 {
                    let low = reader.byte()?;
                    PictureId::Long(u16::from(b & 0x7f) << 8 | u16::from(low))
                } else {
                    PictureId::Short(b)
                });
            }
            if has_l {
                descriptor.tl0_pic_idx = Some(reader.byte()?);
            }
            if has_t || has_k {
                let b = reader.byte()?;
                if has_t {
                    descriptor.temporal_id = Some(b >> 6);
                    descriptor.layer_sync = Some(b & 0x20 != 0);
                }
                if has_k {
                    descriptor.key_index = Some(b & 0x1f);
                }
            }
        }
        descriptor.header_len = reader.pos;
        Ok(descriptor)
    }

    /// Appends the wire form of this descriptor (`header_len` is ignored).
    pub fn write(&self, out: &mut Vec<u8>) {
        let has_t = self.temporal_id.is_some() || self.layer_sync.is_some();
        let has_k = self.key_index.is_some();
        let extended = self.picture_id.is_some() || self.tl0_pic_idx.is_some() || has_t || has_k;
        out.push(
            u8::from(extended) << 7
                | u8::from(self.non_reference) << 5
                | u8::from(self.start_of_partition) << 4
                | (self.partition_index & 0x07),
        );
        if !extended {
            return;
        }
        out.push(
            u8::from(self.picture_id.is_some()) << 7
                | u8::from(self.tl0_pic_idx.is_some()) << 6
                | u8::from(has_t) << 5
                | u8::from(has_k) << 4,
        );
        match self.picture_id {
            Some(PictureId::Short(id)) => out.push(id & 0x7f),
            Some(PictureId::Long(id)) => out.extend([0x80 | ((id >> 8) as u8 & 0x7f), id as u8]),
            None => {}
        }
        out.extend(self.tl0_pic_idx);
        if has_t || has_k {
            out.push(
                (self.temporal_id.unwrap_or(0) & 0x03) << 6
                    | u8::from(self.layer_sync.unwrap_or(false)) << 5
                    | (self.key_index.unwrap_or(0) & 0x1f),
            );
        }
    }
}

/// Whether this RTP payload starts a VP8 keyframe: it starts partition 0 (S=1, PID=0)
/// and the P bit of the VP8 payload header (bit 0 of its first byte) is 0.
pub fn is_keyframe(payload: &[u8]) -> Result<bool, Vp8Error> {
    let descriptor = Descriptor::parse(payload)?;
    if !descriptor.start_of_partition || descriptor.partition_index != 0 {
        return Ok(false);
    }
    let header = payload
        .get(descriptor.header_len)
        .ok_or(Vp8Error::Truncated)?;
    Ok(header & 0x01 == 0)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, Vp8Error> {
        let b = *self.bytes.get(self.pos).ok_or(Vp8Error::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minimal_descriptor() {
        let d = Descriptor::parse(&[0x10, 0x00]).expect("valid descriptor");
        assert!(d.start_of_partition);
        assert_eq!(d.partition_index, 0);
        assert_eq!(d.picture_id, None);
        assert_eq!(d.header_len, 1);
    }

    #[test]
    fn extended_descriptor_with_all_fields() {
        // X=1 N=1 S=1 PID=0 | I L T K | M=1 picture id 0x1234 | TL0PICIDX 9 | TID=2 Y=1 KEYIDX=5
        let bytes = [0xb0, 0xf0, 0x92, 0x34, 0x09, 0b1010_0101, 0x9c];
        let d = Descriptor::parse(&bytes).expect("valid descriptor");
        assert!(d.non_reference);
        assert!(d.start_of_partition);
        assert_eq!(d.picture_id, Some(PictureId::Long(0x1234)));
        assert_eq!(d.tl0_pic_idx, Some(9));
        assert_eq!(d.temporal_id, Some(2));
        assert_eq!(d.layer_sync, Some(true));
        assert_eq!(d.key_index, Some(5));
        assert_eq!(d.header_len, 6);
        assert_eq!(is_keyframe(&bytes), Ok(true));
    }

    #[test]
    fn short_picture_id_and_key_index_only() {
        let bytes = [0x90, 0x90, 0x05, 0x1f, 0x01];
        let d = Descriptor::parse(&bytes).expect("valid descriptor");
        assert_eq!(d.picture_id, Some(PictureId::Short(5)));
        assert_eq!(d.temporal_id, None);
        assert_eq!(d.layer_sync, None);
        assert_eq!(d.key_index, Some(0x1f));
        assert_eq!(d.header_len, 4);
        assert_eq!(is_keyframe(&bytes), Ok(false), "P=1 is an interframe");
    }

    #[test]
    fn keyframe_needs_start_of_partition_zero_and_p_bit_clear() {
        assert_eq!(is_keyframe(&[0x10, 0x00]), Ok(true));
        assert_eq!(is_keyframe(&[0x10, 0x01]), Ok(false));
        assert_eq!(is_keyframe(&[0x00, 0x00]), Ok(false), "continuation packet");
        assert_eq!(is_keyframe(&[0x11, 0x00]), Ok(false), "partition 1");
    }

    #[test]
    fn truncated_inputs_are_errors() {
        assert_eq!(is_keyframe(&[]), Err(Vp8Error::Empty));
        assert_eq!(is_keyframe(&[0x10]), Err(Vp8Error::Truncated));
        assert_eq!(Descriptor::parse(&[0x80]), Err(Vp8Error::Truncated));
        assert_eq!(Descriptor::parse(&[0x80, 0x80]), Err(Vp8Error::Truncated));
        assert_eq!(
            Descriptor::parse(&[0x80, 0x80, 0x80]),
            Err(Vp8Error::Truncated)
        );
        assert_eq!(Descriptor::parse(&[0x80, 0x40]), Err(Vp8Error::Truncated));
        assert_eq!(Descriptor::parse(&[0x80, 0x20]), Err(Vp8Error::Truncated));
        assert_eq!(Descriptor::parse(&[0x80, 0x10]), Err(Vp8Error::Truncated));
    }

    fn descriptor() -> impl Strategy<Value = Descriptor> {
        let picture_id = prop_oneof![
            Just(None),
            (0u8..0x80).prop_map(|id| Some(PictureId::Short(id))),
            (0u16..0x8000).prop_map(|id| Some(PictureId::Long(id))),
        ];
        (
            any::<bool>(),
            any::<bool>(),
            0u8..8,
            picture_id,
            proptest::option::of(any::<u8>()),
            proptest::option::of((0u8..4, any::<bool>())),
            proptest::option::of(0u8..32),
        )
            .prop_map(|(n, s, pid, picture_id, tl0, t, k)| Descriptor {
                non_reference: n,
                start_of_partition: s,
                partition_index: pid,
                picture_id,
                tl0_pic_idx: tl0,
                temporal_id: t.map(|(tid, _)| tid),
                layer_sync: t.map(|(_, y)| y),
                key_index: k,
                header_len: 0,
            })
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(d) = Descriptor::parse(&bytes) {
                prop_assert!(d.header_len <= bytes.len());
            }
            let _ = is_keyframe(&bytes);
        }

        #[test]
        fn write_then_parse_round_trips(d in descriptor(), rest in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = Vec::new();
            d.write(&mut bytes);
            let len = bytes.len();
            bytes.extend(&rest);
            let parsed = Descriptor::parse(&bytes);
            prop_assert_eq!(parsed, Ok(Descriptor { header_len: len, ..d }));
        }
    }
}
