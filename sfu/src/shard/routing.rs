//! The rooms placed on a shard and the signaling commands that change them: who is in which
//! room, the publications and subscriptions, and applying the core's outputs to the peers
//! (forwarding with the rewritten header, keyframe requests to publishers).

use std::collections::BTreeSet;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, info};

use super::data::DataSender;
use super::peer::{PeerKey, ShardPeer};
use super::worker::{Timer, Worker};
use super::{Command, PublishTrack, ShardError, ShardEvent};
use crate::core::{self, Input, ParticipantId, PublicationId, SubscriptionId};
use crate::transport::{CodecInfo, IceCandidate, PeerRole, negotiated_codecs};

/// Longest candidate line accepted from a client.
const MAX_CANDIDATE_LEN: usize = 512;

/// A key of a room within its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct RoomKey(u64);

/// A room placed on the shard: the routing core, owned here by `&mut`.
pub(super) struct ShardRoom {
    pub(super) name: String,
    pub(super) core: core::Room,
    /// The participants in the room on this shard.
    pub(super) participants: BTreeSet<ParticipantId>,
    pub(super) timeout: Option<Instant>,
    /// The last active speakers, for participants who join while someone speaks.
    pub(super) speakers: Vec<(ParticipantId, f32)>,
}

/// A participant on the shard.
pub(super) struct Member {
    pub(super) room: RoomKey,
    /// Its token's identity, which recipients of its data messages see.
    pub(super) identity: String,
    pub(super) data: DataSender,
    pub(super) publisher: Option<PeerKey>,
    pub(super) subscriber: Option<PeerKey>,
    pub(super) events: mpsc::Sender<ShardEvent>,
}

/// Where a publication's media comes from.
pub(super) struct PublicationSlot {
    pub(super) publisher: ParticipantId,
    /// The publisher connection; `None` for ingest (RTMP) publications.
    pub(super) peer: Option<PeerKey>,
    pub(super) room: RoomKey,
    pub(super) codec: CodecInfo,
}

impl Worker {
    pub(super) fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Join {
                room,
                participant,
                identity,
                events,
                reply,
            } => {
                let _ = reply.send(self.join(room, participant, identity, events));
            }
            Command::Publish {
                participant,
                offer,
                tracks,
                reply,
            } => {
                let _ = reply.send(self.publish(participant, offer, tracks, now));
            }
            Command::Subscribe {
                participant,
                subscription,
                publication,
                reply,
            } => {
                let _ = reply.send(self.subscribe(participant, subscription, publication, now));
            }
            Command::Offer {
                participant,
                ice_restart,
                reply,
            } => {
                let _ = reply.send(self.offer(participant, ice_restart, now));
            }
            Command::Answer {
                participant,
                sdp,
                reply,
            } => {
                let _ = reply.send(self.answer(participant, sdp, now));
            }
            Command::Candidate {
                participant,
                role,
                candidate,
                reply,
            } => {
                let _ = reply.send(self.candidate(participant, role, &candidate));
            }
            Command::Unpublish {
                participant,
                publication,
                reply,
            } => {
                let _ = reply.send(self.unpublish(participant, publication, now));
            }
            Command::SetMuted {
                publication,
                muted,
                reply,
            } => {
                let _ = reply.send(self.set_muted(publication, muted, now));
            }
            Command::Change {
                participant,
                subscription,
                change,
                reply,
            } => {
                let _ = reply.send(self.change(participant, subscription, change, now));
            }
            Command::IngestPublish {
                participant,
                publication,
                codec,
                layers,
                reply,
            } => {
                let result = self.ingest_publish(participant, publication, codec, layers, now);
                let _ = reply.send(result);
            }
            Command::Whep {
                participant,
                offer,
                subscriptions,
                options,
                reply,
            } => {
                let answer = self.whep(participant, offer, subscriptions, options, now);
                let _ = reply.send(answer);
            }
            Command::WhepReoffer {
                participant,
                offer,
                reply,
            } => {
                let _ = reply.send(self.whep_reoffer(participant, offer, now));
            }
            Command::Leave { participant } => self.leave(participant, now),
            Command::Stall(duration) => std::thread::sleep(duration),
            Command::Stats { reply } => {
                let mut stats = self.stats;
                stats.peers = self.peers.len() as u64;
                stats.rooms = self.rooms.len() as u64;
                stats.publications = self.publications.len() as u64;
                stats.subscriptions = self.subscriptions.len() as u64;
                stats.ingress_age_max_ms =
                    u64::try_from(self.ingress_ages.max().as_millis()).unwrap_or(u64::MAX);
                stats.media = self.media_stats();
                let _ = reply.send(stats);
            }
        }
    }

    fn join(
        &mut self,
        room: String,
        participant: ParticipantId,
        identity: String,
        events: mpsc::Sender<ShardEvent>,
    ) -> Result<(), ShardError> {
        if self.members.contains_key(&participant) {
            return Err(ShardError::DuplicateParticipant(participant));
        }
        let key = match self.room_keys.get(&room) {
            Some(key) => *key,
            None => {
                let key = RoomKey(self.next_key);
                self.next_key += 1;
                info!(%room, "room placed on the shard");
                self.room_keys.insert(room.clone(), key);
                self.rooms.insert(
                    key,
                    ShardRoom {
                        name: room,
                        // Each room draws its own initial sequence numbers unless the
                        // config pins them.
                        core: core::Room::new(core::RoomConfig {
                            random_seed: rand::random(),
                            ..self.config.room.clone()
                        }),
                        participants: BTreeSet::new(),
                        timeout: None,
                        speakers: Vec::new(),
                    },
                );
                key
            }
        };
        if let Some(slot) = self.rooms.get_mut(&key) {
            slot.participants.insert(participant);
        }
        self.members.insert(
            participant,
            Member {
                room: key,
                identity,
                data: DataSender::new(),
                publisher: None,
                subscriber: None,
                events,
            },
        );
        let speakers = self
            .rooms
            .get(&key)
            .map(|slot| slot.speakers.clone())
            .unwrap_or_default();
        if !speakers.is_empty() {
            self.tell(participant, ShardEvent::ActiveSpeakers(speakers));
        }
        let stalled: Vec<(PublicationId, ParticipantId)> = self
            .rooms
            .get(&key)
            .map(|slot| slot.core.stalled_publications())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|id| self.publications.get(&id).map(|p| (id, p.publisher)))
            .collect();
        for (publication, publisher) in stalled {
            self.tell(
                participant,
                ShardEvent::Liveness {
                    publication,
                    publisher,
                    stalled: true,
                },
            );
        }
        Ok(())
    }

    /// The participant's connection of `role`, created on first use.
    pub(super) fn peer_of(
        &mut self,
        participant: ParticipantId,
        role: PeerRole,
        now: Instant,
    ) -> Result<PeerKey, ShardError> {
        let member = self
            .members
            .get(&participant)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        let existing = match role {
            PeerRole::Publisher => member.publisher,
            PeerRole::Subscriber => member.subscriber,
        };
        if let Some(key) = existing {
            return Ok(key);
        }
        if self.peers.len() >= self.config.max_peers {
            return Err(ShardError::LimitExceeded("peer connections on the shard"));
        }
        let playout_delay = self.config.playout_delay_ms > 0;
        let peer = ShardPeer::new(
            role,
            participant,
            self.local,
            self.tcp_local,
            &self.certificate,
            playout_delay,
            now,
        )?;
        let key = PeerKey(self.next_key);
        self.next_key += 1;
        self.peers.insert(key, Box::new(peer));
        if let Some(member) = self.members.get_mut(&participant) {
            match role {
                PeerRole::Publisher => member.publisher = Some(key),
                PeerRole::Subscriber => member.subscriber = Some(key),
            }
        }
        Ok(key)
    }

    fn publish(
        &mut self,
        participant: ParticipantId,
        offer: String,
        tracks: Vec<PublishTrack>,
        now: Instant,
    ) -> Result<String, ShardError> {
        let mut mids: Vec<&str> = tracks.iter().map(|t| t.mid.as_str()).collect();
        mids.sort_unstable();
        mids.dedup();
        if mids.len() != tracks.len() {
            return Err(ShardError::Invalid("duplicate mid in tracks".to_owned()));
        }
        if let Some(track) = tracks
            .iter()
            .find(|t| self.publications.contains_key(&t.publication))
        {
            return Err(ShardError::Invalid(format!(
                "publication {} exists",
                track.publication
            )));
        }
        let key = self.peer_of(participant, PeerRole::Publisher, now)?;
        let max_candidates = self.config.max_remote_candidates;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        let answer = peer.answer(offer, max_candidates, now)?;
        self.refresh_ufrag(key);
        let codecs = negotiated_codecs(&answer);
        let mut created = Vec::with_capacity(tracks.len());
        for track in tracks {
            let codec = codecs.get(&track.mid).ok_or_else(|| {
                ShardError::Invalid(format!(
                    "mid {:?} is not a negotiated media section of the offer",
                    track.mid
                ))
            })?;
            if codec.kind() != track.kind {
                return Err(ShardError::Invalid(format!(
                    "mid {:?} is {:?} in the offer, not {:?}",
                    track.mid,
                    codec.kind(),
                    track.kind
                )));
            }
            created.push((track, codec.clone()));
        }
        let room = self
            .members
            .get(&participant)
            .map(|m| m.room)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        for (track, codec) in created {
            let input = Input::PublicationAdded {
                publication: track.publication,
                publisher: participant,
                kind: track.kind,
                codec: codec.codec(),
                clock_rate: codec.clock_rate,
                cache_since_keyframe: false,
                layers: u8::try_from(track.rids.len().max(1)).unwrap_or(u8::MAX),
            };
            if let Some(slot) = self.rooms.get_mut(&room) {
                slot.core
                    .handle_input(now, input)
                    .map_err(|e| ShardError::Invalid(e.to_string()))?;
            }
            if let Some(peer) = self.peers.get_mut(&key) {
                peer.mids
                    .insert(track.mid.clone(), (track.publication, track.rids.clone()));
            }
            debug!(publication = %track.publication, mid = %track.mid, codec = %codec.mime_type, "published");
            self.publications.insert(
                track.publication,
                PublicationSlot {
                    publisher: participant,
                    peer: Some(key),
                    room,
                    codec,
                },
            );
        }
        self.rebind_followers(room, now);
        self.service(key, now);
        Ok(answer)
    }

    /// A trickled candidate: checked and counted, not given to the ICE agent (ICE-lite learns
    /// the client's address from its checks; see the module docs).
    fn candidate(
        &mut self,
        participant: ParticipantId,
        role: PeerRole,
        candidate: &IceCandidate,
    ) -> Result<(), ShardError> {
        let member = self
            .members
            .get(&participant)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        let key = match role {
            PeerRole::Publisher => member.publisher,
            PeerRole::Subscriber => member.subscriber,
        }
        .ok_or_else(|| ShardError::Invalid(format!("no {role:?} connection")))?;
        let line = candidate.candidate.trim();
        if line.is_empty() {
            return Ok(());
        }
        if line.len() > MAX_CANDIDATE_LEN {
            return Err(ShardError::InvalidCandidate("too long".to_owned()));
        }
        let value = line.strip_prefix("candidate:").unwrap_or(line);
        rtc::ice::candidate::unmarshal_candidate(value)
            .map_err(|e| ShardError::InvalidCandidate(e.to_string()))?;
        let cap = self.config.max_remote_candidates;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        peer.hold_candidate(line, cap)
    }

    fn set_muted(
        &mut self,
        publication: PublicationId,
        muted: bool,
        now: Instant,
    ) -> Result<(), ShardError> {
        let room = self
            .publications
            .get(&publication)
            .map(|slot| slot.room)
            .ok_or(ShardError::UnknownPublication(publication))?;
        let slot = self
            .rooms
            .get_mut(&room)
            .ok_or(ShardError::UnknownPublication(publication))?;
        slot.core
            .handle_input(now, Input::SetMuted { publication, muted })
            .map_err(|err| ShardError::Invalid(err.to_string()))?;
        self.drain_room(room, now);
        Ok(())
    }

    fn unpublish(
        &mut self,
        participant: ParticipantId,
        publication: PublicationId,
        now: Instant,
    ) -> Result<(), ShardError> {
        let slot = self
            .publications
            .get(&publication)
            .filter(|slot| slot.publisher == participant)
            .ok_or(ShardError::UnknownPublication(publication))?;
        let (room, key) = (slot.room, slot.peer);
        self.park_followers(publication, now);
        self.retire_publication(room, publication);
        self.publications.remove(&publication);
        self.subscriptions.retain(|_, (_, _, p)| *p != publication);
        if let Some(peer) = key.and_then(|key| self.peers.get_mut(&key)) {
            peer.mids.retain(|_, (p, _)| *p != publication);
            peer.streams
                .retain(|_, stream| stream.publication != publication);
            peer.receivers.remove(&publication);
        }
        if let Some(slot) = self.rooms.get_mut(&room)
            && let Err(err) = slot
                .core
                .handle_input(now, Input::PublicationRemoved { publication })
        {
            debug!(%publication, %err, "unpublishing in the core");
        }
        self.rebind_followers(room, now);
        Ok(())
    }

    fn leave(&mut self, participant: ParticipantId, now: Instant) {
        let Some(member) = self.members.remove(&participant) else {
            return;
        };
        for key in [member.publisher, member.subscriber].into_iter().flatten() {
            self.remove_peer(key);
        }
        let removed: Vec<PublicationId> = self
            .publications
            .iter()
            .filter(|(_, slot)| slot.publisher == participant)
            .map(|(id, _)| *id)
            .collect();
        for publication in &removed {
            self.park_followers(*publication, now);
            self.retire_publication(member.room, *publication);
            self.publications.remove(publication);
        }
        // Its own following tracks: those parked are in no publication's count.
        let own: Vec<SubscriptionId> = self
            .following
            .iter()
            .filter(|(_, f)| f.participant == participant)
            .map(|(id, _)| *id)
            .collect();
        for subscription in own {
            if let Some(follow) = self.following.remove(&subscription)
                && follow.playing.is_none()
            {
                self.retire_subscription(member.room, subscription);
            }
        }
        let received: Vec<SubscriptionId> = self
            .subscriptions
            .iter()
            .filter(|(_, (key, _, _))| Some(*key) == member.subscriber)
            .map(|(id, _)| *id)
            .collect();
        for subscription in received {
            self.retire_subscription(member.room, subscription);
        }
        self.subscriptions.retain(|_, (key, _, publication)| {
            Some(*key) != member.subscriber && !removed.contains(publication)
        });
        let Some(slot) = self.rooms.get_mut(&member.room) else {
            return;
        };
        if let Err(err) = slot
            .core
            .handle_input(now, Input::ParticipantLeft { participant })
        {
            debug!(%participant, %err, "leaving the core");
        }
        slot.participants.remove(&participant);
        if !slot.participants.is_empty() {
            if removed.is_empty() {
                self.drain_room(member.room, now);
            } else {
                self.rebind_followers(member.room, now);
            }
            return;
        }
        let timeout = slot.timeout;
        let name = slot.name.clone();
        self.retire_room(member.room);
        self.rooms.remove(&member.room);
        self.room_keys.remove(&name);
        self.set_timer(Timer::Room(member.room), timeout, None);
        info!(room = %name, "room left the shard");
    }
}
