//! Driving Sluice: its JSON signaling over WebSocket, webrtc-rs peers for media.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sluice_e2e::SignalClient;
use sluice_e2e::peer::{ClientPeer, OPUS, VP8};
use sluice_signaling::auth::{Grants, TokenAuthority};
use sluice_signaling::protocol::{
    ClientMessage, ErrorCode, MediaKind, PeerRole, ServerMessage, TrackInfo, TrackSource,
};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::client::{self, AbortOnDrop, KeepAlive, Reception};
use crate::media::{self, VideoShape};
use crate::ramp::Refused;
use crate::stats::StampMode;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A Sluice server reachable at `ws_url` whose tokens are signed with `secret`.
#[derive(Debug, Clone)]
pub struct SluiceTarget {
    pub ws_url: String,
    pub secret: String,
    /// Publishers send simulcast video (q, h, f) instead of one layer.
    pub simulcast: bool,
}

/// Subscribes to `publication_id`. Refused at the server's capacity (`serverFull`), the
/// client leaves at once (a socket just dropped would keep its participant parked for a
/// resume) and the error is a [`Refused`].
pub(crate) async fn subscribe(signal: &mut SignalClient, publication_id: &str) -> Result<()> {
    let request_id = signal.next_id();
    let response = signal
        .request(ClientMessage::Subscribe {
            request_id,
            publication_id: publication_id.to_owned(),
        })
        .await?;
    match response {
        ServerMessage::Subscribed { .. } => Ok(()),
        ServerMessage::Error {
            code: ErrorCode::ServerFull,
            message,
            ..
        } => {
            let request_id = signal.next_id();
            let _ = signal.request(ClientMessage::Leave { request_id }).await;
            Err(Refused(message).into())
        }
        other => bail!("subscribe failed: {other:?}"),
    }
}

/// Signaling connections opened so far, to spread their source addresses (see
/// [`SluiceTarget::signal`]).
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Signaling connections per loopback source address: below the server's per-address cap (64).
const CONNECTIONS_PER_ADDRESS: usize = 32;

impl SluiceTarget {
    /// A signaling connection from a loopback address of its own every
    /// [`CONNECTIONS_PER_ADDRESS`] connections: the server caps connections per source address,
    /// and the load of hundreds of subscribers from one machine is not one abusive client.
    pub(crate) async fn signal(&self) -> Result<SignalClient> {
        let n = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let server: SocketAddr = self
            .ws_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .context("server address of the WebSocket URL")?;
        let last = u8::try_from(2 + (n / CONNECTIONS_PER_ADDRESS) % 250).unwrap_or(2);
        SignalClient::connect_from(&self.ws_url, server, IpAddr::from([127, 0, 0, last])).await
    }

    pub(crate) fn token(&self, room: &str, identity: &str) -> Result<String> {
        TokenAuthority::new(self.secret.as_bytes())
            .mint(
                &Grants {
                    room: room.to_owned(),
                    identity: identity.to_owned(),
                    can_publish: true,
                    can_subscribe: true,
                    ..Grants::default()
                },
                Duration::from_secs(3600),
            )
            .context("minting a token")
    }

    /// Joins the room `bench-probe` from a fresh connection, then pings: the time of each
    /// (the caller bounds the whole probe).
    pub async fn probe(&self, n: usize) -> Result<crate::overload::Probe> {
        let started = Instant::now();
        let mut signal = self.signal().await?;
        let joined = signal
            .join(self.token("bench-probe", &format!("probe-{n}"))?)
            .await?;
        ensure!(
            matches!(joined, ServerMessage::Joined { .. }),
            "probe join failed: {joined:?}"
        );
        let join_ms = started.elapsed().as_secs_f64() * 1e3;
        let pinged = Instant::now();
        let request_id = signal.next_id();
        let pong = signal.request(ClientMessage::Ping { request_id }).await?;
        ensure!(
            matches!(pong, ServerMessage::Ok { .. }),
            "ping refused: {pong:?}"
        );
        let ping_ms = pinged.elapsed().as_secs_f64() * 1e3;
        let request_id = signal.next_id();
        signal.send(&ClientMessage::Leave { request_id }).await?;
        Ok(crate::overload::Probe { join_ms, ping_ms })
    }

    /// Joins `room` and publishes one video (`shape`) and one Opus track.
    pub async fn add_publisher(
        &self,
        room: &str,
        shape: VideoShape,
        ssrc_base: u32,
    ) -> Result<(client::MediaSource, KeepAlive)> {
        let mut signal = self.signal().await?;
        signal.join(self.token(room, "publisher")?).await?;
        let layer_ssrcs = [ssrc_base, ssrc_base + 2, ssrc_base + 3];
        let (mut peer, video) = if self.simulcast {
            let peer = ClientPeer::simulcast_publisher().await?;
            let layers: Vec<(&str, u32)> = client::SIMULCAST_LAYERS
                .iter()
                .zip(layer_ssrcs)
                .map(|((rid, _), ssrc)| (*rid, ssrc))
                .collect();
            let video = peer.add_simulcast_track(VP8, &layers).await?;
            (peer, video)
        } else {
            let peer = ClientPeer::new().await?;
            let video = peer.add_send_track(VP8, ssrc_base).await?;
            (peer, video)
        };
        let audio = peer.add_send_track(OPUS, ssrc_base + 1).await?;
        let offer = peer.offer().await?;
        let codecs = sluice_sfu::transport::negotiated_codecs(&offer);
        let mid_of = |mime: &str| {
            codecs
                .iter()
                .find(|(_, c)| c.mime_type.eq_ignore_ascii_case(mime))
                .map(|(mid, _)| mid.clone())
                .context("offered track missing")
        };
        let video_mid = mid_of(VP8)?;
        let tracks = vec![
            TrackInfo {
                mid: video_mid.clone(),
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                name: None,
                rids: self.simulcast.then(|| {
                    client::SIMULCAST_LAYERS
                        .iter()
                        .map(|(rid, _)| (*rid).to_owned())
                        .collect()
                }),
            },
            TrackInfo {
                mid: mid_of(OPUS)?,
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
                sdp: offer,
                tracks,
            })
            .await?;
        let ServerMessage::Published { sdp, .. } = published else {
            bail!("publish failed: {published:?}");
        };
        peer.apply_answer(sdp).await?;
        connect(&mut signal, &mut peer, PeerRole::Publisher).await?;
        let source = if self.simulcast {
            client::start_simulcast_media(
                video,
                audio,
                shape,
                video_mid,
                layer_ssrcs,
                ssrc_base + 1,
            )
        } else {
            client::start_media(video, audio, shape, (ssrc_base, ssrc_base + 1))
        };
        Ok((source, Box::new((signal, peer))))
    }

    /// Joins `room` as `identity`, subscribes to everything published there and connects.
    pub async fn add_subscriber(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<(Reception, KeepAlive)> {
        let mut signal = self.signal().await?;
        let joined = signal.join(self.token(room, identity)?).await?;
        let ServerMessage::Joined { publications, .. } = joined else {
            bail!("join failed: {joined:?}");
        };
        ensure!(!publications.is_empty(), "nothing published in {room}");
        let mut peer = ClientPeer::new().await?;
        let reception = Reception::new(StampMode::PacketTrailer, media::now_ns());
        let tracks = std::mem::replace(&mut peer.tracks, tokio::sync::mpsc::unbounded_channel().1);
        let readers = AbortOnDrop(client::spawn_track_readers(tracks, reception.clone()));
        for publication in &publications {
            subscribe(&mut signal, &publication.publication_id).await?;
        }
        connect(&mut signal, &mut peer, PeerRole::Subscriber).await?;
        // Keep answering re-offers (a second subscription may be negotiated after the first
        // connected) and trickling, for as long as the subscriber lives.
        let service = AbortOnDrop(tokio::spawn(async move {
            loop {
                if let Err(err) = service_events(&mut signal, &mut peer).await {
                    tracing::debug!(%err, "subscriber signaling ended");
                    return;
                }
            }
        }));
        Ok((reception, Box::new((service, readers))))
    }
}

/// Handles one round of subscriber-connection signaling; `Err` when the socket is gone.
async fn service_events(signal: &mut SignalClient, peer: &mut ClientPeer) -> Result<()> {
    while let Ok(candidate) = peer.candidates.try_recv() {
        signal.trickle(PeerRole::Subscriber, candidate).await?;
    }
    match signal.next_event(Duration::from_millis(200)).await {
        Ok(ServerMessage::Trickle {
            target: PeerRole::Subscriber,
            candidate,
        }) => peer.add_candidate(candidate).await,
        Ok(ServerMessage::Offer { sdp }) => {
            let answer = peer.answer(sdp).await?;
            let request_id = signal.next_id();
            signal
                .request(ClientMessage::Answer {
                    request_id,
                    sdp: answer,
                })
                .await?;
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(err) if err.to_string().starts_with("no event") => Ok(()),
        Err(err) => Err(err),
    }
}

/// Trickles candidates both ways (and answers the server's offers) until connected.
async fn connect(signal: &mut SignalClient, peer: &mut ClientPeer, target: PeerRole) -> Result<()> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while Instant::now() < deadline {
        if *peer.state.borrow() == RTCPeerConnectionState::Connected {
            // Offers still queued (none expected) would be answered by nobody: drain them.
            return Ok(());
        }
        while let Ok(candidate) = peer.candidates.try_recv() {
            signal.trickle(target, candidate).await?;
        }
        match signal.next_event(Duration::from_millis(20)).await {
            Ok(ServerMessage::Trickle {
                target: t,
                candidate,
            }) if t == target => peer.add_candidate(candidate).await?,
            Ok(ServerMessage::Offer { sdp }) if target == PeerRole::Subscriber => {
                let answer = peer.answer(sdp).await?;
                let request_id = signal.next_id();
                let response = signal
                    .request(ClientMessage::Answer {
                        request_id,
                        sdp: answer,
                    })
                    .await?;
                ensure!(
                    matches!(response, ServerMessage::Ok { .. }),
                    "answer refused: {response:?}"
                );
            }
            Ok(_) | Err(_) => {}
        }
    }
    bail!("{target:?} connection not established within {CONNECT_TIMEOUT:?}")
}
