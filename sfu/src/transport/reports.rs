//! RTCP sender reports: towards subscribers on the media's own clock where the source gives
//! one, and from publishers read to give it.
//!
//! A receiver lines up the audio and video of one stream by their sender reports: each maps an
//! RTP timestamp to a wall-clock (NTP) time. webrtc-rs's report interceptor maps the last
//! packet's timestamp to the moment that packet was *written*; then any delay that one
//! track's path adds and the other's does not (AAC → Opus transcoding, a writer task waiting
//! for a core) shows up as lip-sync error at the viewer. Here a packet that knows when its
//! media was sampled ([`RtpPacket::sampled_at`](crate::core::RtpPacket::sampled_at), set by
//! RTMP ingest from the encoder's timeline) anchors its track's reports to that instant
//! instead, so every track of a source shares one clock. Tracks without it fall back to the
//! write time, as before.
//!
//! A browser publisher's own sender reports give that instant for its packets: all its streams
//! report one NTP clock, which [`RemoteSenderClock`] places on ours.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;

use super::send_time::TRANSPORT_CC_URI;

/// How often each sending stream reports (what browsers do too).
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How often one video stream of a connection to a receiver without transport-wide feedback
/// reports (the watched stream). A receiver report echoes the newest sender report that has
/// crossed the path, so its round trip shows a queue once a report sent after the queue began
/// has crossed it: Chrome reports with every REMB (every 200–300 ms), and at 100 ms the echoed
/// report was often one sent before a cap, so the queue showed a REMB later. ~11 kbit/s.
pub(crate) const QUEUE_WATCH_REPORT_INTERVAL: Duration = Duration::from_millis(50);
/// A watched stream that has sent nothing for this long hands the watch to another that sends
/// (its subscription paused or gone quiet: its receiver may stop reporting on it).
const WATCH_IDLE: Duration = Duration::from_secs(1);
/// Sender reports remembered for the watched stream, to match receiver reports against: 3.2 s
/// of them, longer than any receiver holds one before it reports.
const SENT_REPORTS_KEPT: usize = 64;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// An RTP timestamp of a sending stream and the instant it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClockAnchor {
    pub rtp_timestamp: u32,
    pub at: Instant,
}

impl ClockAnchor {
    /// The instant RTP timestamp `rtp_timestamp` of this anchor's clock stands for (RTP time
    /// wraps, so the nearer interpretation, within ±2^31 ticks).
    pub(crate) fn instant_of(self, rtp_timestamp: u32, clock_rate: u32) -> Option<Instant> {
        if clock_rate == 0 {
            return None;
        }
        let ticks = rtp_timestamp.wrapping_sub(self.rtp_timestamp) as i32;
        let offset = Duration::from_nanos(
            u64::from(ticks.unsigned_abs()) * 1_000_000_000 / u64::from(clock_rate),
        );
        if ticks >= 0 {
            self.at.checked_add(offset)
        } else {
            self.at.checked_sub(offset)
        }
    }
}

/// A remote sender's NTP clock placed on ours. All the streams of one sender report the same
/// NTP clock, so one offset, fixed when its first report arrives, maps every stream's media to
/// the server's clock with their relation intact (the network delay of that first report is
/// in all of them alike).
#[derive(Debug, Default)]
pub(crate) struct RemoteSenderClock {
    reference: Mutex<Option<(u64, Instant)>>,
}

impl RemoteSenderClock {
    /// The instant on our clock of the sender's NTP time `ntp`, in a report that `arrived`.
    pub(crate) fn place(&self, ntp: u64, arrived: Instant) -> Option<Instant> {
        let (reference_ntp, reference_at) = *self
            .reference
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert((ntp, arrived));
        // 32.32 fixed-point seconds; the difference of two nearby times fits an i64.
        let difference = ntp.wrapping_sub(reference_ntp) as i64;
        let nanos = (i128::from(difference.unsigned_abs()) * 1_000_000_000) >> 32;
        let offset = Duration::from_nanos(u64::try_from(nanos).ok()?);
        if difference >= 0 {
            reference_at.checked_add(offset)
        } else {
            reference_at.checked_sub(offset)
        }
    }
}

/// Where the writers of one connection's tracks leave, per SSRC, the sampling instant of the
/// last packet that had one; the report interceptor of the same connection reads it.
#[derive(Debug, Default)]
pub(crate) struct SampledClocks {
    anchors: Mutex<HashMap<u32, ClockAnchor>>,
}

impl SampledClocks {
    pub(crate) fn set(&self, ssrc: u32, anchor: ClockAnchor) {
        self.lock().insert(ssrc, anchor);
    }

    /// The track's packets no longer say when they were sampled (its source changed).
    pub(crate) fn clear(&self, ssrc: u32) {
        self.lock().remove(&ssrc);
    }

    fn get(&self, ssrc: u32) -> Option<ClockAnchor> {
        self.lock().get(&ssrc).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, ClockAnchor>> {
        // A map of plain values cannot be left half-updated by a panicking holder.
        self.anchors.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// When a connection's recent sender reports to receivers without transport-wide feedback went
/// out, so each receiver report that echoes one gives the round trip: written by the report
/// interceptor, read by the track that receives the receiver report.
#[derive(Debug, Default)]
pub(crate) struct SentReports {
    /// Per SSRC: (the report's NTP time, middle 32 bits, as receivers echo it; when it left).
    sent: Mutex<HashMap<u32, VecDeque<(u32, Instant)>>>,
}

impl SentReports {
    fn record(&self, ssrc: u32, ntp_time: u64, at: Instant) {
        let mut sent = self.lock();
        let reports = sent.entry(ssrc).or_default();
        if reports.len() == SENT_REPORTS_KEPT {
            reports.pop_front();
        }
        reports.push_back((ntp_middle(ntp_time), at));
    }

    fn forget(&self, ssrc: u32) {
        self.lock().remove(&ssrc);
    }

    /// The round trip a receiver's report block on `ssrc` gives at `now`: from when the sender
    /// report it echoes (`last_sender_report`) left, less the time the receiver held it
    /// (`delay`, in 1/65536 s). None for a report we did not send or no longer remember (or a
    /// stream that is not watched), and for a delay longer than the whole round trip.
    pub(crate) fn round_trip(
        &self,
        ssrc: u32,
        last_sender_report: u32,
        delay: u32,
        now: Instant,
    ) -> Option<Duration> {
        if last_sender_report == 0 {
            return None;
        }
        let sent = self
            .lock()
            .get(&ssrc)?
            .iter()
            .rev()
            .find(|(ntp, _)| *ntp == last_sender_report)
            .map(|(_, at)| *at)?;
        let held = Duration::from_nanos(u64::from(delay) * 1_000_000_000 / 65_536);
        now.checked_duration_since(sent)?.checked_sub(held)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, VecDeque<(u32, Instant)>>> {
        // A map of plain values cannot be left half-updated by a panicking holder.
        self.sent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The middle 32 bits of a 64-bit NTP timestamp: what a report block's LSR field carries.
fn ntp_middle(ntp_time: u64) -> u32 {
    ((ntp_time >> 16) & 0xffff_ffff) as u32
}

#[derive(Debug)]
struct SendingStream {
    clock_rate: u32,
    /// When it reports next (from its first packet on).
    next_report: Option<Instant>,
    /// Video to a receiver without transport-wide feedback: it may be the watched stream.
    watchable: bool,
    last_write: Option<Instant>,
    packets: u32,
    octets: u32,
    /// The newest packet written, as an anchor of last resort.
    last_written: Option<(u16, ClockAnchor)>,
}

impl SendingStream {
    fn written(&mut self, now: Instant, sequence_number: u16, rtp_timestamp: u32, octets: usize) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self
            .octets
            .wrapping_add(u32::try_from(octets).unwrap_or(u32::MAX));
        let newer = match self.last_written {
            None => true,
            Some((last, _)) => {
                let ahead = sequence_number.wrapping_sub(last);
                ahead != 0 && ahead < 0x8000
            }
        };
        if newer {
            // The first packet of a frame stands for its timestamp; later packets of the same
            // frame were only written later.
            let same_frame =
                matches!(self.last_written, Some((_, a)) if a.rtp_timestamp == rtp_timestamp);
            let anchor = match self.last_written {
                Some((_, anchor)) if same_frame => anchor,
                _ => ClockAnchor {
                    rtp_timestamp,
                    at: now,
                },
            };
            self.last_written = Some((sequence_number, anchor));
        }
    }
}

/// The report interceptor of a subscriber connection (webrtc-rs's `Slot::SenderReport`).
pub(crate) struct SenderReports {
    clocks: Arc<SampledClocks>,
    sent_reports: Arc<SentReports>,
    streams: HashMap<u32, SendingStream>,
    /// The one stream that reports often, for the round trip (see
    /// [`QUEUE_WATCH_REPORT_INTERVAL`]).
    watched: Option<u32>,
    /// One pairing of the monotonic and the wall clock for the connection's life, so every
    /// report of every track uses the same NTP timeline.
    epoch: (Instant, Duration),
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl SenderReports {
    pub(crate) fn new(clocks: Arc<SampledClocks>, sent_reports: Arc<SentReports>) -> Self {
        let since_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            clocks,
            sent_reports,
            streams: HashMap::new(),
            watched: None,
            epoch: (Instant::now(), since_unix),
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    fn ntp_time(&self, at: Instant) -> u64 {
        let (epoch_instant, epoch_unix) = self.epoch;
        let unix = match at.checked_duration_since(epoch_instant) {
            Some(after) => epoch_unix.saturating_add(after),
            None => epoch_unix.saturating_sub(epoch_instant.duration_since(at)),
        };
        ntp_from_unix(unix)
    }

    /// Whether the watched stream (if any) sent something within [`WATCH_IDLE`].
    fn watched_is_sending(&self, now: Instant) -> bool {
        self.watched
            .and_then(|ssrc| self.streams.get(&ssrc))
            .and_then(|stream| stream.last_write)
            .is_some_and(|at| now.saturating_duration_since(at) < WATCH_IDLE)
    }

    fn report(&self, ssrc: u32, stream: &SendingStream, now: Instant) -> Option<SenderReport> {
        let anchor = self
            .clocks
            .get(ssrc)
            .or(stream.last_written.map(|(_, anchor)| anchor))?;
        Some(SenderReport {
            ssrc,
            ntp_time: self.ntp_time(now),
            rtp_time: rtp_time_at(anchor, stream.clock_rate, now),
            packet_count: stream.packets,
            octet_count: stream.octets,
            ..Default::default()
        })
    }
}

/// The RTP timestamp of `anchor`'s clock at `now` (before or after the anchor).
fn rtp_time_at(anchor: ClockAnchor, clock_rate: u32, now: Instant) -> u32 {
    let ticks = |d: Duration| (d.as_secs_f64() * f64::from(clock_rate)).round() as i64;
    let elapsed = match now.checked_duration_since(anchor.at) {
        Some(after) => ticks(after),
        None => -ticks(anchor.at.duration_since(now)),
    };
    // RTP time wraps at 2^32: the low 32 bits of the sum are the answer either way.
    anchor.rtp_timestamp.wrapping_add(elapsed as u32)
}

/// A time since the Unix epoch as a 64-bit NTP timestamp (32.32 fixed point since 1900).
fn ntp_from_unix(since_unix: Duration) -> u64 {
    let seconds = since_unix.as_secs().wrapping_add(NTP_UNIX_OFFSET_SECS);
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SenderReports {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && let Some(stream) = self.streams.get_mut(&packet.header.ssrc)
        {
            stream.written(
                msg.now,
                packet.header.sequence_number,
                packet.header.timestamp,
                packet.payload.len(),
            );
            stream.last_write = Some(msg.now);
            stream.next_report.get_or_insert(msg.now + REPORT_INTERVAL);
            let watchable = stream.watchable;
            let ssrc = packet.header.ssrc;
            if watchable && self.watched != Some(ssrc) && !self.watched_is_sending(msg.now) {
                self.watched = Some(ssrc);
                if let Some(stream) = self.streams.get_mut(&ssrc) {
                    stream.next_report = Some(msg.now + QUEUE_WATCH_REPORT_INTERVAL);
                }
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        let mut due = Vec::new();
        for (ssrc, stream) in &mut self.streams {
            if stream.next_report.is_some_and(|at| now >= at) {
                let interval = if self.watched == Some(*ssrc) {
                    QUEUE_WATCH_REPORT_INTERVAL
                } else {
                    REPORT_INTERVAL
                };
                stream.next_report = Some(now + interval);
                due.push(*ssrc);
            }
        }
        for ssrc in due {
            let Some(stream) = self.streams.get(&ssrc) else {
                continue;
            };
            let Some(report) = self.report(ssrc, stream, now) else {
                continue;
            };
            if self.watched == Some(ssrc) {
                self.sent_reports.record(ssrc, report.ntp_time, now);
            }
            self.write_queue.push_back(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(report)])),
            });
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.streams.values().filter_map(|s| s.next_report).min()
    }
}

impl Interceptor for SenderReports {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let transport_wide = info
            .rtp_header_extensions
            .iter()
            .any(|extension| extension.uri == TRANSPORT_CC_URI);
        let watchable =
            !transport_wide && info.mime_type.to_ascii_lowercase().starts_with("video/");
        self.streams.insert(
            info.ssrc,
            SendingStream {
                clock_rate: info.clock_rate,
                next_report: None,
                watchable,
                last_write: None,
                packets: 0,
                octets: 0,
                last_written: None,
            },
        );
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
        self.clocks.clear(info.ssrc);
        self.sent_reports.forget(info.ssrc);
        if self.watched == Some(info.ssrc) {
            self.watched = None;
        }
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
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
}
