//! Stamps the absolute send time on video to subscribers that estimate their downlink
//! themselves (REMB, no transport-wide feedback).
//!
//! Such a receiver (libwebrtc's receive-side estimator) measures queueing from how the gaps
//! between packets grow on the way. With only RTP timestamps to go by, all packets of a frame
//! share one timestamp and the capture clock's jitter rides on every gap, so it sees a queue
//! late. With `abs-send-time` on each packet it compares send and arrival gaps of 5 ms packet
//! groups and sees the queue sooner (ADR 0023).
//!
//! Wire-most in subscriber chains, so the stamp is the moment the packet leaves (a repeat or a
//! probe copy is stamped when it goes out, not when its original did). Streams that negotiated
//! transport-wide feedback are left alone: there we estimate, and the 4 bytes buy nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;

use super::pass_through::PassThrough;

pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
pub(crate) const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// The send time as the extension carries it: seconds in 6.18 fixed point, wrapping every 64 s
/// (only differences matter to the receiver).
fn abs_send_time(since_epoch: Duration) -> [u8; 3] {
    let fixed = (since_epoch.as_micros() << 18) / 1_000_000;
    let [_, _, _, _, _, _, _, _, _, _, _, _, _, high, middle, low] = fixed.to_be_bytes();
    [high, middle, low]
}

#[derive(Default)]
pub struct AbsSendTimeStamper {
    /// The instant the stamps count from: the first packet stamped.
    epoch: Option<Instant>,
    /// SSRC → the extension id its stream negotiated.
    streams: HashMap<u32, u8>,
    read_queue: PassThrough<TaggedPacket>,
    write_queue: PassThrough<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for AbsSendTimeStamper {
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

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(ref mut packet) = msg.message.packet
            && let Some(&id) = self.streams.get(&packet.header.ssrc)
        {
            let epoch = *self.epoch.get_or_insert(msg.now);
            let stamp = abs_send_time(msg.now.saturating_duration_since(epoch));
            // A packet whose extensions cannot take one more goes out unstamped: the
            // receiver's estimate misses one sample, nothing else.
            let _ = packet
                .header
                .set_extension(id, Bytes::copy_from_slice(&stamp));
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for AbsSendTimeStamper {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let negotiated = |uri: &str| {
            info.rtp_header_extensions
                .iter()
                .find(|extension| extension.uri == uri)
                .map(|extension| extension.id)
        };
        if negotiated(TRANSPORT_CC_URI).is_some() {
            return;
        }
        if let Some(id) = negotiated(ABS_SEND_TIME_URI).and_then(|id| u8::try_from(id).ok()) {
            tracing::debug!(ssrc = info.ssrc, id, "stamping abs-send-time");
            self.streams.insert(info.ssrc, id);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::rtp::packet::Packet as RtpPacket;
    use rtc::shared::TransportContext;

    fn stream(ssrc: u32, uris: &[(&str, u16)]) -> StreamInfo {
        StreamInfo {
            ssrc,
            rtp_header_extensions: uris
                .iter()
                .map(|(uri, id)| RTPHeaderExtension {
                    uri: (*uri).to_owned(),
                    id: *id,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn send(stamper: &mut AbsSendTimeStamper, ssrc: u32, now: Instant) -> RtpPacket {
        let mut packet = RtpPacket::default();
        packet.header.ssrc = ssrc;
        stamper
            .handle_write(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtp(packet)),
            })
            .expect("a pass-through never fails");
        match stamper.poll_write().map(|msg| msg.message.packet) {
            Some(Packet::Rtp(packet)) => packet,
            other => panic!("expected the RTP packet back, got {other:?}"),
        }
    }

    fn stamp_of(packet: &RtpPacket, id: u8) -> Option<u32> {
        packet
            .header
            .get_extension(id)
            .map(|raw| raw.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
    }

    #[test]
    fn stamps_the_send_time_in_six_point_eighteen_seconds() {
        assert_eq!(abs_send_time(Duration::ZERO), [0, 0, 0]);
        assert_eq!(abs_send_time(Duration::from_secs(1)), [0x04, 0, 0]);
        assert_eq!(abs_send_time(Duration::from_millis(250)), [0x01, 0, 0]);
        assert_eq!(
            abs_send_time(Duration::from_secs(64) + Duration::from_millis(250)),
            [0x01, 0, 0],
            "wraps every 64 s"
        );
    }

    #[test]
    fn stamps_only_streams_that_estimate_themselves() {
        let start = Instant::now();
        let mut stamper = AbsSendTimeStamper::default();
        stamper.bind_local_stream(&stream(1, &[(ABS_SEND_TIME_URI, 3)]));
        stamper.bind_local_stream(&stream(2, &[(ABS_SEND_TIME_URI, 3), (TRANSPORT_CC_URI, 5)]));
        stamper.bind_local_stream(&stream(3, &[]));

        assert_eq!(stamp_of(&send(&mut stamper, 1, start), 3), Some(0));
        let later = send(&mut stamper, 1, start + Duration::from_millis(500));
        assert_eq!(stamp_of(&later, 3), Some(0x02_0000), "half a second later");
        assert_eq!(
            stamp_of(&send(&mut stamper, 2, start), 3),
            None,
            "TWCC: we estimate"
        );
        assert_eq!(
            stamp_of(&send(&mut stamper, 3, start), 3),
            None,
            "not negotiated"
        );
        assert_eq!(
            stamp_of(&send(&mut stamper, 9, start), 3),
            None,
            "unknown SSRC"
        );

        stamper.unbind_local_stream(&stream(1, &[]));
        assert_eq!(stamp_of(&send(&mut stamper, 1, start), 3), None, "unbound");
    }
}
