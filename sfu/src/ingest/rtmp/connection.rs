//! One RTMP connection, from the handshake to the end of its stream: reads with deadlines,
//! feeds the protocol, authorizes the publish, and hands media to the stream's room side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{Instrument, debug, info, info_span, warn};

use super::Shared;
use super::guard::contain;
use super::protocol::{ProtocolError, ProtocolEvent, RtmpProtocol};
use super::rml::RmlProtocol;
use crate::admission::AddressSlot;
use crate::core::{MediaKind, RtpPacket};
use crate::ingest::media::{MediaError, MediaPipeline, Origin};
use crate::ingest::stream_publisher::RoomStream;
use crate::runtime::RequestError;

const READ_BUFFER: usize = 64 * 1024;
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("the encoder stopped publishing")]
    Finished,
    #[error("the encoder closed the connection")]
    PeerClosed,
    #[error("server shutting down")]
    Shutdown,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("{0}")]
    Timeout(&'static str),
    #[error("publish refused: {0}")]
    Refused(&'static str),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("room: {0}")]
    Room(#[from] RequestError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

struct Connection {
    shared: Arc<Shared>,
    protocol: RmlProtocol,
    socket: TcpStream,
    /// Set once a publish was accepted.
    stream: Option<(RoomStream, MediaPipeline)>,
    /// This connection's place among those in setup from its address; released when the
    /// publish is accepted.
    setup: Option<AddressSlot>,
    packets: Vec<RtpPacket>,
}

/// How long a refused connection is drained before it is dropped.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

pub(super) async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    setup: AddressSlot,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = info_span!(
        "rtmp",
        %peer,
        room = tracing::field::Empty,
        identity = tracing::field::Empty
    );
    async move {
        let _ = socket.set_nodelay(true);
        let mut connection = Connection {
            protocol: RmlProtocol::new(shared.config.max_message_bytes),
            shared,
            socket,
            stream: None,
            setup: Some(setup),
            packets: Vec::new(),
        };
        let end = tokio::select! {
            end = connection.run() => end,
            _ = shutdown.wait_for(|stop| *stop) => End::Shutdown,
        };
        match &end {
            End::Finished | End::PeerClosed | End::Shutdown => {
                info!(reason = %end, "rtmp session ended")
            }
            _ => warn!(reason = %end, "rtmp session closed"),
        }
        if let Some((mut stream, media)) = connection.stream.take() {
            stream.park_media(media, std::time::Instant::now());
            let registry = Arc::clone(&connection.shared.registry);
            registry.release(stream, matches!(end, End::Finished | End::Shutdown));
        }
    }
    .instrument(span)
    .await
}

impl Connection {
    async fn run(&mut self) -> End {
        match self.drive().await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    /// Runs until the connection ends; the `Err` says why.
    async fn drive(&mut self) -> Result<std::convert::Infallible, End> {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut events = Vec::new();
        let accepted = Instant::now();
        let handshake_deadline = accepted + self.shared.config.handshake_timeout;
        let setup_deadline = accepted + self.shared.config.setup_timeout;
        loop {
            let read = if self.stream.is_some() {
                timeout(self.shared.config.idle_timeout, self.socket.read(&mut buf))
                    .await
                    .map_err(|_| End::Timeout("no data from the encoder within the idle timeout"))?
            } else if !self.protocol.handshake_done() {
                timeout_at(handshake_deadline, self.socket.read(&mut buf))
                    .await
                    .map_err(|_| End::Timeout("no RTMP handshake within the handshake timeout"))?
            } else {
                timeout_at(setup_deadline, self.socket.read(&mut buf))
                    .await
                    .map_err(|_| End::Timeout("no publish within the setup timeout"))?
            };
            let n = read?;
            if n == 0 {
                return Err(End::PeerClosed);
            }
            events.clear();
            self.protocol
                .handle_input(&buf[..n], self.stream.is_some(), &mut events)?;
            for event in events.drain(..) {
                self.handle(event).await?;
            }
        }
    }

    async fn handle(&mut self, event: ProtocolEvent) -> Result<(), End> {
        match event {
            ProtocolEvent::Send(bytes) => self.write(&bytes).await,
            ProtocolEvent::PublishRequested {
                request,
                app,
                stream_key,
            } => self.publish(request, &app, &stream_key).await,
            ProtocolEvent::PlayRequested { request } => {
                self.refuse(
                    request,
                    "NetStream.Play.Failed",
                    "Sluice does not play RTMP; watch over WebRTC",
                    "play requested (Sluice only ingests)",
                )
                .await
            }
            ProtocolEvent::Video { timestamp_ms, data } => {
                self.media(MediaKind::Video, timestamp_ms, &data).await
            }
            ProtocolEvent::Audio { timestamp_ms, data } => {
                self.media(MediaKind::Audio, timestamp_ms, &data).await
            }
            ProtocolEvent::PublishFinished => Err(End::Finished),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        timeout(WRITE_TIMEOUT, self.socket.write_all(bytes))
            .await
            .map_err(|_| End::Timeout("the encoder does not read what we send"))?
            .map_err(End::Io)
    }

    /// Answers a publish request: the application must be ours, the key known, the target
    /// not live already.
    async fn publish(&mut self, request: u32, app: &str, key: &str) -> Result<(), End> {
        if self.stream.is_some() {
            return self
                .refuse(
                    request,
                    "NetStream.Publish.BadName",
                    "already publishing",
                    "second publish on one connection",
                )
                .await;
        }
        if app != self.shared.config.app {
            return self
                .refuse(
                    request,
                    "NetStream.Publish.BadName",
                    "unknown application",
                    "unknown application (use rtmp://host/live/<key>)",
                )
                .await;
        }
        // Encoders may append a query string to the key.
        let key = key.split('?').next().unwrap_or_default();
        let Ok(target) = self.shared.keys.authorize(key) else {
            return self
                .refuse(
                    request,
                    "NetStream.Publish.BadName",
                    "stream key not accepted",
                    "unknown stream key",
                )
                .await;
        };
        let span = tracing::Span::current();
        span.record("room", target.room.as_str());
        span.record("identity", target.identity.as_str());
        let registry = Arc::clone(&self.shared.registry);
        let mut stream = match registry.claim(&target) {
            Err(_) => {
                return self
                    .refuse(
                        request,
                        "NetStream.Publish.BadName",
                        "this stream key is already live",
                        "stream key already live",
                    )
                    .await;
            }
            Ok(Some(parked)) => {
                info!("encoder reconnected within the grace period: resuming its publications");
                parked
            }
            Ok(None) => {
                match RoomStream::join(&self.shared.sfu, target.clone(), Origin::Rtmp).await {
                    Ok(stream) => stream,
                    Err(err) => {
                        registry.abandon(&target);
                        self.refuse(
                            request,
                            "NetStream.Publish.Failed",
                            "cannot join the room",
                            "room join failed",
                        )
                        .await?;
                        return Err(End::Room(err));
                    }
                }
            }
        };
        registry.set_live(&stream);
        stream.stats().count_session();
        let media = stream.start_media(std::time::Instant::now());
        self.stream = Some((stream, media));
        // Publishing: no longer counted among this address's connections in setup.
        self.setup = None;
        let mut events = Vec::new();
        self.protocol.accept_publish(request, &mut events)?;
        info!("publishing");
        for event in events {
            if let ProtocolEvent::Send(bytes) = event {
                self.write(&bytes).await?;
            }
        }
        Ok(())
    }

    async fn refuse(
        &mut self,
        request: u32,
        code: &str,
        description: &str,
        reason: &'static str,
    ) -> Result<(), End> {
        let mut events = Vec::new();
        self.protocol
            .reject_publish(request, code, description, &mut events)?;
        for event in events {
            if let ProtocolEvent::Send(bytes) = event {
                self.write(&bytes).await?;
            }
        }
        let _ = self.socket.flush().await;
        self.linger().await;
        Err(End::Refused(reason))
    }

    /// Closes gracefully after a refusal: our FIN first, then whatever the encoder still sends
    /// is read and dropped until it closes too (bounded). Closing with unread input would send
    /// an RST, which can discard the refusal before the encoder reads it; ffmpeg then neither
    /// reports the error nor exits.
    async fn linger(&mut self) {
        let _ = self.socket.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = timeout(REFUSAL_LINGER, async {
            while matches!(self.socket.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    async fn media(&mut self, kind: MediaKind, timestamp_ms: u32, data: &[u8]) -> Result<(), End> {
        let Some((stream, media)) = &mut self.stream else {
            debug!("media before publish ignored");
            return Ok(());
        };
        let packets = &mut self.packets;
        packets.clear();
        let now = std::time::Instant::now();
        // The parsers and codecs are fed network bytes: a panic in one ends this connection.
        let announce = contain(|| match kind {
            MediaKind::Video => media.push_video(now, timestamp_ms, data, packets),
            MediaKind::Audio => media.push_audio(now, timestamp_ms, data, packets),
        })??;
        stream.apply(announce).await?;
        if !packets.is_empty() {
            stream.media_flowed(now).await?;
        }
        for packet in packets.drain(..) {
            stream.send(kind, packet);
        }
        Ok(())
    }
}
