//! The `sluice` binary drains on SIGTERM and on Ctrl-C (SIGINT): a joined client is closed with
//! 1001 (going away) and the process exits within `--drain-timeout`, even with a connection
//! stuck halfway through its request headers.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use sluice_signaling::auth::{Grants, TokenAuthority};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use common::{Process, start_sluice};

const SECRET: &str = "drain-test-secret-0123456789abcdef";
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on every wait.
const WAIT: Duration = Duration::from_secs(15);

/// Starts `sluice` on an ephemeral port; returns it and its HTTP address.
fn start() -> (Process, String) {
    let drain = DRAIN_TIMEOUT.as_secs().to_string();
    start_sluice(&["--rtmp", "off", "--drain-timeout", &drain], SECRET).unwrap()
}

fn token() -> String {
    let grants = Grants {
        room: "drain".into(),
        identity: "viewer".into(),
        can_publish: false,
        can_subscribe: true,
        ..Grants::default()
    };
    TokenAuthority::new(SECRET.as_bytes())
        .mint(&grants, Duration::from_secs(60))
        .unwrap()
}

/// Waits for the process to exit; returns whether it succeeded, and when.
fn wait_exit(server: &mut Process) -> (bool, Instant) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            return (status.success(), Instant::now());
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn drains_on(signal: &str) {
    let (mut server, addr) = start();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let join = format!(r#"{{"type":"join","requestId":1,"token":"{}"}}"#, token());
    ws.send(Message::Text(join.into())).await.unwrap();
    let answer = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    let answer = answer.unwrap().unwrap().into_text().unwrap();
    assert!(answer.contains(r#""type":"joined""#), "{answer}");
    let mut stuck = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stuck
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();

    let signalled = Instant::now();
    let sent = Command::new("kill")
        .args([signal, &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal}");
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(close, Some(1001), "going away");
    let (success, exited) = wait_exit(&mut server);
    assert!(success, "a drained server exits with success");
    let took = exited - signalled;
    assert!(
        took < DRAIN_TIMEOUT + Duration::from_secs(1),
        "exited {took:?} after {signal}, over the {DRAIN_TIMEOUT:?} drain timeout"
    );
    drop(stuck);
}

#[tokio::test]
async fn sigterm_drains_and_exits_within_the_deadline() {
    drains_on("-TERM").await;
}

#[tokio::test]
async fn ctrl_c_drains_and_exits_within_the_deadline() {
    drains_on("-INT").await;
}
