//! Instant join: the packets since the last keyframe of a publication's current incarnation,
//! replayed to each new subscriber (for publishers that cannot be asked for a keyframe).

use super::packet::{PacketMeta, RtpPacket};

/// Bounds of the keyframe cache: a GOP longer than this (a 10 s GOP at 8 Mb/s is ≈ 7000
/// packets) is not cached whole, and new subscribers wait for the next keyframe instead.
const KEYFRAME_CACHE_MAX_PACKETS: usize = 4096;
const KEYFRAME_CACHE_MAX_BYTES: usize = 8 * 1024 * 1024;

/// The packets since the last keyframe of the current incarnation, for instant join.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyframeCache {
    pub packets: Vec<(PacketMeta, RtpPacket)>,
    bytes: usize,
    /// Set when the cache overflowed or holds no keyframe: nothing to replay until the
    /// next keyframe starts it again.
    invalid: bool,
}

impl KeyframeCache {
    pub(crate) fn record(&mut self, meta: &PacketMeta, packet: &RtpPacket, keyframe_start: bool) {
        let other_incarnation = self
            .packets
            .first()
            .is_some_and(|(m, _)| m.incarnation != meta.incarnation);
        // The packets of one keyframe share its timestamp: a second start point in it (the IDR
        // after an SPS/PPS STAP-A, or another IDR slice) continues it rather than restarting.
        let same_keyframe = self
            .packets
            .first()
            .is_some_and(|(_, first)| first.timestamp == packet.timestamp);
        if (keyframe_start && !same_keyframe) || other_incarnation {
            self.packets.clear();
            self.bytes = 0;
            self.invalid = false;
        }
        if self.invalid || (self.packets.is_empty() && !keyframe_start) {
            return;
        }
        if self.packets.len() >= KEYFRAME_CACHE_MAX_PACKETS
            || self.bytes + packet.payload.len() > KEYFRAME_CACHE_MAX_BYTES
        {
            self.packets.clear();
            self.bytes = 0;
            self.invalid = true;
            return;
        }
        self.bytes += packet.payload.len();
        self.packets.push((*meta, packet.clone()));
    }
}
