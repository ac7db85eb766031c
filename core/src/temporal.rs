//! Temporal-layer selection of one subscription (VP8 with TID, e.g. Chrome's L1T3): which
//! frames of the spatial layer being forwarded are sent, and where the temporal layer may
//! change.
//!
//! Decisions are made per frame (by RTP timestamp) on the first packet seen of it, and every
//! later packet of that frame gets the same answer, so a frame is never forwarded in part.
//! - Down: at the next new frame. Dropping higher layers never breaks decoding: no lower-layer
//!   frame references a higher one.
//! - Up by one layer, from `current` to `current + 1`: only at a frame of that layer with the
//!   layer-sync bit (Y) set. Y says the frame depends on base-layer frames only, which the
//!   subscriber has; a later frame of that layer references this one or lower layers, all
//!   forwarded from here on. A plain TID 0 frame is *not* a switching point: after it, a
//!   TL1/TL2 frame may still reference a TL1/TL2 frame from before it, which was dropped.
//!   Jumping two layers at a TL2 sync frame is not one either: it would also start TL1, whose
//!   next frames may reference a dropped TL1 frame.
//! - Up to the target at once: at a keyframe (it resets every reference).

use std::collections::VecDeque;

use super::rewrite::timestamp::ExtTs;

/// The temporal layers Sluice selects among (VP8 L1T3: TID 0, 1, 2).
pub(crate) const TEMPORAL_LAYERS: u8 = 3;
/// The highest temporal layer: "all of them".
pub(crate) const TOP_TEMPORAL_LAYER: u8 = TEMPORAL_LAYERS - 1;

/// Frame decisions remembered, so late packets of a frame follow its first one.
const RECENT_FRAMES: usize = 32;

/// Frames of the next layer up seen without the layer-sync bit while an up-switch waits; then
/// a keyframe is asked for. Some encoders never set Y, and their subscribers would otherwise
/// stay at the lower frame rate until the next natural keyframe (with browsers: until loss).
/// Chrome sets Y often, so its up-switches complete well before this (ADR 0015); 12 frames of
/// the next layer are 1.6 s of TL1 or 0.8 s of TL2 in L1T3 at 30 fps.
const SYNC_WAIT_FRAMES: u8 = 12;

/// What happens to one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TemporalDecision {
    pub forward: bool,
    /// The current temporal layer changed at this packet's frame.
    pub switched: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct TemporalSelector {
    target: u8,
    current: u8,
    /// A frame with a TID was seen on the current incarnation: the stream has temporal layers.
    layered: bool,
    newest_frame: Option<ExtTs>,
    recent: VecDeque<(ExtTs, bool)>,
    /// Frames of layer `current + 1` without Y since the up-switch began waiting.
    unsynced_frames: u8,
}

impl Default for TemporalSelector {
    fn default() -> Self {
        TemporalSelector {
            target: TOP_TEMPORAL_LAYER,
            current: TOP_TEMPORAL_LAYER,
            layered: false,
            newest_frame: None,
            recent: VecDeque::new(),
            unsynced_frames: 0,
        }
    }
}

impl TemporalSelector {
    pub(crate) fn target(&self) -> u8 {
        self.target
    }

    /// The highest temporal layer forwarded; all of them while the stream has none.
    pub(crate) fn current(&self) -> u8 {
        if self.layered {
            self.current
        } else {
            TOP_TEMPORAL_LAYER
        }
    }

    pub(crate) fn set_target(&mut self, target: u8) {
        let target = target.min(TOP_TEMPORAL_LAYER);
        if target != self.target {
            self.unsynced_frames = 0;
        }
        self.target = target;
    }

    /// An up-switch has seen [`SYNC_WAIT_FRAMES`] frames of the next layer without a sync
    /// frame among them: only a keyframe will move it.
    pub(crate) fn wants_keyframe(&self) -> bool {
        self.layered && self.target > self.current && self.unsynced_frames >= SYNC_WAIT_FRAMES
    }

    /// A new incarnation starts at a keyframe: every temporal layer up to the target can follow.
    /// `layered`: its first packet carries a TID.
    pub(crate) fn start_incarnation(&mut self, layered: bool) {
        self.current = self.target;
        self.layered = layered;
        self.newest_frame = None;
        self.recent.clear();
        self.unsynced_frames = 0;
    }

    /// Decides about a packet of the current incarnation with temporal layer `tid`, in the frame
    /// with timestamp `ts`; `layer_sync` is its Y bit, `keyframe` whether it starts a keyframe.
    pub(crate) fn decide(
        &mut self,
        ts: ExtTs,
        tid: u8,
        layer_sync: bool,
        keyframe: bool,
    ) -> TemporalDecision {
        self.layered = true;
        if let Some(&(_, forward)) = self.recent.iter().rev().find(|(frame, _)| *frame == ts) {
            return TemporalDecision {
                forward,
                switched: false,
            };
        }
        let before = self.current;
        // Only a frame newer than every one decided is "the next frame"; a late frame must
        // not move the layer (it is not where the stream is now).
        if self.newest_frame.is_none_or(|newest| ts > newest) {
            self.newest_frame = Some(ts);
            if keyframe || self.target < self.current {
                self.current = self.target;
            } else if self.target > self.current && tid == self.current + 1 {
                if layer_sync {
                    self.current = tid;
                } else {
                    self.unsynced_frames = self.unsynced_frames.saturating_add(1);
                }
            }
            if self.current != before {
                self.unsynced_frames = 0;
            }
        }
        let forward = tid <= self.current;
        if self.recent.len() == RECENT_FRAMES {
            self.recent.pop_front();
        }
        self.recent.push_back((ts, forward));
        TemporalDecision {
            forward,
            switched: self.current != before,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chrome's L1T3 pattern: TIDs 0 2 1 2, repeating.
    const PATTERN: [u8; 4] = [0, 2, 1, 2];

    /// A layered incarnation started on temporal 0, now asked for `target`.
    fn climbing_from_base(target: u8) -> TemporalSelector {
        let mut s = TemporalSelector::default();
        s.set_target(0);
        s.start_incarnation(true);
        s.set_target(target);
        s
    }

    fn frame(s: &mut TemporalSelector, n: u64, sync: bool) -> TemporalDecision {
        let tid = PATTERN[(n % 4) as usize];
        s.decide(ExtTs(1000 + n * 3000), tid, sync, false)
    }

    #[test]
    fn down_at_the_next_frame_and_all_packets_of_a_frame_alike() {
        let mut s = TemporalSelector::default();
        s.start_incarnation(true);
        assert!(frame(&mut s, 1, false).forward, "TL2 forwarded at first");
        s.set_target(0);
        // The frame already under way keeps its decision.
        assert!(frame(&mut s, 1, false).forward);
        let next = frame(&mut s, 2, false);
        assert_eq!(
            next,
            TemporalDecision {
                forward: false,
                switched: true
            }
        );
        assert_eq!(s.current(), 0);
        assert!(frame(&mut s, 4, false).forward, "base frames always pass");
    }

    #[test]
    fn up_one_layer_at_a_time_on_sync_frames_only() {
        let mut s = climbing_from_base(2);
        assert!(!frame(&mut s, 1, false).forward, "TL2 without sync");
        assert!(!frame(&mut s, 2, false).forward, "TL1 without sync");
        assert!(frame(&mut s, 4, false).forward);
        assert!(!frame(&mut s, 5, true).forward, "TL2 sync cannot skip TL1");
        let up = frame(&mut s, 6, true);
        assert!(up.forward && up.switched);
        assert_eq!(s.current(), 1);
        assert!(frame(&mut s, 9, true).forward, "then TL2 at its sync");
        assert_eq!(s.current(), 2);
    }

    #[test]
    fn an_encoder_that_never_sets_y_gets_a_keyframe_request() {
        let mut s = climbing_from_base(2);
        // TL1 is every fourth frame (2, 6, 10 …): the 12th without Y is frame 46.
        for n in 1..46 {
            frame(&mut s, n, false);
            assert!(!s.wants_keyframe(), "asked after frame {n}");
        }
        frame(&mut s, 46, false);
        assert!(s.wants_keyframe());
        for n in 47..51 {
            frame(&mut s, n, false);
            assert!(s.wants_keyframe(), "still waiting at frame {n}");
        }
        assert_eq!(s.current(), 0);
        let key = s.decide(ExtTs(1000 + 51 * 3000), 0, false, true);
        assert!(key.forward && key.switched);
        assert_eq!(s.current(), 2);
        assert!(!s.wants_keyframe(), "the keyframe answered it");
    }

    #[test]
    fn sync_frames_or_a_lower_target_ask_for_no_keyframe() {
        let mut s = climbing_from_base(1);
        for n in 1..40 {
            frame(&mut s, n, false);
        }
        // Before the 12th unsynced TL1 frame the subscriber settles for the base layer.
        s.set_target(0);
        for n in 40..120 {
            frame(&mut s, n, false);
            assert!(!s.wants_keyframe());
        }
        // Back up, with Y on the TL1 frames (Chrome): one sync frame moves it.
        s.set_target(1);
        for n in 120..200 {
            frame(&mut s, n, true);
            assert!(!s.wants_keyframe());
        }
        assert_eq!(s.current(), 1);
    }

    #[test]
    fn a_keyframe_goes_straight_to_the_target() {
        let mut s = climbing_from_base(2);
        let key = s.decide(ExtTs(9000), 0, false, true);
        assert!(key.forward && key.switched);
        assert_eq!(s.current(), 2);
    }

    #[test]
    fn a_late_frame_does_not_move_the_layer() {
        let mut s = climbing_from_base(1);
        assert!(frame(&mut s, 4, false).forward);
        let late_sync = frame(&mut s, 2, true);
        assert!(!late_sync.forward && !late_sync.switched);
        assert_eq!(s.current(), 0);
    }

    #[test]
    fn a_stream_without_temporal_layers_reports_all() {
        let mut s = TemporalSelector::default();
        s.set_target(0);
        s.start_incarnation(false);
        assert_eq!(s.current(), TOP_TEMPORAL_LAYER);
    }
}
