//! Driving Sluice with the sans-IO generator: the same JSON signaling over WebSocket as
//! [`crate::sluice_target`], with connections on the generator's threads instead of webrtc-rs
//! peers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use sluice_e2e::SignalClient;
use sluice_signaling::protocol::{
    ClientMessage, IceCandidate, MediaKind, PeerRole, ServerMessage, TrackInfo, TrackSource,
};
use tokio::sync::watch;

use crate::client::{self, AbortOnDrop, KeepAlive, MediaSource, Reception, SentCounters};
use crate::media::{self, VideoShape};
use crate::rtcgen::{Generator, PeerHandle, PeerState, Setup};
use crate::sluice_target::SluiceTarget;
use crate::stats::StampMode;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the subscriber's signaling loop waits for an event before looking again.
const SERVICE_WAIT: Duration = Duration::from_secs(5);

fn candidate_init(candidate: IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: candidate.candidate,
        sdp_mid: candidate.sdp_mid,
        sdp_mline_index: candidate.sdp_m_line_index,
        username_fragment: candidate.username_fragment,
        ..Default::default()
    }
}

/// Joins `room` and publishes one video (`shape`, simulcast per `target`) and one Opus track
/// from a generator connection.
pub async fn add_publisher(
    target: &SluiceTarget,
    generator: &Generator,
    room: &str,
    shape: VideoShape,
    ssrc_base: u32,
) -> Result<(MediaSource, KeepAlive)> {
    let mut signal = target.signal().await?;
    signal.join(target.token(room, "publisher")?).await?;
    let sent = Arc::new(SentCounters::default());
    let (peer, created) = generator
        .create(Setup::Publisher {
            shape,
            ssrc_base,
            simulcast: target.simulcast,
            sent: Arc::clone(&sent),
        })
        .await?;
    let codecs = sluice_sfu::transport::negotiated_codecs(&created.sdp);
    let mid_of = |mime: &str| {
        codecs
            .iter()
            .find(|(_, c)| c.mime_type.eq_ignore_ascii_case(mime))
            .map(|(mid, _)| mid.clone())
            .context("offered track missing")
    };
    let tracks = vec![
        TrackInfo {
            mid: mid_of("video/VP8")?,
            kind: MediaKind::Video,
            source: TrackSource::Camera,
            name: None,
            rids: target.simulcast.then(|| {
                client::SIMULCAST_LAYERS
                    .iter()
                    .map(|(rid, _)| (*rid).to_owned())
                    .collect()
            }),
        },
        TrackInfo {
            mid: mid_of("audio/opus")?,
            kind: MediaKind::Audio,
            source: TrackSource::Microphone,
            name: None,
            rids: None,
        },
    ];
    let request_id = signal.next_id();
    let published = signal
        .request(ClientMessage::Publish {
            request_id,
            sdp: created.sdp,
            tracks,
        })
        .await?;
    let ServerMessage::Published { sdp, .. } = published else {
        bail!("publish failed: {published:?}");
    };
    peer.apply_answer(sdp).await?;
    let mut state = created.state;
    connect(&mut signal, &peer, &mut state, PeerRole::Publisher).await?;
    Ok((MediaSource::counted(sent), Box::new((signal, peer))))
}

/// Joins `room` as `identity`, subscribes to everything published there and connects a
/// generator connection that records what it receives.
pub async fn add_subscriber(
    target: &SluiceTarget,
    generator: &Generator,
    room: &str,
    identity: &str,
) -> Result<(Reception, KeepAlive)> {
    let mut signal = target.signal().await?;
    let joined = signal.join(target.token(room, identity)?).await?;
    let ServerMessage::Joined { publications, .. } = joined else {
        bail!("join failed: {joined:?}");
    };
    ensure!(!publications.is_empty(), "nothing published in {room}");
    let reception = Reception::new(StampMode::PacketTrailer, media::now_ns());
    for publication in &publications {
        crate::sluice_target::subscribe(&mut signal, &publication.publication_id).await?;
    }
    // The server offers the subscriber connection; early trickle waits for the connection.
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut early = Vec::new();
    let offer = loop {
        ensure!(
            Instant::now() < deadline,
            "no offer within {CONNECT_TIMEOUT:?}"
        );
        match signal.next_event(Duration::from_millis(200)).await {
            Ok(ServerMessage::Offer { sdp }) => break sdp,
            Ok(ServerMessage::Trickle {
                target: PeerRole::Subscriber,
                candidate,
            }) => early.push(candidate),
            Ok(_) => {}
            Err(err) if err.to_string().starts_with("no event") => {}
            Err(err) => return Err(err),
        }
    };
    let (peer, created) = generator
        .create(Setup::Subscriber {
            offer,
            reception: reception.clone(),
        })
        .await?;
    send_answer(&mut signal, created.sdp).await?;
    for candidate in early {
        peer.add_candidate(candidate_init(candidate))?;
    }
    let mut state = created.state;
    connect(&mut signal, &peer, &mut state, PeerRole::Subscriber).await?;
    // Keep answering re-offers and taking trickle for as long as the subscriber lives.
    let service = AbortOnDrop(tokio::spawn(async move {
        loop {
            match signal.next_event(SERVICE_WAIT).await {
                Ok(event) => {
                    if let Err(err) =
                        handle_event(&mut signal, &peer, event, PeerRole::Subscriber).await
                    {
                        tracing::debug!(%err, "subscriber signaling ended");
                        return;
                    }
                }
                Err(err) if err.to_string().starts_with("no event") => {}
                Err(err) => {
                    tracing::debug!(%err, "subscriber signaling ended");
                    return;
                }
            }
        }
    }));
    Ok((reception, Box::new(service)))
}

async fn send_answer(signal: &mut SignalClient, sdp: String) -> Result<()> {
    let request_id = signal.next_id();
    let response = signal
        .request(ClientMessage::Answer { request_id, sdp })
        .await?;
    ensure!(
        matches!(response, ServerMessage::Ok { .. }),
        "answer refused: {response:?}"
    );
    Ok(())
}

/// One server event for a connection of `role`: its trickle, or (subscriber) a re-offer.
async fn handle_event(
    signal: &mut SignalClient,
    peer: &PeerHandle,
    event: ServerMessage,
    role: PeerRole,
) -> Result<()> {
    match event {
        ServerMessage::Trickle { target, candidate } if target == role => {
            peer.add_candidate(candidate_init(candidate))
        }
        ServerMessage::Offer { sdp } if role == PeerRole::Subscriber => {
            let answer = peer.answer(sdp).await?;
            send_answer(signal, answer).await
        }
        _ => Ok(()),
    }
}

/// Handles signaling until the connection is up (bounded by [`CONNECT_TIMEOUT`]).
async fn connect(
    signal: &mut SignalClient,
    peer: &PeerHandle,
    state: &mut watch::Receiver<PeerState>,
    role: PeerRole,
) -> Result<()> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while Instant::now() < deadline {
        match *state.borrow() {
            PeerState::Connected => return Ok(()),
            PeerState::Failed => bail!("{role:?} connection failed"),
            PeerState::New => {}
        }
        tokio::select! {
            changed = state.changed() => {
                changed.context("connection closed")?;
            }
            event = signal.next_event(Duration::from_millis(100)) => match event {
                Ok(event) => handle_event(signal, peer, event, role).await?,
                Err(err) if err.to_string().starts_with("no event") => {}
                Err(err) => return Err(err),
            },
        }
    }
    bail!("{role:?} connection not established within {CONNECT_TIMEOUT:?}")
}
