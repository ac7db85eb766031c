//! The shard media plane against webrtc-rs clients over real ICE/DTLS/SRTP on loopback: one
//! publisher's packets reach two subscribers with their headers rewritten and the payload
//! bytes unchanged, ICE-lite never sends anything to an address a client merely named, and a
//! server built on the shard plane does the same through signaling.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use sluice_e2e::peer::{ClientPeer, OPUS, VP8};
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};

use crate::liveness::VideoPublisher;
use crate::synthetic::{
    KEYFRAME_EVERY, audio_packet, check_received, index_of, video_index, video_packet,
    video_payload,
};
use sluice_sfu::core::{MediaKind, ParticipantId, PublicationId, SubscriptionId};
use sluice_sfu::shard::{PublishTrack, Shard, ShardConfig, ShardError};
use sluice_sfu::transport::{IceCandidate, PeerRole, negotiated_codecs};
use sluice_signaling::protocol::{ClientMessage, ServerMessage};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

const VIDEO_PACKETS: u32 = 300;
const CONNECT_WAIT: Duration = Duration::from_secs(15);

pub(crate) fn mid_of(offer: &str, mime: &str) -> Result<String> {
    negotiated_codecs(offer)
        .into_iter()
        .find(|(_, c)| c.mime_type.eq_ignore_ascii_case(mime))
        .map(|(mid, _)| mid)
        .context("offered track missing")
}

/// Joins `participant` and returns the queue its connection changes arrive on.
async fn join(shard: &Shard, participant: ParticipantId) -> Result<()> {
    let (events, mut rx) = mpsc::channel(64);
    shard.join("room", participant, "publisher", events).await?;
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Ok(())
}

/// Hands the client's gathered candidates to the shard (counted there, never contacted).
async fn trickle(
    shard: &Shard,
    participant: ParticipantId,
    role: PeerRole,
    peer: &mut ClientPeer,
) -> Result<()> {
    while let Ok(candidate) = peer.candidates.try_recv() {
        let candidate = IceCandidate {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_m_line_index: candidate.sdp_m_line_index,
            username_fragment: candidate.username_fragment,
        };
        shard.add_candidate(participant, role, candidate).await?;
    }
    Ok(())
}

pub(crate) struct Received {
    pub(crate) video: bool,
    pub(crate) packets: Vec<rtp::Packet>,
}

/// Records every packet of every track `peer` receives.
pub(crate) fn collect(peer: &mut ClientPeer) -> Arc<Mutex<Vec<Received>>> {
    let log: Arc<Mutex<Vec<Received>>> = Arc::default();
    let mut tracks = std::mem::replace(&mut peer.tracks, mpsc::unbounded_channel().1);
    let sink = Arc::clone(&log);
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let track: Arc<dyn TrackRemote> = track;
            let video = track.kind().await == rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video;
            let slot = {
                let mut log = sink.lock().expect("log");
                log.push(Received {
                    video,
                    packets: Vec::new(),
                });
                log.len() - 1
            };
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                        sink.lock().expect("log")[slot].packets.push(packet);
                    }
                }
            });
        }
    });
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_forwards_one_publisher_to_two_subscribers() -> Result<()> {
    init_tracing();
    let shard = Shard::spawn(ShardConfig::default())?;
    let publisher = ParticipantId(1);
    let (video_pub, audio_pub) = (PublicationId(10), PublicationId(11));
    join(&shard, publisher).await?;

    let mut publisher_peer = ClientPeer::new().await?;
    let video = publisher_peer.add_send_track(VP8, 0x1111).await?;
    let audio = publisher_peer.add_send_track(OPUS, 0x2222).await?;
    let offer = publisher_peer.offer().await?;
    let tracks = vec![
        PublishTrack {
            mid: mid_of(&offer, VP8)?,
            kind: MediaKind::Video,
            publication: video_pub,
            rids: Vec::new(),
        },
        PublishTrack {
            mid: mid_of(&offer, OPUS)?,
            kind: MediaKind::Audio,
            publication: audio_pub,
            rids: Vec::new(),
        },
    ];
    let answer = shard.publish(publisher, offer, tracks).await?;
    ensure!(answer.contains("a=ice-lite"), "the answer is ICE-lite");
    publisher_peer.apply_answer(answer).await?;
    publisher_peer.wait_connected(CONNECT_WAIT).await?;
    trickle(&shard, publisher, PeerRole::Publisher, &mut publisher_peer).await?;

    // The publisher counts the keyframe requests (PLI) the shard sends it.
    let plis = Arc::new(Mutex::new(0usize));
    {
        let (plis, video) = (Arc::clone(&plis), Arc::clone(&video));
        tokio::spawn(async move {
            while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = video.poll().await {
                if packets
                    .iter()
                    .any(|p| p.as_any().is::<PictureLossIndication>())
                {
                    *plis.lock().expect("plis") += 1;
                }
            }
        });
    }

    // Media flows before anyone subscribes: each subscriber joins mid-stream and must start
    // on a keyframe.
    let sender = {
        let (video, audio) = (Arc::clone(&video), Arc::clone(&audio));
        tokio::spawn(async move {
            for index in 0..VIDEO_PACKETS {
                video.write_rtp(video_packet(index, 65400, 1000)).await?; // wraps mid-stream on purpose
                if index % 2 == 0 {
                    let audio_index = index / 2;
                    audio.write_rtp(audio_packet(audio_index)).await?;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        })
    };

    let mut subscribers = Vec::new();
    for n in 0..2u64 {
        let subscriber = ParticipantId(100 + n);
        join(&shard, subscriber).await?;
        shard
            .subscribe(subscriber, SubscriptionId(200 + 2 * n), video_pub)
            .await?;
        shard
            .subscribe(subscriber, SubscriptionId(201 + 2 * n), audio_pub)
            .await?;
        let offer = shard.subscriber_offer(subscriber, false).await?;
        let mut peer = ClientPeer::new().await?;
        let log = collect(&mut peer);
        let answer = peer.answer(offer).await?;
        shard.apply_answer(subscriber, answer).await?;
        peer.wait_connected(CONNECT_WAIT).await?;
        trickle(&shard, subscriber, PeerRole::Subscriber, &mut peer).await?;
        subscribers.push((subscriber, peer, log));
    }

    sender.await.context("sender task")??;
    let last_arrived = |received: &Received| {
        received.packets.last().is_some_and(|p| {
            if received.video {
                video_index(&p.payload) == Some(VIDEO_PACKETS - 1)
            } else {
                index_of(&p.payload, 1) == Some(VIDEO_PACKETS / 2 - 1)
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline
        && !subscribers.iter().all(|(_, _, log)| {
            let log = log.lock().expect("log");
            log.len() == 2 && log.iter().all(last_arrived)
        })
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for (subscriber, _, log) in &subscribers {
        let log = log.lock().expect("log");
        ensure!(
            log.len() == 2,
            "{subscriber}: expected 2 tracks, got {}",
            log.len()
        );
        for received in log.iter() {
            let (kind, total) = if received.video {
                ("video", VIDEO_PACKETS)
            } else {
                ("audio", VIDEO_PACKETS / 2)
            };
            let packets = &received.packets;
            let first = check_received(&subscriber.to_string(), received.video, packets, total)?;
            let ssrc = packets[0].header.ssrc;
            ensure!(
                ssrc != 0x1111 && ssrc != 0x2222,
                "{subscriber}: {kind} SSRC was not rewritten"
            );
            ensure!(
                first < total * 3 / 4,
                "{subscriber}: {kind} started late, at {first} of {total}"
            );
            eprintln!(
                "{subscriber}: {kind} {} packets identical from {first}",
                packets.len()
            );
        }
    }
    ensure!(
        *plis.lock().expect("plis") >= 1,
        "a new video subscriber makes the shard ask the publisher for a keyframe"
    );
    let stats = shard.stats().await?;
    eprintln!("shard stats: {stats:?}");
    ensure!(
        stats.egress_refused == 0,
        "nothing to refuse in a clean run"
    );

    for (subscriber, peer, _) in &subscribers {
        peer.close().await;
        shard.leave(*subscriber).await;
    }
    publisher_peer.close().await;
    shard.leave(publisher).await;
    Ok(())
}

/// A STUN binding request naming `username`, with a MESSAGE-INTEGRITY that is not ours.
fn forged_check(username: &str) -> Vec<u8> {
    let value = username.as_bytes();
    let padded = value.len().next_multiple_of(4);
    let body = 4 + padded + 4 + 20;
    let mut out = vec![0x00, 0x01];
    out.extend_from_slice(&u16::try_from(body).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    out.extend_from_slice(&[9; 12]);
    out.extend_from_slice(&[0x00, 0x06]);
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(20 + 4 + padded, 0);
    out.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    out.extend_from_slice(&[0xab; 20]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_sends_nothing_to_a_named_bystander() -> Result<()> {
    init_tracing();
    let config = ShardConfig {
        max_remote_candidates: 8,
        ..ShardConfig::default()
    };
    let cap = config.max_remote_candidates;
    let shard = Shard::spawn(config)?;
    let bystander = tokio::net::UdpSocket::bind("127.0.0.2:0").await?;
    let bystander_addr = bystander.local_addr()?;
    let participant = ParticipantId(1);
    join(&shard, participant).await?;

    let mut peer = ClientPeer::new().await?;
    let _video = peer.add_send_track(VP8, 0x1111).await?;
    let offer = peer.offer().await?;
    let mid = mid_of(&offer, VP8)?;
    // The offer itself names the bystander too.
    let named = format!(
        "candidate:9 1 udp 2130706431 {} {} typ host",
        bystander_addr.ip(),
        bystander_addr.port()
    );
    let offer = offer.replacen(
        &format!("a=mid:{mid}\r\n"),
        &format!("a=mid:{mid}\r\na={named}\r\n"),
        1,
    );
    let ufrag_of = |sdp: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned)
            .context("description without ufrag")
    };
    let client_ufrag = ufrag_of(&offer)?;
    let offered_candidates = offer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .count();
    let tracks = vec![PublishTrack {
        mid: mid.clone(),
        kind: MediaKind::Video,
        publication: PublicationId(10),
        rids: Vec::new(),
    }];
    let answer = shard.publish(participant, offer, tracks).await?;
    let server_ufrag = ufrag_of(&answer)?;
    peer.apply_answer(answer).await?;

    // Trickled: the bystander again, as host and as server-reflexive candidate.
    let trickled = |candidate: String| IceCandidate {
        candidate,
        sdp_mid: Some(mid.clone()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    };
    shard
        .add_candidate(participant, PeerRole::Publisher, trickled(named.clone()))
        .await?;
    let srflx = format!(
        "candidate:10 1 udp 1694498815 {} {} typ srflx raddr 0.0.0.0 rport 0",
        bystander_addr.ip(),
        bystander_addr.port()
    );
    shard
        .add_candidate(participant, PeerRole::Publisher, trickled(srflx))
        .await?;
    let garbage = shard
        .add_candidate(
            participant,
            PeerRole::Publisher,
            trickled("candidate:x".to_owned()),
        )
        .await;
    ensure!(
        matches!(garbage, Err(ShardError::InvalidCandidate(_))),
        "a malformed candidate is refused: {garbage:?}"
    );
    peer.wait_connected(CONNECT_WAIT).await?;

    // A check from the bystander with the right USERNAME but without our password gets no
    // answer either.
    bystander
        .send_to(
            &forged_check(&format!("{server_ufrag}:{client_ufrag}")),
            shard.local_addr(),
        )
        .await?;

    // Candidates past the cap are refused: the offer's count, and the srflx one trickled (the
    // trickled host candidate repeats one of the offer's and is held once).
    let mut refused = None;
    for port in 0..2 * cap {
        let line = format!(
            "candidate:{port} 1 udp 1 127.0.0.3 {} typ host",
            20000 + port
        );
        if let Err(err) = shard
            .add_candidate(participant, PeerRole::Publisher, trickled(line))
            .await
        {
            refused = Some((port, err));
            break;
        }
    }
    let Some((at, err)) = refused else {
        bail!("no candidate refused past the cap of {cap}");
    };
    ensure!(
        matches!(err, ShardError::TooManyCandidates(c) if c == cap),
        "refused for the cap: {err}"
    );
    ensure!(
        offered_candidates + 1 + at == cap,
        "the cap counts distinct SDP and trickled candidates ({offered_candidates} + 1 + {at})"
    );

    // Keep the connection busy (keepalives, reports) and listen on the bystander.
    let mut buf = [0u8; 2048];
    let heard = tokio::time::timeout(Duration::from_secs(3), bystander.recv_from(&mut buf)).await;
    ensure!(
        heard.is_err(),
        "the bystander received a datagram: {heard:?}"
    );
    ensure!(
        *peer.state.borrow() == webrtc::peer_connection::RTCPeerConnectionState::Connected,
        "the client's own path stayed up"
    );
    eprintln!("shard stats: {:?}", shard.stats().await?);

    peer.close().await;
    shard.leave(participant).await;
    Ok(())
}

/// Answers the server's subscriber offers and waits (bounded) until the connection is up.
pub(crate) async fn answer_offers(signal: &mut SignalClient, peer: &mut ClientPeer) -> Result<()> {
    let deadline = Instant::now() + CONNECT_WAIT;
    while Instant::now() < deadline {
        if *peer.state.borrow() == webrtc::peer_connection::RTCPeerConnectionState::Connected {
            return Ok(());
        }
        if let Ok(ServerMessage::Offer { sdp }) = signal.next_event(Duration::from_millis(50)).await
        {
            ensure!(sdp.contains("a=ice-lite"), "the shard offers as ICE-lite");
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
    }
    bail!("subscriber connection not established within {CONNECT_WAIT:?}")
}

/// The same flow through signaling: a `sluice` server built on the shard plane relays a
/// publisher's video to a subscriber, payloads unchanged and sequence numbers contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_on_the_shard_plane_relays_a_publisher() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let room = "shard-plane";

    // Joins, publishes one VP8 track, checks the shard answers as ICE-lite and connects.
    let VideoPublisher {
        peer: publisher_peer,
        track: video,
        publication_id,
        ..
    } = VideoPublisher::start(&server.ws_url(), room, "publisher").await?;

    let sender = {
        let video = Arc::clone(&video);
        tokio::spawn(async move {
            for index in 0..VIDEO_PACKETS {
                video.write_rtp(video_packet(index, 0, 0)).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        })
    };

    let mut subscriber = SignalClient::connect(&server.ws_url()).await?;
    subscriber.join(token(room, "subscriber")).await?;
    let mut peer = ClientPeer::new().await?;
    let log = collect(&mut peer);
    let request_id = subscriber.next_id();
    let response = subscriber
        .request(ClientMessage::Subscribe {
            request_id,
            publication_id,
        })
        .await?;
    ensure!(
        matches!(response, ServerMessage::Subscribed { .. }),
        "subscribe failed: {response:?}"
    );
    answer_offers(&mut subscriber, &mut peer).await?;

    sender.await.context("sender task")??;
    let deadline = Instant::now() + Duration::from_secs(3);
    let last_arrived = || {
        log.lock().expect("log").first().is_some_and(|received| {
            received
                .packets
                .last()
                .and_then(|p| video_index(&p.payload))
                == Some(VIDEO_PACKETS - 1)
        })
    };
    while Instant::now() < deadline && !last_arrived() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let packets: Vec<rtp::Packet> = log
        .lock()
        .expect("log")
        .first()
        .map(|received| received.packets.clone())
        .context("the subscriber got no track")?;
    let indices: Vec<u32> = packets
        .iter()
        .map(|p| video_index(&p.payload).context("payload too short"))
        .collect::<Result<_>>()?;
    let first = *indices.first().context("no video packets")?;
    ensure!(
        first.is_multiple_of(KEYFRAME_EVERY),
        "started on a delta frame ({first})"
    );
    ensure!(
        indices == (first..VIDEO_PACKETS).collect::<Vec<_>>(),
        "video indices {:?}…, expected {first}..{VIDEO_PACKETS}",
        &indices[..indices.len().min(10)]
    );
    for (packet, index) in packets.iter().zip(&indices) {
        ensure!(
            packet.payload == video_payload(*index),
            "packet {index} differs"
        );
    }
    for pair in packets.windows(2) {
        ensure!(
            pair[1].header.sequence_number == pair[0].header.sequence_number.wrapping_add(1),
            "sequence numbers not contiguous"
        );
    }
    eprintln!(
        "shard plane via signaling: {} packets identical from {first}",
        indices.len()
    );
    peer.close().await;
    publisher_peer.close().await;
    server.stop().await;
    Ok(())
}
