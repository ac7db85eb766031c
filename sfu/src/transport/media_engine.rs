//! The codecs every connection negotiates: only those the routing core understands (keyframe
//! detection, rewriting), in the payload types the interceptor chain's RTX pairs name.

use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};

/// Only the codecs the routing core understands (keyframe detection, rewriting), so a client
/// never negotiates something Sluice would forward blindly.
pub(crate) fn sluice_media_engine() -> rtc::shared::error::Result<MediaEngine> {
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

/// The codec of a track that waits for a publication (a WHEP viewer following an empty
/// room), by name: `opus`, `VP8` or `H264` (constrained baseline, as browsers and RTMP
/// ingest of baseline streams send); `None` for a codec Sluice does not forward.
pub fn forwarded_codec(name: &str) -> Option<super::CodecInfo> {
    let (mime_type, clock_rate, channels, fmtp) = match name.to_ascii_lowercase().as_str() {
        "opus" => ("audio/opus", 48_000, 2, "minptime=10;useinbandfec=1"),
        "vp8" => ("video/VP8", 90_000, 0, ""),
        "h264" => (
            "video/H264",
            90_000,
            0,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        ),
        _ => return None,
    };
    Some(super::CodecInfo {
        mime_type: mime_type.to_owned(),
        clock_rate,
        channels,
        sdp_fmtp_line: fmtp.to_owned(),
    })
}
