//! The output sequence-number and timestamp space of one subscription.
//!
//! Within one incarnation the mapping is a constant offset (`out = in + offset`), so input
//! gaps stay gaps (downstream NACK keeps working) and a late packet lands in its own
//! slot. On a incarnation switch, new offsets continue the output right after the highest
//! number sent so far, and the timestamp advances by the time between the two incarnations'
//! frames: by when each was sampled where the packets say (sender-report-aligned, so the
//! receiver's lip sync sees no jump), else by the wall time between their arrivals (a safe
//! offset). The subscriber sees one continuous stream. Packets a subscription drops on purpose (temporal
//! layers it does not receive) are taken out of the output space (see [`DropCompressor`]), so
//! they leave no gap.

use std::time::Instant;

use super::drops::DropCompressor;
use super::seq::ExtSeq;
use super::timestamp::{ExtTs, ticks};
use crate::packet::{DropReason, PacketMeta};

/// Output sequence numbers start far from zero so that `out = in + offset` never
/// underflows; only the low 16 bits reach the wire.
const OUTPUT_SEQ_ORIGIN: u64 = 1 << 32;

/// The wire sequence number and timestamp for one forwarded packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Numbers {
    pub sequence_number: u16,
    pub timestamp: u32,
}

/// How the incarnation currently forwarded maps onto the output space.
#[derive(Clone, Debug)]
struct Mapping {
    incarnation: u64,
    /// Packets of the incarnation older than this were never part of the output.
    first_input_seq: ExtSeq,
    seq_offset: u64,
    ts_offset: u64,
    /// Input sequence numbers of the incarnation dropped on purpose.
    skipped: DropCompressor,
}

#[derive(Clone, Debug)]
pub(crate) struct Numbering {
    initial_seq: u16,
    mapping: Option<Mapping>,
    highest_seq: Option<ExtSeq>,
    highest_ts: Option<ExtTs>,
    /// When the media of `highest_ts` was sampled, if its packet said.
    highest_ts_sampled_at: Option<Instant>,
    last_forward_at: Option<Instant>,
}

impl Numbering {
    pub(crate) fn new(initial_seq: u16) -> Self {
        Numbering {
            initial_seq,
            mapping: None,
            highest_seq: None,
            highest_ts: None,
            highest_ts_sampled_at: None,
            last_forward_at: None,
        }
    }

    /// The incarnation whose packets are mapped, if any has started.
    pub(crate) fn incarnation(&self) -> Option<u64> {
        self.mapping.as_ref().map(|m| m.incarnation)
    }

    /// Whether a stream has started on this numbering (later starts continue it).
    pub(crate) fn started(&self) -> bool {
        self.mapping.is_some() || self.highest_seq.is_some()
    }

    /// Forgets the incarnation mapped (the subscription moved to another publication, whose
    /// incarnations are numbered apart): the next start continues after what was sent.
    pub(crate) fn detach(&mut self) {
        self.mapping = None;
    }

    /// Makes `meta`'s incarnation the one forwarded, starting at `meta` (which must be a
    /// packet the subscriber can start decoding at).
    pub(crate) fn start_incarnation(&mut self, meta: &PacketMeta, now: Instant, clock_rate: u32) {
        let (out_seq, out_ts) = match (self.highest_seq, self.highest_ts, self.last_forward_at) {
            (Some(seq), Some(ts), Some(at)) => {
                let since = match (self.highest_ts_sampled_at, meta.sampled_at) {
                    (Some(last), Some(next)) => next.saturating_duration_since(last),
                    _ => now.saturating_duration_since(at),
                };
                // Timestamps never stand still or go back across a switch.
                let elapsed = ticks(since, clock_rate).max(1);
                (seq.0 + 1, ts.0.saturating_add(elapsed))
            }
            // The first incarnation keeps its timestamps: the publisher's Sender Reports then
            // stay valid for this subscriber's first (and usually only) incarnation.
            _ => (OUTPUT_SEQ_ORIGIN + u64::from(self.initial_seq), meta.ts.0),
        };
        self.mapping = Some(Mapping {
            incarnation: meta.incarnation,
            first_input_seq: meta.seq,
            seq_offset: out_seq.wrapping_sub(meta.seq.0),
            ts_offset: out_ts.wrapping_sub(meta.ts.0),
            skipped: DropCompressor::default(),
        });
    }

    /// A packet of the current incarnation is dropped on purpose: later packets move down so
    /// that it leaves no gap (unless a later one was already numbered).
    pub(crate) fn skip(&mut self, meta: &PacketMeta) {
        if let Some(mapping) = &mut self.mapping
            && mapping.incarnation == meta.incarnation
            && meta.seq >= mapping.first_input_seq
        {
            mapping.skipped.drop_input(meta.seq.0);
        }
    }

    /// Maps a packet of the current incarnation. `meta.incarnation` must be `self.incarnation()`.
    pub(crate) fn map(&mut self, meta: &PacketMeta, now: Instant) -> Result<Numbers, DropReason> {
        let mapping = self
            .mapping
            .as_mut()
            .expect("invariant: map is only called once a incarnation has started");
        debug_assert_eq!(mapping.incarnation, meta.incarnation);
        if meta.seq < mapping.first_input_seq {
            return Err(DropReason::TooOld);
        }
        let skipped = mapping
            .skipped
            .removed_below(meta.seq.0)
            .ok_or(DropReason::TooOld)?;
        let seq = ExtSeq(
            meta.seq
                .0
                .wrapping_add(mapping.seq_offset)
                .wrapping_sub(skipped),
        );
        let ts = ExtTs(meta.ts.0.wrapping_add(mapping.ts_offset));
        self.highest_seq = Some(self.highest_seq.map_or(seq, |h| h.max(seq)));
        if self.highest_ts.is_none_or(|highest| ts >= highest) {
            self.highest_ts = Some(ts);
            self.highest_ts_sampled_at = meta.sampled_at;
        }
        self.last_forward_at = Some(now);
        Ok(Numbers {
            sequence_number: seq.wire(),
            timestamp: ts.wire(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn meta(incarnation: u64, seq: u64, ts: u64) -> PacketMeta {
        PacketMeta {
            incarnation,
            layer: 0,
            seq: ExtSeq((1 << 32) + seq),
            ts: ExtTs((1 << 40) + ts),
            start_point: true,
            vp8: None,
            sampled_at: None,
        }
    }

    fn sampled(mut meta: PacketMeta, at: Instant) -> PacketMeta {
        meta.sampled_at = Some(at);
        meta
    }

    /// A simulcast switch: the new layer's keyframe arrives 70 ms after the last frame of the
    /// old layer, but it was sampled one frame (33 ms) after it. The output timestamp follows
    /// the sampling, so the receiver's sender-report mapping (also by sampling) stays straight.
    #[test]
    fn a_switch_between_sampled_incarnations_advances_by_the_sampling_interval() {
        let t0 = Instant::now();
        let mut n = Numbering::new(10);
        n.start_incarnation(&sampled(meta(0, 0, 0), t0), t0, 90_000);
        assert!(n.map(&sampled(meta(0, 0, 0), t0), t0).is_ok());
        let last = t0 + Duration::from_millis(100);
        assert!(n.map(&sampled(meta(0, 5, 9_000), last), last).is_ok());
        // A reordered older packet does not move the reference.
        assert!(n.map(&sampled(meta(0, 4, 6_000), t0), last).is_ok());
        let keyframe = sampled(meta(1, 77, 123_456), last + Duration::from_millis(33));
        let arrival = last + Duration::from_millis(70);
        n.start_incarnation(&keyframe, arrival, 90_000);
        assert_eq!(
            n.map(&keyframe, arrival).map(|numbers| numbers.timestamp),
            Ok(9_000 + 2_970)
        );
    }

    #[test]
    fn a_switch_falls_back_to_arrival_time_when_a_side_was_not_sampled() {
        let t0 = Instant::now();
        let mut n = Numbering::new(10);
        n.start_incarnation(&meta(0, 0, 0), t0, 90_000);
        assert!(n.map(&meta(0, 0, 0), t0).is_ok());
        let keyframe = sampled(meta(1, 9, 50), t0 + Duration::from_millis(33));
        let arrival = t0 + Duration::from_millis(70);
        n.start_incarnation(&keyframe, arrival, 90_000);
        assert_eq!(
            n.map(&keyframe, arrival).map(|numbers| numbers.timestamp),
            Ok(6_300)
        );
    }

    #[test]
    fn first_incarnation_starts_at_initial_seq_and_keeps_timestamps() {
        let t0 = Instant::now();
        let mut n = Numbering::new(65535);
        n.start_incarnation(&meta(0, 500, 90_000), t0, 90_000);
        assert_eq!(
            n.map(&meta(0, 500, 90_000), t0),
            Ok(Numbers {
                sequence_number: 65535,
                timestamp: 90_000
            })
        );
        assert_eq!(
            n.map(&meta(0, 503, 93_000), t0),
            Ok(Numbers {
                sequence_number: 2,
                timestamp: 93_000
            })
        );
        assert_eq!(n.map(&meta(0, 499, 87_000), t0), Err(DropReason::TooOld));
    }

    #[test]
    fn next_incarnation_continues_after_highest_output() {
        let t0 = Instant::now();
        let mut n = Numbering::new(10);
        n.start_incarnation(&meta(0, 0, 0), t0, 90_000);
        assert!(n.map(&meta(0, 0, 0), t0).is_ok());
        assert!(n.map(&meta(0, 5, 3000), t0).is_ok());
        let later = t0 + Duration::from_millis(100);
        n.start_incarnation(&meta(1, 40_000, 7), later, 90_000);
        assert_eq!(
            n.map(&meta(1, 40_000, 7), later),
            Ok(Numbers {
                sequence_number: 16,
                timestamp: 3000 + 9000
            })
        );
    }

    #[test]
    fn next_incarnation_advances_timestamp_by_at_least_one_tick() {
        let t0 = Instant::now();
        let mut n = Numbering::new(0);
        n.start_incarnation(&meta(0, 0, 100), t0, 90_000);
        assert!(n.map(&meta(0, 0, 100), t0).is_ok());
        n.start_incarnation(&meta(1, 0, 5), t0, 90_000);
        assert_eq!(
            n.map(&meta(1, 0, 5), t0),
            Ok(Numbers {
                sequence_number: 1,
                timestamp: 101
            })
        );
    }
}
