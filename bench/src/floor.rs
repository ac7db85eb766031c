//! The per-packet floor: the least work any SFU does per forwarded packet on this machine —
//! SRTP-protect one 1212-byte RTP packet, then send it on a UDP socket on loopback — measured
//! as CPU time of the sending thread (loopback delivery runs in the sender's syscall, so it is
//! counted; a second thread drains the receiving socket). Plain `send_to`, `sendmmsg` of 32
//! datagrams (nix), and UDP GSO of 32 equal segments to one destination (quinn-udp).

use std::io::IoSlice;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, sendmmsg};
use rtc::crypto::providers::RingCrypto;
use rtc::srtp::context::Context as SrtpContext;
use rtc::srtp::protection_profile::ProtectionProfile;
use serde::{Deserialize, Serialize};

use crate::procfs::thread_cpu_time;

const PAYLOAD: usize = 1200;
const BATCH: usize = 32;

/// ns of sending-thread CPU per packet, median of `reps` runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorResult {
    pub profile: String,
    pub protect_ns: f64,
    pub send_to_ns: f64,
    pub sendmmsg_ns: f64,
    pub gso_ns: f64,
    pub protect_send_to_ns: f64,
    pub protect_sendmmsg_ns: f64,
    pub protect_gso_ns: f64,
    pub gso_segments: usize,
}

impl FloorResult {
    /// The floor in packets/s per core with plain sends.
    pub fn pps_per_core(&self) -> f64 {
        1e9 / self.protect_send_to_ns
    }
}

fn profile_name(p: ProtectionProfile) -> &'static str {
    match p {
        ProtectionProfile::AeadAes128Gcm => "AEAD_AES_128_GCM",
        ProtectionProfile::Aes128CmHmacSha1_80 => "AES128_CM_HMAC_SHA1_80",
        _ => "other",
    }
}

fn context(profile: ProtectionProfile) -> Result<SrtpContext> {
    let key = vec![7u8; profile.key_len()];
    let salt = vec![9u8; profile.salt_len()];
    SrtpContext::new(&key, &salt, profile, None, None, &RingCrypto)
        .map_err(|e| anyhow::anyhow!("srtp context: {e}"))
}

fn rtp_packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend((0..PAYLOAD).map(|i| i as u8));
    p
}

/// A receiving socket drained by its own thread until dropped.
struct Sink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn new() -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !flag.load(Ordering::Relaxed) {
                let _ = socket.recv(&mut buf);
            }
        });
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `op` (which handles `per_call` packets) for about `budget`; ns of thread CPU per packet.
fn measure(
    budget: Duration,
    per_call: usize,
    mut op: impl FnMut(u64) -> Result<()>,
) -> Result<f64> {
    // Warm up.
    for i in 0..50 {
        op(i)?;
    }
    let (wall, cpu) = (Instant::now(), thread_cpu_time());
    let mut calls = 0u64;
    while wall.elapsed() < budget {
        for _ in 0..16 {
            op(calls)?;
            calls += 1;
        }
    }
    let spent = thread_cpu_time().saturating_sub(cpu);
    Ok(spent.as_nanos() as f64 / (calls as f64 * per_call as f64))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Sender {
    socket: UdpSocket,
    dest: SocketAddr,
    dest_nix: SockaddrIn,
    state: quinn_udp::UdpSocketState,
}

impl Sender {
    fn new(dest: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        let SocketAddr::V4(v4) = dest else {
            anyhow::bail!("IPv4 loopback expected");
        };
        Ok(Self {
            socket,
            dest,
            dest_nix: SockaddrIn::from(SocketAddrV4::new(*v4.ip(), v4.port())),
            state,
        })
    }

    fn send_to(&self, buf: &[u8]) -> Result<()> {
        // A full receive queue on loopback shows up as an error on some kernels; ignore it as a
        // real SFU would (the datagram was still processed).
        let _ = self.socket.send_to(buf, self.dest);
        Ok(())
    }

    fn sendmmsg(&self, bufs: &[Vec<u8>]) -> Result<()> {
        let mut headers = MultiHeaders::<SockaddrIn>::preallocate(bufs.len(), None);
        let iovs: Vec<[IoSlice<'_>; 1]> = bufs.iter().map(|b| [IoSlice::new(b)]).collect();
        let addrs = vec![Some(self.dest_nix); bufs.len()];
        let cmsgs: [ControlMessage<'_>; 0] = [];
        let _ = sendmmsg(
            self.socket.as_raw_fd(),
            &mut headers,
            &iovs,
            &addrs,
            cmsgs,
            MsgFlags::empty(),
        );
        Ok(())
    }

    /// One GSO send of `contents` cut into `segment`-byte datagrams.
    fn gso(&self, contents: &[u8], segment: usize) -> Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: self.dest,
            ecn: None,
            contents,
            segment_size: Some(segment),
            src_ip: None,
        };
        let _ = self.state.try_send((&self.socket).into(), &transmit);
        Ok(())
    }
}

/// Measures the floor for `profile`; `budget` is the time per measurement.
pub fn run(profile: ProtectionProfile, budget: Duration, reps: usize) -> Result<FloorResult> {
    let sink = Sink::new()?;
    let sender = Sender::new(sink.addr)?;
    let segments = sender.state.max_gso_segments().clamp(1, BATCH);
    let mut ctx = context(profile)?;
    let protected_len = ctx
        .encrypt_rtp(&rtp_packet(0))
        .context("protecting a packet")?
        .len();
    let datagram = vec![0xab; protected_len];
    let batch: Vec<Vec<u8>> = vec![datagram.clone(); BATCH];
    let gso_buf: Vec<u8> = datagram.repeat(segments);
    let plain: Vec<Vec<u8>> = (0..BATCH as u16).map(rtp_packet).collect();

    let mut protect = Vec::new();
    let mut send_to = Vec::new();
    let mut mmsg = Vec::new();
    let mut gso = Vec::new();
    let mut p_send = Vec::new();
    let mut p_mmsg = Vec::new();
    let mut p_gso = Vec::new();
    let mut seq = 0u16;
    let mut next = |ctx: &mut SrtpContext| -> Result<bytes::BytesMut> {
        seq = seq.wrapping_add(1);
        let mut packet = plain[usize::from(seq) % BATCH].clone();
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        ctx.encrypt_rtp(&packet)
            .map_err(|e| anyhow::anyhow!("protect: {e}"))
    };
    for _ in 0..reps {
        protect.push(measure(budget, 1, |_| next(&mut ctx).map(drop))?);
        send_to.push(measure(budget, 1, |_| sender.send_to(&datagram))?);
        mmsg.push(measure(budget, BATCH, |_| sender.sendmmsg(&batch))?);
        gso.push(measure(budget, segments, |_| {
            sender.gso(&gso_buf, protected_len)
        })?);
        p_send.push(measure(budget, 1, |_| {
            let out = next(&mut ctx)?;
            sender.send_to(&out)
        })?);
        p_mmsg.push(measure(budget, BATCH, |_| {
            let out: Vec<Vec<u8>> = (0..BATCH)
                .map(|_| next(&mut ctx).map(|b| b.to_vec()))
                .collect::<Result<_>>()?;
            sender.sendmmsg(&out)
        })?);
        p_gso.push(measure(budget, segments, |_| {
            let mut out = Vec::with_capacity(protected_len * segments);
            for _ in 0..segments {
                out.extend_from_slice(&next(&mut ctx)?);
            }
            sender.gso(&out, protected_len)
        })?);
    }
    drop(sink);
    Ok(FloorResult {
        profile: profile_name(profile).to_owned(),
        protect_ns: median(protect),
        send_to_ns: median(send_to),
        sendmmsg_ns: median(mmsg),
        gso_ns: median(gso),
        protect_send_to_ns: median(p_send),
        protect_sendmmsg_ns: median(p_mmsg),
        protect_gso_ns: median(p_gso),
        gso_segments: segments,
    })
}

/// Both profiles Sluice can end up with: AEAD_AES_128_GCM (webrtc-rs clients offer it first
/// and the DTLS server takes the client's first supported profile) and SHA1_80.
pub fn run_all(budget: Duration, reps: usize) -> Result<Vec<FloorResult>> {
    [
        ProtectionProfile::AeadAes128Gcm,
        ProtectionProfile::Aes128CmHmacSha1_80,
    ]
    .into_iter()
    .map(|p| run(p, budget, reps))
    .collect()
}
