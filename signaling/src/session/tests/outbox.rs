//! Clients that read slowly or never: the bounded outbox and the send deadline.

use super::*;

/// A client that never reads: its end of the outgoing channel is held and never polled, so
/// every send to it waits forever once the channel's one slot is taken.
fn never_read() -> (mpsc::Sender<Outbound>, mpsc::Receiver<Outbound>) {
    mpsc::channel(0)
}

/// Sends `pings` pings to a session whose client reads nothing until the session ends, then
/// returns every frame the client would have read, in order.
async fn frames_of_a_slow_reader(ctx: SessionContext, pings: u32) -> Vec<Outbound> {
    let (to_session, incoming) = mpsc::unbounded();
    let (outgoing, mut unread) = never_read();
    let session = tokio::spawn(run(ctx, incoming, outgoing));
    for request_id in 0..pings {
        let ping = serde_json::to_string(&ClientMessage::Ping { request_id }).unwrap();
        to_session.unbounded_send(Inbound::Text(ping)).unwrap();
    }
    let mut frames = Vec::new();
    while let Some(frame) = tokio::time::timeout(WAIT, unread.next()).await.unwrap() {
        frames.push(frame);
    }
    tokio::time::timeout(WAIT, session).await.unwrap().unwrap();
    frames
}

#[tokio::test]
async fn a_client_that_never_reads_cannot_stall_its_session() {
    let ctx = SessionContext {
        join_timeout: Duration::from_millis(200),
        send_deadline: Duration::from_millis(300),
        ..context(1000)
    };
    let (to_session, incoming) = mpsc::unbounded();
    let (outgoing, _unread) = never_read();
    for request_id in 0..50 {
        let ping = serde_json::to_string(&ClientMessage::Ping { request_id }).unwrap();
        to_session.unbounded_send(Inbound::Text(ping)).unwrap();
    }
    let started = tokio::time::Instant::now();
    let stalled = std::sync::atomic::AtomicBool::new(false);
    let on_stall = || stalled.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::timeout(
        Duration::from_secs(8),
        run_with_stall(ctx, incoming, outgoing, on_stall),
    )
    .await
    .expect("the session ends although its client never reads");
    // The first stalled send ends it at the send deadline, before the join timeout matters,
    // and the server is told (it resets the connection).
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "ended after {took:?}");
    assert!(stalled.load(std::sync::atomic::Ordering::Relaxed));
}

#[tokio::test]
async fn a_client_that_reads_too_slowly_is_closed_when_its_queue_fills() {
    // A deadline far away: the full queue, not the deadline, must end it.
    let ctx = SessionContext {
        outbound_queue: 8,
        send_deadline: Duration::from_secs(60),
        ..context(1000)
    };
    // The client wakes up: the close frame was put ahead of the queued answers.
    let frames = frames_of_a_slow_reader(ctx, 20).await;
    let Some(Outbound::Close { code, reason }) = frames.last() else {
        panic!("no close frame last: {frames:?}");
    };
    assert_eq!(
        (*code, reason.as_str()),
        (
            CLOSE_POLICY,
            "outbound queue full: the client does not read"
        )
    );
    // Only what the writer held when the queue filled came before it.
    assert!(frames.len() <= 3, "{frames:?}");
}

#[tokio::test]
async fn a_client_that_reads_too_slowly_is_closed_when_its_queued_bytes_fill() {
    // Room for 256 frames but 200 bytes: a few answers fill it.
    let ctx = SessionContext {
        outbound_bytes: 200,
        send_deadline: Duration::from_secs(60),
        ..context(1000)
    };
    let frames = frames_of_a_slow_reader(ctx, 20).await;
    assert!(
        matches!(frames.last(), Some(Outbound::Close { code: CLOSE_POLICY, reason }) if reason == "outbound queue full: the client does not read"),
        "{frames:?}"
    );
    // Only what fit in 200 bytes (`{"type":"ok","requestId":N}` is 27) came before it.
    assert!(frames.len() <= 9, "{frames:?}");
}
