//! Counters of the whole media server, gathered when asked (for `/metrics`): each room task
//! tells who and what it holds, and each shard what its rooms' routing cores counted (closed
//! rooms included, so the sums only ever grow).

use std::time::Duration;

use crate::core::{DropCounts, DropReason, PublicationStats, RoomStats, SubscriptionStats};

/// Cumulative media counters of one shard's rooms, or of all shards together
/// ([`crate::shard::ShardStats::media`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// RTP packets that reached a routing core, dropped or not.
    pub packets_in: u64,
    /// Payload bytes of `packets_in`.
    pub bytes_in: u64,
    /// Packets the routing core forwarded to subscriptions (one per subscription).
    pub packets_out: u64,
    /// Payload bytes of `packets_out`.
    pub bytes_out: u64,
    /// Packets the routing core did not forward, by [`DropReason`] index: a reason that
    /// concerns one subscription counts once per subscription.
    drops: [u64; DropReason::ALL.len()],
    /// Lost packets named in subscribers' NACKs.
    pub nacked_packets: u64,
    /// Keyframe requests (PLI/FIR) from subscribers.
    pub keyframe_requests_received: u64,
    /// Keyframe requests sent to publishers, after throttling.
    pub keyframe_requests_sent: u64,
}

impl MediaStats {
    /// Drops counted for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.drops[i])
    }

    /// Every reason with its count (zeros included), in `DropReason::ALL` order.
    pub fn drops_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .copied()
            .zip(self.drops.iter().copied())
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &MediaStats) {
        self.packets_in += other.packets_in;
        self.bytes_in += other.bytes_in;
        self.packets_out += other.packets_out;
        self.bytes_out += other.bytes_out;
        for (sum, count) in self.drops.iter_mut().zip(other.drops) {
            *sum += count;
        }
        self.nacked_packets += other.nacked_packets;
        self.keyframe_requests_received += other.keyframe_requests_received;
        self.keyframe_requests_sent += other.keyframe_requests_sent;
    }

    fn add_drops(&mut self, drops: &DropCounts) {
        for (sum, (_, count)) in self.drops.iter_mut().zip(drops.iter()) {
            *sum += count;
        }
    }

    pub(crate) fn add_publication(&mut self, stats: &PublicationStats) {
        self.packets_in += stats.received_packets;
        self.bytes_in += stats.received_bytes;
        self.keyframe_requests_sent += stats.keyframes_requested;
        self.add_drops(&stats.dropped);
    }

    pub(crate) fn add_subscription(&mut self, stats: &SubscriptionStats) {
        self.packets_out += stats.forwarded_packets;
        self.bytes_out += stats.forwarded_bytes;
        self.add_drops(&stats.drops);
    }

    pub(crate) fn add_room(&mut self, stats: &RoomStats) {
        self.add_drops(&stats.dropped);
    }
}

/// What one room holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RoomStatsReply {
    pub participants: usize,
    pub publications: usize,
}

/// The media server as a whole, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Rooms with at least one participant.
    pub rooms: usize,
    /// Participants in the rooms that answered (RTMP publishers included).
    pub participants: usize,
    /// Publications in the rooms that answered.
    pub publications: usize,
    /// Subscriptions in the shards that answered.
    pub subscriptions: usize,
    /// Control commands waiting in the fullest room queue: near the queue's bound
    /// (`Limits::room_queue`), requests to that room wait.
    pub deepest_room_queue: usize,
    /// Counters since the server started, of open and closed rooms (from the shards that
    /// answered).
    pub media: MediaStats,
    /// Rooms too busy to answer within [`STATS_WAIT`]: their counts are missing from this
    /// reading.
    pub rooms_unanswered: usize,
}

/// How long [`Sfu::stats`](super::Sfu::stats) waits for all rooms and shards together: a
/// busy one answers late.
pub const STATS_WAIT: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_add_every_counter() {
        let mut a = MediaStats {
            packets_in: 1,
            bytes_in: 10,
            packets_out: 2,
            bytes_out: 20,
            nacked_packets: 5,
            keyframe_requests_received: 6,
            keyframe_requests_sent: 7,
            ..MediaStats::default()
        };
        a.drops[1] = 8;
        let b = a;
        a.add(&b);
        assert_eq!(a.packets_in, 2);
        assert_eq!(a.bytes_out, 40);
        assert_eq!(a.keyframe_requests_sent, 14);
        assert_eq!(a.drops(DropReason::ALL[1]), 16);
        assert_eq!(a.drops_by_reason().count(), DropReason::ALL.len());
    }
}
