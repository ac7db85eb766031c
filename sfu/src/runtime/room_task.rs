use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::{ParticipantInfo, PublicationInfo, RequestError, RoomSnapshot, Sfu};
use crate::core::{
    self, Input, LayerReason, Output, ParticipantId, PublicationId, RtpPacket, Ssrc, SubscriptionId,
};
use crate::transport::{CodecInfo, RemoteTrack, RepairHorizons, RtpSink};

/// What the room tells a participant: about the others, and about its own subscriptions and
/// publications.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    ParticipantJoined(ParticipantInfo),
    ParticipantLeft(ParticipantId),
    PublicationAdded(PublicationInfo),
    PublicationRemoved {
        publication: PublicationId,
        participant: ParticipantId,
    },
    /// To a subscriber: the layers of one of its subscriptions changed.
    LayersChanged(LayersChanged),
    /// To a publisher (dynacast): which encodings of its publication anyone needs, by rid.
    PublisherLayers {
        publication: PublicationId,
        layers: Vec<(String, bool)>,
    },
    /// To everyone: who speaks now, loudest first, with a level in 0.0..=1.0 (linear
    /// amplitude, 1.0 = 0 dBov); empty when nobody does any more.
    ActiveSpeakers(Vec<(ParticipantId, f32)>),
    /// To a subscriber's own task: probe its path before an upgrade (never sent to a client).
    Probe {
        bits_per_second: u64,
        duration: std::time::Duration,
    },
    /// To a subscriber's own task: its path was just found congested (never sent to a client).
    PathCongested,
}

/// A subscription's layer change, as the room reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayersChanged {
    pub subscription: SubscriptionId,
    /// The layer forwarded; `None` before the first one (temporal 2 = all for streams without
    /// temporal layers).
    pub current: Option<core::Layer>,
    pub target: core::Layer,
    pub reason: LayerReason,
}

pub(crate) enum RoomCommand {
    Join {
        info: ParticipantInfo,
        events: mpsc::Sender<RoomEvent>,
        reply: oneshot::Sender<Result<RoomSnapshot, RequestError>>,
    },
    Leave {
        participant: ParticipantId,
    },
    /// The publisher's connection came back after an ICE restart: packets were lost in the
    /// switch and cannot be repaired, so every subscriber of its publications needs a keyframe.
    PublisherReconnected {
        participant: ParticipantId,
    },
    /// The room as it is now (a resuming client reconciles with it).
    Snapshot {
        reply: oneshot::Sender<RoomSnapshot>,
    },
    AddPublication {
        info: PublicationInfo,
        codec: CodecInfo,
        /// Start new subscribers from the packets since the last keyframe (RTMP ingest).
        cache_since_keyframe: bool,
    },
    /// The publication's first RTP arrived: its track can now take keyframe requests.
    AttachTrack {
        publication: PublicationId,
        track: RemoteTrack,
    },
    RemovePublication {
        participant: ParticipantId,
        publication: PublicationId,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    GetPublication {
        publication: PublicationId,
        reply: oneshot::Sender<Option<(PublicationInfo, CodecInfo)>>,
    },
    AddSubscription {
        subscription: SubscriptionId,
        subscriber: ParticipantId,
        publication: PublicationId,
        ssrc: Ssrc,
        payload_type: u8,
        sink: mpsc::Sender<RtpPacket>,
        /// The subscriber connection's repair horizons, set as the core reports restarts.
        horizons: Arc<RepairHorizons>,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    RemoveSubscription {
        subscription: SubscriptionId,
    },
    Rtp {
        publication: PublicationId,
        layer: u8,
        packet: RtpPacket,
    },
    KeyframeRequested {
        subscription: SubscriptionId,
    },
    /// A subscriber's NACK named this many lost packets.
    Nacked {
        subscription: SubscriptionId,
        packets: u32,
    },
    SetPreferredLayer {
        subscription: SubscriptionId,
        spatial: u8,
        temporal: Option<u8>,
    },
    SetPaused {
        subscription: SubscriptionId,
        paused: bool,
    },
    Bandwidth {
        subscriber: ParticipantId,
        bits_per_second: u64,
    },
    /// The subscriber's own estimate of its downlink (REMB).
    Remb {
        subscriber: ParticipantId,
        bits_per_second: u64,
    },
    /// The round trip to a subscriber without transport-wide feedback.
    RoundTrip {
        subscriber: ParticipantId,
        round_trip: Duration,
    },
    /// The subscriber's path holds a standing queue and delivers this much.
    Congested {
        subscriber: ParticipantId,
        delivered_bits_per_second: u64,
        /// Set when a probe was running: the media's own rate, which the path carried.
        media_bits_per_second: Option<u64>,
    },
}

#[derive(Clone)]
pub(crate) struct RoomHandle {
    id: u64,
    tx: mpsc::Sender<RoomCommand>,
    rtp_dropped: Arc<AtomicU64>,
}

impl RoomHandle {
    pub(crate) fn spawn(name: String, sfu: Sfu) -> Self {
        let (tx, rx) = mpsc::channel(sfu.limits().room_queue);
        // Each room draws its own initial sequence numbers unless the config pins them.
        let core = core::Room::new(core::RoomConfig {
            random_seed: rand::random(),
            ..sfu.room_config().clone()
        });
        let handle = Self {
            id: sfu.next_id(),
            tx,
            rtp_dropped: Arc::new(AtomicU64::new(0)),
        };
        let task = RoomTask {
            name,
            handle_id: handle.id,
            sfu,
            core,
            participants: HashMap::new(),
            publications: HashMap::new(),
            subscriptions: HashMap::new(),
            sink_full_drops: 0,
            active_speakers: Vec::new(),
        };
        tokio::spawn(task.run(rx));
        handle
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Sends a control command; fails only when the room has closed.
    pub(crate) async fn send(&self, command: RoomCommand) -> Result<(), RequestError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| RequestError::Closed)
    }

    /// Sends without waiting; for the media path and for drop-time cleanup.
    pub(crate) fn try_send(&self, command: RoomCommand) -> bool {
        self.tx.try_send(command).is_ok()
    }

    pub(crate) fn rtp_sink(&self, publication: PublicationId) -> Arc<dyn RtpSink> {
        Arc::new(RoomRtpSink {
            room: self.clone(),
            publication,
        })
    }
}

/// Feeds one publication's RTP into the room queue; when the queue is full the packet is
/// dropped (and counted) rather than stalling the WebRTC driver that delivers it.
struct RoomRtpSink {
    room: RoomHandle,
    publication: PublicationId,
}

impl RtpSink for RoomRtpSink {
    fn deliver(&self, layer: u8, packet: RtpPacket) {
        let command = RoomCommand::Rtp {
            publication: self.publication,
            layer,
            packet,
        };
        if !self.room.try_send(command) {
            self.room.rtp_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct ParticipantEntry {
    info: ParticipantInfo,
    events: mpsc::Sender<RoomEvent>,
}

struct PublicationEntry {
    info: PublicationInfo,
    codec: CodecInfo,
    track: Option<RemoteTrack>,
}

struct SubscriptionEntry {
    subscriber: ParticipantId,
    publication: PublicationId,
    sink: mpsc::Sender<RtpPacket>,
    horizons: Arc<RepairHorizons>,
}

struct RoomTask {
    name: String,
    handle_id: u64,
    sfu: Sfu,
    core: core::Room,
    participants: HashMap<ParticipantId, ParticipantEntry>,
    publications: HashMap<PublicationId, PublicationEntry>,
    subscriptions: HashMap<SubscriptionId, SubscriptionEntry>,
    sink_full_drops: u64,
    /// The last `ActiveSpeakers` list, for participants who join while someone speaks (the
    /// core announces only changes).
    active_speakers: Vec<(ParticipantId, f32)>,
}

impl RoomTask {
    async fn run(mut self, mut rx: mpsc::Receiver<RoomCommand>) {
        info!(room = %self.name, "room opened");
        let mut batch = Vec::with_capacity(64);
        loop {
            let timeout = self.core.poll_timeout();
            tokio::select! {
                received = rx.recv_many(&mut batch, 64) => {
                    if received == 0 {
                        break;
                    }
                    for command in batch.drain(..) {
                        self.handle(command);
                    }
                }
                () = sleep_until(timeout) => {
                    self.core.handle_timeout(Instant::now());
                }
            }
            self.drain_outputs();
            if self.participants.is_empty() {
                // Leave the registry first so new joins create a fresh room, then refuse
                // whatever raced in before that.
                self.sfu.room_closed(&self.name, self.handle_id);
                rx.close();
                while let Ok(command) = rx.try_recv() {
                    if let RoomCommand::Join { reply, .. } = command {
                        let _ = reply.send(Err(RequestError::Closed));
                    }
                }
                break;
            }
        }
        info!(room = %self.name, sink_full_drops = self.sink_full_drops, "room closed");
    }

    fn handle(&mut self, command: RoomCommand) {
        let now = Instant::now();
        match command {
            RoomCommand::Rtp {
                publication,
                layer,
                packet,
            } => self.feed(
                now,
                Input::Rtp {
                    publication,
                    layer,
                    packet,
                },
            ),
            RoomCommand::SetPreferredLayer {
                subscription,
                spatial,
                temporal,
            } => self.feed(
                now,
                Input::SetPreferredLayer {
                    subscription,
                    spatial,
                    temporal,
                },
            ),
            RoomCommand::SetPaused {
                subscription,
                paused,
            } => self.feed(
                now,
                Input::SetPaused {
                    subscription,
                    paused,
                },
            ),
            RoomCommand::Bandwidth {
                subscriber,
                bits_per_second,
            } => self.feed(
                now,
                Input::Bandwidth {
                    subscriber,
                    bits_per_second,
                },
            ),
            RoomCommand::Remb {
                subscriber,
                bits_per_second,
            } => self.feed(
                now,
                Input::Remb {
                    subscriber,
                    bits_per_second,
                },
            ),
            RoomCommand::RoundTrip {
                subscriber,
                round_trip,
            } => self.feed(
                now,
                Input::RoundTrip {
                    subscriber,
                    round_trip,
                },
            ),
            RoomCommand::Congested {
                subscriber,
                delivered_bits_per_second,
                media_bits_per_second,
            } => self.feed(
                now,
                match media_bits_per_second {
                    Some(bits_per_second) => Input::ProbeFailed {
                        subscriber,
                        bits_per_second,
                    },
                    None => Input::Congested {
                        subscriber,
                        delivered_bits_per_second,
                    },
                },
            ),
            RoomCommand::KeyframeRequested { subscription } => {
                self.feed(now, Input::KeyframeRequested { subscription })
            }
            RoomCommand::Nacked {
                subscription,
                packets,
            } => self.feed(
                now,
                Input::Nacked {
                    subscription,
                    packets,
                },
            ),
            RoomCommand::Join {
                info,
                events,
                reply,
            } => {
                let result = self.join(info, events);
                let _ = reply.send(result);
            }
            RoomCommand::Leave { participant } => self.leave(now, participant),
            RoomCommand::PublisherReconnected { participant } => {
                let affected: Vec<SubscriptionId> = self
                    .subscriptions
                    .iter()
                    .filter(|(_, s)| {
                        self.publications
                            .get(&s.publication)
                            .is_some_and(|p| p.info.participant == participant)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                debug!(room = %self.name, %participant, subscriptions = affected.len(), reason = "publisher-ice-restart", "keyframes requested");
                for subscription in affected {
                    self.feed(now, Input::KeyframeRequested { subscription });
                }
            }
            RoomCommand::Snapshot { reply } => {
                let _ = reply.send(RoomSnapshot {
                    participants: self.participants.values().map(|p| p.info.clone()).collect(),
                    publications: self.publications.values().map(|p| p.info.clone()).collect(),
                });
            }
            RoomCommand::AddPublication {
                info,
                codec,
                cache_since_keyframe,
            } => {
                self.feed(
                    now,
                    Input::PublicationAdded {
                        publication: info.id,
                        publisher: info.participant,
                        kind: info.kind,
                        codec: codec.codec(),
                        clock_rate: codec.clock_rate,
                        cache_since_keyframe,
                        layers: u8::try_from(info.rids.len().max(1)).unwrap_or(u8::MAX),
                    },
                );
                self.broadcast(
                    Some(info.participant),
                    RoomEvent::PublicationAdded(info.clone()),
                );
                self.publications.insert(
                    info.id,
                    PublicationEntry {
                        info,
                        codec,
                        track: None,
                    },
                );
            }
            RoomCommand::AttachTrack { publication, track } => {
                if let Some(entry) = self.publications.get_mut(&publication) {
                    entry.track = Some(track);
                }
            }
            RoomCommand::RemovePublication {
                participant,
                publication,
                reply,
            } => {
                let owned = self
                    .publications
                    .get(&publication)
                    .is_some_and(|p| p.info.participant == participant);
                let result = if owned {
                    self.remove_publication(now, publication);
                    Ok(())
                } else {
                    Err(RequestError::NotFound(format!("publication {publication}")))
                };
                let _ = reply.send(result);
            }
            RoomCommand::GetPublication { publication, reply } => {
                let found = self
                    .publications
                    .get(&publication)
                    .map(|p| (p.info.clone(), p.codec.clone()));
                let _ = reply.send(found);
            }
            RoomCommand::AddSubscription {
                subscription,
                subscriber,
                publication,
                ssrc,
                payload_type,
                sink,
                horizons,
                reply,
            } => {
                let result = self
                    .core
                    .handle_input(
                        now,
                        Input::SubscriptionAdded {
                            subscription,
                            subscriber,
                            publication,
                            ssrc,
                            payload_type,
                        },
                    )
                    .map_err(|_| RequestError::NotFound(format!("publication {publication}")));
                if result.is_ok() {
                    self.subscriptions.insert(
                        subscription,
                        SubscriptionEntry {
                            subscriber,
                            publication,
                            sink,
                            horizons,
                        },
                    );
                }
                let _ = reply.send(result);
            }
            RoomCommand::RemoveSubscription { subscription } => {
                if self.subscriptions.remove(&subscription).is_some() {
                    self.feed(now, Input::SubscriptionRemoved { subscription });
                }
            }
        }
    }

    fn join(
        &mut self,
        info: ParticipantInfo,
        events: mpsc::Sender<RoomEvent>,
    ) -> Result<RoomSnapshot, RequestError> {
        if self.participants.len() >= self.sfu.limits().max_participants_per_room {
            return Err(RequestError::LimitExceeded("participants in this room"));
        }
        let snapshot = RoomSnapshot {
            participants: self.participants.values().map(|p| p.info.clone()).collect(),
            publications: self.publications.values().map(|p| p.info.clone()).collect(),
        };
        self.broadcast(None, RoomEvent::ParticipantJoined(info.clone()));
        debug!(room = %self.name, participant = %info.id, identity = %info.identity, "joined");
        let id = info.id;
        self.participants
            .insert(id, ParticipantEntry { info, events });
        if !self.active_speakers.is_empty() {
            self.tell(id, RoomEvent::ActiveSpeakers(self.active_speakers.clone()));
        }
        Ok(snapshot)
    }

    fn leave(&mut self, now: Instant, participant: ParticipantId) {
        if self.participants.remove(&participant).is_none() {
            return;
        }
        let theirs: Vec<PublicationId> = self
            .publications
            .values()
            .filter(|p| p.info.participant == participant)
            .map(|p| p.info.id)
            .collect();
        for publication in theirs {
            self.remove_publication(now, publication);
        }
        self.feed(now, Input::ParticipantLeft { participant });
        self.subscriptions
            .retain(|_, s| s.subscriber != participant);
        self.broadcast(None, RoomEvent::ParticipantLeft(participant));
        debug!(room = %self.name, %participant, "left");
    }

    fn remove_publication(&mut self, now: Instant, publication: PublicationId) {
        let Some(entry) = self.publications.remove(&publication) else {
            return;
        };
        self.feed(now, Input::PublicationRemoved { publication });
        // The core removed the publication's subscriptions; dropping their sinks ends the
        // writer tasks. The subscribers' participant tasks renegotiate on the event below.
        self.subscriptions
            .retain(|_, s| s.publication != publication);
        self.broadcast(
            None,
            RoomEvent::PublicationRemoved {
                publication,
                participant: entry.info.participant,
            },
        );
    }

    fn broadcast(&mut self, except: Option<ParticipantId>, event: RoomEvent) {
        for (id, participant) in &self.participants {
            if Some(*id) == except {
                continue;
            }
            match participant.events.try_send(event.clone()) {
                Ok(()) => {}
                // Its task ended and its Leave is on the way.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
                // Hopelessly behind: control events are rare, so this is worth a warning.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    warn!(room = %self.name, participant = %id, "room event not delivered")
                }
            }
        }
    }

    /// An event for one participant only.
    fn tell(&self, participant: ParticipantId, event: RoomEvent) {
        if let Some(entry) = self.participants.get(&participant)
            && let Err(mpsc::error::TrySendError::Full(_)) = entry.events.try_send(event)
        {
            warn!(room = %self.name, %participant, "room event not delivered");
        }
    }

    fn feed(&mut self, now: Instant, input: Input) {
        if let Err(err) = self.core.handle_input(now, input) {
            debug!(room = %self.name, %err, "input rejected by the routing core");
        }
    }

    fn drain_outputs(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Forward {
                    subscription,
                    packet,
                    ..
                } => {
                    if let Some(entry) = self.subscriptions.get(&subscription)
                        && entry.sink.try_send(packet).is_err()
                    {
                        self.sink_full_drops += 1;
                    }
                }
                Output::LayersChanged {
                    subscription,
                    subscriber,
                    current,
                    target,
                    reason,
                } => self.tell(
                    subscriber,
                    RoomEvent::LayersChanged(LayersChanged {
                        subscription,
                        current,
                        target,
                        reason,
                    }),
                ),
                Output::PublisherLayers {
                    publication,
                    publisher,
                    active,
                } => {
                    let Some(entry) = self.publications.get(&publication) else {
                        continue;
                    };
                    let layers = entry.info.rids.iter().cloned().zip(active).collect();
                    self.tell(
                        publisher,
                        RoomEvent::PublisherLayers {
                            publication,
                            layers,
                        },
                    );
                }
                Output::Probe {
                    subscriber,
                    bits_per_second,
                    duration,
                } => self.tell(
                    subscriber,
                    RoomEvent::Probe {
                        bits_per_second,
                        duration,
                    },
                ),
                Output::RepairHorizon {
                    subscription,
                    ssrc,
                    sequence_number,
                    ..
                } => {
                    // Here rather than through the subscriber's task: the restart's first
                    // packet was just handed to the writer, and NACKs naming anything after it
                    // must find the horizon in place.
                    if let Some(entry) = self.subscriptions.get(&subscription) {
                        entry.horizons.set(Instant::now(), ssrc.0, sequence_number);
                    }
                }
                Output::PathCongested { subscriber } => {
                    self.tell(subscriber, RoomEvent::PathCongested);
                }
                Output::ActiveSpeakers { speakers } => {
                    self.active_speakers.clone_from(&speakers);
                    self.broadcast(None, RoomEvent::ActiveSpeakers(speakers));
                }
                Output::RequestKeyframe {
                    publication, ssrc, ..
                } => {
                    if let Some(track) = self
                        .publications
                        .get(&publication)
                        .and_then(|p| p.track.as_ref())
                    {
                        debug!(room = %self.name, %publication, "keyframe requested upstream");
                        track.request_keyframe(ssrc);
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
