//! The room task's counters: what its core counts for live publications and subscriptions,
//! kept when they are removed, and added up with its own queue drops when asked.

use super::*;

impl RoomTask {
    /// Everything this room has counted since it opened.
    pub(super) fn media_stats(&self) -> MediaStats {
        let mut media = self.counted;
        for id in self.publications.keys() {
            if let Some(stats) = self.core.publication_stats(*id) {
                media.add_publication(&stats);
            }
        }
        for id in self.subscriptions.keys() {
            if let Some(stats) = self.core.subscription_stats(*id) {
                media.add_subscription(&stats);
            }
        }
        media.add_room(&self.core.stats());
        media.room_queue_drops += self.rtp_dropped.load(Ordering::Relaxed);
        media.subscription_queue_drops += self.sink_full_drops;
        media
    }

    pub(super) fn stats_reply(&self) -> RoomStatsReply {
        RoomStatsReply {
            participants: self.participants.len(),
            publications: self.publications.len(),
            subscriptions: self.subscriptions.len(),
            media: self.media_stats(),
        }
    }

    /// Keeps a subscription's counters; call before the core removes it.
    pub(super) fn retire_subscription(&mut self, subscription: SubscriptionId) {
        if let Some(stats) = self.core.subscription_stats(subscription) {
            self.counted.add_subscription(&stats);
        }
    }

    /// Keeps the counters of a publication and of its subscriptions; call before the core
    /// removes it.
    pub(super) fn retire_publication(&mut self, publication: PublicationId) {
        if let Some(stats) = self.core.publication_stats(publication) {
            self.counted.add_publication(&stats);
        }
        let theirs: Vec<SubscriptionId> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.publication == publication)
            .map(|(id, _)| *id)
            .collect();
        for subscription in theirs {
            self.retire_subscription(subscription);
        }
    }

    /// Keeps the counters of a leaving participant's subscriptions; call before the core
    /// removes them.
    pub(super) fn retire_subscriber(&mut self, participant: ParticipantId) {
        let theirs: Vec<SubscriptionId> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.subscriber == participant)
            .map(|(id, _)| *id)
            .collect();
        for subscription in theirs {
            self.retire_subscription(subscription);
        }
    }
}
