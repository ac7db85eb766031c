//! RTSP sources through the server API, against a real RTSP server (GStreamer on loopback): an
//! admin adds a camera with `POST /api/rtsp-sources`, it is listed without its credentials and
//! its publications appear in the room; a second source as the same room and identity is 409,
//! malformed ones 400; `DELETE /api/rtsp-sources/{id}` stops it and its publications leave the
//! room; a room token cannot use the API.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use reqwest::Method;
use serde_json::{Value, json};
use sluice_e2e::{SECRET, TestServer, init_tracing, token};
use sluice_signaling::auth::TokenAuthority;

use crate::rtsp::RtspServer;

const WAIT: Duration = Duration::from_secs(15);

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut request = reqwest::Client::new()
        .request(method, format!("http://{}{path}", server.addr))
        .bearer_auth(bearer);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("{status}: {text}"))?
    };
    Ok((status, body))
}

/// Waits until the room holds `count` publications (0: the room has none or is gone).
async fn publications(server: &TestServer, room: &str, count: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = server
            .sfu
            .room_publications(room)
            .await
            .map_or(0, |p| p.len());
        if now == count {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{room} holds {now} publications, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_added_listed_and_removed_through_the_server_api() -> Result<()> {
    init_tracing();
    let camera = RtspServer::start(&["--audio", "pcmu"]).await?;
    let server = TestServer::start().await?;
    let admin = TokenAuthority::new(SECRET.as_bytes()).mint_admin("backend", WAIT)?;
    let room = "rtsp-api";
    let source = json!({"url": camera.url().to_string(), "room": room, "identity": "door"});

    let (status, _) = call(
        &server,
        Method::POST,
        "/api/rtsp-sources",
        &token(room, "someone"),
        Some(source.clone()),
    )
    .await?;
    ensure!(status == 403, "a room token: {status}");

    let (status, added) = call(
        &server,
        Method::POST,
        "/api/rtsp-sources",
        &admin,
        Some(source.clone()),
    )
    .await?;
    ensure!(status == 201, "add: {status} {added}");
    let id = added["id"].as_u64().context("no id")?;
    ensure!(
        added["room"] == room && added["transport"] == "tcp" && added["credentials"] == false,
        "{added}"
    );
    // Video and audio (PCMU → Opus) are published into the room.
    publications(&server, room, 2).await?;

    let (status, list) = call(&server, Method::GET, "/api/rtsp-sources", &admin, None).await?;
    ensure!(status == 200, "list: {status}");
    let listed = list["sources"].as_array().context("no sources")?;
    ensure!(
        listed.len() == 1 && listed[0]["id"] == id && listed[0]["identity"] == "door",
        "{list}"
    );

    let refusals = [
        (source.clone(), 409, "the same room and identity"),
        (
            json!({"url": "http://127.0.0.1/cam", "room": room, "identity": "x"}),
            400,
            "not rtsp://",
        ),
        (
            json!({"url": "rtsp://user:pw@127.0.0.1/cam", "room": room, "identity": "x"}),
            400,
            "credentials in the url",
        ),
        (
            json!({"url": camera.url().to_string(), "room": room, "identity": "x", "username": "u"}),
            400,
            "a username without a password",
        ),
        (json!({"url": camera.url().to_string()}), 400, "no room"),
    ];
    for (body, expected, why) in refusals {
        let (status, answer) = call(
            &server,
            Method::POST,
            "/api/rtsp-sources",
            &admin,
            Some(body),
        )
        .await?;
        ensure!(status == expected, "{why}: {status} {answer}");
    }

    let path = format!("/api/rtsp-sources/{id}");
    let (status, _) = call(&server, Method::DELETE, &path, &admin, None).await?;
    ensure!(status == 204, "delete: {status}");
    publications(&server, room, 0).await?;
    let (status, _) = call(&server, Method::DELETE, &path, &admin, None).await?;
    ensure!(status == 404, "delete again: {status}");
    let (_, list) = call(&server, Method::GET, "/api/rtsp-sources", &admin, None).await?;
    ensure!(list["sources"] == json!([]), "{list}");
    server.stop().await;
    Ok(())
}
