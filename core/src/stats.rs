//! Counters the core keeps so that drops are visible without per-packet logging.

use super::ids::{ParticipantId, PublicationId};
use super::packet::DropReason;

/// Dropped-packet counts, one per `DropReason`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// Drops counted for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// Drops counted for every reason together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Every reason with its count (zeros included), in `DropReason::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&reason| (reason, self.get(reason)))
    }

    pub(crate) fn add(&mut self, reason: DropReason) {
        let count = &mut self.0[reason.index()];
        *count = count.saturating_add(1);
    }
}

/// Counters of one subscription.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Packets forwarded to the subscriber.
    pub forwarded_packets: u64,
    /// Payload bytes (the RTP header is rewritten per subscription and not counted).
    pub forwarded_bytes: u64,
    /// Packets of the publication this subscription did not forward, by reason.
    pub drops: DropCounts,
}

/// Counters of one publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicationStats {
    /// Who publishes it.
    pub publisher: ParticipantId,
    /// Its id.
    pub publication: PublicationId,
    /// Every RTP packet that arrived for the publication, dropped or not.
    pub received_packets: u64,
    /// Payload bytes of `received_packets`.
    pub received_bytes: u64,
    /// Keyframe requests sent upstream (after throttling).
    pub keyframes_requested: u64,
    /// Keyframes seen (codecs with keyframe detection only; one per frame).
    pub keyframes_received: u64,
    /// How many times the publication's packets switched to a new SSRC.
    pub incarnation_changes: u64,
    /// Packets dropped before any subscription saw them (duplicates, stale incarnation, …).
    pub dropped: DropCounts,
    /// Subscriptions it has.
    pub subscriptions: usize,
}

/// Counters of the room that belong to no publication or subscription.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// RTP packets for publications the room does not know, counted under
    /// `DropReason::UnknownPublication`.
    pub dropped: DropCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let mut d = DropCounts::default();
        d.add(DropReason::TooOld);
        d.add(DropReason::TooOld);
        d.add(DropReason::WaitingForKeyframe);
        assert_eq!(d.get(DropReason::TooOld), 2);
        assert_eq!(d.get(DropReason::WaitingForKeyframe), 1);
        assert_eq!(d.get(DropReason::Duplicate), 0);
        assert_eq!(d.total(), 3);
        assert_eq!(d.iter().count(), DropReason::ALL.len());
    }
}
