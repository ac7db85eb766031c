//! The sans-IO load generator: client peer connections on the `rtc` 0.21 core (the stack the
//! server's shards run), many per generator thread, no decoding.
//!
//! Each generator thread owns its peers and their sockets (one loopback UDP socket per peer:
//! the server tells its connections apart by 5-tuple, so every peer needs a port of its own)
//! and drives them from one loop: `epoll` over the sockets → `handle_read` → drain
//! `poll_event`/`poll_read` (a subscriber SRTP-unprotects and records each packet's stamp,
//! nothing more) → `handle_timeout` for due peers → publishers write their frames → every
//! touched peer's `poll_write` is sent and its `poll_timeout` re-armed. No task, channel or
//! lock per packet.
//!
//! The async side (signaling) talks to a thread by [`Command`]s and holds a [`PeerHandle`]
//! per connection; dropping the handle closes the connection.

mod peer;
mod send;
mod worker;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use nix::sys::eventfd::{EfdFlags, EventFd};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use tokio::sync::{oneshot, watch};

use crate::client::{Reception, SentCounters};
use crate::media::VideoShape;

pub use worker::PeerState;

/// A connection's key within its generator thread.
pub type PeerKey = u64;

/// What a new connection is.
pub enum Setup {
    /// Receives everything the remote offer carries into `reception`; replies with the answer.
    Subscriber { offer: String, reception: Reception },
    /// Sends stamped video (`shape`; three layers by rid when `simulcast`) and audio from
    /// SSRCs `ssrc_base…` once connected; replies with its offer.
    Publisher {
        shape: VideoShape,
        ssrc_base: u32,
        simulcast: bool,
        sent: Arc<SentCounters>,
    },
}

/// A request to a generator thread.
pub enum Command {
    Create {
        setup: Setup,
        reply: oneshot::Sender<Result<Created>>,
    },
    /// A remote offer (replied with the answer) or answer (replied with `None`).
    Remote {
        key: PeerKey,
        sdp: String,
        offer: bool,
        reply: oneshot::Sender<Result<Option<String>>>,
    },
    Candidate {
        key: PeerKey,
        candidate: RTCIceCandidateInit,
    },
    Close {
        key: PeerKey,
    },
}

/// A connection a thread created: its key, its local description (offer or answer), its one
/// candidate, and its state as it changes.
pub struct Created {
    pub key: PeerKey,
    pub sdp: String,
    pub candidate: RTCIceCandidateInit,
    pub state: watch::Receiver<PeerState>,
}

/// The way into one generator thread.
#[derive(Clone)]
struct Thread {
    commands: std::sync::mpsc::Sender<Command>,
    wake: Arc<EventFd>,
}

impl Thread {
    fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .map_err(|_| anyhow!("generator thread ended"))?;
        self.wake.write(1).context("waking the generator thread")?;
        Ok(())
    }
}

/// The generator: one thread for the publishers (their frames leave on time however busy the
/// subscribers are) and `threads` for the subscribers, given connections in turn.
pub struct Generator {
    publishers: Thread,
    threads: Vec<Thread>,
    next: AtomicUsize,
    /// Kernel thread ids, for their CPU time.
    tids: Vec<u32>,
    /// Connections that failed or closed after they were up, all threads.
    lost: Arc<AtomicU64>,
}

/// How long a thread may take to create a connection or apply a description.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Generator {
    /// Starts the publisher thread and `threads` subscriber threads (they end when the
    /// generator is dropped) whose connections bind 127.0.0.1.
    pub fn start(threads: usize) -> Result<Self> {
        Self::start_on(threads, IpAddr::from([127, 0, 0, 1]))
    }

    /// As [`Generator::start`], with the connections' sockets on `ip` (a loopback address).
    pub fn start_on(threads: usize, ip: IpAddr) -> Result<Self> {
        anyhow::ensure!(
            ip.is_loopback(),
            "the generator binds loopback addresses only, not {ip}"
        );
        let lost = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        let mut tids = Vec::new();
        // Thread 0 takes the publishers.
        for n in 0..=threads.max(1) {
            let (commands, inbox) = std::sync::mpsc::channel();
            let wake = Arc::new(EventFd::from_flags(
                EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
            )?);
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let thread_wake = Arc::clone(&wake);
            let thread_lost = Arc::clone(&lost);
            std::thread::Builder::new()
                .name(if n == 0 {
                    "rtcgen-pub".to_owned()
                } else {
                    format!("rtcgen-{n}")
                })
                .spawn(move || {
                    let _ = tid_tx.send(nix::unistd::gettid().as_raw());
                    if let Err(err) = worker::run(inbox, &thread_wake, ip, thread_lost) {
                        eprintln!("generator thread {n} failed: {err:#}");
                    }
                })
                .context("starting a generator thread")?;
            let tid = tid_rx
                .recv_timeout(Duration::from_secs(5))
                .context("generator thread id")?;
            tids.push(u32::try_from(tid).unwrap_or_default());
            handles.push(Thread { commands, wake });
        }
        let publishers = handles.remove(0);
        Ok(Self {
            publishers,
            threads: handles,
            next: AtomicUsize::new(0),
            tids,
            lost,
        })
    }

    /// Connections that failed or closed after they were up (the server dropped them, or
    /// their consent lapsed), since the generator started.
    pub fn connections_lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// The generator threads' kernel thread ids (their CPU time is in /proc/self/task/<tid>).
    pub fn thread_ids(&self) -> &[u32] {
        &self.tids
    }

    /// Creates a publisher on the publisher thread, a subscriber on the next subscriber
    /// thread in turn.
    pub async fn create(&self, setup: Setup) -> Result<(PeerHandle, Created)> {
        let thread = match setup {
            Setup::Publisher { .. } => self.publishers.clone(),
            Setup::Subscriber { .. } => {
                let n = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
                self.threads[n].clone()
            }
        };
        let (reply, created) = oneshot::channel();
        thread.send(Command::Create { setup, reply })?;
        let created = tokio::time::timeout(REPLY_TIMEOUT, created)
            .await
            .context("generator thread did not create the connection in time")?
            .map_err(|_| anyhow!("generator thread ended"))??;
        Ok((
            PeerHandle {
                thread,
                key: created.key,
            },
            created,
        ))
    }
}

/// One connection on a generator thread; closed when dropped.
pub struct PeerHandle {
    thread: Thread,
    key: PeerKey,
}

impl PeerHandle {
    /// Applies a remote offer and returns the answer.
    pub async fn answer(&self, offer: String) -> Result<String> {
        self.remote(offer, true)
            .await?
            .context("no answer to the offer")
    }

    /// Applies the remote answer to this connection's offer.
    pub async fn apply_answer(&self, answer: String) -> Result<()> {
        self.remote(answer, false).await.map(|_| ())
    }

    async fn remote(&self, sdp: String, offer: bool) -> Result<Option<String>> {
        let (reply, done) = oneshot::channel();
        self.thread.send(Command::Remote {
            key: self.key,
            sdp,
            offer,
            reply,
        })?;
        tokio::time::timeout(REPLY_TIMEOUT, done)
            .await
            .context("generator thread did not apply the description in time")?
            .map_err(|_| anyhow!("generator thread ended"))?
    }

    pub fn add_candidate(&self, candidate: RTCIceCandidateInit) -> Result<()> {
        self.thread.send(Command::Candidate {
            key: self.key,
            candidate,
        })
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        let _ = self.thread.send(Command::Close { key: self.key });
    }
}

/// Waits until `state` reports connected (`Err` on failure or after `wait`).
pub async fn connected(state: &mut watch::Receiver<PeerState>, wait: Duration) -> Result<()> {
    let reached = tokio::time::timeout(
        wait,
        state.wait_for(|s| matches!(s, PeerState::Connected | PeerState::Failed)),
    )
    .await
    .with_context(|| format!("not connected within {wait:?}"))?
    .map_err(|_| anyhow!("connection closed"))?;
    anyhow::ensure!(*reached == PeerState::Connected, "connection failed");
    Ok(())
}
