//! The HTTP accept loop and its limits on connections before any authentication: how many are
//! served at once, in total and per source address, how long a client may take to send a
//! request's headers and to let a response be written, and how long one request may take.

use std::future::Future;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sluice_sfu::admission::{AddressSlot, PerAddress};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;
use tracing::{debug, warn};

/// Longest time a client may take to send a request's headers, counted from the accept (or
/// from the end of the previous response on a kept-alive connection). A socket that sends
/// nothing or half a request is closed then. The default of `header_read_timeout_ms`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time a write to a connection may make no progress (the client does not read: its
/// receive window and the kernel's send buffer are full). The connection is then reset, so a
/// client that requests a large response and never reads it holds nothing. Applies to
/// WebSockets too, whose own send deadline (5 s, `session/outbox.rs`) is shorter. The default
/// of `write_timeout_ms`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time the server works on one HTTP request before its response starts: a client that
/// sends headers and then half a body is answered `408 Request Timeout` (and closed). The
/// WebSocket upgrade answers at once; the session that follows is not bounded by it. The
/// default of `request_timeout_ms`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once (HTTP requests in progress, idle kept-alive sockets and
/// WebSockets alike); more are answered 503 and closed. Keep it below the process's file
/// descriptor limit minus the UDP sockets of the media plane. The default of `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Connections served at once from one source address (an IPv6 client: its /64); more are
/// answered 503 and closed. The default of `max_connections_per_address`.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;

/// What [`crate::server::Server`] allows a connection before it authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// See [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// See [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`DEFAULT_MAX_CONNECTIONS_PER_ADDRESS`].
    pub max_connections_per_address: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `stop` turns true (or its sender is
/// dropped); then asks every HTTP connection to finish its request and close, and returns once
/// they have. Upgraded connections (WebSockets) are not waited for: their sessions end on the
/// same `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let live = Live::new(limits);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Each connection task holds a receiver; all are gone once every task has ended.
    let (tasks_done, task_alive) = watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(%err, "HTTP accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let slot = match live.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                debug!(%peer, reason = %refusal, "connection refused");
                // Best effort and without waiting: a new socket's send buffer is empty.
                let _ = stream.try_write(REFUSAL);
                continue;
            }
        };
        let app = app.clone();
        let reset = ResetOnClose::default();
        let request_reset = reset.clone();
        let request_timeout = limits.request_timeout;
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(request_reset.clone());
            let response = app.clone().oneshot(request);
            async move {
                match tokio::time::timeout(request_timeout, response).await {
                    Ok(response) => response,
                    Err(_) => {
                        debug!(%peer, "request timed out");
                        Ok(request_timed_out())
                    }
                }
            }
        });
        let io = TokioIo::new(Counted {
            stream,
            _slot: slot,
            reset,
            write_timeout: limits.write_timeout,
            stalled: None,
        });
        let connection = http.serve_connection(io, service).with_upgrades();
        let mut stop = stop.clone();
        let alive = task_alive.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            debug!(%peer, %err, "HTTP connection ended");
                        }
                        break;
                    }
                    () = stopped(&mut stop), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(alive);
        });
    }
    drop(listener);
    drop(task_alive);
    tasks_done.closed().await;
}

/// The answer to a request that took longer than the request timeout (a body never finished).
fn request_timed_out() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::REQUEST_TIMEOUT,
        [(axum::http::header::CONNECTION, "close")],
        "request timed out\n",
    )
        .into_response()
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// What a connection past a cap reads before the server closes it.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n";

/// Pause after an accept error that is not about one connection (out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Errors that end only the connection being accepted.
fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("too many connections")]
    Total,
    #[error("too many connections from this address")]
    PerAddress,
}

/// The live connections, in total and per source address.
#[derive(Debug)]
struct Live {
    total: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
}

impl Live {
    fn new(limits: ConnectionLimits) -> Self {
        Self {
            total: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            per_address: PerAddress::new(limits.max_connections_per_address),
        }
    }

    /// A slot for a connection from `ip`, held until the connection is dropped.
    fn admit(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let address = self.per_address.admit(ip).ok_or(Refusal::PerAddress)?;
        let total = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| Refusal::Total)?;
        Ok(Slot {
            _total: total,
            _address: address,
        })
    }
}

/// One admitted connection; dropping it frees its places.
#[derive(Debug)]
struct Slot {
    _total: OwnedSemaphorePermit,
    _address: AddressSlot,
}

/// A TCP stream holding its connection's [`Slot`]: the slot follows the stream into an upgraded
/// WebSocket, so a connection counts for as long as its socket is open.
struct Counted {
    stream: TcpStream,
    _slot: Slot,
    reset: ResetOnClose,
    /// See [`ConnectionLimits::write_timeout`].
    write_timeout: Duration,
    /// Since when writes make no progress: running while a write is pending.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Counted {
    /// Tracks a write's progress: a ready write clears the stall timer; a pending one starts it
    /// (once) and fails with `TimedOut` when it expires, marking the connection for a reset.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.write_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.reset.arm();
            return Poll::Ready(Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "the client does not read",
            )));
        }
        Poll::Pending
    }
}

impl Drop for Counted {
    /// A connection marked for reset closes with RST: the kernel frees its unsent data at once
    /// instead of keeping it for a peer that does not read.
    fn drop(&mut self) {
        if self.reset.0.load(Ordering::Relaxed) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

/// Set on a connection (a request extension, which follows it into an upgraded WebSocket) to
/// close it with RST rather than FIN once it is dropped: for a peer that stopped reading, whose
/// unsent data would otherwise stay in the kernel until TCP gives up on it.
#[derive(Clone, Debug, Default)]
pub struct ResetOnClose(Arc<AtomicBool>);

impl ResetOnClose {
    /// Marks the connection: its close will be a reset.
    pub fn arm(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn live(total: usize, per_address: usize) -> Live {
        Live::new(ConnectionLimits {
            max_connections: total,
            max_connections_per_address: per_address,
            ..ConnectionLimits::default()
        })
    }

    #[test]
    fn caps_count_live_connections() {
        let live = live(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = live.admit(a).unwrap();
        let _second = live.admit(a).unwrap();
        assert_eq!(live.admit(a).unwrap_err(), Refusal::PerAddress);
        let _third = live.admit(b).unwrap();
        assert_eq!(live.admit(b).unwrap_err(), Refusal::Total);
        drop(first);
        let _again = live.admit(a).unwrap();
        assert_eq!(live.total.available_permits(), 0);
    }

    #[test]
    fn slots_are_freed() {
        let live = live(10, 10);
        let slots: Vec<_> = (0..5)
            .map(|i| live.admit(IpAddr::from([10, 0, 0, i])).unwrap())
            .collect();
        assert_eq!(live.total.available_permits(), 5);
        drop(slots);
        assert_eq!(live.total.available_permits(), 10);
        assert_eq!(live.per_address.addresses(), 0);
    }

    #[test]
    fn refused_by_the_total_frees_its_address_place() {
        let live = live(1, 5);
        let _held = live.admit(IpAddr::from([10, 0, 0, 1])).unwrap();
        assert_eq!(
            live.admit(IpAddr::from([10, 0, 0, 2])).unwrap_err(),
            Refusal::Total
        );
        assert_eq!(live.per_address.addresses(), 1);
    }

    /// How the client sees the server's end of a connection dropped with `reset` armed or not.
    async fn client_sees_drop(armed: bool) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut client = TcpStream::connect(listener.local_addr()?).await?;
        let (stream, peer) = listener.accept().await?;
        let live = live(4, 4);
        let reset = ResetOnClose::default();
        if armed {
            reset.arm();
        }
        drop(Counted {
            stream,
            _slot: live.admit(peer.ip()).unwrap(),
            reset,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            stalled: None,
        });
        let mut buf = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the client sees the drop")
    }

    /// The accept loop on a free port with `limits`, serving a 32 MiB `GET /big` and a
    /// `POST /upload` that reads its body.
    async fn serve_test_app(
        limits: ConnectionLimits,
    ) -> (std::net::SocketAddr, watch::Sender<bool>) {
        use axum::routing::{get, post};
        let app = Router::new()
            .route("/big", get(|| async { vec![b'x'; BIG_BODY] }))
            .route(
                "/upload",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, app, limits, stopped));
        (addr, stop)
    }

    const BIG_BODY: usize = 32 << 20;

    /// A client that requests a large response and never reads it: the server gives up on the
    /// connection (reset) once its writes made no progress for the write timeout, instead of
    /// holding it (and the response) for as long as the client likes.
    #[tokio::test]
    async fn a_client_that_never_reads_a_large_response_is_reset_at_the_write_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let write_timeout = Duration::from_secs(1);
        let (addr, _stop) = serve_test_app(ConnectionLimits {
            write_timeout,
            ..ConnectionLimits::default()
        })
        .await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut client = socket.connect(addr).await.unwrap();
        client
            .write_all(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        // The client does not read for three write timeouts.
        tokio::time::sleep(write_timeout * 3).await;
        let started = std::time::Instant::now();
        let mut received = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match client.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => received += n,
                    Err(err) => return Err(err.kind()),
                }
            }
        })
        .await;
        let end = end.expect("the server closed the connection (it held it open instead)");
        assert!(
            received < BIG_BODY,
            "the whole response arrived ({received} bytes): nothing gave up on the client"
        );
        eprintln!(
            "write timeout: {received} bytes had been sent before the reset ({end:?}); read in {:?}",
            started.elapsed()
        );
    }

    /// Headers sent in full, then half the body, then nothing: the request timeout answers
    /// 408 and closes, so the handler does not wait for the body forever.
    #[tokio::test]
    async fn a_half_sent_body_is_answered_408_at_the_request_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request_timeout = Duration::from_secs(1);
        let (addr, _stop) = serve_test_app(ConnectionLimits {
            request_timeout,
            ..ConnectionLimits::default()
        })
        .await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        client
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n0123456789",
            )
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("answered and closed within 5 s")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(started.elapsed() >= request_timeout);
        // A whole body is served as before.
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\n3"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn an_armed_connection_closes_with_a_reset() {
        let err = client_sees_drop(true).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
        // Unarmed: an ordinary close.
        assert_eq!(client_sees_drop(false).await.unwrap(), 0);
    }
}
