use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rtc::interceptor::{Gcc, NackGeneratorBuilder, ReceiverReportBuilder, Slot};
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::peer_connection::configuration::interceptor_registry::{
    CongestionFeedback, configure_congestion_control, configure_nack, configure_rtcp_reports,
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};

/// GCC's starting point on a subscriber connection: high enough for a 720p simulcast layer
/// at once on a good path; GCC backs off within about a second where the path cannot carry it.
const GCC_INITIAL_BPS: f64 = 2_500_000.0;
const GCC_MIN_BPS: f64 = 100_000.0;
const GCC_MAX_BPS: f64 = 50_000_000.0;
/// How often lost packets of a publisher's are asked for again, and at most how many times.
const PUBLISHER_NACK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);
const PUBLISHER_NACKS_PER_PACKET: u16 = 15;
/// Wire-ward of the FEC decoder (6_000) and the NACK generator (7_000).
const RTX_SLOT: usize = 5_500;
/// Below `Slot::CongestionControl` (1_000), the wire-most built-in.
const REPEAT_SLOT: usize = 500;
/// Wire-ward of `Slot::NackResponder` (4_000) on the read path: the responder never sees a
/// NACK for a packet the decoder will not show.
const NACK_HORIZON_SLOT: usize = 3_900;
const PROBE_SLOT: usize = 400;
/// The very last before the wire: the stamp is when a packet leaves.
const SEND_TIME_SLOT: usize = 300;
/// RTP header extension that asks the receiver for a playout delay range.
const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
/// RFC 6464: the sender's audio level on every audio packet, for active speaker detection
/// without decoding.
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// How long a track removal waits for the driver to send what is queued for it.
const REMOVAL_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_millis(300);
/// Each poll takes the connection's core lock, which the driver needs to drain the queue.
const REMOVAL_DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(10);
const REMOVAL_DRAIN_STALLED_POLLS: u32 = 10;

use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
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
    RTCPeerConnectionState, RTCSessionDescription, RTCStatsReportEntry, Registry,
    SettingEngineBuilder, StatsSelector,
};
use webrtc::rtp_transceiver::{RTCRtpSenderId, RtpReceiver, RtpTransceiver};

use super::congestion::{PathState, QueueWatch};
use super::feedback::FeedbackToApplication;
use super::horizon::{NackHorizon, RepairHorizons};
use super::ports::PortCursor;
use super::probe::{ProbeControl, Prober};
use super::repeat::RepeatedRetransmissions;
use super::reports::{RemoteSenderClock, SampledClocks, SenderReports, SentReports};
use super::rtx::RepairedStreams;
use super::send_time::{ABS_SEND_TIME_URI, AbsSendTimeStamper};
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

/// Builds peer connections with Sluice's codecs, interceptors and socket policy.
#[derive(Debug)]
pub struct Transport {
    config: TransportConfig,
    ports: Option<PortCursor>,
}

impl Transport {
    pub fn new(config: TransportConfig) -> Self {
        let ports = config.udp_ports.map(PortCursor::new);
        Self { config, ports }
    }

    /// Creates a connection whose events go to `events`. The caller must drain `events`; when
    /// it is full, events are dropped with a warning rather than stalling the WebRTC driver.
    pub async fn new_peer(
        &self,
        role: PeerRole,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<Peer, TransportError> {
        let ip = self
            .config
            .public_ip
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let bind_ip = if ip.is_loopback() {
            ip
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let handler = Arc::new(PeerHandler {
            role,
            events: events.clone(),
            sender_clock: Arc::new(RemoteSenderClock::default()),
        });
        match &self.ports {
            None => {
                self.build(role, ip, SocketAddr::new(bind_ip, 0), handler)
                    .await
            }
            Some(cursor) => {
                for port in cursor.candidates() {
                    match self
                        .build(role, ip, SocketAddr::new(bind_ip, port), handler.clone())
                        .await
                    {
                        Ok(peer) => return Ok(peer),
                        Err(err) => debug!(port, %err, "media port unavailable, trying the next"),
                    }
                }
                Err(TransportError::NoFreePort(cursor.range()))
            }
        }
    }

    async fn build(
        &self,
        role: PeerRole,
        advertised_ip: IpAddr,
        bind: SocketAddr,
        handler: Arc<PeerHandler>,
    ) -> Result<Peer, TransportError> {
        let mut media_engine = sluice_media_engine().map_err(peer_err)?;
        let clocks = Arc::new(SampledClocks::default());
        let sent_reports = Arc::new(SentReports::default());
        let probe = Arc::new(ProbeControl::default());
        let path = Arc::new(PathState::default());
        let horizons = Arc::new(RepairHorizons::default());
        let registry = match role {
            // The client estimates its uplink from our TWCC feedback (and NACKs us for loss), and
            // tells us how loud each audio packet is.
            PeerRole::Publisher => {
                media_engine
                    .register_header_extension(
                        RTCRtpHeaderExtensionCapability {
                            uri: AUDIO_LEVEL_URI.to_owned(),
                        },
                        RtpCodecKind::Audio,
                        None,
                    )
                    .map_err(peer_err)?;
                register_publisher_rtx(&mut media_engine).map_err(peer_err)?;
                // webrtc-rs's defaults, except the NACK generator: by default it asks every
                // 100 ms, so a packet lost on the uplink came back after the subscriber's
                // playout deadline. Chrome ignores a repeated NACK within one round trip, so
                // asking every 20 ms costs no duplicate retransmissions (decisions §25).
                configure_simulcast_extension_headers(&mut media_engine).map_err(peer_err)?;
                let registry = Registry::new().with(
                    Slot::NackGenerator,
                    NackGeneratorBuilder::new()
                        .with_interval(PUBLISHER_NACK_INTERVAL)
                        .with_max_nacks_per_packet(PUBLISHER_NACKS_PER_PACKET)
                        .build(),
                );
                let registry =
                    configure_twcc_receiver_only(registry, &mut media_engine).map_err(peer_err)?;
                configure_rtcp_reports(registry)
                    // Before the NACK generator (7_000) on the read path, so a repaired packet
                    // fills its gap there (decisions §25).
                    .with(Slot::Custom(RTX_SLOT), RepairedStreams::default())
            }
            // We send here: send-side bandwidth estimation (GCC over TWCC) drives layer
            // allocation, and the NACK responder answers the subscriber's NACKs.
            PeerRole::Subscriber => {
                if self.config.playout_delay_ms > 0 {
                    media_engine
                        .register_header_extension(
                            RTCRtpHeaderExtensionCapability {
                                uri: PLAYOUT_DELAY_URI.to_owned(),
                            },
                            RtpCodecKind::Video,
                            None,
                        )
                        .map_err(peer_err)?;
                }
                // For receivers that estimate their downlink themselves (REMB): see `send_time`.
                media_engine
                    .register_header_extension(
                        RTCRtpHeaderExtensionCapability {
                            uri: ABS_SEND_TIME_URI.to_owned(),
                        },
                        RtpCodecKind::Video,
                        None,
                    )
                    .map_err(peer_err)?;
                let registry = configure_nack(Registry::new(), &mut media_engine);
                configure_simulcast_extension_headers(&mut media_engine).map_err(peer_err)?;
                // Our own sender reports: they follow each source's sampling clock (see
                // `reports`), which webrtc-rs's report interceptor cannot know.
                let registry = registry
                    .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
                    .with(
                        Slot::SenderReport,
                        SenderReports::new(Arc::clone(&clocks), Arc::clone(&sent_reports)),
                    );
                configure_congestion_control(
                    registry,
                    QueueWatch::new(
                        Gcc::new(GCC_INITIAL_BPS, GCC_MIN_BPS, GCC_MAX_BPS),
                        handler.events.clone(),
                        Arc::clone(&probe),
                        Arc::clone(&path),
                    ),
                    CongestionFeedback::Twcc,
                    &mut media_engine,
                )
                .map_err(peer_err)?
                // No pacer on subscriber legs (decisions §11): the feedback marker (a pass-through
                // otherwise) takes its slot.
                .with(Slot::Pacer, FeedbackToApplication::default())
                // Wire-most, below the transport-wide numbering and the send history: the
                // repeat carries the same transport sequence number as the retransmission,
                // so the congestion controller sees one packet (decisions §24).
                .with(
                    Slot::Custom(REPEAT_SLOT),
                    RepeatedRetransmissions::new(Arc::clone(&path)),
                )
                // Wire-most too, for the same reason: a probe's copies share their originals'
                // transport sequence numbers.
                .with(Slot::Custom(PROBE_SLOT), Prober::new(Arc::clone(&probe)))
                .with(
                    Slot::Custom(NACK_HORIZON_SLOT),
                    NackHorizon::new(Arc::clone(&horizons)),
                )
                .with(Slot::Custom(SEND_TIME_SLOT), AbsSendTimeStamper::default())
            }
        }
        // Application-most: it sees inbound RTCP after every built-in interceptor.
        .with(Slot::Custom(20_000), FeedbackToApplication::default());
        let mut settings = SettingEngineBuilder::new().with_include_loopback_candidate(true);
        if !advertised_ip.is_loopback() {
            settings = settings
                .with_nat_1to1_ips(vec![advertised_ip.to_string()], RTCIceCandidateType::Host);
        }
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec![bind])
            .build()
            .await
            .map_err(peer_err)?;
        Ok(Peer {
            role,
            pc: Arc::new(pc),
            playout_delay_ms: self.config.playout_delay_ms,
            clocks,
            sent_reports,
            probe,
            path,
            horizons,
        })
    }
}

/// Only the codecs the routing core understands (keyframe detection, rewriting), so a client
/// never negotiates something Sluice would forward blindly.
pub(crate) fn sluice_media_engine() -> webrtc::error::Result<MediaEngine> {
    let mut engine = MediaEngine::default();
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "audio/opus".to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    let video_feedback = || {
        [
            ("goog-remb", ""),
            ("ccm", "fir"),
            ("nack", ""),
            ("nack", "pli"),
        ]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        })
        .collect::<Vec<_>>()
    };
    // H.264 in the profiles encoders send (RTMP ingest forwards them as they are): constrained
    // baseline (browsers), baseline, main and high. Chromium does not offer to receive High
    // (64001f) but does High 4:4:4 Predictive (f4001f), whose decoders decode High: RTMP
    // ingest announces High streams that way. Subscribers match a publication's codec by
    // profile, and level-asymmetry-allowed lets a decoder take any level.
    let h264 = |profile_level_id: &str| {
        format!(
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}"
        )
    };
    for (mime_type, fmtp, payload_type) in [
        ("video/VP8", String::new(), 96),
        ("video/H264", h264("42e01f"), 102),
        ("video/H264", h264("42001f"), 104),
        ("video/H264", h264("4d001f"), 106),
        ("video/H264", h264("64001f"), 108),
        ("video/H264", h264("f4001f"), 110),
    ] {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: mime_type.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: fmtp,
                    rtcp_feedback: video_feedback(),
                },
                payload_type,
            },
            RtpCodecKind::Video,
        )?;
    }
    Ok(engine)
}

/// The video payload types of [`sluice_media_engine`] and the RTX payload type of each.
const VIDEO_RTX_PAYLOAD_TYPES: [(u8, u8); 6] = [
    (96, 97),
    (102, 103),
    (104, 105),
    (106, 107),
    (108, 109),
    (110, 112),
];

/// RTX (RFC 4588) for publishers' video: Chrome then retransmits on a separate stream per
/// simulcast encoding, named by repaired-rid, which [`RepairedStreams`] turns back into the
/// packets repaired. Only publishers: towards subscribers, retransmissions stay on the media
/// SSRC (webrtc-rs's NACK responder would otherwise switch to RTX for them too).
fn register_publisher_rtx(engine: &mut MediaEngine) -> webrtc::error::Result<()> {
    for (primary, rtx) in VIDEO_RTX_PAYLOAD_TYPES {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/rtx".to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={primary}"),
                    rtcp_feedback: Vec::new(),
                },
                payload_type: rtx,
            },
            RtpCodecKind::Video,
        )?;
    }
    Ok(())
}

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
    /// stops (sent on after a REMB client's fall, it sank the REMB from 413 to 155 kbit/s).
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
