//! The media routing of one room, driven as a sans-IO state machine.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use super::ids::{ParticipantId, PublicationId, Ssrc, SubscriptionId};
use super::packet::{Codec, DropReason, MediaKind, RtpPacket};
use super::publication::Publication;
use super::queue_watch::{QueueWatch, Reading};
use super::speakers::SpeakerDetector;
use super::subscription::Subscription;
use super::temporal::TOP_TEMPORAL_LAYER;

pub use super::stats::{DropCounts, PublicationStats, RoomStats, SubscriptionStats};

/// Configuration of a [`Room`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    /// At most one keyframe request per publication goes upstream per interval.
    pub keyframe_request_interval: Duration,
    /// First output sequence number of every subscription; `None` picks a random one
    /// per subscription (RFC 3550 §5.1). Tests pass `Some` to get predictable numbers.
    pub initial_output_sequence: Option<u16>,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            keyframe_request_interval: Duration::from_millis(500),
            initial_output_sequence: None,
        }
    }
}

impl RoomConfig {
    /// Checks the values a deployment could get wrong; `Room::new` trusts its config.
    pub fn validate(&self) -> Result<(), RoomConfigError> {
        let interval = self.keyframe_request_interval;
        if interval.is_zero() || interval > MAX_KEYFRAME_REQUEST_INTERVAL {
            return Err(RoomConfigError::KeyframeRequestInterval(interval));
        }
        Ok(())
    }
}

/// Longer than this, a subscriber whose first request was lost stays frozen too long.
const MAX_KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(10);

/// An invalid [`RoomConfig`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomConfigError {
    /// Zero would forward every PLI upstream (a keyframe storm); too long freezes video.
    #[error("keyframe request interval {0:?} must be above zero and at most 10 s")]
    KeyframeRequestInterval(Duration),
}

/// Something that happened, fed to [`Room::handle_input`].
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    PublicationAdded {
        publication: PublicationId,
        publisher: ParticipantId,
        kind: MediaKind,
        codec: Codec,
        /// RTP clock rate of the codec (90 000 for video, 48 000 for Opus).
        clock_rate: u32,
        /// Keep the packets since the last keyframe and start each new subscriber from
        /// them at once. For publishers that cannot be asked for a keyframe (RTMP encoders).
        cache_since_keyframe: bool,
        /// Simulcast spatial layers (1 without simulcast), lowest resolution first.
        layers: u8,
    },
    /// Also removes the publication's subscriptions.
    PublicationRemoved {
        publication: PublicationId,
    },
    SubscriptionAdded {
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        publication: PublicationId,
        /// The SSRC negotiated towards the subscriber.
        ssrc: Ssrc,
        /// The payload type negotiated towards the subscriber.
        payload_type: u8,
    },
    SubscriptionRemoved {
        subscription: SubscriptionId,
    },
    /// Removes all the participant's publications (with their subscriptions) and all its
    /// subscriptions.
    ParticipantLeft {
        participant: ParticipantId,
    },
    /// One RTP packet received from a publication's publisher, on simulcast `layer`
    /// (0 without simulcast).
    Rtp {
        publication: PublicationId,
        layer: u8,
        packet: RtpPacket,
    },
    /// The subscriber wants at most this spatial layer and, if given, at most this temporal
    /// layer (`None`: all of them).
    SetPreferredLayer {
        subscription: SubscriptionId,
        spatial: u8,
        temporal: Option<u8>,
    },
    /// The subscriber pauses (nothing forwarded, no layer needed) or resumes a subscription.
    SetPaused {
        subscription: SubscriptionId,
        paused: bool,
    },
    /// A subscriber's NACK named this many lost packets of a subscription: heavy loss steps
    /// its video down a layer at once, before the bandwidth estimate reacts.
    Nacked {
        subscription: SubscriptionId,
        packets: u32,
    },
    /// The estimated downlink bandwidth of a subscriber's connection.
    Bandwidth {
        subscriber: ParticipantId,
        bits_per_second: u64,
    },
    /// A subscriber's downlink holds a standing queue and delivers this much: its video
    /// goes at once to what that rate carries, before the bandwidth estimate reacts.
    Congested {
        subscriber: ParticipantId,
        delivered_bits_per_second: u64,
    },
    /// A subscriber's own estimate of its downlink (REMB), from a client without transport-wide
    /// feedback. A REMB never exceeds ~1.5× what the client receives, so as an estimate it
    /// would keep the subscriber where it is; it is read as a signal instead (see `on_remb`).
    Remb {
        subscriber: ParticipantId,
        bits_per_second: u64,
    },
    /// The round trip to a subscriber without transport-wide feedback, from a receiver report
    /// that echoes one of our sender reports. A rise above the recent smallest one is a queue
    /// on its path, seen before its REMB falls (see `on_round_trip`).
    RoundTrip {
        subscriber: ParticipantId,
        round_trip: Duration,
    },
    /// A probe of a subscriber's path built a queue while its media ran at this rate: the
    /// upgrade it tested is off, and what it receives now is all its path is trusted with
    /// for [`CONGESTION_HOLD`].
    ProbeFailed {
        subscriber: ParticipantId,
        bits_per_second: u64,
    },
    /// A subscriber sent PLI or FIR.
    KeyframeRequested {
        subscription: SubscriptionId,
    },
}

/// Something the owner of a [`Room`] must do, taken from [`Room::poll_output`].
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send `packet` to `subscriber` on `subscription`. The header is already rewritten
    /// for this subscription; the payload `Bytes` is shared with the other subscribers.
    Forward {
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        packet: RtpPacket,
    },
    /// Send a PLI to the publisher; `ssrc` is the media SSRC of the layer that needs one.
    RequestKeyframe {
        publication: PublicationId,
        publisher: ParticipantId,
        ssrc: Ssrc,
    },
    /// Tell the subscriber its layers changed: `current` is what it receives, `target` what
    /// it is being moved to (spatial layers, and the temporal layer within them; a stream
    /// without temporal layers reports the top one, 2, as "all").
    LayersChanged {
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        current: Option<u8>,
        target: u8,
        /// The temporal layer forwarded; `None` exactly when `current` is.
        current_temporal: Option<u8>,
        target_temporal: u8,
        reason: LayerReason,
    },
    /// Before moving `subscriber` up, send `bits_per_second` more than its media for
    /// `duration` to see whether its path carries that (a standing queue stops the probe and
    /// arrives as [`Input::Congested`], which cancels the upgrade).
    Probe {
        subscriber: ParticipantId,
        bits_per_second: u64,
        duration: Duration,
    },
    /// `subscriber`'s decoder restarts at `sequence_number` of `ssrc` (the keyframe of a new
    /// layer or source): it will never show a packet sent before it, so repairing those
    /// (a NACK storm for the layer a congested path was losing) would only delay the keyframe
    /// on the same path.
    RepairHorizon {
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        ssrc: Ssrc,
        sequence_number: u16,
    },
    /// `subscriber`'s path was just found congested (by any signal, a failed probe included):
    /// while its queue drains, send it nothing it can do without (no repeated retransmissions,
    /// no probe).
    PathCongested { subscriber: ParticipantId },
    /// Dynacast: tell the publisher which simulcast layers anyone needs (by index).
    PublisherLayers {
        publication: PublicationId,
        publisher: ParticipantId,
        active: Vec<bool>,
    },
    /// Tell everyone in the room who is speaking: participants loudest first, each with its
    /// level (0.0..=1.0, linear amplitude as WebRTC's `audioLevel`: 1.0 = 0 dBov). Emitted only
    /// when the ordered list changes; an empty list once nobody speaks any more.
    ActiveSpeakers { speakers: Vec<(ParticipantId, f32)> },
}

/// Why a subscription's layer target or current layer changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerReason {
    /// The subscriber asked for a different maximum.
    Requested,
    /// The subscriber's bandwidth estimate moved the cap.
    Bandwidth,
    /// The layer stopped (or started) arriving from the publisher.
    LayerUnavailable,
    /// A switch to the target completed on its keyframe.
    Switched,
}

/// Bandwidth allocation keeps this share of the estimate for audio, RTCP and
/// retransmissions.
const BANDWIDTH_HEADROOM_PERCENT: u64 = 85;
/// Audio subscriptions are budgeted at this rate.
const AUDIO_BPS: u64 = 48_000;
/// A higher layer must fit the estimate this long before the subscriber is moved up, so a
/// noisy estimate does not flap between layers (downgrades apply at once).
const UPGRADE_HOLD: Duration = Duration::from_secs(3);
/// Loss is judged over windows this long.
const LOSS_WINDOW: Duration = Duration::from_millis(300);
/// NACKed packets, as a percentage of those sent in a window, that mean congestion. Random
/// loss of a few percent (which NACK/RTX repairs) must stay well below it: at 5 % random loss
/// a 30-packet window reaches 20 % about once in 400 windows.
const LOSS_STEP_DOWN_PERCENT: u64 = 20;
/// Fewer packets than this in a window say nothing about the loss rate.
const LOSS_MIN_PACKETS: u64 = 30;
/// Loss this heavy drops straight to the lowest layer: its keyframe is the only one small
/// enough to cross a path that congested quickly.
const LOSS_TO_LOWEST_PERCENT: u64 = 35;
/// A layer that caused heavy loss is not offered again for this long, whatever the estimate
/// says: after a quick step-down the path is clear again, so GCC may never see the congestion
/// and would otherwise send the subscriber straight back into it.
const LOSS_CEILING_HOLD: Duration = Duration::from_secs(12);
/// A congested path's delivery rate, in percent, that its subscriber's video may use (before
/// the allocator's usual headroom) until [`CONGESTION_HOLD`] has passed: the queue built up
/// so far can only drain while less than the path's rate goes in.
const CONGESTION_BUDGET_PERCENT: u64 = 75;
/// How long a congested path's budget bounds its subscriber's allocation. After it, an upgrade
/// the estimate allows is probed first, so a path still narrow costs a short probe, not a
/// switch into a queue.
const CONGESTION_HOLD: Duration = Duration::from_secs(8);
/// How long a step-down's keyframe may take to cross a congested path (the viewer's picture
/// stops between the shed layer and that keyframe).
const KEYFRAME_CROSSING_LIMIT: Duration = Duration::from_millis(200);
/// A keyframe carries about this much of its layer's stream (VP8 and H.264 keyframes of
/// Chrome's camera layers: 5–10 average frames at 20–30 fps).
const KEYFRAME_SHARE_OF_SECOND: u64 = 3;

/// How well a congestion signal knows the path's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathRate {
    /// What the path delivered while the queue stood (transport-wide feedback): the
    /// allocation can follow it to a temporal layer of the same resolution.
    Measured,
    /// Only an upper bound that may still be well above the path (a REMB, whose first value
    /// after overuse averages the second before the queue: 380 and 548 kbit/s under a 350
    /// cap). A step chosen from it may not drain the queue (f at half rate, chosen at a budget
    /// of 335 kbit/s, sent 320 under that cap and froze 983 ms; h, chosen at 410, froze 759),
    /// so the subscriber goes to the lowest layer, whose keyframe crosses first, and the
    /// allocator climbs from there within the budget after the usual hold, probing first.
    Bounded,
}

/// How long a keyframe of a layer streaming `layer_bps` takes through `path_bps`.
fn keyframe_crossing(layer_bps: u64, path_bps: u64) -> Duration {
    Duration::from_millis(layer_bps * 1_000 / KEYFRAME_SHARE_OF_SECOND / path_bps.max(1))
}

/// An upgrade is probed for this long, starting when it first fits the estimate (so within
/// its [`UPGRADE_HOLD`]), at this share of what it adds: a little more, for the headroom.
/// (125 % of the upgraded rate, less what is sent, was tried for REMB clients, whose probes
/// passed too easily: in the transport-wide test it only made each refused probe of f freeze
/// longer, 267–417 ms against 167–217; decisions §26.)
const PROBE_DURATION: Duration = Duration::from_millis(1_500);
const PROBE_PERCENT: u64 = 110;
/// A REMB client's probe adds this share of the upgraded rate on top of what the upgrade adds.
/// Its estimator never sees the copies (SRTP drops them as replays), only the queue they build
/// in front of the media, and libwebrtc notices a slow queue late: a probe of f at half rate
/// (+10 %, ~15 % over a 350 kbit/s path) passed, and the REMB fell only 2.5 s after the
/// upgrade it let through.
const REMB_PROBE_MARGIN_PERCENT: u64 = 25;
/// A REMB that falls below this share of what its subscriber is sent means congestion. On overuse
/// libwebrtc's receiver lowers its REMB to 85 % of what it receives; after a step-down it
/// grows again towards 150 % of it, so a tighter threshold would read its recovery as
/// more congestion.
const REMB_CONGESTED_PERCENT: u64 = 75;
/// How long after a REMB client's upgrade a REMB fall is taken for that upgrade's failure:
/// libwebrtc's estimator noticed a layer ~15 % over the path 0.4–3.7 s after it came.
const UPGRADE_TRIAL: Duration = Duration::from_secs(5);
/// How long after a probe ended a REMB fall is still taken for its queue draining.
const PROBE_REMB_ECHO: Duration = Duration::from_millis(500);
/// A REMB this much below the one before it is a fall (libwebrtc sends a new REMB at once
/// when its estimate drops by 3 % or more).
const REMB_FALL_PERCENT: u64 = 97;
/// A REMB this far above what is sent means the client saw no queue at this rate.
const REMB_UNCONGESTED_PERCENT: u64 = 130;
/// What an uncongested REMB lets the allocator try, as a multiple of what is sent: the next
/// layer up (h over q, f over h with Chrome's camera layers), never more in one step. From the
/// REMB itself it was f straight from q (a REMB holds its value for seconds after a
/// step-down), and that probe overran a 350 kbit/s path so far that the REMB fell to 40
/// kbit/s and crawled back at 2.5 kbit/s per second.
const REMB_UPGRADE_PERCENT: u64 = 400;
/// How long after a video restarts at a keyframe a queue in the round trip may be that
/// keyframe's burst (the report echoed must have crossed behind it, and comes with the client's
/// next REMB, 200–300 ms on).
const KEYFRAME_BURST: Duration = Duration::from_millis(500);
/// After an upgrade, nothing else moves up (nor is probed) for this long, so a queue it builds
/// shows as its own (and undoes it) rather than as the next probe's failure.
const UPGRADE_SETTLE: Duration = Duration::from_secs(2);
/// After a congestion signal, nothing moves up (nor is probed) for this long: the queue is
/// still draining, and feedback describes the rate before the step-down (a probe started
/// 100 ms after one failed on the REMB's fall that the queue, not the probe, caused).
const CONGESTION_DRAIN: Duration = Duration::from_secs(2);
/// After a loss step-down, the next one waits this long: NACKs for packets already queued on
/// the congested path keep coming for a while and must not cascade.
const LOSS_STEP_DOWN_COOLDOWN: Duration = Duration::from_millis(1500);

/// What one subscriber NACKed against what it was sent, in the current window.
#[derive(Debug, Clone, Copy)]
struct LossWindow {
    started: Instant,
    forwarded_at_start: u64,
    nacked: u64,
    last_step_down: Option<Instant>,
}

/// A control input referenced an id the room does not know, or re-used one.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("unknown publication {0}")]
    UnknownPublication(PublicationId),
    #[error("unknown subscription {0}")]
    UnknownSubscription(SubscriptionId),
    #[error("duplicate publication {0}")]
    DuplicatePublication(PublicationId),
    #[error("duplicate subscription {0}")]
    DuplicateSubscription(SubscriptionId),
}

/// The media routing of one room: which packets go to which subscriber, with which
/// header, and when to ask a publisher for a keyframe.
///
/// A `Room` does no IO and never reads the clock; one task owns it (`&mut`) and drives
/// it with this loop:
///
/// 1. [`handle_input`](Room::handle_input) for every event (a control change from
///    signaling, an RTP packet, a PLI/FIR from a subscriber), with the current time.
/// 2. Then drain [`poll_output`](Room::poll_output) until it returns `None`, sending
///    each [`Output`] (forwards to subscribers, PLIs to publishers). Outputs queue up
///    until drained, so drain after every input (or every batch of inputs).
/// 3. Then sleep until [`poll_timeout`](Room::poll_timeout) (or the next input, if it
///    is `None`), and when that time is reached call
///    [`handle_timeout`](Room::handle_timeout) and drain `poll_output` again.
///    Re-read `poll_timeout` after every `handle_input`/`handle_timeout`: inputs move it.
///
/// ```
/// use std::time::Instant;
/// use sluice_sfu::core::{Input, Output, Room, RoomConfig};
///
/// fn drive(room: &mut Room, input: Input) {
///     if let Err(err) = room.handle_input(Instant::now(), input) {
///         eprintln!("rejected control input: {err}");
///     }
///     while let Some(output) = room.poll_output() {
///         match output {
///             Output::Forward { subscriber, packet, .. } => { /* write packet to subscriber */ }
///             Output::RequestKeyframe { publisher, ssrc, .. } => { /* send PLI for ssrc */ }
///             Output::LayersChanged { subscriber, .. } => { /* tell the subscriber */ }
///             Output::PublisherLayers { publisher, active, .. } => { /* dynacast */ }
///             Output::ActiveSpeakers { speakers } => { /* tell everyone in the room */ }
///             Output::Probe { subscriber, bits_per_second, .. } => { /* probe its path */ }
///             Output::RepairHorizon { subscriber, ssrc, sequence_number, .. } => {
///                 /* ignore the subscriber's NACKs for earlier packets of ssrc */
///             }
///             Output::PathCongested { subscriber } => { /* stop probing, no extra copies */ }
///         }
///     }
///     // then: sleep until room.poll_timeout(), call room.handle_timeout(now), drain again
/// }
/// # drive(&mut Room::new(RoomConfig::default()), Input::ParticipantLeft { participant: sluice_sfu::core::ParticipantId(1) });
/// ```
#[derive(Debug)]
pub struct Room {
    config: RoomConfig,
    publications: HashMap<PublicationId, Publication>,
    /// Where each subscription lives (subscriptions are owned by their publication).
    subscription_index: HashMap<SubscriptionId, PublicationId>,
    outputs: VecDeque<Output>,
    stats: RoomStats,
    loss: HashMap<ParticipantId, LossWindow>,
    /// What each congested subscriber's path delivered, and until when it bounds its
    /// allocation whatever the bandwidth estimate says.
    congestion_budget: HashMap<ParticipantId, (u64, Instant)>,
    /// Until when a subscriber is not moved up (its last probe failed, or its path was just
    /// found congested and is draining).
    upgrades_held: HashMap<ParticipantId, Instant>,
    /// When each subscriber's path was last asked to be probed.
    last_probe: HashMap<ParticipantId, Instant>,
    /// Each REMB client's last REMB: the baseline a fall is measured from.
    last_remb: HashMap<ParticipantId, u64>,
    /// Each REMB client's round trips, watched for a queue.
    queue_watch: HashMap<ParticipantId, QueueWatch>,
    speakers: SpeakerDetector,
}

impl Room {
    pub fn new(config: RoomConfig) -> Self {
        Room {
            config,
            publications: HashMap::new(),
            subscription_index: HashMap::new(),
            outputs: VecDeque::new(),
            stats: RoomStats::default(),
            loss: HashMap::new(),
            congestion_budget: HashMap::new(),
            last_probe: HashMap::new(),
            last_remb: HashMap::new(),
            queue_watch: HashMap::new(),
            upgrades_held: HashMap::new(),
            speakers: SpeakerDetector::default(),
        }
    }

    /// Feeds one input; then drain [`poll_output`](Room::poll_output).
    ///
    /// Returns `Err` only for control inputs that reference unknown or duplicate ids
    /// (the room is left unchanged). Never for RTP: a packet that cannot be forwarded
    /// is a counted drop (see the stats methods).
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), CoreError> {
        match input {
            Input::Rtp {
                publication,
                layer,
                packet,
            } => {
                self.on_rtp(now, publication, layer, &packet);
                Ok(())
            }
            Input::SetPreferredLayer {
                subscription,
                spatial,
                temporal,
            } => {
                let publication = self
                    .subscription_index
                    .get(&subscription)
                    .and_then(|id| self.publications.get_mut(id))
                    .ok_or(CoreError::UnknownSubscription(subscription))?;
                if let Some(target) = publication.subscription_mut(subscription) {
                    target.set_max_layer(spatial);
                    target.set_max_temporal(temporal.unwrap_or(u8::MAX));
                }
                publication.retarget(
                    now,
                    Some(subscription),
                    LayerReason::Requested,
                    &mut self.outputs,
                );
                Ok(())
            }
            Input::SetPaused {
                subscription,
                paused,
            } => {
                let found = self
                    .subscription_index
                    .get(&subscription)
                    .and_then(|id| self.publications.get_mut(id))
                    .is_some_and(|publication| {
                        publication.set_paused(now, subscription, paused, &mut self.outputs)
                    });
                if found {
                    Ok(())
                } else {
                    Err(CoreError::UnknownSubscription(subscription))
                }
            }
            Input::Bandwidth {
                subscriber,
                bits_per_second,
            } => {
                self.allocate(now, subscriber, bits_per_second);
                Ok(())
            }
            Input::Congested {
                subscriber,
                delivered_bits_per_second,
            } => {
                self.on_congested(
                    now,
                    subscriber,
                    delivered_bits_per_second,
                    PathRate::Measured,
                );
                Ok(())
            }
            Input::ProbeFailed {
                subscriber,
                bits_per_second,
            } => {
                self.on_probe_failed(now, subscriber, bits_per_second);
                Ok(())
            }
            Input::Remb {
                subscriber,
                bits_per_second,
            } => {
                self.on_remb(now, subscriber, bits_per_second);
                Ok(())
            }
            Input::RoundTrip {
                subscriber,
                round_trip,
            } => {
                self.on_round_trip(now, subscriber, round_trip);
                Ok(())
            }
            Input::Nacked {
                subscription,
                packets,
            } => {
                let subscriber = self
                    .subscription_index
                    .get(&subscription)
                    .and_then(|id| self.publications.get(id))
                    .and_then(|p| p.subscription(subscription))
                    .map(|s| s.subscriber)
                    .ok_or(CoreError::UnknownSubscription(subscription))?;
                self.on_nacked(now, subscriber, u64::from(packets));
                Ok(())
            }
            Input::PublicationAdded {
                publication,
                publisher,
                kind,
                codec,
                clock_rate,
                cache_since_keyframe,
                layers,
            } => {
                if self.publications.contains_key(&publication) {
                    return Err(CoreError::DuplicatePublication(publication));
                }
                debug!(%publication, %publisher, ?kind, ?codec, "publication added");
                if kind == MediaKind::Audio {
                    self.speakers.add_publication(publication, publisher);
                }
                let interval = self.config.keyframe_request_interval;
                self.publications.insert(
                    publication,
                    Publication::new(
                        publication,
                        publisher,
                        kind,
                        codec,
                        clock_rate,
                        layers,
                        interval,
                    )
                    .with_keyframe_cache(cache_since_keyframe),
                );
                Ok(())
            }
            Input::PublicationRemoved { publication } => {
                if !self.publications.contains_key(&publication) {
                    return Err(CoreError::UnknownPublication(publication));
                }
                self.remove_publication(publication);
                Ok(())
            }
            Input::SubscriptionAdded {
                subscription,
                subscriber,
                publication,
                ssrc,
                payload_type,
            } => self.add_subscription(
                now,
                subscription,
                subscriber,
                publication,
                ssrc,
                payload_type,
            ),
            Input::SubscriptionRemoved { subscription } => {
                let publication = self
                    .subscription_index
                    .remove(&subscription)
                    .ok_or(CoreError::UnknownSubscription(subscription))?;
                if let Some(publication) = self.publications.get_mut(&publication) {
                    publication.remove_subscription(now, subscription, &mut self.outputs);
                }
                debug!(%subscription, "subscription removed");
                Ok(())
            }
            Input::ParticipantLeft { participant } => {
                self.remove_participant(now, participant);
                Ok(())
            }
            Input::KeyframeRequested { subscription } => {
                let publication = self
                    .subscription_index
                    .get(&subscription)
                    .and_then(|id| self.publications.get_mut(id))
                    .ok_or(CoreError::UnknownSubscription(subscription))?;
                self.outputs
                    .extend(publication.subscriber_keyframe_request(now, subscription));
                Ok(())
            }
        }
    }

    /// The next thing to do, if any. Call repeatedly after each `handle_input` and
    /// `handle_timeout` until it returns `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Room::handle_timeout) must be called next (deferred
    /// keyframe requests, the next active speaker ranking while audio levels arrive); `None`
    /// means only a new input can create work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.publications
            .values()
            .filter_map(Publication::timeout)
            .chain(self.speakers.timeout())
            .min()
    }

    /// Does the work that was due at `now` (calling it early is harmless); then drain
    /// [`poll_output`](Room::poll_output).
    pub fn handle_timeout(&mut self, now: Instant) {
        for publication in self.publications.values_mut() {
            publication.handle_timeout(now, &mut self.outputs);
        }
        self.speakers.handle_timeout(now, &mut self.outputs);
    }

    pub fn subscription_stats(&self, id: SubscriptionId) -> Option<SubscriptionStats> {
        let publication = self.publications.get(self.subscription_index.get(&id)?)?;
        publication.subscription(id).map(|s| s.stats)
    }

    pub fn publication_stats(&self, id: PublicationId) -> Option<PublicationStats> {
        self.publications.get(&id).map(Publication::stats)
    }

    /// Counters that belong to no publication (RTP for unknown publications).
    pub fn stats(&self) -> RoomStats {
        self.stats
    }

    /// What each layer of a publication costs up to each temporal layer (tests check the
    /// allocator against it).
    #[cfg(test)]
    pub(crate) fn temporal_bitrates(
        &mut self,
        publication: PublicationId,
        now: Instant,
    ) -> Option<Vec<[u64; super::temporal::TEMPORAL_LAYERS as usize]>> {
        self.publications
            .get_mut(&publication)
            .map(|p| p.temporal_bitrates(now))
    }

    pub fn publication_count(&self) -> usize {
        self.publications.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.subscription_index.len()
    }

    fn on_rtp(&mut self, now: Instant, publication: PublicationId, layer: u8, packet: &RtpPacket) {
        if let Some(level) = packet.audio_level {
            self.speakers.observe(now, publication, level);
        }
        match self.publications.get_mut(&publication) {
            Some(publication) => publication.handle_rtp(now, layer, packet, &mut self.outputs),
            None => {
                tracing::trace!(%publication, "rtp for unknown publication");
                self.stats.dropped.add(DropReason::UnknownPublication);
            }
        }
    }

    fn add_subscription(
        &mut self,
        now: Instant,
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        publication: PublicationId,
        ssrc: Ssrc,
        payload_type: u8,
    ) -> Result<(), CoreError> {
        if self.subscription_index.contains_key(&subscription) {
            return Err(CoreError::DuplicateSubscription(subscription));
        }
        let target = self
            .publications
            .get_mut(&publication)
            .ok_or(CoreError::UnknownPublication(publication))?;
        let initial_seq = self
            .config
            .initial_output_sequence
            .unwrap_or_else(rand::random);
        let new = Subscription::new(
            subscription,
            subscriber,
            ssrc,
            payload_type,
            target.kind(),
            initial_seq,
        );
        target.add_subscription(now, new, &mut self.outputs);
        self.subscription_index.insert(subscription, publication);
        debug!(%subscription, %subscriber, %publication, "subscription added");
        if !target.replay_cached(now, subscription, &mut self.outputs) {
            // A new video subscriber can only start at a keyframe: ask for one on its target
            // layer now rather than wait for the encoder's next periodic keyframe.
            let layer = target.subscription(subscription).map_or(0, |s| s.target());
            self.outputs.extend(target.request_keyframe(now, layer));
        }
        Ok(())
    }

    fn forwarded_to(&self, subscriber: ParticipantId) -> u64 {
        self.publications
            .values()
            .flat_map(|p| &p.subscriptions)
            .filter(|s| s.subscriber == subscriber)
            .map(|s| s.stats.forwarded_packets)
            .sum()
    }

    /// `subscriber`'s loss window (which also remembers its last step-down), opened now if it
    /// has none.
    fn loss_window(&mut self, now: Instant, subscriber: ParticipantId) -> &mut LossWindow {
        let forwarded = self.forwarded_to(subscriber);
        self.loss.entry(subscriber).or_insert(LossWindow {
            started: now,
            forwarded_at_start: forwarded,
            nacked: 0,
            last_step_down: None,
        })
    }

    fn on_nacked(&mut self, now: Instant, subscriber: ParticipantId, packets: u64) {
        let forwarded = self.forwarded_to(subscriber);
        let window = self.loss_window(now, subscriber);
        window.nacked += packets;
        if now.saturating_duration_since(window.started) < LOSS_WINDOW {
            return;
        }
        let sent = forwarded.saturating_sub(window.forwarded_at_start);
        let congested =
            sent >= LOSS_MIN_PACKETS && window.nacked * 100 >= sent * LOSS_STEP_DOWN_PERCENT;
        let cooled = window
            .last_step_down
            .is_none_or(|at| now.saturating_duration_since(at) >= LOSS_STEP_DOWN_COOLDOWN);
        let step_down = congested && cooled;
        let to_lowest = window.nacked * 100 >= sent * LOSS_TO_LOWEST_PERCENT;
        debug!(%subscriber, nacked = window.nacked, sent, step_down, "loss window");
        *window = LossWindow {
            started: now,
            forwarded_at_start: forwarded,
            nacked: 0,
            last_step_down: if step_down {
                Some(now)
            } else {
                window.last_step_down
            },
        };
        if step_down {
            self.step_down(now, subscriber, to_lowest);
        }
    }

    /// A probe of `subscriber`'s path failed while its media ran at `media_bps`: the upgrade it
    /// tested is off, and no upgrade is tried for [`CONGESTION_HOLD`]. Nothing moves down: the
    /// media fitted before the probe, and a switch now would put a keyframe into the queue the
    /// probe left (measured: a failed probe that also stepped h down to q froze 500 ms).
    fn on_probe_failed(&mut self, now: Instant, subscriber: ParticipantId, media_bps: u64) {
        debug!(%subscriber, media_bps, "probe failed");
        // The transport stops the probe (a REMB's fall is news to it) and repeats no repairs
        // into the queue the probe left.
        self.outputs.push_back(Output::PathCongested { subscriber });
        // `last_probe` stays: a REMB falling on within the probe's window is still the probe's
        // queue draining (taken for congestion, it stepped f down to q after a failed probe).
        self.upgrades_held.insert(subscriber, now + CONGESTION_HOLD);
        for subscription in self
            .publications
            .values_mut()
            .flat_map(|p| p.subscriptions.iter_mut())
            .filter(|s| s.subscriber == subscriber)
        {
            subscription.upgrade_candidate = None;
        }
    }

    /// A client's own downlink estimate (REMB). libwebrtc's receiver lets it grow to ~1.5× what
    /// it receives while nothing queues, and drops it to 85 % of what it receives on overuse. So:
    /// a REMB that falls to far below what is sent, congestion (any fall during a probe: the
    /// probe failed); above ~1.3× what is
    /// sent, "not congested at this rate", which says nothing about the next layer up, so the
    /// allocator is told [`REMB_UPGRADE_PERCENT`] of what is sent and the upgrade goes through
    /// the usual hold and probe.
    /// (Without transport-wide feedback the probe's copies show only as the REMB falling.)
    fn on_remb(&mut self, now: Instant, subscriber: ParticipantId, remb: u64) {
        // The REMB covers every stream the client receives, audio too (at low video rates
        // audio is a third of it).
        let sent = self.sent_rate(now, subscriber);
        debug!(%subscriber, remb, sent, "REMB");
        if sent == 0 {
            // Nothing subscribed (or a REMB that arrived after its subscriber left): no
            // baseline is kept for it.
            return;
        }
        let previous = self.last_remb.insert(subscriber, remb);
        let probing = self.probing(now, subscriber);
        // libwebrtc lowers its REMB only on overuse (or to 1.5× what arrives, when that
        // falls). A REMB that merely stays below what is sent is lagging behind an upgrade
        // (it grows by ~8 % a second): read as congestion, it stepped a subscriber straight
        // back down from the layer it had just been given.
        // Chrome may send its first REMB only once it has seen overuse (1.3 s into a stream,
        // 0.7 s after a cap): the first one is measured against what is sent.
        let before = previous.unwrap_or(sent);
        let fell = remb.saturating_mul(100) < before.saturating_mul(REMB_FALL_PERCENT);
        if probing && fell {
            // The media holds still during a probe: the fall is the probe's queue.
            debug!(%subscriber, remb, ?previous, sent, "REMB fell during a probe");
            self.on_probe_failed(now, subscriber, sent);
        } else if fell && remb.saturating_mul(100) < sent.saturating_mul(REMB_CONGESTED_PERCENT) {
            debug!(%subscriber, remb, sent, "REMB below what is sent");
            // On overuse the REMB is 85 % of what arrived over the last second, which still
            // holds the time before the queue: even the REMB itself is above the path at first
            // (a 350 kbit/s cap read 380 and 548 kbit/s), so it is taken only as a bound.
            self.on_bounded_congestion(now, subscriber, remb);
        } else if remb.saturating_mul(100) >= sent.saturating_mul(REMB_UNCONGESTED_PERCENT) {
            self.try_next_layer_up(now, subscriber, sent);
        }
        // In between the REMB is still growing back towards 1.5× what arrives: no news.
    }

    /// Whether `subscriber`'s path is being probed, or was until lately: a queue now is the
    /// probe's (its feedback comes after it ended).
    fn probing(&self, now: Instant, subscriber: ParticipantId) -> bool {
        self.last_probe.get(&subscriber).is_some_and(|at| {
            now.saturating_duration_since(*at) <= PROBE_DURATION + PROBE_REMB_ECHO
        })
    }

    /// A REMB client's round trip. A queue in it, outside a probe, is congestion, known only
    /// to be below what is sent (and below its last REMB); during a probe, the probe failed.
    /// (Measured under a 350 kbit/s cap: a 41 ms round trip 210 ms after the cap, where the
    /// REMB fell 424 ms after it.) A clear one says what an uncongested REMB says: the next
    /// layer up may be probed. The REMB itself says so late: after congestion libwebrtc grows
    /// it a few kbit/s a second, and held it flat for 8 s after a cap was lifted, so upgrades
    /// waiting for it took over 25 s.
    fn on_round_trip(&mut self, now: Instant, subscriber: ParticipantId, round_trip: Duration) {
        let sent = self.sent_rate(now, subscriber);
        if sent == 0 {
            // Nothing subscribed, or a report that arrived after its subscriber left: no watch
            // is kept for it.
            return;
        }
        let reading = self
            .queue_watch
            .entry(subscriber)
            .or_default()
            .on_round_trip(now, round_trip);
        trace!(%subscriber, ?round_trip, ?reading, "round trip");
        let queue = match reading {
            Reading::Queue(queue) if self.keyframe_burst(now, subscriber) => {
                // Without a pacer a keyframe crosses the path as a burst: the queue it leaves
                // for a moment is no congestion (an upgrade's own keyframe would undo it).
                debug!(%subscriber, ?queue, "queue behind a keyframe: not acted on");
                return;
            }
            Reading::Queue(queue) => queue,
            Reading::Clear => {
                self.try_next_layer_up(now, subscriber, sent);
                return;
            }
            Reading::Unsure => return,
        };
        debug!(%subscriber, ?round_trip, ?queue, sent, "queue in the round trip");
        if self.probing(now, subscriber) {
            self.on_probe_failed(now, subscriber, sent);
            return;
        }
        let bound = self
            .last_remb
            .get(&subscriber)
            .map_or(sent, |remb| sent.min(*remb));
        self.on_bounded_congestion(now, subscriber, bound);
    }

    /// Whether a keyframe that restarted one of `subscriber`'s videos went out within
    /// [`KEYFRAME_BURST`].
    fn keyframe_burst(&self, now: Instant, subscriber: ParticipantId) -> bool {
        self.subscriptions_of(subscriber).any(|s| {
            s.restarted_at
                .is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_BURST)
        })
    }

    /// Every subscription of `subscriber`, of every publication.
    fn subscriptions_of(&self, subscriber: ParticipantId) -> impl Iterator<Item = &Subscription> {
        self.publications
            .values()
            .flat_map(|p| &p.subscriptions)
            .filter(move |s| s.subscriber == subscriber)
    }

    /// A REMB client's path shows no queue at what it is sent: the allocator may try the next
    /// layer up (probed first), never more in one step.
    fn try_next_layer_up(&mut self, now: Instant, subscriber: ParticipantId, sent: u64) {
        self.allocate(
            now,
            subscriber,
            sent.saturating_mul(REMB_UPGRADE_PERCENT) / 100,
        );
    }

    /// A REMB client's path is congested and delivers less than `bound`: a recent upgrade is
    /// undone; on the lowest layers upgrades are held and nothing is lowered; otherwise the
    /// subscriber goes to the lowest layer (see [`PathRate::Bounded`]).
    fn on_bounded_congestion(&mut self, now: Instant, subscriber: ParticipantId, bound: u64) {
        if self.undo_recent_upgrades(now, subscriber) {
            return;
        }
        if self.receives_only_lowest_layers(subscriber) {
            // A REMB never exceeds ~1.5× what arrives: a lower frame rate on the lowest
            // layer would only sink it further (105, then 16.5 kbit/s under a 350 kbit/s
            // cap, 20 s to climb back). Heavy loss still steps down from here.
            debug!(%subscriber, bound, "congested on the lowest layer: held, not lowered");
            self.hold_upgrades_after_congestion(now, subscriber, CONGESTION_DRAIN);
            return;
        }
        self.on_congested(now, subscriber, bound, PathRate::Bounded);
    }

    /// A REMB fell soon after upgrades: those upgrades are what the path could not carry (their
    /// layers had passed a probe, which a REMB client's estimator barely sees), so each
    /// subscription goes back to the cap it had, which carried it for seconds before, and
    /// nothing moves up for [`CONGESTION_HOLD`]. Within a layer that is at once and without a
    /// keyframe; to a lower resolution, the layer it leaves is shed until that keyframe.
    /// Returns false, touching nothing, unless every simulcast video subscription of
    /// `subscriber` that receives a layer was upgraded within [`UPGRADE_TRIAL`].
    ///
    /// (Sent to the lowest layer instead, as after a cap, h at its full rate straddling a
    /// 350 kbit/s path froze 500–867 ms, and from q the REMB took 20 s and more to grow back
    /// to f after the path widened.)
    fn undo_recent_upgrades(&mut self, now: Instant, subscriber: ParticipantId) -> bool {
        let mut undo = Vec::new();
        for publication in self.publications.values() {
            if publication.kind() != MediaKind::Video || publication.layer_count() < 2 {
                continue;
            }
            for subscription in publication
                .subscriptions
                .iter()
                .filter(|s| s.subscriber == subscriber)
            {
                if subscription.current_layer().is_none() {
                    continue;
                }
                match subscription.last_upgrade {
                    Some((before, at)) if now.saturating_duration_since(at) <= UPGRADE_TRIAL => {
                        undo.push((publication.id, subscription.id, before));
                    }
                    _ => return false,
                }
            }
        }
        if undo.is_empty() {
            return false;
        }
        self.hold_upgrades_after_congestion(now, subscriber, CONGESTION_HOLD);
        for (publication, id, before) in undo {
            let Some(publication) = self.publications.get_mut(&publication) else {
                continue;
            };
            let Some(subscription) = publication.subscription_mut(id) else {
                continue;
            };
            debug!(subscription = %id, to = ?before, "REMB fell after an upgrade: undone");
            subscription.set_cap(before.0, before.1);
            subscription.upgrade_candidate = None;
            subscription.last_upgrade = None;
            publication.retarget(now, Some(id), LayerReason::Bandwidth, &mut self.outputs);
            if let Some(subscription) = publication.subscription_mut(id) {
                subscription.shed_until_switched();
            }
        }
        if let Some(window) = self.loss.get_mut(&subscriber) {
            window.last_step_down = Some(now);
        }
        true
    }

    /// `subscriber` receives simulcast video, and only the lowest layer of it.
    fn receives_only_lowest_layers(&self, subscriber: ParticipantId) -> bool {
        let mut layers = self
            .publications
            .values()
            .filter(|p| p.kind() == MediaKind::Video && p.layer_count() > 1)
            .flat_map(|p| &p.subscriptions)
            .filter(|s| s.subscriber == subscriber)
            .filter_map(|s| s.current_layer())
            .peekable();
        layers.peek().is_some() && layers.all(|layer| layer == 0)
    }

    /// What `subscriber`'s subscriptions cost at the layers they receive now.
    fn sent_rate(&mut self, now: Instant, subscriber: ParticipantId) -> u64 {
        let mut total = 0;
        for publication in self.publications.values_mut() {
            if publication.kind() != MediaKind::Video {
                let listening = publication
                    .subscriptions
                    .iter()
                    .any(|s| s.subscriber == subscriber && !s.paused());
                // At the rate the allocator budgets it: a silent or new audio track has no
                // measured rate, and its layer's fallback is video's.
                if listening {
                    total += AUDIO_BPS;
                }
                continue;
            }
            let receiving: Vec<(u8, u8)> = publication
                .subscriptions
                .iter()
                .filter(|s| s.subscriber == subscriber && !s.paused())
                .filter_map(|s| s.current_layer().map(|l| (l, s.current_temporal())))
                .collect();
            if receiving.is_empty() {
                continue;
            }
            let rates = publication.temporal_bitrates(now);
            for (spatial, temporal) in receiving {
                total += rates
                    .get(usize::from(spatial))
                    .and_then(|r| r.get(usize::from(temporal.min(TOP_TEMPORAL_LAYER))))
                    .copied()
                    .unwrap_or(0);
            }
        }
        total
    }

    /// A standing queue on `subscriber`'s downlink (`Measured`) or a falling REMB (`Bounded`,
    /// which always goes to the lowest layer, see [`PathRate`]): its video is allocated from
    /// what the path delivered, at once, and that budget bounds it for [`CONGESTION_HOLD`] (the queue drains
    /// within a second, and nothing else would keep GCC from sending the subscriber straight
    /// back into it). A subscription that lands on a lower spatial layer sheds its current one
    /// until the switch (feeding it into the queue would only delay the lower layer's keyframe).
    fn on_congested(
        &mut self,
        now: Instant,
        subscriber: ParticipantId,
        delivered_bps: u64,
        path_rate: PathRate,
    ) {
        let window = self.loss_window(now, subscriber);
        if window
            .last_step_down
            .is_some_and(|at| now.saturating_duration_since(at) < LOSS_STEP_DOWN_COOLDOWN)
        {
            return;
        }
        let receiving: Vec<(PublicationId, SubscriptionId, u8)> = self
            .publications
            .values()
            .filter(|p| p.kind() == MediaKind::Video && p.layer_count() > 1)
            .flat_map(|p| {
                p.subscriptions
                    .iter()
                    .filter(|s| s.subscriber == subscriber)
                    .filter_map(move |s| s.current_layer().map(|c| (p.id, s.id, c)))
            })
            .collect();
        self.hold_upgrades_after_congestion(now, subscriber, CONGESTION_DRAIN);
        // Below what the path delivers, so the queue built up so far drains.
        let budget = delivered_bps.saturating_mul(CONGESTION_BUDGET_PERCENT) / 100;
        self.congestion_budget
            .insert(subscriber, (budget, now + CONGESTION_HOLD));
        self.allocate(now, subscriber, budget);
        let mut stepped_down = false;
        for (publication, id, was) in receiving {
            let Some(publication) = self.publications.get_mut(&publication) else {
                continue;
            };
            let rates = publication.layer_bitrates(now);
            let Some(subscription) = publication.subscription_mut(id) else {
                continue;
            };
            let mut allocated = subscription.target();
            if path_rate == PathRate::Bounded && was > 0 {
                allocated = allocated.min(was - 1);
            }
            if allocated >= was {
                continue;
            }
            // The switch completes on the new layer's keyframe, which must cross the congested
            // path first: take the highest layer whose keyframe crosses quickly, and let the
            // allocator climb to the allocated one after the usual hold, while that layer plays.
            let quick = (0..allocated)
                .rev()
                .find(|layer| {
                    rates.get(usize::from(*layer)).is_some_and(|bps| {
                        keyframe_crossing(*bps, delivered_bps) <= KEYFRAME_CROSSING_LIMIT
                    })
                })
                .unwrap_or(0);
            let to = if path_rate == PathRate::Bounded {
                0
            } else if rates.get(usize::from(allocated)).is_some_and(|bps| {
                keyframe_crossing(*bps, delivered_bps) <= KEYFRAME_CROSSING_LIMIT
            }) {
                allocated
            } else {
                quick
            };
            // Against the cap, not the target: the target may sit below the allocated layer
            // while that layer is paused, and would climb to it as soon as it resumes.
            if to < subscription.cap_layer() {
                subscription.set_cap(to, u8::MAX);
                subscription.upgrade_candidate = None;
                publication.retarget(now, Some(id), LayerReason::Bandwidth, &mut self.outputs);
            }
            let Some(subscription) = publication.subscription_mut(id) else {
                continue;
            };
            debug!(subscription = %id, from = was, allocated, to = subscription.target(), delivered_bps, "congestion step-down");
            subscription.shed_until_switched();
            stepped_down = true;
        }
        if stepped_down && let Some(window) = self.loss.get_mut(&subscriber) {
            window.last_step_down = Some(now);
        }
    }

    /// A congestion signal: the transport is told, and nothing moves up for `hold` (at least
    /// [`CONGESTION_DRAIN`] while the queue drains).
    fn hold_upgrades_after_congestion(
        &mut self,
        now: Instant,
        subscriber: ParticipantId,
        hold: Duration,
    ) {
        self.outputs.push_back(Output::PathCongested { subscriber });
        let until = now + hold;
        let held = self.upgrades_held.entry(subscriber).or_insert(until);
        *held = (*held).max(until);
    }

    /// Heavy loss: every simulcast video subscription of `subscriber` goes one layer below the
    /// one it receives (or to the lowest, when `to_lowest`), at once; the bandwidth estimate
    /// moves it back up after the usual hold.
    fn step_down(&mut self, now: Instant, subscriber: ParticipantId, to_lowest: bool) {
        // A probe 35 ms after a loss step-down failed on the queue the loss came from.
        self.hold_upgrades_after_congestion(now, subscriber, CONGESTION_DRAIN);
        for publication in self.publications.values_mut() {
            if publication.kind() != MediaKind::Video || publication.layer_count() < 2 {
                continue;
            }
            let mine: Vec<SubscriptionId> = publication
                .subscriptions
                .iter()
                .filter(|s| s.subscriber == subscriber)
                .filter(|s| {
                    s.current_layer()
                        .is_some_and(|c| c > 0 && c - 1 < s.cap_layer())
                })
                .map(|s| s.id)
                .collect();
            let rates = publication.layer_bitrates(now);
            for id in mine {
                if let Some(subscription) = publication.subscription_mut(id)
                    && let Some(current) = subscription.current_layer()
                {
                    if let Some(rate) = rates.get(usize::from(current)) {
                        subscription.set_loss_ceiling(*rate, now + LOSS_CEILING_HOLD);
                    }
                    let to = if to_lowest { 0 } else { current - 1 };
                    debug!(subscription = %id, from = current, to, "loss step-down");
                    // Loss steps the spatial layer down (its keyframe is what must cross the
                    // congested path quickly); the temporal cap does not apply below the cap.
                    subscription.set_cap(to, u8::MAX);
                    subscription.upgrade_candidate = None;
                }
                publication.retarget(now, Some(id), LayerReason::Bandwidth, &mut self.outputs);
                if let Some(subscription) = publication.subscription_mut(id) {
                    subscription.shed_until_switched();
                }
            }
        }
    }

    /// Gives each of `subscriber`'s video subscriptions the highest layers that fit its
    /// estimated bandwidth together. Each subscription climbs a ladder of steps (spatial,
    /// temporal): (0,0), (0,1), (0,2), (1,0), … — every temporal layer of a spatial layer
    /// before the next spatial layer, so a shrinking budget first lowers the frame rate of the
    /// layer received and only then its resolution. Everyone gets the lowest step first, then
    /// subscriptions move up one step at a time, round-robin, while the budget allows. Lower
    /// caps apply at once; a higher cap only after it has fit for [`UPGRADE_HOLD`].
    fn allocate(&mut self, now: Instant, subscriber: ParticipantId, estimate: u64) {
        let bits_per_second = match self.congestion_budget.get(&subscriber) {
            Some((delivered, until)) if now < *until => estimate.min(*delivered),
            Some(_) => {
                self.congestion_budget.remove(&subscriber);
                estimate
            }
            None => estimate,
        };
        struct Step {
            spatial: u8,
            temporal: u8,
            bps: u64,
        }
        struct Wanted {
            publication: PublicationId,
            subscription: SubscriptionId,
            steps: Vec<Step>,
            granted: usize,
        }
        let mut wanted = Vec::new();
        let mut audio = 0u64;
        for publication in self.publications.values_mut() {
            let mine: Vec<(SubscriptionId, u8, u8, Option<u64>)> = publication
                .subscriptions
                .iter()
                .filter(|s| s.subscriber == subscriber && !s.paused())
                .map(|s| (s.id, s.max_layer(), s.max_temporal(), s.loss_ceiling(now)))
                .collect();
            if mine.is_empty() {
                continue;
            }
            if publication.kind() == MediaKind::Audio {
                audio += AUDIO_BPS * mine.len() as u64;
                continue;
            }
            let count = publication.layer_count();
            let rates = publication.temporal_bitrates(now);
            for (subscription, max, max_temporal, ceiling) in mine {
                let max_temporal = max_temporal.min(TOP_TEMPORAL_LAYER);
                let mut steps = Vec::new();
                for (spatial, temporal_rates) in (0..=max.min(count - 1)).zip(&rates) {
                    let full = temporal_rates[usize::from(TOP_TEMPORAL_LAYER)];
                    // A layer that caused heavy loss is off limits at any frame rate, but the
                    // lowest one always stays.
                    if spatial > 0 && ceiling.is_some_and(|ceiling| full >= ceiling) {
                        break;
                    }
                    // Base frames alone (a quarter of the frame rate with Chrome's L1T3) are a
                    // slideshow: above the lowest layer, the next layer down at full rate is
                    // the better picture, so the ladder skips them unless they were asked for.
                    let lowest = if spatial > 0 && max_temporal > 0 {
                        1
                    } else {
                        0
                    };
                    for temporal in lowest..=max_temporal {
                        steps.push(Step {
                            spatial,
                            temporal,
                            bps: temporal_rates[usize::from(temporal)],
                        });
                    }
                }
                wanted.push(Wanted {
                    publication: publication.id,
                    subscription,
                    steps,
                    granted: 0,
                });
            }
        }
        let budget = (bits_per_second.saturating_mul(BANDWIDTH_HEADROOM_PERCENT) / 100)
            .saturating_sub(audio);
        let mut spent: u64 = wanted
            .iter()
            .filter_map(|w| w.steps.first())
            .map(|s| s.bps)
            .sum();
        let mut moved = true;
        while moved {
            moved = false;
            for w in &mut wanted {
                let (Some(from), Some(to)) = (w.steps.get(w.granted), w.steps.get(w.granted + 1))
                else {
                    continue;
                };
                let extra = to.bps.saturating_sub(from.bps);
                // A step that costs nothing (a layer without temporal layers) is always taken.
                if extra == 0 || spent + extra <= budget {
                    spent += extra;
                    w.granted += 1;
                    moved = true;
                }
            }
        }
        // A probe started right after an upgrade cannot tell whose queue it meets: a REMB
        // client's h at its full rate, upgraded while a probe for f began, overran a 350 kbit/s
        // path; the queue failed the probe and the upgrade stayed for 2.8 s, freezing 800 ms.
        let settling = self.subscriptions_of(subscriber).any(|s| {
            s.last_upgrade
                .is_some_and(|(_, at)| now.saturating_duration_since(at) < UPGRADE_SETTLE)
        });
        let upgrades_held = settling
            || match self.upgrades_held.get(&subscriber) {
                Some(until) if now < *until => true,
                Some(_) => {
                    self.upgrades_held.remove(&subscriber);
                    false
                }
                None => false,
            };
        let mut probe_bps = 0;
        for w in wanted {
            let Some(publication) = self.publications.get_mut(&w.publication) else {
                continue;
            };
            let top_spatial = publication.layer_count() - 1;
            let rates = publication.temporal_bitrates(now);
            let Some(subscription) = publication.subscription_mut(w.subscription) else {
                continue;
            };
            let Some(granted) = w.steps.get(w.granted) else {
                continue;
            };
            // "Everything up to max fits" means no cap at all: a later request for a higher
            // layer is then not held back by a stale cap. (A loss ceiling shortens the ladder,
            // so its top is then a real cap.)
            let top = w.granted + 1 == w.steps.len()
                && subscription.loss_ceiling(now).is_none()
                && granted.spatial >= subscription.max_layer().min(top_spatial);
            let mut cap = if top {
                (u8::MAX, u8::MAX)
            } else {
                (granted.spatial, granted.temporal)
            };
            let current_cap = subscription.cap();
            let apply = if cap < current_cap {
                subscription.upgrade_candidate = None;
                true
            } else if cap > current_cap && upgrades_held {
                subscription.upgrade_candidate = None;
                false
            } else if cap > current_cap {
                match subscription.upgrade_candidate {
                    Some((candidate, since)) if candidate <= cap => {
                        // Only as far as the probe went: a higher layer that fits the
                        // estimate now is a new candidate, probed in its turn (applied
                        // unprobed, f at half rate went through a 350 kbit/s path that had
                        // been probed for h).
                        cap = candidate;
                        now.saturating_duration_since(since) >= UPGRADE_HOLD
                    }
                    _ => {
                        subscription.upgrade_candidate = Some((cap, now));
                        // The extra the upgrade would cost: what the probe must show fits.
                        let from = w
                            .steps
                            .iter()
                            .rev()
                            .find(|s| (s.spatial, s.temporal) <= current_cap)
                            .map_or(0, |s| s.bps);
                        probe_bps += granted.bps.saturating_sub(from);
                        false
                    }
                }
            } else {
                subscription.upgrade_candidate = None;
                false
            };
            if apply {
                debug!(subscription = %w.subscription, bits_per_second, from = ?current_cap, to = ?cap, ?rates, "bandwidth cap");
                subscription.last_upgrade = (cap > current_cap).then_some((current_cap, now));
                subscription.set_cap(cap.0, cap.1);
                subscription.upgrade_candidate = None;
                publication.retarget(
                    now,
                    Some(w.subscription),
                    LayerReason::Bandwidth,
                    &mut self.outputs,
                );
            }
        }
        if probe_bps > 0 {
            let probe_bps = if self.last_remb.contains_key(&subscriber) {
                let upgraded = self.sent_rate(now, subscriber).saturating_add(probe_bps);
                probe_bps.saturating_add(upgraded.saturating_mul(REMB_PROBE_MARGIN_PERCENT) / 100)
            } else {
                probe_bps.saturating_mul(PROBE_PERCENT) / 100
            };
            debug!(%subscriber, probe_bps, "probing before an upgrade");
            self.last_probe.insert(subscriber, now);
            self.outputs.push_back(Output::Probe {
                subscriber,
                bits_per_second: probe_bps,
                duration: PROBE_DURATION,
            });
        }
    }

    fn remove_publication(&mut self, id: PublicationId) {
        self.speakers.remove_publication(id);
        if let Some(publication) = self.publications.remove(&id) {
            for subscription in &publication.subscriptions {
                self.subscription_index.remove(&subscription.id);
            }
            debug!(publication = %id, subscriptions = publication.subscriptions.len(), "publication removed");
        }
    }

    fn remove_participant(&mut self, now: Instant, participant: ParticipantId) {
        self.loss.remove(&participant);
        self.congestion_budget.remove(&participant);
        self.last_probe.remove(&participant);
        self.last_remb.remove(&participant);
        self.queue_watch.remove(&participant);
        self.upgrades_held.remove(&participant);
        let owned: Vec<PublicationId> = self
            .publications
            .values()
            .filter(|p| p.publisher == participant)
            .map(|p| p.id)
            .collect();
        for id in owned {
            self.remove_publication(id);
        }
        for publication in self.publications.values_mut() {
            let theirs: Vec<SubscriptionId> = publication
                .subscriptions
                .iter()
                .filter(|s| s.subscriber == participant)
                .map(|s| s.id)
                .collect();
            for id in theirs {
                self.subscription_index.remove(&id);
                publication.remove_subscription(now, id, &mut self.outputs);
            }
        }
        debug!(%participant, "participant left");
    }
}
