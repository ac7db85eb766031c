//! The shard's media counters in the runtime's [`MediaStats`] form: what its rooms' cores
//! count for live publications and subscriptions, plus what was counted for those already
//! removed, so the sums only ever grow.

use super::routing::RoomKey;
use super::worker::Worker;
use crate::core::{PublicationId, SubscriptionId};
use crate::runtime::MediaStats;

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
