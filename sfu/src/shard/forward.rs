//! Applying a room's outputs on the shard: publishers' RTP into the core, each forwarded
//! packet written to the subscriber's sender with the header the core rewrote, keyframe
//! requests to publishers, and subscribers' feedback back into the core.

use std::time::Instant;

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use tracing::{debug, trace};

use super::ShardEvent;
use super::peer::Stream;
use super::routing::RoomKey;
use super::worker::{Timer, Worker};
use crate::core::{Input, Output, ParticipantId, PublicationId, RtpPacket, Ssrc, SubscriptionId};
use crate::transport::interceptors::{carries_playout_delay, playout_delay_payload};
use crate::transport::{ClockAnchor, from_wire, is_plausible_sampling, to_wire};

impl Worker {
    /// One packet of a publisher's stream into its room.
    /// `reported` is the latest sender report of the packet's stream, which says when its
    /// media was sampled (see `transport::reports`).
    pub(super) fn route_rtp(
        &mut self,
        stream: Stream,
        packet: rtp::Packet,
        reported: Option<ClockAnchor>,
        now: Instant,
    ) {
        let Stream {
            publication,
            layer,
            audio_level,
        } = stream;
        let Some((room, clock_rate)) = self
            .publications
            .get(&publication)
            .map(|slot| (slot.room, slot.codec.clock_rate))
        else {
            return;
        };
        let Some(slot) = self.rooms.get_mut(&room) else {
            return;
        };
        let sampled_at = reported
            .and_then(|anchor| anchor.instant_of(packet.header.timestamp, clock_rate))
            .filter(|at| is_plausible_sampling(*at, now));
        let mut packet = from_wire(packet, audio_level);
        packet.sampled_at = sampled_at;
        let input = Input::Rtp {
            publication,
            layer,
            packet,
        };
        // RTP never fails: what cannot be forwarded is a counted drop in the core.
        let _ = slot.core.handle_input(now, input);
        self.drain_room(room, now);
    }

    /// Carries out the room's outputs, then refreshes its timer.
    pub(super) fn drain_room(&mut self, room: RoomKey, now: Instant) {
        loop {
            let Some(slot) = self.rooms.get_mut(&room) else {
                return;
            };
            let Some(output) = slot.core.poll_output() else {
                break;
            };
            match output {
                Output::Forward {
                    subscription,
                    packet,
                    ..
                } => self.forward(subscription, packet, now),
                Output::RequestKeyframe {
                    publication, ssrc, ..
                } => self.request_keyframe(publication, ssrc, now),
                Output::LayersChanged {
                    subscription,
                    subscriber,
                    current,
                    target,
                    reason,
                } => self.tell(
                    subscriber,
                    ShardEvent::LayersChanged {
                        subscription,
                        current,
                        target,
                        reason,
                    },
                ),
                Output::PublisherLayers {
                    publication,
                    publisher,
                    active,
                } => self.tell(
                    publisher,
                    ShardEvent::PublisherLayers {
                        publication,
                        active,
                    },
                ),
                Output::ActiveSpeakers { speakers } => {
                    if let Some(slot) = self.rooms.get_mut(&room) {
                        slot.speakers.clone_from(&speakers);
                    }
                    self.tell_room(room, &ShardEvent::ActiveSpeakers(speakers));
                }
                Output::PublicationStalled {
                    publication,
                    publisher,
                } => self.tell_room(
                    room,
                    &ShardEvent::Liveness {
                        publication,
                        publisher,
                        stalled: true,
                    },
                ),
                Output::PublicationResumed {
                    publication,
                    publisher,
                } => self.tell_room(
                    room,
                    &ShardEvent::Liveness {
                        publication,
                        publisher,
                        stalled: false,
                    },
                ),
                Output::Probe {
                    subscriber,
                    bits_per_second,
                    duration,
                } => self.probe(subscriber, bits_per_second, duration, now),
                Output::RepairHorizon {
                    subscriber,
                    ssrc,
                    sequence_number,
                    ..
                } => self.repair_horizon(subscriber, ssrc, sequence_number, now),
                Output::PathCongested { subscriber } => self.path_congested(subscriber, now),
            }
        }
        let Some(slot) = self.rooms.get_mut(&room) else {
            return;
        };
        let (previous, next) = (slot.timeout, slot.core.poll_timeout());
        slot.timeout = next;
        self.set_timer(Timer::Room(room), previous, next);
    }

    /// Queues `event` for every member of `room`.
    fn tell_room(&mut self, room: RoomKey, event: &ShardEvent) {
        let members: Vec<ParticipantId> = self
            .rooms
            .get(&room)
            .map(|slot| slot.participants.iter().copied().collect())
            .unwrap_or_default();
        for member in members {
            self.tell(member, event.clone());
        }
    }

    /// Queues `event` for `participant`'s owner; a full queue drops it (counted).
    pub(super) fn tell(&mut self, participant: ParticipantId, event: ShardEvent) {
        if let Some(member) = self.members.get(&participant)
            && member.events.try_send(event).is_err()
        {
            self.stats.events_dropped += 1;
        }
    }

    fn forward(&mut self, subscription: SubscriptionId, packet: RtpPacket, now: Instant) {
        let Some(&(key, sender, _)) = self.subscriptions.get(&subscription) else {
            self.stats.forward_rejected += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            self.stats.forward_rejected += 1;
            return;
        };
        let (sampled_at, timestamp, level) =
            (packet.sampled_at, packet.timestamp, packet.audio_level);
        let mut wire = to_wire(packet);
        if let Some(leg) = peer.legs.get_mut(&subscription) {
            // Once per frame: the anchor is a (timestamp, instant) pair of a linear clock.
            match sampled_at {
                Some(at) if leg.anchored != Some(timestamp) => {
                    leg.anchored = Some(timestamp);
                    peer.controls.clocks.set(
                        leg.ssrc.0,
                        ClockAnchor {
                            rtp_timestamp: timestamp,
                            at,
                        },
                    );
                }
                None if leg.anchored.take().is_some() => peer.controls.clocks.clear(leg.ssrc.0),
                _ => {}
            }
            if let Some(id) = leg.playout_delay
                && carries_playout_delay(leg.sent)
                && let Some(payload) = playout_delay_payload(self.config.playout_delay_ms)
                && let Err(err) = wire.header.set_extension(id, payload)
            {
                trace!(%subscription, %err, "playout delay extension");
            }
            // RFC 6464: the level in the low 7 bits; the voice-activity bit is not kept.
            if let (Some(id), Some(level)) = (leg.audio_level, level)
                && let Err(err) = wire.header.set_extension(id, audio_level_payload(level))
            {
                trace!(%subscription, %err, "audio level extension");
            }
            leg.sent += 1;
        }
        let written = peer
            .pc
            .rtp_sender(sender)
            .map(|mut sender| sender.write_rtp(now, wire));
        match written {
            Some(Ok(())) => self.stats.forwarded += 1,
            Some(Err(err)) => {
                self.stats.forward_rejected += 1;
                trace!(%subscription, %err, "write_rtp");
            }
            None => self.stats.forward_rejected += 1,
        }
        self.mark_dirty(key);
    }

    fn request_keyframe(&mut self, publication: PublicationId, ssrc: Ssrc, now: Instant) {
        // Ingest publications have no connection to ask: new subscribers start from their
        // cached keyframe instead.
        let Some(key) = self
            .publications
            .get(&publication)
            .and_then(|slot| slot.peer)
        else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(&receiver) = peer.receivers.get(&publication) else {
            // No packet has arrived yet: the first one starts with what the encoder sends.
            return;
        };
        if let Some(mut receiver) = peer.pc.rtp_receiver(receiver) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc.0,
            };
            if let Err(err) = receiver.write_rtcp(now, vec![Box::new(pli)]) {
                debug!(%publication, %err, "keyframe request");
            }
        }
        self.mark_dirty(key);
    }
}

/// Every RFC 6464 payload (the level, voice-activity bit clear), so writing one to a forwarded
/// packet shares a static byte instead of allocating.
static AUDIO_LEVELS: [u8; 128] = {
    let mut levels = [0u8; 128];
    let mut level = 0;
    while level < 128 {
        levels[level] = level as u8;
        level += 1;
    }
    levels
};

fn audio_level_payload(level: u8) -> bytes::Bytes {
    let level = usize::from(level & 0x7f);
    bytes::Bytes::from_static(&AUDIO_LEVELS[level..=level])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audio_level_payload_is_its_seven_bit_level() {
        assert_eq!(&audio_level_payload(3)[..], [3]);
        assert_eq!(&audio_level_payload(127)[..], [127]);
        assert_eq!(
            &audio_level_payload(0x80 | 5)[..],
            [5],
            "the V bit is dropped"
        );
    }
}
