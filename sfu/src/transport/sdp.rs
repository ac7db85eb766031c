//! The little SDP reading and writing Sluice needs beyond webrtc-rs: which codec was negotiated
//! per `mid`, and a start-bitrate hint for publishers.

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

/// Video codecs whose formats get the start-bitrate hint (not RTX, RED or FEC formats).
const HINTED_VIDEO_CODECS: [&str; 4] = ["VP8", "VP9", "H264", "AV1"];

/// `answer` (our answer to a publisher) with `x-google-start-bitrate=<kbps>` on every video
/// codec format: Chrome then starts its uplink estimate there instead of at 300 kbit/s. When
/// its first probe does not succeed, its own ramp from 300 kbit/s to the 1.4 Mbit/s at which
/// it sends all three simulcast layers takes many seconds (ADR 0018). Other browsers ignore
/// the parameter. The answer webrtc-rs applied locally is not changed: fmtp parameters of an
/// answer describe what we accept, and this one only speaks to Chrome.
pub fn with_start_bitrate(answer: &str, kbps: u32) -> String {
    let eol = if answer.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut out = String::with_capacity(answer.len() + 256);
    let mut in_video = false;
    // Video formats of the current section still without an fmtp line: (payload type, the
    // index in `out` right after its rtpmap line).
    let mut pending: Vec<(String, usize)> = Vec::new();
    let mut lines: Vec<&str> = answer.split(eol).collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let flush = |out: &mut String, pending: &mut Vec<(String, usize)>| {
        // Insert from the back so earlier indices stay valid.
        for (pt, at) in pending.drain(..).rev() {
            out.insert_str(
                at,
                &format!("a=fmtp:{pt} x-google-start-bitrate={kbps}{eol}"),
            );
        }
    };
    for line in lines {
        if line.starts_with("m=") {
            flush(&mut out, &mut pending);
            in_video = line.starts_with("m=video");
        }
        if in_video
            && let Some(rest) = line.strip_prefix("a=fmtp:")
            && let Some((pt, _)) = rest.split_once(' ')
            && let Some(index) = pending.iter().position(|(p, _)| p == pt)
        {
            pending.remove(index);
            out.push_str(line);
            out.push_str(&format!(";x-google-start-bitrate={kbps}{eol}"));
            continue;
        }
        out.push_str(line);
        out.push_str(eol);
        if in_video
            && let Some(rest) = line.strip_prefix("a=rtpmap:")
            && let Some((pt, codec)) = rest.split_once(' ')
            && HINTED_VIDEO_CODECS
                .iter()
                .any(|name| codec.split('/').next() == Some(*name))
        {
            pending.push((pt.to_owned(), out.len()));
        }
    }
    flush(&mut out, &mut pending);
    if !answer.ends_with(eol) {
        out.truncate(out.len().saturating_sub(eol.len()));
    }
    out
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
    fn the_start_bitrate_hint_goes_on_video_codec_formats_only() {
        let answer = "v=0\r\ns=-\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 102 97\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n\
            a=rtcp-fb:96 nack\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1\r\n\
            a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=ssrc:1 cname:x\r\n";
        let hinted = with_start_bitrate(answer, 1000);
        assert_eq!(
            hinted,
            "v=0\r\ns=-\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 102 97\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n\
            a=fmtp:96 x-google-start-bitrate=1000\r\n\
            a=rtcp-fb:96 nack\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;x-google-start-bitrate=1000\r\n\
            a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=ssrc:1 cname:x\r\n"
        );
        // What we read from the answer is unchanged by the hint's position.
        assert_eq!(negotiated_codecs(&hinted)["1"].mime_type, "video/VP8");
    }

    #[test]
    fn the_hint_leaves_garbage_and_audio_only_answers_alone() {
        for sdp in [
            "",
            "m=",
            "v=0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n",
        ] {
            assert_eq!(with_start_bitrate(sdp, 1000), sdp, "{sdp:?}");
        }
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
