//! The shard's one UDP socket: bound non-blocking with large kernel buffers.

use std::net::{SocketAddr, UdpSocket};

use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use tracing::info;

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
