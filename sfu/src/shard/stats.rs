//! A shard's counters ([`ShardStats`]), and its media counters in the runtime's
//! [`MediaStats`] form: what its rooms' cores count for live publications and subscriptions,
//! plus what was counted for those already removed, so the sums only ever grow.

use super::routing::RoomKey;
use super::worker::Worker;
use crate::core::{PublicationId, SubscriptionId};
use crate::runtime::MediaStats;

/// Counters of one shard (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Datagrams from an address no peer validated, and checks naming no known ufrag.
    pub unrouted: u64,
    /// Outgoing datagrams the ICE-lite gate refused (to an address never validated).
    pub egress_refused: u64,
    /// RTP datagrams discarded unread because they waited in the receive buffer past the
    /// freshness bound (`ShardConfig::max_ingress_age`).
    pub stale_dropped: u64,
    /// Datagrams dropped unread because they named an SSRC past their connection's allowance
    /// (`ShardConfig::ssrc_allowance`).
    pub ssrcs_refused: u64,
    /// SSRCs connections were let send from, RTP and RTCP counted apart (each at most once
    /// per connection).
    pub ssrcs_admitted: u64,
    /// The longest a datagram or ingest packet waited before the shard read it, over the last
    /// 0.5–1 s, in ms (of the group: the longest of its shards).
    pub ingress_age_max_ms: u64,
    /// Outgoing datagrams the kernel did not take (send buffer full, or an error).
    pub send_failed: u64,
    /// Packets the core forwarded and the subscriber's sender took.
    pub forwarded: u64,
    /// Packets the core forwarded that the subscriber's sender refused.
    pub forward_rejected: u64,
    /// Events not delivered because the participant's event queue was full.
    pub events_dropped: u64,
    /// ICE-TCP connections refused at the connection limit.
    pub tcp_refused: u64,
    /// Datagrams read for a connection of another shard of the group and handed to it, and
    /// those dropped at its full queue.
    pub handed_off: u64,
    pub hand_off_dropped: u64,
    /// Data messages received on Sluice's channels, those refused (size, rate, envelope),
    /// the copies delivered, and the copies dropped (a recipient's backlog full, or its
    /// channel refusing).
    pub data_received: u64,
    pub data_rejected: u64,
    pub data_delivered: u64,
    pub data_dropped: u64,
    pub peers: u64,
    pub rooms: u64,
    pub publications: u64,
    /// Subscriptions the rooms forward to.
    pub subscriptions: u64,
    /// What the rooms' routing cores counted (packets in and out, drops by reason, NACKed
    /// packets, keyframe requests), removed publications and subscriptions included.
    pub media: crate::runtime::MediaStats,
}

impl ShardStats {
    /// Adds `other`'s counts to these (the shards of a group together).
    pub fn add(&mut self, other: &ShardStats) {
        let Self {
            datagrams_in,
            datagrams_out,
            unrouted,
            egress_refused,
            send_failed,
            stale_dropped,
            ssrcs_refused,
            ssrcs_admitted,
            ingress_age_max_ms,
            forwarded,
            forward_rejected,
            events_dropped,
            tcp_refused,
            handed_off,
            hand_off_dropped,
            data_received,
            data_rejected,
            data_delivered,
            data_dropped,
            peers,
            rooms,
            publications,
            subscriptions,
            media,
        } = other;
        self.datagrams_in += datagrams_in;
        self.datagrams_out += datagrams_out;
        self.unrouted += unrouted;
        self.egress_refused += egress_refused;
        self.send_failed += send_failed;
        self.stale_dropped += stale_dropped;
        self.ssrcs_refused += ssrcs_refused;
        self.ssrcs_admitted += ssrcs_admitted;
        self.ingress_age_max_ms = self.ingress_age_max_ms.max(*ingress_age_max_ms);
        self.forwarded += forwarded;
        self.forward_rejected += forward_rejected;
        self.events_dropped += events_dropped;
        self.tcp_refused += tcp_refused;
        self.handed_off += handed_off;
        self.hand_off_dropped += hand_off_dropped;
        self.data_received += data_received;
        self.data_rejected += data_rejected;
        self.data_delivered += data_delivered;
        self.data_dropped += data_dropped;
        self.peers += peers;
        self.rooms += rooms;
        self.publications += publications;
        self.subscriptions += subscriptions;
        self.media.add(media);
    }
}

impl Worker {
    /// Everything the shard's rooms have counted since it started.
    pub(super) fn media_stats(&self) -> MediaStats {
        let mut media = self.counted;
        for (publication, slot) in &self.publications {
            if let Some(stats) = self
                .rooms
                .get(&slot.room)
                .and_then(|room| room.core.publication_stats(*publication))
            {
                media.add_publication(&stats);
            }
        }
        for (subscription, (_, _, publication)) in &self.subscriptions {
            if let Some(stats) = self
                .publications
                .get(publication)
                .and_then(|slot| self.rooms.get(&slot.room))
                .and_then(|room| room.core.subscription_stats(*subscription))
            {
                media.add_subscription(&stats);
            }
        }
        for room in self.rooms.values() {
            media.add_room(&room.core.stats());
        }
        media
    }

    /// Keeps a publication's counters and those of its subscriptions; call before the core
    /// removes it.
    pub(super) fn retire_publication(&mut self, room: RoomKey, publication: PublicationId) {
        let Some(core) = self.rooms.get(&room).map(|slot| &slot.core) else {
            return;
        };
        if let Some(stats) = core.publication_stats(publication) {
            self.counted.add_publication(&stats);
        }
        for (subscription, (_, _, of)) in &self.subscriptions {
            if *of == publication
                && let Some(stats) = core.subscription_stats(*subscription)
            {
                self.counted.add_subscription(&stats);
            }
        }
    }

    /// Keeps a subscription's counters; call before the core removes it.
    pub(super) fn retire_subscription(&mut self, room: RoomKey, subscription: SubscriptionId) {
        if let Some(stats) = self
            .rooms
            .get(&room)
            .and_then(|slot| slot.core.subscription_stats(subscription))
        {
            self.counted.add_subscription(&stats);
        }
    }

    /// Keeps a closing room's own counters (its publications and subscriptions are retired
    /// as they go).
    pub(super) fn retire_room(&mut self, room: RoomKey) {
        if let Some(slot) = self.rooms.get(&room) {
            self.counted.add_room(&slot.core.stats());
        }
    }
}
