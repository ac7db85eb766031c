//! The server API against the `sluice` binary, with real WebSocket participants: admin tokens
//! only; rooms and participants listed with their names and metadata; a participant's update
//! reaches the room; a removed participant is closed with 4003 and its token no longer joins;
//! closing a room removes everyone. The `sluice` admin subcommands are run against the same
//! server.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sluice_signaling::auth::{Grants, TokenAuthority};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::{Process, start_sluice};

const SECRET: &str = "api-test-secret-0123456789abcdef";
/// Bound on every wait.
const WAIT: Duration = Duration::from_secs(15);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Kills the server when the test ends.
fn start() -> Result<(Process, String)> {
    start_sluice(&["--rtmp", "off"], SECRET)
}

fn authority() -> TokenAuthority {
    TokenAuthority::new(SECRET.as_bytes())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn room_token(room: &str, identity: &str, name: Option<&str>, issued_at: u64) -> Result<String> {
    let grants = Grants {
        room: room.into(),
        identity: identity.into(),
        can_publish: true,
        can_subscribe: true,
        name: name.map(Into::into),
        metadata: name.map(|n| format!(r#"{{"seat":"{n}"}}"#)),
    };
    Ok(authority().mint_at(&grants, issued_at, Duration::from_secs(600))?)
}

/// Joins with `token`; returns the socket and the `joined` (or `error`) answer.
async fn join(addr: &str, token: &str) -> Result<(Socket, Value)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
    let join = json!({"type": "join", "requestId": 1, "token": token});
    ws.send(Message::Text(join.to_string().into())).await?;
    let answer = next_message(&mut ws).await?;
    Ok((ws, answer))
}

async fn next_message(ws: &mut Socket) -> Result<Value> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await? {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
            Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
            Some(Ok(_)) => continue,
            other => bail!("socket ended: {other:?}"),
        }
    }
}

/// The next message of `kind`, skipping others.
async fn next_of(ws: &mut Socket, kind: &str) -> Result<Value> {
    loop {
        let message = next_message(ws).await?;
        if message["type"] == kind {
            return Ok(message);
        }
    }
}

/// Reads until the server closes; returns the close code.
async fn close_code(ws: &mut Socket) -> Result<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await? {
            Some(Ok(Message::Close(frame))) => {
                return frame
                    .map(|f| u16::from(f.code))
                    .ok_or_else(|| anyhow!("close without a code"));
            }
            Some(Ok(_)) => continue,
            other => bail!("socket ended without a close frame: {other:?}"),
        }
    }
}

async fn api(
    method: reqwest::Method,
    addr: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut request = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

fn cli(addr: &str, args: &[&str]) -> Result<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--url")
        .arg(format!("http://{addr}"))
        .env("SLUICE_SECRET", SECRET)
        .output()?;
    ensure!(
        output.status.success(),
        "sluice {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

#[tokio::test]
async fn backends_list_update_remove_and_close_through_the_api() -> Result<()> {
    use reqwest::Method;
    let (_server, addr) = start()?;
    let admin = authority().mint_admin("backend", Duration::from_secs(60))?;
    let now = unix_now();

    let (mut alice, joined) = join(&addr, &room_token("api", "alice", Some("Alice"), now)?).await?;
    ensure!(joined["type"] == "joined", "{joined}");
    ensure!(joined["participant"]["name"] == "Alice", "{joined}");
    let bob_token = room_token("api", "bob", None, now)?;
    let (mut bob, joined) = join(&addr, &bob_token).await?;
    ensure!(joined["type"] == "joined", "{joined}");
    let seen_alice = &joined["participants"][0];
    ensure!(
        seen_alice["name"] == "Alice" && seen_alice["metadata"] == r#"{"seat":"Alice"}"#,
        "a joiner sees the others' names and metadata: {joined}"
    );

    // Only admin tokens pass.
    let (status, body) = api(Method::GET, &addr, "/api/rooms", None, None).await?;
    ensure!(
        status == 401 && body["error"] == "unauthorized",
        "{status} {body}"
    );
    let (status, body) = api(Method::GET, &addr, "/api/rooms", Some(&bob_token), None).await?;
    ensure!(
        status == 403 && body["error"] == "forbidden",
        "{status} {body}"
    );
    let forged = TokenAuthority::new(b"another-secret-0123456789").mint_admin("x", WAIT)?;
    let (status, _) = api(Method::GET, &addr, "/api/rooms", Some(&forged), None).await?;
    ensure!(status == 401, "a token of another secret: {status}");

    let (status, body) = api(Method::GET, &addr, "/api/rooms", Some(&admin), None).await?;
    ensure!(status == 200, "{status} {body}");
    ensure!(
        body["rooms"] == json!([{"room": "api", "participants": 2, "publications": 0}]),
        "{body}"
    );
    let (status, body) = api(Method::GET, &addr, "/api/rooms/api", Some(&admin), None).await?;
    ensure!(status == 200, "{status} {body}");
    let identities: Vec<&str> = body["participants"]
        .as_array()
        .context("participants")?
        .iter()
        .filter_map(|p| p["identity"].as_str())
        .collect();
    ensure!(
        identities.len() == 2 && identities.contains(&"bob"),
        "{body}"
    );
    let (status, _) = api(Method::GET, &addr, "/api/rooms/nowhere", Some(&admin), None).await?;
    ensure!(status == 404, "an unknown room: {status}");

    // An update reaches everyone in the room.
    let patch = json!({"name": "Bob B.", "metadata": "{\"hand\":true}"});
    let (status, body) = api(
        Method::PATCH,
        &addr,
        "/api/rooms/api/participants/bob",
        Some(&admin),
        Some(patch),
    )
    .await?;
    ensure!(
        status == 200 && body["participants"][0]["name"] == "Bob B.",
        "{status} {body}"
    );
    let updated = next_of(&mut alice, "participantUpdated").await?;
    ensure!(
        updated["participant"]["identity"] == "bob"
            && updated["participant"]["name"] == "Bob B."
            && updated["participant"]["metadata"] == "{\"hand\":true}",
        "{updated}"
    );
    let too_big = json!({"metadata": "x".repeat(3000)});
    let (status, body) = api(
        Method::PATCH,
        &addr,
        "/api/rooms/api/participants/bob",
        Some(&admin),
        Some(too_big),
    )
    .await?;
    ensure!(
        status == 400 && body["error"] == "invalidRequest",
        "{status} {body}"
    );
    let (status, _) = api(
        Method::PATCH,
        &addr,
        "/api/rooms/api/participants/carol",
        Some(&admin),
        Some(json!({"name": "C"})),
    )
    .await?;
    ensure!(status == 404, "an unknown identity: {status}");

    // Grants: bob may no longer publish; the room is not told (nothing it sees changed).
    let (status, body) = api(
        Method::PATCH,
        &addr,
        "/api/rooms/api/participants/bob",
        Some(&admin),
        Some(json!({"canPublish": false})),
    )
    .await?;
    ensure!(status == 200, "{status} {body}");
    // A publish with a track (one without tracks only opens data channels, which any
    // participant may).
    let publish = json!({
        "type": "publish", "requestId": 7, "sdp": "v=0",
        "tracks": [{"mid": "0", "kind": "video", "source": "camera"}],
    });
    bob.send(Message::Text(publish.to_string().into())).await?;
    let refused = next_of(&mut bob, "error").await?;
    ensure!(
        refused["requestId"] == 7 && refused["code"] == "permissionDenied",
        "publishing after the grant was revoked: {refused}"
    );
    let (status, _) = api(
        Method::PATCH,
        &addr,
        "/api/rooms/api/participants/bob",
        Some(&admin),
        Some(json!({})),
    )
    .await?;
    ensure!(status == 400, "an empty patch: {status}");

    // The CLI over the same API.
    let rooms = cli(&addr, &["rooms"])?;
    ensure!(rooms["rooms"][0]["participants"] == 2, "{rooms}");

    // Removal: bob is closed with 4003, alice is told, bob's token no longer joins.
    let kicked = cli(&addr, &["kick", "api", "bob"])?;
    ensure!(kicked["removed"] == 1, "{kicked}");
    ensure!(close_code(&mut bob).await? == 4003, "removed: close 4003");
    next_of(&mut alice, "participantLeft").await?;
    let (_, refused) = join(&addr, &bob_token).await?;
    ensure!(
        refused["type"] == "error"
            && refused["code"] == "unauthorized"
            && refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("revoked")),
        "the removed identity's token: {refused}"
    );
    // A token issued after the removal joins.
    let (mut bob, joined) = join(&addr, &room_token("api", "bob", None, now + 2)?).await?;
    ensure!(joined["type"] == "joined", "a newer token: {joined}");

    // Closing the room removes everyone.
    let (status, body) = api(Method::DELETE, &addr, "/api/rooms/api", Some(&admin), None).await?;
    ensure!(status == 200 && body["removed"] == 2, "{status} {body}");
    ensure!(
        close_code(&mut alice).await? == 4003,
        "alice closed with 4003"
    );
    ensure!(close_code(&mut bob).await? == 4003, "bob closed with 4003");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = api(Method::GET, &addr, "/api/rooms/api", Some(&admin), None).await?;
        if status == 404 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the room did not close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
