//! Scenario tests of the routing core: synthetic packet streams and a fake clock (a base
//! `Instant` plus durations), never a sleep.

#![allow(clippy::unwrap_used)]

mod errors;
mod fanout;
mod keyframe;
mod keyframe_cache;
mod leave;
mod liveness;
mod moved;
mod pli;
mod prop;
mod remb;
mod reorder;
mod republish;
mod simulcast;
mod speakers;
mod temporal;

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Codec, Input, MediaKind, Output, ParticipantId, PublicationId, Room, RoomConfig, RtpPacket,
    Ssrc, SubscriptionId,
};

pub(super) const INITIAL_SEQ: u16 = 1000;
pub(super) const INTERVAL: Duration = Duration::from_millis(500);

/// VP8: start of partition 0, P=0 (keyframe).
pub(super) const VP8_KEY: &[u8] = &[0x10, 0x00, 0x9d, 0x01, 0x2a, 0xaa];
/// VP8: start of partition 0, P=1 (interframe).
pub(super) const VP8_DELTA: &[u8] = &[0x10, 0x01, 0xbb];
/// VP8: continuation of a frame (S=0).
pub(super) const VP8_CONT: &[u8] = &[0x00, 0x00, 0xcc];

/// H.264 STAP-A with SPS and PPS.
pub(super) const H264_STAP_SPS_PPS: &[u8] = &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce];
/// H.264 FU-A, start of an IDR slice.
pub(super) const H264_FU_IDR_START: &[u8] = &[0x7c, 0x85, 0x88, 0x84];
/// H.264 FU-A, middle of an IDR slice.
pub(super) const H264_FU_IDR_MIDDLE: &[u8] = &[0x7c, 0x05, 0x21];
/// H.264 single NAL, non-IDR slice.
pub(super) const H264_NON_IDR: &[u8] = &[0x41, 0x9a, 0x02];

pub(super) const OPUS: &[u8] = &[0xfc, 0xff, 0xfe];

pub(super) fn packet(ssrc: u32, seq: u16, ts: u32, payload: &'static [u8]) -> RtpPacket {
    RtpPacket {
        ssrc: Ssrc(ssrc),
        payload_type: 96,
        sequence_number: seq,
        timestamp: ts,
        marker: false,
        payload: Bytes::from_static(payload),
        audio_level: None,
        sampled_at: None,
    }
}

pub(super) fn config() -> RoomConfig {
    RoomConfig {
        keyframe_request_interval: INTERVAL,
        initial_output_sequence: Some(INITIAL_SEQ),
        random_seed: 0,
        // Liveness has its own tests (`liveness.rs`); here it would add a timer to every room
        // that received a packet.
        publication_stall_timeout: None,
    }
}

/// The SSRC and payload type the harness negotiates for subscription `n`.
pub(super) fn sub_ssrc(n: u64) -> Ssrc {
    Ssrc(50_000 + n as u32)
}

pub(super) fn sub_pt(n: u64) -> u8 {
    100 + n as u8
}

/// A room plus a fake clock.
pub(super) struct Harness {
    pub room: Room,
    pub now: Instant,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Harness {
            room: Room::new(config()),
            now: Instant::now(),
        }
    }

    pub(crate) fn advance_ms(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
    }

    pub(crate) fn input(&mut self, input: Input) -> Result<(), super::CoreError> {
        self.room.handle_input(self.now, input)
    }

    pub(crate) fn publish(&mut self, publication: u64, publisher: u64, codec: Codec) {
        self.publish_with_cache(publication, publisher, codec, false);
    }

    pub(crate) fn publish_simulcast(&mut self, publication: u64, publisher: u64, layers: u8) {
        self.input(Input::PublicationAdded {
            publication: PublicationId(publication),
            publisher: ParticipantId(publisher),
            kind: MediaKind::Video,
            codec: Codec::Vp8,
            clock_rate: 90_000,
            cache_since_keyframe: false,
            layers,
        })
        .unwrap();
    }

    pub(crate) fn rtp_on(&mut self, publication: u64, layer: u8, packet: RtpPacket) {
        self.input(Input::Rtp {
            publication: PublicationId(publication),
            layer,
            packet,
        })
        .unwrap();
    }

    pub(crate) fn prefer(&mut self, subscription: u64, spatial: u8) {
        self.input(Input::SetPreferredLayer {
            subscription: SubscriptionId(subscription),
            spatial,
            temporal: None,
        })
        .unwrap();
    }

    pub(crate) fn bandwidth(&mut self, subscriber: u64, bits_per_second: u64) {
        self.input(Input::Bandwidth {
            subscriber: ParticipantId(subscriber),
            bits_per_second,
        })
        .unwrap();
    }

    /// A REMB from `subscriber`'s client.
    pub(crate) fn remb(&mut self, subscriber: u64, bits_per_second: u64) {
        self.input(Input::Remb {
            subscriber: ParticipantId(subscriber),
            bits_per_second,
        })
        .unwrap();
    }

    pub(crate) fn timeout(&mut self) {
        self.room.handle_timeout(self.now);
    }

    pub(crate) fn publish_with_cache(
        &mut self,
        publication: u64,
        publisher: u64,
        codec: Codec,
        cache_since_keyframe: bool,
    ) {
        let kind = codec.kind().unwrap_or(MediaKind::Video);
        let clock_rate = if kind == MediaKind::Audio {
            48_000
        } else {
            90_000
        };
        self.input(Input::PublicationAdded {
            publication: PublicationId(publication),
            publisher: ParticipantId(publisher),
            kind,
            codec,
            clock_rate,
            cache_since_keyframe,
            layers: 1,
        })
        .unwrap();
    }

    pub(crate) fn subscribe(&mut self, subscription: u64, subscriber: u64, publication: u64) {
        self.input(Input::SubscriptionAdded {
            subscription: SubscriptionId(subscription),
            subscriber: ParticipantId(subscriber),
            publication: PublicationId(publication),
            ssrc: sub_ssrc(subscription),
            payload_type: sub_pt(subscription),
            preferred: None,
            paused: false,
        })
        .unwrap();
    }

    pub(crate) fn rtp(&mut self, publication: u64, packet: RtpPacket) {
        self.input(Input::Rtp {
            publication: PublicationId(publication),
            layer: 0,
            packet,
        })
        .unwrap();
    }

    pub(crate) fn request_keyframe(&mut self, subscription: u64) {
        self.input(Input::KeyframeRequested {
            subscription: SubscriptionId(subscription),
        })
        .unwrap();
    }

    pub(crate) fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.room.poll_output()).collect()
    }
}

/// The forwarded packets of `outputs`, with their subscription.
pub(super) fn forwards(outputs: &[Output]) -> Vec<(SubscriptionId, RtpPacket)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Forward {
                subscription,
                packet,
                ..
            } => Some((*subscription, packet.clone())),
            _ => None,
        })
        .collect()
}

/// The forwarded packets of `outputs` for one subscription.
/// Whether the core told the transport that a path is congested.
pub(super) fn path_congested(outputs: &[Output]) -> bool {
    outputs
        .iter()
        .any(|o| matches!(o, Output::PathCongested { .. }))
}

pub(super) fn forwards_to(outputs: &[Output], subscription: u64) -> Vec<RtpPacket> {
    forwards(outputs)
        .into_iter()
        .filter(|(s, _)| *s == SubscriptionId(subscription))
        .map(|(_, p)| p)
        .collect()
}

/// The keyframe requests of `outputs`, as (publication, ssrc).
pub(super) fn keyframe_requests(outputs: &[Output]) -> Vec<(PublicationId, Ssrc)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::RequestKeyframe {
                publication, ssrc, ..
            } => Some((*publication, *ssrc)),
            _ => None,
        })
        .collect()
}

pub(super) fn seqs(packets: &[RtpPacket]) -> Vec<u16> {
    packets.iter().map(|p| p.sequence_number).collect()
}
