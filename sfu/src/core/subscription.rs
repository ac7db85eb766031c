//! One subscriber's view of one publication: when forwarding may start (keyframes) and
//! how each packet's header is rewritten.

use std::time::Instant;

use tracing::{debug, trace};

use super::ids::{ParticipantId, Ssrc, SubscriptionId};
use super::packet::{DropReason, MediaKind, PacketMeta, RtpPacket};
use super::rewrite::numbering::Numbering;
use super::stats::SubscriptionStats;

/// The per-subscription verdict on one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Send(Rewrite),
    Drop(DropReason),
}

/// The header fields that differ per subscription; everything else (payload included)
/// is shared with the publisher's packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rewrite {
    pub ssrc: Ssrc,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
}

impl Rewrite {
    pub fn apply(&self, packet: &RtpPacket) -> RtpPacket {
        RtpPacket {
            ssrc: self.ssrc,
            payload_type: self.payload_type,
            sequence_number: self.sequence_number,
            timestamp: self.timestamp,
            marker: packet.marker,
            payload: packet.payload.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Subscription {
    pub id: SubscriptionId,
    pub subscriber: ParticipantId,
    ssrc: Ssrc,
    payload_type: u8,
    kind: MediaKind,
    numbering: Numbering,
    pub stats: SubscriptionStats,
}

impl Subscription {
    pub fn new(
        id: SubscriptionId,
        subscriber: ParticipantId,
        ssrc: Ssrc,
        payload_type: u8,
        kind: MediaKind,
        initial_seq: u16,
    ) -> Self {
        Subscription {
            id,
            subscriber,
            ssrc,
            payload_type,
            kind,
            numbering: Numbering::new(initial_seq),
            stats: SubscriptionStats::default(),
        }
    }

    /// Decides about one packet of the publication and counts the outcome.
    pub fn decide(
        &mut self,
        meta: &PacketMeta,
        payload_len: usize,
        now: Instant,
        clock_rate: u32,
    ) -> Decision {
        let decision = self.decide_uncounted(meta, now, clock_rate);
        match decision {
            Decision::Send(_) => {
                self.stats.forwarded_packets += 1;
                self.stats.forwarded_bytes += payload_len as u64;
            }
            Decision::Drop(reason) => {
                trace!(subscription = %self.id, %reason, "drop");
                self.stats.drops.add(reason);
            }
        }
        decision
    }

    fn decide_uncounted(&mut self, meta: &PacketMeta, now: Instant, clock_rate: u32) -> Decision {
        if self.numbering.source() != Some(meta.source) {
            if self.kind == MediaKind::Video && !meta.start_point {
                return Decision::Drop(DropReason::WaitingForKeyframe);
            }
            debug!(
                subscription = %self.id,
                source = meta.source,
                reason = if self.numbering.source().is_some() { "source-change" } else { "first-source" },
                "forwarding starts"
            );
            self.numbering.start_source(meta, now, clock_rate);
        }
        match self.numbering.map(meta, now) {
            Ok(numbers) => Decision::Send(Rewrite {
                ssrc: self.ssrc,
                payload_type: self.payload_type,
                sequence_number: numbers.sequence_number,
                timestamp: numbers.timestamp,
            }),
            Err(reason) => Decision::Drop(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rewrite::seq::ExtSeq;
    use crate::core::rewrite::timestamp::ExtTs;

    fn meta(source: u64, seq: u64, start_point: bool) -> PacketMeta {
        PacketMeta {
            source,
            seq: ExtSeq((1 << 32) + seq),
            ts: ExtTs((1 << 40) + seq * 100),
            start_point,
        }
    }

    fn sub(kind: MediaKind) -> Subscription {
        Subscription::new(
            SubscriptionId(1),
            ParticipantId(2),
            Ssrc(77),
            96,
            kind,
            1000,
        )
    }

    #[test]
    fn video_waits_for_a_start_point_of_each_source() {
        let now = Instant::now();
        let mut s = sub(MediaKind::Video);
        assert_eq!(
            s.decide(&meta(0, 1, false), 10, now, 90_000),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        let Decision::Send(rewrite) = s.decide(&meta(0, 2, true), 10, now, 90_000) else {
            panic!("keyframe must start forwarding");
        };
        assert_eq!(
            (rewrite.ssrc, rewrite.payload_type, rewrite.sequence_number),
            (Ssrc(77), 96, 1000)
        );
        assert!(matches!(
            s.decide(&meta(0, 3, false), 10, now, 90_000),
            Decision::Send(_)
        ));
        assert_eq!(
            s.decide(&meta(1, 9, false), 10, now, 90_000),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(s.stats.forwarded_packets, 2);
        assert_eq!(s.stats.forwarded_bytes, 20);
        assert_eq!(s.stats.drops.get(DropReason::WaitingForKeyframe), 2);
    }

    #[test]
    fn audio_starts_at_once() {
        let now = Instant::now();
        let mut s = sub(MediaKind::Audio);
        assert!(matches!(
            s.decide(&meta(0, 1, false), 10, now, 48_000),
            Decision::Send(_)
        ));
        assert!(matches!(
            s.decide(&meta(1, 1, false), 10, now, 48_000),
            Decision::Send(_)
        ));
    }
}
