//! The SSRCs a connection may send from, bounded before its datagrams reach `rtc`.
//!
//! `rtc` keeps state per SSRC for the life of a connection and never frees it: an SRTP or
//! SRTCP replay window for every SSRC a datagram names (created before the datagram is
//! authenticated), and for every stream it binds, interceptor state (NACK, receiver reports)
//! and receive statistics. The shard's own maps by SSRC (`ShardPeer::streams` and the ones
//! beside it) grow with what `rtc` delivers. A client cycling through SSRCs, or a relay on its
//! path injecting random ones, would grow all of them without end. The gate admits, per
//! connection, the first SSRCs it sees up to a limit (RTP and RTCP counted apart: RTCP names
//! its sender's SSRC, which a receive-only client draws per transceiver) and drops datagrams
//! naming any other unread, counted (`ShardStats::ssrcs_refused`; admissions are counted in
//! `ShardStats::ssrcs_admitted`).
//!
//! The limit is [`SSRCS_PER_SECTION`] per negotiated media section plus
//! [`ShardConfig::ssrc_allowance`](super::ShardConfig::ssrc_allowance): what a browser uses,
//! with room for encoders restarting on new SSRCs. An SSRC once admitted stays admitted, so a
//! publisher past the limit still sends from the SSRCs it used before (its signaled one among
//! them); new ones need a new connection.

use std::collections::HashSet;

use super::freshness::rtp_ssrc;

/// SSRCs a media section may use: three simulcast layers and a retransmission stream each.
pub(crate) const SSRCS_PER_SECTION: usize = 6;

/// SSRCs whose first datagram failed authentication, per connection, that still reach `rtc`
/// (which keeps a replay window for each): forged datagrams with the client's address must not
/// use up the allowance its real streams need, and `rtc`'s state for them stays bounded.
pub(crate) const UNAUTHENTICATED_SSRCS: usize = 256;

/// What kind of SRTP datagram, by RFC 7983 and RFC 5761 demultiplexing, and the SSRC its
/// clear header names (RTP: the packet's; RTCP: the sender's, of the first packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Named {
    Rtp(u32),
    Rtcp(u32),
}

/// The SSRC an RTP or RTCP datagram names; `None` for anything else (STUN, DTLS) or one too
/// short to name one (`rtc` drops those without keeping anything).
pub(crate) fn named_ssrc(datagram: &[u8]) -> Option<Named> {
    if let Some(ssrc) = rtp_ssrc(datagram) {
        return Some(Named::Rtp(ssrc));
    }
    let [first, second, _, _, a, b, c, d, ..] = datagram else {
        return None;
    };
    let rtcp = (128..=191).contains(first) && (192..=223).contains(second);
    rtcp.then(|| Named::Rtcp(u32::from_be_bytes([*a, *b, *c, *d])))
}

/// The SSRCs one connection was let send from.
#[derive(Debug, Default)]
pub(crate) struct SsrcGate {
    rtp: HashSet<u32>,
    rtcp: HashSet<u32>,
    /// SSRCs admitted once whose datagram then failed authentication, moved out of the
    /// allowance; at most [`UNAUTHENTICATED_SSRCS`].
    unauthenticated: HashSet<Named>,
}

/// What the gate made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// It names no SSRC, or one admitted before.
    Pass,
    /// It names a new SSRC, admitted now.
    Admitted,
    /// It names a new SSRC past the limit: drop it.
    Refused,
}

impl SsrcGate {
    /// Whether `datagram` may reach the connection: it names no SSRC, or one admitted before,
    /// or a new one while fewer than `limit()` of its kind are admitted (then admitted).
    /// `limit` is asked only for a new SSRC.
    pub(crate) fn admit(&mut self, datagram: &[u8], limit: impl FnOnce() -> usize) -> Admission {
        let Some(named) = named_ssrc(datagram) else {
            return Admission::Pass;
        };
        let (admitted, ssrc) = match named {
            Named::Rtp(ssrc) => (&mut self.rtp, ssrc),
            Named::Rtcp(ssrc) => (&mut self.rtcp, ssrc),
        };
        if admitted.contains(&ssrc) || self.unauthenticated.contains(&named) {
            return Admission::Pass;
        }
        if admitted.len() >= limit() {
            return Admission::Refused;
        }
        admitted.insert(ssrc);
        Admission::Admitted
    }

    /// The datagram of an SSRC admitted just now failed authentication in `rtc`: the SSRC
    /// leaves the allowance, and counts among the unauthenticated ones instead, which, once
    /// [`UNAUTHENTICATED_SSRCS`] are known, keeps it admitted (its state exists in `rtc`) and
    /// makes further new SSRCs share the allowance again.
    pub(crate) fn unauthenticated(&mut self, datagram: &[u8]) {
        let Some(named) = named_ssrc(datagram) else {
            return;
        };
        if self.unauthenticated.len() >= UNAUTHENTICATED_SSRCS {
            return;
        }
        let admitted = match named {
            Named::Rtp(ssrc) => self.rtp.remove(&ssrc),
            Named::Rtcp(ssrc) => self.rtcp.remove(&ssrc),
        };
        if admitted {
            self.unauthenticated.insert(named);
        }
    }

    /// How many SSRCs of RTP and of RTCP are admitted.
    #[cfg(test)]
    pub(crate) fn admitted(&self) -> (usize, usize) {
        (self.rtp.len(), self.rtcp.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rtp(ssrc: u32) -> Vec<u8> {
        let mut packet = vec![0x80, 96, 0, 1, 0, 0, 0, 0];
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(&[0; 20]);
        packet
    }

    fn rtcp(sender: u32) -> Vec<u8> {
        let mut packet = vec![0x81, 201, 0, 1];
        packet.extend_from_slice(&sender.to_be_bytes());
        packet
    }

    #[test]
    fn rtp_and_rtcp_name_their_ssrcs_and_other_datagrams_none() {
        assert_eq!(named_ssrc(&rtp(7)), Some(Named::Rtp(7)));
        let mut marked = rtp(7);
        marked[1] = 0x80 | 96;
        assert_eq!(named_ssrc(&marked), Some(Named::Rtp(7)), "marker bit set");
        assert_eq!(named_ssrc(&rtcp(9)), Some(Named::Rtcp(9)));
        // STUN (first byte 0-3), DTLS (20-63), and truncated headers.
        assert_eq!(
            named_ssrc(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0]),
            None
        );
        assert_eq!(
            named_ssrc(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(named_ssrc(&rtp(7)[..11]), None);
        assert_eq!(named_ssrc(&rtcp(9)[..7]), None);
    }

    #[test]
    fn new_ssrcs_past_the_limit_are_refused_and_admitted_ones_stay() {
        let mut gate = SsrcGate::default();
        for ssrc in 0..4 {
            assert_eq!(gate.admit(&rtp(ssrc), || 4), Admission::Admitted);
        }
        assert_eq!(
            gate.admit(&rtp(4), || 4),
            Admission::Refused,
            "a fifth SSRC"
        );
        assert_eq!(
            gate.admit(&rtp(0), || 4),
            Admission::Pass,
            "the first still passes"
        );
        assert_eq!(
            gate.admit(&rtcp(100), || 4),
            Admission::Admitted,
            "RTCP is counted apart"
        );
        assert_eq!(
            gate.admit(&rtp(4), || 5),
            Admission::Admitted,
            "a larger limit admits more"
        );
        assert_eq!(
            gate.admit(&[0, 1, 2, 3], || 0),
            Admission::Pass,
            "not RTP or RTCP: no SSRC"
        );
        assert_eq!(gate.admitted(), (5, 1));
    }

    proptest! {
        #[test]
        fn any_bytes_name_at_most_the_ssrc_of_their_header(
            data in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let at = |offset: usize| {
                data.get(offset..offset + 4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes)
            };
            match named_ssrc(&data) {
                None => {}
                Some(Named::Rtcp(ssrc)) => prop_assert_eq!(Some(ssrc), at(4)),
                Some(Named::Rtp(ssrc)) => prop_assert_eq!(Some(ssrc), at(8)),
            }
            let mut gate = SsrcGate::default();
            gate.admit(&data, || 1);
            let (rtp, rtcp) = gate.admitted();
            prop_assert!(rtp + rtcp <= 1);
        }
    }

    #[test]
    fn a_peer_cycling_through_ssrcs_is_bounded() {
        let mut gate = SsrcGate::default();
        let admitted = (0..100_000u32)
            .filter(|ssrc| {
                gate.admit(&rtp(ssrc.wrapping_mul(2_654_435_761)), || 38) == Admission::Admitted
            })
            .count();
        assert_eq!(admitted, 38);
        assert_eq!(gate.admitted(), (38, 0));
    }

    #[test]
    fn forged_ssrcs_that_fail_authentication_leave_the_allowance() {
        let mut gate = SsrcGate::default();
        // A relay on the path sends 40 datagrams of junk SSRCs with the client's address:
        // each is admitted, fails authentication in `rtc`, and leaves the allowance.
        for ssrc in 100..140 {
            assert_eq!(gate.admit(&rtp(ssrc), || 4), Admission::Admitted);
            gate.unauthenticated(&rtp(ssrc));
        }
        // The publisher's real streams still get their four.
        for ssrc in 0..4 {
            assert_eq!(gate.admit(&rtp(ssrc), || 4), Admission::Admitted);
        }
        assert_eq!(gate.admit(&rtp(4), || 4), Admission::Refused);
        // Past the bound on unauthenticated SSRCs, forged ones share the allowance again.
        let mut gate = SsrcGate::default();
        for ssrc in 0..UNAUTHENTICATED_SSRCS as u32 + 10 {
            if gate.admit(&rtp(ssrc), || 4) == Admission::Admitted {
                gate.unauthenticated(&rtp(ssrc));
            }
        }
        assert_eq!(gate.unauthenticated.len(), UNAUTHENTICATED_SSRCS);
        assert_eq!(gate.admitted(), (4, 0));
    }
}
