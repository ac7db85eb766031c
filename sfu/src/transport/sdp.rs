//! The little SDP reading Sluice needs beyond webrtc-rs: which codec was negotiated per `mid`.

use std::collections::HashMap;

use super::CodecInfo;

/// For every m-section of `sdp` (an answer we produced), the first codec of its format list,
/// keyed by `a=mid`. RTX and other repair formats never come first in our answers.
pub fn negotiated_codecs(sdp: &str) -> HashMap<String, CodecInfo> {
    let mut result = HashMap::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut lines = section.lines();
        let Some(m_line) = lines.next() else { continue };
        // "video 9 UDP/TLS/RTP/SAVPF 96 102"
        let Some(first_pt) = m_line.split_whitespace().nth(3) else {
            continue;
        };
        let mut mid = None;
        let mut codec = None;
        let mut fmtp = String::new();
        for line in section.lines().map(str::trim_end) {
            if let Some(v) = line.strip_prefix("a=mid:") {
                mid = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("a=rtpmap:") {
                if let Some((pt, desc)) = v.split_once(' ')
                    && pt == first_pt
                {
                    let mut parts = desc.split('/');
                    let name = parts.next().unwrap_or_default();
                    let clock_rate = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                    let channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                    let kind = m_line.split_whitespace().next().unwrap_or_default();
                    codec = Some((format!("{kind}/{name}"), clock_rate, channels));
                }
            } else if let Some(v) = line.strip_prefix("a=fmtp:")
                && let Some((pt, params)) = v.split_once(' ')
                && pt == first_pt
            {
                fmtp = params.to_owned();
            }
        }
        if let (Some(mid), Some((mime_type, clock_rate, channels))) = (mid, codec) {
            result.insert(
                mid,
                CodecInfo {
                    mime_type,
                    clock_rate,
                    channels,
                    sdp_fmtp_line: fmtp,
                },
            );
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_first_codec_per_mid() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102 96\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
            a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n";
        let codecs = negotiated_codecs(sdp);
        let audio = &codecs["0"];
        assert_eq!(
            (audio.mime_type.as_str(), audio.clock_rate, audio.channels),
            ("audio/opus", 48000, 2)
        );
        let video = &codecs["1"];
        assert_eq!(video.mime_type, "video/H264");
        assert_eq!(
            video.sdp_fmtp_line,
            "packetization-mode=1;profile-level-id=42e01f"
        );
    }

    #[test]
    fn garbage_yields_nothing() {
        for sdp in [
            "",
            "m=",
            "\nm=video",
            "\nm=video 9 X 96\na=mid:0\na=rtpmap:96",
            "\nm=video 9 X\na=mid:0",
        ] {
            assert!(negotiated_codecs(sdp).is_empty(), "{sdp:?}");
        }
    }
}
