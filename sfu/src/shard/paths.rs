//! ICE-lite's promise for one peer connection: the addresses it may be sent to.
//!
//! An address is *heard* when a binding request naming the peer's ufrag arrives from it (its
//! integrity is not checked yet), and *validated* when the peer's ICE agent answers such a
//! request with a binding success response — the agent answers only checks that carry our
//! credentials. Only validated addresses are sent anything else; nothing at all goes to an
//! address that was never heard. Both lists are bounded: a client cannot make the server
//! remember (or reach) more than a handful of addresses per connection.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::stun;

/// Addresses a peer's checks may come from before one is validated (a client with several
/// interfaces checks from each).
const MAX_HEARD: usize = 8;
/// Validated addresses kept per peer (the selected path and a few it may move to).
const MAX_VALIDATED: usize = 4;

/// What the gate decides about one outgoing datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Egress {
    /// The address is validated: send.
    Send,
    /// A binding success response to a heard address: send, and the address is now validated
    /// (the caller routes that address's non-STUN datagrams to this peer from now on).
    Validated,
    /// The address never sent a check that the agent accepted: drop.
    Refused,
}

/// The heard and validated addresses of one peer connection, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Paths {
    heard: VecDeque<SocketAddr>,
    validated: VecDeque<SocketAddr>,
}

impl Paths {
    /// A binding request with this peer's ufrag arrived from `from`.
    pub(crate) fn heard(&mut self, from: SocketAddr) {
        if self.heard.contains(&from) || self.validated.contains(&from) {
            return;
        }
        if self.heard.len() == MAX_HEARD {
            self.heard.pop_front();
        }
        self.heard.push_back(from);
    }

    /// Whether `datagram` may go to `to`, and whether sending it validates `to`. When a
    /// validation pushes the oldest validated address out, that address is returned too so the
    /// caller can stop routing it here.
    pub(crate) fn egress(
        &mut self,
        to: SocketAddr,
        datagram: &[u8],
    ) -> (Egress, Option<SocketAddr>) {
        if self.validated.contains(&to) {
            return (Egress::Send, None);
        }
        if !self.heard.contains(&to) || !stun::is_binding_success(datagram) {
            return (Egress::Refused, None);
        }
        self.heard.retain(|a| *a != to);
        let evicted = if self.validated.len() == MAX_VALIDATED {
            self.validated.pop_front()
        } else {
            None
        };
        self.validated.push_back(to);
        (Egress::Validated, evicted)
    }

    /// Forgets `addr` (it was validated by another peer connection since).
    pub(crate) fn forget(&mut self, addr: SocketAddr) {
        self.heard.retain(|a| *a != addr);
        self.validated.retain(|a| *a != addr);
    }

    /// Every validated address (to unroute them when the peer goes).
    pub(crate) fn validated(&self) -> impl Iterator<Item = &SocketAddr> {
        self.validated.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUCCESS: [u8; 20] = [
        0x01, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    const MEDIA: [u8; 12] = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], port))
    }

    #[test]
    fn nothing_goes_to_an_address_never_heard() {
        let mut paths = Paths::default();
        assert_eq!(paths.egress(addr(2, 9), &SUCCESS).0, Egress::Refused);
        assert_eq!(paths.egress(addr(2, 9), &MEDIA).0, Egress::Refused);
    }

    #[test]
    fn a_heard_address_gets_only_the_success_response_until_validated() {
        let mut paths = Paths::default();
        paths.heard(addr(1, 5000));
        assert_eq!(paths.egress(addr(1, 5000), &MEDIA).0, Egress::Refused);
        assert_eq!(paths.egress(addr(1, 5000), &SUCCESS).0, Egress::Validated);
        assert_eq!(paths.egress(addr(1, 5000), &MEDIA).0, Egress::Send);
    }

    #[test]
    fn heard_and_validated_lists_are_bounded() {
        let mut paths = Paths::default();
        for port in 0..100 {
            paths.heard(addr(1, port));
        }
        assert_eq!(paths.heard.len(), MAX_HEARD);
        assert_eq!(paths.egress(addr(1, 0), &SUCCESS).0, Egress::Refused);
        let mut evicted = Vec::new();
        for port in 92..100 {
            let (egress, out) = paths.egress(addr(1, port), &SUCCESS);
            assert_eq!(egress, Egress::Validated);
            evicted.extend(out);
        }
        assert_eq!(paths.validated().count(), MAX_VALIDATED);
        assert_eq!(evicted.len(), 8 - MAX_VALIDATED);
        assert_eq!(paths.egress(addr(1, 92), &MEDIA).0, Egress::Refused);
    }

    #[test]
    fn a_forgotten_address_is_refused_again() {
        let mut paths = Paths::default();
        paths.heard(addr(1, 7));
        paths.egress(addr(1, 7), &SUCCESS);
        paths.forget(addr(1, 7));
        assert_eq!(paths.egress(addr(1, 7), &MEDIA).0, Egress::Refused);
    }
}
