//! Unit tests of `reports.rs`.

use super::*;
use rtc::rtp;

const SSRC: u32 = 0x5eed;

fn interceptor() -> (SenderReports, Arc<SampledClocks>) {
    let clocks = Arc::new(SampledClocks::default());
    let mut reports = SenderReports::new(Arc::clone(&clocks), Arc::default());
    reports.bind_local_stream(&StreamInfo {
        ssrc: SSRC,
        clock_rate: 90_000,
        ..Default::default()
    });
    (reports, clocks)
}

fn write(reports: &mut SenderReports, now: Instant, seq: u16, ts: u32) {
    write_on(reports, SSRC, now, seq, ts);
}

fn write_on(reports: &mut SenderReports, ssrc: u32, now: Instant, seq: u16, ts: u32) {
    let packet = rtp::Packet {
        header: rtp::header::Header {
            ssrc,
            sequence_number: seq,
            timestamp: ts,
            ..Default::default()
        },
        payload: bytes::Bytes::from_static(&[0; 100]),
    };
    reports
        .handle_write(TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        })
        .expect("written");
    while reports.poll_write().is_some() {}
}

fn next_report(reports: &mut SenderReports, now: Instant) -> SenderReport {
    reports.handle_timeout(now).expect("timeout");
    let packet = reports.poll_write().expect("a report is due");
    let Packet::Rtcp(mut rtcp) = packet.message.packet else {
        panic!("not RTCP");
    };
    rtcp.pop()
        .expect("one report")
        .as_any()
        .downcast_ref::<SenderReport>()
        .expect("a sender report")
        .clone()
}

fn ntp_seconds(ntp: u64) -> f64 {
    (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0
}

#[test]
fn without_a_sampling_instant_the_write_time_anchors_the_report() {
    let (mut reports, _) = interceptor();
    let t0 = Instant::now();
    write(&mut reports, t0, 10, 9_000);
    // A frame's later packets do not move the anchor.
    write(&mut reports, t0 + Duration::from_millis(5), 11, 9_000);
    assert!(reports.poll_timeout() == Some(t0 + REPORT_INTERVAL));
    let report = next_report(&mut reports, t0 + REPORT_INTERVAL);
    assert_eq!(report.ssrc, SSRC);
    assert_eq!(report.rtp_time, 9_000 + 90_000, "1 s after the frame");
    assert_eq!((report.packet_count, report.octet_count), (2, 200));
}

#[test]
fn a_sampling_instant_anchors_the_report_whenever_the_packet_was_written() {
    let (mut reports, clocks) = interceptor();
    let t0 = Instant::now();
    // Sampled at t0, written 300 ms later (a slow path).
    clocks.set(
        SSRC,
        ClockAnchor {
            rtp_timestamp: 9_000,
            at: t0,
        },
    );
    write(&mut reports, t0 + Duration::from_millis(300), 10, 9_000);
    let due = t0 + Duration::from_millis(300) + REPORT_INTERVAL;
    let report = next_report(&mut reports, due);
    assert_eq!(report.rtp_time, 9_000 + 117_000, "1.3 s after sampling");
    let expected_ntp = ntp_seconds(reports.ntp_time(t0)) + 1.3;
    assert!((ntp_seconds(report.ntp_time) - expected_ntp).abs() < 1e-6);
}

#[test]
fn rtp_time_wraps_and_can_lie_before_the_anchor() {
    let t0 = Instant::now() + Duration::from_secs(10);
    let anchor = ClockAnchor {
        rtp_timestamp: u32::MAX - 899,
        at: t0,
    };
    assert_eq!(
        rtp_time_at(anchor, 90_000, t0 + Duration::from_millis(20)),
        900
    );
    assert_eq!(
        rtp_time_at(anchor, 90_000, t0 - Duration::from_millis(10)),
        u32::MAX - 1_799
    );
}

#[test]
fn a_remote_sender_clock_keeps_the_relation_between_its_streams() {
    let clock = RemoteSenderClock::default();
    let t0 = Instant::now();
    let ntp =
        |seconds: f64| ((3_900_000_000_i64 << 32) + (seconds * 4_294_967_296.0) as i64) as u64;
    assert_eq!(clock.place(ntp(0.0), t0), Some(t0));
    // A second stream's report, sent 250 ms later by the sender, arriving 40 ms late: it
    // is placed by the sender's clock, not by its arrival.
    let placed = clock.place(ntp(0.25), t0 + Duration::from_millis(290));
    let error = placed.map(|p| (p - t0).as_secs_f64() - 0.25);
    assert!(error.is_some_and(|e| e.abs() < 1e-6), "{error:?}");
    let before = clock.place(ntp(-1.5), t0 + Duration::from_secs(3));
    assert_eq!(before.map(|b| t0 - b), Some(Duration::from_millis(1_500)));
}

#[test]
fn an_anchor_places_timestamps_on_both_sides_and_across_the_wrap() {
    let t0 = Instant::now() + Duration::from_secs(10);
    let anchor = ClockAnchor {
        rtp_timestamp: u32::MAX - 4_799,
        at: t0,
    };
    assert_eq!(
        anchor.instant_of(4_800, 48_000),
        Some(t0 + Duration::from_millis(200))
    );
    assert_eq!(
        anchor.instant_of(u32::MAX - 9_599, 48_000),
        Some(t0 - Duration::from_millis(100))
    );
    assert_eq!(anchor.instant_of(0, 0), None);
}

fn video(ssrc: u32, transport_wide: bool) -> StreamInfo {
    StreamInfo {
        ssrc,
        clock_rate: 90_000,
        mime_type: "video/VP8".to_owned(),
        rtp_header_extensions: if transport_wide {
            vec![rtc::interceptor::RTPHeaderExtension {
                uri: TRANSPORT_CC_URI.to_owned(),
                id: 5,
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

/// Runs the report timers from `from` for `duration`; the reports sent, by SSRC.
fn reports_over(
    reports: &mut SenderReports,
    from: Instant,
    duration: Duration,
) -> HashMap<u32, Vec<(Instant, SenderReport)>> {
    let mut sent: HashMap<u32, Vec<(Instant, SenderReport)>> = HashMap::new();
    while let Some(now) = reports.poll_timeout().filter(|at| *at <= from + duration) {
        reports.handle_timeout(now).expect("timeout");
        while let Some(packet) = reports.poll_write() {
            let Packet::Rtcp(rtcp) = packet.message.packet else {
                panic!("not RTCP");
            };
            let report = rtcp[0]
                .as_any()
                .downcast_ref::<SenderReport>()
                .expect("a sender report")
                .clone();
            sent.entry(report.ssrc).or_default().push((now, report));
        }
    }
    sent
}

#[test]
fn one_video_stream_without_transport_wide_feedback_reports_every_50_ms_for_round_trips() {
    let sent = Arc::new(SentReports::default());
    let mut reports = SenderReports::new(Arc::default(), Arc::clone(&sent));
    reports.bind_local_stream(&video(1, false));
    reports.bind_local_stream(&video(2, true));
    reports.bind_local_stream(&video(3, false));
    let t0 = Instant::now();
    for ssrc in [1, 2, 3] {
        write_on(&mut reports, ssrc, t0, 1, 9_000);
    }
    let second = reports_over(&mut reports, t0, Duration::from_secs(1));
    let counts: Vec<usize> = [1, 2, 3].iter().map(|ssrc| second[ssrc].len()).collect();
    assert_eq!(counts, vec![20, 1, 1], "the first to send is watched");
    // A receiver report echoing the fourth, held 30 ms, arriving 45 ms after it was sent.
    let (sent_at, report) = &second[&1][3];
    let lsr = ntp_middle(report.ntp_time);
    let held = 30 * 65_536 / 1_000;
    let round_trip = sent.round_trip(1, lsr, held, *sent_at + Duration::from_millis(45));
    let error = round_trip.map(|rtt| rtt.as_secs_f64() - 0.015);
    assert!(error.is_some_and(|e| e.abs() < 1e-4), "{round_trip:?}");
    // What was not sent, or not on the watched stream, gives nothing.
    let now = t0 + Duration::from_secs(1);
    assert_eq!(sent.round_trip(1, lsr.wrapping_add(1), 0, now), None);
    assert_eq!(sent.round_trip(1, 0, 0, now), None);
    let (_, unwatched) = &second[&3][0];
    assert_eq!(
        sent.round_trip(3, ntp_middle(unwatched.ntp_time), 0, now),
        None
    );
    // A delay longer than the whole round trip is a lie.
    assert_eq!(
        sent.round_trip(1, lsr, 65_536, *sent_at + Duration::from_millis(45)),
        None
    );
    // The watched stream goes quiet for a second: the next stream that sends takes over.
    let later = t0 + Duration::from_millis(2_100);
    reports_over(
        &mut reports,
        t0 + Duration::from_secs(1),
        Duration::from_millis(1_100),
    );
    write_on(&mut reports, 3, later, 2, 12_000);
    let next = reports_over(&mut reports, later, Duration::from_secs(1));
    assert!(next[&3].len() >= 19, "{}", next[&3].len());
    assert!(next[&1].len() <= 2, "{}", next[&1].len());
    let (at, report) = &next[&3][5];
    assert!(
        sent.round_trip(
            3,
            ntp_middle(report.ntp_time),
            0,
            *at + Duration::from_millis(5)
        )
        .is_some()
    );
    // A stream that leaves is forgotten.
    reports.unbind_local_stream(&video(3, false));
    assert_eq!(
        sent.round_trip(
            3,
            ntp_middle(report.ntp_time),
            0,
            *at + Duration::from_millis(5)
        ),
        None
    );
}

#[test]
fn ntp_time_counts_from_1900() {
    assert_eq!(ntp_from_unix(Duration::ZERO), NTP_UNIX_OFFSET_SECS << 32);
    assert_eq!(
        ntp_from_unix(Duration::from_millis(1_500)) & 0xffff_ffff,
        1 << 31
    );
}
