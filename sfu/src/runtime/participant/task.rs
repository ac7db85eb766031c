//! The participant task: serves its handle's commands, publishes, and relays room and peer
//! events to the client.

use tracing::{debug, info, warn};

use super::*;

impl ParticipantTask {
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut room_events: mpsc::Receiver<RoomEvent>,
        mut publisher_events: mpsc::Receiver<PeerEvent>,
        mut subscriber_events: mpsc::Receiver<PeerEvent>,
    ) {
        let mut bandwidth_tick = tokio::time::interval(BANDWIDTH_POLL);
        bandwidth_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = bandwidth_tick.tick() => self.report_bandwidth().await,
                command = commands.recv() => match command {
                    Some(command) => self.handle_command(command).await,
                    None => break,
                },
                Some(event) = room_events.recv() => self.handle_room_event(event).await,
                Some(event) = publisher_events.recv() => self.handle_peer_event(PeerRole::Publisher, event).await,
                Some(event) = subscriber_events.recv() => self.handle_peer_event(PeerRole::Subscriber, event).await,
            }
        }
        // Waits for space if the room queue is full of media, rather than leave a ghost.
        let _ = self
            .room
            .send(RoomCommand::Leave {
                participant: self.id,
            })
            .await;
        if let Some(publisher) = &self.publisher {
            publisher.close().await;
        }
        self.subscriber.close().await;
        debug!("participant ended");
    }

    /// Feeds the subscriber connection's bandwidth estimate (send-side GCC over TWCC) to the
    /// room's allocator while this participant receives video.
    pub(super) async fn report_bandwidth(&mut self) {
        if !self.subscriptions.values().any(|s| s.active && s.video) {
            return;
        }
        if let Some(bits_per_second) = self.subscriber.estimated_bitrate().await {
            self.room.try_send(RoomCommand::Bandwidth {
                subscriber: self.id,
                bits_per_second,
            });
        }
    }

    pub(super) fn emit(&self, event: ParticipantEvent) {
        if self.events.try_send(event).is_err() {
            warn!("participant event dropped: the session is not reading");
        }
    }

    pub(super) async fn handle_command(&mut self, command: Command) {
        match command {
            Command::Publish {
                offer,
                tracks,
                reply,
            } => {
                let _ = reply.send(self.publish(offer, tracks).await);
            }
            Command::Unpublish { publication, reply } => {
                let (tx, rx) = oneshot::channel();
                let result = match self
                    .room
                    .send(RoomCommand::RemovePublication {
                        participant: self.id,
                        publication,
                        reply: tx,
                    })
                    .await
                {
                    Ok(()) => rx.await.unwrap_or(Err(RequestError::Closed)),
                    Err(err) => Err(err),
                };
                if result.is_ok() {
                    self.publications.retain(|p| *p != publication);
                }
                let _ = reply.send(result);
            }
            Command::Subscribe { publication, reply } => {
                let result = self.subscribe(publication).await;
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok {
                    self.negotiate().await;
                }
            }
            Command::Unsubscribe {
                subscription,
                reply,
            } => {
                let result = match self.subscriptions.contains_key(&subscription) {
                    true => {
                        self.drop_subscription(subscription).await;
                        Ok(())
                    }
                    false => Err(RequestError::NotFound(format!(
                        "subscription {subscription}"
                    ))),
                };
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok {
                    self.negotiate().await;
                }
            }
            Command::Answer { sdp, reply } => {
                let result = self.apply_answer(sdp).await;
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok {
                    self.activate_subscriptions().await;
                    if std::mem::take(&mut self.renegotiate) {
                        self.negotiate().await;
                    }
                }
            }
            Command::SetPreferredLayer {
                subscription,
                spatial,
                temporal,
                reply,
            } => {
                let result = match self.subscriptions.get_mut(&subscription) {
                    None => Err(RequestError::NotFound(format!(
                        "subscription {subscription}"
                    ))),
                    Some(state) if !state.video => Err(RequestError::Invalid(
                        "layers apply to video subscriptions only".to_owned(),
                    )),
                    Some(state) => {
                        state.preferred = Some((spatial, temporal));
                        if state.active {
                            self.room
                                .send(RoomCommand::SetPreferredLayer {
                                    subscription,
                                    spatial,
                                    temporal,
                                })
                                .await
                        } else {
                            Ok(())
                        }
                    }
                };
                let _ = reply.send(result);
            }
            Command::SetPaused {
                subscription,
                paused,
                reply,
            } => {
                let result = match self.subscriptions.get_mut(&subscription) {
                    None => Err(RequestError::NotFound(format!(
                        "subscription {subscription}"
                    ))),
                    Some(state) => {
                        state.paused = paused;
                        if state.active {
                            self.room
                                .send(RoomCommand::SetPaused {
                                    subscription,
                                    paused,
                                })
                                .await
                        } else {
                            Ok(())
                        }
                    }
                };
                let _ = reply.send(result);
            }
            Command::Resume { reply } => {
                let result = self.resume_state().await;
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok && self.awaiting_answer {
                    // The offer may have died with the old socket: send it again. Answering
                    // the same offer twice is harmless; never answering it stalls every
                    // later subscription.
                    match self.subscriber.local_description().await {
                        Some(sdp) => self.emit(ParticipantEvent::Offer(sdp)),
                        None => warn!("awaiting an answer without a local offer"),
                    }
                }
            }
            Command::Whep { reply, .. } => {
                let _ = reply.send(Err(RequestError::Unsupported(
                    "WHEP playback needs the shard media plane (--media-plane shard)".to_owned(),
                )));
            }
            Command::RestartIce { reply } => {
                let _ = reply.send(Ok(()));
                if self.offered {
                    self.ice_restart_pending = true;
                    self.negotiate().await;
                }
            }
            Command::Candidate {
                role,
                candidate,
                reply,
            } => {
                let peer = match role {
                    PeerRole::Publisher => self.publisher.as_ref(),
                    PeerRole::Subscriber => Some(&self.subscriber),
                };
                let result = match peer {
                    Some(peer) => peer
                        .add_ice_candidate(candidate)
                        .await
                        .map_err(RequestError::from),
                    None => Err(RequestError::Invalid(
                        "no publisher connection: publish first".to_owned(),
                    )),
                };
                let _ = reply.send(result);
            }
        }
    }

    pub(super) async fn publish(
        &mut self,
        offer: String,
        tracks: Vec<TrackRequest>,
    ) -> Result<(String, Vec<PublicationInfo>), RequestError> {
        if !self.permissions.can_publish {
            return Err(RequestError::PermissionDenied("publishing"));
        }
        let limit = self.sfu.limits().max_publications_per_participant;
        if self.publications.len() + self.pending_tracks.len() + tracks.len() > limit {
            return Err(RequestError::LimitExceeded("publications per participant"));
        }
        for track in &tracks {
            validate_rids(track)?;
        }
        let mut mids: Vec<&str> = tracks.iter().map(|t| t.mid.as_str()).collect();
        mids.sort_unstable();
        mids.dedup();
        if mids.len() != tracks.len() {
            return Err(RequestError::Invalid("duplicate mid in tracks".to_owned()));
        }
        let publisher = match &self.publisher {
            Some(peer) => peer.clone(),
            None => {
                let peer = self
                    .sfu
                    .transport()
                    .new_peer(PeerRole::Publisher, self.publisher_events_tx.clone())
                    .await?;
                self.publisher = Some(peer.clone());
                peer
            }
        };
        let answer = publisher.answer(offer).await?;
        let codecs = negotiated_codecs(&answer);
        let mut created = Vec::with_capacity(tracks.len());
        for track in tracks {
            let Some(codec) = codecs.get(&track.mid) else {
                // Validate everything before announcing anything.
                return Err(RequestError::Invalid(format!(
                    "mid {:?} is not a negotiated media section of the offer",
                    track.mid
                )));
            };
            if codec.kind() != track.kind {
                return Err(RequestError::Invalid(format!(
                    "mid {:?} is {:?} in the offer, not {:?}",
                    track.mid,
                    codec.kind(),
                    track.kind
                )));
            }
            created.push((track, codec.clone()));
        }
        let mut publications = Vec::with_capacity(created.len());
        for (track, codec) in created {
            let info = PublicationInfo {
                id: PublicationId(self.sfu.next_id()),
                participant: self.id,
                kind: track.kind,
                source: track.source,
                name: track.name,
                codec: codec.mime_type.clone(),
                rids: track.rids.clone(),
            };
            self.room
                .send(RoomCommand::AddPublication {
                    info: info.clone(),
                    codec,
                    cache_since_keyframe: false,
                })
                .await?;
            self.pending_tracks.insert(track.mid, (info.id, track.rids));
            self.publications.push(info.id);
            publications.push(info);
        }
        let answer = with_start_bitrate(&answer, PUBLISHER_START_KBPS);
        Ok((answer, publications))
    }

    pub(super) async fn resume_state(&mut self) -> Result<ResumeState, RequestError> {
        let (reply, snapshot) = oneshot::channel();
        self.room.send(RoomCommand::Snapshot { reply }).await?;
        let room = snapshot.await.map_err(|_| RequestError::Closed)?;
        let mut subscriptions: Vec<(SubscriptionId, PublicationId)> = self
            .subscriptions
            .iter()
            .map(|(id, state)| (*id, state.publication))
            .collect();
        subscriptions.sort_unstable_by_key(|(id, _)| id.0);
        Ok(ResumeState {
            room,
            subscriptions,
        })
    }

    pub(super) async fn handle_room_event(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::Probe {
                bits_per_second,
                duration,
            } => {
                self.subscriber.probe(bits_per_second, duration);
                return;
            }
            RoomEvent::PathCongested => {
                self.subscriber.mark_path_congested();
                return;
            }
            _ => {}
        }
        let RoomEvent::PublicationRemoved { publication, .. } = &event else {
            self.emit(ParticipantEvent::Room(event));
            return;
        };
        let publication = *publication;
        // Tell the client first: it is the user-visible part.
        self.emit(ParticipantEvent::Room(event));
        let ended: Vec<SubscriptionId> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.publication == publication)
            .map(|(id, _)| *id)
            .collect();
        if ended.is_empty() {
            return;
        }
        for id in &ended {
            // Already gone from the room; only the local track remains.
            if let Some(state) = self.subscriptions.get_mut(id) {
                state.active = false;
            }
        }
        self.drop_subscriptions(ended).await;
        self.negotiate().await;
    }

    pub(super) async fn handle_peer_event(&mut self, role: PeerRole, event: PeerEvent) {
        match event {
            PeerEvent::LocalCandidate(candidate) => {
                self.emit(ParticipantEvent::Candidate(role, candidate));
            }
            PeerEvent::ConnectionState(state) => {
                debug!(?role, ?state, "connection state");
                if role == PeerRole::Publisher {
                    match state {
                        ConnectionState::Connected if self.publisher_interrupted => {
                            self.publisher_interrupted = false;
                            self.room.try_send(RoomCommand::PublisherReconnected {
                                participant: self.id,
                            });
                        }
                        ConnectionState::Connected => self.publisher_was_connected = true,
                        _ if self.publisher_was_connected => self.publisher_interrupted = true,
                        _ => {}
                    }
                }
                if role == PeerRole::Subscriber {
                    self.subscriber_connected = state == ConnectionState::Connected;
                    if self.subscriber_connected {
                        self.activate_subscriptions().await;
                    }
                }
            }
            PeerEvent::Congested(congestion) => {
                if role == PeerRole::Subscriber {
                    info!(
                        delivered_bps = congestion.delivered_bits_per_second,
                        sent_bps = congestion.sent_bits_per_second,
                        queue_delay_ms = congestion.queue_delay.as_millis() as u64,
                        during_probe = congestion.during_probe,
                        "downlink congested"
                    );
                    self.room.try_send(RoomCommand::Congested {
                        subscriber: self.id,
                        delivered_bits_per_second: congestion.delivered_bits_per_second,
                        media_bits_per_second: congestion
                            .during_probe
                            .then_some(congestion.sent_bits_per_second),
                    });
                }
            }
            PeerEvent::TrackOpened(track) => {
                let Some(publisher) = &self.publisher else {
                    return;
                };
                let Some(mid) = publisher.mid_of(&track).await else {
                    warn!(ssrc = %track.ssrc(), "remote track with no mid ignored");
                    return;
                };
                let Some((publication, rids)) = self.pending_tracks.remove(&mid) else {
                    warn!(%mid, "media on a mid that was not published ignored");
                    return;
                };
                let audio_level_extension_id = match track.codec().kind() {
                    MediaKind::Audio => publisher.audio_level_extension_id(&track).await,
                    MediaKind::Video => None,
                };
                debug!(%publication, %mid, ssrc = %track.ssrc(), codec = %track.codec().mime_type, ?rids, ?audio_level_extension_id, "track opened");
                track.spawn_reader(
                    rids,
                    audio_level_extension_id,
                    self.room.rtp_sink(publication),
                );
                self.room
                    .try_send(RoomCommand::AttachTrack { publication, track });
            }
        }
    }
}
