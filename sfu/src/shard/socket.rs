//! The shard's sockets: one UDP socket bound non-blocking with large kernel buffers, the
//! ICE-TCP listener beside it, and the batched egress.

use std::io::IoSlice;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, MultiHeaders, SockFlag, SockType, SockaddrStorage,
    getsockopt, sendmmsg, setsockopt, socket, sockopt,
};
use tracing::{info, warn};

use super::TcpPort;

/// Binds `addr` with both kernel buffers set to `buffer` bytes: forced above
/// `net.core.{r,w}mem_max` when the process may (CAP_NET_ADMIN), else capped there by the
/// kernel.
/// With `shared`, the socket is bound with `SO_REUSEPORT`, so every shard of a group binds the
/// same port.
pub(crate) fn bind(addr: SocketAddr, buffer: usize, shared: bool) -> std::io::Result<UdpSocket> {
    let socket = if shared {
        let family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
        setsockopt(&fd, sockopt::ReusePort, &true)?;
        nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
        UdpSocket::from(fd)
    } else {
        UdpSocket::bind(addr)?
    };
    socket.set_nonblocking(true)?;
    // Each datagram's arrival time, for the freshness bound (see `freshness`).
    setsockopt(&socket, sockopt::ReceiveTimestampns, &true)?;
    if setsockopt(&socket, sockopt::RcvBufForce, &buffer).is_err() {
        setsockopt(&socket, sockopt::RcvBuf, &buffer)?;
    }
    if setsockopt(&socket, sockopt::SndBufForce, &buffer).is_err() {
        setsockopt(&socket, sockopt::SndBuf, &buffer)?;
    }
    info!(
        local = %socket.local_addr()?,
        rcvbuf = getsockopt(&socket, sockopt::RcvBuf).unwrap_or(0),
        sndbuf = getsockopt(&socket, sockopt::SndBuf).unwrap_or(0),
        "media socket bound"
    );
    Ok(socket)
}

/// Binds the ICE-TCP listener beside the UDP socket bound at `udp` (same address), non-blocking.
pub(crate) fn bind_tcp(
    port: TcpPort,
    udp: SocketAddr,
) -> std::io::Result<Option<(TcpListener, SocketAddr)>> {
    let listener = match port {
        TcpPort::Off => return Ok(None),
        TcpPort::Port(port) => TcpListener::bind(SocketAddr::new(udp.ip(), port))?,
        TcpPort::SameAsUdp => match TcpListener::bind(udp) {
            Ok(listener) => listener,
            Err(err) => {
                warn!(%err, port = udp.port(), "ICE-TCP port taken; an OS-assigned one instead");
                TcpListener::bind(SocketAddr::new(udp.ip(), 0))?
            }
        },
    };
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    info!(local = %bound, "ICE-TCP listener bound");
    Ok(Some((listener, bound)))
}

/// Datagrams sent per `sendmmsg` call.
const EGRESS_BATCH: usize = 64;

/// The UDP datagrams one pass of the shard loop produces (a forwarded packet fans out to every
/// subscriber), sent with `sendmmsg`: one system call per [`EGRESS_BATCH`] datagrams instead of
/// one per datagram.
pub(crate) struct EgressBatch {
    datagrams: Vec<(SockaddrStorage, BytesMut)>,
    headers: MultiHeaders<SockaddrStorage>,
}

impl Default for EgressBatch {
    fn default() -> Self {
        Self {
            datagrams: Vec::with_capacity(EGRESS_BATCH),
            headers: MultiHeaders::preallocate(EGRESS_BATCH, None),
        }
    }
}

impl EgressBatch {
    pub(crate) fn push(&mut self, to: SocketAddr, datagram: BytesMut) {
        self.datagrams.push((SockaddrStorage::from(to), datagram));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Sends everything gathered on `socket`; returns how many datagrams the kernel took and
    /// how many it did not (a full send buffer drops them, as `send_to` would).
    pub(crate) fn send(&mut self, socket: &impl AsRawFd) -> (u64, u64) {
        self.send_first(self.datagrams.len(), socket)
    }

    /// Sends the gathered datagrams that fill whole [`EGRESS_BATCH`]es and keeps the rest
    /// for later; counts as [`send`](Self::send) does. What waits is thus bounded by one
    /// batch plus what the caller adds between two calls.
    pub(crate) fn send_whole_batches(&mut self, socket: &impl AsRawFd) -> (u64, u64) {
        let whole = self.datagrams.len() / EGRESS_BATCH * EGRESS_BATCH;
        if whole == 0 {
            return (0, 0);
        }
        self.send_first(whole, socket)
    }

    fn send_first(&mut self, count: usize, socket: &impl AsRawFd) -> (u64, u64) {
        let (mut sent, mut failed) = (0u64, 0u64);
        for chunk in self.datagrams[..count].chunks(EGRESS_BATCH) {
            let slices: Vec<[IoSlice<'_>; 1]> = chunk
                .iter()
                .map(|(_, datagram)| [IoSlice::new(datagram)])
                .collect();
            let addresses: Vec<Option<SockaddrStorage>> =
                chunk.iter().map(|(to, _)| Some(*to)).collect();
            let cmsgs: [ControlMessage<'_>; 0] = [];
            let taken = sendmmsg(
                socket.as_raw_fd(),
                &mut self.headers,
                &slices,
                &addresses,
                cmsgs,
                MsgFlags::MSG_DONTWAIT,
            )
            .map_or(0, |results| results.count());
            let taken = u64::try_from(taken).unwrap_or(0);
            sent += taken;
            failed += chunk.len() as u64 - taken.min(chunk.len() as u64);
        }
        self.datagrams.drain(..count);
        (sent, failed)
    }
}
