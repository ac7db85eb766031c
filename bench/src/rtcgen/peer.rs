//! Building one client connection of the sans-IO generator: an `rtc` 0.21 peer connection with
//! the codecs and interceptors of the webrtc-rs clients (`sluice_e2e::peer::ClientPeer`), a
//! host candidate on its own loopback socket, and — for a publisher — its send tracks.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result};
use rtc::crypto::SignatureScheme;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use crate::client::{AUDIO_PT, SIMULCAST_LAYERS, VIDEO_PT};

/// The DTLS certificate every connection of a generator thread presents (generating one per
/// connection is join-time work that measures nothing).
pub fn certificate() -> Result<RTCCertificate> {
    let provider = rtc::crypto::default_provider().map_err(|e| anyhow::anyhow!("{e}"))?;
    let params = CertificateParams::new(vec!["sluice-bench".to_owned()])?;
    Ok(RTCCertificate::generate(
        provider.crypto(),
        SignatureScheme::EcdsaP256Sha256,
        params,
    )?)
}

fn video_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/VP8".to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: "pli".to_owned(),
            },
        ],
    }
}

fn audio_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// A connection with the webrtc-rs clients' codecs (VP8 96, Opus 111) and default interceptors
/// (NACK, RTCP reports, TWCC receiver, the simulcast header extensions), whose one candidate
/// is `local` (the socket it owns).
pub fn build(
    certificate: &RTCCertificate,
    local: SocketAddr,
    now: Instant,
) -> Result<RTCPeerConnection> {
    let mut engine = MediaEngine::default();
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: audio_codec(),
            payload_type: AUDIO_PT,
        },
        RtpCodecKind::Audio,
    )?;
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: video_codec(),
            payload_type: VIDEO_PT,
        },
        RtpCodecKind::Video,
    )?;
    // As the webrtc-rs clients: PLI/FIR/REMB reach the application (ignored here).
    let registry = register_default_interceptors(Registry::new(), &mut engine)?.with(
        Slot::Custom(20_000),
        sluice_sfu::transport::FeedbackToApplication::default(),
    );
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_certificates(vec![certificate.clone()])
                .build(),
        )
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)?;
    pc.add_local_candidate(host_candidate(local)?)?;
    pc.add_local_candidate(RTCIceCandidateInit::default())?;
    Ok(pc)
}

/// The host candidate of `local`, as a trickle candidate.
pub fn host_candidate(local: SocketAddr) -> Result<RTCIceCandidateInit> {
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
    .new_candidate_host()?;
    Ok(RTCIceCandidate::from(&candidate).to_json()?)
}

/// What a publisher sends on: its video sender (one SSRC per simulcast layer, lowest first)
/// and its audio sender.
#[derive(Debug, Clone)]
pub struct SendTracks {
    pub video: RTCRtpSenderId,
    pub video_ssrcs: Vec<u32>,
    pub audio: RTCRtpSenderId,
    pub audio_ssrc: u32,
}

/// Adds a send-only VP8 track (three layers by rid when `simulcast`, SSRCs from `ssrc_base`
/// as the webrtc-rs publisher numbers them) and a send-only Opus track (`ssrc_base + 1`).
pub fn add_send_tracks(
    pc: &mut RTCPeerConnection,
    ssrc_base: u32,
    simulcast: bool,
) -> Result<SendTracks> {
    let video_ssrcs = if simulcast {
        vec![ssrc_base, ssrc_base + 2, ssrc_base + 3]
    } else {
        vec![ssrc_base]
    };
    let encodings = video_ssrcs
        .iter()
        .enumerate()
        .map(|(layer, ssrc)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: if simulcast {
                    SIMULCAST_LAYERS
                        .get(layer)
                        .map(|(rid, _)| (*rid).to_owned())
                        .unwrap_or_default()
                } else {
                    String::new()
                },
                ssrc: Some(*ssrc),
                ..Default::default()
            },
            codec: video_codec(),
            ..Default::default()
        })
        .collect();
    let video = add_send_track(pc, RtpCodecKind::Video, ssrc_base, encodings)?;
    let audio_ssrc = ssrc_base + 1;
    let audio = add_send_track(
        pc,
        RtpCodecKind::Audio,
        audio_ssrc,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(audio_ssrc),
                ..Default::default()
            },
            codec: audio_codec(),
            ..Default::default()
        }],
    )?;
    Ok(SendTracks {
        video,
        video_ssrcs,
        audio,
        audio_ssrc,
    })
}

fn add_send_track(
    pc: &mut RTCPeerConnection,
    kind: RtpCodecKind,
    ssrc: u32,
    encodings: Vec<RTCRtpEncodingParameters>,
) -> Result<RTCRtpSenderId> {
    let track = MediaStreamTrack::new(
        format!("stream-{ssrc}"),
        format!("track-{ssrc}"),
        format!("track-{ssrc}"),
        kind,
        encodings,
    );
    let transceiver = pc
        .add_transceiver_from_track(
            track,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                ..Default::default()
            }),
        )
        .with_context(|| format!("adding the {kind} send track"))?;
    Ok(RTCRtpSenderId::from(transceiver))
}

/// The id a sender negotiated for the header extension `uri`, once it has a remote description.
pub fn extension_id(pc: &mut RTCPeerConnection, sender: RTCRtpSenderId, uri: &str) -> Option<u8> {
    let mut sender = pc.rtp_sender(sender)?;
    sender
        .get_parameters()
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == uri)
        .and_then(|e| u8::try_from(e.id).ok())
}
