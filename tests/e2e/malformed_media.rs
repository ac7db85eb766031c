//! Malformed media through the real input path: a peer that completed ICE, DTLS and SRTP with
//! a `sluice` server on the shard plane sends, SRTP-protected, RTP with other versions, absurd
//! CSRC counts, extension and padding lengths, empty and truncated payloads, reordered,
//! duplicated, old and far-jumping sequence numbers, and floods of NACK, PLI, REMB and TWCC
//! feedback; a relay on its path adds truncated and corrupted SRTP, other SSRCs and replays
//! from the same address. The server must not panic, keep answering signaling, keep another
//! room's viewer fed without a gap, and forward the attacker's own stream again afterwards.
//! Sequence numbers thousands behind or ahead come last: they desynchronize the attacker's own
//! SRTP index (the sender's and the receiver's rollover estimates part, and every later packet
//! fails authentication), so its stream cannot come back after them, by SRTP's design.
//! SSRC changes that reach the server decrypted (the relay's cannot: it has no keys) are in
//! `ssrc_change`.

mod mangle;
mod ssrc_change;
mod ssrc_switch;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
    TransportLayerCc,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::rtp;
use sluice_e2e::peer::{ClientPeer, VP8};
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_sfu::transport::negotiated_codecs;
use sluice_signaling::protocol::{ClientMessage, MediaKind, ServerMessage, TrackInfo, TrackSource};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::synthetic::{KEYFRAME_EVERY, video_index, video_packet};
use mangle::MangleRelay;

const CONNECT_WAIT: Duration = Duration::from_secs(15);
/// One video packet every 10 ms, from each publisher.
const PACING: Duration = Duration::from_millis(10);
const ATTACK: Duration = Duration::from_secs(4);
/// How long the attacker sends sequence numbers far from its stream's, after the rest.
const FAR_SEQUENCES: Duration = Duration::from_secs(1);
/// The victim viewer's longest silence allowed during the attack: a third of a second of
/// video lost would be a visible freeze.
const MAX_VICTIM_GAP: Duration = Duration::from_millis(300);

/// Panics anywhere in this process (the server's threads included) since the hook went in.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

struct Publisher {
    signal: SignalClient,
    peer: ClientPeer,
    track: Arc<TrackLocalStaticRTP>,
    publication_id: String,
    /// The media section of the track.
    mid: String,
}

/// Joins `room` as `identity` and publishes one VP8 track; `relayed`, the client reaches the
/// server only through a [`MangleRelay`] (the answer's candidates name it), returned too.
async fn publish(
    server: &TestServer,
    room: &str,
    identity: &str,
    relayed: bool,
) -> Result<(Publisher, Option<MangleRelay>)> {
    let peer = ClientPeer::new().await?;
    let track = peer.add_send_track(VP8, 0x1111).await?;
    publish_track(server, room, identity, (peer, track), None, relayed).await
}

/// Joins `room` as `identity` and publishes `peer`'s one VP8 `track` (a simulcast one with
/// `rids`), as [`publish`].
async fn publish_track(
    server: &TestServer,
    room: &str,
    identity: &str,
    (mut peer, track): (ClientPeer, Arc<TrackLocalStaticRTP>),
    rids: Option<Vec<String>>,
    relayed: bool,
) -> Result<(Publisher, Option<MangleRelay>)> {
    let mut signal = SignalClient::connect(&server.ws_url()).await?;
    signal.join(token(room, identity)).await?;
    let offer = peer.offer().await?;
    let mid = negotiated_codecs(&offer)
        .into_iter()
        .find(|(_, c)| c.mime_type.eq_ignore_ascii_case(VP8))
        .map(|(mid, _)| mid)
        .context("offered track missing")?;
    let request_id = signal.next_id();
    let published = signal
        .request(ClientMessage::Publish {
            request_id,
            tracks: vec![TrackInfo {
                mid: mid.clone(),
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                name: None,
                rids,
            }],
            sdp: offer,
        })
        .await?;
    let ServerMessage::Published {
        sdp, publications, ..
    } = published
    else {
        bail!("publish failed: {published:?}");
    };
    let (sdp, relay) = if relayed {
        let relay = MangleRelay::start(media_address(&sdp)?).await?;
        (through(&sdp, relay.client_side)?, Some(relay))
    } else {
        (sdp, None)
    };
    peer.apply_answer(sdp).await?;
    peer.wait_connected(CONNECT_WAIT).await?;
    let publication_id = publications
        .first()
        .map(|p| p.publication_id.clone())
        .context("no publication")?;
    let publisher = Publisher {
        signal,
        peer,
        track,
        publication_id,
        mid,
    };
    Ok((publisher, relay))
}

/// The server's UDP media address in an answer (the shard's one port).
fn media_address(sdp: &str) -> Result<std::net::SocketAddr> {
    let line = sdp
        .lines()
        .find(|l| l.starts_with("a=candidate:") && l.to_ascii_lowercase().contains(" udp "))
        .context("no UDP candidate in the answer")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (ip, port) = (fields.get(4), fields.get(5));
    Ok(format!("{}:{}", ip.context("no address")?, port.context("no port")?).parse()?)
}

/// The answer with its UDP candidates pointing at `relay` and no others.
fn through(sdp: &str, relay: std::net::SocketAddr) -> Result<String> {
    let server = media_address(sdp)?;
    let mut out = String::new();
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("a=candidate:") {
            if !line.to_ascii_lowercase().contains(" udp ") {
                continue;
            }
            out.push_str(&line.replace(
                &format!("{} {}", server.ip(), server.port()),
                &format!("{} {}", relay.ip(), relay.port()),
            ));
        } else {
            out.push_str(line);
        }
    }
    Ok(out)
}

struct Viewer {
    signal: SignalClient,
    peer: ClientPeer,
    /// (arrival, packet) of every video packet received.
    log: Arc<Mutex<Vec<(Instant, rtp::Packet)>>>,
    track: Arc<Mutex<Option<Arc<dyn TrackRemote>>>>,
}

/// Joins `room` as `identity`, subscribes to `publication_id` and records what arrives.
async fn view(
    server: &TestServer,
    room: &str,
    identity: &str,
    publication_id: &str,
) -> Result<Viewer> {
    let mut signal = SignalClient::connect(&server.ws_url()).await?;
    signal.join(token(room, identity)).await?;
    let mut peer = ClientPeer::new().await?;
    let log: Arc<Mutex<Vec<(Instant, rtp::Packet)>>> = Arc::default();
    let track: Arc<Mutex<Option<Arc<dyn TrackRemote>>>> = Arc::default();
    let mut tracks = std::mem::replace(&mut peer.tracks, tokio::sync::mpsc::unbounded_channel().1);
    {
        let (log, slot) = (Arc::clone(&log), Arc::clone(&track));
        tokio::spawn(async move {
            while let Some(remote) = tracks.recv().await {
                *slot.lock().expect("track") = Some(Arc::clone(&remote));
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    while let Some(event) = remote.poll().await {
                        if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                            log.lock().expect("log").push((Instant::now(), packet));
                        }
                    }
                });
            }
        });
    }
    let request_id = signal.next_id();
    let response = signal
        .request(ClientMessage::Subscribe {
            request_id,
            publication_id: publication_id.to_owned(),
        })
        .await?;
    ensure!(
        matches!(response, ServerMessage::Subscribed { .. }),
        "subscribe failed: {response:?}"
    );
    let deadline = Instant::now() + CONNECT_WAIT;
    while *peer.state.borrow() != webrtc::peer_connection::RTCPeerConnectionState::Connected {
        ensure!(Instant::now() < deadline, "{identity} did not connect");
        if let Ok(ServerMessage::Offer { sdp }) = signal.next_event(Duration::from_millis(50)).await
        {
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
                "answer refused"
            );
        }
    }
    Ok(Viewer {
        signal,
        peer,
        log,
        track,
    })
}

/// Sends the synthetic video stream from index `from` until `stop`, noting when each packet
/// went out in `sent`; returns the next index.
fn stream(
    track: Arc<TrackLocalStaticRTP>,
    from: u32,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Instant>>>,
) -> tokio::task::JoinHandle<Result<u32>> {
    tokio::spawn(async move {
        let mut index = from;
        while !stop.load(Ordering::Relaxed) {
            track.write_rtp(video_packet(index, 0, 0)).await?;
            sent.lock().expect("sent").push(Instant::now());
            index += 1;
            tokio::time::sleep(PACING).await;
        }
        Ok(index)
    })
}

/// The hostile variants of legitimate packet `index` the attacker's client sends through its
/// own SRTP session (each well-formed enough for the client to encrypt).
fn hostile(index: u32, round: u32) -> Vec<rtp::Packet> {
    let base = video_packet(index, 0, 0);
    let with = |f: &dyn Fn(&mut rtp::Packet)| {
        let mut p = base.clone();
        f(&mut p);
        p
    };
    vec![
        with(&|p| p.header.version = [0, 1, 3][(round % 3) as usize]),
        with(&|p| p.header.csrc = (0..15).collect()),
        with(&|p| p.header.csrc = (0..16).collect()),
        // Padding after a one-byte payload (the client writes the padding length).
        with(&|p| {
            p.header.padding = true;
            p.payload = Bytes::from_static(&[0x10]);
        }),
        with(&|p| {
            p.header.extension = true;
            p.header.extension_profile = 0x1000;
            p.header.extensions = vec![rtp::header::Extension {
                id: 1,
                payload: Bytes::from(vec![0xab; 1000]),
            }];
        }),
        with(&|p| p.payload = Bytes::new()),
        with(&|p| p.payload = Bytes::from_static(&[0x80])),
        with(&|p| p.payload = Bytes::from_static(&[0x90, 0xff, 0xff])),
        // Duplicated, and a timestamp a minute back.
        base.clone(),
        with(&|p| p.header.timestamp = p.header.timestamp.wrapping_sub(90_000 * 60)),
    ]
}

/// Packet `index` with a sequence number thousands behind, and thousands ahead.
fn far_sequence_numbers(index: u32) -> [rtp::Packet; 2] {
    let (mut old, mut ahead) = (video_packet(index, 0, 0), video_packet(index, 0, 0));
    old.header.sequence_number = old.header.sequence_number.wrapping_sub(5_000);
    ahead.header.sequence_number = ahead.header.sequence_number.wrapping_add(30_000);
    [old, ahead]
}

/// One round of subscriber feedback the attacker floods the server with.
fn feedback_flood(media_ssrc: u32, round: u32) -> Vec<Box<dyn rtc::rtcp::Packet>> {
    vec![
        Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc,
            nacks: (0..64u16)
                .map(|i| NackPair {
                    packet_id: (round as u16).wrapping_mul(97).wrapping_add(i * 17),
                    lost_packets: 0xffff,
                })
                .collect(),
        }),
        Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc,
        }),
        Box::new(ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: if round.is_multiple_of(2) { 0.0 } else { 1e15 },
            ssrcs: vec![media_ssrc; 8],
        }),
        Box::new(TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc,
            base_sequence_number: round as u16,
            packet_status_count: 0xffff,
            reference_time: round,
            fb_pkt_count: round as u8,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                run_length: 0x1fff,
            })],
            recv_deltas: vec![RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: 250,
            }],
        }),
    ]
}

/// Packets received in `window`, and the longest silence inside it (edges included).
fn window_figures(log: &[(Instant, rtp::Packet)], from: Instant, to: Instant) -> (usize, Duration) {
    let arrivals: Vec<Instant> = log
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| (from..to).contains(at))
        .collect();
    let mut gap = Duration::ZERO;
    let mut last = from;
    for at in arrivals.iter().copied().chain([to]) {
        gap = gap.max(at.saturating_duration_since(last));
        last = at;
    }
    (arrivals.len(), gap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_media_harms_neither_the_server_nor_another_room() -> Result<()> {
    init_tracing();
    count_panics();
    let server = TestServer::start().await?;

    // The victim: another room on the same server, one publisher and one viewer.
    let (victim, _) = publish(&server, "victim", "camera", false).await?;
    let stop_victim = Arc::new(AtomicBool::new(false));
    let victim_sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let victim_sender = stream(
        Arc::clone(&victim.track),
        0,
        Arc::clone(&stop_victim),
        Arc::clone(&victim_sent),
    );
    let victim_viewer = view(&server, "victim", "viewer", &victim.publication_id).await?;

    // The attacker publishes through the mangling relay and watches its own stream.
    let (mut attacker, relay) = publish(&server, "attack", "attacker", true).await?;
    let relay = relay.context("no relay")?;
    let stop_legit = Arc::new(AtomicBool::new(false));
    let legit = stream(
        Arc::clone(&attacker.track),
        0,
        Arc::clone(&stop_legit),
        Arc::default(),
    );
    let watcher = view(&server, "attack", "watcher", &attacker.publication_id).await?;
    let until = Instant::now() + Duration::from_secs(5);
    while watcher.log.lock().expect("log").len() < 50 {
        ensure!(
            Instant::now() < until,
            "the attacker's stream never reached its watcher"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_legit.store(true, Ordering::Relaxed);
    let mut next = legit.await.context("legit sender")??;

    // The attack.
    let started = Instant::now();
    relay.arm(true);
    let watched = watcher
        .track
        .lock()
        .expect("track")
        .clone()
        .context("no track")?;
    let media_ssrc = watcher
        .log
        .lock()
        .expect("log")
        .first()
        .map(|(_, p)| p.header.ssrc)
        .context("no packet")?;
    let mut round = 0u32;
    let (mut hostile_sent, mut feedback_sent) = (0u64, 0u64);
    while started.elapsed() < ATTACK {
        let mut batch = hostile(next, round);
        if round.is_multiple_of(10) {
            // Ten packets in reverse order.
            batch.extend((next..next + 10).rev().map(|i| video_packet(i, 0, 0)));
            next += 10;
        }
        for packet in batch {
            // The client refuses some variants itself; the rest go out under SRTP.
            if attacker.track.write_rtp(packet).await.is_ok() {
                hostile_sent += 1;
            }
        }
        for _ in 0..4 {
            if watched
                .write_rtcp(feedback_flood(media_ssrc, round))
                .await
                .is_ok()
            {
                feedback_sent += 4;
            }
            // The publisher side too: feedback where none belongs.
            let _ = attacker
                .track
                .write_rtcp(feedback_flood(0x1111, round))
                .await;
        }
        next += 1;
        round += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.arm(false);
    let ended = Instant::now();

    // Afterwards: the attacker's legitimate stream goes on from the next keyframe.
    let resume_at = next.next_multiple_of(KEYFRAME_EVERY);
    let stop_legit = Arc::new(AtomicBool::new(false));
    let legit = stream(
        Arc::clone(&attacker.track),
        resume_at,
        Arc::clone(&stop_legit),
        Arc::default(),
    );
    let recovered = |log: &[(Instant, rtp::Packet)]| {
        log.iter()
            .filter(|(at, p)| {
                *at > ended && video_index(&p.payload).is_some_and(|i| i >= resume_at)
            })
            .count()
    };
    let until = Instant::now() + Duration::from_secs(5);
    while recovered(&watcher.log.lock().expect("log")) < 100 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_legit.store(true, Ordering::Relaxed);
    let next = legit.await.context("legit sender")??;
    let recovered = recovered(&watcher.log.lock().expect("log"));

    // Last, sequence numbers far behind and ahead (the end of the attacker's SRTP stream).
    let far_started = Instant::now();
    let mut far_sent = 0u32;
    while far_started.elapsed() < FAR_SEQUENCES {
        for packet in far_sequence_numbers(next + far_sent) {
            attacker.track.write_rtp(packet).await?;
        }
        far_sent += 1;
        tokio::time::sleep(PACING).await;
    }
    let attack_ended = Instant::now();

    // The server still answers signaling: a new participant joins and pings.
    let mut late = SignalClient::connect(&server.ws_url()).await?;
    let joined = late.join(token("after", "late")).await?;
    ensure!(
        matches!(joined, ServerMessage::Joined { .. }),
        "join after the attack: {joined:?}"
    );
    let request_id = late.next_id();
    late.request(ClientMessage::Ping { request_id }).await?;
    let request_id = attacker.signal.next_id();
    attacker
        .signal
        .request(ClientMessage::Ping { request_id })
        .await?;

    stop_victim.store(true, Ordering::Relaxed);
    victim_sender.await.context("victim sender")??;
    // Over the whole attack, the recovery check included.
    let (victim_packets, victim_gap) = window_figures(
        &victim_viewer.log.lock().expect("log"),
        started,
        attack_ended,
    );
    let victim_sent = victim_sent
        .lock()
        .expect("sent")
        .iter()
        .filter(|at| (started..attack_ended).contains(*at))
        .count();
    eprintln!(
        "malformed media: {hostile_sent} hostile RTP packets and {feedback_sent} feedback \
         packets sent under SRTP, {} mangled datagrams injected in {:?}, then {} packets with \
         far sequence numbers; victim viewer over {:?}: {victim_packets} packets of \
         {victim_sent} sent, longest gap {victim_gap:?}; attacker's stream: {recovered} packets \
         forwarded after the attack; panics: {}",
        relay.injected(),
        ended - started,
        far_sent * 2,
        attack_ended - started,
        PANICS.load(Ordering::SeqCst)
    );
    ensure!(PANICS.load(Ordering::SeqCst) == 0, "the server panicked");
    ensure!(relay.injected() > 1_000, "the relay injected too little");
    ensure!(hostile_sent > 1_000, "too few hostile packets went out");
    ensure!(
        victim_gap <= MAX_VICTIM_GAP,
        "the victim viewer went {victim_gap:?} without a packet during the attack"
    );
    ensure!(
        victim_packets * 100 >= victim_sent * 95,
        "the victim viewer got {victim_packets} of {victim_sent} packets during the attack"
    );
    ensure!(
        recovered >= 100,
        "the attacker's stream did not recover ({recovered} packets)"
    );

    for peer in [
        &victim.peer,
        &victim_viewer.peer,
        &attacker.peer,
        &watcher.peer,
    ] {
        peer.close().await;
    }
    drop((victim.signal, victim_viewer.signal, watcher.signal, late));
    server.stop().await;
    Ok(())
}
