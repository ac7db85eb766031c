//! One published track: its current source (SSRC), the packets' parse-once metadata,
//! the fan-out to its subscriptions and the throttled keyframe requests to its publisher.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use super::dedup::SeenWindow;
use super::feedback::KeyframeThrottle;
use super::ids::{ParticipantId, PublicationId, Ssrc, SubscriptionId};
use super::packet::{Codec, DropReason, MediaKind, PacketMeta, RtpPacket};
use super::rewrite::seq::SeqUnwrapper;
use super::rewrite::timestamp::{ExtTs, TsUnwrapper};
use super::room::Output;
use super::stats::{DropCounts, PublicationStats};
use super::subscription::{Decision, Subscription};

/// For this long after a source switch, packets of the replaced SSRC are taken to be
/// late stragglers (dropped) rather than the publisher switching back, which would make
/// every subscriber wait for yet another keyframe.
const STALE_SOURCE_GRACE: Duration = Duration::from_secs(2);

/// Bounds of the keyframe cache: a GOP longer than this (a 10 s GOP at 8 Mb/s is ≈ 7000
/// packets) is not cached whole, and new subscribers wait for the next keyframe instead.
const KEYFRAME_CACHE_MAX_PACKETS: usize = 4096;
const KEYFRAME_CACHE_MAX_BYTES: usize = 8 * 1024 * 1024;

/// The packets since the last keyframe of the current source, for instant join.
#[derive(Clone, Debug, Default)]
struct KeyframeCache {
    packets: Vec<(PacketMeta, RtpPacket)>,
    bytes: usize,
    /// Set when the cache overflowed or holds no keyframe: nothing to replay until the
    /// next keyframe starts it again.
    invalid: bool,
}

impl KeyframeCache {
    fn record(&mut self, meta: &PacketMeta, packet: &RtpPacket, keyframe_start: bool) {
        let other_source = self
            .packets
            .first()
            .is_some_and(|(m, _)| m.source != meta.source);
        if keyframe_start || other_source {
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

/// One SSRC's packets of the publication.
#[derive(Clone, Debug)]
struct Source {
    id: u64,
    ssrc: Ssrc,
    seq: SeqUnwrapper,
    ts: TsUnwrapper,
    seen: SeenWindow,
}

#[derive(Clone, Debug)]
pub(crate) struct Publication {
    pub id: PublicationId,
    pub publisher: ParticipantId,
    kind: MediaKind,
    codec: Codec,
    clock_rate: u32,
    source: Option<Source>,
    /// The SSRC the current source replaced, and when.
    replaced: Option<(Ssrc, Instant)>,
    next_source_id: u64,
    /// A Vec, not a map: a publication has few subscriptions and the hot path iterates
    /// all of them.
    pub subscriptions: Vec<Subscription>,
    throttle: KeyframeThrottle,
    last_keyframe: Option<(u64, ExtTs)>,
    received_packets: u64,
    received_bytes: u64,
    keyframes_requested: u64,
    keyframes_received: u64,
    source_changes: u64,
    dropped: DropCounts,
    keyframe_cache: Option<KeyframeCache>,
}

impl Publication {
    pub fn new(
        id: PublicationId,
        publisher: ParticipantId,
        kind: MediaKind,
        codec: Codec,
        clock_rate: u32,
        keyframe_request_interval: Duration,
    ) -> Self {
        Publication {
            id,
            publisher,
            kind,
            codec,
            clock_rate,
            source: None,
            replaced: None,
            next_source_id: 0,
            subscriptions: Vec::new(),
            throttle: KeyframeThrottle::new(keyframe_request_interval),
            last_keyframe: None,
            received_packets: 0,
            received_bytes: 0,
            keyframes_requested: 0,
            keyframes_received: 0,
            source_changes: 0,
            dropped: DropCounts::default(),
            keyframe_cache: None,
        }
    }

    /// Enables the cache of packets since the last keyframe (instant join).
    pub fn with_keyframe_cache(mut self, enabled: bool) -> Self {
        self.keyframe_cache = enabled.then(KeyframeCache::default);
        self
    }

    /// Starts the subscription `id` from the cached packets since the last keyframe, so it
    /// shows a picture at once; returns false when there was nothing to replay.
    pub fn replay_cached(
        &mut self,
        now: Instant,
        id: SubscriptionId,
        outputs: &mut VecDeque<Output>,
    ) -> bool {
        let Some(cache) = &self.keyframe_cache else {
            return false;
        };
        let Some(subscription) = self.subscriptions.iter_mut().find(|s| s.id == id) else {
            return false;
        };
        if cache.packets.is_empty() {
            return false;
        }
        for (meta, packet) in &cache.packets {
            if let Decision::Send(rewrite) =
                subscription.decide(meta, packet.payload.len(), now, self.clock_rate)
            {
                outputs.push_back(Output::Forward {
                    subscription: subscription.id,
                    subscriber: subscription.subscriber,
                    packet: rewrite.apply(packet),
                });
            }
        }
        debug!(publication = %self.id, subscription = %id, packets = cache.packets.len(), "replayed since keyframe");
        true
    }

    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    pub fn subscription(&self, id: SubscriptionId) -> Option<&Subscription> {
        self.subscriptions.iter().find(|s| s.id == id)
    }

    pub fn remove_subscription(&mut self, id: SubscriptionId) -> Option<Subscription> {
        let index = self.subscriptions.iter().position(|s| s.id == id)?;
        Some(self.subscriptions.remove(index))
    }

    /// Parses `packet` once, lets every subscription decide on it and queues the
    /// forwards (and a keyframe request if a subscription is still waiting for one).
    pub fn handle_rtp(&mut self, now: Instant, packet: &RtpPacket, outputs: &mut VecDeque<Output>) {
        let meta = match self.ingest(now, packet) {
            Ok(meta) => meta,
            Err(reason) => {
                trace!(publication = %self.id, ssrc = %packet.ssrc, %reason, "drop");
                self.dropped.add(reason);
                return;
            }
        };
        if let Some(cache) = &mut self.keyframe_cache {
            let keyframe_start = meta.start_point && self.codec.detects_keyframes();
            cache.record(&meta, packet, keyframe_start);
        }
        let mut waiting = false;
        for subscription in &mut self.subscriptions {
            match subscription.decide(&meta, packet.payload.len(), now, self.clock_rate) {
                Decision::Send(rewrite) => outputs.push_back(Output::Forward {
                    subscription: subscription.id,
                    subscriber: subscription.subscriber,
                    packet: rewrite.apply(packet),
                }),
                Decision::Drop(DropReason::WaitingForKeyframe) => waiting = true,
                Decision::Drop(_) => {}
            }
        }
        // A waiting subscriber asks again (throttled) so that a lost PLI cannot leave it
        // frozen; otherwise a request deferred while the SSRC was unknown may go now.
        let request = if waiting {
            self.request_keyframe(now)
        } else {
            self.poll_keyframe_request(now)
        };
        outputs.extend(request);
    }

    /// Asks the publisher for a keyframe, through the throttle. Returns the request to
    /// send now, if any; audio publications never ask.
    pub fn request_keyframe(&mut self, now: Instant) -> Option<Output> {
        if self.kind != MediaKind::Video {
            return None;
        }
        let Some(ssrc) = self.ssrc() else {
            self.throttle.defer();
            return None;
        };
        self.throttle
            .request(now)
            .then(|| self.keyframe_request(ssrc))
    }

    /// Sends a remembered keyframe request whose throttle window has ended.
    pub fn poll_keyframe_request(&mut self, now: Instant) -> Option<Output> {
        let ssrc = self.ssrc()?;
        if self.kind != MediaKind::Video || !self.throttle.poll(now) {
            return None;
        }
        Some(self.keyframe_request(ssrc))
    }

    /// When `poll_keyframe_request` has something to send.
    pub fn timeout(&self) -> Option<Instant> {
        self.ssrc()?;
        self.throttle.deadline()
    }

    pub fn stats(&self) -> PublicationStats {
        PublicationStats {
            publisher: self.publisher,
            publication: self.id,
            received_packets: self.received_packets,
            received_bytes: self.received_bytes,
            keyframes_requested: self.keyframes_requested,
            keyframes_received: self.keyframes_received,
            source_changes: self.source_changes,
            dropped: self.dropped,
            subscriptions: self.subscriptions.len(),
        }
    }

    fn ssrc(&self) -> Option<Ssrc> {
        self.source.as_ref().map(|s| s.ssrc)
    }

    fn keyframe_request(&mut self, ssrc: Ssrc) -> Output {
        self.keyframes_requested += 1;
        debug!(publication = %self.id, %ssrc, "keyframe request");
        Output::RequestKeyframe {
            publication: self.id,
            publisher: self.publisher,
            ssrc,
        }
    }

    fn ingest(&mut self, now: Instant, packet: &RtpPacket) -> Result<PacketMeta, DropReason> {
        self.received_packets += 1;
        self.received_bytes += packet.payload.len() as u64;
        let source = self.source_for(now, packet.ssrc)?;
        let seq = source.seq.unwrap(packet.sequence_number);
        let ts = source.ts.unwrap(packet.timestamp);
        source.seen.insert(seq)?;
        let meta = PacketMeta {
            source: source.id,
            seq,
            ts,
            start_point: self.codec.is_start_point(&packet.payload),
        };
        if meta.start_point {
            self.throttle.keyframe_arrived();
            // A keyframe spans several packets (and H.264 often sends SPS/PPS first):
            // count it once per frame.
            if self.codec.detects_keyframes() && self.last_keyframe != Some((meta.source, ts)) {
                self.keyframes_received += 1;
                self.last_keyframe = Some((meta.source, ts));
            }
        }
        Ok(meta)
    }

    fn source_for(&mut self, now: Instant, ssrc: Ssrc) -> Result<&mut Source, DropReason> {
        let current = self.source.as_ref().map(|s| s.ssrc);
        if current != Some(ssrc) {
            if let Some((replaced, at)) = self.replaced
                && replaced == ssrc
                && now.saturating_duration_since(at) < STALE_SOURCE_GRACE
            {
                return Err(DropReason::StaleSource);
            }
            if let Some(current) = current {
                debug!(publication = %self.id, from = %current, to = %ssrc, "source change");
                self.source_changes += 1;
                self.replaced = Some((current, now));
            }
            let id = self.next_source_id;
            self.next_source_id += 1;
            self.source = Some(Source {
                id,
                ssrc,
                seq: SeqUnwrapper::default(),
                ts: TsUnwrapper::default(),
                seen: SeenWindow::default(),
            });
        }
        Ok(self
            .source
            .as_mut()
            .expect("invariant: the source was just checked or created"))
    }
}
