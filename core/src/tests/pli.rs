//! PLI/FIR from subscribers throttled into keyframe requests upstream.

use super::*;

/// A VP8 publication with three started video subscriptions and no request pending.
fn started_video_room() -> Harness {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    for n in 1..=3 {
        h.subscribe(n, 10 + n, 1);
    }
    h.rtp(1, packet(4242, 0, 0, VP8_KEY));
    let outputs = h.drain();
    assert!(
        keyframe_requests(&outputs).is_empty(),
        "the first packet was a keyframe"
    );
    assert_eq!(forwards(&outputs).len(), 3);
    assert_eq!(h.room.poll_timeout(), None);
    h
}

#[test]
fn ten_requests_in_one_window_become_one_now_and_one_deferred() {
    let mut h = started_video_room();
    h.advance_ms(10);
    let first = h.now;
    let mut immediate = Vec::new();
    for i in 0..10u64 {
        h.request_keyframe(1 + i % 3);
        immediate.extend(h.drain());
        h.advance_ms(50); // the last request is at +450 ms
    }
    assert_eq!(
        keyframe_requests(&immediate),
        vec![(PublicationId(1), Ssrc(4242))]
    );
    assert!(matches!(
        immediate[0],
        Output::RequestKeyframe {
            publisher: ParticipantId(1),
            ..
        }
    ));

    let deadline = h.room.poll_timeout().unwrap();
    assert_eq!(deadline, first + INTERVAL);
    h.room.handle_timeout(deadline - Duration::from_millis(1));
    assert!(
        h.drain().is_empty(),
        "handle_timeout before the deadline does nothing"
    );
    h.room.handle_timeout(deadline);
    assert_eq!(
        keyframe_requests(&h.drain()),
        vec![(PublicationId(1), Ssrc(4242))]
    );
    assert_eq!(h.room.poll_timeout(), None);
    h.room.handle_timeout(deadline + INTERVAL * 4);
    assert!(h.drain().is_empty());
    assert_eq!(
        h.room
            .publication_stats(PublicationId(1))
            .unwrap()
            .keyframes_requested,
        2
    );
}

#[test]
fn keyframe_in_between_cancels_the_deferred_request() {
    let mut h = started_video_room();
    h.request_keyframe(1);
    assert_eq!(keyframe_requests(&h.drain()).len(), 1);
    h.advance_ms(100);
    h.request_keyframe(2);
    h.request_keyframe(3);
    assert!(h.drain().is_empty());
    assert!(h.room.poll_timeout().is_some());
    h.advance_ms(100);
    h.rtp(1, packet(4242, 1, 3000, VP8_KEY));
    assert!(keyframe_requests(&h.drain()).is_empty());
    assert_eq!(h.room.poll_timeout(), None);
    h.advance_ms(1_000);
    h.room.handle_timeout(h.now);
    assert!(h.drain().is_empty());
}

#[test]
fn request_after_the_window_goes_out_at_once() {
    let mut h = started_video_room();
    h.request_keyframe(1);
    h.advance_ms(500);
    h.request_keyframe(1);
    assert_eq!(keyframe_requests(&h.drain()).len(), 2);
}

#[test]
fn audio_publications_never_request_keyframes() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Opus);
    h.subscribe(1, 2, 1);
    h.rtp(1, packet(7, 0, 0, OPUS));
    for _ in 0..5 {
        h.request_keyframe(1);
        h.advance_ms(200);
    }
    h.subscribe(2, 3, 1);
    h.rtp(1, packet(8, 0, 0, OPUS)); // a incarnation change too
    let outputs = h.drain();
    assert!(keyframe_requests(&outputs).is_empty());
    assert_eq!(h.room.poll_timeout(), None);
    assert_eq!(
        h.room
            .publication_stats(PublicationId(1))
            .unwrap()
            .keyframes_requested,
        0
    );
}

#[test]
fn new_video_subscriber_requests_a_keyframe() {
    let mut h = started_video_room();
    h.advance_ms(1_000);
    h.subscribe(4, 20, 1);
    let outputs = h.drain();
    assert_eq!(
        keyframe_requests(&outputs),
        vec![(PublicationId(1), Ssrc(4242))]
    );
}

#[test]
fn request_waits_until_the_publication_ssrc_is_known() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.subscribe(1, 2, 1);
    h.request_keyframe(1);
    assert!(h.drain().is_empty());
    assert_eq!(
        h.room.poll_timeout(),
        None,
        "nothing to wake up for without an SSRC"
    );
    h.advance_ms(30);
    h.rtp(1, packet(99, 0, 0, VP8_DELTA));
    let outputs = h.drain();
    assert_eq!(
        keyframe_requests(&outputs),
        vec![(PublicationId(1), Ssrc(99))]
    );
    assert!(forwards(&outputs).is_empty());
}

#[test]
fn pending_request_is_dropped_when_the_first_packet_is_a_keyframe() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::H264);
    h.subscribe(1, 2, 1);
    h.rtp(1, packet(99, 0, 0, H264_STAP_SPS_PPS));
    let outputs = h.drain();
    assert!(keyframe_requests(&outputs).is_empty());
    assert_eq!(forwards(&outputs).len(), 1);
}

#[test]
fn waiting_subscriber_asks_again_once_per_interval() {
    let mut h = Harness::new();
    h.publish(1, 1, Codec::Vp8);
    h.subscribe(1, 2, 1);
    let mut requests = Vec::new();
    // 2 s of interframes (a lost PLI, an encoder ignoring it): one request per window.
    for i in 0..60u16 {
        if h.room.poll_timeout().is_some_and(|t| t <= h.now) {
            h.room.handle_timeout(h.now);
        }
        h.rtp(1, packet(5, i, u32::from(i) * 3000, VP8_DELTA));
        requests.extend(keyframe_requests(&h.drain()).into_iter().map(|_| h.now));
        h.advance_ms(33);
    }
    assert!(
        (4..=5).contains(&requests.len()),
        "{} requests",
        requests.len()
    );
    assert!(requests.windows(2).all(|w| w[1] - w[0] >= INTERVAL));
}

#[test]
fn media_dropped_before_the_room_asks_for_a_keyframe_within_the_throttle() {
    let mut h = started_video_room();
    h.advance_ms(10);
    let dropped = Input::MediaDropped {
        publication: PublicationId(1),
        layer: 0,
    };
    h.input(dropped.clone()).unwrap();
    assert_eq!(
        keyframe_requests(&h.drain()),
        vec![(PublicationId(1), Ssrc(4242))]
    );
    // A second drop within the throttle's window shares the deferred request.
    h.advance_ms(50);
    h.input(dropped).unwrap();
    assert!(keyframe_requests(&h.drain()).is_empty());
    assert!(
        h.room.poll_timeout().is_some(),
        "the request is deferred, not lost"
    );
    assert!(matches!(
        h.input(Input::MediaDropped {
            publication: PublicationId(9),
            layer: 0
        }),
        Err(crate::CoreError::UnknownPublication(PublicationId(9)))
    ));
}

#[test]
fn media_dropped_from_audio_asks_for_nothing() {
    let mut h = Harness::new();
    h.publish(2, 1, Codec::Opus);
    h.subscribe(3, 11, 2);
    h.input(Input::MediaDropped {
        publication: PublicationId(2),
        layer: 0,
    })
    .unwrap();
    assert!(keyframe_requests(&h.drain()).is_empty());
}
