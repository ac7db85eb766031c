//! A participant of a room: the handle its signaling session holds, the events its client must
//! be told, and the commands its task serves (see `task`).

use tokio::sync::{mpsc, oneshot};

use super::room_task::{RoomCommand, RoomEvent, RoomHandle};
use super::{
    ParticipantInfo, Profile, PublicationInfo, RequestError, RoomSnapshot, Sfu, TrackRequest,
};
use crate::core::{ParticipantId, PublicationId, SubscriptionId};
use crate::shard::{WhepOptions, WhepSource};
use crate::transport::{ConnectionState, IceCandidate, PeerRole};

/// Where a publishing Chrome starts its uplink estimate (`x-google-start-bitrate` in our
/// answer): high enough for all three simulcast layers within a few seconds, low enough that
/// GCC backs off in about a second on a slower uplink (decisions §22).
pub(super) const PUBLISHER_START_KBPS: u32 = 1_000;

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
    /// The server ended one of its subscriptions because its `canSubscribe` grant was revoked.
    SubscriptionRevoked(SubscriptionId),
    /// Data messages it sent were not delivered (`dropped` since the last such event).
    DataRejected {
        reason: crate::shard::DataRejection,
        dropped: u32,
    },
    /// One of its connections changed state (a session with a client of its own may ignore
    /// these; WHIP/WHEP sessions end on a failed connection).
    Connection(PeerRole, ConnectionState),
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
    SetMuted {
        publication: PublicationId,
        muted: bool,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    SetPermissions {
        can_publish: Option<bool>,
        can_subscribe: Option<bool>,
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
    Whep {
        offer: String,
        sources: Vec<WhepSource>,
        options: WhepOptions,
        reply: oneshot::Sender<Result<WhepAnswer, RequestError>>,
    },
    WhepReoffer {
        offer: String,
        reply: oneshot::Sender<Result<String, RequestError>>,
    },
}

/// A WHEP viewer's answered offer: the SDP answer and what each subscription receives
/// (`None`: a track that waits for a publication).
#[derive(Debug, Clone)]
pub struct WhepAnswer {
    pub sdp: String,
    pub subscriptions: Vec<(SubscriptionId, Option<PublicationId>)>,
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
    /// True while one of its connections is failed (see [`Participant::transport_failed`]).
    transport_failed: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant").field("id", &self.id).finish()
    }
}

impl Participant {
    /// Resolves when one of the participant's peer connections is failed (ICE consent lost for
    /// 30 s, or DTLS failed; at once if it is now), without taking its events. A parked
    /// participant (its WebSocket gone) whose transport failed has nothing left to resume.
    pub fn transport_failed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut failed = self.transport_failed.clone();
        async move {
            if failed.wait_for(|failed| *failed).await.is_err() {
                // The sender is gone without a failure: wait forever.
                std::future::pending::<()>().await;
            }
        }
    }

    pub(super) async fn join(
        sfu: Sfu,
        room: RoomHandle,
        room_name: &str,
        profile: Profile,
        permissions: Permissions,
    ) -> Result<(Self, RoomSnapshot), RequestError> {
        let id = ParticipantId(sfu.next_id());
        let info = ParticipantInfo {
            id,
            identity: profile.identity,
            name: profile.name,
            metadata: profile.metadata,
        };
        let (room_events_tx, room_events) = mpsc::channel(1024);
        let (reply, snapshot) = oneshot::channel();
        room.send(RoomCommand::Join {
            info: info.clone(),
            events: room_events_tx,
            reply,
        })
        .await?;
        let snapshot = snapshot.await.map_err(|_| RequestError::Closed)??;
        let (commands, events, transport_failed) =
            task::start(sfu, room, room_name, &info, permissions, room_events).await?;
        Ok((
            Self {
                id,
                commands,
                events,
                transport_failed,
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

    /// Changes what the participant may do from now on (`None` keeps a grant as it is; the
    /// application's server API): without publish, its publications end; without subscribe,
    /// its subscriptions end.
    pub async fn set_permissions(
        &self,
        can_publish: Option<bool>,
        can_subscribe: Option<bool>,
    ) -> Result<(), RequestError> {
        self.call(|reply| Command::SetPermissions {
            can_publish,
            can_subscribe,
            reply,
        })
        .await
    }

    /// Mutes or unmutes one of the participant's own publications; the room is told.
    pub async fn set_muted(
        &self,
        publication: PublicationId,
        muted: bool,
    ) -> Result<(), RequestError> {
        self.call(|reply| Command::SetMuted {
            publication,
            muted,
            reply,
        })
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

    /// WHEP playback: answers the client's recvonly `offer` with one subscription per
    /// source (paired with the offer's m-lines by kind, in order), played as `options` say.
    /// The participant must not have subscribed before, and it makes no server offers
    /// afterwards. Without `follow_room`, a track ends with its publication; with it, the
    /// track moves to another publication of its kind and codec in the room (or waits for
    /// one), which a [`WhepSource::Waiting`] track does from the start.
    pub async fn whep(
        &self,
        offer: String,
        sources: Vec<WhepSource>,
        options: WhepOptions,
    ) -> Result<WhepAnswer, RequestError> {
        self.call(|reply| Command::Whep {
            offer,
            sources,
            options,
            reply,
        })
        .await
    }

    /// WHEP: answers the viewer's new offer for its answered connection (an ICE restart when
    /// the offer carries new credentials); the tracks stay as they are.
    pub async fn whep_reoffer(&self, offer: String) -> Result<String, RequestError> {
        self.call(|reply| Command::WhepReoffer { offer, reply })
            .await
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

    /// Leaves the room and returns once its task has ended, its `Leave` queued to the room:
    /// whatever the caller asks of the room next comes after the others hear it left.
    pub async fn leave_and_wait(self) {
        let Self {
            commands,
            mut events,
            ..
        } = self;
        drop(commands);
        while events.recv().await.is_some() {}
    }
}

mod task;
