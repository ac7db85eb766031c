//! WHIP and WHEP beyond the first answer, against webrtc-rs clients: an ICE restart through
//! `PATCH` keeps a WHEP viewer's media flowing (with the If-Match/ETag rules of RFC 9725),
//! configured ICE servers are named in `Link` headers, and a room's WHEP viewer follows the
//! room: from one publisher to the next on the same track, and from an empty room to its
//! first publisher.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sluice_e2e::peer::{ClientPeer, VP8};
use sluice_e2e::{TestServer, init_tracing, token_with};
use sluice_signaling::whip::sdp;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::RTCIceConnectionState;
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use crate::shard::{Received, collect};
use crate::synthetic::{video_index, video_packet};
use crate::whip::{Reply, http, resource_path, sdp_post};

const CONNECT_WAIT: Duration = Duration::from_secs(15);
const TTL: Duration = Duration::from_secs(600);
/// Upper bound of a synthetic sender's run (10 ms a packet): 40 s.
const MAX_PACKETS: u32 = 4000;

/// A WHIP publisher of one synthetic VP8 track: its peer, its resource path, and the task
/// that sends until `stop` turns true (or [`MAX_PACKETS`]).
struct Publisher {
    peer: ClientPeer,
    /// The WHIP session resource.
    path: String,
    sender: JoinHandle<Result<()>>,
    stop: watch::Sender<bool>,
}

async fn publish(server: &TestServer, room: &str, identity: &str, ssrc: u32) -> Result<Publisher> {
    publish_from(server, room, identity, ssrc, 0).await
}

/// [`publish`], its synthetic packets numbered from `first_index` (a multiple of
/// `KEYFRAME_EVERY` starts on a keyframe).
async fn publish_from(
    server: &TestServer,
    room: &str,
    identity: &str,
    ssrc: u32,
    first_index: u32,
) -> Result<Publisher> {
    let bearer = format!("Bearer {}", token_with(room, identity, true, false, TTL));
    let mut peer = ClientPeer::new().await?;
    let video = peer.add_send_track(VP8, ssrc).await?;
    let offer = peer.offer().await?;
    let path = format!("/whip/{room}");
    let created = http(server, "POST", &path, &sdp_post(&bearer), &offer).await?;
    ensure!(
        created.status == 201,
        "WHIP POST: {} {}",
        created.status,
        created.body
    );
    let path = resource_path(&created, server)?;
    peer.apply_answer(created.body).await?;
    peer.wait_connected(CONNECT_WAIT).await?;
    let (stop, stopped) = watch::channel(false);
    let sender = tokio::spawn(send_video(video, ssrc, first_index, stopped));
    Ok(Publisher {
        peer,
        path,
        sender,
        stop,
    })
}

async fn send_video(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    first_index: u32,
    stopped: watch::Receiver<bool>,
) -> Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for index in first_index..first_index + MAX_PACKETS {
        if *stopped.borrow() {
            break;
        }
        tick.tick().await;
        let mut packet = video_packet(index, 1000, 5000);
        packet.header.ssrc = ssrc;
        track.write_rtp(packet).await?;
    }
    Ok(())
}

impl Publisher {
    /// Stops sending and ends the WHIP session (its publication ends with it).
    async fn stop(self, server: &TestServer) -> Result<()> {
        let _ = self.stop.send(true);
        self.sender.await.context("sender task")??;
        let deleted = http(server, "DELETE", &self.path, &[], "").await?;
        ensure!(
            deleted.status == 200,
            "DELETE {}: {}",
            self.path,
            deleted.status
        );
        self.peer.close().await;
        Ok(())
    }
}

/// A WHEP viewer receiving video from `path`: connected, its packets logged.
async fn view(
    server: &TestServer,
    path: &str,
    bearer: &str,
) -> Result<(ClientPeer, Reply, Arc<std::sync::Mutex<Vec<Received>>>)> {
    let mut viewer = ClientPeer::new().await?;
    viewer
        .pc
        .add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await?;
    let log = collect(&mut viewer);
    let offer = viewer.offer().await?;
    let played = http(server, "POST", path, &sdp_post(bearer), &offer).await?;
    ensure!(
        played.status == 201,
        "WHEP POST: {} {}",
        played.status,
        played.body
    );
    viewer.apply_answer(played.body.clone()).await?;
    viewer.wait_connected(CONNECT_WAIT).await?;
    Ok((viewer, played, log))
}

/// The video packets received so far.
fn video_packets(log: &std::sync::Mutex<Vec<Received>>) -> Vec<rtp::Packet> {
    log.lock()
        .expect("log")
        .iter()
        .filter(|r| r.video)
        .flat_map(|r| r.packets.iter().cloned())
        .collect()
}

/// Waits (bounded) until the viewer has received `count` video packets.
async fn wait_packets(
    log: &std::sync::Mutex<Vec<Received>>,
    count: usize,
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let received = video_packets(log).len();
        if received >= count {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: {received} video packets, waited for {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) for `state` among the ICE connection states the viewer goes through.
async fn wait_ice_state(viewer: &mut ClientPeer, state: RTCIceConnectionState) -> Result<()> {
    tokio::time::timeout(CONNECT_WAIT, async {
        while let Some(seen) = viewer.ice_states.recv().await {
            if seen == state {
                return Ok(());
            }
        }
        anyhow::bail!("the viewer's ICE state events ended")
    })
    .await
    .with_context(|| format!("ICE state {state:?} not reached"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_ice_restart_keeps_the_media_flowing() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let publisher = publish(&server, "live", "camera", 0x1111).await?;
    let watch = format!("Bearer {}", token_with("live", "viewer", false, true, TTL));
    let (mut viewer, played, log) = view(&server, "/whep/live", &watch).await?;
    let path = resource_path(&played, &server)?;
    let etag = played.headers.get("etag").cloned().context("no ETag")?;
    wait_packets(&log, 30, "before the restart").await?;

    // The client restarts ICE: a new offer with new credentials, of which the PATCH carries
    // the ICE lines. (The states before it are of the first connection.)
    while viewer.ice_states.try_recv().is_ok() {}
    let offer = viewer
        .pc
        .create_offer(Some(RTCOfferOptions { ice_restart: true }))
        .await?;
    viewer.pc.set_local_description(offer).await?;
    let offer = viewer
        .pc
        .local_description()
        .await
        .context("no local description")?
        .sdp;
    let (Some(ufrag), Some(pwd)) = sdp::credentials(&offer) else {
        anyhow::bail!("the restart offer has no ICE credentials");
    };
    let body = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");

    let stale = [
        ("Content-Type", "application/trickle-ice-sdpfrag"),
        ("If-Match", "\"stale\""),
    ];
    let refused = http(&server, "PATCH", &path, &stale, &body).await?;
    ensure!(
        refused.status == 412,
        "a restart with a stale If-Match: {}",
        refused.status
    );
    let fresh = [
        ("Content-Type", "application/trickle-ice-sdpfrag"),
        ("If-Match", etag.as_str()),
    ];
    let restarted = http(&server, "PATCH", &path, &fresh, &body).await?;
    ensure!(
        restarted.status == 200,
        "WHEP ICE restart: {} {}",
        restarted.status,
        restarted.body
    );
    ensure!(
        restarted.headers.get("content-type").map(String::as_str)
            == Some("application/trickle-ice-sdpfrag"),
        "the new credentials come as an sdpfrag: {:?}",
        restarted.headers.get("content-type")
    );
    let new_etag = restarted.headers.get("etag").context("no new ETag")?;
    ensure!(*new_etag != etag, "the ETag changes with the restart");
    let (old_ufrag, _) = sdp::credentials(&played.body);
    let (server_ufrag, server_pwd) = sdp::credentials(&restarted.body);
    let (Some(server_ufrag), Some(server_pwd)) = (server_ufrag, server_pwd) else {
        anyhow::bail!("no credentials in the restart answer: {}", restarted.body);
    };
    ensure!(
        Some(&server_ufrag) != old_ufrag.as_ref(),
        "the server's ufrag is new"
    );
    let candidate = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";
    let outdated = [
        ("Content-Type", "application/trickle-ice-sdpfrag"),
        ("If-Match", etag.as_str()),
    ];
    let refused = http(&server, "PATCH", &path, &outdated, candidate).await?;
    ensure!(
        refused.status == 412,
        "the ETag before the restart no longer matches: {}",
        refused.status
    );

    // The client applies the server's new credentials; ICE checks again and media flows on.
    let answer = sdp::with_credentials(&played.body, &server_ufrag, &server_pwd);
    viewer.apply_answer(answer).await?;
    wait_ice_state(&mut viewer, RTCIceConnectionState::Checking).await?;
    wait_ice_state(&mut viewer, RTCIceConnectionState::Connected).await?;
    let at_reconnect = video_packets(&log).len();
    wait_packets(&log, at_reconnect + 100, "after the restart").await?;
    let packets = video_packets(&log);
    ensure!(
        packets
            .windows(2)
            .all(|w| w[1].header.sequence_number != w[0].header.sequence_number)
            && packets
                .iter()
                .all(|p| p.header.ssrc == packets[0].header.ssrc),
        "one stream, no packet twice"
    );
    let session = http(&server, "DELETE", &path, &[], "").await?;
    ensure!(session.status == 200, "DELETE: {}", session.status);
    viewer.close().await;
    publisher.stop(&server).await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_ice_servers_are_link_headers_of_created_sessions_and_options() -> Result<()> {
    init_tracing();
    let server = TestServer::start_with(|config| {
        config.ice_servers = vec![
            "stun:stun.example.com:3478".parse().expect("stun"),
            "turn:turn.example.com:3478?transport=udp;username=1700000000:alice;credential=pa55"
                .parse()
                .expect("turn"),
        ];
    })
    .await?;
    let stun = "<stun:stun.example.com:3478>; rel=\"ice-server\"";
    let turn = "<turn:turn.example.com:3478?transport=udp>; rel=\"ice-server\"; \
                username=\"1700000000:alice\"; credential=\"pa55\"; credential-type=\"password\"";
    let publish = format!("Bearer {}", token_with("r", "p", true, false, TTL));
    let watch = format!("Bearer {}", token_with("r", "v", false, true, TTL));

    // OPTIONS: everyone learns the STUN server; the TURN credentials only a request that may
    // POST there.
    let cases = [
        ("/whip/r", None, vec![stun]),
        ("/whip/r", Some(publish.as_str()), vec![stun, turn]),
        ("/whip/r", Some(watch.as_str()), vec![stun]),
        ("/whep/r", Some(watch.as_str()), vec![stun, turn]),
        ("/whep/r/PU1", Some(watch.as_str()), vec![stun, turn]),
        ("/whep/r", Some(publish.as_str()), vec![stun]),
    ];
    for (path, bearer, expected) in cases {
        let headers: Vec<(&str, &str)> = bearer.map(|b| ("Authorization", b)).into_iter().collect();
        let reply = http(&server, "OPTIONS", path, &headers, "").await?;
        ensure!(reply.status == 204, "OPTIONS {path}: {}", reply.status);
        ensure!(
            reply.links == expected,
            "OPTIONS {path} with {bearer:?}: {:?}",
            reply.links
        );
    }

    // The 201 of a WHIP and of a WHEP session names both.
    let mut publisher = ClientPeer::new().await?;
    publisher.add_send_track(VP8, 0x7777).await?;
    let offer = publisher.offer().await?;
    let created = http(&server, "POST", "/whip/r", &sdp_post(&publish), &offer).await?;
    ensure!(
        created.status == 201,
        "WHIP POST: {} {}",
        created.status,
        created.body
    );
    ensure!(
        created.links == [stun, turn],
        "WHIP 201: {:?}",
        created.links
    );
    publisher.apply_answer(created.body).await?;
    publisher.wait_connected(CONNECT_WAIT).await?;
    let viewer = ClientPeer::new().await?;
    viewer
        .pc
        .add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await?;
    let offer = viewer.offer().await?;
    let played = http(&server, "POST", "/whep/r", &sdp_post(&watch), &offer).await?;
    ensure!(
        played.status == 201,
        "WHEP POST: {} {}",
        played.status,
        played.body
    );
    ensure!(played.links == [stun, turn], "WHEP 201: {:?}", played.links);
    viewer.close().await;
    publisher.close().await;
    server.stop().await;
    Ok(())
}

/// Where publisher B's synthetic indices start: every packet at or above it is B's.
const SECOND_PUBLISHER: u32 = 100_020;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_viewer_follows_the_next_publisher_on_the_same_track() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let a = publish(&server, "stage", "a", 0x1111).await?;
    let watch = format!("Bearer {}", token_with("stage", "viewer", false, true, TTL));
    let (viewer, played, log) = view(&server, "/whep/stage", &watch).await?;
    let path = resource_path(&played, &server)?;
    wait_packets(&log, 50, "from publisher A").await?;

    // A stops and unpublishes; the session stays (it follows the room) with nothing to play.
    a.stop(&server).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.sfu.stats().await.publications != 0 {
        ensure!(Instant::now() < deadline, "A's publication did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let from_a = video_packets(&log).len();
    let frag = [("Content-Type", "application/trickle-ice-sdpfrag")];
    let candidate = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";
    let alive = http(&server, "PATCH", &path, &frag, candidate).await?;
    ensure!(
        alive.status == 204,
        "the session outlives its publisher: {}",
        alive.status
    );

    // B publishes: the viewer's one video track carries B's packets.
    let b = publish_from(&server, "stage", "b", 0x3333, SECOND_PUBLISHER).await?;
    wait_packets(&log, from_a + 100, "from publisher B").await?;
    {
        let log = log.lock().expect("log");
        ensure!(
            log.len() == 1,
            "one track, not a new one: {} tracks",
            log.len()
        );
    }
    let packets = video_packets(&log);
    let first_b = packets
        .iter()
        .position(|p| video_index(&p.payload).is_some_and(|i| i >= SECOND_PUBLISHER))
        .context("no packet of B")?;
    // A's last packets may still have been on their way when its publication ended: what
    // matters is that they all come before B's first.
    ensure!(
        first_b >= from_a
            && packets[..first_b]
                .iter()
                .all(|p| video_index(&p.payload).is_some_and(|i| i < SECOND_PUBLISHER))
            && packets[first_b..]
                .iter()
                .all(|p| video_index(&p.payload).is_some_and(|i| i >= SECOND_PUBLISHER)),
        "B's packets follow all of A's: first of B at {first_b}, A had sent {from_a} when it \
         ended"
    );
    let (last_a, b_first) = (&packets[first_b - 1], &packets[first_b]);
    ensure!(
        b_first.header.ssrc == last_a.header.ssrc,
        "the same SSRC towards the viewer"
    );
    ensure!(
        b_first.header.sequence_number == last_a.header.sequence_number.wrapping_add(1),
        "sequence numbers continue: {} after {}",
        b_first.header.sequence_number,
        last_a.header.sequence_number
    );
    let step = b_first
        .header
        .timestamp
        .wrapping_sub(last_a.header.timestamp);
    ensure!(
        step > 0 && step < u32::MAX / 2,
        "the timestamp goes forward across the switch: +{step}"
    );
    ensure!(
        b_first.payload.get(1).is_some_and(|b| b & 0x01 == 0),
        "B starts at a keyframe"
    );
    let b_indices: Vec<u32> = packets[first_b..]
        .iter()
        .filter_map(|p| video_index(&p.payload))
        .collect();
    ensure!(
        b_indices.windows(2).all(|w| w[1] == w[0] + 1),
        "B's packets arrive whole and in order"
    );
    ensure!(
        packets[first_b..]
            .windows(2)
            .all(|w| w[1].header.sequence_number == w[0].header.sequence_number.wrapping_add(1)),
        "contiguous sequence numbers"
    );
    let deleted = http(&server, "DELETE", &path, &[], "").await?;
    ensure!(deleted.status == 200, "DELETE: {}", deleted.status);
    viewer.close().await;
    b.stop(&server).await?;
    let after = server.sfu.stats().await;
    ensure!(
        after.participants == 0 && after.subscriptions == 0,
        "left: {after:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_viewer_started_in_an_empty_room_plays_its_first_publisher() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let watch = format!("Bearer {}", token_with("empty", "viewer", false, true, TTL));
    let (viewer, played, log) = view(&server, "/whep/empty", &watch).await?;
    ensure!(video_packets(&log).is_empty());
    let publisher = publish(&server, "empty", "late", 0x4444).await?;
    wait_packets(&log, 100, "from the late publisher").await?;
    let packets = video_packets(&log);
    ensure!(
        packets[0].payload.get(1).is_some_and(|b| b & 0x01 == 0),
        "it starts at a keyframe"
    );
    ensure!(
        packets
            .windows(2)
            .all(|w| w[1].header.sequence_number == w[0].header.sequence_number.wrapping_add(1)),
        "contiguous sequence numbers"
    );
    let path = resource_path(&played, &server)?;
    let deleted = http(&server, "DELETE", &path, &[], "").await?;
    ensure!(deleted.status == 200, "DELETE: {}", deleted.status);
    viewer.close().await;
    publisher.stop(&server).await?;
    server.stop().await;
    Ok(())
}
