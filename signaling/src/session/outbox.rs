//! The bounded outbound queue of one connection: the session hands frames over without ever
//! waiting, and a writer sends them to the socket, each within a deadline. A client that does
//! not read therefore cannot stall its session (its join timeout, its rate limit, the room's
//! events): its queue fills, or a send makes no progress for the deadline, and it is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{Sink, SinkExt};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::Outbound;
use crate::protocol::ServerMessage;

/// Frames a connection may have queued for its client before it is closed as not reading.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 256;
/// Bytes (of JSON text) a connection may have queued for its client before it is closed as
/// not reading.
pub const DEFAULT_OUTBOUND_BYTES: usize = 1024 * 1024;
/// How long one frame may take to reach the socket before the connection is dropped as not
/// reading.
pub const DEFAULT_SEND_DEADLINE: Duration = Duration::from_secs(5);

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The queue is full: the client does not read what it is sent.
    Full,
    /// The writer stopped: the socket is gone or stalled past the deadline.
    Gone,
}

/// The session's end of the queue.
pub(super) struct Outbox {
    queue: mpsc::Sender<(Outbound, usize)>,
    /// JSON bytes queued and not yet written, shared with the writer.
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    /// Carries the close frame past a full queue.
    urgent: Option<oneshot::Sender<Outbound>>,
}

/// The writer's end of the queue.
pub(super) struct Writer {
    queue: mpsc::Receiver<(Outbound, usize)>,
    queued_bytes: Arc<AtomicUsize>,
    urgent: oneshot::Receiver<Outbound>,
    send_deadline: Duration,
}

/// A queue of `capacity` frames (at least one) and `max_bytes` of JSON text whose frames must
/// each reach the socket within `send_deadline`.
pub(super) fn channel(
    capacity: usize,
    max_bytes: usize,
    send_deadline: Duration,
) -> (Outbox, Writer) {
    let (queue_tx, queue) = mpsc::channel(capacity.max(1));
    let (urgent_tx, urgent) = oneshot::channel();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            queue: queue_tx,
            queued_bytes: Arc::clone(&queued_bytes),
            max_bytes,
            urgent: Some(urgent_tx),
        },
        Writer {
            queue,
            queued_bytes,
            urgent,
            send_deadline,
        },
    )
}

impl Outbox {
    /// Queues a message without waiting. Its size is its JSON text, measured here (signaling
    /// messages are few; serializing twice costs microseconds).
    pub(super) fn push(&mut self, message: ServerMessage) -> Result<(), Refused> {
        let size = serde_json::to_string(&message).map_or(0, |text| text.len());
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        if queued.saturating_add(size) > self.max_bytes && queued > 0 {
            return Err(Refused::Full);
        }
        self.queue
            .try_send((Outbound::Message(Box::new(message)), size))
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Gone,
            })?;
        self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    /// Queues the close frame after what is queued; when the queue is full, the close frame
    /// goes ahead of it and the queued frames are never sent.
    pub(super) fn close(&mut self, code: u16, reason: String) {
        match self.queue.try_send((Outbound::Close { code, reason }, 0)) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full((frame, _))) => {
                if let Some(urgent) = self.urgent.take() {
                    let _ = urgent.send(frame);
                }
            }
        }
    }
}

impl Writer {
    /// Sends the queued frames to `sink` until the session drops its [`Outbox`] (after the
    /// last frame), a send fails, or a send makes no progress for the deadline. The session
    /// sees the two last as [`Refused::Gone`]. `on_stall` runs when a send missed the
    /// deadline, before the sink is dropped.
    pub(super) async fn run<O: Sink<Outbound> + Unpin>(
        mut self,
        mut sink: O,
        on_stall: impl FnOnce(),
    ) {
        let mut urgent_open = true;
        loop {
            let (frame, last) = tokio::select! {
                biased;
                urgent = &mut self.urgent, if urgent_open => match urgent {
                    Ok(close) => (close, true),
                    Err(_) => {
                        urgent_open = false;
                        continue;
                    }
                },
                frame = self.queue.recv() => match frame {
                    Some((frame, size)) => {
                        self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                        (frame, false)
                    }
                    None => return,
                },
            };
            match tokio::time::timeout(self.send_deadline, sink.send(frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    debug!("socket closed under the writer");
                    return;
                }
                Err(_) => {
                    debug!(deadline = ?self.send_deadline, "client not reading: dropping the connection");
                    on_stall();
                    return;
                }
            }
            if last {
                return;
            }
        }
    }
}
