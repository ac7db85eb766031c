//! Length limits on every string field, and the cap on trickled candidates.

use super::*;

/// The `invalidMessage` answer to `request`, or a panic.
async fn invalid(client: &mut Client, request: impl FnOnce(RequestId) -> ClientMessage) -> String {
    let id = client.send(request);
    match client.response().await {
        ServerMessage::Error {
            request_id,
            code: ErrorCode::InvalidMessage,
            message,
        } if request_id == Some(id) => message,
        other => panic!("expected invalidMessage for request {id}, got {other:?}"),
    }
}

fn track(mid: &str, name: Option<String>, rids: Option<Vec<String>>) -> TrackInfo {
    TrackInfo {
        mid: mid.to_owned(),
        kind: MediaKind::Video,
        source: TrackSource::Camera,
        name,
        rids,
    }
}

#[tokio::test]
async fn every_string_field_has_a_length_limit_named_in_the_answer() {
    let ctx = context(1000);
    let mut client = Client::connect(&ctx);
    client.join("lobby", "alice").await;
    let long = |n: usize| "x".repeat(n);

    let message = invalid(&mut client, |request_id| ClientMessage::Publish {
        request_id,
        sdp: String::new(),
        tracks: vec![track("0", Some(long(60_000)), None)],
    })
    .await;
    assert!(message.contains("tracks[0].name"), "{message}");
    assert!(message.contains("at most 256"), "{message}");

    let message = invalid(&mut client, |request_id| ClientMessage::Publish {
        request_id,
        sdp: String::new(),
        tracks: vec![track("0", None, None), track(&long(65), None, None)],
    })
    .await;
    assert!(message.contains("tracks[1].mid"), "{message}");

    let message = invalid(&mut client, |request_id| ClientMessage::Publish {
        request_id,
        sdp: String::new(),
        tracks: vec![track("0", None, Some(vec!["q".into(), long(65)]))],
    })
    .await;
    assert!(message.contains("tracks[0].rids[1]"), "{message}");

    let message = invalid(&mut client, |request_id| ClientMessage::Subscribe {
        request_id,
        publication_id: long(1000),
    })
    .await;
    assert!(message.contains("publicationId"), "{message}");

    let message = invalid(&mut client, |request_id| ClientMessage::SetPreferredLayer {
        request_id,
        subscription_id: long(65),
        spatial: 0,
        temporal: None,
    })
    .await;
    assert!(message.contains("subscriptionId"), "{message}");

    let message = invalid(&mut client, |request_id| ClientMessage::Trickle {
        request_id,
        target: PeerRole::Publisher,
        candidate: IceCandidate {
            candidate: long(10_000),
            sdp_mid: None,
            sdp_m_line_index: None,
            username_fragment: None,
        },
    })
    .await;
    assert!(message.contains("candidate.candidate"), "{message}");

    let message = invalid(&mut client, |request_id| ClientMessage::Trickle {
        request_id,
        target: PeerRole::Publisher,
        candidate: IceCandidate {
            candidate: String::new(),
            sdp_mid: Some(long(65)),
            sdp_m_line_index: None,
            username_fragment: Some(long(300)),
        },
    })
    .await;
    assert!(message.contains("candidate.sdpMid"), "{message}");

    let message = invalid(&mut client, |request_id| ClientMessage::Resume {
        request_id,
        participant_id: "PA1".into(),
        resume_token: long(100),
    })
    .await;
    assert!(message.contains("resumeToken"), "{message}");

    let message = invalid(&mut client, |request_id| ClientMessage::Join {
        request_id,
        token: String::new(),
        room: Some(long(300)),
    })
    .await;
    assert!(message.contains("room"), "{message}");

    // Lists are bounded too: tracks per publish, rids per track.
    let message = invalid(&mut client, |request_id| ClientMessage::Publish {
        request_id,
        sdp: String::new(),
        tracks: (0..17).map(|i| track(&i.to_string(), None, None)).collect(),
    })
    .await;
    assert!(
        message.contains("tracks") && message.contains("at most 16"),
        "{message}"
    );
    let message = invalid(&mut client, |request_id| ClientMessage::Publish {
        request_id,
        sdp: String::new(),
        tracks: vec![track(
            "0",
            None,
            Some((0..9).map(|i| i.to_string()).collect()),
        )],
    })
    .await;
    assert!(message.contains("tracks[0].rids"), "{message}");

    // Still joined and served.
    let id = client.send(|request_id| ClientMessage::Ping { request_id });
    assert_eq!(
        client.response().await,
        ServerMessage::Ok { request_id: id }
    );
}

#[tokio::test]
async fn trickled_candidates_are_capped_per_connection() {
    let ctx = context(1000);
    let mut client = Client::connect(&ctx);
    client.join("lobby", "alice").await;
    let candidate = |request_id| ClientMessage::Trickle {
        request_id,
        target: PeerRole::Subscriber,
        candidate: IceCandidate {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        },
    };
    for _ in 0..64 {
        let id = client.send(candidate);
        let response = client.response().await;
        assert_ne!(
            error_code(&response),
            Some((Some(id), ErrorCode::LimitExceeded)),
            "{response:?}"
        );
    }
    let id = client.send(candidate);
    let response = client.response().await;
    assert_eq!(
        error_code(&response),
        Some((Some(id), ErrorCode::LimitExceeded)),
        "{response:?}"
    );
}
