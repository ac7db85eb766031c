//! WHEP viewers that follow their room (`POST /whep/{room}`): each of their tracks plays one
//! publication of its kind and codec at a time. When that publication ends the track is
//! parked in the core and moves to another such publication of the room, now or once one is
//! published; a track answered before anything of its kind was published waits the same way.
//! The track keeps its SSRC and numbering across moves (`Input::SubscriptionMoved`), so the
//! viewer sees one stream that resumes at the new publication's keyframe.
//!
//! Which publication: one of the publisher whose other publications the viewer's other tracks
//! play (audio and video from one source), else the oldest.

use std::time::Instant;

use tracing::{debug, warn};

use super::ShardEvent;
use super::peer::LegState;
use super::routing::RoomKey;
use super::worker::Worker;
use crate::core::{Input, ParticipantId, PublicationId, SubscriptionId};
use crate::transport::CodecInfo;

/// A track of a viewer that follows its room.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Follow {
    pub(crate) participant: ParticipantId,
    pub(crate) room: RoomKey,
    /// The publication it plays; `None` while it waits for one.
    pub(crate) playing: Option<PublicationId>,
}

/// Whether a track negotiated for `track` can carry `publication`'s RTP as it is: the same
/// codec and, for H.264, the same profile and packetization mode.
fn same_codec(track: &CodecInfo, publication: &CodecInfo) -> bool {
    if !track.mime_type.eq_ignore_ascii_case(&publication.mime_type)
        || track.clock_rate != publication.clock_rate
    {
        return false;
    }
    if !track.mime_type.eq_ignore_ascii_case("video/H264") {
        return true;
    }
    let parameter = |codec: &CodecInfo, name: &str| {
        codec
            .sdp_fmtp_line
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.to_ascii_lowercase())
    };
    // profile-level-id: the profile is its first 4 hex digits (the level may differ).
    let profile = |codec: &CodecInfo| {
        parameter(codec, "profile-level-id").map(|p| p.chars().take(4).collect::<String>())
    };
    profile(track) == profile(publication)
        && parameter(track, "packetization-mode").unwrap_or_else(|| "0".to_owned())
            == parameter(publication, "packetization-mode").unwrap_or_else(|| "0".to_owned())
}

impl Worker {
    /// Parks the following tracks that play `publication`; call before it leaves the core.
    pub(super) fn park_followers(&mut self, publication: PublicationId, now: Instant) {
        let parked: Vec<(SubscriptionId, Follow)> = self
            .following
            .iter()
            .filter(|(_, follow)| follow.playing == Some(publication))
            .map(|(id, follow)| (*id, *follow))
            .collect();
        for (subscription, follow) in parked {
            if let Some(entry) = self.following.get_mut(&subscription) {
                entry.playing = None;
            }
            if let Some(leg) = self.leg_mut(follow.participant, subscription) {
                leg.publication = None;
            }
            // Only a started track is in the core.
            if self.subscriptions.remove(&subscription).is_some() {
                let input = Input::SubscriptionMoved {
                    subscription,
                    publication: None,
                };
                if let Some(slot) = self.rooms.get_mut(&follow.room)
                    && let Err(err) = slot.core.handle_input(now, input)
                {
                    warn!(%subscription, %err, "parking a following track");
                }
            }
            debug!(%subscription, %publication, "following track parked: its publication ends");
            self.tell(
                follow.participant,
                ShardEvent::SubscriptionMoved {
                    subscription,
                    publication: None,
                },
            );
        }
    }

    /// Gives every waiting following track of `room` a publication of its kind and codec, if
    /// the room has one; call after publications were added or removed.
    pub(super) fn rebind_followers(&mut self, room: RoomKey, now: Instant) {
        let waiting: Vec<(SubscriptionId, ParticipantId)> = self
            .following
            .iter()
            .filter(|(_, f)| f.room == room && f.playing.is_none())
            .map(|(id, f)| (*id, f.participant))
            .collect();
        let mut started = Vec::new();
        for (subscription, participant) in waiting {
            let Some(publication) = self.choose(room, participant, subscription) else {
                continue;
            };
            if let Some(entry) = self.following.get_mut(&subscription) {
                entry.playing = Some(publication);
            }
            let key = self.members.get(&participant).and_then(|m| m.subscriber);
            let Some((key, leg)) = key.and_then(|key| {
                let leg = self.peers.get_mut(&key)?.legs.get_mut(&subscription)?;
                Some((key, leg))
            }) else {
                continue;
            };
            leg.publication = Some(publication);
            let sender = leg.sender;
            debug!(%subscription, %publication, "following track bound");
            if leg.state == LegState::Active {
                // Started before: it is parked in the core and moves on.
                let input = Input::SubscriptionMoved {
                    subscription,
                    publication: Some(publication),
                };
                let moved = self
                    .rooms
                    .get_mut(&room)
                    .map(|slot| slot.core.handle_input(now, input));
                match moved {
                    Some(Ok(())) => {
                        self.subscriptions
                            .insert(subscription, (key, sender, publication));
                    }
                    Some(Err(err)) => warn!(%subscription, %err, "moving a following track"),
                    None => {}
                }
            } else {
                started.push(key);
            }
            self.tell(
                participant,
                ShardEvent::SubscriptionMoved {
                    subscription,
                    publication: Some(publication),
                },
            );
        }
        self.drain_room(room, now);
        // A track never started starts as an answered one does, once connected.
        for key in started {
            self.activate(key, now);
        }
    }

    /// The publication a waiting track of `participant` takes: of its kind and codec in
    /// `room`, played by none of the participant's other tracks, its other tracks' publisher
    /// first, then the oldest.
    fn choose(
        &self,
        room: RoomKey,
        participant: ParticipantId,
        subscription: SubscriptionId,
    ) -> Option<PublicationId> {
        let key = self.members.get(&participant)?.subscriber?;
        let peer = self.peers.get(&key)?;
        let codec = &peer.legs.get(&subscription)?.codec;
        let played: Vec<PublicationId> = peer.legs.values().filter_map(|l| l.publication).collect();
        let publishers: Vec<ParticipantId> = played
            .iter()
            .filter_map(|p| self.publications.get(p).map(|slot| slot.publisher))
            .collect();
        self.publications
            .iter()
            .filter(|(id, slot)| {
                slot.room == room && !played.contains(id) && same_codec(codec, &slot.codec)
            })
            .min_by_key(|(id, slot)| (!publishers.contains(&slot.publisher), id.0))
            .map(|(id, _)| *id)
    }

    fn leg_mut(
        &mut self,
        participant: ParticipantId,
        subscription: SubscriptionId,
    ) -> Option<&mut super::peer::SendLeg> {
        let key = self.members.get(&participant)?.subscriber?;
        self.peers.get_mut(&key)?.legs.get_mut(&subscription)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(mime: &str, fmtp: &str) -> CodecInfo {
        CodecInfo {
            mime_type: mime.to_owned(),
            clock_rate: if mime.starts_with("audio") {
                48_000
            } else {
                90_000
            },
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
        }
    }

    #[test]
    fn a_track_carries_the_same_codec_and_h264_profile_only() {
        let vp8 = codec("video/VP8", "");
        assert!(same_codec(&vp8, &codec("video/vp8", "")));
        assert!(!same_codec(&vp8, &codec("video/H264", "")));
        assert!(!same_codec(&codec("audio/opus", ""), &vp8));
        let baseline = codec(
            "video/H264",
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        );
        assert!(same_codec(
            &baseline,
            &codec("video/H264", "profile-level-id=42E028;packetization-mode=1")
        ));
        assert!(!same_codec(
            &baseline,
            &codec("video/H264", "profile-level-id=640028;packetization-mode=1")
        ));
        assert!(!same_codec(
            &baseline,
            &codec("video/H264", "profile-level-id=42e01f")
        ));
    }
}
