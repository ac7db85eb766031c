//! The UDP port range media sockets are bound in, and the allocator that hands ports out.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

/// An inclusive range of UDP ports for media, written `lo-hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port range {0:?}: expected lo-hi with 0 < lo <= hi")]
pub struct PortRangeError(pub String);

impl PortRange {
    pub fn new(lo: u16, hi: u16) -> Result<Self, PortRangeError> {
        if lo == 0 || lo > hi {
            return Err(PortRangeError(format!("{lo}-{hi}")));
        }
        Ok(Self { lo, hi })
    }

    pub fn len(&self) -> u32 {
        u32::from(self.hi) - u32::from(self.lo) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PortRangeError(s.to_owned());
        let (lo, hi) = s.trim().split_once('-').ok_or_else(err)?;
        let lo = lo.trim().parse().map_err(|_| err())?;
        let hi = hi.trim().parse().map_err(|_| err())?;
        Self::new(lo, hi).map_err(|_| err())
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

/// Hands out candidate ports round-robin so consecutive connections do not all probe the
/// bottom of the range first; the caller tries to bind each and moves on if it is taken.
#[derive(Debug)]
pub(crate) struct PortCursor {
    range: PortRange,
    next: AtomicU32,
}

impl PortCursor {
    pub(crate) fn new(range: PortRange) -> Self {
        Self {
            range,
            next: AtomicU32::new(0),
        }
    }

    pub(crate) fn range(&self) -> PortRange {
        self.range
    }

    /// Every port of the range once, starting after the last one handed out.
    pub(crate) fn candidates(&self) -> impl Iterator<Item = u16> + '_ {
        let len = self.range.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % len;
        (0..len).map(move |i| {
            let offset = (start + i) % len;
            u16::try_from(u32::from(self.range.lo) + offset)
                .expect("invariant: lo + offset <= hi fits in u16")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let r: PortRange = "50000-50010".parse().expect("valid");
        assert_eq!((r.lo, r.hi, r.len()), (50000, 50010, 11));
        assert_eq!(r.to_string(), "50000-50010");
        for bad in ["", "5", "0-10", "10-5", "a-b", "1-70000", "-"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cursor_visits_every_port_once_and_rotates() {
        let cursor = PortCursor::new(PortRange::new(100, 103).expect("valid"));
        let first: Vec<u16> = cursor.candidates().collect();
        assert_eq!(first, vec![100, 101, 102, 103]);
        let second: Vec<u16> = cursor.candidates().collect();
        assert_eq!(second, vec![101, 102, 103, 100]);
    }
}
