//! WHEP playback on the shard: a subscriber connection the client offers (recvonly) and the
//! shard answers, instead of the server-offered subscriber connection of `subscriber.rs`.
//!
//! The subscription tracks are added first (one per wanted publication, in the order of the
//! offer's m-lines of their kind), then the offer is applied: `rtc` pairs each offered m-line
//! with the first track of its kind not yet paired. The answer carries them; the legs start
//! forwarding once the connection is up, exactly as an answered server offer's do. A viewer
//! that follows the room may also have tracks that wait for a publication (see `follow`).

use std::time::Instant;

use super::follow::Follow;
use super::peer::LegState;
use super::worker::Worker;
use super::{Command, Shard, ShardError};
use crate::core::{MediaKind, ParticipantId, PublicationId, SubscriptionId};
use crate::transport::CodecInfo;
use crate::transport::PeerRole;

/// A subscription a WHEP viewer's answered offer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhepSubscription {
    pub subscription: SubscriptionId,
    pub source: WhepSource,
}

/// What a WHEP viewer's track plays from the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhepSource {
    Publication(PublicationId),
    /// Nothing yet: the track waits for a publication of this codec in the room (a viewer
    /// that follows the room only).
    Waiting(CodecInfo),
}

/// How a WHEP viewer plays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WhepOptions {
    /// Video starts capped at this simulcast layer.
    pub max_spatial: Option<u8>,
    /// The viewer follows the room: a track whose publication ends moves to another of its
    /// kind and codec in the room, now or once one is published (its SSRC and numbering
    /// stay); without, the track ends with its publication.
    pub follow_room: bool,
}

/// The WHEP requests of a shard's handle.
impl Shard {
    /// Answers a WHEP viewer's recvonly `offer` on a new subscriber connection carrying
    /// `subscriptions` (paired with the offer's m-lines by kind, in order), played as
    /// `options` say. Forwarding starts once the connection is up (a waiting track's once a
    /// publication of its codec is there). On error no subscriber connection is left behind.
    pub async fn whep(
        &self,
        participant: ParticipantId,
        offer: String,
        subscriptions: Vec<WhepSubscription>,
        options: WhepOptions,
    ) -> Result<String, ShardError> {
        self.request(|reply| Command::Whep {
            participant,
            offer,
            subscriptions,
            options,
            reply,
        })
        .await?
    }

    /// Answers a WHEP viewer's new offer on its subscriber connection: the same tracks, and
    /// with new ICE credentials when the offer has new ones (an ICE restart).
    pub async fn whep_reoffer(
        &self,
        participant: ParticipantId,
        offer: String,
    ) -> Result<String, ShardError> {
        self.request(|reply| Command::WhepReoffer {
            participant,
            offer,
            reply,
        })
        .await?
    }
}

impl Worker {
    /// Answers a WHEP viewer's `offer` with `subscriptions` as the tracks it receives, played
    /// as `options` say. The participant must have no subscriber connection yet.
    pub(super) fn whep(
        &mut self,
        participant: ParticipantId,
        offer: String,
        subscriptions: Vec<WhepSubscription>,
        options: WhepOptions,
        now: Instant,
    ) -> Result<String, ShardError> {
        let member = self
            .members
            .get(&participant)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        let room = member.room;
        if member.subscriber.is_some() {
            return Err(ShardError::Invalid(
                "the participant has a subscriber connection already".to_owned(),
            ));
        }
        if subscriptions.is_empty() {
            return Err(ShardError::Invalid("nothing to subscribe to".to_owned()));
        }
        let waits = subscriptions
            .iter()
            .any(|w| matches!(w.source, WhepSource::Waiting(_)));
        if waits && !options.follow_room {
            return Err(ShardError::Invalid(
                "a track without a publication needs a viewer that follows the room".to_owned(),
            ));
        }
        let mut added = Ok(());
        for wanted in &subscriptions {
            added = match &wanted.source {
                WhepSource::Publication(publication) => {
                    self.subscribe(participant, wanted.subscription, *publication, now)
                }
                WhepSource::Waiting(codec) => {
                    self.add_leg(participant, wanted.subscription, None, codec.clone(), now)
                }
            };
            if added.is_err() {
                break;
            }
        }
        let answered =
            added.and_then(|()| self.whep_answer(participant, offer, options.max_spatial, now));
        if answered.is_ok() && options.follow_room {
            for wanted in &subscriptions {
                let playing = match wanted.source {
                    WhepSource::Publication(publication) => Some(publication),
                    WhepSource::Waiting(_) => None,
                };
                self.following.insert(
                    wanted.subscription,
                    Follow {
                        participant,
                        room,
                        playing,
                    },
                );
            }
            self.rebind_followers(room, now);
        }
        if answered.is_err() {
            // Nothing half-built stays: the connection and its legs go with the error.
            if let Some(key) = self
                .members
                .get_mut(&participant)
                .and_then(|m| m.subscriber.take())
            {
                self.remove_peer(key);
            }
        }
        answered
    }

    fn whep_answer(
        &mut self,
        participant: ParticipantId,
        offer: String,
        max_spatial: Option<u8>,
        now: Instant,
    ) -> Result<String, ShardError> {
        let key = self.peer_of(participant, PeerRole::Subscriber, now)?;
        let max_candidates = self.config.max_remote_candidates;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        let answer = peer.answer(offer, max_candidates, now)?;
        // Every leg must have found an m-line that takes its codec: the answer names it.
        for leg in peer.legs.values_mut() {
            if !carries(&answer, &leg.codec.mime_type) {
                let what = leg.publication.map_or_else(
                    || "a waiting track".to_owned(),
                    |p| format!("publication {p}"),
                );
                return Err(ShardError::Unsupported(format!(
                    "the offer has no m-line receiving {} ({what})",
                    leg.codec.mime_type
                )));
            }
            leg.state = LegState::Answered;
            if let Some(spatial) = max_spatial
                && leg.codec.kind() == MediaKind::Video
            {
                leg.preferred = Some((spatial, None));
            }
        }
        peer.awaiting_answer = false;
        self.refresh_ufrag(key);
        self.service(key, now);
        self.activate(key, now);
        Ok(answer)
    }

    /// Answers a new offer of a WHEP viewer whose connection is answered already: the
    /// offer's m-lines are the ones negotiated, so its tracks stay as they are; an offer with
    /// new ICE credentials restarts ICE, and the answer carries new local ones.
    pub(super) fn whep_reoffer(
        &mut self,
        participant: ParticipantId,
        offer: String,
        now: Instant,
    ) -> Result<String, ShardError> {
        let key = self
            .members
            .get(&participant)
            .ok_or(ShardError::UnknownParticipant(participant))?
            .subscriber
            .ok_or_else(|| ShardError::Invalid("no subscriber connection".to_owned()))?;
        let max_candidates = self.config.max_remote_candidates;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        if peer.awaiting_answer {
            return Err(ShardError::Invalid(
                "the subscriber connection waits for an answer".to_owned(),
            ));
        }
        let answer = peer.answer(offer, max_candidates, now)?;
        self.refresh_ufrag(key);
        self.service(key, now);
        Ok(answer)
    }
}

/// Whether an active m-line of `sdp` lists the codec `mime` (`video/VP8`) in an `a=rtpmap`.
fn carries(sdp: &str, mime: &str) -> bool {
    let Some((kind, name)) = mime.split_once('/') else {
        return false;
    };
    sdp.split("\nm=").skip(1).any(|section| {
        let mut words = section.split_whitespace();
        let active = words.next() == Some(kind) && words.next() != Some("0");
        active
            && section.lines().any(|line| {
                line.trim()
                    .strip_prefix("a=rtpmap:")
                    .and_then(|v| v.split_once(' '))
                    .and_then(|(_, desc)| desc.split('/').next())
                    .is_some_and(|codec| codec.eq_ignore_ascii_case(name))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::carries;

    #[test]
    fn an_answer_carries_a_codec_on_an_active_m_line_of_its_kind() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n";
        assert!(carries(sdp, "audio/opus"));
        assert!(carries(sdp, "video/h264"));
        assert!(
            !carries(sdp, "video/VP8"),
            "a rejected m-line carries nothing"
        );
        assert!(!carries(sdp, "audio/H264"));
        assert!(!carries(sdp, "garbage"));
    }
}
