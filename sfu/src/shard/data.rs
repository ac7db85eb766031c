//! Data messages between the participants of a room (docs/protocol.md, "Data messages"): the
//! envelope on Sluice's two data channels, each sender's size and rate limits, and the routing
//! from one participant's publisher connection to the others'.
//!
//! A message on a channel is one binary SCTP message: a version byte, a big-endian `u16`
//! header length, a JSON header and the payload. A sender's header names its `topic`, the
//! identities it is `to` (all of the room when absent) and whether the payload is `text`; the
//! shard rewrites it for recipients with who it is `from`. The payload is never parsed.

use std::collections::BTreeSet;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use rtc::data_channel::{RTCDataChannelId, RTCDataChannelMessage};
use rtc::peer_connection::event::RTCDataChannelEvent;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::ShardEvent;
use super::peer::PeerKey;
use super::worker::Worker;
use crate::core::ParticipantId;

/// The label of the ordered, reliable channel.
pub const RELIABLE_LABEL: &str = "sluice-reliable";
/// The label of the unordered channel without retransmissions.
pub const LOSSY_LABEL: &str = "sluice-lossy";
/// The envelope's version byte.
pub const ENVELOPE_VERSION: u8 = 1;
/// Longest topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 128;
/// Most identities one message may name.
pub const MAX_DESTINATIONS: usize = 64;
/// Bytes a recipient's channel may hold unacknowledged before messages to it are dropped: a
/// client that never reads must not grow the server's memory.
const RECIPIENT_BACKLOG: usize = 1 << 20;
/// A sender hears of rejected messages at most this often; those refused in between are
/// counted into the next report, which the shard's periodic pass sends if no rejection does.
const REJECTION_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// What one participant may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLimits {
    /// Largest message (envelope included), in bytes.
    pub max_message_bytes: usize,
    /// Messages per second, with a burst of one second's worth.
    pub messages_per_second: u32,
}

impl Default for DataLimits {
    fn default() -> Self {
        // 15 KiB is what every browser's SCTP stack sends and receives whole (larger messages
        // interleave badly with other channels on the association).
        Self {
            max_message_bytes: 15 * 1024,
            messages_per_second: 100,
        }
    }
}

/// Why a sender's message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataRejection {
    /// Over [`DataLimits::max_message_bytes`].
    TooLarge,
    /// Over [`DataLimits::messages_per_second`].
    RateLimited,
    /// Not a Sluice envelope (a text message, a bad version, header or topic).
    Invalid,
}

/// Which of Sluice's channels a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    Reliable,
    Lossy,
}

/// A connection's Sluice channels, once open.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DataChannels {
    pub(crate) reliable: Option<RTCDataChannelId>,
    pub(crate) lossy: Option<RTCDataChannelId>,
}

impl DataChannels {
    fn kind_of(&self, channel: RTCDataChannelId) -> Option<Reliability> {
        if self.reliable == Some(channel) {
            Some(Reliability::Reliable)
        } else if self.lossy == Some(channel) {
            Some(Reliability::Lossy)
        } else {
            None
        }
    }

    /// The channel for `kind`: a recipient without a lossy channel gets lossy messages on its
    /// reliable one.
    fn for_kind(&self, kind: Reliability) -> Option<RTCDataChannelId> {
        match kind {
            Reliability::Reliable => self.reliable,
            Reliability::Lossy => self.lossy.or(self.reliable),
        }
    }
}

/// The header a sender writes.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct SenderHeader {
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub to: Option<Vec<String>>,
    #[serde(default)]
    pub text: bool,
}

/// The header a recipient reads.
#[derive(Debug, Serialize)]
struct RecipientHeader<'a> {
    from: String,
    identity: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    text: bool,
}

/// Splits a sender's message into its header and payload, checking the header's bounds.
pub fn parse(message: &[u8]) -> Result<(SenderHeader, &[u8]), DataRejection> {
    let [version, high, low, rest @ ..] = message else {
        return Err(DataRejection::Invalid);
    };
    if *version != ENVELOPE_VERSION {
        return Err(DataRejection::Invalid);
    }
    let length = usize::from(u16::from_be_bytes([*high, *low]));
    if rest.len() < length {
        return Err(DataRejection::Invalid);
    }
    let (header, payload) = rest.split_at(length);
    let header: SenderHeader = if header.is_empty() {
        SenderHeader::default()
    } else {
        serde_json::from_slice(header).map_err(|_| DataRejection::Invalid)?
    };
    let topic_ok = header
        .topic
        .as_ref()
        .is_none_or(|topic| topic.len() <= MAX_TOPIC_BYTES);
    let to_ok = header
        .to
        .as_ref()
        .is_none_or(|to| !to.is_empty() && to.len() <= MAX_DESTINATIONS);
    if !topic_ok || !to_ok {
        return Err(DataRejection::Invalid);
    }
    Ok((header, payload))
}

/// The message recipients get: `payload` from `from` (`identity`), with its topic.
pub fn encode(
    from: ParticipantId,
    identity: &str,
    topic: Option<&str>,
    text: bool,
    payload: &[u8],
) -> BytesMut {
    let header = RecipientHeader {
        from: from.to_string(),
        identity,
        topic,
        text,
    };
    // Serializing a struct of strings and a bool cannot fail; an empty header would still
    // be a valid envelope.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let length = u16::try_from(header.len()).unwrap_or(0);
    let mut out = BytesMut::with_capacity(3 + header.len() + payload.len());
    out.put_u8(ENVELOPE_VERSION);
    out.put_u16(length);
    out.put_slice(&header[..usize::from(length)]);
    out.put_slice(payload);
    out
}

/// A token bucket of one second's worth of messages.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimit {
    pub(crate) fn new() -> Self {
        Self {
            tokens: f64::INFINITY,
            last: None,
        }
    }

    /// Takes one message's token; `false` when none is left.
    pub(crate) fn take(&mut self, per_second: u32, now: Instant) -> bool {
        let capacity = f64::from(per_second.max(1));
        let elapsed = self
            .last
            .map_or(f64::INFINITY, |last| now.duration_since(last).as_secs_f64());
        self.tokens = (self.tokens + elapsed * capacity).min(capacity);
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A member's data state on the shard: its limit and the rejections not yet reported.
#[derive(Debug, Clone)]
pub(crate) struct DataSender {
    pub(crate) rate: RateLimit,
    unreported: u32,
    last_reason: Option<DataRejection>,
    reported_at: Option<Instant>,
}

impl DataSender {
    pub(crate) fn new() -> Self {
        Self {
            rate: RateLimit::new(),
            unreported: 0,
            last_reason: None,
            reported_at: None,
        }
    }

    /// Counts a rejection; returns the event to tell the sender when one is due.
    fn reject(&mut self, reason: DataRejection, now: Instant) -> Option<ShardEvent> {
        self.unreported = self.unreported.saturating_add(1);
        self.last_reason = Some(reason);
        self.report(now)
    }

    /// The report of the rejections not yet told, if there are any and one is due.
    pub(crate) fn report(&mut self, now: Instant) -> Option<ShardEvent> {
        let due = self
            .reported_at
            .is_none_or(|at| now.duration_since(at) >= REJECTION_REPORT_INTERVAL);
        let reason = self.last_reason?;
        if !due || self.unreported == 0 {
            return None;
        }
        self.reported_at = Some(now);
        let dropped = std::mem::take(&mut self.unreported);
        Some(ShardEvent::DataRejected { reason, dropped })
    }
}

impl Worker {
    /// Tells senders of the rejections counted since their last report.
    pub(super) fn report_data_rejections(&mut self, now: Instant) {
        let reports: Vec<(ParticipantId, ShardEvent)> = self
            .members
            .iter_mut()
            .filter_map(|(id, member)| Some((*id, member.data.report(now)?)))
            .collect();
        for (participant, event) in reports {
            self.tell(participant, event);
        }
    }

    /// A data channel of a publisher connection opened or closed: Sluice's two channels are
    /// known by label; any other channel is closed.
    pub(super) fn on_data_channel(&mut self, key: PeerKey, event: RTCDataChannelEvent) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        match event {
            RTCDataChannelEvent::OnOpen(id) => {
                let Some(mut channel) = peer.pc.data_channel(id) else {
                    return;
                };
                match channel.label() {
                    RELIABLE_LABEL => peer.data.reliable = Some(id),
                    LOSSY_LABEL => peer.data.lossy = Some(id),
                    other => {
                        debug!(label = other, "closing a data channel Sluice does not use");
                        let _ = channel.close();
                    }
                }
            }
            RTCDataChannelEvent::OnClose(id) => {
                if peer.data.reliable == Some(id) {
                    peer.data.reliable = None;
                }
                if peer.data.lossy == Some(id) {
                    peer.data.lossy = None;
                }
            }
            _ => {}
        }
        self.mark_dirty(key);
    }

    /// Delivers a message from `key`'s channel to the others in its room (or those it names),
    /// or tells the sender why not.
    pub(super) fn route_data(
        &mut self,
        key: PeerKey,
        channel: RTCDataChannelId,
        message: RTCDataChannelMessage,
        now: Instant,
    ) {
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let Some(kind) = peer.data.kind_of(channel) else {
            return;
        };
        let sender = peer.participant;
        self.stats.data_received += 1;
        let limits = self.config.data;
        let Some(member) = self.members.get_mut(&sender) else {
            return;
        };
        let checked = if message.is_string {
            Err(DataRejection::Invalid)
        } else if message.data.len() > limits.max_message_bytes {
            Err(DataRejection::TooLarge)
        } else if !member.data.rate.take(limits.messages_per_second, now) {
            Err(DataRejection::RateLimited)
        } else {
            parse(&message.data)
        };
        let (header, payload) = match checked {
            Ok(parsed) => parsed,
            Err(reason) => {
                self.stats.data_rejected += 1;
                if let Some(event) = member.data.reject(reason, now) {
                    self.tell(sender, event);
                }
                return;
            }
        };
        let room = member.room;
        let delivered = encode(
            sender,
            &member.identity,
            header.topic.as_deref(),
            header.text,
            payload,
        );
        let named: Option<BTreeSet<&str>> = header
            .to
            .as_ref()
            .map(|to| to.iter().map(String::as_str).collect());
        let recipients: Vec<PeerKey> = self
            .rooms
            .get(&room)
            .map(|slot| {
                slot.participants
                    .iter()
                    .filter(|id| **id != sender)
                    .filter_map(|id| self.members.get(id))
                    .filter(|m| {
                        named
                            .as_ref()
                            .is_none_or(|named| named.contains(m.identity.as_str()))
                    })
                    .filter_map(|m| m.publisher)
                    .collect()
            })
            .unwrap_or_default();
        for recipient in recipients {
            self.deliver_data(recipient, kind, &delivered, now);
        }
    }

    fn deliver_data(&mut self, key: PeerKey, kind: Reliability, message: &BytesMut, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(id) = peer.data.for_kind(kind) else {
            return;
        };
        let Some(mut channel) = peer.pc.data_channel(id) else {
            return;
        };
        if channel.outstanding_bytes() > RECIPIENT_BACKLOG {
            self.stats.data_dropped += 1;
            return;
        }
        match channel.send(now, message.clone()) {
            Ok(()) => {
                self.stats.data_delivered += 1;
                self.mark_dirty(key);
            }
            Err(err) => {
                debug!(%err, "data message not sent");
                self.stats.data_dropped += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn envelope(header: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![ENVELOPE_VERSION];
        out.extend_from_slice(&u16::try_from(header.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_sender_envelope_gives_its_header_and_payload() {
        let message = envelope(r#"{"topic":"chat","to":["bob"],"text":true}"#, b"hi");
        let (header, payload) = parse(&message).expect("valid envelope");
        assert_eq!(header.topic.as_deref(), Some("chat"));
        assert_eq!(header.to, Some(vec!["bob".to_owned()]));
        assert!(header.text);
        assert_eq!(payload, b"hi");
        let bare = envelope("", b"\x00\x01");
        let (header, payload) = parse(&bare).expect("empty header");
        assert_eq!(header, SenderHeader::default());
        assert_eq!(payload, b"\x00\x01");
    }

    #[test]
    fn malformed_envelopes_are_invalid() {
        let long_topic = format!(r#"{{"topic":"{}"}}"#, "t".repeat(MAX_TOPIC_BYTES + 1));
        let many: Vec<String> = (0..=MAX_DESTINATIONS)
            .map(|i| format!("\"p{i}\""))
            .collect();
        let many = format!(r#"{{"to":[{}]}}"#, many.join(","));
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![ENVELOPE_VERSION, 0],
            vec![2, 0, 0],
            vec![ENVELOPE_VERSION, 0, 10, b'{'],
            envelope("{not json", b""),
            envelope(r#"{"topic":5}"#, b""),
            envelope(&long_topic, b""),
            envelope(r#"{"to":[]}"#, b""),
            envelope(&many, b""),
        ];
        for case in cases {
            assert_eq!(parse(&case).err(), Some(DataRejection::Invalid), "{case:?}");
        }
    }

    #[test]
    fn a_recipient_envelope_names_the_sender() {
        let message = encode(ParticipantId(7), "alice", Some("chat"), true, b"hello");
        let [version, high, low, rest @ ..] = &message[..] else {
            panic!("short envelope");
        };
        assert_eq!(*version, ENVELOPE_VERSION);
        let (header, payload) = rest.split_at(usize::from(u16::from_be_bytes([*high, *low])));
        let header: serde_json::Value = serde_json::from_slice(header).expect("json header");
        assert_eq!(header["from"], ParticipantId(7).to_string());
        assert_eq!(header["identity"], "alice");
        assert_eq!(header["topic"], "chat");
        assert_eq!(header["text"], true);
        assert_eq!(payload, b"hello");
        let plain = encode(ParticipantId(7), "alice", None, false, b"");
        assert!(!String::from_utf8_lossy(&plain).contains("topic"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_parse_or_are_invalid(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            if let Err(reason) = parse(&bytes) {
                proptest::prop_assert_eq!(reason, DataRejection::Invalid);
            }
        }

        #[test]
        fn arbitrary_headers_parse_or_are_invalid(header in ".{0,64}", payload in proptest::collection::vec(proptest::num::u8::ANY, 0..16)) {
            let message = envelope(&header, &payload);
            match parse(&message) {
                Ok((_, rest)) => proptest::prop_assert_eq!(rest, &payload[..]),
                Err(reason) => proptest::prop_assert_eq!(reason, DataRejection::Invalid),
            }
        }
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_the_rate() {
        let mut rate = RateLimit::new();
        let start = Instant::now();
        let burst = (0..20).filter(|_| rate.take(10, start)).count();
        assert_eq!(burst, 10);
        assert!(!rate.take(10, start + Duration::from_millis(50)));
        assert!(rate.take(10, start + Duration::from_millis(150)));
        let later = start + Duration::from_secs(10);
        let refilled = (0..20).filter(|_| rate.take(10, later)).count();
        assert_eq!(refilled, 10);
    }

    #[test]
    fn rejections_are_reported_at_most_every_interval_with_their_count() {
        let mut sender = DataSender::new();
        let start = Instant::now();
        assert_eq!(
            sender.reject(DataRejection::TooLarge, start),
            Some(ShardEvent::DataRejected {
                reason: DataRejection::TooLarge,
                dropped: 1
            })
        );
        for _ in 0..5 {
            assert_eq!(sender.reject(DataRejection::RateLimited, start), None);
        }
        let later = start + REJECTION_REPORT_INTERVAL;
        assert_eq!(
            sender.reject(DataRejection::RateLimited, later),
            Some(ShardEvent::DataRejected {
                reason: DataRejection::RateLimited,
                dropped: 6
            })
        );
        assert_eq!(sender.report(later + REJECTION_REPORT_INTERVAL), None);
    }

    #[test]
    fn rejections_held_back_are_reported_by_the_periodic_pass() {
        let mut sender = DataSender::new();
        let start = Instant::now();
        assert_eq!(sender.report(start), None);
        assert!(sender.reject(DataRejection::Invalid, start).is_some());
        assert_eq!(sender.reject(DataRejection::RateLimited, start), None);
        assert_eq!(sender.report(start + Duration::from_millis(100)), None);
        assert_eq!(
            sender.report(start + REJECTION_REPORT_INTERVAL),
            Some(ShardEvent::DataRejected {
                reason: DataRejection::RateLimited,
                dropped: 1
            })
        );
    }
}
