//! Building peer connections: the media engine, the interceptor chain of each role and the
//! handler that turns webrtc-rs callbacks into `PeerEvent`s.

use super::*;

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
                // 100 ms, so a packet lost on the uplink comes back after the subscriber's
                // playout deadline. Chrome ignores a repeated NACK within one round trip, so
                // asking every 20 ms costs no duplicate retransmissions (ADR 0002).
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
                    // fills its gap there (ADR 0002).
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
                    QueueDelayWatch::new(
                        Gcc::new(GCC_INITIAL_BPS, GCC_MIN_BPS, GCC_MAX_BPS),
                        handler.events.clone(),
                        Arc::clone(&probe),
                        Arc::clone(&path),
                    ),
                    CongestionFeedback::Twcc,
                    &mut media_engine,
                )
                .map_err(peer_err)?
                // No pacer on subscriber legs (ADR 0010): the feedback marker (a pass-through
                // otherwise) takes its slot.
                .with(Slot::Pacer, FeedbackToApplication::default())
                // Wire-most, below the transport-wide numbering and the send history: the
                // repeat carries the same transport sequence number as the retransmission,
                // so the congestion controller sees one packet (ADR 0020).
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
