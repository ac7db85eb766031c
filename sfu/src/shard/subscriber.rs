//! A participant's subscriber connection on the shard: the tracks its subscriptions add, the
//! offers the shard makes and the answers it applies, and starting each subscription in the
//! room once it is negotiated and the connection is up.

use std::time::Instant;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tracing::{debug, warn};

use super::peer::{LegState, PeerKey, SendLeg, rtc_err, rtp_codec};
use super::worker::Worker;
use super::{ShardError, SubscriptionChange};
use crate::core::{Input, MediaKind, ParticipantId, PublicationId, Ssrc, SubscriptionId};
use crate::transport::PeerRole;
use crate::transport::interceptors::{AUDIO_LEVEL_URI, PLAYOUT_DELAY_URI};

impl Worker {
    pub(super) fn subscribe(
        &mut self,
        participant: ParticipantId,
        subscription: SubscriptionId,
        publication: PublicationId,
        now: Instant,
    ) -> Result<(), ShardError> {
        let room = self
            .members
            .get(&participant)
            .map(|m| m.room)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        let (publisher, codec) = self
            .publications
            .get(&publication)
            .filter(|slot| slot.room == room)
            .map(|slot| (slot.publisher, slot.codec.clone()))
            .ok_or(ShardError::UnknownPublication(publication))?;
        self.add_leg(
            participant,
            subscription,
            Some((publication, publisher)),
            codec,
            now,
        )
    }

    /// Adds a track of `codec` to the participant's subscriber connection for `subscription`,
    /// playing `source` (a publication and its publisher) or, without, waiting for one.
    pub(super) fn add_leg(
        &mut self,
        participant: ParticipantId,
        subscription: SubscriptionId,
        source: Option<(PublicationId, ParticipantId)>,
        codec: crate::transport::CodecInfo,
        now: Instant,
    ) -> Result<(), ShardError> {
        if self.subscriptions.contains_key(&subscription)
            || self
                .peers
                .values()
                .any(|p| p.legs.contains_key(&subscription))
        {
            return Err(ShardError::Invalid(format!(
                "subscription {subscription} exists"
            )));
        }
        let key = self.peer_of(participant, PeerRole::Subscriber, now)?;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        let ssrc = loop {
            let candidate = rand::random::<u32>();
            if candidate != 0 && !peer.by_ssrc.contains_key(&Ssrc(candidate)) {
                break Ssrc(candidate);
            }
        };
        let kind = match codec.kind() {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        // The msid stream: a browser plays the audio and video of one stream in sync (a
        // waiting track's is the viewer's own, as it may come from any publisher).
        let stream = source.map_or(participant, |(_, publisher)| publisher);
        let track = MediaStreamTrack::new(
            stream.to_string(),
            subscription.to_string(),
            subscription.to_string(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc.0),
                    ..Default::default()
                },
                codec: rtp_codec(&codec),
                ..Default::default()
            }],
        );
        let sender = peer.pc.add_track(track).map_err(rtc_err)?;
        peer.by_ssrc.insert(ssrc, subscription);
        peer.legs.insert(
            subscription,
            SendLeg {
                sender,
                publication: source.map(|(publication, _)| publication),
                codec,
                ssrc,
                state: LegState::Pending,
                preferred: None,
                paused: false,
                anchored: None,
                playout_delay: None,
                audio_level: None,
                sent: 0,
            },
        );
        Ok(())
    }

    pub(super) fn offer(
        &mut self,
        participant: ParticipantId,
        ice_restart: bool,
        now: Instant,
    ) -> Result<String, ShardError> {
        let key = self.peer_of(participant, PeerRole::Subscriber, now)?;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        if ice_restart {
            peer.pc.restart_ice();
        }
        let offer = peer.pc.create_offer(None).map_err(rtc_err)?;
        peer.pc.set_local_description(now, offer).map_err(rtc_err)?;
        let sdp = peer
            .pc
            .local_description()
            .map(|d| d.sdp.clone())
            .ok_or_else(|| ShardError::Peer("no local description".to_owned()))?;
        peer.awaiting_answer = true;
        for leg in peer.legs.values_mut() {
            if leg.state == LegState::Pending {
                leg.state = LegState::Offered;
            }
        }
        self.refresh_ufrag(key);
        self.service(key, now);
        Ok(sdp)
    }

    pub(super) fn answer(
        &mut self,
        participant: ParticipantId,
        sdp: String,
        now: Instant,
    ) -> Result<(), ShardError> {
        let key = self
            .members
            .get(&participant)
            .and_then(|m| m.subscriber)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        let max_candidates = self.config.max_remote_candidates;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        if !peer.awaiting_answer {
            return Err(ShardError::Invalid(
                "no offer is waiting for an answer".to_owned(),
            ));
        }
        peer.hold_description_candidates(&sdp, max_candidates)?;
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| ShardError::InvalidSdp(e.to_string()))?;
        peer.pc
            .set_remote_description(now, answer)
            .map_err(|e| ShardError::InvalidSdp(e.to_string()))?;
        peer.awaiting_answer = false;
        for leg in peer.legs.values_mut() {
            if leg.state == LegState::Offered {
                leg.state = LegState::Answered;
            }
        }
        self.service(key, now);
        self.activate(key, now);
        Ok(())
    }

    /// Starts forwarding to the subscriber connection's answered tracks once it is connected,
    /// with the payload type each negotiated.
    pub(super) fn activate(&mut self, key: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !peer.connected || peer.awaiting_answer {
            return;
        }
        let participant = peer.participant;
        let mut started = Vec::new();
        for (subscription, leg) in &mut peer.legs {
            // A waiting WHEP track starts once it has a publication (see `follow`).
            let (LegState::Answered, Some(publication)) = (leg.state, leg.publication) else {
                continue;
            };
            let Some(parameters) = peer
                .pc
                .rtp_sender(leg.sender)
                .map(|mut sender| sender.get_parameters().rtp_parameters.clone())
            else {
                continue;
            };
            let payload_type = parameters
                .codecs
                .iter()
                .find(|c| {
                    c.rtp_codec
                        .mime_type
                        .eq_ignore_ascii_case(&leg.codec.mime_type)
                })
                .map(|c| c.payload_type);
            let extension_id = |uri: &str| {
                parameters
                    .header_extensions
                    .iter()
                    .find(|extension| extension.uri == uri)
                    .and_then(|extension| u8::try_from(extension.id).ok())
            };
            leg.playout_delay = extension_id(PLAYOUT_DELAY_URI);
            leg.audio_level = extension_id(AUDIO_LEVEL_URI);
            let Some(payload_type) = payload_type else {
                warn!(%subscription, codec = %leg.codec.mime_type, "codec not negotiated with the subscriber");
                continue;
            };
            leg.state = LegState::Active;
            started.push((
                *subscription,
                publication,
                leg.ssrc,
                leg.sender,
                payload_type,
                (leg.preferred, leg.paused),
            ));
        }
        let Some(room) = self.members.get(&participant).map(|m| m.room) else {
            return;
        };
        for (subscription, publication, ssrc, sender, payload_type, (preferred, paused)) in started
        {
            let input = Input::SubscriptionAdded {
                subscription,
                subscriber: participant,
                publication,
                ssrc,
                payload_type,
                preferred,
                paused,
            };
            let Some(slot) = self.rooms.get_mut(&room) else {
                return;
            };
            match slot.core.handle_input(now, input) {
                Ok(()) => {
                    debug!(%subscription, %publication, payload_type, "subscription started");
                    self.subscriptions
                        .insert(subscription, (key, sender, publication));
                }
                Err(err) => warn!(%subscription, %err, "subscription not started"),
            }
        }
        self.drain_room(room, now);
    }

    pub(super) fn change(
        &mut self,
        participant: ParticipantId,
        subscription: SubscriptionId,
        change: SubscriptionChange,
        now: Instant,
    ) -> Result<(), ShardError> {
        let member = self
            .members
            .get(&participant)
            .ok_or(ShardError::UnknownParticipant(participant))?;
        let room = member.room;
        let key = member
            .subscriber
            .ok_or(ShardError::UnknownSubscription(subscription))?;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(ShardError::UnknownSubscription(subscription))?;
        let leg = peer
            .legs
            .get_mut(&subscription)
            .ok_or(ShardError::UnknownSubscription(subscription))?;
        let active = leg.state == LegState::Active;
        let input = match change {
            SubscriptionChange::PreferLayer { spatial, temporal } => {
                leg.preferred = Some((spatial, temporal));
                Input::SetPreferredLayer {
                    subscription,
                    spatial,
                    temporal,
                }
            }
            SubscriptionChange::Paused(paused) => {
                leg.paused = paused;
                Input::SetPaused {
                    subscription,
                    paused,
                }
            }
            SubscriptionChange::Remove => {
                let (sender, ssrc) = (leg.sender, leg.ssrc);
                peer.legs.remove(&subscription);
                peer.by_ssrc.remove(&ssrc);
                if let Err(err) = peer.pc.remove_track(sender) {
                    debug!(%subscription, %err, "removing the subscriber track");
                }
                self.retire_subscription(room, subscription);
                self.subscriptions.remove(&subscription);
                self.following.remove(&subscription);
                Input::SubscriptionRemoved { subscription }
            }
        };
        if active && let Some(slot) = self.rooms.get_mut(&room) {
            let removal = matches!(input, Input::SubscriptionRemoved { .. });
            let applied = slot.core.handle_input(now, input);
            self.drain_room(room, now);
            match applied {
                Ok(()) => {}
                // The core ended it already, with its publication.
                Err(_) if removal => {}
                Err(err) => return Err(ShardError::Invalid(err.to_string())),
            }
        }
        Ok(())
    }
}
