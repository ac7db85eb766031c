//! ICE-TCP (RFC 6544): the shard's passive TCP candidate, for clients whose network blocks
//! UDP. Each accepted connection carries RFC 4571 frames (a 16-bit length, then one STUN,
//! DTLS, SRTP or SRTCP message); a task per connection turns them into datagrams for the shard
//! loop and writes the loop's datagrams back as frames.
//!
//! A connection belongs to no peer until its first frame is a binding request naming a local
//! ufrag of the shard; anything else first closes it, as does silence for
//! [`FIRST_FRAME_WITHIN`]. Outgoing frames wait in a bounded queue per connection: a client
//! that does not read loses datagrams (as on UDP), never the shard's memory.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, trace};

use std::time::Instant;

use rtc::shared::TransportProtocol;

use super::peer::PeerKey;
use super::stun;
use super::worker::Worker;

/// Longest frame accepted or sent: one datagram of the UDP path.
pub(crate) const MAX_FRAME: usize = 1500;
/// A connection that has not sent its first frame within this is closed.
const FIRST_FRAME_WITHIN: Duration = Duration::from_secs(10);
/// Outgoing datagrams queued per connection before new ones are dropped.
pub(super) const WRITE_QUEUE: usize = 512;

/// What a connection task tells the shard loop.
#[derive(Debug)]
pub(super) enum TcpEvent {
    /// One frame's payload.
    Frame {
        from: SocketAddr,
        datagram: BytesMut,
    },
    /// The connection ended (either side, or an error).
    Closed { from: SocketAddr },
}

/// The shard loop's side of one accepted connection.
#[derive(Debug)]
pub(super) struct TcpConnection {
    /// Frames to write, each one datagram.
    pub(super) writer: mpsc::Sender<Bytes>,
    /// Whose check the connection carried first.
    pub(super) owner: Option<Owner>,
}

/// Who a connection's frames are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// A peer on this shard.
    Local(PeerKey),
    /// A peer on another shard of the group (by index), to which its frames are handed.
    Shard(usize),
}

/// Serves one accepted connection until either side ends it: frames read go to `events`,
/// datagrams from `outgoing` are written as frames.
pub(super) async fn serve(
    stream: TcpStream,
    from: SocketAddr,
    events: mpsc::Sender<TcpEvent>,
    mut outgoing: mpsc::Receiver<Bytes>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let read = async {
        let mut first = true;
        loop {
            let frame = if first {
                match tokio::time::timeout(FIRST_FRAME_WITHIN, read_frame(&mut reader)).await {
                    Ok(frame) => frame,
                    Err(_) => {
                        debug!(%from, "ICE-TCP connection silent; closed");
                        return;
                    }
                }
            } else {
                read_frame(&mut reader).await
            };
            first = false;
            match frame {
                Ok(Some(datagram)) => {
                    if events
                        .send(TcpEvent::Frame { from, datagram })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    debug!(%from, %err, "ICE-TCP connection refused a frame; closed");
                    return;
                }
            }
        }
    };
    let write = async {
        while let Some(datagram) = outgoing.recv().await {
            let Ok(length) = u16::try_from(datagram.len()) else {
                continue;
            };
            if writer.write_all(&length.to_be_bytes()).await.is_err()
                || writer.write_all(&datagram).await.is_err()
            {
                return;
            }
        }
    };
    // Either half ending ends the connection: a closed read means the client left, a closed
    // queue means the shard dropped the connection.
    tokio::select! {
        () = read => {}
        () = write => {}
    }
    trace!(%from, "ICE-TCP connection ended");
    let _ = events.send(TcpEvent::Closed { from }).await;
}

/// Reads one RFC 4571 frame: `Ok(None)` at a clean end of the stream, an error for a frame
/// longer than [`MAX_FRAME`] or empty.
pub(crate) async fn read_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
) -> std::io::Result<Option<BytesMut>> {
    let mut length = [0u8; 2];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let length = usize::from(u16::from_be_bytes(length));
    if length == 0 || length > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {length} bytes"),
        ));
    }
    let mut frame = BytesMut::zeroed(length);
    reader.read_exact(&mut frame).await?;
    Ok(Some(frame))
}

impl Worker {
    /// Takes an accepted connection on, within [`ShardConfig::max_tcp_connections`](super::ShardConfig::max_tcp_connections).
    pub(super) fn accept_tcp(&mut self, stream: TcpStream, from: SocketAddr) {
        if self.tcp.len() >= self.config.max_tcp_connections || self.tcp.contains_key(&from) {
            self.stats.tcp_refused += 1;
            debug!(%from, "ICE-TCP connection refused: at the limit");
            return;
        }
        let (writer, outgoing) = mpsc::channel(WRITE_QUEUE);
        if let Some(group) = &self.group {
            group.routes.tcp_writers.insert(from, writer.clone());
        }
        self.tcp.insert(
            from,
            TcpConnection {
                writer,
                owner: None,
            },
        );
        tokio::spawn(serve(stream, from, self.tcp_events.clone(), outgoing));
    }

    /// A frame or the end of a connection: a frame goes to the connection's peer, which its
    /// first binding request named.
    pub(super) fn tcp_event(&mut self, event: TcpEvent, now: Instant) {
        match event {
            TcpEvent::Frame { from, datagram } => {
                let ufrag = stun::local_ufrag(&datagram);
                let named = match ufrag {
                    Some(ufrag) => match self.by_ufrag.get(ufrag) {
                        Some(key) => Some(Owner::Local(*key)),
                        None => self
                            .group
                            .as_ref()
                            .and_then(|group| group.owner_of_ufrag(ufrag))
                            .map(Owner::Shard),
                    },
                    None => None,
                };
                let Some(connection) = self.tcp.get_mut(&from) else {
                    return;
                };
                let owner = match (connection.owner, named) {
                    (None, Some(owner)) => {
                        connection.owner = Some(owner);
                        owner
                    }
                    (Some(owner), Some(named)) if owner != named => {
                        self.stats.unrouted += 1;
                        return;
                    }
                    (Some(owner), _) => owner,
                    // Not a check of ours first: the connection is dropped, which ends its task.
                    (None, None) => {
                        self.stats.unrouted += 1;
                        self.drop_tcp(from);
                        debug!(%from, "ICE-TCP connection without a check of ours; closed");
                        return;
                    }
                };
                match owner {
                    Owner::Local(key) => self.deliver(
                        key,
                        &datagram,
                        from,
                        TransportProtocol::TCP,
                        named.is_some(),
                        now,
                    ),
                    Owner::Shard(index) => {
                        self.hand_off_to(index, &datagram, from, TransportProtocol::TCP);
                    }
                }
            }
            TcpEvent::Closed { from } => {
                if let Some(Owner::Local(key)) = self.drop_tcp(from)
                    && let Some(peer) = self.peers.get_mut(&key)
                {
                    peer.paths.forget(from);
                }
            }
        }
    }

    /// Forgets a connection (which ends its task) and says whose it was.
    fn drop_tcp(&mut self, from: SocketAddr) -> Option<Owner> {
        if let Some(group) = &self.group {
            group.routes.tcp_writers.remove(&from);
        }
        self.tcp
            .remove(&from)
            .and_then(|connection| connection.owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_one_by_one_and_a_clean_end_is_none() -> std::io::Result<()> {
        let mut bytes: &[u8] = &[0, 3, 1, 2, 3, 0, 1, 9];
        assert_eq!(
            read_frame(&mut bytes).await?.as_deref(),
            Some(&[1, 2, 3][..])
        );
        assert_eq!(read_frame(&mut bytes).await?.as_deref(), Some(&[9][..]));
        assert!(read_frame(&mut bytes).await?.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn empty_oversized_and_truncated_frames_are_errors() {
        let mut empty: &[u8] = &[0, 0];
        assert!(read_frame(&mut empty).await.is_err());
        let oversized = u16::try_from(MAX_FRAME + 1)
            .unwrap_or(u16::MAX)
            .to_be_bytes();
        let mut oversized: &[u8] = &oversized;
        assert!(read_frame(&mut oversized).await.is_err());
        let mut truncated: &[u8] = &[0, 4, 1, 2];
        assert!(read_frame(&mut truncated).await.is_err());
    }
}
