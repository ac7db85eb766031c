//! Removing deliberately dropped inputs from an output numbering space.
//!
//! When a subscription drops packets on purpose (a temporal layer it does not receive), the
//! subscriber must not see a gap: a sequence-number gap is NACKed for packets that will never
//! come, a picture-id gap looks like lost frames. Each dropped input is recorded, and an
//! input that is forwarded moves down by the number of dropped inputs below it, so a
//! reordered packet still lands in its own slot (mediasoup's `SeqManager` does the same).
//!
//! An input dropped *after* a newer one was already numbered cannot be removed any more
//! (the newer one's number is out); it stays a gap, like a lost packet. That needs a packet
//! of a dropped frame to arrive after a packet of a later, forwarded frame.

use std::collections::BTreeSet;

/// Dropped inputs further than this below the newest input are folded into a count;
/// an input that old is refused (it is older than any reordering a jitter buffer waits for).
const WINDOW: u64 = 1 << 10;

/// The dropped inputs of one incarnation, in an extended (never wrapping) `u64` space.
#[derive(Clone, Debug, Default)]
pub(crate) struct DropCompressor {
    /// Removed inputs at or above `floor`.
    dropped: BTreeSet<u64>,
    /// Removed inputs below `floor`, pruned from `dropped`.
    pruned: u64,
    floor: u64,
    newest: Option<u64>,
}

impl DropCompressor {
    /// Records `input` as dropped. Returns true when it is (or already was) removed from the
    /// output space, false when it came too late for that and leaves a gap.
    pub(crate) fn drop_input(&mut self, input: u64) -> bool {
        match self.newest {
            Some(newest) if input <= newest => self.dropped.contains(&input),
            _ => {
                self.newest = Some(input);
                self.dropped.insert(input);
                self.prune();
                true
            }
        }
    }

    /// How far `input` (forwarded) moves down: the number of removed inputs below it.
    /// `None` for an input older than the window, whose place is no longer known.
    pub(crate) fn removed_below(&mut self, input: u64) -> Option<u64> {
        if input < self.floor {
            return None;
        }
        if self.newest.is_none_or(|newest| input > newest) {
            self.newest = Some(input);
            self.prune();
        }
        // Counting from the top: a forwarded input is usually the newest, so this is short.
        let at_or_above = self.dropped.range(input..).count() as u64;
        Some(self.pruned + self.dropped.len() as u64 - at_or_above)
    }

    fn prune(&mut self) {
        let Some(newest) = self.newest else {
            return;
        };
        self.floor = self.floor.max(newest.saturating_sub(WINDOW));
        while let Some(&first) = self.dropped.first() {
            if first >= self.floor {
                break;
            }
            self.dropped.pop_first();
            self.pruned += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_drops_are_removed() {
        let mut d = DropCompressor::default();
        assert_eq!(d.removed_below(100), Some(0));
        assert!(d.drop_input(101));
        assert!(d.drop_input(102));
        assert_eq!(d.removed_below(103), Some(2));
        // A reordered forwarded packet from before the drops keeps its slot.
        assert_eq!(d.removed_below(99), Some(0));
    }

    #[test]
    fn a_late_drop_leaves_a_gap() {
        let mut d = DropCompressor::default();
        assert_eq!(d.removed_below(10), Some(0));
        assert_eq!(d.removed_below(12), Some(0));
        assert!(!d.drop_input(11), "12 is already numbered");
        assert_eq!(d.removed_below(13), Some(0));
    }

    #[test]
    fn the_same_dropped_input_again_is_still_removed() {
        // Picture ids: every packet of a dropped frame carries the same id.
        let mut d = DropCompressor::default();
        assert!(d.drop_input(5));
        assert!(d.drop_input(5));
        assert_eq!(d.removed_below(6), Some(1));
        assert_eq!(d.removed_below(6), Some(1), "a frame's next packet");
    }

    #[test]
    fn old_drops_are_folded_into_a_count() {
        let mut d = DropCompressor::default();
        for input in (0..10_000u64).step_by(2) {
            assert!(d.drop_input(input));
        }
        assert!(d.dropped.len() as u64 <= WINDOW);
        assert_eq!(d.removed_below(10_001), Some(5_000));
        assert_eq!(d.removed_below(1), None, "older than the window");
    }
}
