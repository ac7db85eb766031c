//! Which RTMP connections are admitted: at most a few per source address may be in setup
//! (handshake, `connect`, `publish` not yet accepted) at once, so one client opening idle
//! sockets cannot take the connection slots that encoders need.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// The connections in setup, per source address.
#[derive(Debug)]
pub(super) struct SetupCounts {
    max_per_address: usize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

impl SetupCounts {
    pub(super) fn new(max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_address,
            per_address: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a connection from `ip` in setup, or `None` when its address has
    /// `max_per_address` already. The place is held until the [`SetupSlot`] is dropped: when
    /// the publish is accepted or the connection ends.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<SetupSlot> {
        let address = address_key(ip);
        let mut per_address = self.lock();
        let count = per_address.entry(address).or_default();
        if *count >= self.max_per_address {
            return None;
        }
        *count += 1;
        Some(SetupSlot {
            counts: Arc::clone(self),
            address,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Each update is a single step: the map stays consistent if a holder panicked.
        self.per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What connections are counted under: the IPv4 address, or the /64 of an IPv6 address.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

/// One connection's place among those in setup from its address.
#[derive(Debug)]
pub(super) struct SetupSlot {
    counts: Arc<SetupCounts>,
    address: IpAddr,
}

impl Drop for SetupSlot {
    fn drop(&mut self) {
        let mut per_address = self.counts.lock();
        if let Some(count) = per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                per_address.remove(&self.address);
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
        let counts = SetupCounts::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = counts.admit(a).unwrap();
        let _second = counts.admit(a).unwrap();
        assert!(counts.admit(a).is_none());
        assert!(counts.admit("::ffff:192.0.2.1".parse().unwrap()).is_none());
        let _other = counts.admit(b).unwrap();
        drop(first);
        let third = counts.admit(a).unwrap();
        drop((third, _second, _other));
        assert!(counts.lock().is_empty());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let counts = SetupCounts::new(1);
        let _one = counts.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(counts.admit("2001:db8::2".parse().unwrap()).is_none());
        assert!(counts.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
    }
}
