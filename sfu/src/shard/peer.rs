//! One peer connection on a shard: the sans-IO `rtc` connection built for ICE-lite with
//! Sluice's codecs and interceptors, and what the shard remembers about it (whose it is, the
//! addresses it may be sent to, its tracks, its timer).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::crypto::SignatureScheme;
use rtc::ice::tcp_type::TcpType;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};

use super::ShardError;
use super::data::DataChannels;
use super::freshness::Abandoned;
use super::paths::Paths;
use super::ssrc_gate::SsrcGate;
use crate::core::{ParticipantId, PublicationId, Ssrc, SubscriptionId};
use crate::transport::interceptors::{AUDIO_LEVEL_URI, ConnectionControls, configure};
use crate::transport::{
    ClockAnchor, CodecInfo, Congestion, PeerRole, RemoteSenderClock, sluice_media_engine,
};

/// Adds `candidate` (its `candidate:` line) to `held` unless known; refuses past `cap`.
fn hold(held: &mut HashSet<String>, candidate: &str, cap: usize) -> Result<(), ShardError> {
    let candidate = candidate.trim();
    let candidate = candidate.strip_prefix("a=").unwrap_or(candidate);
    let value = candidate.strip_prefix("candidate:").unwrap_or(candidate);
    if held.contains(value) {
        return Ok(());
    }
    if held.len() >= cap {
        return Err(ShardError::TooManyCandidates(cap));
    }
    held.insert(value.to_owned());
    Ok(())
}

/// Congestion signals a subscriber connection's estimator may queue between two services.
const CONGESTION_EVENTS: usize = 16;

/// What a publisher's received stream is: its publication, simulcast layer, and the id of
/// the audio level extension on it (when negotiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stream {
    pub(crate) publication: PublicationId,
    pub(crate) layer: u8,
    pub(crate) audio_level: Option<u8>,
}

/// Silence from the client before a connection counts as disconnected, then as failed.
const ICE_DISCONNECTED_AFTER: Duration = Duration::from_secs(15);
const ICE_FAILED_AFTER: Duration = Duration::from_secs(15);

/// A key of a peer connection within its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PeerKey(pub(crate) u64);

/// A track a subscriber connection sends: one subscription of the participant.
#[derive(Debug, Clone)]
pub(crate) struct SendLeg {
    pub(crate) sender: RTCRtpSenderId,
    /// What it plays; `None` for a WHEP track that waits for a publication (see `follow`).
    pub(crate) publication: Option<PublicationId>,
    pub(crate) codec: CodecInfo,
    pub(crate) ssrc: Ssrc,
    pub(crate) state: LegState,
    /// Asked before the subscription started; applied when it does.
    pub(crate) preferred: Option<(u8, Option<u8>)>,
    pub(crate) paused: bool,
    /// The RTP timestamp of the frame whose sampling instant last anchored the leg's sender
    /// reports (see `transport::reports`).
    pub(crate) anchored: Option<u32>,
    /// The id the playout-delay extension was negotiated with (video, when asked for).
    pub(crate) playout_delay: Option<u8>,
    /// The id the audio-level extension was negotiated with (audio).
    pub(crate) audio_level: Option<u8>,
    /// Packets written to the leg.
    pub(crate) sent: u64,
}

/// How far a subscriber track has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LegState {
    /// Added; no offer carried it yet.
    Pending,
    /// In the offer that awaits the client's answer.
    Offered,
    /// Answered: it starts when the connection is up.
    Answered,
    /// The room forwards to it.
    Active,
}

/// A shard's peer connection and its bookkeeping.
pub(crate) struct ShardPeer {
    pub(crate) pc: RTCPeerConnection,
    pub(crate) role: PeerRole,
    pub(crate) participant: ParticipantId,
    /// The local ufrag of the current local description (empty before the first one); it
    /// changes with an ICE restart.
    pub(crate) ufrag: String,
    pub(crate) paths: Paths,
    /// The distinct remote candidates the client named (SDP and trickle) since its last ICE
    /// credentials, held against the cap; a description repeating them costs nothing.
    pub(crate) remote_candidates: HashSet<String>,
    /// The remote ufrag those candidates belong to (an ICE restart starts a new count).
    pub(crate) remote_ufrag: Option<String>,
    /// ICE and DTLS came up, and the connection has not failed or closed since.
    pub(crate) connected: bool,
    /// Queued for a timer refresh at the end of the shard's pass.
    pub(crate) dirty: bool,
    /// Queued for a write poll.
    pub(crate) written: bool,
    /// The deadline registered with the shard's timers.
    pub(crate) timeout: Option<Instant>,
    /// Publisher: the publication of each negotiated mid with its simulcast rids (lowest
    /// first; empty without simulcast), the publication and layer of each remote stream by
    /// SSRC, and the receiver of each publication (for keyframe requests).
    pub(crate) mids: HashMap<String, (PublicationId, Vec<String>)>,
    pub(crate) streams: HashMap<u32, Stream>,
    pub(crate) receivers: HashMap<PublicationId, RTCRtpReceiverId>,
    /// Subscriber: its subscriptions, and which one each outgoing SSRC is.
    pub(crate) legs: HashMap<SubscriptionId, SendLeg>,
    pub(crate) by_ssrc: HashMap<Ssrc, SubscriptionId>,
    pub(crate) awaiting_answer: bool,
    /// What the connection's own interceptors share with the shard.
    pub(crate) controls: ConnectionControls,
    /// Congestion signals of a subscriber connection's estimator.
    pub(crate) congestion: tokio::sync::mpsc::Receiver<Congestion>,
    /// Publisher: its sender reports' NTP clock placed on ours, and per SSRC the latest
    /// report as an anchor of that stream's RTP clock.
    pub(crate) sender_clock: RemoteSenderClock,
    pub(crate) reported: HashMap<u32, ClockAnchor>,
    /// A nominating check held until the agent's own check of its pair succeeds (see
    /// `nomination`).
    pub(crate) nominating: Option<Vec<u8>>,
    /// Publisher: Sluice's data channels, once the client opened them.
    pub(crate) data: DataChannels,
    /// Publisher: per SSRC, the sequence numbers discarded as stale, whose retransmissions are
    /// discarded too.
    pub(crate) abandoned: HashMap<u32, Abandoned>,
    /// The SSRCs the client may send from: every map by SSRC here and in `rtc` is bounded by
    /// it.
    pub(crate) ssrc_gate: SsrcGate,
}

impl ShardPeer {
    /// A connection for `participant` that answers ICE checks on `local` (ICE-lite: it never
    /// sends a check, and its one candidate is the shard's socket). With `playout_delay`, its
    /// video may carry the playout-delay extension.
    pub(crate) fn new(
        role: PeerRole,
        participant: ParticipantId,
        local: SocketAddr,
        tcp_local: Option<SocketAddr>,
        certificate: &RTCCertificate,
        playout_delay: bool,
        now: Instant,
    ) -> Result<Self, ShardError> {
        let controls = ConnectionControls::default();
        let (events, congestion) = tokio::sync::mpsc::channel(CONGESTION_EVENTS);
        let mut pc = build(role, certificate, playout_delay, &controls, events, now)?;
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(rtc_err)?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(rtc_err)?;
        pc.add_local_candidate(init).map_err(rtc_err)?;
        // RFC 6544 passive: the client connects, for networks that block UDP. Its lower type
        // preference keeps UDP first wherever UDP works.
        if let Some(tcp_local) = tcp_local {
            let candidate = CandidateHostConfig {
                base_config: CandidateConfig {
                    network: "tcp".to_owned(),
                    address: tcp_local.ip().to_string(),
                    port: tcp_local.port(),
                    component: 1,
                    ..Default::default()
                },
                tcp_type: TcpType::Passive,
            }
            .new_candidate_host()
            .map_err(rtc_err)?;
            let init = RTCIceCandidate::from(&candidate)
                .to_json()
                .map_err(rtc_err)?;
            pc.add_local_candidate(init).map_err(rtc_err)?;
        }
        // End of gathering: the shard's sockets are the only candidates.
        pc.add_local_candidate(RTCIceCandidateInit::default())
            .map_err(rtc_err)?;
        Ok(Self {
            pc,
            role,
            participant,
            ufrag: String::new(),
            paths: Paths::default(),
            remote_candidates: HashSet::new(),
            remote_ufrag: None,
            connected: false,
            dirty: false,
            written: false,
            timeout: None,
            mids: HashMap::new(),
            streams: HashMap::new(),
            receivers: HashMap::new(),
            legs: HashMap::new(),
            by_ssrc: HashMap::new(),
            awaiting_answer: false,
            controls,
            congestion,
            sender_clock: RemoteSenderClock::default(),
            reported: HashMap::new(),
            nominating: None,
            data: DataChannels::default(),
            abandoned: HashMap::new(),
            ssrc_gate: SsrcGate::default(),
        })
    }

    /// Holds the candidates of a remote description against `cap` (the description's own
    /// ufrag starts a new count when it changed: an ICE restart).
    pub(crate) fn hold_description_candidates(
        &mut self,
        sdp: &str,
        cap: usize,
    ) -> Result<(), ShardError> {
        let ufrag = sdp
            .lines()
            .find_map(|line| line.trim().strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned);
        let candidates = sdp
            .lines()
            .filter_map(|line| line.trim().strip_prefix("a="))
            .filter(|line| line.starts_with("candidate:"));
        let restart = ufrag.is_some() && ufrag != self.remote_ufrag;
        let mut held = if restart {
            HashSet::new()
        } else {
            self.remote_candidates.clone()
        };
        for candidate in candidates {
            hold(&mut held, candidate, cap)?;
        }
        self.remote_candidates = held;
        if restart {
            self.remote_ufrag = ufrag;
        }
        Ok(())
    }

    /// Applies the client's `offer` (its candidates held against `cap`) and returns the
    /// answer, set as the local description.
    pub(crate) fn answer(
        &mut self,
        offer: String,
        cap: usize,
        now: Instant,
    ) -> Result<String, ShardError> {
        self.hold_description_candidates(&offer, cap)?;
        let offer = RTCSessionDescription::offer(offer)
            .map_err(|e| ShardError::InvalidSdp(e.to_string()))?;
        self.pc
            .set_remote_description(now, offer)
            .map_err(|e| ShardError::InvalidSdp(e.to_string()))?;
        let answer = self.pc.create_answer(None).map_err(rtc_err)?;
        self.pc
            .set_local_description(now, answer)
            .map_err(rtc_err)?;
        self.pc
            .local_description()
            .map(|d| d.sdp.clone())
            .ok_or_else(|| ShardError::Peer("no local description".to_owned()))
    }

    /// Holds one trickled candidate against `cap`.
    pub(crate) fn hold_candidate(&mut self, candidate: &str, cap: usize) -> Result<(), ShardError> {
        hold(&mut self.remote_candidates, candidate, cap)
    }

    /// The local ufrag the current local description carries.
    pub(crate) fn local_ufrag(&self) -> Option<String> {
        let description = self.pc.local_description()?;
        description
            .sdp
            .lines()
            .find_map(|line| line.trim().strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned)
    }

    /// A remote stream opened: learns its publication (by its receiver's mid) and layer (by
    /// its rid). `None` for a mid that was not published or a rid the publication lacks.
    pub(crate) fn open_stream(
        &mut self,
        receiver: RTCRtpReceiverId,
        ssrc: u32,
        rid: Option<&str>,
    ) -> Option<Stream> {
        let transceivers: Vec<_> = self.pc.get_transceivers().collect();
        let mid = transceivers.into_iter().find_map(|id| {
            let transceiver = self.pc.rtp_transceiver(id)?;
            (transceiver.receiver() == Some(receiver))
                .then(|| transceiver.mid().clone())
                .flatten()
        })?;
        let (publication, rids) = self.mids.get(&mid)?;
        let layer = match (rid, rids.is_empty()) {
            (_, true) => 0,
            (Some(rid), false) => u8::try_from(rids.iter().position(|r| r == rid)?).ok()?,
            (None, false) => return None,
        };
        let publication = *publication;
        let audio_level = self.pc.rtp_receiver(receiver).and_then(|mut r| {
            r.get_parameters()
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|extension| extension.uri == AUDIO_LEVEL_URI)
                .and_then(|extension| u8::try_from(extension.id).ok())
        });
        let stream = Stream {
            publication,
            layer,
            audio_level,
        };
        self.receivers.insert(publication, receiver);
        self.streams.insert(ssrc, stream);
        Some(stream)
    }

    /// The publication and layer of a received packet: by its SSRC once the stream opened;
    /// before that (events and media leave `rtc` on separate queues), by its track when the
    /// publication has a single stream.
    pub(crate) fn stream_of(&mut self, track_id: &str, ssrc: u32) -> Option<Stream> {
        if let Some(stream) = self.streams.get(&ssrc) {
            return Some(*stream);
        }
        let receivers: Vec<RTCRtpReceiverId> = self.pc.get_receivers().collect();
        let receiver = receivers.into_iter().find(|id| {
            self.pc
                .rtp_receiver(*id)
                .is_some_and(|r| r.track().track_id() == track_id)
        })?;
        self.open_stream(receiver, ssrc, None)
    }
}

/// The DTLS certificate every connection of a shard presents: generating one per connection
/// (ECDSA P-256 key and self-signed X.509) is work a joining peer would add to the loop.
pub(crate) fn certificate() -> Result<RTCCertificate, ShardError> {
    let provider = rtc::crypto::default_provider().map_err(rtc_err)?;
    let params = CertificateParams::new(vec!["sluice".to_owned()]).map_err(rtc_err)?;
    RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
        .map_err(rtc_err)
}

fn build(
    role: PeerRole,
    certificate: &RTCCertificate,
    playout_delay: bool,
    controls: &ConnectionControls,
    congestion: tokio::sync::mpsc::Sender<Congestion>,
    now: Instant,
) -> Result<RTCPeerConnection, ShardError> {
    // Sluice's codecs and interceptor chain: NACK/RTX, reports, TWCC and GCC, probing and
    // repair horizons.
    let mut engine = sluice_media_engine().map_err(rtc_err)?;
    let registry =
        configure(role, &mut engine, playout_delay, controls, congestion).map_err(rtc_err)?;
    // The agent draws its own credentials (and new ones on an ICE restart); the shard reads
    // the ufrag from each local description.
    // A lite agent sends no keepalives: it hears the client's consent checks (every 4–6 s,
    // RFC 7675) and its media. Disconnected after 15 s of silence (rtc's 5 s default flapped
    // between consent checks), failed 15 s later (browsers give up consent after 30 s).
    let settings = SettingEngineBuilder::new()
        .with_lite(true)
        .with_ice_timeouts(Some(ICE_DISCONNECTED_AFTER), Some(ICE_FAILED_AFTER), None)
        .build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_certificates(vec![certificate.clone()])
                .build(),
        )
        .with_setting_engine(settings)
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(rtc_err)
}

/// The `rtc` codec a sender towards a subscriber announces for `codec`.
pub(crate) fn rtp_codec(codec: &CodecInfo) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: codec.mime_type.clone(),
        clock_rate: codec.clock_rate,
        channels: codec.channels,
        sdp_fmtp_line: codec.sdp_fmtp_line.clone(),
        rtcp_feedback: Vec::new(),
    }
}

pub(crate) fn rtc_err(err: impl std::fmt::Display) -> ShardError {
    ShardError::Peer(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_named_again_is_held_once() {
        let mut held = HashSet::new();
        let line = "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host";
        for form in [
            line.to_owned(),
            format!("a={line}"),
            line.replacen("candidate:", "", 1),
        ] {
            assert!(hold(&mut held, &form, 1).is_ok());
        }
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn new_candidates_past_the_cap_are_refused() {
        let mut held = HashSet::new();
        for port in 0..3 {
            let line = format!("candidate:{port} 1 udp 1 127.0.0.1 {port} typ host");
            assert!(hold(&mut held, &line, 3).is_ok());
        }
        let more = hold(&mut held, "candidate:9 1 udp 1 127.0.0.1 9 typ host", 3);
        assert!(matches!(more, Err(ShardError::TooManyCandidates(3))));
        assert_eq!(held.len(), 3);
    }
}
