//! A small seeded generator for the few random choices the core makes (initial sequence numbers).

/// SplitMix64: fast, well distributed for non-cryptographic use, and reproducible from its seed,
/// so the core stays deterministic under test while the runtime seeds it from the OS.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn next_u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_seeds_differ() {
        let a: Vec<u16> = (0..4)
            .map({
                let mut r = SplitMix64::new(7);
                move |_| r.next_u16()
            })
            .collect();
        let b: Vec<u16> = (0..4)
            .map({
                let mut r = SplitMix64::new(7);
                move |_| r.next_u16()
            })
            .collect();
        let mut other = SplitMix64::new(8);
        assert_eq!(a, b);
        assert_ne!(a[0], other.next_u16());
        // Consecutive draws are not all equal.
        assert!(a.windows(2).any(|w| w[0] != w[1]));
    }
}
