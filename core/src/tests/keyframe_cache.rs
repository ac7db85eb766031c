//! Instant join for publishers that cannot be asked for a keyframe (RTMP): a new subscriber
//! starts from the cached packets since the last keyframe, then continues live.

use super::*;

const PUB: u64 = 1;

fn stream_with_cache(h: &mut Harness) {
    h.publish_with_cache(PUB, 10, Codec::Vp8, true);
}

/// A publication of two layers with the cache: ingest renditions (Enhanced RTMP multitrack).
fn two_cached_layers(h: &mut Harness) {
    h.input(Input::PublicationAdded {
        publication: PublicationId(PUB),
        publisher: ParticipantId(10),
        kind: MediaKind::Video,
        codec: Codec::Vp8,
        clock_rate: 90_000,
        cache_since_keyframe: true,
        layers: 2,
    })
    .unwrap();
}

#[test]
fn late_subscriber_starts_from_the_cached_keyframe_at_once_then_live() {
    let mut h = Harness::new();
    stream_with_cache(&mut h);
    // Delta frames before any keyframe are not cached.
    h.rtp(PUB, packet(7, 1, 0, VP8_DELTA));
    // GOP 1, then GOP 2 (keyframe at seq 5): only GOP 2 is kept.
    h.rtp(PUB, packet(7, 2, 3000, VP8_KEY));
    h.rtp(PUB, packet(7, 3, 6000, VP8_DELTA));
    h.rtp(PUB, packet(7, 4, 9000, VP8_DELTA));
    h.rtp(PUB, packet(7, 5, 12000, VP8_KEY));
    h.rtp(PUB, packet(7, 6, 12000, VP8_CONT));
    h.rtp(PUB, packet(7, 7, 15000, VP8_DELTA));
    h.drain();

    h.subscribe(1, 20, PUB);
    let outputs = h.drain();
    let replayed = forwards_to(&outputs, 1);
    assert_eq!(
        seqs(&replayed),
        vec![INITIAL_SEQ, INITIAL_SEQ + 1, INITIAL_SEQ + 2]
    );
    assert_eq!(replayed[0].payload.as_ref(), VP8_KEY);
    assert_eq!(
        replayed.iter().map(|p| p.timestamp).collect::<Vec<_>>(),
        vec![12000, 12000, 15000],
        "the first incarnation keeps the publisher's timestamps"
    );
    assert!(
        keyframe_requests(&outputs).is_empty(),
        "a replayed keyframe needs no request upstream"
    );

    // Live packets continue the same numbering.
    h.advance_ms(33);
    h.rtp(PUB, packet(7, 8, 18000, VP8_DELTA));
    let live = forwards_to(&h.drain(), 1);
    assert_eq!(seqs(&live), vec![INITIAL_SEQ + 3]);
}

#[test]
fn without_a_cached_keyframe_the_subscriber_waits_and_a_keyframe_is_requested() {
    let mut h = Harness::new();
    stream_with_cache(&mut h);
    h.rtp(PUB, packet(7, 1, 0, VP8_DELTA));
    h.drain();
    h.subscribe(1, 20, PUB);
    let outputs = h.drain();
    assert!(forwards_to(&outputs, 1).is_empty());
    assert_eq!(keyframe_requests(&outputs).len(), 1);
}

#[test]
fn a_new_incarnation_empties_the_cache_until_its_keyframe() {
    let mut h = Harness::new();
    stream_with_cache(&mut h);
    h.rtp(PUB, packet(7, 1, 0, VP8_KEY));
    h.rtp(PUB, packet(7, 2, 3000, VP8_DELTA));
    // The encoder reconnects with a new SSRC: its delta frames must not be appended to the
    // old GOP, or a new subscriber would decode garbage.
    h.advance_ms(100);
    h.rtp(PUB, packet(8, 500, 777, VP8_DELTA));
    h.drain();
    h.subscribe(1, 20, PUB);
    assert!(forwards_to(&h.drain(), 1).is_empty());
    h.rtp(PUB, packet(8, 501, 3777, VP8_KEY));
    h.rtp(PUB, packet(8, 502, 6777, VP8_DELTA));
    h.drain();
    h.subscribe(2, 21, PUB);
    let replayed = forwards_to(&h.drain(), 2);
    assert_eq!(replayed.len(), 2);
    assert_eq!(replayed[0].payload.as_ref(), VP8_KEY);
}

#[test]
fn publications_without_the_cache_replay_nothing() {
    let mut h = Harness::new();
    h.publish(PUB, 10, Codec::Vp8);
    h.rtp(PUB, packet(7, 1, 0, VP8_KEY));
    h.rtp(PUB, packet(7, 2, 3000, VP8_DELTA));
    h.drain();
    h.subscribe(1, 20, PUB);
    assert!(forwards_to(&h.drain(), 1).is_empty());
}

#[test]
fn an_h264_keyframe_with_several_start_points_is_cached_whole() {
    let mut h = Harness::new();
    h.publish_with_cache(PUB, 10, Codec::H264, true);
    // SPS/PPS STAP-A, then the IDR's FU-A start and middle, all at one timestamp: a joiner
    // needs the SPS/PPS, so the second start point must not restart the cache.
    h.rtp(PUB, packet(7, 1, 9000, H264_STAP_SPS_PPS));
    h.rtp(PUB, packet(7, 2, 9000, H264_FU_IDR_START));
    h.rtp(PUB, packet(7, 3, 9000, H264_FU_IDR_MIDDLE));
    h.rtp(PUB, packet(7, 4, 12000, H264_NON_IDR));
    h.drain();
    h.subscribe(1, 20, PUB);
    let replayed = forwards_to(&h.drain(), 1);
    assert_eq!(replayed.len(), 4);
    assert_eq!(replayed[0].payload.as_ref(), H264_STAP_SPS_PPS);
}

#[test]
fn a_layered_publication_replays_the_cache_of_the_subscribers_layer() {
    let mut h = Harness::new();
    two_cached_layers(&mut h);
    // Each layer's own GOP, at timestamps that tell them apart.
    h.rtp_on(PUB, 0, packet(7, 1, 3000, VP8_KEY));
    h.rtp_on(PUB, 1, packet(9, 1, 6000, VP8_KEY));
    h.rtp_on(PUB, 0, packet(7, 2, 3300, VP8_DELTA));
    h.rtp_on(PUB, 1, packet(9, 2, 6300, VP8_DELTA));
    h.drain();
    h.subscribe(1, 20, PUB);
    let outputs = h.drain();
    let replayed = forwards_to(&outputs, 1);
    assert_eq!(replayed.len(), 2, "the target layer's keyframe and delta");
    assert_eq!(replayed[0].payload.as_ref(), VP8_KEY);
    let timestamps: Vec<u32> = replayed.iter().map(|p| p.timestamp).collect();
    // With no estimate yet a subscription targets the top layer: its cache, not a mix.
    assert_eq!(timestamps, [6000, 6300]);
    assert!(keyframe_requests(&outputs).is_empty());
}

#[test]
fn a_subscriber_capped_before_its_first_packet_starts_from_its_new_layers_cache() {
    let mut h = Harness::new();
    two_cached_layers(&mut h);
    // Layer 1 has no keyframe yet: a subscriber joining on it waits.
    h.rtp_on(PUB, 0, packet(7, 1, 3000, VP8_KEY));
    h.rtp_on(PUB, 0, packet(7, 2, 3300, VP8_DELTA));
    h.rtp_on(PUB, 1, packet(9, 1, 3000, VP8_DELTA));
    h.drain();
    h.subscribe(1, 20, PUB);
    let joined = forwards_to(&h.drain(), 1);
    // Capped at layer 0 (WHEP's `?layer=q`, or its bandwidth estimate), it starts at once from
    // layer 0's cache rather than waiting for the encoder's next keyframe.
    h.prefer(1, 0);
    let capped = forwards_to(&h.drain(), 1);
    let all: Vec<u32> = joined.iter().chain(&capped).map(|p| p.timestamp).collect();
    assert_eq!(all, [3000, 3300], "layer 0's GOP, once");
    // Live packets of layer 0 follow.
    h.rtp_on(PUB, 0, packet(7, 3, 3600, VP8_DELTA));
    let live: Vec<u32> = forwards_to(&h.drain(), 1)
        .iter()
        .map(|p| p.timestamp)
        .collect();
    assert_eq!(live, [3600]);
    // Layer 1 gets a keyframe; moved up to it now, the subscription (which already shows a
    // picture) is not replayed that cached GOP, which would put it behind live: it waits for
    // layer 1's next keyframe.
    h.rtp_on(PUB, 1, packet(9, 2, 3900, VP8_KEY));
    h.rtp_on(PUB, 0, packet(7, 4, 3900, VP8_DELTA));
    h.drain();
    h.prefer(1, 1);
    let moved: Vec<u32> = forwards_to(&h.drain(), 1)
        .iter()
        .map(|p| p.timestamp)
        .collect();
    assert!(moved.is_empty(), "no replay after the start: {moved:?}");
    h.rtp_on(PUB, 1, packet(9, 3, 4200, VP8_KEY));
    let switched = forwards_to(&h.drain(), 1);
    assert_eq!(switched.len(), 1, "the live keyframe of layer 1");
    assert_eq!(switched[0].payload.as_ref(), VP8_KEY);
}

#[test]
fn a_subscription_created_paused_starts_from_the_cache_when_resumed() {
    let mut h = Harness::new();
    two_cached_layers(&mut h);
    h.rtp_on(PUB, 0, packet(7, 1, 3000, VP8_KEY));
    h.rtp_on(PUB, 1, packet(9, 1, 6000, VP8_KEY));
    h.drain();
    h.input(Input::SubscriptionAdded {
        subscription: SubscriptionId(1),
        subscriber: ParticipantId(21),
        publication: PublicationId(PUB),
        ssrc: sub_ssrc(1),
        payload_type: sub_pt(1),
        preferred: Some((0, None)),
        paused: true,
    })
    .unwrap();
    assert!(forwards_to(&h.drain(), 1).is_empty(), "paused: nothing");
    h.input(Input::SetPaused {
        subscription: SubscriptionId(1),
        paused: false,
    })
    .unwrap();
    let resumed: Vec<u32> = forwards_to(&h.drain(), 1)
        .iter()
        .map(|p| p.timestamp)
        .collect();
    assert_eq!(resumed, [3000], "layer 0's cached keyframe at once");
}

#[test]
fn a_subscriber_asking_for_a_layer_at_the_start_replays_only_that_layer() {
    let mut h = Harness::new();
    two_cached_layers(&mut h);
    h.rtp_on(PUB, 0, packet(7, 1, 3000, VP8_KEY));
    h.rtp_on(PUB, 1, packet(9, 1, 6000, VP8_KEY));
    h.drain();
    for (subscription, layer, timestamp) in [(1, 0, 3000), (2, 1, 6000)] {
        h.input(Input::SubscriptionAdded {
            subscription: SubscriptionId(subscription),
            subscriber: ParticipantId(20 + subscription),
            publication: PublicationId(PUB),
            ssrc: sub_ssrc(subscription),
            payload_type: sub_pt(subscription),
            preferred: Some((layer, None)),
            paused: false,
        })
        .unwrap();
        let replayed: Vec<u32> = forwards_to(&h.drain(), subscription)
            .iter()
            .map(|p| p.timestamp)
            .collect();
        assert_eq!(replayed, [timestamp], "layer {layer}");
    }
}
