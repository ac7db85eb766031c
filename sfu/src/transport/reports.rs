//! RTCP sender reports: towards subscribers on the media's own clock where the source gives
//! one, and from publishers read to give it.
//!
//! A receiver lines up the audio and video of one stream by their sender reports: each maps an
//! RTP timestamp to a wall-clock (NTP) time. webrtc-rs's report interceptor maps the last
//! packet's timestamp to the moment that packet was *written*; then any delay that one
//! track's path adds and the other's does not (AAC → Opus transcoding, a queue waiting for a
//! busy thread) shows up as lip-sync error at the viewer. Here a packet that knows when its
//! media was sampled ([`RtpPacket::sampled_at`](crate::core::RtpPacket::sampled_at), set by
//! RTMP ingest from the encoder's timeline) anchors its track's reports to that instant
//! instead, so every track of a source shares one clock. Tracks without it fall back to the
//! write time (ADR 0011).
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

use super::pass_through::PassThrough;
use super::send_time::TRANSPORT_CC_URI;

/// How often each sending stream reports (what browsers do too).
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How often one video stream of a connection to a receiver without transport-wide feedback
/// reports (the watched stream). A receiver report echoes the newest sender report that has
/// crossed the path, so its round trip shows a queue once a report sent after the queue began
/// has crossed it. Chrome reports with every REMB (every 200–300 ms); the longer our interval,
/// the likelier the report it echoes was sent before the queue began, and the queue shows a
/// REMB later (ADR 0025). Costs ~11 kbit/s.
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

/// A sampling instant derived from a publisher's reports is used only within this distance
/// of the packet's arrival: a sender whose reports are garbage (or whose clock jumped) gets
/// arrival-time behaviour, not timestamps hours away after a layer switch.
const SAMPLING_PLAUSIBLE_WITHIN: Duration = Duration::from_secs(10);

pub(crate) fn is_plausible_sampling(sampled_at: Instant, arrived: Instant) -> bool {
    let distance = match arrived.checked_duration_since(sampled_at) {
        Some(before) => before,
        None => sampled_at.duration_since(arrived),
    };
    distance <= SAMPLING_PLAUSIBLE_WITHIN
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

/// Where the shard, writing one connection's tracks, leaves, per SSRC, the sampling instant of the
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
    read_queue: PassThrough<TaggedPacket>,
    write_queue: PassThrough<TaggedPacket>,
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
            read_queue: PassThrough::default(),
            write_queue: PassThrough::default(),
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
mod tests;
