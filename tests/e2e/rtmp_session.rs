//! RTMP sessions as encoders live them: an encoder that comes back with fewer tracks, and what a
//! refused or accepted encoder is told — with rml_rtmp's client session and with ffmpeg, the
//! real encoder — while no stream key reaches the encoder's status or the server's log.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sluice_e2e::{SharedLog, SignalClient, TestServer, init_tracing, token};
use sluice_sfu::ingest::{RtmpConfig, RtmpServer, StreamKeys, StreamTarget};
use sluice_sfu::runtime::{Sfu, SfuConfig};
use sluice_signaling::protocol::{MediaKind, PublicationInfo, ServerMessage};

use crate::rtmp::{Publisher, aac_frames, avc_frame, avc_sequence_header, flv_audio, flv_video};

const KEY: &str = "e2e-session-stream-key-0123";
const WRONG_KEY: &str = "e2e-not-a-configured-key-4567";
const ROOM: &str = "rtmp-session";

fn keys() -> Result<StreamKeys> {
    let mut keys = StreamKeys::new();
    let target = StreamTarget {
        room: ROOM.into(),
        identity: "encoder".into(),
    };
    keys.add(KEY, target)?;
    Ok(keys)
}

/// Joins `ROOM` as `identity` and waits until it holds `count` publications.
async fn viewer(
    server: &TestServer,
    identity: &str,
    count: usize,
) -> Result<(SignalClient, Vec<PublicationInfo>)> {
    let mut signal = SignalClient::connect(&server.ws_url()).await?;
    let ServerMessage::Joined { publications, .. } = signal.join(token(ROOM, identity)).await?
    else {
        bail!("join refused");
    };
    let mut publications = publications;
    while publications.len() < count {
        let added = signal
            .wait_event(Duration::from_secs(5), |m| match m {
                ServerMessage::PublicationAdded { publication } => Some(publication.clone()),
                _ => None,
            })
            .await
            .with_context(|| format!("{} of {count} publications", publications.len()))?;
        publications.push(added);
    }
    Ok((signal, publications))
}

fn of_kind(publications: &[PublicationInfo], kind: MediaKind) -> Result<PublicationInfo> {
    publications
        .iter()
        .find(|p| p.kind == kind)
        .cloned()
        .with_context(|| format!("no {kind:?} publication in {publications:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_back_without_audio_loses_its_audio_publication_and_keeps_its_video()
-> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let config = RtmpConfig {
        listen: "127.0.0.1:0".parse()?,
        ..RtmpConfig::default()
    };
    let rtmp = RtmpServer::start(config, keys()?, server.sfu.clone()).await?;
    let addr = rtmp.local_addr();
    let (aac_config, aac) = aac_frames();

    // The first session carries video and audio.
    let mut encoder = Publisher::connect(addr).await?;
    encoder.publish(KEY).await?;
    encoder
        .video(0, flv_video(true, 0, &avc_sequence_header()))
        .await?;
    encoder.audio(0, flv_audio(0, &aac_config)).await?;
    for i in 0..10u32 {
        let ms = i * 21;
        encoder.audio(ms, flv_audio(1, &aac[i as usize])).await?;
        encoder
            .video(ms, flv_video(i == 0, 1, &avc_frame(i == 0, 500)))
            .await?;
    }
    let (mut watching, publications) = viewer(&server, "viewer", 2).await?;
    let video = of_kind(&publications, MediaKind::Video)?;
    let audio = of_kind(&publications, MediaKind::Audio)?;

    // The connection drops without an unpublish (the stream is parked) and the encoder comes
    // back within the grace period, without audio. The server may not have seen the drop
    // when the first attempt arrives: that one is refused as a second publisher.
    drop(encoder);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut encoder = loop {
        ensure!(
            Instant::now() < deadline,
            "the reconnect was never accepted"
        );
        let mut encoder = Publisher::connect(addr).await?;
        if encoder.publish_status(KEY).await? == "NetStream.Publish.Start" {
            break encoder;
        }
    };
    encoder
        .video(5_000, flv_video(true, 0, &avc_sequence_header()))
        .await?;
    let back = Instant::now();
    let mut ms = 5_000;
    let removed = loop {
        ensure!(
            back.elapsed() < Duration::from_secs(5),
            "the audio publication is still up 5 s after the encoder came back without audio"
        );
        let keyframe = ms == 5_000;
        encoder
            .video(ms, flv_video(keyframe, 1, &avc_frame(keyframe, 500)))
            .await?;
        ms += 33;
        let removed = watching
            .wait_event(Duration::from_millis(33), |m| match m {
                ServerMessage::PublicationRemoved { publication_id, .. } => {
                    Some(publication_id.clone())
                }
                _ => None,
            })
            .await;
        if let Ok(removed) = removed {
            break removed;
        }
    };
    println!(
        "ABSENT_TRACK_REMOVED_MS {} (reconnect without audio -> the viewer is told the audio publication is gone)",
        back.elapsed().as_millis()
    );
    ensure!(
        removed == audio.publication_id,
        "{removed} removed, not the audio publication {}",
        audio.publication_id
    );

    // The video goes on as the same publication: a viewer joining now sees it alone.
    let (_joiner, now) = viewer(&server, "joiner", 1).await?;
    let ids: Vec<&str> = now.iter().map(|p| p.publication_id.as_str()).collect();
    ensure!(
        ids == [video.publication_id.as_str()],
        "a new viewer sees {ids:?}, expected only the video {}",
        video.publication_id
    );
    rtmp.shutdown().await;
    server.stop().await;
    Ok(())
}

/// Every log line of the current thread, kept for the test to read.
#[derive(Clone, Default)]
struct CapturedLog(SharedLog<u8>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned()
    }
}

/// ffmpeg publishing a small test picture and tone to `key` on `addr` for at most 20 s.
pub(crate) fn ffmpeg(addr: std::net::SocketAddr, key: &str, stderr: Stdio) -> Result<Child> {
    let url = format!("rtmp://{addr}/live/{key}");
    Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "warning", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args([
            "-tune",
            "zerolatency",
            "-g",
            "10",
            "-c:a",
            "aac",
            "-t",
            "20",
        ])
        .args(["-f", "flv", &url])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("ffmpeg (apt-get install ffmpeg; scripts/test.sh installs it)")
}

/// Waits (bounded) for ffmpeg to give up; returns its exit status and what it printed.
async fn refused(mut child: Child) -> Result<(std::process::ExitStatus, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("ffmpeg still publishing 10 s after a refusal");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = child.wait_with_output()?;
    Ok((
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Runs on one thread so that the server's tasks log to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn refusals_are_on_status_errors_and_no_stream_key_is_echoed_or_logged() -> Result<()> {
    let log = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(log.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let config = RtmpConfig {
        listen: "127.0.0.1:0".parse()?,
        ..RtmpConfig::default()
    };
    let rtmp = RtmpServer::start(config, keys()?, Sfu::start(SfuConfig::default())?).await?;
    let addr = rtmp.local_addr();

    // rml_rtmp's client session reads the answers as statuses: `onStatus` with the code. None
    // of what the server sends names the key.
    let mut stranger = Publisher::connect(addr).await?;
    let code = stranger.publish_status(WRONG_KEY).await?;
    ensure!(
        code == "NetStream.Publish.BadName",
        "an unknown key was answered with {code}"
    );
    let mut encoder = Publisher::connect(addr).await?;
    let code = encoder.publish_status(KEY).await?;
    ensure!(code == "NetStream.Publish.Start", "{code}");
    for (publisher, key) in [(&stranger, WRONG_KEY), (&encoder, KEY)] {
        ensure!(
            !String::from_utf8_lossy(&publisher.received).contains(key),
            "the server echoed the stream key to its encoder"
        );
    }
    // Its connection drops: ffmpeg below resumes the parked stream.
    drop(encoder);

    // ffmpeg publishes; a second ffmpeg on the live key and one with an unknown key are
    // refused, and each says why.
    let mut live = ffmpeg(addr, KEY, Stdio::null())?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !rtmp
        .stats()
        .iter()
        .any(|(target, stats)| target.room == ROOM && stats.video_frames > 0)
    {
        if Instant::now() > deadline {
            let _ = live.kill();
            bail!("ffmpeg's stream did not arrive in 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (key, reason) in [
        (KEY, "this stream key is already live"),
        (WRONG_KEY, "stream key not accepted"),
    ] {
        let (status, stderr) = refused(ffmpeg(addr, key, Stdio::piped())?).await?;
        println!("FFMPEG_REFUSED exit={status} {}", stderr.trim());
        ensure!(!status.success(), "ffmpeg exited 0 after a refusal");
        ensure!(
            stderr.contains(&format!("Server error: {reason}")),
            "ffmpeg did not report the refusal: {stderr}"
        );
        let server_said: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("Server error"))
            .collect();
        ensure!(
            server_said.iter().all(|l| !l.contains(key)),
            "the refusal names the key: {server_said:?}"
        );
    }
    let _ = live.kill();
    let _ = live.wait();
    rtmp.shutdown().await;

    let text = log.text();
    ensure!(
        text.contains("publishing") && text.contains("publish refused"),
        "the log capture missed the server's lines:\n{text}"
    );
    for key in [KEY, WRONG_KEY] {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(key)).collect();
        ensure!(leaks.is_empty(), "log lines name a stream key: {leaks:?}");
    }
    Ok(())
}
