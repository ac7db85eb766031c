//! A WHIP or WHEP session resource: the task that owns its participant for as long as the
//! resource lives, and the registry the HTTP handlers find it in.
//!
//! A session ends on `DELETE`, when its connection fails or closes, when it has not connected
//! within [`CONNECT_TIMEOUT`] of its creation (a client that never sends media holds nothing
//! for long) and, for a WHEP session of one publication, when every publication it plays has
//! ended (a room session follows the room instead); on the way out it leaves the room and
//! frees its registry entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sluice_sfu::core::PublicationId;
use sluice_sfu::runtime::{
    Participant, ParticipantEvent, RequestError, RoomEvent, ServerEvent, Sfu,
};
use sluice_sfu::transport::{ConnectionState, IceCandidate, PeerRole};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span};

use super::sdp;

/// How long a new session may take to connect before it is freed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a session publishes (WHIP) or plays (WHEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Whip,
    Whep,
}

impl Kind {
    pub fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }

    fn role(self) -> PeerRole {
        match self {
            Kind::Whip => PeerRole::Publisher,
            Kind::Whep => PeerRole::Subscriber,
        }
    }
}

/// What the HTTP handlers ask of a session's task.
pub enum Request {
    /// Trickled candidates (`candidate:` values with their mid).
    Trickle {
        candidates: Vec<(Option<String>, String)>,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    /// ICE restart: the new offer to answer (the first offer with the client's new
    /// credentials).
    Restart {
        offer: String,
        reply: oneshot::Sender<Result<String, RequestError>>,
    },
}

/// A live session as the registry holds it.
pub struct Session {
    pub kind: Kind,
    pub room: String,
    /// Who the credential names (room/identity): sessions are capped per credential.
    pub owner: String,
    pub requests: mpsc::Sender<Request>,
    /// The ETag of the resource; changes with an ICE restart.
    pub etag: Mutex<String>,
    /// The offer the session was created with and the client's ICE credentials in force.
    pub offer: Mutex<String>,
    /// Ends the session's task (`DELETE`); the task frees everything and the registry entry.
    pub close: Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
}

impl Session {
    pub fn etag(&self) -> String {
        self.etag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How logs name a session: the first 8 of its id's 32 hex digits. The id is the resource's
/// capability (PATCH and DELETE need nothing else), so logs never carry it whole.
pub fn log_name(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Every live WHIP and WHEP session of the server, by resource id.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Inserts `session` unless its owner holds `cap` sessions already.
    pub fn insert_capped(&self, id: String, session: Arc<Session>, cap: usize) -> bool {
        let mut map = self.map();
        let held = map.values().filter(|s| s.owner == session.owner).count();
        if held >= cap {
            return false;
        }
        map.insert(id, session);
        true
    }

    /// Whether `owner` holds fewer than `cap` sessions now (a check before the work of a
    /// POST; `insert_capped` checks again when the session is registered).
    pub fn has_room_for(&self, owner: &str, cap: usize) -> bool {
        self.map().values().filter(|s| s.owner == owner).count() < cap
    }

    fn remove(&self, id: &str) {
        self.map().remove(id);
    }

    /// Ends every session in `room` (of `identity` only, when given), as a `DELETE` would;
    /// resolves once each has left its room. Returns how many there were.
    pub async fn end_matching(&self, room: &str, identity: Option<&str>) -> usize {
        let owner = identity.map(|identity| format!("{room}/{identity}"));
        let closes: Vec<oneshot::Sender<oneshot::Sender<()>>> = self
            .map()
            .values()
            .filter(|s| s.room == room && owner.as_ref().is_none_or(|o| s.owner == *o))
            .filter_map(|s| {
                s.close
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
            })
            .collect();
        let count = closes.len();
        for close in closes {
            let (done, ended) = oneshot::channel();
            if close.send(done).is_ok() {
                let _ = ended.await;
            }
        }
        count
    }
}

/// Starts the task owning `participant` for the session `id` (already in `registry`);
/// `playing`: what a WHEP publication session plays, ending it with the last of them (empty
/// for WHIP and WHEP room sessions); `ended`: an event to tell the
/// server-wide listeners when the session ends.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    registry: Arc<Registry>,
    id: String,
    kind: Kind,
    participant: Participant,
    playing: Vec<PublicationId>,
    requests: mpsc::Receiver<Request>,
    close: oneshot::Receiver<oneshot::Sender<()>>,
    ended: Option<(Sfu, ServerEvent)>,
) {
    let span = info_span!("media_session", kind = kind.path(), session = %log_name(&id), participant = %participant.id());
    tokio::spawn(
        async move {
            let closed = run(kind, participant, playing, requests, close).await;
            registry.remove(&id);
            if let Some((sfu, event)) = ended {
                sfu.notify(event);
            }
            if let Some(done) = closed {
                let _ = done.send(());
            }
        }
        .instrument(span),
    );
}

/// Serves the session until it ends; returns the `DELETE`'s acknowledgement to send once
/// the registry entry is gone.
async fn run(
    kind: Kind,
    mut participant: Participant,
    mut playing: Vec<PublicationId>,
    mut requests: mpsc::Receiver<Request>,
    mut close: oneshot::Receiver<oneshot::Sender<()>>,
) -> Option<oneshot::Sender<()>> {
    let deadline = tokio::time::sleep(CONNECT_TIMEOUT);
    tokio::pin!(deadline);
    let mut connected = false;
    let acknowledgement = loop {
        tokio::select! {
            done = &mut close => {
                info!("session deleted");
                break done.ok();
            }
            () = &mut deadline, if !connected => {
                info!(timeout = ?CONNECT_TIMEOUT, "session freed: it never connected");
                break None;
            }
            Some(request) = requests.recv() => serve(kind, &participant, request).await,
            event = participant.next_event() => match event {
                Some(ParticipantEvent::Connection(role, state)) if role == kind.role() => {
                    debug!(?state, "connection state");
                    match state {
                        ConnectionState::Connected => connected = true,
                        ConnectionState::Failed | ConnectionState::Closed => {
                            info!(?state, "session freed: its connection ended");
                            break None;
                        }
                        _ => {}
                    }
                }
                Some(ParticipantEvent::Room(RoomEvent::PublicationRemoved { publication, .. }))
                    if playing.contains(&publication) =>
                {
                    playing.retain(|p| *p != publication);
                    if playing.is_empty() {
                        info!("session freed: everything it played has ended");
                        break None;
                    }
                }
                Some(_) => {}
                None => {
                    info!("session ended with its participant");
                    break None;
                }
            },
        }
    };
    participant.leave_and_wait().await;
    acknowledgement
}

async fn serve(kind: Kind, participant: &Participant, request: Request) {
    match request {
        Request::Trickle { candidates, reply } => {
            let mut result = Ok(());
            for (mid, candidate) in candidates {
                let candidate = IceCandidate {
                    candidate,
                    sdp_mid: mid,
                    sdp_m_line_index: None,
                    username_fragment: None,
                };
                result = participant.add_ice_candidate(kind.role(), candidate).await;
                if result.is_err() {
                    break;
                }
            }
            let _ = reply.send(result);
        }
        Request::Restart { offer, reply } => {
            let answer = match kind {
                // An offer without tracks renegotiates the publisher connection as it is.
                Kind::Whip => participant
                    .publish(offer, Vec::new())
                    .await
                    .map(|(answer, _)| answer),
                Kind::Whep => participant.whep_reoffer(offer).await,
            };
            let _ = reply.send(answer);
        }
    }
}

/// The ICE lines of an answer as the body of a PATCH response (RFC 9725 §4.4).
pub fn restart_fragment(answer: &str) -> Option<String> {
    let (ufrag, pwd) = sdp::credentials(answer);
    let mut body = format!("a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n", ufrag?, pwd?);
    for candidate in answer
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("a=candidate:"))
    {
        body.push_str(candidate);
        body.push_str("\r\n");
    }
    Some(body)
}
