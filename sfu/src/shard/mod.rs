//! The shard media plane: one thread owns one UDP socket, every sans-IO `rtc` peer connection
//! on it and the rooms placed on it (`core::Room` by `&mut`), with no lock and no channel hop
//! per packet.
//!
//! - **Demultiplexing.** A STUN binding request goes to the peer whose local ufrag its
//!   USERNAME names; every other datagram goes by its source address, which must have been
//!   validated first (see below). Anything else is dropped and counted.
//! - **ICE-lite.** Peers are built in `rtc`'s lite mode: they answer checks and never send one.
//!   On top of that the shard's egress gate ([`paths`]) sends nothing to an address until the
//!   peer's agent has answered a check from it with a binding success response (it answers
//!   only checks that carry our credentials), so no client can make the server send to a
//!   bystander. Trickled remote candidates are parsed, counted against
//!   [`ShardConfig::max_remote_candidates`] and not handed to the agent: a lite agent learns
//!   the client's address from its checks. Candidates inside an SDP count too (past the cap
//!   the description is refused); `rtc` records them, and its lite agent never checks them.
//! - **Routing.** Publishers' RTP goes into the room's `core::Room`; each `Output::Forward`
//!   is written to the subscriber's `rtc` sender with the header the core rewrote (SSRC,
//!   payload type, sequence number, timestamp). Of the publisher's header extensions only the
//!   audio level travels on, written with the id negotiated with the subscriber; the others'
//!   ids belong to the publisher's negotiation and are dropped. The NACK responder and
//!   sender/receiver reports are `rtc`
//!   interceptors; subscribers' PLI/FIR become keyframe requests, which the core throttles and
//!   turns into PLIs to the publisher.
//! - **SSRCs.** `rtc` keeps state per SSRC for a connection's life, so a connection may send
//!   from six SSRCs per media section and [`ShardConfig::ssrc_allowance`] more; datagrams of
//!   others are dropped unread (`ssrc_gate`). A publisher's RTP on an SSRC it did not signal
//!   (an encoder restarted without renegotiating) continues the single-encoding publication
//!   whose media section it names (`unsignaled`); a simulcast layer's new SSRC is rebound by
//!   `rtc` itself when it carries its rid.
//! - **Timers.** Only peers that were touched are asked for `poll_timeout`; the loop sleeps
//!   until the earliest deadline of any peer or room.
//!
//! Signaling talks to a shard through [`Shard`], whose methods send one bounded command each.

mod busy;
mod command;
mod data;
mod demux;
mod feedback;
mod follow;
mod forward;
mod freshness;
mod group;
mod ingest;
mod nomination;
mod paths;
mod peer;
mod routing;
mod socket;
pub(crate) mod ssrc_gate;
mod stats;
pub(crate) mod stun;
mod subscriber;
pub(crate) mod tcp;
mod unsignaled;
mod whep;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::thread::JoinHandle;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::{mpsc, oneshot};

use crate::core::{LayerChangeReason, MediaKind, ParticipantId, PublicationId, SubscriptionId};
pub use busy::BUSY_WINDOW;
use busy::BusyShare;
pub(crate) use command::Command;
pub use data::{DataLimits, DataRejection, LOSSY_LABEL, RELIABLE_LABEL};
pub use ingest::IngestSink;
pub use stats::ShardStats;
pub use whep::{WhepOptions, WhepSource, WhepSubscription};

use crate::transport::{CodecInfo, ConnectionState, IceCandidate, PeerRole};

/// How a shard binds and bounds itself.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// The UDP address of the shard's one socket.
    pub bind: SocketAddr,
    /// The address advertised in the ICE candidate; `None` advertises the bound address.
    pub advertise: Option<IpAddr>,
    /// SO_RCVBUF and SO_SNDBUF: one socket takes every peer's traffic, and a keyframe fanned
    /// out to many subscribers overflows Linux's 208 KiB default.
    pub socket_buffer: usize,
    /// Peer connections on the shard.
    pub max_peers: usize,
    /// Remote candidates a client may name per connection (SDP and trickle together).
    pub max_remote_candidates: usize,
    /// Commands queued for the shard thread before callers wait.
    pub command_queue: usize,
    /// Ingested (RTMP) packets queued for the shard thread before they are dropped.
    pub ingest_queue: usize,
    /// The ICE-TCP listener's port (RFC 6544 passive candidates, for clients whose network
    /// blocks UDP), on the UDP socket's address.
    pub tcp_port: TcpPort,
    /// Accepted ICE-TCP connections at once.
    pub max_tcp_connections: usize,
    /// Minimum playout delay asked of subscribers (RTP playout-delay extension on video), in
    /// milliseconds; 0 does not send the extension.
    pub playout_delay_ms: u16,
    /// The routing core's configuration for every room on the shard (the keyframe-request
    /// throttle among others).
    pub room: crate::core::RoomConfig,
    /// What each participant may send as data messages.
    pub data: DataLimits,
    /// RTP media that waited longer than this in the socket's receive buffer (a starved
    /// shard reading its backlog) is discarded unread, and its video asked for a keyframe.
    pub max_ingress_age: std::time::Duration,
    /// SSRCs a connection may send RTP from (and, counted apart, RTCP from) beyond six per
    /// media section it negotiated: room for encoders restarting on new SSRCs. Datagrams of
    /// further SSRCs are dropped unread (see `ssrc_gate`).
    pub ssrc_allowance: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            socket_buffer: 8 * 1024 * 1024,
            max_peers: 4096,
            max_remote_candidates: 32,
            command_queue: 256,
            ingest_queue: 4096,
            tcp_port: TcpPort::SameAsUdp,
            max_tcp_connections: 1024,
            playout_delay_ms: 0,
            room: crate::core::RoomConfig::default(),
            data: DataLimits::default(),
            max_ingress_age: std::time::Duration::from_millis(250),
            ssrc_allowance: 32,
        }
    }
}

/// Where the shard listens for ICE-TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpPort {
    /// No ICE-TCP candidate.
    Off,
    /// The UDP socket's port number (an OS-assigned one when that is taken).
    SameAsUdp,
    /// This port (0: OS-assigned).
    Port(u16),
}

/// Why a shard request failed; the message is safe to show the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    #[error("binding the media socket: {0}")]
    Bind(#[source] std::io::Error),
    #[error("participant {0} is not on this shard")]
    UnknownParticipant(ParticipantId),
    #[error("participant {0} is already on this shard")]
    DuplicateParticipant(ParticipantId),
    #[error("publication {0} not found")]
    UnknownPublication(PublicationId),
    #[error("subscription {0} not found")]
    UnknownSubscription(SubscriptionId),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("invalid session description: {0}")]
    InvalidSdp(String),
    /// The offer is well formed but cannot carry what is asked (no common codec).
    #[error("unsupported offer: {0}")]
    Unsupported(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("more than {0} remote candidates on one connection")]
    TooManyCandidates(usize),
    #[error("limit reached: {0}")]
    LimitExceeded(&'static str),
    #[error("peer connection error: {0}")]
    Peer(String),
    #[error("the shard has stopped")]
    Stopped,
}

/// A track the client's publish offer carries, with the id its publication gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishTrack {
    pub mid: String,
    pub kind: MediaKind,
    pub publication: PublicationId,
    /// Simulcast encodings by rid, lowest resolution first; empty without simulcast.
    pub rids: Vec<String>,
}

/// A change to one of a participant's subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// At most this spatial layer and, if given, this temporal layer.
    PreferLayer {
        spatial: u8,
        temporal: Option<u8>,
    },
    Paused(bool),
    /// Ends the subscription and takes its track off the subscriber connection (a new offer
    /// carries the removal).
    Remove,
}

/// What a shard tells a participant's owner.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ShardEvent {
    ConnectionState {
        role: PeerRole,
        state: ConnectionState,
    },
    /// To a subscriber: the layers of one of its subscriptions changed (as the core's
    /// `Output::LayersChanged`).
    LayersChanged {
        subscription: SubscriptionId,
        current: Option<crate::core::Layer>,
        target: crate::core::Layer,
        reason: LayerChangeReason,
    },
    /// To a publisher (dynacast): which simulcast layers of its publication anyone needs, by
    /// index (lowest first).
    PublisherLayers {
        publication: PublicationId,
        active: Vec<bool>,
    },
    /// To everyone in the room: who speaks now, loudest first (as the core's
    /// `Output::ActiveSpeakers`).
    ActiveSpeakers(Vec<(ParticipantId, f32)>),
    /// To everyone in the room: a publication stopped sending media, or sends again (as the
    /// core's `Output::PublicationStalled` and `PublicationResumed`); a participant that joins
    /// is told of those stalled at the time.
    Liveness {
        publication: PublicationId,
        publisher: ParticipantId,
        stalled: bool,
    },
    /// To a sender: data messages of its were not delivered, `dropped` of them since the last
    /// such event, the latest for `reason`.
    DataRejected { reason: DataRejection, dropped: u32 },
    /// To a WHEP viewer that follows the room: one of its tracks plays another publication
    /// now, or (`None`) waits for one.
    SubscriptionMoved {
        subscription: SubscriptionId,
        publication: Option<PublicationId>,
    },
}

/// A running shard: its thread, and the queue of commands into it. Dropping it stops the
/// thread (after the commands already queued).
pub struct Shard {
    commands: mpsc::Sender<Command>,
    ingest: IngestSink,
    local_addr: SocketAddr,
    tcp_local_addr: Option<SocketAddr>,
    /// How busy the shard's thread has been lately (see `busy`).
    busy: BusyShare,
    thread: Option<JoinHandle<()>>,
}

impl Shard {
    /// Binds the shard's socket and starts its thread.
    pub fn spawn(config: ShardConfig) -> Result<Self, ShardError> {
        Self::spawn_group(config, 1)?
            .into_iter()
            .next()
            .ok_or(ShardError::Stopped)
    }

    /// Starts `shards` shards (at least one), each on a thread of its own, sharing one UDP
    /// port (`SO_REUSEPORT`), one ICE-TCP listener (held by the first) and one DTLS
    /// certificate; a datagram read by a shard for another's connection is handed over (see
    /// `group`). Rooms are placed on shards whole.
    pub fn spawn_group(config: ShardConfig, shards: usize) -> Result<Vec<Self>, ShardError> {
        let shards = shards.max(1);
        let shared = shards > 1;
        let first =
            socket::bind(config.bind, config.socket_buffer, shared).map_err(ShardError::Bind)?;
        let local_addr = first.local_addr().map_err(ShardError::Bind)?;
        let mut sockets = vec![first];
        for _ in 1..shards {
            sockets.push(
                socket::bind(local_addr, config.socket_buffer, true).map_err(ShardError::Bind)?,
            );
        }
        let tcp = socket::bind_tcp(config.tcp_port, local_addr).map_err(ShardError::Bind)?;
        let tcp_local_addr = tcp.as_ref().map(|(_, bound)| *bound);
        let mut listener = tcp.map(|(listener, _)| listener);
        let certificate = peer::certificate()?;
        let links: Vec<_> = if shared {
            group::links(shards).into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        let mut group = Vec::with_capacity(shards);
        for (socket, link) in sockets.into_iter().zip(links) {
            let (commands, rx) = mpsc::channel(config.command_queue.max(1));
            let (ingest, ingest_rx) = mpsc::channel(config.ingest_queue.max(1));
            let busy = BusyShare::default();
            let start = worker::ShardStart {
                udp: (socket, local_addr),
                tcp: listener.take(),
                tcp_bound: tcp_local_addr,
                group: link,
                commands: rx,
                ingest: ingest_rx,
                certificate: certificate.clone(),
                busy: busy.clone(),
            };
            let thread = worker::spawn(config.clone(), start).map_err(ShardError::Bind)?;
            group.push(Self {
                commands,
                ingest: IngestSink {
                    tx: ingest,
                    dropped: Arc::new(AtomicU64::new(0)),
                },
                local_addr,
                tcp_local_addr,
                busy,
                thread: Some(thread),
            });
        }
        Ok(group)
    }

    /// The bound address of the shard's socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The share of wall time the shard's thread spent working rather than waiting, in
    /// percent, over its last window of about [`BUSY_WINDOW`].
    pub fn busy_percent(&self) -> f64 {
        self.busy.percent()
    }

    /// The bound address of the ICE-TCP listener, when there is one.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.tcp_local_addr
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ShardError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ShardError::Stopped)?;
        answer.await.map_err(|_| ShardError::Stopped)
    }

    /// Places `participant` in `room` on this shard; its connection changes arrive on `events`
    /// (bounded: what does not fit is dropped and counted).
    pub async fn join(
        &self,
        room: &str,
        participant: ParticipantId,
        identity: &str,
        events: mpsc::Sender<ShardEvent>,
    ) -> Result<(), ShardError> {
        let room = room.to_owned();
        let identity = identity.to_owned();
        self.request(|reply| Command::Join {
            room,
            participant,
            identity,
            events,
            reply,
        })
        .await?
    }

    /// Answers the participant's publish offer (creating its publisher connection on first
    /// use, renegotiating it after) and adds `tracks` to its room as publications.
    pub async fn publish(
        &self,
        participant: ParticipantId,
        offer: String,
        tracks: Vec<PublishTrack>,
    ) -> Result<String, ShardError> {
        self.request(|reply| Command::Publish {
            participant,
            offer,
            tracks,
            reply,
        })
        .await?
    }

    /// Adds a track for `publication` to the participant's subscriber connection; forwarding
    /// starts once an offer covering it was answered and the connection is up.
    pub async fn subscribe(
        &self,
        participant: ParticipantId,
        subscription: SubscriptionId,
        publication: PublicationId,
    ) -> Result<(), ShardError> {
        self.request(|reply| Command::Subscribe {
            participant,
            subscription,
            publication,
            reply,
        })
        .await?
    }

    /// A new offer for the participant's subscriber connection; with `ice_restart`, with new
    /// ICE credentials.
    pub async fn subscriber_offer(
        &self,
        participant: ParticipantId,
        ice_restart: bool,
    ) -> Result<String, ShardError> {
        self.request(|reply| Command::Offer {
            participant,
            ice_restart,
            reply,
        })
        .await?
    }

    /// The client's answer to the last subscriber offer.
    pub async fn apply_answer(
        &self,
        participant: ParticipantId,
        sdp: String,
    ) -> Result<(), ShardError> {
        self.request(|reply| Command::Answer {
            participant,
            sdp,
            reply,
        })
        .await?
    }

    /// A candidate the client trickled for one of its connections.
    pub async fn add_candidate(
        &self,
        participant: ParticipantId,
        role: PeerRole,
        candidate: IceCandidate,
    ) -> Result<(), ShardError> {
        self.request(|reply| Command::Candidate {
            participant,
            role,
            candidate,
            reply,
        })
        .await?
    }

    /// Ends one of the participant's publications and every subscription to it.
    pub async fn unpublish(
        &self,
        participant: ParticipantId,
        publication: PublicationId,
    ) -> Result<(), ShardError> {
        self.request(|reply| Command::Unpublish {
            participant,
            publication,
            reply,
        })
        .await?
    }

    /// Changes one of the participant's subscriptions.
    pub async fn change_subscription(
        &self,
        participant: ParticipantId,
        subscription: SubscriptionId,
        change: SubscriptionChange,
    ) -> Result<(), ShardError> {
        self.request(|reply| Command::Change {
            participant,
            subscription,
            change,
            reply,
        })
        .await?
    }

    /// Mutes (nothing forwarded) or unmutes one publication.
    pub async fn set_muted(
        &self,
        publication: PublicationId,
        muted: bool,
    ) -> Result<(), ShardError> {
        self.request(|reply| Command::SetMuted {
            publication,
            muted,
            reply,
        })
        .await?
    }

    /// [`Shard::set_muted`] without waiting: queued behind the shard's earlier commands, so
    /// successive mutes apply in order. False when the command queue is full.
    pub fn queue_set_muted(&self, publication: PublicationId, muted: bool) -> bool {
        let (reply, _) = oneshot::channel();
        self.commands
            .try_send(Command::SetMuted {
                publication,
                muted,
                reply,
            })
            .is_ok()
    }

    /// Adds a publication produced inside the server (RTMP ingest) for `participant`, which
    /// joined without connections; its packets go through [`Shard::ingest_sink`].
    pub async fn ingest_publish(
        &self,
        participant: ParticipantId,
        publication: PublicationId,
        codec: CodecInfo,
        layers: u8,
    ) -> Result<(), ShardError> {
        self.request(|reply| Command::IngestPublish {
            participant,
            publication,
            codec,
            layers,
            reply,
        })
        .await?
    }

    /// Where ingest tasks hand this shard their RTP.
    pub fn ingest_sink(&self) -> IngestSink {
        self.ingest.clone()
    }

    /// Removes the participant, its connections, publications and subscriptions.
    pub async fn leave(&self, participant: ParticipantId) {
        let _ = self.commands.send(Command::Leave { participant }).await;
    }

    pub async fn stats(&self) -> Result<ShardStats, ShardError> {
        self.request(|reply| Command::Stats { reply }).await
    }

    /// For tests: blocks the shard's thread for `duration`, as a machine too busy to run it
    /// would, while its socket keeps queueing datagrams.
    #[doc(hidden)]
    pub async fn stall(&self, duration: std::time::Duration) -> Result<(), ShardError> {
        self.commands
            .send(Command::Stall(duration))
            .await
            .map_err(|_| ShardError::Stopped)
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop; the thread is not joined here, so dropping
        // a shard inside an async task never blocks it.
        let (closed, _) = mpsc::channel(1);
        self.commands = closed;
        let (closed, _) = mpsc::channel(1);
        self.ingest.tx = closed;
        drop(self.thread.take());
    }
}
