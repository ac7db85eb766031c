//! The shard's sockets: one UDP socket bound non-blocking with large kernel buffers, and the
//! ICE-TCP listener beside it.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use tracing::{info, warn};

use super::TcpPort;

/// Binds `addr` with both kernel buffers set to `buffer` bytes: forced above
/// `net.core.{r,w}mem_max` when the process may (CAP_NET_ADMIN), else capped there by the
/// kernel.
pub(crate) fn bind(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
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
