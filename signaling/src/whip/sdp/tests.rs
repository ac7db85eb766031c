use proptest::prelude::*;

use super::*;

const CHROME_SIMULCAST: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
a=mid:1\r\n\
a=sendonly\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=rid:f send\r\n\
a=rid:q send\r\n\
a=rid:h send\r\n\
a=simulcast:send f;q;~h\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
a=mid:2\r\n";

#[test]
fn a_simulcast_offer_becomes_sections_with_rids_lowest_first() {
    let sections = sections(CHROME_SIMULCAST).expect("parses");
    assert_eq!(sections.len(), 2, "the data channel is skipped");
    assert_eq!(sections[0].kind, MediaKind::Audio);
    assert!(sections[0].sends && !sections[0].receives);
    assert!(sections[0].rids.is_empty());
    assert_eq!(sections[1].mid, "1");
    assert_eq!(sections[1].rids, ["q", "h", "f"]);
    assert_eq!(sections[1].codecs, ["VP8", "rtx"]);
    assert!(check_codecs(&sections.iter().collect::<Vec<_>>()).is_ok());
}

#[test]
fn rids_of_unknown_names_keep_the_simulcast_order() {
    assert_eq!(
        order_rids(vec!["2".into(), "0".into(), "1".into()]),
        ["2", "0", "1"]
    );
    assert_eq!(
        order_rids(vec!["high".into(), "low".into(), "mid".into()]),
        ["low", "mid", "high"]
    );
}

#[test]
fn an_offer_without_a_forwarded_codec_names_the_codecs() {
    let sdp = CHROME_SIMULCAST.replace("VP8/90000", "AV1/90000");
    let sections = sections(&sdp).expect("parses");
    let refused = check_codecs(&sections.iter().collect::<Vec<_>>());
    let Err(SdpError::NoUsableCodec { offered, supported }) = refused else {
        panic!("expected no usable codec, got {refused:?}");
    };
    assert_eq!(offered, ["AV1", "opus"]);
    assert_eq!(supported, ["opus", "VP8", "H264"]);
}

#[test]
fn malformed_offers_are_refused_with_a_reason() {
    for (sdp, why) in [
        ("hello", "v=0"),
        (
            "v=0\r\nm=video 9 RTP 96\r\na=rtpmap:96 VP8/90000\r\n",
            "a=mid",
        ),
        (
            "v=0\r\nm=video 9 RTP 96\r\na=mid:0\r\na=rtpmap:96\r\n",
            "rtpmap",
        ),
    ] {
        let err = sections(sdp).expect_err(sdp);
        assert!(err.to_string().contains(why), "{err} should name {why}");
    }
}

#[test]
fn a_fragment_carries_credentials_and_candidates() {
    let body = "a=ice-ufrag:abcd\r\na=ice-pwd:secretsecret\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
                a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n";
    let fragment = fragment(body).expect("parses");
    assert_eq!(fragment.ufrag.as_deref(), Some("abcd"));
    assert_eq!(fragment.pwd.as_deref(), Some("secretsecret"));
    assert_eq!(
        fragment.candidates,
        [(
            Some("0".to_owned()),
            "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".to_owned()
        )]
    );
    assert!(super::fragment("candidate:1 1 udp 1 127.0.0.1 1 typ host").is_err());
}

#[test]
fn credentials_are_replaced_in_place() {
    let sdp =
        "v=0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\nm=audio 9 RTP 0\r\na=ice-ufrag:old\r\n";
    let replaced = with_credentials(sdp, "new", "newpwd");
    assert_eq!(
        replaced,
        "v=0\r\na=ice-ufrag:new\r\na=ice-pwd:newpwd\r\nm=audio 9 RTP 0\r\na=ice-ufrag:new\r\n"
    );
    assert_eq!(
        credentials(&replaced),
        (Some("new".to_owned()), Some("newpwd".to_owned()))
    );
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,2000}") {
        let _ = sections(&text);
        let _ = sections(&format!("v=0\r\n{text}"));
        let _ = fragment(&text);
        let _ = with_credentials(&text, "u", "p");
    }
}
