//! Probing a subscriber's path before an upgrade: extra bytes on the wire for a moment, to see
//! whether the path carries them without building a queue.
//!
//! libwebrtc probes with padding or RTX. Neither is open to us here: webrtc-rs 0.21 marshals a
//! padding-only packet with 1–4 padding bytes whatever is asked (so a probe would take
//! thousands of packets a second), and subscribers get no RTX (retransmissions stay on the
//! media SSRC, where the loss test can match them). So the probe repeats packets just sent,
//! unchanged, wire-most: each copy carries its original's transport-wide sequence number, so the
//! receiver's SRTP replay check discards it after it crossed the path, and its feedback (and our
//! send history) still name one packet. What the copies cost shows on the originals: if the
//! path cannot carry both, a standing queue forms, [`QueueDelayDetector`] reports it, the probe
//! stops at once and the allocator keeps the subscriber where it is, without the freeze a real
//! upgrade into a too-narrow path would cost.
//!
//! [`QueueDelayDetector`]: sluice_core::downlink::queue_delay::QueueDelayDetector

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;

use super::pass_through::PassThrough;

/// Packets just sent that a probe may repeat.
const RECENT_PACKETS: usize = 16;
/// How often a running probe sends what its rate has accumulated.
const PROBE_TICK: Duration = Duration::from_millis(5);
/// How long after a probe ended a queue is still taken for its doing: the feedback on its
/// last packets (a window, the queue itself, the receiver's feedback interval) arrives later.
const PROBE_ECHO: Duration = Duration::from_millis(500);
/// A probe rate never exceeds this (a bad request must not flood a path).
const PROBE_MAX_BPS: u64 = 10_000_000;

/// The probe a subscriber connection should send now, shared between the application (which
/// starts it), the congestion watch (which stops it) and the interceptor (which sends it).
#[derive(Debug, Default)]
pub struct ProbeControl {
    state: Mutex<Option<Probe>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    bits_per_second: u64,
    started: Instant,
    until: Instant,
}

impl Probe {
    /// The rate now: it ramps up over the whole probe, so a path too narrow shows a small
    /// queue (which stops the probe) long before it overflows and drops the media the probe
    /// rides on.
    fn rate_at(&self, now: Instant) -> f64 {
        let ramp = self.until.saturating_duration_since(self.started);
        let elapsed = now.saturating_duration_since(self.started);
        let share = if ramp.is_zero() {
            1.0
        } else {
            (elapsed.as_secs_f64() / ramp.as_secs_f64()).min(1.0)
        };
        self.bits_per_second as f64 * share
    }
}

impl ProbeControl {
    /// Sends `bits_per_second` more than the media for `duration` from `now`.
    pub fn start(&self, now: Instant, bits_per_second: u64, duration: Duration) {
        if let Ok(mut state) = self.state.lock() {
            *state = Some(Probe {
                bits_per_second: bits_per_second.min(PROBE_MAX_BPS),
                started: now,
                until: now + duration,
            });
        }
    }

    /// Whether a probe is being sent now or ended less than [`PROBE_ECHO`] ago: feedback on
    /// its last, fastest part arrives only after it ended.
    pub fn running(&self, now: Instant) -> bool {
        self.state
            .lock()
            .ok()
            .and_then(|state| *state)
            .is_some_and(|probe| now < probe.until + PROBE_ECHO)
    }

    /// The path proved too narrow: no more probe bytes. Returns whether a probe was running,
    /// or ended less than [`PROBE_ECHO`] ago (then the queue may be the probe's doing, not
    /// the media's).
    pub fn stop(&self, now: Instant) -> bool {
        self.state
            .lock()
            .map(|mut state| {
                state
                    .take()
                    .is_some_and(|probe| now < probe.until + PROBE_ECHO)
            })
            .unwrap_or(false)
    }

    /// The probe to send now, if one is due.
    fn current(&self, now: Instant) -> Option<Probe> {
        let state = self.state.lock().ok()?;
        state.filter(|probe| now < probe.until)
    }
}

pub struct Prober {
    control: Arc<ProbeControl>,
    /// (packet, size on the wire) of the RTP packets sent during the running probe, newest
    /// last.
    recent: VecDeque<(TaggedPacket, usize)>,
    /// Which recent packet the probe repeats next.
    next: usize,
    /// Bytes the probe owes the path.
    credit: f64,
    last_tick: Option<Instant>,
    /// Copies sent, over this connection's life (for logs and tests).
    sent: u64,
    read_queue: PassThrough<TaggedPacket>,
    write_queue: PassThrough<TaggedPacket>,
}

impl Prober {
    pub fn new(control: Arc<ProbeControl>) -> Self {
        Self {
            control,
            recent: VecDeque::new(),
            next: 0,
            credit: 0.0,
            last_tick: None,
            sent: 0,
            read_queue: PassThrough::default(),
            write_queue: PassThrough::default(),
        }
    }

    #[cfg(test)]
    fn sent(&self) -> u64 {
        self.sent
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Prober {
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
        // Packets are kept (a clone each) only while a probe runs: it repeats those.
        if let Packet::Rtp(packet) = &msg.message.packet
            && self.control.current(msg.now).is_some()
        {
            if self.recent.len() == RECENT_PACKETS {
                self.recent.pop_front();
            }
            let size = packet.marshal_size();
            self.recent.push_back((
                TaggedPacket {
                    now: msg.now,
                    transport: msg.transport,
                    message: msg.message.clone(),
                },
                size,
            ));
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        let Some(probe) = self.control.current(now) else {
            self.credit = 0.0;
            self.last_tick = None;
            // Probes are rare and short: the copies' memory goes with them.
            self.recent = VecDeque::new();
            return Ok(());
        };
        let elapsed = self
            .last_tick
            .map_or(PROBE_TICK, |last| now.saturating_duration_since(last))
            .min(PROBE_TICK * 4);
        self.last_tick = Some(now);
        if self.recent.is_empty() {
            // Nothing to repeat yet: no credit either, or the first packet would go out as a
            // burst of copies.
            self.credit = 0.0;
            return Ok(());
        }
        self.credit += probe.rate_at(now) / 8.0 * elapsed.as_secs_f64();
        while !self.recent.is_empty() {
            let index = self.next % self.recent.len();
            let Some((packet, size)) = self.recent.get(index) else {
                break;
            };
            if (*size as f64) > self.credit {
                break;
            }
            self.credit -= *size as f64;
            self.write_queue.push_back(TaggedPacket {
                now,
                transport: packet.transport,
                message: packet.message.clone(),
            });
            self.next = index + 1;
            self.sent += 1;
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let now = Instant::now();
        self.control.current(now)?;
        Some(self.last_tick.map_or(now, |last| last + PROBE_TICK))
    }
}

impl Interceptor for Prober {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtp::packet::Packet as RtpPacket;
    use rtc::shared::TransportContext;

    fn media(now: Instant, sequence_number: u16) -> TaggedPacket {
        let mut packet = RtpPacket::default();
        packet.header.version = 2;
        packet.header.ssrc = 9;
        packet.header.sequence_number = sequence_number;
        packet.payload = bytes::Bytes::from(vec![0u8; 1_188]);
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        }
    }

    fn written(prober: &mut Prober) -> Vec<u16> {
        std::iter::from_fn(|| prober.poll_write())
            .filter_map(|msg| match msg.message.packet {
                Packet::Rtp(packet) => Some(packet.header.sequence_number),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_probe_repeats_recent_packets_at_its_rate_until_it_ends() {
        let start = Instant::now();
        let control = Arc::new(ProbeControl::default());
        let mut prober = Prober::new(Arc::clone(&control));
        prober
            .handle_write(media(start, 100))
            .expect("pass-through");
        assert_eq!(written(&mut prober), vec![100]);
        prober.handle_timeout(start).expect("no probe");
        assert!(written(&mut prober).is_empty(), "nothing without a probe");
        // 960 kbit/s for 500 ms, ramped up over all of it: 30 000 bytes, 25 copies of the
        // 1 200-byte packets sent since it started.
        control.start(start, 960_000, Duration::from_millis(500));
        for seq in 0..4 {
            prober
                .handle_write(media(start, seq))
                .expect("pass-through");
        }
        assert_eq!(written(&mut prober), vec![0, 1, 2, 3]);
        let mut copies = Vec::new();
        let mut now = start;
        while now < start + Duration::from_millis(700) {
            now += PROBE_TICK;
            prober.handle_timeout(now).expect("timeout");
            copies.extend(written(&mut prober));
        }
        assert!((23..=27).contains(&copies.len()), "{} copies", copies.len());
        assert!(
            copies.iter().all(|seq| *seq < 4),
            "only packets sent during the probe"
        );
        assert_eq!(
            &copies[..5],
            &[0, 1, 2, 3, 0],
            "round robin over what was sent"
        );
        assert_eq!(prober.sent(), copies.len() as u64);
    }

    #[test]
    fn a_stopped_probe_sends_nothing_more() {
        let start = Instant::now();
        let control = Arc::new(ProbeControl::default());
        let mut prober = Prober::new(Arc::clone(&control));
        control.start(start, 5_000_000, Duration::from_secs(5));
        prober.handle_write(media(start, 1)).expect("pass-through");
        written(&mut prober);
        let ramped = start + Duration::from_secs(4);
        prober.handle_timeout(ramped).expect("timeout");
        assert!(!written(&mut prober).is_empty());
        assert!(control.stop(ramped), "a probe was running");
        assert!(!control.stop(ramped), "and is no more");
        prober.handle_timeout(ramped + PROBE_TICK).expect("timeout");
        assert!(written(&mut prober).is_empty());
        assert_eq!(prober.poll_timeout(), None, "idle once stopped");
    }
}
