//! Extended RTP sequence numbers.

/// An RTP sequence number extended to 64 bits so that it never wraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ExtSeq(pub u64);

impl ExtSeq {
    /// The wire value.
    pub(crate) fn wire(self) -> u16 {
        // Truncation is the point: the wire carries the low 16 bits.
        self.0 as u16
    }
}

/// Turns the wire sequence numbers of one incarnation into `ExtSeq`s, taking each packet to
/// be the interpretation closest to the highest number seen so far (RFC 3550 A.1 style).
#[derive(Clone, Debug, Default)]
pub(crate) struct SeqUnwrapper {
    highest: Option<u64>,
}

/// The first packet lands far from zero so that reordered packets from before it can be
/// represented without underflow.
const ORIGIN: u64 = 1 << 32;

impl SeqUnwrapper {
    pub(crate) fn unwrap(&mut self, seq: u16) -> ExtSeq {
        let ext = match self.highest {
            None => ORIGIN + u64::from(seq),
            Some(highest) => {
                let delta = seq.wrapping_sub(highest as u16) as i16;
                highest.wrapping_add_signed(i64::from(delta))
            }
        };
        if self.highest.is_none_or(|highest| ext > highest) {
            self.highest = Some(ext);
        }
        ExtSeq(ext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_forward_and_backward() {
        let mut u = SeqUnwrapper::default();
        let a = u.unwrap(65534);
        let b = u.unwrap(65535);
        let c = u.unwrap(0);
        let d = u.unwrap(65533); // late, from before the wrap
        let e = u.unwrap(1);
        assert_eq!(b.0, a.0 + 1);
        assert_eq!(c.0, a.0 + 2);
        assert_eq!(d.0, a.0 - 1);
        assert_eq!(e.0, a.0 + 3);
        assert_eq!(c.wire(), 0);
        assert_eq!(d.wire(), 65533);
    }

    #[test]
    fn late_packet_does_not_move_the_reference() {
        let mut u = SeqUnwrapper::default();
        let first = u.unwrap(100);
        assert_eq!(u.unwrap(90).0, first.0 - 10);
        assert_eq!(u.unwrap(101).0, first.0 + 1);
    }

    proptest! {
        #[test]
        fn steps_below_half_range_are_exact(start in any::<u16>(), steps in proptest::collection::vec(-1000i64..3000, 1..200)) {
            let mut u = SeqUnwrapper::default();
            let origin = u.unwrap(start).0;
            let mut highest = origin;
            for step in steps {
                let ext = highest.wrapping_add_signed(step);
                let got = u.unwrap(ext as u16);
                prop_assert_eq!(got.0, ext);
                highest = highest.max(ext);
            }
        }
    }
}
