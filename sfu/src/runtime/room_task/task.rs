//! The room task's loop: control commands in, the room's state kept and its events told.

use super::*;

impl RoomTask {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<RoomCommand>) {
        info!(room = %self.name, "room opened");
        while let Some(command) = rx.recv().await {
            self.handle(command);
            if self.participants.is_empty() {
                // Leave the registry first so new joins create a fresh room, then refuse
                // whatever raced in before that.
                self.sfu
                    .room_closed(&self.name, self.handle_id, self.shard_index);
                if self.started {
                    self.sfu.notify(ServerEvent::RoomFinished {
                        room: self.name.clone(),
                    });
                }
                rx.close();
                while let Ok(command) = rx.try_recv() {
                    if let RoomCommand::Join { reply, .. } = command {
                        let _ = reply.send(Err(RequestError::Closed));
                    }
                }
                break;
            }
        }
        info!(room = %self.name, "room closed");
    }

    fn handle(&mut self, command: RoomCommand) {
        match command {
            RoomCommand::Join {
                info,
                events,
                reply,
            } => {
                let result = self.join(info, events);
                let _ = reply.send(result);
            }
            RoomCommand::Leave { participant } => self.leave(participant),
            RoomCommand::SetMuted {
                publication,
                muted,
                by,
                reply,
            } => {
                let _ = reply.send(self.set_muted(publication, muted, by));
            }
            RoomCommand::UpdateProfile {
                identity,
                update,
                reply,
            } => {
                let _ = reply.send(self.update_profile(&identity, update));
            }
            RoomCommand::Stats { reply } => {
                let _ = reply.send(RoomStatsReply {
                    participants: self.participants.len(),
                    publications: self.publications.len(),
                });
            }
            RoomCommand::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
            }
            RoomCommand::AddPublication { info } => {
                self.broadcast(
                    Some(info.participant),
                    RoomEvent::PublicationAdded(info.clone()),
                );
                self.sfu.notify(ServerEvent::PublicationAdded {
                    room: self.name.clone(),
                    publication: info.clone(),
                });
                self.publications.insert(info.id, info);
            }
            RoomCommand::RemovePublication {
                participant,
                publication,
                reply,
            } => {
                let owned = self
                    .publications
                    .get(&publication)
                    .is_some_and(|p| p.participant == participant);
                let result = if owned {
                    self.remove_publication(publication);
                    Ok(())
                } else {
                    Err(RequestError::NotFound(format!("publication {publication}")))
                };
                let _ = reply.send(result);
            }
            RoomCommand::GetPublication { publication, reply } => {
                let _ = reply.send(self.publications.get(&publication).cloned());
            }
        }
    }

    fn snapshot(&self) -> RoomSnapshot {
        RoomSnapshot {
            participants: self.participants.values().map(|p| p.info.clone()).collect(),
            publications: self.publications.values().cloned().collect(),
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
        let snapshot = self.snapshot();
        self.broadcast(None, RoomEvent::ParticipantJoined(info.clone()));
        debug!(room = %self.name, participant = %info.id, identity = %info.identity, "joined");
        if !self.started {
            self.started = true;
            self.sfu.notify(ServerEvent::RoomStarted {
                room: self.name.clone(),
            });
        }
        self.sfu.notify(ServerEvent::ParticipantJoined {
            room: self.name.clone(),
            participant: info.clone(),
        });
        self.participants
            .insert(info.id, ParticipantEntry { info, events });
        Ok(snapshot)
    }

    /// Records the mute, tells everyone and has the shard stop (or resume) forwarding.
    fn set_muted(
        &mut self,
        publication: PublicationId,
        muted: bool,
        by: Option<ParticipantId>,
    ) -> Result<PublicationInfo, RequestError> {
        let info = self
            .publications
            .get_mut(&publication)
            .filter(|info| by.is_none_or(|by| info.participant == by))
            .ok_or_else(|| RequestError::NotFound(format!("publication {publication}")))?;
        if info.muted == muted {
            return Ok(info.clone());
        }
        info.muted = muted;
        let info = info.clone();
        // Queued in order behind the shard's other commands; a full queue (a shard far
        // behind) gets it once there is room.
        if let Some(shard) = self.sfu.shards().get(self.shard_index).cloned()
            && !shard.queue_set_muted(publication, muted)
        {
            tokio::spawn(async move {
                if let Err(err) = shard.set_muted(publication, muted).await {
                    debug!(%publication, %err, "mute not applied by the shard");
                }
            });
        }
        self.broadcast(
            None,
            RoomEvent::PublicationMuted {
                publication,
                participant: info.participant,
                muted,
            },
        );
        debug!(room = %self.name, %publication, muted, "publication muted");
        Ok(info)
    }

    fn update_profile(&mut self, identity: &str, update: ProfileUpdate) -> Vec<ParticipantInfo> {
        let mut updated = Vec::new();
        for entry in self.participants.values_mut() {
            if entry.info.identity != identity {
                continue;
            }
            if let Some(name) = &update.name {
                entry.info.name = Some(name.clone());
            }
            if let Some(metadata) = &update.metadata {
                entry.info.metadata = Some(metadata.clone());
            }
            updated.push(entry.info.clone());
        }
        let changed = update.name.is_some() || update.metadata.is_some();
        for info in updated.iter().filter(|_| changed) {
            self.broadcast(None, RoomEvent::ParticipantUpdated(info.clone()));
        }
        updated
    }

    fn leave(&mut self, participant: ParticipantId) {
        let Some(left) = self.participants.remove(&participant) else {
            return;
        };
        let theirs: Vec<PublicationId> = self
            .publications
            .values()
            .filter(|p| p.participant == participant)
            .map(|p| p.id)
            .collect();
        for publication in theirs {
            self.remove_publication(publication);
        }
        self.broadcast(None, RoomEvent::ParticipantLeft(participant));
        debug!(room = %self.name, %participant, "left");
        self.sfu.notify(ServerEvent::ParticipantLeft {
            room: self.name.clone(),
            participant: left.info,
        });
    }

    /// Forgets the publication and tells everyone; the subscribers' participant tasks take
    /// its subscriptions off their connections on the event.
    fn remove_publication(&mut self, publication: PublicationId) {
        let Some(info) = self.publications.remove(&publication) else {
            return;
        };
        self.broadcast(
            None,
            RoomEvent::PublicationRemoved {
                publication,
                participant: info.participant,
            },
        );
        self.sfu.notify(ServerEvent::PublicationRemoved {
            room: self.name.clone(),
            publication: info,
        });
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
}
