//! One webrtc-rs peer connection of a participant (publisher or subscriber role) behind
//! Sluice's value types: offer/answer, trickle ICE, local tracks, probing and closing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rtc::peer_connection::configuration::RTCOfferOptions;

/// How long a track removal waits for the driver to send what is queued for it.
const REMOVAL_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_millis(300);
/// Each poll takes the connection's core lock, which the driver needs to drain the queue.
const REMOVAL_DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(10);
const REMOVAL_DRAIN_STALLED_POLLS: u32 = 10;

use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceCandidateType, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, RTCStatsReportEntry, SettingEngineBuilder,
    StatsSelector,
};
use webrtc::rtp_transceiver::{RTCRtpSenderId, RtpReceiver, RtpTransceiver};

use super::congestion::PathState;
use super::horizon::RepairHorizons;
use super::interceptors::{AUDIO_LEVEL_URI, ConnectionControls, configure};
use super::ports::PortCursor;
use super::probe::ProbeControl;
use super::reports::{RemoteSenderClock, SampledClocks, SentReports};
use super::track::{LocalTrack, RemoteTrack};
use super::{CodecInfo, ConnectionState, IceCandidate, PeerEvent, TransportConfig, TransportError};
use crate::core::MediaKind;

/// Which of a participant's two connections this is; only used for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// The client offers and sends its media up.
    Publisher,
    /// The server offers and sends subscriptions down.
    Subscriber,
}

pub use build::Transport;
pub(crate) use build::sluice_media_engine;

fn peer_err(err: impl std::fmt::Display) -> TransportError {
    TransportError::Peer(err.to_string())
}

fn negotiation_err(err: impl std::fmt::Display) -> TransportError {
    TransportError::Negotiation(err.to_string())
}

/// One WebRTC peer connection. Cheap to clone; closing is explicit ([`Peer::close`]).
#[derive(Clone)]
pub struct Peer {
    role: PeerRole,
    pc: Arc<dyn PeerConnection>,
    playout_delay_ms: u16,
    /// Shared by the sending tracks' writers and the connection's sender reports.
    clocks: Arc<SampledClocks>,
    /// Shared by the connection's sender reports and the sending tracks' feedback, which
    /// matches receiver reports against them.
    sent_reports: Arc<SentReports>,
    /// The probe this connection sends (subscriber connections).
    probe: Arc<ProbeControl>,
    /// Whether the path to the client was just found congested.
    path: Arc<PathState>,
    /// Where each outgoing stream's decoder last restarted (see `horizon`).
    horizons: Arc<RepairHorizons>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("role", &self.role).finish()
    }
}

impl Peer {
    pub fn role(&self) -> PeerRole {
        self.role
    }

    /// Applies the client's offer and returns the answer SDP.
    pub async fn answer(&self, offer_sdp: String) -> Result<String, TransportError> {
        let offer = RTCSessionDescription::offer(offer_sdp)
            .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
        let answer = self.pc.create_answer(None).await.map_err(negotiation_err)?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(negotiation_err)?;
        self.local_sdp().await
    }

    /// Creates and applies a new local offer, returning its SDP. With `ice_restart` the offer
    /// carries new ICE credentials, so the connection re-runs its checks (after a client's
    /// network changed, or when it resumed its session on a new socket).
    pub async fn offer(&self, ice_restart: bool) -> Result<String, TransportError> {
        let options = ice_restart.then_some(RTCOfferOptions { ice_restart: true });
        let offer = self
            .pc
            .create_offer(options)
            .await
            .map_err(negotiation_err)?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(negotiation_err)?;
        self.local_sdp().await
    }

    /// Applies the client's answer to our latest offer.
    pub async fn apply_answer(&self, answer_sdp: String) -> Result<(), TransportError> {
        let answer = RTCSessionDescription::answer(answer_sdp)
            .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| TransportError::InvalidSdp(e.to_string()))
    }

    /// The current local description's SDP (the pending offer while one waits for its answer).
    pub async fn local_description(&self) -> Option<String> {
        self.pc.local_description().await.map(|d| d.sdp)
    }

    async fn local_sdp(&self) -> Result<String, TransportError> {
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| TransportError::Negotiation("no local description".to_owned()))
    }

    pub async fn add_ice_candidate(&self, candidate: IceCandidate) -> Result<(), TransportError> {
        // An empty candidate marks the end of the remote candidates; nothing to add.
        if candidate.candidate.trim().is_empty() {
            return Ok(());
        }
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_m_line_index,
                username_fragment: candidate.username_fragment,
                ..Default::default()
            })
            .await
            .map_err(|e| TransportError::InvalidCandidate(e.to_string()))
    }

    /// Adds a sending track; it is offered on the next [`Peer::offer`].
    /// `stream_id` becomes the msid stream id the client sees on `ontrack`.
    pub async fn add_local_track(
        &self,
        stream_id: String,
        track_id: String,
        codec: &CodecInfo,
        ssrc: u32,
    ) -> Result<LocalTrack, TransportError> {
        let kind = match codec.kind() {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let rtp_codec = RTCRtpCodec {
            mime_type: codec.mime_type.clone(),
            clock_rate: codec.clock_rate,
            channels: codec.channels,
            sdp_fmtp_line: codec.sdp_fmtp_line.clone(),
            rtcp_feedback: vec![],
        };
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream_id,
            track_id.clone(),
            track_id,
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: rtp_codec,
                ..Default::default()
            }],
        )));
        let sender = self
            .pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .map_err(negotiation_err)?;
        let playout_delay = (kind == RtpCodecKind::Video && self.playout_delay_ms > 0)
            .then_some(self.playout_delay_ms);
        Ok(LocalTrack::new(
            track,
            sender,
            codec.clone(),
            ssrc,
            playout_delay,
            Arc::clone(&self.clocks),
            Arc::clone(&self.sent_reports),
        ))
    }

    /// Stops sending a track; the change is offered on the next [`Peer::offer`].
    pub async fn remove_local_track(&self, track: &LocalTrack) -> Result<(), TransportError> {
        let (sender, handed) = track.stop_for_removal();
        self.wait_until_sent(sender.id(), track, handed).await;
        self.pc.remove_track(sender).await.map_err(negotiation_err)
    }

    /// Waits (bounded) until the driver has sent the packets already queued for `sender`.
    /// Removing a sender with packets still queued makes webrtc-rs log an error per packet: up
    /// to its whole 256-event queue when a subscription ends during a keyframe-cache replay.
    async fn wait_until_sent(&self, sender: RTCRtpSenderId, track: &LocalTrack, handed: u64) {
        let ssrc = track.ssrc().0;
        if handed == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + REMOVAL_DRAIN_LIMIT;
        let mut last_sent = None;
        let mut polls_without_progress = 0;
        loop {
            let report = self
                .pc
                .get_stats(std::time::Instant::now(), StatsSelector::Sender(sender))
                .await;
            let sent: u64 = report
                .outbound_rtp_streams()
                .filter(|s| s.sent_rtp_stream_stats.rtp_stream_stats.ssrc == ssrc)
                .map(|s| s.sent_rtp_stream_stats.packets_sent)
                .sum();
            // Retransmissions count in `packetsSent` too; NACKed packets bound them from above,
            // so this never stops before the handed packets are out (at worst it waits on).
            if sent.saturating_sub(track.nacked()) >= handed {
                return;
            }
            // A closed or stalled connection sends nothing more: no point waiting for it.
            if last_sent == Some(sent) {
                polls_without_progress += 1;
            } else {
                polls_without_progress = 0;
            }
            last_sent = Some(sent);
            if polls_without_progress >= REMOVAL_DRAIN_STALLED_POLLS
                || tokio::time::Instant::now() >= deadline
            {
                debug!(sent, handed, "removing a sender with packets still queued");
                return;
            }
            tokio::time::sleep(REMOVAL_DRAIN_POLL).await;
        }
    }

    /// The `mid` of the transceiver that receives `track`.
    pub async fn mid_of(&self, track: &RemoteTrack) -> Option<String> {
        let (transceiver, _) = self.receiver_of(track).await?;
        transceiver.mid().await.ok().flatten()
    }

    /// The id the client's offer gave the RFC 6464 audio level extension on `track`, when it
    /// was negotiated (browsers offer it on audio). Ask once media flows: the receiver's
    /// parameters are fixed by then.
    pub async fn audio_level_extension_id(&self, track: &RemoteTrack) -> Option<u8> {
        let (_, receiver) = self.receiver_of(track).await?;
        let parameters = receiver.get_parameters().await.ok()?;
        parameters
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|extension| extension.uri == AUDIO_LEVEL_URI)
            .and_then(|extension| u8::try_from(extension.id).ok())
    }

    async fn receiver_of(
        &self,
        track: &RemoteTrack,
    ) -> Option<(Arc<dyn RtpTransceiver>, Arc<dyn RtpReceiver>)> {
        for transceiver in self.pc.get_transceivers().await {
            let Ok(Some(receiver)) = transceiver.receiver().await else {
                continue;
            };
            if receiver.track().track_id().await == track.track_id() {
                return Some((transceiver, receiver));
            }
        }
        None
    }

    /// Probes the path to the client: `bits_per_second` more than the media for `duration`,
    /// stopped early if a standing queue forms (see `probe`).
    pub fn probe(&self, bits_per_second: u64, duration: std::time::Duration) {
        debug!(bits_per_second, ?duration, "probing the subscriber's path");
        self.probe
            .start(std::time::Instant::now(), bits_per_second, duration);
    }

    /// Where the decoder of each stream this connection sends restarted: NACKs for earlier
    /// packets are ignored (see `horizon`).
    pub fn repair_horizons(&self) -> Arc<RepairHorizons> {
        Arc::clone(&self.horizons)
    }

    /// The path to the client was found congested by a signal the connection cannot see
    /// itself (a REMB, heavy loss): repairs go out once while it drains, and a running probe
    /// stops (sent on into the queue, it would only sink a REMB client's REMB further:
    /// ADR 0024).
    pub fn mark_path_congested(&self) {
        let now = std::time::Instant::now();
        self.path.mark_congested(now);
        self.probe.stop(now);
    }

    /// The send-side bandwidth estimate (GCC over TWCC feedback) of this connection, in bits
    /// per second; `None` before the estimator has produced one.
    pub async fn estimated_bitrate(&self) -> Option<u64> {
        let report = self
            .pc
            .get_stats(std::time::Instant::now(), StatsSelector::None)
            .await;
        report
            .iter()
            .filter_map(|entry| match entry {
                RTCStatsReportEntry::OutboundRtp(stats) => Some(stats.target_bitrate),
                _ => None,
            })
            .filter(|bps| bps.is_finite() && *bps > 0.0)
            .map(|bps| bps as u64)
            .max()
    }

    pub async fn close(&self) {
        if let Err(err) = self.pc.close().await {
            debug!(role = ?self.role, %err, "closing peer connection");
        }
    }
}

struct PeerHandler {
    role: PeerRole,
    events: mpsc::Sender<PeerEvent>,
    /// The remote's NTP clock on ours, shared by all the tracks it sends.
    sender_clock: Arc<RemoteSenderClock>,
}

impl PeerHandler {
    fn emit(&self, event: PeerEvent) {
        if let Err(err) = self.events.try_send(event) {
            warn!(role = ?self.role, %err, "peer event dropped");
        }
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => self.emit(PeerEvent::LocalCandidate(IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_m_line_index: init.sdp_mline_index,
                username_fragment: init.username_fragment,
            })),
            Err(err) => warn!(role = ?self.role, %err, "unusable local candidate"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let state = match state {
            RTCPeerConnectionState::Connecting => ConnectionState::Connecting,
            RTCPeerConnectionState::Connected => ConnectionState::Connected,
            RTCPeerConnectionState::Disconnected => ConnectionState::Disconnected,
            RTCPeerConnectionState::Failed => ConnectionState::Failed,
            RTCPeerConnectionState::Closed => ConnectionState::Closed,
            _ => ConnectionState::New,
        };
        self.emit(PeerEvent::ConnectionState(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        match RemoteTrack::open(track, Arc::clone(&self.sender_clock)).await {
            Some(track) => self.emit(PeerEvent::TrackOpened(track)),
            None => warn!(role = ?self.role, "remote track without SSRC or codec ignored"),
        }
    }
}

mod build;
