//! Webhooks against a local receiver that checks every signature: a participant who joins,
//! publishes and leaves produces roomStarted, participantJoined, publicationAdded,
//! publicationRemoved, participantLeft and roomFinished, in order, each signed with the
//! server secret; a delivery the receiver refuses (500) is retried with the same event id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use sluice_e2e::{SECRET, TestServer, init_tracing};
use sluice_signaling::protocol::{ClientMessage, ServerMessage};
use sluice_signaling::webhooks::{SIGNATURE_HEADER, verify};
use tokio::sync::mpsc;

use crate::operations::publish_video;

/// Bound on every wait.
const WAIT: Duration = Duration::from_secs(20);

/// What the receiver saw: each request's body, whether its signature verified, and the
/// status it answered.
#[derive(Clone)]
struct Receiver {
    seen: mpsc::UnboundedSender<(Value, bool, u16)>,
    /// Requests so far; the first is refused with 500.
    count: Arc<Mutex<u32>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signed = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|header| verify(SECRET.as_bytes(), header, &body));
    let status = {
        let mut count = receiver
            .count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *count += 1;
        if *count == 1 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    };
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = receiver.seen.send((value, signed, status.as_u16()));
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_lifecycle_reaches_the_receiver_signed_and_in_order() -> Result<()> {
    init_tracing();
    let (seen, mut received) = mpsc::unbounded_channel();
    let receiver = Receiver {
        seen,
        count: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let url = url::Url::parse(&hook)?;
    let server = TestServer::start_with(|config| config.webhook_urls = vec![url]).await?;
    let (mut signal, peer) = publish_video(&server).await?;
    let request_id = signal.next_id();
    let left = signal.request(ClientMessage::Leave { request_id }).await?;
    ensure!(matches!(left, ServerMessage::Ok { .. }), "{left:?}");
    drop(peer);

    let expected = [
        "roomStarted",
        "participantJoined",
        "publicationAdded",
        "publicationRemoved",
        "participantLeft",
        "roomFinished",
    ];
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    while accepted.len() < expected.len() {
        let (body, signed, status) = tokio::time::timeout(WAIT, received.recv())
            .await
            .context("webhooks stopped arriving")?
            .context("receiver gone")?;
        ensure!(signed, "a webhook without a valid signature: {body}");
        ensure!(body["room"] == "ops", "{body}");
        if status == 200 {
            accepted.push(body);
        } else {
            refused.push(body);
        }
    }
    let events: Vec<&str> = accepted
        .iter()
        .filter_map(|body| body["event"].as_str())
        .collect();
    ensure!(events == expected, "events in order: {events:?}");
    ensure!(
        refused.len() == 1 && refused[0]["id"] == accepted[0]["id"],
        "the refused delivery is retried with the same id: refused {refused:?}"
    );
    ensure!(
        accepted[1]["participant"]["identity"] == "publisher",
        "{}",
        accepted[1]
    );
    ensure!(
        accepted[2]["publication"]["kind"] == "video"
            && accepted[2]["publication"]["publicationId"]
                == accepted[3]["publication"]["publicationId"],
        "{} {}",
        accepted[2],
        accepted[3]
    );
    let ids: std::collections::HashSet<&str> =
        accepted.iter().filter_map(|b| b["id"].as_str()).collect();
    ensure!(ids.len() == accepted.len(), "every event has its own id");
    Ok(())
}
