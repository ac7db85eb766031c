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
        let controls = ConnectionControls::default();
        let registry = configure(
            role,
            &mut media_engine,
            self.config.playout_delay_ms > 0,
            &controls,
            handler.events.clone(),
        )?;
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
            clocks: controls.clocks,
            sent_reports: controls.sent_reports,
            probe: controls.probe,
            path: controls.path,
            horizons: controls.horizons,
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
