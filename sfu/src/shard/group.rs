//! Several shards on one port, one per media thread.
//!
//! Every shard binds the same UDP port with `SO_REUSEPORT`; the kernel picks the socket of a
//! datagram by a hash of its addresses, so a client's datagrams always reach the same shard,
//! which need not be the one that owns its connection (the connection is placed with its room,
//! before the client's address is known). A shard that reads a datagram it has no peer for
//! looks its owner up in the tables the shards share — binding requests by the ufrag they name,
//! the rest by validated source address — and hands it over on the owner's bounded queue: one
//! hand-off per misrouted datagram, none for the rest, and none on the way out (every shard
//! sends from the shared port). The first shard holds the one ICE-TCP listener; the others
//! write to its connections through the shared table of connection queues.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use rtc::shared::TransportProtocol;
use tokio::sync::mpsc;

/// Datagrams handed to one shard by its siblings before new ones are dropped.
pub(super) const HAND_OFF_QUEUE: usize = 4096;

/// Which shard owns what, shared by the shards of one group.
#[derive(Debug, Default)]
pub(super) struct Routes {
    ufrags: DashMap<String, usize>,
    addresses: DashMap<SocketAddr, usize>,
    /// Queues of the ICE-TCP connections, by client address (held by the first shard).
    pub(super) tcp_writers: DashMap<SocketAddr, mpsc::Sender<Bytes>>,
}

/// A datagram read by one shard for a connection of another.
#[derive(Debug)]
pub(super) struct HandedOff {
    pub(super) from: SocketAddr,
    pub(super) datagram: BytesMut,
    pub(super) protocol: TransportProtocol,
}

/// One shard's link to its group.
#[derive(Debug)]
pub(super) struct GroupLink {
    pub(super) index: usize,
    pub(super) routes: Arc<Routes>,
    /// Every shard's hand-off queue, by index (this shard's own included, unused).
    pub(super) siblings: Vec<mpsc::Sender<HandedOff>>,
}

impl GroupLink {
    /// The shard whose connection drew `ufrag`, when it is another.
    pub(super) fn owner_of_ufrag(&self, ufrag: &str) -> Option<usize> {
        self.other_than_this(self.routes.ufrags.get(ufrag).map(|entry| *entry))
    }

    /// The shard that routes `addr`, when it is another.
    pub(super) fn owner_of_address(&self, addr: SocketAddr) -> Option<usize> {
        self.other_than_this(self.routes.addresses.get(&addr).map(|entry| *entry))
    }

    fn other_than_this(&self, owner: Option<usize>) -> Option<usize> {
        owner.filter(|owner| *owner != self.index)
    }

    /// Hands a datagram to shard `owner`; `false` when its queue is full or gone.
    pub(super) fn hand_off(&self, owner: usize, datagram: HandedOff) -> bool {
        self.siblings
            .get(owner)
            .is_some_and(|queue| queue.try_send(datagram).is_ok())
    }

    pub(super) fn claim_ufrag(&self, ufrag: &str) {
        self.routes.ufrags.insert(ufrag.to_owned(), self.index);
    }

    pub(super) fn release_ufrag(&self, ufrag: &str) {
        self.routes
            .ufrags
            .remove_if(ufrag, |_, owner| *owner == self.index);
    }

    pub(super) fn claim_address(&self, addr: SocketAddr) {
        self.routes.addresses.insert(addr, self.index);
    }

    pub(super) fn release_address(&self, addr: SocketAddr) {
        self.routes
            .addresses
            .remove_if(&addr, |_, owner| *owner == self.index);
    }
}

/// The links of a group of `shards` shards, and each shard's hand-off queue receiver.
pub(super) fn links(shards: usize) -> Vec<(GroupLink, mpsc::Receiver<HandedOff>)> {
    let routes = Arc::new(Routes::default());
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| mpsc::channel(HAND_OFF_QUEUE)).unzip();
    receivers
        .into_iter()
        .enumerate()
        .map(|(index, receiver)| {
            let link = GroupLink {
                index,
                routes: Arc::clone(&routes),
                siblings: senders.clone(),
            };
            (link, receiver)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_finds_what_another_claimed_and_never_itself() {
        let mut links = links(2).into_iter().map(|(link, _)| link);
        let (Some(first), Some(second)) = (links.next(), links.next()) else {
            panic!("two links");
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], 5000));
        second.claim_ufrag("abcd");
        second.claim_address(addr);
        assert_eq!(first.owner_of_ufrag("abcd"), Some(1));
        assert_eq!(first.owner_of_address(addr), Some(1));
        assert_eq!(second.owner_of_ufrag("abcd"), None);
        // Only the owner releases its claim.
        first.release_ufrag("abcd");
        first.release_address(addr);
        assert_eq!(first.owner_of_ufrag("abcd"), Some(1));
        second.release_ufrag("abcd");
        second.release_address(addr);
        assert_eq!(first.owner_of_ufrag("abcd"), None);
        assert_eq!(first.owner_of_address(addr), None);
    }

    #[tokio::test]
    async fn a_handed_off_datagram_reaches_its_owner() {
        let mut links = links(2);
        let (mut second_rx, first) = {
            let (second, second_rx) = links.remove(1);
            drop(second);
            (second_rx, links.remove(0).0)
        };
        let from = SocketAddr::from(([127, 0, 0, 1], 5000));
        let sent = first.hand_off(
            1,
            HandedOff {
                from,
                datagram: BytesMut::from(&b"x"[..]),
                protocol: TransportProtocol::UDP,
            },
        );
        assert!(sent);
        let received = second_rx.recv().await.map(|d| d.from);
        assert_eq!(received, Some(from));
    }
}
