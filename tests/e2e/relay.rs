//! One publisher, two subscribers, all webrtc-rs clients over real ICE/DTLS/SRTP on loopback:
//! the payload bytes each subscriber receives equal what the publisher sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use sluice_e2e::peer::{ClientPeer, OPUS, VP8};
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};

use crate::synthetic::{audio_packet, check_received, index_of, video_index, video_packet};
use sluice_signaling::protocol::{
    ClientMessage, MediaKind, PeerRole, PublicationInfo, ServerMessage, TrackInfo, TrackSource,
};
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::TrackRemoteEvent;

/// 5 s of video at 100 packets/s, and audio at 50 packets/s.
const VIDEO_PACKETS: u32 = 500;
/// The server's media port in this test (`--udp-port`, and ICE-TCP on the same number); every
/// server candidate must name it.
const MEDIA_PORT: u16 = 47000;
/// The server's keyframe-request throttle in this test: at most one PLI upstream per interval
/// (500 ms by default).
const KEYFRAME_THROTTLE: Duration = Duration::from_millis(100);

/// The port a candidate (`candidate:1 1 udp 2130706431 127.0.0.1 47000 typ host`, with or
/// without `a=`) names.
fn candidate_port(candidate: &str) -> Option<u16> {
    candidate.split_whitespace().nth(5)?.parse().ok()
}

/// Every candidate in a description of the server's names [`MEDIA_PORT`], and there is one.
fn ensure_candidates_on_media_port(sdp: &str) -> Result<()> {
    let candidates: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    ensure!(!candidates.is_empty(), "no server candidate in:\n{sdp}");
    for candidate in candidates {
        ensure!(
            candidate_port(candidate) == Some(MEDIA_PORT),
            "server candidate outside --udp-port: {candidate}"
        );
    }
    Ok(())
}

/// Exchanges trickle candidates (and, for subscribers, answers offers) until connected.
async fn connect(signal: &mut SignalClient, peer: &mut ClientPeer, target: PeerRole) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if *peer.state.borrow() == webrtc::peer_connection::RTCPeerConnectionState::Connected {
            return Ok(());
        }
        while let Ok(candidate) = peer.candidates.try_recv() {
            signal.trickle(target, candidate).await?;
        }
        match signal.next_event(Duration::from_millis(50)).await {
            Ok(ServerMessage::Trickle {
                target: t,
                candidate,
            }) if t == target => {
                ensure!(
                    candidate_port(&candidate.candidate) == Some(MEDIA_PORT),
                    "server candidate outside --udp-port: {}",
                    candidate.candidate
                );
                peer.add_candidate(candidate).await?
            }
            Ok(ServerMessage::Offer { sdp }) if target == PeerRole::Subscriber => {
                ensure_candidates_on_media_port(&sdp)?;
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
    bail!("{target:?} connection not established within 15 s")
}

struct Received {
    stream_id: String,
    track_id: String,
    kind_is_video: bool,
    packets: Vec<rtp::Packet>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_two_subscribers_receive_identical_payloads() -> Result<()> {
    init_tracing();
    let server = TestServer::start_with_sfu(|c, sfu| {
        c.udp_port = Some(MEDIA_PORT);
        sfu.shard.room.keyframe_request_interval = KEYFRAME_THROTTLE;
    })
    .await?;
    let room = "relay";

    // Publisher: one VP8 and one Opus track.
    let mut publisher = SignalClient::connect(&server.ws_url()).await?;
    publisher.join(token(room, "publisher")).await?;
    let mut publisher_peer = ClientPeer::new().await?;
    let video = publisher_peer.add_send_track(VP8, 0x1111).await?;
    let audio = publisher_peer.add_send_track(OPUS, 0x2222).await?;
    let offer = publisher_peer.offer().await?;
    let codecs = sluice_sfu::transport::negotiated_codecs(&offer);
    let mid_of = |mime: &str| {
        codecs
            .iter()
            .find(|(_, c)| c.mime_type.eq_ignore_ascii_case(mime))
            .map(|(mid, _)| mid.clone())
            .context("offered track missing")
    };
    let (video_mid, audio_mid) = (mid_of(VP8)?, mid_of(OPUS)?);
    let request_id = publisher.next_id();
    let published = publisher
        .request(ClientMessage::Publish {
            request_id,
            sdp: offer,
            tracks: vec![
                TrackInfo {
                    mid: video_mid,
                    kind: MediaKind::Video,
                    source: TrackSource::Camera,
                    name: None,
                    rids: None,
                },
                TrackInfo {
                    mid: audio_mid,
                    kind: MediaKind::Audio,
                    source: TrackSource::Microphone,
                    name: None,
                    rids: None,
                },
            ],
        })
        .await?;
    let ServerMessage::Published {
        sdp, publications, ..
    } = published
    else {
        bail!("publish failed: {published:?}");
    };
    ensure!(publications.len() == 2, "two publications expected");
    let publisher_id = publications[0].participant_id.clone();
    ensure_candidates_on_media_port(&sdp)?;
    publisher_peer.apply_answer(sdp).await?;
    connect(&mut publisher, &mut publisher_peer, PeerRole::Publisher).await?;

    // The publisher counts the keyframe requests (PLI) the server sends it.
    let plis = Arc::new(Mutex::new(Vec::<Instant>::new()));
    {
        let plis = Arc::clone(&plis);
        let video = Arc::clone(&video);
        tokio::spawn(async move {
            while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = video.poll().await {
                if packets
                    .iter()
                    .any(|p| p.as_any().is::<PictureLossIndication>())
                {
                    plis.lock().expect("pli log").push(Instant::now());
                }
            }
        });
    }

    // Media flows before anyone subscribes, so subscribers join mid-stream and each must start
    // on a keyframe, and each new subscriber makes the server ask the publisher for one.
    let sender = {
        let (video, audio) = (Arc::clone(&video), Arc::clone(&audio));
        tokio::spawn(async move {
            let started = Instant::now();
            for index in 0..VIDEO_PACKETS {
                video.write_rtp(video_packet(index, 65000, 1000)).await?; // wraps mid-stream on purpose
                if index % 2 == 0 {
                    let audio_index = index / 2;
                    audio.write_rtp(audio_packet(audio_index)).await?;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(started.elapsed())
        })
    };

    // Two subscribers, each subscribing to both publications.
    let mut subscribers = Vec::new();
    for name in ["sub-a", "sub-b"] {
        let mut signal = SignalClient::connect(&server.ws_url()).await?;
        let joined = signal.join(token(room, name)).await?;
        let ServerMessage::Joined {
            publications: seen, ..
        } = joined
        else {
            bail!("join failed: {joined:?}");
        };
        ensure!(
            seen.len() == 2,
            "the joiner sees both publications: {seen:?}"
        );
        let mut peer = ClientPeer::new().await?;
        let mut subscription_ids = HashMap::new();
        for PublicationInfo { publication_id, .. } in &publications {
            let request_id = signal.next_id();
            let response = signal
                .request(ClientMessage::Subscribe {
                    request_id,
                    publication_id: publication_id.clone(),
                })
                .await?;
            let ServerMessage::Subscribed {
                subscription_id, ..
            } = response
            else {
                bail!("subscribe failed: {response:?}");
            };
            subscription_ids.insert(subscription_id, publication_id.clone());
        }
        connect(&mut signal, &mut peer, PeerRole::Subscriber).await?;
        subscribers.push((name, signal, peer, subscription_ids));
    }

    // Collect everything each subscriber receives.
    let mut collected = Vec::new();
    let video_tracks: Arc<Mutex<Vec<Arc<dyn webrtc::media_stream::track_remote::TrackRemote>>>> =
        Arc::default();
    for (_, _, peer, _) in &mut subscribers {
        let video_tracks = Arc::clone(&video_tracks);
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        collected.push(Arc::clone(&log));
        let mut tracks =
            std::mem::replace(&mut peer.tracks, tokio::sync::mpsc::unbounded_channel().1);
        tokio::spawn(async move {
            while let Some(track) = tracks.recv().await {
                let received = Received {
                    stream_id: track.stream_id().await.to_string(),
                    track_id: track.track_id().await.to_string(),
                    kind_is_video: track.kind().await
                        == rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video,
                    packets: Vec::new(),
                };
                if received.kind_is_video {
                    video_tracks
                        .lock()
                        .expect("tracks")
                        .push(Arc::clone(&track));
                }
                let slot = {
                    let mut log = log.lock().expect("log");
                    log.push(received);
                    log.len() - 1
                };
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    while let Some(event) = track.poll().await {
                        if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                            log.lock().expect("log")[slot].packets.push(packet);
                        }
                    }
                });
            }
        });
    }

    // Once every subscriber receives video (the join-time keyframe requests are answered)
    // and no request went upstream for a throttle interval, one subscriber sends its own PLI:
    // the server must relay it to the publisher.
    let receiving_video = || {
        collected.iter().all(|log| {
            log.lock()
                .expect("log")
                .iter()
                .any(|received| received.kind_is_video && !received.packets.is_empty())
        })
    };
    let throttle_window_over = || {
        plis.lock()
            .expect("pli log")
            .last()
            .is_none_or(|at| at.elapsed() >= KEYFRAME_THROTTLE)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(receiving_video() && throttle_window_over()) {
        ensure!(
            Instant::now() < deadline,
            "subscribers receiving video: {}; last PLI upstream {:?} ago",
            receiving_video(),
            plis.lock().expect("pli log").last().map(Instant::elapsed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let plis_before_relay = plis.lock().expect("pli log").len();
    let subscriber_track = video_tracks
        .lock()
        .expect("tracks")
        .first()
        .cloned()
        .context("no subscriber video track")?;
    let media_ssrc = *subscriber_track
        .ssrcs()
        .await
        .first()
        .context("subscriber track without ssrc")?;
    let pli_sent = Instant::now();
    subscriber_track
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc,
        })])
        .await?;

    // Wait for the sender to finish, then for the last packets to arrive.
    let sent_in = sender.await.context("sender task")??;
    // Then wait (bounded) until every subscriber has the last video and audio packet.
    let last = |received: &Received| {
        received.packets.last().and_then(|p| {
            if received.kind_is_video {
                video_index(&p.payload).map(|i| i == VIDEO_PACKETS - 1)
            } else {
                index_of(&p.payload, 1).map(|i| i == VIDEO_PACKETS / 2 - 1)
            }
        })
    };
    let all_arrived = || {
        collected.iter().all(|log| {
            let log = log.lock().expect("log");
            log.len() == 2 && log.iter().all(|received| last(received) == Some(true))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while !all_arrived() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("sent {VIDEO_PACKETS} video packets in {sent_in:?}");

    for ((name, _, _, subscription_ids), log) in subscribers.iter().zip(&collected) {
        let log = log.lock().expect("log");
        ensure!(
            log.len() == 2,
            "{name}: expected 2 tracks, got {}",
            log.len()
        );
        for received in log.iter() {
            ensure!(
                subscription_ids.contains_key(&received.track_id),
                "{name}: msid track id {} is not one of our subscriptions",
                received.track_id
            );
            // Camera and microphone share the publisher's msid stream, so a browser lip-syncs
            // them (decisions §12, §21).
            ensure!(
                received.stream_id == publisher_id,
                "{name}: msid stream id {} is not {publisher_id}",
                received.stream_id
            );
            let packets = &received.packets;
            let expected_total = if received.kind_is_video {
                VIDEO_PACKETS
            } else {
                VIDEO_PACKETS / 2
            };
            let kind = if received.kind_is_video {
                "video"
            } else {
                "audio"
            };
            let first = check_received(name, received.kind_is_video, packets, expected_total)?;
            ensure!(
                first < expected_total * 3 / 5,
                "{name}: {kind} started late, at {first} of {expected_total}"
            );
            eprintln!(
                "{name}: {kind} {} packets identical (from index {first})",
                packets.len()
            );
        }
    }

    let plis = plis.lock().expect("pli log").clone();
    ensure!(
        plis_before_relay >= 1,
        "new subscribers should trigger a keyframe request"
    );
    let relayed = plis
        .iter()
        .find(|at| **at >= pli_sent)
        .context("the subscriber's PLI was not relayed to the publisher")?;
    eprintln!(
        "PLIs at the publisher: {} ({} before the subscriber's own); relayed after {:?}",
        plis.len(),
        plis_before_relay,
        relayed.duration_since(pli_sent)
    );

    for (_, _, peer, _) in &subscribers {
        peer.close().await;
    }
    publisher_peer.close().await;
    server.stop().await;
    Ok(())
}
