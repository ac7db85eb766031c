//! The room task's loop: commands and RTP in, the core driven, its outputs carried out.

use super::*;

impl RoomTask {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<RoomCommand>) {
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
                self.sfu
                    .room_closed(&self.name, self.handle_id, self.shard, self.media_stats());
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

    pub(super) fn handle(&mut self, command: RoomCommand) {
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
                self.counted.keyframe_requests_received += 1;
                self.feed(now, Input::KeyframeRequested { subscription })
            }
            RoomCommand::Nacked {
                subscription,
                packets,
            } => {
                self.counted.nacked_packets += u64::from(packets);
                self.feed(
                    now,
                    Input::Nacked {
                        subscription,
                        packets,
                    },
                )
            }
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
            RoomCommand::Stats { reply } => {
                let _ = reply.send(self.stats_reply());
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
                if self.subscriptions.contains_key(&subscription) {
                    self.retire_subscription(subscription);
                    self.subscriptions.remove(&subscription);
                    self.feed(now, Input::SubscriptionRemoved { subscription });
                }
            }
        }
    }

    pub(super) fn join(
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

    pub(super) fn leave(&mut self, now: Instant, participant: ParticipantId) {
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
        self.retire_subscriber(participant);
        self.feed(now, Input::ParticipantLeft { participant });
        self.subscriptions
            .retain(|_, s| s.subscriber != participant);
        self.broadcast(None, RoomEvent::ParticipantLeft(participant));
        debug!(room = %self.name, %participant, "left");
    }

    pub(super) fn remove_publication(&mut self, now: Instant, publication: PublicationId) {
        if !self.publications.contains_key(&publication) {
            return;
        }
        self.retire_publication(publication);
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

    pub(super) fn broadcast(&mut self, except: Option<ParticipantId>, event: RoomEvent) {
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
    pub(super) fn tell(&self, participant: ParticipantId, event: RoomEvent) {
        if let Some(entry) = self.participants.get(&participant)
            && let Err(mpsc::error::TrySendError::Full(_)) = entry.events.try_send(event)
        {
            warn!(room = %self.name, %participant, "room event not delivered");
        }
    }

    pub(super) fn feed(&mut self, now: Instant, input: Input) {
        if let Err(err) = self.core.handle_input(now, input) {
            debug!(room = %self.name, %err, "input rejected by the routing core");
        }
    }

    pub(super) fn drain_outputs(&mut self) {
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
                // Publisher liveness is announced by the shard plane only.
                Output::PublicationStalled { .. } | Output::PublicationResumed { .. } => {}
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
