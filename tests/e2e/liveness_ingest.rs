//! Publisher liveness of ingested streams: an RTMP encoder (ffmpeg) killed and an RTSP camera
//! (tests/rtsp/serve.py) gone are announced `publicationStalled` within 2 s; the encoder
//! restarted and the camera back (within the reconnect grace, on the same publications) are
//! announced `publicationResumed`.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_sfu::ingest::{
    RtmpConfig, RtmpServer, RtspConfig, RtspSources, StreamKeys, StreamTarget,
};
use sluice_signaling::protocol::ServerMessage;

use crate::rtmp_session::ffmpeg;
use crate::rtsp::{RtspServer, source, until};

const STALL_GOAL: Duration = Duration::from_secs(2);

/// Joins `room` and waits until it holds `count` publications; returns their ids.
async fn viewer(
    server: &TestServer,
    room: &str,
    count: usize,
) -> Result<(SignalClient, HashSet<String>)> {
    let mut signal = SignalClient::connect(&server.ws_url()).await?;
    let ServerMessage::Joined { publications, .. } = signal.join(token(room, "viewer")).await?
    else {
        anyhow::bail!("join refused");
    };
    let mut ids: HashSet<String> = publications.into_iter().map(|p| p.publication_id).collect();
    while ids.len() < count {
        let added = signal
            .wait_event(Duration::from_secs(20), |event| match event {
                ServerMessage::PublicationAdded { publication } => {
                    Some(publication.publication_id.clone())
                }
                _ => None,
            })
            .await
            .context("the ingested publications did not appear")?;
        ids.insert(added);
    }
    Ok((signal, ids))
}

/// Waits until every publication of `ids` was announced stalled (or, with `stalled` false,
/// resumed); returns how long that took.
async fn all_announced(
    signal: &mut SignalClient,
    ids: &HashSet<String>,
    stalled: bool,
    within: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    let mut pending = ids.clone();
    while !pending.is_empty() {
        let left = within.saturating_sub(start.elapsed());
        let id = signal
            .wait_event(left, |event| match event {
                ServerMessage::PublicationStalled { publication_id, .. } if stalled => {
                    Some(publication_id.clone())
                }
                ServerMessage::PublicationResumed { publication_id, .. } if !stalled => {
                    Some(publication_id.clone())
                }
                _ => None,
            })
            .await
            .with_context(|| format!("stalled={stalled}: {pending:?} not announced"))?;
        pending.remove(&id);
    }
    Ok(start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmp_encoder_killed_is_stalled_and_restarted_is_resumed() -> Result<()> {
    init_tracing();
    const KEY: &str = "e2e-liveness-stream-key-0123";
    const ROOM: &str = "rtmp-liveness";
    let server = TestServer::start().await?;
    let mut keys = StreamKeys::new();
    keys.add(
        KEY,
        StreamTarget {
            room: ROOM.into(),
            identity: "encoder".into(),
        },
    )?;
    let config = RtmpConfig {
        listen: "127.0.0.1:0".parse()?,
        ..RtmpConfig::default()
    };
    let rtmp = RtmpServer::start(config, keys, server.sfu.clone()).await?;
    let mut encoder = ffmpeg(rtmp.local_addr(), KEY, Stdio::null())?;
    let (mut signal, ids) = viewer(&server, ROOM, 2).await?;
    // Media flows: video frames (and their packets) went through.
    until(Duration::from_secs(10), "ffmpeg's video", || {
        rtmp.stats()
            .iter()
            .any(|(target, stats)| target.room == ROOM && stats.video_frames > 10)
    })
    .await?;
    encoder.kill()?;
    encoder.wait()?;
    let stalled = all_announced(&mut signal, &ids, true, Duration::from_secs(5)).await?;
    ensure!(
        stalled <= STALL_GOAL,
        "told {stalled:?} after the encoder died"
    );
    let mut encoder = ffmpeg(rtmp.local_addr(), KEY, Stdio::null())?;
    let resumed = all_announced(&mut signal, &ids, false, Duration::from_secs(10)).await;
    encoder.kill()?;
    encoder.wait()?;
    let resumed = resumed?;
    eprintln!(
        "rtmp liveness: stalled {stalled:?} after ffmpeg was killed; resumed {resumed:?} after it restarted"
    );
    rtmp.shutdown().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_camera_away_is_stalled_and_back_is_resumed() -> Result<()> {
    init_tracing();
    const ROOM: &str = "rtsp-liveness";
    let camera = RtspServer::start(&["--audio", "aac"]).await?;
    let port = camera.port;
    let server = TestServer::start().await?;
    let sources = RtspSources::start(
        RtspConfig::default(),
        vec![source(camera.url(), ROOM, None)],
        server.sfu.clone(),
    );
    let (mut signal, ids) = viewer(&server, ROOM, 2).await?;
    until(Duration::from_secs(10), "the camera playing", || {
        sources.playing() == 1
    })
    .await?;
    drop(camera);
    let stalled = all_announced(&mut signal, &ids, true, Duration::from_secs(5)).await?;
    ensure!(
        stalled <= STALL_GOAL,
        "told {stalled:?} after the camera went away"
    );
    let _camera = RtspServer::start_on(port, &["--audio", "aac"]).await?;
    let resumed = all_announced(&mut signal, &ids, false, Duration::from_secs(15)).await?;
    eprintln!(
        "rtsp liveness: stalled {stalled:?} after the camera died; resumed {resumed:?} after it restarted"
    );
    sources.shutdown().await;
    server.stop().await;
    Ok(())
}
