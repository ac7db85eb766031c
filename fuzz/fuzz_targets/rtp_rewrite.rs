//! Fuzz target: the routing core's reading and rewriting of RTP. A room with one publication
//! (VP8, H.264 or Opus; up to three simulcast layers) and subscriptions that come and go is fed
//! a script of packets (any SSRC, sequence number, timestamp, marker and payload: reordered,
//! duplicated, old, SSRC changes) and subscriber feedback, on a fake clock. Every forwarded
//! packet must belong to a live subscription and carry its SSRC and payload type.
#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_core::{
    Codec, Input, MediaKind, Output, ParticipantId, PublicationId, Room, RoomConfig, RtpPacket,
    Ssrc, SubscriptionId,
};

const PUBLISHER: ParticipantId = ParticipantId(1);
const PUBLICATION: PublicationId = PublicationId(1);

fn subscriber(n: u8) -> ParticipantId {
    ParticipantId(10 + u64::from(n))
}

fn subscription_ssrc(n: u8) -> Ssrc {
    Ssrc(50_000 + u32::from(n))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&setup, mut script)) = data.split_first() else {
        return;
    };
    let (codec, kind, clock_rate) = match setup % 3 {
        0 => (Codec::Vp8, MediaKind::Video, 90_000),
        1 => (Codec::H264, MediaKind::Video, 90_000),
        _ => (Codec::Opus, MediaKind::Audio, 48_000),
    };
    let layers = if kind == MediaKind::Video {
        1 + (setup >> 2) % 3
    } else {
        1
    };
    let mut room = Room::new(RoomConfig {
        random_seed: u64::from(setup),
        ..RoomConfig::default()
    });
    let mut now = Instant::now();
    room.handle_input(
        now,
        Input::PublicationAdded {
            publication: PUBLICATION,
            publisher: PUBLISHER,
            kind,
            codec,
            clock_rate,
            cache_since_keyframe: setup & 0x20 != 0,
            layers,
        },
    )
    .expect("invariant: the first publication is new");
    let mut live: HashSet<u8> = HashSet::new();

    while let [op, a, b, c, d, e, f, g, rest @ ..] = script {
        script = rest;
        let n = a % 4;
        let id = SubscriptionId(u64::from(n));
        let input = match op % 10 {
            0..=4 => {
                let len = usize::from(g % 64).min(script.len());
                let (payload, rest) = script.split_at(len);
                script = rest;
                Input::Rtp {
                    publication: PUBLICATION,
                    layer: a % 4,
                    packet: RtpPacket {
                        ssrc: Ssrc(u32::from(b % 3)),
                        payload_type: 96,
                        sequence_number: u16::from_be_bytes([*c, *d]),
                        timestamp: u32::from_be_bytes([*e, *f, *c, *d]),
                        marker: op & 0x80 != 0,
                        payload: Bytes::copy_from_slice(payload),
                        audio_level: (op & 0x40 != 0).then_some(g & 0x7f),
                        sampled_at: None,
                    },
                }
            }
            5 => {
                now += Duration::from_millis(u64::from(u16::from_be_bytes([*b, *c])));
                if room.poll_timeout().is_some_and(|t| t <= now) {
                    room.handle_timeout(now);
                }
                // What the timers produced was forwarded while the subscriptions it names were
                // live: check it before the next step changes them.
                check_outputs(&mut room, &live);
                continue;
            }
            6 if live.insert(n) => Input::SubscriptionAdded {
                subscription: id,
                subscriber: subscriber(n),
                publication: PUBLICATION,
                ssrc: subscription_ssrc(n),
                payload_type: 100 + n,
                preferred: (*c & 0x80 != 0).then_some((*c & 0x03, None)),
                paused: *c & 0x40 != 0,
            },
            6 => {
                live.remove(&n);
                Input::SubscriptionRemoved { subscription: id }
            }
            7 => Input::SetPreferredLayer {
                subscription: id,
                spatial: b % 4,
                temporal: (c & 0x80 != 0).then_some(c % 4),
            },
            8 => match b % 5 {
                0 => Input::KeyframeRequested { subscription: id },
                1 => Input::Nacked {
                    subscription: id,
                    packets: u32::from_be_bytes([*c, *d, *e, *f]),
                },
                2 => Input::Remb {
                    subscriber: subscriber(n),
                    bits_per_second: u64::from(u32::from_be_bytes([*c, *d, *e, *f])) * 16,
                },
                3 => Input::Bandwidth {
                    subscriber: subscriber(n),
                    bits_per_second: u64::from(u32::from_be_bytes([*c, *d, *e, *f])) * 16,
                },
                _ => Input::SetPaused {
                    subscription: id,
                    paused: c & 1 == 1,
                },
            },
            _ => match b % 3 {
                0 => Input::Congested {
                    subscriber: subscriber(n),
                    delivered_bits_per_second: u64::from(u32::from_be_bytes([*c, *d, *e, *f])),
                },
                1 => Input::RoundTrip {
                    subscriber: subscriber(n),
                    round_trip: Duration::from_micros(u64::from(u32::from_be_bytes([
                        *c, *d, *e, *f,
                    ]))),
                },
                _ => Input::ProbeFailed {
                    subscriber: subscriber(n),
                    bits_per_second: u64::from(u32::from_be_bytes([*c, *d, *e, *f])),
                },
            },
        };
        // Unknown subscriptions are errors the caller ignores, as the runtime does.
        let _ = room.handle_input(now, input);
        check_outputs(&mut room, &live);
    }
});

/// Drains the room's outputs: every forward goes to a live subscription, rewritten to its
/// SSRC and payload type.
fn check_outputs(room: &mut Room, live: &HashSet<u8>) {
    while let Some(output) = room.poll_output() {
        if let Output::Forward {
            subscription,
            packet,
            ..
        } = output
        {
            let n = u8::try_from(subscription.0).expect("invariant: ids are 0..4");
            assert!(live.contains(&n), "forward to a removed subscription");
            assert_eq!(packet.ssrc, subscription_ssrc(n));
            assert_eq!(packet.payload_type, 100 + n);
        }
    }
}
