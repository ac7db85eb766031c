//! WHIP and WHEP against webrtc-rs clients on the shard plane: a client publishes over WHIP
//! (plain HTTP, no Sluice signaling), a second plays it over WHEP and receives every packet
//! byte for byte; the refusals carry their status codes; DELETE frees the participants,
//! publications, subscriptions and peer connections, and a WHEP session ends with what it
//! plays.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sluice_e2e::peer::{ClientPeer, OPUS, VP8};
use sluice_e2e::{TestServer, init_tracing, token_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use crate::shard::collect;
use crate::synthetic::{audio_packet, check_received, index_of, video_index, video_packet};

const VIDEO_PACKETS: u32 = 300;
const CONNECT_WAIT: Duration = Duration::from_secs(15);
const TTL: Duration = Duration::from_secs(600);

/// An HTTP response as the test reads it.
pub(crate) struct Reply {
    pub(crate) status: u16,
    /// By lowercase name; of a repeated header, the last.
    pub(crate) headers: HashMap<String, String>,
    /// Every `Link` header, in order.
    pub(crate) links: Vec<String>,
    pub(crate) body: String,
}

/// One HTTP/1.1 request on its own connection (`Connection: close`).
pub(crate) async fn http(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply> {
    let mut stream = TcpStream::connect(server.addr).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        server.addr,
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .context("HTTP response timed out")??;
    let text = String::from_utf8(raw)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let fields: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let links = fields
        .iter()
        .filter(|(name, _)| name == "link")
        .map(|(_, value)| value.clone())
        .collect();
    Ok(Reply {
        status,
        headers: fields.into_iter().collect(),
        links,
        body: body.to_owned(),
    })
}

pub(crate) fn sdp_post(bearer: &str) -> Vec<(&str, &str)> {
    vec![
        ("Content-Type", "application/sdp"),
        ("Authorization", bearer),
    ]
}

/// The path of a session resource from its absolute `Location`.
pub(crate) fn resource_path(reply: &Reply, server: &TestServer) -> Result<String> {
    let location = reply.headers.get("location").context("no Location")?;
    let prefix = format!("http://{}", server.addr);
    location
        .strip_prefix(&prefix)
        .map(str::to_owned)
        .with_context(|| format!("Location {location} is not absolute on {prefix}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publish_plays_over_whep_and_delete_frees_it() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let publish = format!("Bearer {}", token_with("live", "encoder", true, false, TTL));
    let watch = format!("Bearer {}", token_with("live", "viewer", false, true, TTL));

    // WHIP: an offer with VP8 and Opus becomes two publications.
    let mut publisher = ClientPeer::new().await?;
    let video = publisher.add_send_track(VP8, 0x1111).await?;
    let audio = publisher.add_send_track(OPUS, 0x2222).await?;
    let offer = publisher.offer().await?;
    let created = http(&server, "POST", "/whip/live", &sdp_post(&publish), &offer).await?;
    ensure!(
        created.status == 201,
        "WHIP POST: {} {}",
        created.status,
        created.body
    );
    ensure!(created.headers.get("content-type").map(String::as_str) == Some("application/sdp"));
    ensure!(created.headers.contains_key("etag"), "an ETag");
    ensure!(
        created.links.is_empty(),
        "no ICE servers configured, no Link: {:?}",
        created.links
    );
    let whip_path = resource_path(&created, &server)?;
    ensure!(created.body.contains("a=ice-lite"), "the shard answers");
    publisher.apply_answer(created.body).await?;
    publisher.wait_connected(CONNECT_WAIT).await?;

    let sender = {
        let (video, audio) = (Arc::clone(&video), Arc::clone(&audio));
        tokio::spawn(async move {
            for index in 0..VIDEO_PACKETS {
                video.write_rtp(video_packet(index, 1000, 5000)).await?;
                if index % 2 == 0 {
                    audio.write_rtp(audio_packet(index / 2)).await?;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        })
    };

    // WHEP: a recvonly offer of one audio and one video section gets both publications.
    let mut viewer = ClientPeer::new().await?;
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        viewer
            .pc
            .add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await?;
    }
    let log = collect(&mut viewer);
    let offer = viewer.offer().await?;
    // By the video publication (with its publisher's audio): such a session ends with what it
    // plays (a room session follows the room instead: see whep.rs).
    let video_publication = server
        .sfu
        .room_publications("live")
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.kind == sluice_sfu::core::MediaKind::Video)
        .context("no video publication")?;
    let by_publication = format!("/whep/live/{}", video_publication.id);
    let played = http(&server, "POST", &by_publication, &sdp_post(&watch), &offer).await?;
    ensure!(
        played.status == 201,
        "WHEP POST: {} {}",
        played.status,
        played.body
    );
    let whep_path = resource_path(&played, &server)?;
    let etag = played.headers.get("etag").cloned().context("no ETag")?;
    viewer.apply_answer(played.body).await?;
    viewer.wait_connected(CONNECT_WAIT).await?;

    // Trickle to the session; a stale If-Match is refused (ICE restarts: see whep.rs).
    let frag = [
        ("Content-Type", "application/trickle-ice-sdpfrag"),
        ("If-Match", etag.as_str()),
    ];
    let candidate = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";
    let trickled = http(&server, "PATCH", &whep_path, &frag, candidate).await?;
    ensure!(
        trickled.status == 204,
        "trickle: {} {}",
        trickled.status,
        trickled.body
    );
    let stale = [
        ("Content-Type", "application/trickle-ice-sdpfrag"),
        ("If-Match", "\"stale\""),
    ];
    let refused = http(&server, "PATCH", &whep_path, &stale, candidate).await?;
    ensure!(refused.status == 412, "stale If-Match: {}", refused.status);

    sender.await.context("sender task")??;
    let complete = |log: &Vec<crate::shard::Received>| {
        log.len() == 2
            && log.iter().all(|r| {
                r.packets.last().is_some_and(|p| {
                    if r.video {
                        video_index(&p.payload) == Some(VIDEO_PACKETS - 1)
                    } else {
                        index_of(&p.payload, 1) == Some(VIDEO_PACKETS / 2 - 1)
                    }
                })
            })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !complete(&log.lock().expect("log")) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let log = log.lock().expect("log");
        ensure!(log.len() == 2, "WHEP viewer got {} tracks", log.len());
        for received in log.iter() {
            let total = if received.video {
                VIDEO_PACKETS
            } else {
                VIDEO_PACKETS / 2
            };
            let first = check_received("whep viewer", received.video, &received.packets, total)?;
            ensure!(first < total * 3 / 4, "started late, at {first} of {total}");
        }
    }
    let during = server.sfu.stats().await;
    ensure!(during.participants == 2 && during.publications == 2 && during.subscriptions == 2);

    // WHIP ICE restart: new credentials come back in a fragment, with a new ETag.
    let whip_frag = [("Content-Type", "application/trickle-ice-sdpfrag")];
    let restart = "a=ice-ufrag:newu\r\na=ice-pwd:newpasswordnewpassword\r\n";
    let restarted = http(&server, "PATCH", &whip_path, &whip_frag, restart).await?;
    ensure!(
        restarted.status == 200,
        "WHIP ICE restart: {} {}",
        restarted.status,
        restarted.body
    );
    ensure!(restarted.body.contains("a=ice-ufrag:") && restarted.body.contains("a=ice-pwd:"));
    ensure!(restarted.headers.get("etag") != created.headers.get("etag"));

    // DELETE frees everything: the participants, their publications, the subscriptions and
    // every peer connection on the shard; the WHEP session ends with what it played.
    let deleted = http(&server, "DELETE", &whip_path, &[], "").await?;
    ensure!(
        deleted.status == 200,
        "DELETE {whip_path}: {}",
        deleted.status
    );
    let again = http(&server, "DELETE", &whip_path, &[], "").await?;
    ensure!(again.status == 404, "a deleted session is gone");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let probe = http(&server, "PATCH", &whep_path, &whip_frag, candidate).await?;
        if probe.status == 404 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the WHEP session outlived its publications: {}",
            probe.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = server.sfu.stats().await;
    ensure!(
        after.participants == 0 && after.publications == 0 && after.subscriptions == 0,
        "left after DELETE: {after:?}"
    );
    let shard = server.sfu.shard_stats().await?;
    ensure!(shard.peers == 0, "peer connections left: {}", shard.peers);
    viewer.close().await;
    publisher.close().await;
    server.stop().await;
    Ok(())
}

/// What a refusal case sends and the status it expects: what, path, headers, body, status.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_refusals_have_their_status_codes() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let publish = format!("Bearer {}", token_with("r", "p", true, false, TTL));
    let subscribe_only = format!("Bearer {}", token_with("r", "s", false, true, TTL));
    let other_room = format!("Bearer {}", token_with("elsewhere", "p", true, true, TTL));
    let publisher = ClientPeer::new().await?;
    publisher.add_send_track(VP8, 0x3333).await?;
    let offer = publisher.offer().await?;
    let av1 = offer.replace("VP8/90000", "AV1/90000");
    let huge = format!("{offer}{}", "a=x\r\n".repeat(20_000));
    let cases: Vec<Case<'_>> = vec![
        (
            "whip without a credential",
            "/whip/r",
            vec![("Content-Type", "application/sdp")],
            &offer,
            401,
        ),
        (
            "whip with a bad token",
            "/whip/r",
            sdp_post("Bearer nonsense"),
            &offer,
            401,
        ),
        (
            "whip with a token of another room",
            "/whip/r",
            sdp_post(&other_room),
            &offer,
            403,
        ),
        (
            "whip with a subscribe-only token",
            "/whip/r",
            sdp_post(&subscribe_only),
            &offer,
            403,
        ),
        (
            "whip with a wrong content type",
            "/whip/r",
            vec![("Content-Type", "text/plain"), ("Authorization", &publish)],
            &offer,
            415,
        ),
        (
            "whip with malformed SDP",
            "/whip/r",
            sdp_post(&publish),
            "hello",
            400,
        ),
        (
            "whip without a usable codec",
            "/whip/r",
            sdp_post(&publish),
            &av1,
            406,
        ),
        (
            "whip with an oversized offer",
            "/whip/r",
            sdp_post(&publish),
            &huge,
            413,
        ),
        (
            "whep with a token of another room",
            "/whep/nowhere",
            sdp_post(&subscribe_only),
            &offer,
            403,
        ),
        (
            "whep without a token (not demo mode)",
            "/whep/r",
            vec![("Content-Type", "application/sdp")],
            &offer,
            401,
        ),
    ];
    for (what, path, headers, body, status) in cases {
        let reply = http(&server, "POST", path, &headers, body).await?;
        ensure!(
            reply.status == status,
            "{what}: {} ({}), expected {status}",
            reply.status,
            reply.body
        );
        ensure!(
            status == 413 || !reply.body.is_empty(),
            "{what}: a reason in the body"
        );
    }
    let unknown = http(
        &server,
        "PATCH",
        "/whip/r/session/0",
        &[("Content-Type", "application/trickle-ice-sdpfrag")],
        "",
    )
    .await?;
    ensure!(
        unknown.status == 404,
        "PATCH of an unknown session: {}",
        unknown.status
    );

    // With something published: an unknown publication is 404, a sendonly WHEP offer 400.
    let created = http(&server, "POST", "/whip/r", &sdp_post(&publish), &offer).await?;
    ensure!(
        created.status == 201,
        "WHIP POST: {} {}",
        created.status,
        created.body
    );
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
    let recvonly = viewer.offer().await?;
    let unknown = http(
        &server,
        "POST",
        "/whep/r/PU999999",
        &sdp_post(&subscribe_only),
        &recvonly,
    )
    .await?;
    ensure!(
        unknown.status == 404,
        "unknown publication: {} {}",
        unknown.status,
        unknown.body
    );
    let missing_room = format!("Bearer {}", token_with("empty", "s", false, true, TTL));
    let empty = http(
        &server,
        "POST",
        "/whep/empty",
        &sdp_post(&missing_room),
        &recvonly,
    )
    .await?;
    ensure!(
        empty.status == 201,
        "a room session starts in an empty room, waiting: {} {}",
        empty.status,
        empty.body
    );
    let waiting = resource_path(&empty, &server)?;
    ensure!(http(&server, "DELETE", &waiting, &[], "").await?.status == 200);
    let unknown = http(
        &server,
        "POST",
        "/whep/empty/PU1",
        &sdp_post(&missing_room),
        &recvonly,
    )
    .await?;
    ensure!(
        unknown.status == 404,
        "a publication of a room publishing nothing: {} {}",
        unknown.status,
        unknown.body
    );
    let sendonly = http(
        &server,
        "POST",
        "/whep/r",
        &sdp_post(&subscribe_only),
        &offer,
    )
    .await?;
    ensure!(
        sendonly.status == 400,
        "sendonly WHEP offer: {} {}",
        sendonly.status,
        sendonly.body
    );
    // (An offer that lists another codec Sluice forwards would wait for a publication of it.)
    let no_codec = recvonly
        .replace("VP8/90000", "AV1/90000")
        .replace("H264/90000", "AV1/90000");
    let refused = http(
        &server,
        "POST",
        "/whep/r",
        &sdp_post(&subscribe_only),
        &no_codec,
    )
    .await?;
    ensure!(
        refused.status == 406,
        "WHEP without the room's codec: {} {}",
        refused.status,
        refused.body
    );
    ensure!(
        refused.body.contains("VP8"),
        "the reason names the codec: {}",
        refused.body
    );

    // The sessions-per-credential cap.
    let mut statuses = Vec::new();
    for _ in 0..sluice_signaling::whip::MAX_SESSIONS_PER_CREDENTIAL {
        let peer = ClientPeer::new().await?;
        peer.add_send_track(VP8, 0x4444).await?;
        let offer = peer.offer().await?;
        statuses.push(
            http(&server, "POST", "/whip/r", &sdp_post(&publish), &offer)
                .await?
                .status,
        );
    }
    let expected: Vec<u16> = (1..sluice_signaling::whip::MAX_SESSIONS_PER_CREDENTIAL)
        .map(|_| 201)
        .chain([429])
        .collect();
    ensure!(statuses == expected, "session cap: {statuses:?}");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_refuses_while_draining() -> Result<()> {
    init_tracing();
    let publish = format!("Bearer {}", token_with("r", "p", true, true, TTL));
    let peer = ClientPeer::new().await?;
    peer.add_send_track(VP8, 0x5555).await?;
    let offer = peer.offer().await?;

    let shard = TestServer::start().await?;
    shard.begin_drain();
    let reply = http(&shard, "POST", "/whip/r", &sdp_post(&publish), &offer).await?;
    ensure!(reply.status == 503, "WHIP while draining: {}", reply.status);
    shard.stop().await;
    Ok(())
}
