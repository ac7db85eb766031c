//! G.711 (ITU-T G.711, RFC 3551 PCMU/PCMA) decoding: one byte per sample, looked up in a
//! 256-entry table built at compile time. IP cameras send it at 8 kHz mono.

/// Which companding law a G.711 stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// µ-law (PCMU, RTP payload type 0).
    Mu,
    /// A-law (PCMA, RTP payload type 8).
    A,
}

impl Law {
    /// Appends the samples of `encoded` to `out`, as floats in -1.0..1.0.
    pub fn decode(self, encoded: &[u8], out: &mut Vec<f32>) {
        let table = match self {
            Law::Mu => &MU_LAW,
            Law::A => &A_LAW,
        };
        out.extend(
            encoded
                .iter()
                .map(|&byte| f32::from(table[usize::from(byte)]) / 32_768.0),
        );
    }
}

const MU_LAW: [i16; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = mu_law_sample(i as u8);
        i += 1;
    }
    table
};

const A_LAW: [i16; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = a_law_sample(i as u8);
        i += 1;
    }
    table
};

/// G.711 µ-law expansion: the byte is sent inverted; sign, 3-bit segment, 4-bit mantissa,
/// with a bias of 0x84 (132) removed after the shift.
const fn mu_law_sample(byte: u8) -> i16 {
    let byte = !byte;
    let exponent = (byte >> 4) & 0x07;
    let mantissa = (byte & 0x0f) as i16;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if byte & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// G.711 A-law expansion: even bits are sent inverted (XOR 0x55); sign (1 = positive),
/// 3-bit segment, 4-bit mantissa.
const fn a_law_sample(byte: u8) -> i16 {
    let byte = byte ^ 0x55;
    let exponent = (byte >> 4) & 0x07;
    let mantissa = (byte & 0x0f) as i16;
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        _ => ((mantissa << 4) + 0x108) << (exponent - 1),
    };
    if byte & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values_of_both_laws() {
        // Silence and the extremes (ITU-T G.711 tables 1a/2a; Sun's g711.c agrees).
        assert_eq!(mu_law_sample(0xff), 0);
        assert_eq!(mu_law_sample(0x7f), 0);
        assert_eq!(mu_law_sample(0x00), -32_124);
        assert_eq!(mu_law_sample(0x80), 32_124);
        assert_eq!(a_law_sample(0xd5), 8);
        assert_eq!(a_law_sample(0x55), -8);
        assert_eq!(a_law_sample(0xaa), 32_256);
        assert_eq!(a_law_sample(0x2a), -32_256);
    }

    #[test]
    fn each_law_is_monotonic_in_its_segments() {
        // Within one sign, a larger code (after undoing the inversion) is a larger magnitude.
        for sign in [0x00u8, 0x80] {
            let mu: Vec<i16> = (0..128u8)
                .map(|i| mu_law_sample(!(sign | i)).abs())
                .collect();
            assert!(mu.windows(2).all(|w| w[1] > w[0]), "mu-law {sign:#x}");
            let a: Vec<i16> = (0..128u8)
                .map(|i| a_law_sample((sign | i) ^ 0x55).abs())
                .collect();
            assert!(a.windows(2).all(|w| w[1] > w[0]), "A-law {sign:#x}");
        }
    }

    proptest! {
        /// Any bytes decode to as many samples, each within full scale.
        #[test]
        fn arbitrary_bytes_decode_within_range(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            for law in [Law::Mu, Law::A] {
                let mut out = Vec::new();
                law.decode(&bytes, &mut out);
                prop_assert_eq!(out.len(), bytes.len());
                prop_assert!(out.iter().all(|s| (-1.0..1.0).contains(s)));
            }
        }
    }
}
