//! Webhooks: the server-wide events ([`ServerEvent`]) POSTed as JSON to the application's
//! receivers (`--webhook-url`), each signed with the server secret so a receiver can tell them
//! from forgeries: header `Sluice-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">`.
//!
//! Delivery never slows the media plane: the runtime's broadcast channel drops for a listener
//! that falls behind, and each receiver has its own bounded queue ([`QUEUE`], the oldest event
//! dropped first) drained by one task, in order. A delivery that fails (a transport error or a
//! status outside 2xx) is retried [`ATTEMPTS`] times in all with doubling backoff, then
//! dropped. Drops are logged and counted ([`WebhookCounters`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sluice_sfu::runtime::{ServerEvent, Sfu};
use tokio::sync::{Notify, broadcast};
use tracing::{debug, warn};

use crate::protocol::{ParticipantInfo, PublicationInfo};
use crate::secret::Secret;

/// Events waiting per receiver; past it the oldest is dropped.
pub const QUEUE: usize = 1024;
/// Tries per event and receiver.
pub const ATTEMPTS: u32 = 5;
/// The wait before the first retry; doubled before each next one.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// How long one POST may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The signature header.
pub const SIGNATURE_HEADER: &str = "sluice-signature";

/// What the webhooks have done since the start.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    pub delivered: AtomicU64,
    /// Given up after [`ATTEMPTS`] tries.
    pub failed: AtomicU64,
    /// Dropped unsent: a full queue, or the runtime's channel ran ahead.
    pub dropped: AtomicU64,
}

/// One webhook's body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody {
    /// Unique per event (the same across retries and receivers), 128 random bits in hex.
    pub id: String,
    /// `roomStarted`, `roomFinished`, `participantJoined`, `participantLeft`,
    /// `publicationAdded`, `publicationRemoved`, `ingestStarted` or `ingestEnded`.
    pub event: &'static str,
    /// When the server saw it, milliseconds since the Unix epoch.
    pub created_at: u64,
    pub room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publication: Option<PublicationInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestInfo>,
}

/// Which ingest started or ended.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestInfo {
    /// `rtmp`, `rtsp` or `whip`.
    pub kind: &'static str,
    pub identity: String,
}

impl WebhookBody {
    fn of(event: ServerEvent) -> Self {
        let mut body = Self {
            id: format!("{:032x}", rand::random::<u128>()),
            event: "",
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            room: String::new(),
            participant: None,
            publication: None,
            ingest: None,
        };
        match event {
            ServerEvent::RoomStarted { room } => (body.event, body.room) = ("roomStarted", room),
            ServerEvent::RoomFinished { room } => (body.event, body.room) = ("roomFinished", room),
            ServerEvent::ParticipantJoined { room, participant } => {
                (body.event, body.room) = ("participantJoined", room);
                body.participant = Some(participant.into());
            }
            ServerEvent::ParticipantLeft { room, participant } => {
                (body.event, body.room) = ("participantLeft", room);
                body.participant = Some(participant.into());
            }
            ServerEvent::PublicationAdded { room, publication } => {
                (body.event, body.room) = ("publicationAdded", room);
                body.publication = Some(publication.into());
            }
            ServerEvent::PublicationRemoved { room, publication } => {
                (body.event, body.room) = ("publicationRemoved", room);
                body.publication = Some(publication.into());
            }
            ServerEvent::IngestStarted {
                room,
                identity,
                kind,
            } => {
                (body.event, body.room) = ("ingestStarted", room);
                body.ingest = Some(IngestInfo {
                    kind: kind.as_str(),
                    identity,
                });
            }
            ServerEvent::IngestEnded {
                room,
                identity,
                kind,
            } => {
                (body.event, body.room) = ("ingestEnded", room);
                body.ingest = Some(IngestInfo {
                    kind: kind.as_str(),
                    identity,
                });
            }
        }
        body
    }
}

/// The `Sluice-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex_hmac(secret, timestamp, body))
}

/// Whether `header` is a valid signature of `body` under `secret` (what a receiver checks;
/// it should also refuse a timestamp too far from its clock, against replays).
pub fn verify(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let Some(bytes) = decode_hex(signature) else {
        return false;
    };
    mac.verify_slice(&bytes).is_ok()
}

fn hex_hmac(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One receiver's queue, shared by the fan-out and its delivery task.
struct Outbox {
    queue: std::sync::Mutex<VecDeque<Arc<Vec<u8>>>>,
    ready: Notify,
}

impl Outbox {
    fn push(&self, body: Arc<Vec<u8>>, counters: &WebhookCounters, url: &url::Url) {
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if queue.len() >= QUEUE {
            queue.pop_front();
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            warn!(%url, "webhook queue full: the oldest event dropped");
        }
        queue.push_back(body);
        drop(queue);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Arc<Vec<u8>>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
    }
}

/// Starts delivering `sfu`'s events to `urls`; the tasks end with the runtime's channel.
pub fn start(sfu: &Sfu, urls: Vec<url::Url>, secret: Secret) -> Arc<WebhookCounters> {
    let counters = Arc::new(WebhookCounters::default());
    if urls.is_empty() {
        return counters;
    }
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(client) => client,
        Err(err) => {
            warn!(%err, "webhooks disabled: no HTTP client");
            return counters;
        }
    };
    let secret = Arc::new(secret);
    let outboxes: Vec<(url::Url, Arc<Outbox>)> = urls
        .into_iter()
        .map(|url| {
            let outbox = Arc::new(Outbox {
                queue: std::sync::Mutex::new(VecDeque::new()),
                ready: Notify::new(),
            });
            tokio::spawn(deliver(
                client.clone(),
                url.clone(),
                Arc::clone(&outbox),
                Arc::clone(&secret),
                Arc::clone(&counters),
            ));
            (url, outbox)
        })
        .collect();
    let mut events = sfu.server_events();
    let fan_out_counters = Arc::clone(&counters);
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    fan_out_counters
                        .dropped
                        .fetch_add(missed, Ordering::Relaxed);
                    warn!(missed, "webhooks fell behind the server's events");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Ok(body) = serde_json::to_vec(&WebhookBody::of(event)) else {
                continue;
            };
            let body = Arc::new(body);
            for (url, outbox) in &outboxes {
                outbox.push(Arc::clone(&body), &fan_out_counters, url);
            }
        }
    });
    counters
}

/// Drains one receiver's queue in order, retrying each event before the next.
async fn deliver(
    client: reqwest::Client,
    url: url::Url,
    outbox: Arc<Outbox>,
    secret: Arc<Secret>,
    counters: Arc<WebhookCounters>,
) {
    loop {
        let Some(body) = outbox.pop() else {
            outbox.ready.notified().await;
            continue;
        };
        let mut backoff = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            let timestamp = crate::auth::unix_now();
            let signature = sign(secret.as_bytes(), timestamp, &body);
            let sent = client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature)
                .body(body.as_ref().clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                outcome => {
                    let why = match outcome {
                        Ok(response) => format!("status {}", response.status()),
                        Err(err) => err.to_string(),
                    };
                    if attempt == ATTEMPTS {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        warn!(%url, %why, attempts = ATTEMPTS, "webhook not delivered; dropped");
                        break;
                    }
                    debug!(%url, %why, attempt, "webhook failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_same_secret_and_body() {
        let header = sign(b"secret-0123456789", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify(b"secret-0123456789", &header, b"{\"a\":1}"));
        assert!(!verify(b"another-secret-012", &header, b"{\"a\":1}"));
        assert!(!verify(b"secret-0123456789", &header, b"{\"a\":2}"));
        let moved = header.replace("t=1700000000", "t=1700000001");
        assert!(!verify(b"secret-0123456789", &moved, b"{\"a\":1}"));
        for junk in ["", "t=1", "v1=00", "t=x,v1=zz", "t=1,v1=0"] {
            assert!(!verify(b"secret-0123456789", junk, b""), "{junk:?}");
        }
    }
}
