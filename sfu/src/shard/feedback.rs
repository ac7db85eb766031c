//! What a shard's connections tell the routing core besides media, and what the core tells
//! them back: publishers' sender reports (their capture clocks), subscribers' RTCP (keyframe
//! requests, NACKs, REMB, receiver reports), the send-side estimate and congestion signals of
//! each subscriber connection, and the core's probes, repair horizons and congested paths.

use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use tracing::{debug, info};

use super::peer::{LegState, PeerKey};
use super::worker::Worker;
use crate::core::{Input, MediaKind, ParticipantId, Ssrc, SubscriptionId};
use crate::transport::{ClockAnchor, PeerRole, nacked_packets, remb_bits_per_second, round_trip};

/// How often each subscriber connection's send-side estimate is handed to its room's
/// allocator.
pub(super) const BANDWIDTH_REPORT_INTERVAL: Duration = Duration::from_millis(500);

/// Sender reports of SSRCs without a stream kept per publisher connection, at most.
const UNKNOWN_REPORTED_LIMIT: usize = 16;

impl Worker {
    /// A publisher's RTCP: its sender reports place each stream's RTP clock on ours.
    pub(super) fn publisher_rtcp(
        &mut self,
        key: PeerKey,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
    ) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        for report in packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
        {
            let Some(at) = peer.sender_clock.place(report.ntp_time, now) else {
                continue;
            };
            // A compound report may name any SSRCs: kept for the connection's streams, and
            // for a few others (a report may come before its stream's first packet).
            if !peer.streams.contains_key(&report.ssrc)
                && !peer.reported.contains_key(&report.ssrc)
                && peer.reported.len() >= UNKNOWN_REPORTED_LIMIT
            {
                continue;
            }
            let anchor = ClockAnchor {
                rtp_timestamp: report.rtp_time,
                at,
            };
            if peer.reported.insert(report.ssrc, anchor).is_none() {
                debug!(
                    ssrc = report.ssrc,
                    "first sender report: media placed on the publisher's clock"
                );
            }
        }
    }

    /// A subscriber's RTCP, into its room: PLI/FIR as keyframe requests, the packets its
    /// NACKs name, its REMB, and the round trip a receiver report gives.
    pub(super) fn subscriber_rtcp(
        &mut self,
        key: PeerKey,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
    ) {
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let participant = peer.participant;
        let subscription_of = |ssrc: u32| peer.by_ssrc.get(&Ssrc(ssrc)).copied();
        let mut inputs: Vec<Input> = Vec::new();
        let mut nacked: Vec<(SubscriptionId, u32)> = Vec::new();
        for packet in packets {
            let any = packet.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                inputs.extend(
                    subscription_of(pli.media_ssrc)
                        .map(|subscription| Input::KeyframeRequested { subscription }),
                );
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                inputs.extend(fir.fir.iter().filter_map(|entry| {
                    subscription_of(entry.ssrc)
                        .map(|subscription| Input::KeyframeRequested { subscription })
                }));
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                let lost = nacked_packets(nack);
                if let Some(subscription) = subscription_of(nack.media_ssrc)
                    && lost > 0
                {
                    match nacked.iter_mut().find(|(s, _)| *s == subscription) {
                        Some((_, count)) => *count += lost,
                        None => nacked.push((subscription, lost)),
                    }
                }
            }
        }
        let remb = remb_bits_per_second(packets);
        let round_trip = round_trip(packets, &peer.controls.sent_reports, now);
        self.counted.keyframe_requests_received += inputs.len() as u64;
        self.counted.nacked_packets += nacked
            .iter()
            .map(|(_, packets)| u64::from(*packets))
            .sum::<u64>();
        inputs.extend(
            nacked
                .into_iter()
                .map(|(subscription, packets)| Input::Nacked {
                    subscription,
                    packets,
                }),
        );
        inputs.extend(remb.map(|bits_per_second| Input::Remb {
            subscriber: participant,
            bits_per_second,
        }));
        inputs.extend(round_trip.map(|round_trip| Input::RoundTrip {
            subscriber: participant,
            round_trip,
        }));
        for input in inputs {
            self.subscriber_input(participant, input, now);
        }
    }

    /// The congestion signals a subscriber connection's estimator queued, into its room.
    pub(super) fn drain_congestion(&mut self, key: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if peer.role != PeerRole::Subscriber {
            return;
        }
        let participant = peer.participant;
        let mut inputs = Vec::new();
        while let Ok(congestion) = peer.congestion.try_recv() {
            info!(
                %participant,
                delivered_bps = congestion.delivered_bits_per_second,
                sent_bps = congestion.sent_bits_per_second,
                queue_delay_ms = congestion.queue_delay.as_millis() as u64,
                during_probe = congestion.during_probe,
                "downlink congested"
            );
            inputs.push(if congestion.during_probe {
                Input::ProbeFailed {
                    subscriber: participant,
                    bits_per_second: congestion.sent_bits_per_second,
                }
            } else {
                Input::Congested {
                    subscriber: participant,
                    delivered_bits_per_second: congestion.delivered_bits_per_second,
                }
            });
        }
        for input in inputs {
            self.subscriber_input(participant, input, now);
        }
    }

    /// Every subscriber connection that receives video hands its send-side estimate to its
    /// room's allocator.
    pub(super) fn report_bandwidth(&mut self, now: Instant) {
        let estimates: Vec<(ParticipantId, u64)> = self
            .peers
            .values()
            .filter(|peer| peer.role == PeerRole::Subscriber && peer.connected)
            .filter(|peer| {
                peer.legs.values().any(|leg| {
                    leg.state == LegState::Active && leg.codec.kind() == MediaKind::Video
                })
            })
            .filter_map(|peer| Some((peer.participant, peer.controls.estimate.get()?)))
            .collect();
        for (subscriber, bits_per_second) in estimates {
            self.subscriber_input(
                subscriber,
                Input::Bandwidth {
                    subscriber,
                    bits_per_second,
                },
                now,
            );
        }
    }

    /// An input about `participant`'s downlink, into its room.
    fn subscriber_input(&mut self, participant: ParticipantId, input: Input, now: Instant) {
        let Some(room) = self.members.get(&participant).map(|member| member.room) else {
            return;
        };
        let Some(slot) = self.rooms.get_mut(&room) else {
            return;
        };
        if let Err(err) = slot.core.handle_input(now, input) {
            debug!(%participant, %err, "subscriber feedback");
        }
        self.drain_room(room, now);
    }

    /// The core asks to probe `subscriber`'s path.
    pub(super) fn probe(
        &mut self,
        subscriber: ParticipantId,
        bits_per_second: u64,
        duration: Duration,
        now: Instant,
    ) {
        if let Some(peer) = self.subscriber_peer(subscriber) {
            debug!(%subscriber, bits_per_second, ?duration, "probing the subscriber's path");
            peer.controls.probe.start(now, bits_per_second, duration);
        }
    }

    /// `subscriber`'s path was found congested by a signal its connection cannot see itself.
    pub(super) fn path_congested(&mut self, subscriber: ParticipantId, now: Instant) {
        if let Some(peer) = self.subscriber_peer(subscriber) {
            peer.controls.path.mark_congested(now);
            peer.controls.probe.stop(now);
        }
    }

    /// A subscription's decoder restarts at `sequence_number`: NACKs for earlier packets are
    /// not answered.
    pub(super) fn repair_horizon(
        &mut self,
        subscriber: ParticipantId,
        ssrc: Ssrc,
        sequence_number: u16,
        now: Instant,
    ) {
        if let Some(peer) = self.subscriber_peer(subscriber) {
            peer.controls.horizons.set(now, ssrc.0, sequence_number);
        }
    }

    fn subscriber_peer(
        &mut self,
        participant: ParticipantId,
    ) -> Option<&mut super::peer::ShardPeer> {
        let key = self.members.get(&participant)?.subscriber?;
        self.peers.get_mut(&key).map(|peer| &mut **peer)
    }
}
