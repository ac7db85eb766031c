//! Extended RTP timestamps and wall-time → clock-tick conversion.

use std::time::Duration;

/// An RTP timestamp extended to 64 bits so that it never wraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ExtTs(pub u64);

impl ExtTs {
    /// The wire value.
    pub(crate) fn wire(self) -> u32 {
        // Truncation is the point: the wire carries the low 32 bits.
        self.0 as u32
    }
}

/// Turns the wire timestamps of one incarnation into `ExtTs`s, taking each to be the
/// interpretation closest to the highest timestamp seen so far.
#[derive(Clone, Debug, Default)]
pub(crate) struct TsUnwrapper {
    highest: Option<u64>,
}

/// The first timestamp lands far from zero so that earlier (reordered) timestamps can be
/// represented without underflow.
const ORIGIN: u64 = 1 << 40;

impl TsUnwrapper {
    pub(crate) fn unwrap(&mut self, ts: u32) -> ExtTs {
        let ext = match self.highest {
            None => ORIGIN + u64::from(ts),
            Some(highest) => {
                let delta = ts.wrapping_sub(highest as u32) as i32;
                highest.wrapping_add_signed(i64::from(delta))
            }
        };
        if self.highest.is_none_or(|highest| ext > highest) {
            self.highest = Some(ext);
        }
        ExtTs(ext)
    }
}

/// `elapsed` expressed in ticks of an RTP clock running at `clock_rate` Hz.
pub(crate) fn ticks(elapsed: Duration, clock_rate: u32) -> u64 {
    let ticks = elapsed.as_nanos() * u128::from(clock_rate) / 1_000_000_000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_forward_and_backward() {
        let mut u = TsUnwrapper::default();
        let a = u.unwrap(u32::MAX - 1000);
        let b = u.unwrap(2000);
        let c = u.unwrap(u32::MAX - 4000);
        assert_eq!(b.0, a.0 + 3001);
        assert_eq!(c.0, a.0 - 3000);
        assert_eq!(b.wire(), 2000);
    }

    #[test]
    fn ticks_scale_with_clock_rate() {
        assert_eq!(ticks(Duration::from_millis(20), 48_000), 960);
        assert_eq!(ticks(Duration::from_millis(1000), 90_000), 90_000);
        assert_eq!(ticks(Duration::ZERO, 90_000), 0);
        assert_eq!(ticks(Duration::MAX, u32::MAX), u64::MAX);
    }
}
