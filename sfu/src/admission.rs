//! Live connections per source address, for the accept loops that face the network (RTMP
//! ingest here, HTTP/WebSocket in the signaling server): each admitted connection holds an
//! [`AddressSlot`] until it ends, and an address at its limit gets no more.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// Connections counted per source address, at most `max_per_address` each.
#[derive(Debug)]
pub struct PerAddress {
    max_per_address: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    pub fn new(max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_address,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a connection from `ip`, held until the [`AddressSlot`] is dropped, or `None`
    /// when its address holds `max_per_address` already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let address = address_key(ip);
        let mut counts = self.lock();
        let count = counts.entry(address).or_default();
        if *count >= self.max_per_address {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: Arc::clone(self),
            address,
        })
    }

    /// How many addresses hold at least one place.
    pub fn addresses(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Each update is a single step: the map stays consistent if a holder panicked.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What connections are counted under: the IPv4 address (an IPv4-mapped IPv6 address as its
/// IPv4 address), or the /64 of an IPv6 address (one host usually holds a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

/// One connection's place among those of its address.
#[derive(Debug)]
pub struct AddressSlot {
    counts: Arc<PerAddress>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn per_address_limit_and_release() {
        let counts = PerAddress::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = counts.admit(a).unwrap();
        let second = counts.admit(a).unwrap();
        assert!(counts.admit(a).is_none());
        assert!(counts.admit("::ffff:192.0.2.1".parse().unwrap()).is_none());
        let other = counts.admit(b).unwrap();
        drop(first);
        let third = counts.admit(a).unwrap();
        assert_eq!(counts.addresses(), 2);
        drop((third, second, other));
        assert_eq!(counts.addresses(), 0);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let counts = PerAddress::new(1);
        let _one = counts.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(counts.admit("2001:db8::ffff:2".parse().unwrap()).is_none());
        assert!(counts.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
    }
}
