//! Subscribers that estimate their downlink themselves (REMB): a REMB near what is sent moves
//! nothing, one well above it is probed before an upgrade, a falling one is congestion, and the
//! round trip of their receiver reports shows a queue before the REMB falls.

use super::simulcast::*;
use super::*;
use crate::LayerChangeReason;

fn remb(h: &mut Harness, bits_per_second: u64) {
    h.remb(20, bits_per_second);
}

/// Streaming at real rates, with subscriber 20 moved by its estimate to `layer` (switched on
/// its keyframe) and settled there for half a second; also what that layer costs now.
fn settled_on(layer: u8) -> (Harness, Stream, u64) {
    let (mut h, mut stream) = streaming_at_real_rates();
    let rates = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap();
    h.bandwidth(20, rates[usize::from(layer)][2] * 100 / 85 + 10_000);
    assert_eq!(layer_changes(&h.drain()).last().map(|c| c.1), Some(layer));
    stream.frame(&mut h, &[0, 1, 2], &[layer]);
    run_frames(&mut h, &mut stream, &[0, 1, 2], 500);
    h.drain();
    let cost = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap()[usize::from(layer)][2];
    (h, stream, cost)
}

#[test]
fn a_remb_near_what_is_sent_moves_nothing_and_one_well_above_it_is_probed_before_an_upgrade() {
    let (mut h, mut stream, sent) = settled_on(0);
    // Growing back between 75 % and 130 % of what is sent: no news.
    remb(&mut h, sent * 80 / 100);
    remb(&mut h, sent * 120 / 100);
    let outputs = h.drain();
    assert!(
        layer_changes(&outputs).is_empty() && probes(&outputs).is_empty(),
        "{outputs:?}"
    );
    // Well above: the next layer up is probed, not taken.
    remb(&mut h, sent * 2);
    let outputs = h.drain();
    assert!(layer_changes(&outputs).is_empty(), "the hold comes first");
    let probed = probes(&outputs);
    assert_eq!(probed.len(), 1, "{outputs:?}");
    // A REMB client's probe is what the upgrade adds plus a quarter of the upgraded rate (its
    // estimator sees only the queue the copies build): solved for the upgraded rate, that is
    // one of the layers' rates.
    let upgraded = (probed[0].1 + sent) * 100 / 125;
    let rates = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap();
    assert!(
        rates[1..]
            .iter()
            .flatten()
            .any(|bps| bps.abs_diff(upgraded) <= bps / 50),
        "probe {} from {sent}: upgraded {upgraded} is none of {rates:?}",
        probed[0].1
    );
    // The REMB falls during the probe: the probe failed (the transport is told, to stop it),
    // and q stays through the next hold.
    remb(&mut h, sent * 85 / 100);
    let mut outputs = h.drain();
    assert!(path_congested(&outputs), "{outputs:?}");
    for _ in 0..8 {
        outputs.extend(run_frames(&mut h, &mut stream, &[0, 1, 2], 500));
        remb(&mut h, sent * 2);
    }
    outputs.extend(h.drain());
    assert!(
        layer_changes(&outputs).iter().all(|c| c.1 == 0),
        "moved up after a failed probe: {:?}",
        layer_changes(&outputs)
    );
}

#[test]
fn an_upgrade_goes_only_as_far_as_its_probe_and_a_higher_layer_is_probed_in_its_turn() {
    let (mut h, mut stream) = streaming_at_real_rates();
    let rates = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap();
    let (q, hh) = (rates[0][2], rates[1][2]);
    h.bandwidth(20, q * 100 / 85 + 10_000);
    assert_eq!(layer_changes(&h.drain()).last().map(|c| c.1), Some(0));
    // Room for h: probed for h.
    h.bandwidth(20, hh * 100 / 85 + 10_000);
    let probed = probes(&h.drain());
    assert_eq!(probed.len(), 1, "{probed:?}");
    assert!(
        probed[0].1 < rates[2][2],
        "a probe for h, not f: {probed:?}"
    );
    // The estimate grows to room for f during the hold: after it, h (the probed layer) only.
    let mut outputs = Vec::new();
    for _ in 0..7 {
        outputs.extend(run_frames(&mut h, &mut stream, &[0, 1, 2], 500));
        h.bandwidth(20, 5_000_000);
    }
    outputs.extend(h.drain());
    let targets: Vec<u8> = layer_changes(&outputs).iter().map(|c| c.1).collect();
    assert!(targets.contains(&1), "{targets:?}");
    assert!(!targets.contains(&2), "f was never probed: {targets:?}");
    // f is probed in its turn (once h has settled), and taken after its own hold.
    let mut outputs = Vec::new();
    for _ in 0..12 {
        outputs.extend(run_frames(&mut h, &mut stream, &[0, 1, 2], 500));
        h.bandwidth(20, 5_000_000);
    }
    outputs.extend(h.drain());
    assert!(
        probes(&outputs).len() == 1,
        "f is probed in its turn: {:?}",
        probes(&outputs)
    );
    assert_eq!(layer_changes(&outputs).last().map(|c| c.1), Some(2));
}

#[test]
fn a_remb_still_falling_after_a_failed_probe_moves_nothing_down() {
    let (mut h, _stream, sent) = settled_on(1);
    // Room to spare on h: f is probed.
    remb(&mut h, sent * 2);
    assert_eq!(probes(&h.drain()).len(), 1);
    // The probe's queue: the REMB falls, then falls on, far below what is sent.
    remb(&mut h, sent * 90 / 100);
    remb(&mut h, sent * 50 / 100);
    let outputs = h.drain();
    assert!(
        layer_changes(&outputs).is_empty(),
        "a failed probe moved the subscriber: {:?}",
        layer_changes(&outputs)
    );
}

#[test]
fn a_remb_lagging_behind_an_upgrade_is_no_congestion() {
    let (mut h, mut stream, on_q) = settled_on(0);
    let rates = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap();
    remb(&mut h, on_q * 120 / 100);
    // Up to h on the estimate, after its hold.
    for _ in 0..8 {
        h.bandwidth(20, rates[1][2] * 100 / 85 + 10_000);
        run_frames(&mut h, &mut stream, &[0, 1, 2], 500);
    }
    stream.frame(&mut h, &[0, 1, 2], &[1]);
    run_frames(&mut h, &mut stream, &[0, 1, 2], 500);
    h.drain();
    let on_h = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap()[1][2];
    // The REMB still describes q, growing: far below what h costs, but no fall.
    remb(&mut h, on_q * 125 / 100);
    assert!(on_q * 125 / 100 < on_h * 75 / 100, "{on_q} {on_h}");
    remb(&mut h, on_q * 130 / 100);
    let outputs = h.drain();
    assert!(
        layer_changes(&outputs).is_empty(),
        "a lagging REMB moved the subscriber: {:?}",
        layer_changes(&outputs)
    );
    assert!(!path_congested(&outputs), "no congestion: {outputs:?}");
    // A fall is congestion: down to the lowest layer, and the transport is told (its repairs
    // go out once while the queue drains).
    remb(&mut h, on_q);
    let outputs = h.drain();
    assert_eq!(layer_changes(&outputs).last().map(|c| c.1), Some(0));
    assert!(
        outputs.iter().any(|o| matches!(
            o,
            Output::PathCongested {
                subscriber: ParticipantId(20)
            }
        )),
        "{outputs:?}"
    );
}

#[test]
fn a_remb_falling_soon_after_an_upgrade_to_f_goes_back_to_h_not_to_the_lowest_layer() {
    let (mut h, mut stream, sent) = settled_on(1);
    // Room to spare on h: f is probed, then taken after its hold.
    let mut outputs = Vec::new();
    for _ in 0..8 {
        remb(&mut h, sent * 2);
        outputs.extend(run_frames(&mut h, &mut stream, &[0, 1, 2], 500));
    }
    assert_eq!(layer_changes(&outputs).last().map(|c| c.1), Some(2));
    stream.frame(&mut h, &[0, 1, 2], &[2]);
    run_frames(&mut h, &mut stream, &[0, 1, 2], 500);
    h.drain();
    // Its REMB falls: back to h, which carried it before, not to q.
    remb(&mut h, sent / 2);
    let outputs = h.drain();
    assert_eq!(
        layer_changes(&outputs).last().map(|c| c.1),
        Some(1),
        "{:?}",
        layer_changes(&outputs)
    );
    // f is shed until h's keyframe.
    let outputs = run_frames(&mut h, &mut stream, &[0, 1, 2], 200);
    assert!(forwards_to(&outputs, 1).is_empty(), "f is shed");
    stream.frame(&mut h, &[0, 1, 2], &[1]);
    let outputs = h.drain();
    assert_eq!(
        layer_changes(&outputs).last().map(|c| (c.0, c.1)),
        Some((Some(1), 1))
    );
}

/// Subscriber 20's round trips, one every 250 ms of streaming (a REMB client reports with each
/// REMB); everything that came out.
fn round_trips(h: &mut Harness, stream: &mut Stream, round_trips_ms: &[u64]) -> Vec<Output> {
    let mut outputs = Vec::new();
    for rtt in round_trips_ms {
        outputs.extend(run_frames(h, stream, &[0, 1, 2], 250));
        h.input(Input::RoundTrip {
            subscriber: ParticipantId(20),
            round_trip: Duration::from_millis(*rtt),
        })
        .unwrap();
        outputs.extend(h.drain());
    }
    outputs
}

#[test]
fn a_queue_in_a_remb_clients_round_trip_steps_it_down_before_its_remb_falls() {
    let (mut h, mut stream) = streaming_at_real_rates();
    let on_f = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap()[2][2];
    // Its REMB says nothing new, and its round trips are steady.
    remb(&mut h, on_f);
    let outputs = round_trips(&mut h, &mut stream, &[2, 3, 2, 2, 3]);
    assert!(
        layer_changes(&outputs).is_empty() && !path_congested(&outputs),
        "{:?}",
        layer_changes(&outputs)
    );
    // 40 ms more: a queue. The REMB has not fallen, but the subscriber goes to q at once (the
    // queue's rate is unknown: only that it is below what is sent), and the transport is told.
    let outputs = round_trips(&mut h, &mut stream, &[42]);
    assert_eq!(
        layer_changes(&outputs).last().map(|c| (c.1, c.2)),
        Some((0, LayerChangeReason::Bandwidth)),
        "{:?}",
        layer_changes(&outputs)
    );
    assert!(path_congested(&outputs), "{outputs:?}");
    assert!(
        !keyframe_requests(&outputs).is_empty(),
        "q's keyframe is asked for"
    );
    // The queue drains over the next reports: no more news, nothing moves.
    let outputs = round_trips(&mut h, &mut stream, &[180, 90, 3]);
    assert!(
        layer_changes(&outputs).iter().all(|c| c.1 == 0) && !path_congested(&outputs),
        "{:?}",
        layer_changes(&outputs)
    );
}

#[test]
fn clear_round_trips_move_a_remb_client_up_after_a_probe_though_its_remb_lags() {
    let (mut h, mut stream, sent) = settled_on(1);
    // A REMB that stays where it is (libwebrtc's after congestion): alone it moves nothing.
    remb(&mut h, sent);
    assert!(probes(&h.drain()).is_empty());
    // Clear round trips: f is probed, then taken after the hold.
    let outputs = round_trips(&mut h, &mut stream, &[2; 14]);
    assert_eq!(probes(&outputs).len(), 1, "{:?}", probes(&outputs));
    assert_eq!(
        layer_changes(&outputs).last().map(|c| c.1),
        Some(2),
        "{:?}",
        layer_changes(&outputs)
    );
    stream.frame(&mut h, &[0, 1, 2], &[2]);
    h.drain();
    // f's keyframe crosses the path as a burst: a queue right behind it is not congestion.
    let outputs = round_trips(&mut h, &mut stream, &[50]);
    assert!(
        layer_changes(&outputs).is_empty() && !path_congested(&outputs),
        "{:?}",
        layer_changes(&outputs)
    );
    // A queue soon after that: the upgrade is undone, back to h (not q).
    let outputs = round_trips(&mut h, &mut stream, &[2, 50]);
    assert_eq!(
        layer_changes(&outputs).last().map(|c| c.1),
        Some(1),
        "{:?}",
        layer_changes(&outputs)
    );
    assert!(path_congested(&outputs));
}

#[test]
fn a_queue_in_the_round_trip_during_a_probe_fails_the_probe_and_moves_nothing() {
    let (mut h, mut stream, _sent) = settled_on(0);
    let outputs = round_trips(&mut h, &mut stream, &[2, 2, 3, 2]);
    assert_eq!(probes(&outputs).len(), 1, "h is probed: {outputs:?}");
    // The probe's queue.
    let outputs = round_trips(&mut h, &mut stream, &[45]);
    assert!(path_congested(&outputs), "the transport stops the probe");
    assert!(
        layer_changes(&outputs).is_empty(),
        "{:?}",
        layer_changes(&outputs)
    );
    // Nothing moves up through the hold that follows, however clear the path.
    let outputs = round_trips(&mut h, &mut stream, &[2; 24]);
    assert!(
        layer_changes(&outputs).is_empty(),
        "moved after a failed probe: {:?}",
        layer_changes(&outputs)
    );
}

#[test]
fn after_an_upgrade_the_next_probe_waits_until_the_upgrade_has_settled() {
    let (mut h, mut stream) = streaming_at_real_rates();
    let rates = h.room.temporal_bitrates(PublicationId(PUB), h.now).unwrap();
    h.bandwidth(20, rates[0][2] * 100 / 85 + 10_000);
    assert_eq!(layer_changes(&h.drain()).last().map(|c| c.1), Some(0));
    h.bandwidth(20, rates[1][2] * 100 / 85 + 10_000);
    let mut probed_at = vec![h.now];
    assert_eq!(probes(&h.drain()).len(), 1, "h is probed");
    // Then room for everything: h is taken after its hold; f is not probed in the same moment,
    // but once h has been on for the settle time.
    let mut outputs = Vec::new();
    let mut upgraded_at = None;
    for _ in 0..40 {
        let step = run_frames(&mut h, &mut stream, &[0, 1, 2], 250);
        h.bandwidth(20, 5_000_000);
        let step: Vec<Output> = step.into_iter().chain(h.drain()).collect();
        if !probes(&step).is_empty() {
            probed_at.push(h.now);
        }
        if upgraded_at.is_none() && layer_changes(&step).iter().any(|c| c.1 == 1) {
            upgraded_at = Some(h.now);
        }
        outputs.extend(step);
    }
    let upgraded_at = upgraded_at.expect("h was taken");
    assert_eq!(probed_at.len(), 2, "h, then f: {probed_at:?}");
    let waited = probed_at[1].saturating_duration_since(upgraded_at);
    assert!(
        waited >= Duration::from_secs(2),
        "f probed {waited:?} after h was taken"
    );
    assert_eq!(layer_changes(&outputs).last().map(|c| c.1), Some(2));
}
