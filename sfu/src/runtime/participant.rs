use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use super::room_task::{RoomCommand, RoomEvent, RoomHandle};
use super::{ParticipantInfo, PublicationInfo, RequestError, RoomSnapshot, Sfu, TrackRequest};
use crate::core::{MediaKind, ParticipantId, PublicationId, SubscriptionId};
use crate::transport::{
    ConnectionState, IceCandidate, LocalTrack, Peer, PeerEvent, PeerRole, SubscriberFeedback,
    negotiated_codecs, with_start_bitrate,
};

/// Where a publishing Chrome starts its uplink estimate (`x-google-start-bitrate` in our
/// answer): high enough for all three simulcast layers within a few seconds, low enough that
/// GCC backs off in about a second on a slower uplink (decisions §22).
pub(super) const PUBLISHER_START_KBPS: u32 = 1_000;

/// How often the subscriber connection's bandwidth estimate is read.
const BANDWIDTH_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Simulcast rids: a few short tokens (RFC 8851 allows alphanumerics, `-` and `_`).
pub(super) fn validate_rids(track: &TrackRequest) -> Result<(), RequestError> {
    if track.rids.is_empty() {
        return Ok(());
    }
    let invalid = |why: &str| Err(RequestError::Invalid(format!("mid {:?}: {why}", track.mid)));
    if track.kind != crate::core::MediaKind::Video {
        return invalid("simulcast is for video");
    }
    if track.rids.len() > 3 {
        return invalid("at most 3 simulcast encodings");
    }
    let well_formed = |rid: &String| {
        (1..=16).contains(&rid.len())
            && rid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !track.rids.iter().all(well_formed) {
        return invalid("rids must be 1-16 characters of A-Z a-z 0-9 - _");
    }
    let mut unique = track.rids.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != track.rids.len() {
        return invalid("duplicate rid");
    }
    Ok(())
}

/// What a room token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    pub can_publish: bool,
    pub can_subscribe: bool,
}

/// What the participant's client must be told, in order.
#[derive(Debug, Clone)]
pub enum ParticipantEvent {
    /// A new offer for the subscriber connection; the client answers with
    /// [`Participant::apply_answer`].
    Offer(String),
    /// A local ICE candidate of one of the two connections.
    Candidate(PeerRole, IceCandidate),
    /// What happened in the room that concerns this participant.
    Room(RoomEvent),
}

pub(super) enum Command {
    Publish {
        offer: String,
        tracks: Vec<TrackRequest>,
        reply: oneshot::Sender<Result<(String, Vec<PublicationInfo>), RequestError>>,
    },
    Unpublish {
        publication: PublicationId,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    Subscribe {
        publication: PublicationId,
        reply: oneshot::Sender<Result<SubscriptionId, RequestError>>,
    },
    Unsubscribe {
        subscription: SubscriptionId,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    Answer {
        sdp: String,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    Candidate {
        role: PeerRole,
        candidate: IceCandidate,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    SetPreferredLayer {
        subscription: SubscriptionId,
        spatial: u8,
        temporal: Option<u8>,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    SetPaused {
        subscription: SubscriptionId,
        paused: bool,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    Resume {
        reply: oneshot::Sender<Result<ResumeState, RequestError>>,
    },
    RestartIce {
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
}

/// What a client that re-attaches to its participant must know to reconcile.
#[derive(Debug, Clone)]
pub struct ResumeState {
    /// The room now, the participant itself included.
    pub room: RoomSnapshot,
    /// The participant's subscriptions and what each receives.
    pub subscriptions: Vec<(SubscriptionId, PublicationId)>,
}

/// A participant in a room, owned by its signaling session. Dropping it (or calling
/// [`Participant::leave`]) closes its connections and tells the room.
pub struct Participant {
    id: ParticipantId,
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<ParticipantEvent>,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant").field("id", &self.id).finish()
    }
}

impl Participant {
    pub(super) fn from_parts(
        id: ParticipantId,
        commands: mpsc::Sender<Command>,
        events: mpsc::Receiver<ParticipantEvent>,
    ) -> Self {
        Self {
            id,
            commands,
            events,
        }
    }

    pub(super) async fn join(
        sfu: Sfu,
        room: RoomHandle,
        room_name: &str,
        identity: String,
        permissions: Permissions,
    ) -> Result<(Self, RoomSnapshot), RequestError> {
        let id = ParticipantId(sfu.next_id());
        let info = ParticipantInfo { id, identity };
        let (room_events_tx, room_events) = mpsc::channel(1024);
        let (reply, snapshot) = oneshot::channel();
        room.send(RoomCommand::Join {
            info: info.clone(),
            events: room_events_tx,
            reply,
        })
        .await?;
        let snapshot = snapshot.await.map_err(|_| RequestError::Closed)??;
        if let Some(shard) = sfu.shard() {
            let participant = super::shard_participant::start(
                sfu.clone(),
                shard,
                room,
                room_name,
                id,
                permissions,
                room_events,
            )
            .await?;
            return Ok((participant, snapshot));
        }

        let (subscriber_events_tx, subscriber_events) = mpsc::channel(256);
        let subscriber = match sfu
            .transport()
            .new_peer(PeerRole::Subscriber, subscriber_events_tx)
            .await
        {
            Ok(peer) => peer,
            Err(err) => {
                room.try_send(RoomCommand::Leave { participant: id });
                return Err(err.into());
            }
        };
        let (commands_tx, commands) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(1024);
        let (publisher_events_tx, publisher_events) = mpsc::channel(256);
        let task = ParticipantTask {
            id,
            sfu,
            room,
            permissions,
            events: events_tx,
            publisher: None,
            publisher_events_tx,
            subscriber,
            subscriber_connected: false,
            pending_tracks: HashMap::new(),
            publications: Vec::new(),
            subscriptions: HashMap::new(),
            awaiting_answer: false,
            renegotiate: false,
            offered: false,
            ice_restart_pending: false,
            publisher_was_connected: false,
            publisher_interrupted: false,
        };
        let span = info_span!("participant", participant = %id);
        tokio::spawn(
            task.run(commands, room_events, publisher_events, subscriber_events)
                .instrument(span),
        );
        Ok((
            Self {
                id,
                commands: commands_tx,
                events,
            },
            snapshot,
        ))
    }

    pub fn id(&self) -> ParticipantId {
        self.id
    }

    /// The next thing to tell the client; `None` once the participant has ended.
    pub async fn next_event(&mut self) -> Option<ParticipantEvent> {
        self.events.recv().await
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> Command,
    ) -> Result<T, RequestError> {
        let (reply, result) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| RequestError::Closed)?;
        result.await.map_err(|_| RequestError::Closed)?
    }

    /// Answers the client's publisher offer; returns the answer and one publication per track.
    pub async fn publish(
        &self,
        offer: String,
        tracks: Vec<TrackRequest>,
    ) -> Result<(String, Vec<PublicationInfo>), RequestError> {
        self.call(|reply| Command::Publish {
            offer,
            tracks,
            reply,
        })
        .await
    }

    pub async fn unpublish(&self, publication: PublicationId) -> Result<(), RequestError> {
        self.call(|reply| Command::Unpublish { publication, reply })
            .await
    }

    /// Adds the publication to the subscriber connection; an [`ParticipantEvent::Offer`]
    /// follows.
    pub async fn subscribe(
        &self,
        publication: PublicationId,
    ) -> Result<SubscriptionId, RequestError> {
        self.call(|reply| Command::Subscribe { publication, reply })
            .await
    }

    pub async fn unsubscribe(&self, subscription: SubscriptionId) -> Result<(), RequestError> {
        self.call(|reply| Command::Unsubscribe {
            subscription,
            reply,
        })
        .await
    }

    /// Applies the client's answer to the latest subscriber offer.
    pub async fn apply_answer(&self, sdp: String) -> Result<(), RequestError> {
        self.call(|reply| Command::Answer { sdp, reply }).await
    }

    pub async fn add_ice_candidate(
        &self,
        role: PeerRole,
        candidate: IceCandidate,
    ) -> Result<(), RequestError> {
        self.call(|reply| Command::Candidate {
            role,
            candidate,
            reply,
        })
        .await
    }

    /// Asks for at most this simulcast layer on a subscription.
    pub async fn set_preferred_layer(
        &self,
        subscription: SubscriptionId,
        spatial: u8,
        temporal: Option<u8>,
    ) -> Result<(), RequestError> {
        self.call(|reply| Command::SetPreferredLayer {
            subscription,
            spatial,
            temporal,
            reply,
        })
        .await
    }

    /// Pauses (nothing is forwarded) or resumes a subscription.
    pub async fn set_paused(
        &self,
        subscription: SubscriptionId,
        paused: bool,
    ) -> Result<(), RequestError> {
        self.call(|reply| Command::SetPaused {
            subscription,
            paused,
            reply,
        })
        .await
    }

    /// Re-attaches a new client connection: returns the current room and subscriptions and,
    /// if a subscriber offer is still waiting for its answer (it may have been lost with the old
    /// connection), sends it again as an [`ParticipantEvent::Offer`].
    ///
    /// Call it after discarding the events queued while nobody was reading: the room state
    /// returned replaces them.
    pub async fn resume(&self) -> Result<ResumeState, RequestError> {
        self.call(|reply| Command::Resume { reply }).await
    }

    /// Offers the subscriber connection again with new ICE credentials (an
    /// [`ParticipantEvent::Offer`] follows), or after the outstanding offer is answered. Does
    /// nothing while the subscriber connection was never negotiated.
    pub async fn restart_ice(&self) -> Result<(), RequestError> {
        self.call(|reply| Command::RestartIce { reply }).await
    }

    /// Events queued while nobody read them (a parked participant), without waiting.
    pub fn take_queued_events(&mut self) -> Vec<ParticipantEvent> {
        let mut queued = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            queued.push(event);
        }
        queued
    }

    /// Leaves the room. Dropping the participant does the same.
    pub fn leave(self) {}
}

/// Where a subscription's track is in the subscriber connection's offer/answer cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrackNegotiation {
    /// Added after the outstanding offer was made: not in any offer yet.
    Pending,
    /// In the offer that waits for its answer.
    Offered,
    /// In an answered offer: the transceiver sends, and packets written now reach the client.
    Answered,
}

struct SubscriptionState {
    publication: PublicationId,
    track: LocalTrack,
    negotiation: TrackNegotiation,
    /// Added to the room's routing core (once answered and connected).
    active: bool,
    /// The layer asked for, kept until the subscription is active.
    preferred: Option<(u8, Option<u8>)>,
    /// Paused by the subscriber, kept until the subscription is active.
    paused: bool,
    video: bool,
}

struct ParticipantTask {
    id: ParticipantId,
    sfu: Sfu,
    room: RoomHandle,
    permissions: Permissions,
    events: mpsc::Sender<ParticipantEvent>,
    publisher: Option<Peer>,
    publisher_events_tx: mpsc::Sender<PeerEvent>,
    subscriber: Peer,
    subscriber_connected: bool,
    /// Publications announced in a publish offer, by mid, waiting for their first RTP, with
    /// their simulcast rids.
    pending_tracks: HashMap<String, (PublicationId, Vec<String>)>,
    publications: Vec<PublicationId>,
    subscriptions: HashMap<SubscriptionId, SubscriptionState>,
    awaiting_answer: bool,
    renegotiate: bool,
    /// The subscriber connection has been offered at least once (an ICE restart needs that).
    offered: bool,
    /// The next subscriber offer restarts ICE.
    ice_restart_pending: bool,
    /// The publisher connection has been connected once.
    publisher_was_connected: bool,
    /// It left the connected state since (an ICE restart, a network change).
    publisher_interrupted: bool,
}

impl ParticipantTask {
    async fn run(
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
    async fn report_bandwidth(&mut self) {
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

    async fn publish(
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

    async fn resume_state(&mut self) -> Result<ResumeState, RequestError> {
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
        let (info, codec) = found
            .await
            .map_err(|_| RequestError::Closed)?
            .ok_or_else(|| RequestError::NotFound(format!("publication {publication}")))?;
        let id = SubscriptionId(self.sfu.next_id());
        let ssrc = rand::random::<u32>();
        let track = self
            .subscriber
            .add_local_track(info.sync_group(), id.to_string(), &codec, ssrc)
            .await?;
        self.subscriptions.insert(
            id,
            SubscriptionState {
                publication,
                track,
                negotiation: TrackNegotiation::Pending,
                active: false,
                preferred: None,
                paused: false,
                video: info.kind == crate::core::MediaKind::Video,
            },
        );
        Ok(id)
    }

    async fn drop_subscription(&mut self, subscription: SubscriptionId) {
        self.drop_subscriptions(vec![subscription]).await;
    }

    /// Removes the subscriptions and their tracks. Each removal waits (bounded) for its
    /// track's queued packets; the waits run together, so the actor is held once, not per track.
    async fn drop_subscriptions(&mut self, subscriptions: Vec<SubscriptionId>) {
        let mut tracks = Vec::with_capacity(subscriptions.len());
        for subscription in subscriptions {
            let Some(state) = self.subscriptions.remove(&subscription) else {
                continue;
            };
            if state.active {
                self.room
                    .try_send(RoomCommand::RemoveSubscription { subscription });
            }
            tracks.push((subscription, state.track));
        }
        let subscriber = &self.subscriber;
        let removals = tracks.iter().map(|(subscription, track)| async move {
            if let Err(err) = subscriber.remove_local_track(track).await {
                debug!(%subscription, %err, "removing subscriber track");
            }
        });
        futures::future::join_all(removals).await;
    }

    /// Sends a new subscriber offer, or remembers to once the pending one is answered.
    async fn negotiate(&mut self) {
        if self.awaiting_answer {
            self.renegotiate = true;
            return;
        }
        let ice_restart = std::mem::take(&mut self.ice_restart_pending);
        match self.subscriber.offer(ice_restart).await {
            Ok(sdp) => {
                if ice_restart {
                    debug!("subscriber ICE restart offered");
                }
                self.offered = true;
                self.awaiting_answer = true;
                self.advance_negotiation(TrackNegotiation::Pending, TrackNegotiation::Offered);
                self.emit(ParticipantEvent::Offer(sdp));
            }
            Err(err) => warn!(%err, "subscriber offer failed"),
        }
    }

    async fn apply_answer(&mut self, sdp: String) -> Result<(), RequestError> {
        if !self.awaiting_answer {
            return Err(RequestError::Invalid(
                "no offer is waiting for an answer".to_owned(),
            ));
        }
        self.subscriber.apply_answer(sdp).await?;
        self.awaiting_answer = false;
        self.advance_negotiation(TrackNegotiation::Offered, TrackNegotiation::Answered);
        Ok(())
    }

    fn advance_negotiation(&mut self, from: TrackNegotiation, to: TrackNegotiation) {
        for state in self.subscriptions.values_mut() {
            if state.negotiation == from {
                state.negotiation = to;
            }
        }
    }

    /// Starts forwarding negotiated subscriptions. Waiting for the connection means the
    /// keyframe requested for a new subscriber reaches it instead of a closed DTLS session;
    /// waiting for the answer that covers the track means the first packets (an ingest
    /// publication's cached keyframe) are not dropped by a transceiver that does not send yet.
    async fn activate_subscriptions(&mut self) {
        if !self.subscriber_connected || self.awaiting_answer {
            return;
        }
        let ready: Vec<SubscriptionId> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| !s.active && s.negotiation == TrackNegotiation::Answered)
            .map(|(id, _)| *id)
            .collect();
        let mut failed = Vec::new();
        for id in ready {
            if let Err(err) = self.activate(id).await {
                warn!(subscription = %id, %err, "subscription not started");
                failed.push(id);
            }
        }
        if !failed.is_empty() {
            self.drop_subscriptions(failed).await;
            self.renegotiate = true;
        }
    }

    async fn activate(&mut self, id: SubscriptionId) -> Result<(), RequestError> {
        let state = self
            .subscriptions
            .get(&id)
            .expect("invariant: activate is called with a held subscription");
        let payload_type = state.track.payload_type().await?;
        let room = self.room.clone();
        let subscriber = self.id;
        let sink = state
            .track
            .spawn_io(
                self.sfu.limits().subscription_queue,
                move |feedback| match feedback {
                    SubscriberFeedback::KeyframeRequest => {
                        room.try_send(RoomCommand::KeyframeRequested { subscription: id });
                    }
                    SubscriberFeedback::Nacked(packets) => {
                        room.try_send(RoomCommand::Nacked {
                            subscription: id,
                            packets,
                        });
                    }
                    SubscriberFeedback::Remb(bits_per_second) => {
                        room.try_send(RoomCommand::Remb {
                            subscriber,
                            bits_per_second,
                        });
                    }
                    SubscriberFeedback::RoundTrip(round_trip) => {
                        room.try_send(RoomCommand::RoundTrip {
                            subscriber,
                            round_trip,
                        });
                    }
                },
            );
        let (reply, result) = oneshot::channel();
        self.room
            .send(RoomCommand::AddSubscription {
                subscription: id,
                subscriber: self.id,
                publication: state.publication,
                ssrc: state.track.ssrc(),
                payload_type,
                sink,
                horizons: self.subscriber.repair_horizons(),
                reply,
            })
            .await?;
        result.await.map_err(|_| RequestError::Closed)??;
        if let Some(state) = self.subscriptions.get_mut(&id) {
            state.active = true;
            if let Some((spatial, temporal)) = state.preferred {
                self.room
                    .send(RoomCommand::SetPreferredLayer {
                        subscription: id,
                        spatial,
                        temporal,
                    })
                    .await?;
            }
            if state.paused {
                self.room
                    .send(RoomCommand::SetPaused {
                        subscription: id,
                        paused: true,
                    })
                    .await?;
            }
        }
        Ok(())
    }

    async fn handle_room_event(&mut self, event: RoomEvent) {
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

    async fn handle_peer_event(&mut self, role: PeerRole, event: PeerEvent) {
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
