//! A UDP relay between one client and the server that, while armed, follows every SRTP or
//! SRTCP datagram of the client with mangled copies from the same address: truncated, bit
//! flips, other RTP versions, absurd CSRC counts, extension and padding lengths, another SSRC,
//! replays, and datagrams of random bytes. Deterministic (seeded); loopback only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Result;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

pub(crate) struct MangleRelay {
    /// Where the client must send: the address written into the server's candidates.
    pub(crate) client_side: SocketAddr,
    armed: Arc<AtomicBool>,
    injected: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl MangleRelay {
    pub(crate) async fn start(server: SocketAddr) -> Result<Self> {
        let client_socket = UdpSocket::bind("127.0.0.1:0").await?;
        let server_socket = UdpSocket::bind("127.0.0.1:0").await?;
        server_socket.connect(server).await?;
        let client_side = client_socket.local_addr()?;
        let armed = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(relay(
            client_socket,
            server_socket,
            Arc::clone(&armed),
            Arc::clone(&injected),
        ));
        Ok(Self {
            client_side,
            armed,
            injected,
            task,
        })
    }

    pub(crate) fn arm(&self, on: bool) {
        self.armed.store(on, Ordering::Relaxed);
    }

    /// Mangled datagrams sent to the server so far.
    pub(crate) fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

impl Drop for MangleRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client_socket: UdpSocket,
    server_socket: UdpSocket,
    armed: Arc<AtomicBool>,
    injected: Arc<AtomicU64>,
) {
    let mut client: Option<SocketAddr> = None;
    let mut from_client = vec![0u8; 2048];
    let mut from_server = vec![0u8; 2048];
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    let mut previous: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            received = client_socket.recv_from(&mut from_client) => {
                let Ok((len, from)) = received else { return };
                client = Some(from);
                let datagram = &from_client[..len];
                let _ = server_socket.send(datagram).await;
                // RFC 7983: 128..=191 is RTP or RTCP (SRTP once DTLS is done).
                let is_srtp = datagram.first().is_some_and(|b| (128..=191).contains(b));
                if is_srtp && armed.load(Ordering::Relaxed) {
                    for copy in mangled(datagram, &previous, &mut rng) {
                        let _ = server_socket.send(&copy).await;
                        injected.fetch_add(1, Ordering::Relaxed);
                    }
                    previous = datagram.to_vec();
                }
            }
            received = server_socket.recv(&mut from_server) => {
                let Ok(len) = received else { return };
                if let Some(client) = client {
                    let _ = client_socket.send_to(&from_server[..len], client).await;
                }
            }
        }
    }
}

/// Mangled copies of one SRTP/SRTCP datagram (and a replay of the one before).
fn mangled(datagram: &[u8], previous: &[u8], rng: &mut XorShift) -> Vec<Vec<u8>> {
    let len = datagram.len();
    let mut out = Vec::new();
    // Truncated anywhere, to the fixed header, and without its authentication tag.
    out.push(datagram[..rng.below(len)].to_vec());
    out.push(datagram[..len.min(12)].to_vec());
    out.push(datagram[..len.saturating_sub(10)].to_vec());
    // One bit flipped (authentication must fail).
    let mut flipped = datagram.to_vec();
    let at = rng.below(len);
    flipped[at] ^= 1 << rng.below(8);
    out.push(flipped);
    // Other versions: 0, 1 and 3.
    for version in [0u8, 1, 3] {
        let mut copy = datagram.to_vec();
        copy[0] = (copy[0] & 0x3f) | version << 6;
        out.push(copy);
    }
    let payload_type = datagram.get(1).map(|b| b & 0x7f);
    if len >= 16 && payload_type.is_some_and(|pt| !(64..=95).contains(&pt)) {
        // RTP (not RTCP): 15 CSRCs claimed, an extension of 65535 words, padding of 255, and
        // another SSRC.
        let mut copy = datagram.to_vec();
        copy[0] |= 0x0f;
        out.push(copy);
        let mut copy = datagram.to_vec();
        copy[0] |= 0x10;
        copy[12..16].copy_from_slice(&[0xbe, 0xde, 0xff, 0xff]);
        out.push(copy);
        let mut copy = datagram.to_vec();
        copy[0] |= 0x20;
        if let Some(last) = copy.last_mut() {
            *last = 0xff;
        }
        out.push(copy);
        let mut copy = datagram.to_vec();
        copy[8..12].copy_from_slice(&rng.next().to_be_bytes()[..4]);
        out.push(copy);
    }
    // A replay of the previous datagram, and random bytes that look like RTP.
    if !previous.is_empty() {
        out.push(previous.to_vec());
    }
    let mut noise: Vec<u8> = (0..1 + rng.below(1400)).map(|_| rng.next() as u8).collect();
    noise[0] = 0x80 | (noise[0] & 0x3f);
    out.push(noise);
    out
}

/// xorshift64: enough randomness for mangling, and the same every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}
