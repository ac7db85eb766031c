//! The participant task: serves its [`Participant`](super::Participant) handle's commands,
//! turning each into one room or shard request, and relays room and shard events to the
//! client. The room task keeps the room's control state (who is in it, what is published) and
//! tells everyone about it; the shard owns the participant's two connections, the media and
//! the room's `core::Room`.

mod events;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info_span, warn};

use super::{
    Command, PUBLISHER_START_KBPS, ParticipantEvent, Permissions, ResumeState, WhepAnswer,
    validate_rids,
};
use crate::core::{ParticipantId, PublicationId, SubscriptionId};
use crate::runtime::room_task::{RoomCommand, RoomEvent, RoomHandle};
use crate::runtime::{
    ParticipantInfo, PublicationInfo, RequestError, Sfu, SubscriberSlot, TrackRequest,
};
use crate::shard::{
    PublishTrack, Shard, ShardError, ShardEvent, SubscriptionChange, WhepOptions, WhepSource,
    WhepSubscription,
};
use crate::transport::{TransportError, negotiated_codecs, with_start_bitrate};

/// Places the participant on its room's shard once the room has accepted it, and starts its
/// task; returns the task's command queue, the client's event queue and whether one of its
/// connections is failed now (see `Participant::transport_failed`).
pub(super) async fn start(
    sfu: Sfu,
    room: RoomHandle,
    room_name: &str,
    info: &ParticipantInfo,
    permissions: Permissions,
    room_events: mpsc::Receiver<RoomEvent>,
) -> Result<
    (
        mpsc::Sender<Command>,
        mpsc::Receiver<ParticipantEvent>,
        tokio::sync::watch::Receiver<bool>,
    ),
    RequestError,
> {
    let shard = Arc::clone(room.shard());
    let (shard_events_tx, shard_events) = mpsc::channel(64);
    let id = info.id;
    if let Err(err) = shard
        .join(room_name, id, &info.identity, shard_events_tx)
        .await
    {
        room.try_send(RoomCommand::Leave { participant: id });
        return Err(from_shard(err));
    }
    let (commands_tx, commands) = mpsc::channel(64);
    let (events_tx, events) = mpsc::channel(1024);
    let (transport_failed, failed) = tokio::sync::watch::channel(false);
    let task = ParticipantTask {
        id,
        sfu,
        shard,
        room,
        permissions,
        events: events_tx,
        publications: Vec::new(),
        rids: HashMap::new(),
        subscriptions: HashMap::new(),
        awaiting_answer: None,
        renegotiate: false,
        offered: false,
        ice_restart_pending: false,
        whep: false,
        follows_room: false,
        failed: (false, false),
        transport_failed,
        subscriber_slot: None,
    };
    let span = info_span!("participant", participant = %id);
    tokio::spawn(
        task.run(commands, room_events, shard_events)
            .instrument(span),
    );
    Ok((commands_tx, events, failed))
}

/// A shard error as the client sees it.
fn from_shard(err: ShardError) -> RequestError {
    match err {
        ShardError::UnknownPublication(p) => RequestError::NotFound(format!("publication {p}")),
        ShardError::UnknownSubscription(s) => RequestError::NotFound(format!("subscription {s}")),
        ShardError::InvalidSdp(e) => TransportError::InvalidSdp(e).into(),
        ShardError::Unsupported(e) => RequestError::Unsupported(e),
        ShardError::InvalidCandidate(e) => TransportError::InvalidCandidate(e).into(),
        ShardError::Peer(e) => TransportError::Peer(e).into(),
        ShardError::LimitExceeded(what) => RequestError::LimitExceeded(what),
        ShardError::TooManyCandidates(_) => {
            RequestError::LimitExceeded("candidates per connection")
        }
        ShardError::Stopped => RequestError::Closed,
        other => RequestError::Invalid(other.to_string()),
    }
}

struct ParticipantTask {
    id: ParticipantId,
    sfu: Sfu,
    shard: Arc<Shard>,
    room: RoomHandle,
    permissions: Permissions,
    events: mpsc::Sender<ParticipantEvent>,
    publications: Vec<PublicationId>,
    /// The simulcast rids of each of its publications (dynacast names layers by rid).
    rids: HashMap<PublicationId, Vec<String>>,
    /// Its subscriptions and what each receives (`None`: a WHEP track waiting for a
    /// publication, see `follows_room`).
    subscriptions: HashMap<SubscriptionId, Option<PublicationId>>,
    /// The subscriber offer that waits for its answer.
    awaiting_answer: Option<String>,
    /// Subscriptions changed while an offer was out: offer again after its answer.
    renegotiate: bool,
    /// The subscriber connection has been offered at least once (an ICE restart needs that).
    offered: bool,
    /// The next subscriber offer restarts ICE.
    ice_restart_pending: bool,
    /// A WHEP viewer: the client offered its subscriber connection, and the server never
    /// offers it again.
    whep: bool,
    /// A WHEP viewer that follows the room: the shard moves its tracks when their
    /// publications end (`ShardEvent::SubscriptionMoved`), so they are not removed here.
    follows_room: bool,
    /// Whether the publisher and the subscriber connection are failed now.
    failed: (bool, bool),
    /// True while one of the participant's connections is failed (see
    /// `Participant::transport_failed`).
    transport_failed: tokio::sync::watch::Sender<bool>,
    /// Its place among the server's subscriber connections, from its first subscription (or
    /// WHEP offer) until it ends: a resume or a further subscription needs no new one.
    subscriber_slot: Option<SubscriberSlot>,
}

impl ParticipantTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut room_events: mpsc::Receiver<RoomEvent>,
        mut shard_events: mpsc::Receiver<ShardEvent>,
    ) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle_command(command).await,
                    None => break,
                },
                Some(event) = room_events.recv() => self.handle_room_event(event).await,
                Some(event) = shard_events.recv() => self.handle_shard_event(event),
            }
        }
        let _ = self
            .room
            .send(RoomCommand::Leave {
                participant: self.id,
            })
            .await;
        self.shard.leave(self.id).await;
        debug!("participant ended");
    }

    fn emit(&self, event: ParticipantEvent) {
        if self.events.try_send(event).is_err() {
            warn!("participant event dropped: the session is not reading");
        }
    }

    async fn handle_command(&mut self, command: Command) {
        match command {
            Command::Publish {
                offer,
                tracks,
                reply,
            } => {
                let _ = reply.send(self.publish(offer, tracks).await);
            }
            Command::Unpublish { publication, reply } => {
                let _ = reply.send(self.unpublish(publication).await);
            }
            Command::SetPermissions {
                can_publish,
                can_subscribe,
                reply,
            } => {
                self.set_permissions(can_publish, can_subscribe).await;
                let _ = reply.send(Ok(()));
            }
            Command::SetMuted {
                publication,
                muted,
                reply,
            } => {
                let result = self
                    .room
                    .set_muted(publication, muted, Some(self.id))
                    .await
                    .map(|_| ());
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
                let result = self.change(subscription, SubscriptionChange::Remove).await;
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok {
                    self.subscriptions.remove(&subscription);
                    self.negotiate().await;
                }
            }
            Command::Answer { sdp, reply } => {
                let result = match self.awaiting_answer {
                    None => Err(RequestError::Invalid(
                        "no offer is waiting for an answer".to_owned(),
                    )),
                    Some(_) => self
                        .shard
                        .apply_answer(self.id, sdp)
                        .await
                        .map_err(from_shard),
                };
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok {
                    self.awaiting_answer = None;
                    if std::mem::take(&mut self.renegotiate) {
                        self.negotiate().await;
                    }
                }
            }
            Command::Candidate {
                role,
                candidate,
                reply,
            } => {
                let result = self
                    .shard
                    .add_candidate(self.id, role, candidate)
                    .await
                    .map_err(from_shard);
                let _ = reply.send(result);
            }
            Command::SetPreferredLayer {
                subscription,
                spatial,
                temporal,
                reply,
            } => {
                let change = SubscriptionChange::PreferLayer { spatial, temporal };
                let _ = reply.send(self.change(subscription, change).await);
            }
            Command::SetPaused {
                subscription,
                paused,
                reply,
            } => {
                let change = SubscriptionChange::Paused(paused);
                let _ = reply.send(self.change(subscription, change).await);
            }
            Command::Resume { reply } => {
                let result = self.resume_state().await;
                let ok = result.is_ok();
                let _ = reply.send(result);
                // The offer may have died with the old socket: send it again.
                if ok && let Some(sdp) = self.awaiting_answer.clone() {
                    self.emit(ParticipantEvent::Offer(sdp));
                }
            }
            Command::Whep {
                offer,
                sources,
                options,
                reply,
            } => {
                let _ = reply.send(self.whep(offer, sources, options).await);
            }
            Command::WhepReoffer { offer, reply } => {
                let result = if self.whep {
                    self.shard
                        .whep_reoffer(self.id, offer)
                        .await
                        .map_err(from_shard)
                } else {
                    Err(RequestError::Invalid(
                        "not a WHEP viewer: the server offers this connection".to_owned(),
                    ))
                };
                let _ = reply.send(result);
            }
            Command::RestartIce { reply } => {
                let _ = reply.send(Ok(()));
                if self.offered {
                    self.ice_restart_pending = true;
                    self.negotiate().await;
                }
            }
        }
    }

    async fn publish(
        &mut self,
        offer: String,
        tracks: Vec<TrackRequest>,
    ) -> Result<(String, Vec<PublicationInfo>), RequestError> {
        // An offer without tracks renegotiates the connection (an ICE restart, or the data
        // channels every participant may open).
        if !tracks.is_empty() && !self.permissions.can_publish {
            return Err(RequestError::PermissionDenied("publishing"));
        }
        let limit = self.sfu.limits().max_publications_per_participant;
        if self.publications.len() + tracks.len() > limit {
            return Err(RequestError::LimitExceeded("publications per participant"));
        }
        for track in &tracks {
            validate_rids(track)?;
        }
        let ids: Vec<PublicationId> = tracks
            .iter()
            .map(|_| PublicationId(self.sfu.next_id()))
            .collect();
        let requests = tracks
            .iter()
            .zip(&ids)
            .map(|(track, id)| PublishTrack {
                mid: track.mid.clone(),
                kind: track.kind,
                publication: *id,
                rids: track.rids.clone(),
            })
            .collect();
        let answer = self
            .shard
            .publish(self.id, offer, requests)
            .await
            .map_err(from_shard)?;
        let codecs = negotiated_codecs(&answer);
        let mut publications = Vec::with_capacity(tracks.len());
        for (track, id) in tracks.into_iter().zip(ids) {
            let codec = codecs.get(&track.mid).ok_or_else(|| {
                RequestError::Invalid(format!("mid {:?} was not negotiated", track.mid))
            })?;
            let info = PublicationInfo {
                id,
                participant: self.id,
                kind: track.kind,
                source: track.source,
                name: track.name,
                codec: codec.mime_type.clone(),
                rids: track.rids,
                muted: false,
            };
            self.room
                .send(RoomCommand::AddPublication { info: info.clone() })
                .await?;
            self.publications.push(id);
            self.rids.insert(id, info.rids.clone());
            publications.push(info);
        }
        Ok((
            with_start_bitrate(&answer, PUBLISHER_START_KBPS),
            publications,
        ))
    }

    /// Takes the grants given from now on, ending what they no longer allow.
    async fn set_permissions(&mut self, can_publish: Option<bool>, can_subscribe: Option<bool>) {
        self.permissions.can_publish = can_publish.unwrap_or(self.permissions.can_publish);
        self.permissions.can_subscribe = can_subscribe.unwrap_or(self.permissions.can_subscribe);
        if !self.permissions.can_publish {
            for publication in self.publications.clone() {
                if let Err(err) = self.unpublish(publication).await {
                    debug!(%publication, %err, "unpublishing after the grant was revoked");
                }
            }
        }
        if !self.permissions.can_subscribe && !self.subscriptions.is_empty() {
            for subscription in self.subscriptions.keys().copied().collect::<Vec<_>>() {
                if let Err(err) = self.change(subscription, SubscriptionChange::Remove).await {
                    debug!(%subscription, %err, "unsubscribing after the grant was revoked");
                }
                self.subscriptions.remove(&subscription);
                self.emit(ParticipantEvent::SubscriptionRevoked(subscription));
            }
            self.negotiate().await;
        }
        if !self.permissions.can_subscribe {
            // A demoted viewer receives nothing: its place goes back to the capacity, and a
            // grant given back is admitted again at its next subscription.
            self.subscriber_slot = None;
        }
    }

    async fn unpublish(&mut self, publication: PublicationId) -> Result<(), RequestError> {
        let (tx, rx) = oneshot::channel();
        self.room
            .send(RoomCommand::RemovePublication {
                participant: self.id,
                publication,
                reply: tx,
            })
            .await?;
        rx.await.unwrap_or(Err(RequestError::Closed))?;
        self.publications.retain(|p| *p != publication);
        self.rids.remove(&publication);
        self.shard
            .unpublish(self.id, publication)
            .await
            .map_err(from_shard)
    }

    async fn subscribe(
        &mut self,
        publication: PublicationId,
    ) -> Result<SubscriptionId, RequestError> {
        if !self.permissions.can_subscribe {
            return Err(RequestError::PermissionDenied("subscribing"));
        }
        if self.subscriptions.len() >= self.sfu.limits().max_subscriptions_per_participant {
            return Err(RequestError::LimitExceeded("subscriptions per participant"));
        }
        let (reply, found) = oneshot::channel();
        self.room
            .send(RoomCommand::GetPublication { publication, reply })
            .await?;
        found
            .await
            .map_err(|_| RequestError::Closed)?
            .ok_or_else(|| RequestError::NotFound(format!("publication {publication}")))?;
        // Should the shard refuse the subscription, the slot is given back.
        let admitted = self.admit()?;
        let id = SubscriptionId(self.sfu.next_id());
        self.shard
            .subscribe(self.id, id, publication)
            .await
            .map_err(from_shard)?;
        self.subscriber_slot = self.subscriber_slot.take().or(admitted);
        self.subscriptions.insert(id, Some(publication));
        Ok(id)
    }

    /// A slot among the server's subscriber connections when the participant holds none yet
    /// (its first subscription opens its subscriber connection); `None` when it holds one.
    fn admit(&self) -> Result<Option<SubscriberSlot>, RequestError> {
        match self.subscriber_slot {
            Some(_) => Ok(None),
            None => self.sfu.admit_subscriber(&self.shard).map(Some),
        }
    }

    async fn change(
        &mut self,
        subscription: SubscriptionId,
        change: SubscriptionChange,
    ) -> Result<(), RequestError> {
        if !self.subscriptions.contains_key(&subscription) {
            return Err(RequestError::NotFound(format!(
                "subscription {subscription}"
            )));
        }
        self.shard
            .change_subscription(self.id, subscription, change)
            .await
            .map_err(from_shard)
    }

    async fn whep(
        &mut self,
        offer: String,
        sources: Vec<WhepSource>,
        options: WhepOptions,
    ) -> Result<WhepAnswer, RequestError> {
        if !self.permissions.can_subscribe {
            return Err(RequestError::PermissionDenied("subscribing"));
        }
        if self.whep || self.offered || !self.subscriptions.is_empty() {
            return Err(RequestError::Invalid(
                "the subscriber connection is negotiated already".to_owned(),
            ));
        }
        if sources.len() > self.sfu.limits().max_subscriptions_per_participant {
            return Err(RequestError::LimitExceeded("subscriptions per participant"));
        }
        let admitted = self.admit()?;
        let wanted: Vec<WhepSubscription> = sources
            .into_iter()
            .map(|source| WhepSubscription {
                subscription: SubscriptionId(self.sfu.next_id()),
                source,
            })
            .collect();
        let sdp = self
            .shard
            .whep(self.id, offer, wanted.clone(), options)
            .await
            .map_err(from_shard)?;
        self.whep = true;
        self.subscriber_slot = self.subscriber_slot.take().or(admitted);
        self.follows_room = options.follow_room;
        let subscriptions: Vec<(SubscriptionId, Option<PublicationId>)> = wanted
            .into_iter()
            .map(|w| match w.source {
                WhepSource::Publication(publication) => (w.subscription, Some(publication)),
                WhepSource::Waiting(_) => (w.subscription, None),
            })
            .collect();
        self.subscriptions.extend(subscriptions.iter().copied());
        Ok(WhepAnswer { sdp, subscriptions })
    }

    /// Sends a new subscriber offer, or remembers to once the outstanding one is answered.
    /// A WHEP viewer's connection is the client's to offer: nothing is sent.
    async fn negotiate(&mut self) {
        if self.whep {
            return;
        }
        if self.awaiting_answer.is_some() {
            self.renegotiate = true;
            return;
        }
        let ice_restart = std::mem::take(&mut self.ice_restart_pending);
        match self.shard.subscriber_offer(self.id, ice_restart).await {
            Ok(sdp) => {
                if ice_restart {
                    debug!("subscriber ICE restart offered");
                }
                self.offered = true;
                self.awaiting_answer = Some(sdp.clone());
                self.emit(ParticipantEvent::Offer(sdp));
            }
            Err(err) => warn!(%err, "subscriber offer failed"),
        }
    }

    async fn resume_state(&mut self) -> Result<ResumeState, RequestError> {
        let (reply, snapshot) = oneshot::channel();
        self.room.send(RoomCommand::Snapshot { reply }).await?;
        let room = snapshot.await.map_err(|_| RequestError::Closed)?;
        let mut subscriptions: Vec<(SubscriptionId, PublicationId)> = self
            .subscriptions
            .iter()
            .filter_map(|(id, publication)| Some((*id, (*publication)?)))
            .collect();
        subscriptions.sort_unstable_by_key(|(id, _)| id.0);
        Ok(ResumeState {
            room,
            subscriptions,
        })
    }
}
