//! Logs never show a secret: with every Sluice log at trace level, a join, a refused resume
//! and RTMP publishes with a wrong and a right stream key leave no token, resume token, server
//! secret or stream key in the output.

use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::{Result, ensure};
use sluice_e2e::{SECRET, SignalClient, TestServer, token};
use sluice_sfu::ingest::{RtmpConfig, RtmpServer, StreamKeys, StreamTarget};
use sluice_signaling::protocol::{ClientMessage, ServerMessage};

use crate::rtmp::Publisher;

/// What the subscriber under test wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: every task of the server logs to this thread's subscriber.
#[tokio::test]
async fn logs_never_show_a_token_a_secret_or_a_stream_key() -> Result<()> {
    const KEY: &str = "log-test-stream-key-RIGHT-5ec2e7";
    const WRONG_KEY: &str = "log-test-stream-key-WRONG-77aa01";
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "sluice_sfu=trace,sluice_signaling=trace",
        ))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let server = TestServer::start().await?;
    let mut keys = StreamKeys::new();
    let target = StreamTarget {
        room: "logs".into(),
        identity: "encoder".into(),
    };
    keys.add(KEY, target)?;
    let config = RtmpConfig {
        listen: "127.0.0.1:0".parse()?,
        ..RtmpConfig::default()
    };
    let rtmp = RtmpServer::start(config, keys, server.sfu.clone()).await?;
    let loopback = "127.0.0.1".parse()?;

    let token = token("logs", "viewer");
    let mut client = SignalClient::connect(&server.ws_url()).await?;
    let joined = client.join(token.clone()).await?;
    let ServerMessage::Joined {
        resume_token,
        participant,
        ..
    } = joined
    else {
        anyhow::bail!("join failed: {joined:?}");
    };
    // A resume with a wrong token, from another connection.
    let wrong_resume = "00".repeat(16);
    let mut intruder = SignalClient::connect(&server.ws_url()).await?;
    let request_id = intruder.next_id();
    let refused = intruder
        .request(ClientMessage::Resume {
            request_id,
            participant_id: participant.participant_id.clone(),
            resume_token: wrong_resume.clone(),
        })
        .await?;
    ensure!(
        matches!(refused, ServerMessage::Error { .. }),
        "{refused:?}"
    );

    let mut wrong = Publisher::connect_from(rtmp.local_addr(), loopback).await?;
    ensure!(
        wrong.publish(WRONG_KEY).await.is_err(),
        "a wrong key publishes"
    );
    let mut encoder = Publisher::connect_from(rtmp.local_addr(), loopback).await?;
    encoder.publish(&format!("{KEY}?client=obs")).await?;

    rtmp.shutdown().await;
    server.stop().await;
    drop(_logging);

    let logs = String::from_utf8_lossy(&captured.0.lock().expect("log buffer")).into_owned();
    // The scenario was logged at all: the join, the refused resume, the RTMP publish.
    for expected in ["joined", "resume refused", "publishing"] {
        ensure!(
            logs.contains(expected),
            "no {expected:?} in the logs:\n{logs}"
        );
    }
    for (what, secret) in [
        ("room token", token.as_str()),
        ("server secret", SECRET),
        ("resume token", resume_token.as_str()),
        ("wrong resume token", wrong_resume.as_str()),
        ("stream key", KEY),
        ("wrong stream key", WRONG_KEY),
    ] {
        ensure!(!logs.contains(secret), "the logs show the {what}:\n{logs}");
    }
    Ok(())
}
