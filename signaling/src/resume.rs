//! Session resume: a participant outlives a dropped WebSocket for a grace period, so its
//! client can re-attach on a new socket (`resume`) without losing its publications,
//! subscriptions or peer connections.
//!
//! Every joined participant has an entry here, held either by the session whose socket serves
//! it ([`Holder::Session`]) or, after that socket dropped without `leave`, parked with a timer
//! ([`Holder::Parked`]) until its client resumes, the grace ends or one of its connections
//! fails. Each holder has an `epoch`, so a session or a timer that lost the
//! entry to a newer holder never touches it again.
//!
//! Lock discipline: one `std::sync::Mutex`, never held across `.await`; everything done under
//! it is non-blocking (`try_send`, `abort`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_sfu::core::ParticipantId;
use sluice_sfu::runtime::Participant;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

const TOKEN_BYTES: usize = 16;

/// The secret that proves a client owns a participant: 128 random bits, hex on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ResumeToken([u8; TOKEN_BYTES]);

impl ResumeToken {
    fn random() -> Self {
        Self(rand::random())
    }

    /// Parses the hex form; anything else is `None`.
    fn parse(text: &str) -> Option<Self> {
        if text.len() != TOKEN_BYTES * 2 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// Constant-time comparison, so response timing does not leak how much of a guess matched.
    fn matches(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(<redacted>)")
    }
}

/// What another party asks of the session that serves a participant.
#[derive(Debug)]
pub enum SessionControl {
    /// A new connection resumed this participant: close the socket (4001) and hand the
    /// participant over.
    Takeover(oneshot::Sender<Participant>),
    /// A newer join of the same identity in the same room: close the socket (4001), end the
    /// participant, then signal on the sender once the room has been told.
    Replace(oneshot::Sender<()>),
    /// The application removed the participant (server API): close the socket (4003), end
    /// the participant, then signal on the sender once the room has been told.
    Remove(oneshot::Sender<()>),
    /// The application changed the participant's grants (`None` keeps one as it is): apply
    /// them, then signal on the sender.
    SetPermissions {
        can_publish: Option<bool>,
        can_subscribe: Option<bool>,
        done: oneshot::Sender<()>,
    },
    /// Test hook: close the socket as if the network dropped it; keep the participant for a
    /// resume.
    Drop,
}

/// A participant that a newer join of its identity replaces ([`Resumable::evict`]).
pub enum Evicted {
    /// Served by a live session, asked to end it: resolves once the room has been told.
    Session(oneshot::Receiver<()>),
    /// Parked: the caller ends it.
    Parked(Participant),
}

/// A session's hold on its participant's entry.
#[derive(Debug)]
pub struct Attachment {
    pub participant: ParticipantId,
    epoch: u64,
    pub control: mpsc::Receiver<SessionControl>,
}

impl Attachment {
    /// A takeover already queued for this session, if any.
    pub fn take_takeover(&mut self) -> Option<oneshot::Sender<Participant>> {
        while let Ok(control) = self.control.try_recv() {
            if let SessionControl::Takeover(handover) = control {
                return Some(handover);
            }
        }
        None
    }
}

/// Why a `resume` was refused. The client is told only `resumeFailed`: which one it was would
/// help an attacker probe participant ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    #[error("no resumable participant with that id")]
    Unknown,
    #[error("wrong resume token")]
    WrongToken,
    #[error("the previous connection is not answering")]
    Busy,
}

/// A participant claimed by `resume`: either at once (it was parked) or once its previous
/// session hands it over.
pub enum Claimed {
    Parked(Participant),
    Takeover(oneshot::Receiver<Participant>),
}

/// A successful claim: the participant (or the promise of it) and the new session's hold.
pub struct Claim {
    pub participant: Claimed,
    pub room: String,
    pub identity: String,
    pub attachment: Attachment,
}

enum Holder {
    Session {
        epoch: u64,
        control: mpsc::Sender<SessionControl>,
    },
    Parked {
        epoch: u64,
        participant: Participant,
        expiry: tokio::task::JoinHandle<()>,
    },
}

struct Entry {
    token: ResumeToken,
    room: String,
    identity: String,
    holder: Holder,
}

/// The participants that can be resumed, by id.
pub struct Resumable {
    grace: Duration,
    next_epoch: AtomicU64,
    entries: Mutex<HashMap<ParticipantId, Entry>>,
}

impl fmt::Debug for Resumable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resumable")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// Room for a takeover and a few test-hook drops; a full queue refuses the takeover.
const CONTROL_QUEUE: usize = 8;

impl Resumable {
    /// `grace` is how long a dropped participant waits; zero disables resume.
    pub fn new(grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            grace,
            next_epoch: AtomicU64::new(1),
            entries: Mutex::new(HashMap::new()),
        })
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ParticipantId, Entry>> {
        // A panic under the lock leaves plain data behind; keep serving.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn attach(&self, participant: ParticipantId) -> (Holder, Attachment) {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
        (
            Holder::Session {
                epoch,
                control: control_tx,
            },
            Attachment {
                participant,
                epoch,
                control,
            },
        )
    }

    /// A participant just joined on this session: returns its resume token and the session's
    /// hold on it.
    pub fn register(
        &self,
        participant: ParticipantId,
        room: String,
        identity: String,
    ) -> (ResumeToken, Attachment) {
        let token = ResumeToken::random();
        let (holder, attachment) = self.attach(participant);
        self.lock().insert(
            participant,
            Entry {
                token,
                room,
                identity,
                holder,
            },
        );
        (token, attachment)
    }

    /// Claims a participant for a new session. A parked participant comes back at once (its
    /// timer is cancelled); one still held by a live session is asked to hand over.
    pub fn claim(&self, participant: ParticipantId, token: &str) -> Result<Claim, ResumeError> {
        let offered = ResumeToken::parse(token);
        let mut entries = self.lock();
        let entry = entries.get_mut(&participant).ok_or(ResumeError::Unknown)?;
        // Compare even a malformed token (against zeros), so timing says nothing about it.
        let offered = offered.unwrap_or(ResumeToken([0; TOKEN_BYTES]));
        if !entry.token.matches(&offered) || token.len() != TOKEN_BYTES * 2 {
            return Err(ResumeError::WrongToken);
        }
        let (holder, attachment) = self.attach(participant);
        let claimed = match &entry.holder {
            Holder::Session { control, .. } => {
                let (handover, receive) = oneshot::channel();
                // Sent under the lock: a session that finds its entry taken (in `park`) is
                // sure to find this message queued.
                control
                    .try_send(SessionControl::Takeover(handover))
                    .map_err(|_| ResumeError::Busy)?;
                entry.holder = holder;
                Claimed::Takeover(receive)
            }
            Holder::Parked { .. } => match std::mem::replace(&mut entry.holder, holder) {
                Holder::Parked {
                    participant,
                    expiry,
                    ..
                } => {
                    expiry.abort();
                    Claimed::Parked(participant)
                }
                Holder::Session { .. } => unreachable!("matched Parked above"),
            },
        };
        Ok(Claim {
            participant: claimed,
            room: entry.room.clone(),
            identity: entry.identity.clone(),
            attachment,
        })
    }

    /// The participant leaves for good (`leave`, server shutdown, a policy close): forget it.
    pub fn release(&self, participant: ParticipantId) {
        self.lock().remove(&participant);
    }

    /// The session's socket dropped: keep the participant for the grace period. Returns it
    /// back when it cannot be parked: resume is disabled, or another session claimed the entry
    /// meanwhile (then a takeover is queued on `attachment`).
    pub fn park(
        self: &Arc<Self>,
        attachment: &Attachment,
        participant: Participant,
    ) -> Option<Participant> {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(&attachment.participant) else {
            return Some(participant);
        };
        match &entry.holder {
            Holder::Session { epoch, .. } if *epoch == attachment.epoch => {}
            _ => return Some(participant),
        }
        if self.grace.is_zero() {
            entries.remove(&attachment.participant);
            return Some(participant);
        }
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        let this = Arc::clone(self);
        let id = attachment.participant;
        let failed = participant.transport_failed();
        let expiry = tokio::spawn(async move {
            // A connection that failed meanwhile (its ICE consent lost: the client's process or
            // network is gone) leaves nothing to resume: no need to wait out the grace.
            let reason = tokio::select! {
                () = tokio::time::sleep(this.grace) => "not resumed within the grace period",
                () = failed => "its connection failed while it waited for a resume",
            };
            this.expire(id, epoch, reason);
        });
        entry.holder = Holder::Parked {
            epoch,
            participant,
            expiry,
        };
        None
    }

    fn expire(&self, participant: ParticipantId, epoch: u64, reason: &'static str) {
        let mut entries = self.lock();
        let parked_here = matches!(
            entries.get(&participant),
            Some(Entry { holder: Holder::Parked { epoch: e, .. }, .. }) if *e == epoch
        );
        if !parked_here {
            return;
        }
        let entry = entries.remove(&participant);
        drop(entries);
        if let Some(Entry {
            holder: Holder::Parked { participant: p, .. },
            ..
        }) = entry
        {
            info!(%participant, grace = ?self.grace, reason, "parked participant removed");
            p.leave();
        }
    }

    /// Test hook: makes the session serving `participant` close its socket as a network drop
    /// would. False when no live session serves it.
    pub fn drop_socket(&self, participant: ParticipantId) -> bool {
        match self.lock().get(&participant) {
            Some(Entry {
                holder: Holder::Session { control, .. },
                ..
            }) => control.try_send(SessionControl::Drop).is_ok(),
            _ => false,
        }
    }

    /// Forgets every participant of `identity` in `room`, so a newer join replaces them: a
    /// live session is asked to close (4001) and end its participant, a parked participant is
    /// handed back to be ended. None can be resumed afterwards.
    pub fn evict(&self, room: &str, identity: &str) -> Vec<Evicted> {
        self.end_matching(room, Some(identity), SessionControl::Replace)
    }

    /// Asks every live session serving `identity` in `room` to apply new grants; resolves per
    /// session once applied. A participant waiting for a resume is not changed.
    pub fn set_permissions(
        &self,
        room: &str,
        identity: &str,
        can_publish: Option<bool>,
        can_subscribe: Option<bool>,
    ) -> Vec<oneshot::Receiver<()>> {
        let entries = self.lock();
        let mut applied = Vec::new();
        for entry in entries
            .values()
            .filter(|e| e.room == room && e.identity == identity)
        {
            if let Holder::Session { control, .. } = &entry.holder {
                let (done, acknowledged) = oneshot::channel();
                let asked = control.try_send(SessionControl::SetPermissions {
                    can_publish,
                    can_subscribe,
                    done,
                });
                if asked.is_ok() {
                    applied.push(acknowledged);
                }
            }
        }
        applied
    }

    /// Forgets the participants of `identity` in `room` (every participant of the room when
    /// `identity` is `None`), as [`evict`](Self::evict) does, but a live session closes with
    /// 4003 (removed by the application).
    pub fn remove(&self, room: &str, identity: Option<&str>) -> Vec<Evicted> {
        self.end_matching(room, identity, SessionControl::Remove)
    }

    fn end_matching(
        &self,
        room: &str,
        identity: Option<&str>,
        control_of: fn(oneshot::Sender<()>) -> SessionControl,
    ) -> Vec<Evicted> {
        let mut entries = self.lock();
        let ids: Vec<ParticipantId> = entries
            .iter()
            .filter(|(_, e)| e.room == room && identity.is_none_or(|i| e.identity == i))
            .map(|(id, _)| *id)
            .collect();
        let mut evicted = Vec::new();
        for id in ids {
            let Some(entry) = entries.remove(&id) else {
                continue;
            };
            match entry.holder {
                Holder::Session { control, .. } => {
                    let (done, ended) = oneshot::channel();
                    // A full control queue holds a takeover already: that session ends anyway.
                    if control.try_send(control_of(done)).is_ok() {
                        evicted.push(Evicted::Session(ended));
                    }
                }
                Holder::Parked {
                    participant,
                    expiry,
                    ..
                } => {
                    expiry.abort();
                    evicted.push(Evicted::Parked(participant));
                }
            }
        }
        evicted
    }

    /// How many participants wait for a resume.
    pub fn parked_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| matches!(e.holder, Holder::Parked { .. }))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_through_hex_and_compare() {
        let token = ResumeToken::random();
        let text = token.to_string();
        assert_eq!(text.len(), 32);
        let parsed = ResumeToken::parse(&text).expect("own hex parses");
        assert!(parsed.matches(&token));
        assert!(!ResumeToken::random().matches(&token));
        assert!(ResumeToken::parse("").is_none());
        assert!(ResumeToken::parse(&"g".repeat(32)).is_none());
        assert!(ResumeToken::parse(&"é".repeat(16)).is_none());
        assert!(ResumeToken::parse(&"0".repeat(33)).is_none());
        assert_eq!(format!("{token:?}"), "ResumeToken(<redacted>)");
    }
}
