//! Which recent sequence numbers of a incarnation have already arrived, so that a duplicated
//! packet is dropped once per publication instead of being forwarded twice.

use super::packet::DropReason;
use super::rewrite::seq::ExtSeq;

const WORDS: usize = 16;
/// How far behind the highest sequence number a packet may arrive and still be judged.
const WINDOW: u64 = (WORDS * 64) as u64;

#[derive(Clone, Debug, Default)]
pub(crate) struct SeenWindow {
    highest: Option<u64>,
    /// Bit `s % WINDOW` is set when `s` (within the window) has arrived.
    bits: [u64; WORDS],
}

impl SeenWindow {
    /// Records `seq`; an error says why the packet must not be forwarded.
    pub(crate) fn insert(&mut self, seq: ExtSeq) -> Result<(), DropReason> {
        let seq = seq.0;
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.set(seq);
            return Ok(());
        };
        if seq > highest {
            let advance = seq - highest;
            if advance >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for s in highest + 1..seq {
                    self.clear(s);
                }
            }
            self.highest = Some(seq);
            self.set(seq);
            return Ok(());
        }
        if highest - seq >= WINDOW {
            return Err(DropReason::TooOld);
        }
        if self.is_set(seq) {
            return Err(DropReason::Duplicate);
        }
        self.set(seq);
        Ok(())
    }

    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn set(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        self.bits[word] |= mask;
    }

    fn clear(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        self.bits[word] &= !mask;
    }

    fn is_set(&self, seq: u64) -> bool {
        let (word, mask) = Self::slot(seq);
        self.bits[word] & mask != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn detects_duplicates_and_too_old() {
        let mut w = SeenWindow::default();
        assert_eq!(w.insert(ExtSeq(5000)), Ok(()));
        assert_eq!(w.insert(ExtSeq(5002)), Ok(()));
        assert_eq!(w.insert(ExtSeq(5001)), Ok(()));
        assert_eq!(w.insert(ExtSeq(5001)), Err(DropReason::Duplicate));
        assert_eq!(w.insert(ExtSeq(5000)), Err(DropReason::Duplicate));
        assert_eq!(w.insert(ExtSeq(4999)), Ok(()));
        assert_eq!(w.insert(ExtSeq(5002 - WINDOW)), Err(DropReason::TooOld));
        assert_eq!(w.insert(ExtSeq(5002 + 3 * WINDOW)), Ok(()));
        assert_eq!(w.insert(ExtSeq(5002 + 3 * WINDOW - 1)), Ok(()));
    }

    proptest! {
        #[test]
        fn agrees_with_a_set(seqs in proptest::collection::vec(0u64..3000, 1..400)) {
            let mut w = SeenWindow::default();
            let mut seen = HashSet::new();
            let mut highest = 0u64;
            for s in seqs {
                let s = s + 10_000;
                let expected = if seen.is_empty() || s > highest {
                    Ok(())
                } else if highest - s >= WINDOW {
                    Err(DropReason::TooOld)
                } else if seen.contains(&s) {
                    Err(DropReason::Duplicate)
                } else {
                    Ok(())
                };
                prop_assert_eq!(w.insert(ExtSeq(s)), expected);
                if expected.is_ok() {
                    seen.insert(s);
                    highest = highest.max(s);
                }
            }
        }
    }
}
