//! The subscriber leg's NACK responder: what it resends, for how long, and what it keeps.

use super::*;
use rtc::interceptor::RTCPFeedback;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::nack_pairs_from_sequence_numbers;

const SSRC: u32 = 7;

fn video(ssrc: u32, nack: bool) -> StreamInfo {
    StreamInfo {
        ssrc,
        rtcp_feedback: nack
            .then(|| RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: String::new(),
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

fn responder() -> NackResponder {
    let mut responder = NackResponder::default();
    responder.bind_local_stream(&video(SSRC, true));
    responder
}

fn rtp(now: Instant, ssrc: u32, sequence_number: u16) -> TaggedPacket {
    let mut packet = rtp::Packet::default();
    packet.header.version = 2;
    packet.header.ssrc = ssrc;
    packet.header.sequence_number = sequence_number;
    packet.header.timestamp = u32::from(sequence_number) * 3_000;
    packet.payload = bytes::Bytes::from(sequence_number.to_be_bytes().to_vec());
    TaggedPacket {
        now,
        transport: TransportContext::default(),
        message: AttributedPacket::new(Packet::Rtp(packet)),
    }
}

fn nack(now: Instant, ssrc: u32, sequence_numbers: &[u16]) -> TaggedPacket {
    let nack: Box<dyn rtc::rtcp::Packet> = Box::new(TransportLayerNack {
        sender_ssrc: 1,
        media_ssrc: ssrc,
        nacks: nack_pairs_from_sequence_numbers(sequence_numbers),
    });
    TaggedPacket {
        now,
        transport: TransportContext::default(),
        message: AttributedPacket::new(Packet::Rtcp(vec![nack])),
    }
}

/// Sends `sequence_numbers` on `ssrc` at `now` and drains them.
fn send(responder: &mut NackResponder, now: Instant, ssrc: u32, sequence_numbers: &[u16]) {
    for &seq in sequence_numbers {
        responder
            .handle_write(rtp(now, ssrc, seq))
            .expect("the responder never fails");
    }
    while responder.poll_write().is_some() {}
}

/// The sequence numbers resent for `nack`, each checked to be marked a retransmission and to
/// carry the packet it names.
fn resent(responder: &mut NackResponder, nack: TaggedPacket) -> Vec<u16> {
    responder
        .handle_read(nack)
        .expect("the responder never fails");
    assert!(
        responder.poll_read().is_some(),
        "the NACK goes on to the feedback reader"
    );
    std::iter::from_fn(|| responder.poll_write())
        .map(|msg| {
            assert!(msg.message.has(&Attribute::Retransmission));
            let Packet::Rtp(packet) = msg.message.packet else {
                panic!("a retransmission is RTP");
            };
            let seq = packet.header.sequence_number;
            assert_eq!(packet.header.ssrc, SSRC, "resent on the media SSRC");
            assert_eq!(packet.header.timestamp, u32::from(seq) * 3_000);
            assert_eq!(&packet.payload[..], seq.to_be_bytes());
            seq
        })
        .collect()
}

#[test]
fn a_nacked_packet_is_resent_as_it_was_sent() {
    let now = Instant::now();
    let mut responder = responder();
    send(&mut responder, now, SSRC, &[100, 101, 102, 103]);
    let later = now + Duration::from_millis(300);
    assert_eq!(
        resent(&mut responder, nack(later, SSRC, &[101, 103, 104])),
        vec![101, 103],
        "104 was never sent"
    );
}

#[test]
fn packets_older_than_the_horizon_are_not_resent() {
    let now = Instant::now();
    let mut responder = responder();
    send(&mut responder, now, SSRC, &[1, 2]);
    let later = now + Duration::from_millis(600);
    send(&mut responder, later, SSRC, &[3]);
    let past = now + RESEND_HORIZON + Duration::from_millis(1);
    assert_eq!(
        resent(&mut responder, nack(past, SSRC, &[1, 2, 3])),
        vec![3]
    );
}

#[test]
fn only_streams_that_negotiated_nack_are_kept() {
    let now = Instant::now();
    let mut responder = responder();
    responder.bind_local_stream(&video(8, false));
    send(&mut responder, now, 8, &[5]);
    send(&mut responder, now, 9, &[5]);
    assert!(resent(&mut responder, nack(now, 8, &[5])).is_empty());
    assert!(resent(&mut responder, nack(now, 9, &[5])).is_empty());
    assert!(!responder.streams.contains_key(&8));
}

#[test]
fn lookups_hold_across_the_wrap_and_gaps_in_numbering() {
    let now = Instant::now();
    let mut responder = responder();
    send(
        &mut responder,
        now,
        SSRC,
        &[65_533, 65_534, 65_535, 0, 1, 4, 5, 9],
    );
    assert_eq!(
        resent(
            &mut responder,
            nack(now, SSRC, &[65_532, 65_534, 0, 2, 4, 5, 9, 10])
        ),
        vec![65_534, 0, 4, 5, 9]
    );
}

#[test]
fn numbering_that_goes_back_starts_the_history_afresh() {
    let now = Instant::now();
    let mut responder = responder();
    send(&mut responder, now, SSRC, &[500, 501, 501, 502]);
    assert_eq!(
        responder.streams[&SSRC].packets.len(),
        3,
        "a repeat is kept once"
    );
    send(&mut responder, now, SSRC, &[10, 11]);
    assert_eq!(
        resent(&mut responder, nack(now, SSRC, &[501, 502, 10, 11])),
        vec![10, 11]
    );
}

#[test]
fn a_stream_holds_at_most_its_cap() {
    let now = Instant::now();
    let mut responder = responder();
    let sent: Vec<u16> = (0..=u16::try_from(MAX_PACKETS_PER_STREAM).expect("fits")).collect();
    send(&mut responder, now, SSRC, &sent);
    let first_two = &sent[..2];
    assert_eq!(resent(&mut responder, nack(now, SSRC, first_two)), vec![1]);
    assert_eq!(
        responder.streams[&SSRC].packets.len(),
        MAX_PACKETS_PER_STREAM
    );
}

#[test]
fn a_stream_that_stops_gives_its_memory_back() {
    let now = Instant::now();
    let mut responder = responder();
    let burst: Vec<u16> = (0..600).collect();
    send(&mut responder, now, SSRC, &burst);
    assert!(responder.streams[&SSRC].packets.capacity() >= 600);
    let later = now + RESEND_HORIZON + Duration::from_millis(1);
    responder
        .handle_timeout(later)
        .expect("the responder never fails");
    let stream = &responder.streams[&SSRC];
    assert!(stream.packets.is_empty());
    assert!(
        stream.packets.capacity() <= 2 * MIN_CAPACITY,
        "capacity {} kept for nothing",
        stream.packets.capacity()
    );
}

#[test]
fn an_unbound_stream_is_forgotten() {
    let now = Instant::now();
    let mut responder = responder();
    send(&mut responder, now, SSRC, &[1]);
    responder.unbind_local_stream(&video(SSRC, true));
    assert!(resent(&mut responder, nack(now, SSRC, &[1])).is_empty());
}

#[test]
fn a_resent_packet_equals_the_one_sent_with_or_without_extensions() {
    let now = Instant::now();
    let mut responder = responder();
    let plain = rtp(now, SSRC, 40);
    let mut extended = rtp(now, SSRC, 41);
    if let Packet::Rtp(packet) = &mut extended.message.packet {
        packet.header.marker = true;
        packet
            .header
            .set_extension(3, bytes::Bytes::from_static(&[0x01, 0x02, 0x03]))
            .expect("a one-byte extension");
    }
    let originals: Vec<rtp::Packet> = [&plain, &extended]
        .iter()
        .filter_map(|msg| match &msg.message.packet {
            Packet::Rtp(packet) => Some(packet.clone()),
            _ => None,
        })
        .collect();
    for msg in [plain, extended] {
        responder
            .handle_write(msg)
            .expect("the responder never fails");
    }
    while responder.poll_write().is_some() {}
    responder
        .handle_read(nack(now, SSRC, &[40, 41]))
        .expect("the responder never fails");
    let resent: Vec<rtp::Packet> = std::iter::from_fn(|| responder.poll_write())
        .filter_map(|msg| match msg.message.packet {
            Packet::Rtp(packet) => Some(packet),
            _ => None,
        })
        .collect();
    assert_eq!(resent, originals);
    let held = &responder.streams[&SSRC].packets;
    assert!(matches!(held[0].1, Held::Plain { .. }));
    assert!(matches!(held[1].1, Held::Whole(_)));
}

#[test]
fn a_plain_packet_is_held_in_56_bytes() {
    assert!(std::mem::size_of::<(Instant, Held)>() <= 56);
}
