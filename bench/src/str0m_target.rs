//! Driving the peer SFU: str0m 0.25's `chat` example (built outside this repository, see
//! docs/benchmarks.md). Its protocol: the client creates a data channel, POSTs its SDP offer as
//! JSON (`{"type":"offer","sdp":…}`) to `/` and gets the answer; the server then offers every
//! other client's tracks over that data channel and the client answers there. It forwards
//! frames (depacketize → repacketize), so video is measured from frame stamps.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use sluice_e2e::peer::{ClientPeer, OPUS, VP8};
use sluice_signaling::protocol::IceCandidate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::client::{self, AbortOnDrop, KeepAlive, MediaSource, Reception};
use crate::media::{self, VideoShape};
use crate::process::ServerProcess;
use crate::ramp::{self, RampConfig, RampResult, Target};
use crate::stats::StampMode;

#[derive(Debug, Serialize, Deserialize)]
struct Sdp {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

struct Str0mChat {
    process: ServerProcess,
}

/// Starts the chat binary and runs the same ramp against it.
pub async fn run(
    chat: &Path,
    config: &RampConfig,
    direct: &Reception,
    started: Instant,
) -> Result<RampResult> {
    eprintln!(
        "[{:6.1}s] str0m-chat: starting {}",
        started.elapsed().as_secs_f64(),
        chat.display()
    );
    let process = ServerProcess::start(
        "str0m-chat",
        chat,
        &[],
        &[("CHAT_HTTP_PORT", "0"), ("RUST_LOG", "error")],
    )?;
    let target = Arc::new(Str0mChat { process });
    let result = ramp::run(
        Arc::clone(&target) as Arc<dyn Target>,
        config,
        direct,
        started,
        None,
    )
    .await;
    if let Ok(t) = Arc::try_unwrap(target) {
        t.process.stop();
    }
    result
}

impl Str0mChat {
    /// POSTs the offer, returns the answer SDP.
    async fn post_offer(&self, sdp: String) -> Result<String> {
        post_offer(self.process.host_port(), "/", "chat", sdp).await
    }

    /// Offer (with a data channel and all candidates), POST, apply the answer, then keep
    /// answering the server's offers on the data channel; waits until connected.
    async fn connect(&self, mut peer: ClientPeer) -> Result<AbortOnDrop> {
        let channel = peer.pc.create_data_channel("sluice-bench", None).await?;
        let offer = peer.offer().await?;
        let candidates = gather(&mut peer).await;
        let answer = self
            .post_offer(with_candidates(&offer, &candidates))
            .await?;
        peer.apply_answer(answer).await?;
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let service = tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            let mut state = peer.state.clone();
            loop {
                tokio::select! {
                    event = channel.poll() => match event {
                        Some(DataChannelEvent::OnMessage(message)) => {
                            if let Err(err) = answer_on_channel(&peer, channel.as_ref(), &message.data).await {
                                tracing::debug!(%err, "renegotiation failed");
                            }
                        }
                        Some(_) => {}
                        None => return,
                    },
                    changed = state.changed() => {
                        if changed.is_err() { return; }
                        if *state.borrow() == RTCPeerConnectionState::Connected
                            && let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            }
        });
        let service = AbortOnDrop(service);
        tokio::time::timeout(Duration::from_secs(20), connected)
            .await
            .context("not connected within 20 s")?
            .context("connection task ended")?;
        Ok(service)
    }
}

async fn answer_on_channel(
    peer: &ClientPeer,
    channel: &dyn DataChannel,
    data: &[u8],
) -> Result<()> {
    let message: Sdp = serde_json::from_slice(data)?;
    if message.kind != "offer" {
        return Ok(());
    }
    let answer = peer.answer(message.sdp).await?;
    let json = serde_json::to_string(&Sdp {
        kind: "answer".to_owned(),
        sdp: answer,
    })?;
    channel.send_text(&json).await?;
    Ok(())
}

/// POSTs `{"type":"offer","sdp":…}` to `http://addr{path}` and returns the answer's SDP
/// (the signaling of str0m's chat and of the prototype relay); `who` names the server in errors.
pub(crate) async fn post_offer(addr: &str, path: &str, who: &str, sdp: String) -> Result<String> {
    let body = serde_json::to_vec(&Sdp {
        kind: "offer".to_owned(),
        sdp,
    })?;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .with_context(|| format!("{who} did not answer the offer in time"))??;
    let text = String::from_utf8_lossy(&response);
    let (status, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    ensure!(
        status.starts_with("HTTP/1.1 200"),
        "{who} refused: {status}: {body}"
    );
    let answer: Sdp = serde_json::from_str(body.trim()).context("parsing the answer")?;
    Ok(answer.sdp)
}

/// Local candidates, waiting briefly for host candidates on loopback.
pub(crate) async fn gather(peer: &mut ClientPeer) -> Vec<IceCandidate> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let wait = if out.is_empty() {
            deadline
        } else {
            tokio::time::Instant::now() + Duration::from_millis(150)
        };
        match tokio::time::timeout_at(wait.min(deadline), peer.candidates.recv()).await {
            Ok(Some(c)) if !c.candidate.is_empty() => out.push(c),
            Ok(Some(_)) => {}
            _ => return out,
        }
    }
}

/// The offer with `candidates` added to every media section (no trickle in chat's protocol).
pub(crate) fn with_candidates(sdp: &str, candidates: &[IceCandidate]) -> String {
    if sdp.contains("a=candidate:") {
        return sdp.to_owned();
    }
    let lines: String = candidates
        .iter()
        .map(|c| {
            let line = c.candidate.trim_start_matches("a=");
            format!("a={line}\r\n")
        })
        .collect();
    let mut out = String::new();
    let mut in_media = false;
    for line in sdp.split_inclusive("\r\n") {
        if line.starts_with("m=") {
            if in_media {
                out.push_str(&lines);
            }
            in_media = true;
        }
        out.push_str(line);
    }
    if in_media {
        out.push_str(&lines);
    }
    out
}

#[async_trait::async_trait]
impl Target for Str0mChat {
    fn name(&self) -> &str {
        "str0m-chat"
    }
    fn pid(&self) -> u32 {
        self.process.pid()
    }
    fn room_size(&self) -> usize {
        // chat has no rooms: every client receives every other client's tracks.
        usize::MAX
    }
    async fn add_publisher(
        &self,
        _room: &str,
        shape: VideoShape,
        ssrc_base: u32,
    ) -> Result<(MediaSource, KeepAlive)> {
        let peer = ClientPeer::new().await?;
        let video = peer.add_send_track(VP8, ssrc_base).await?;
        let audio = peer.add_send_track(OPUS, ssrc_base + 1).await?;
        let service = self.connect(peer).await?;
        let source = client::start_media(video, audio, shape, (ssrc_base, ssrc_base + 1));
        Ok((source, Box::new(service)))
    }
    async fn add_subscriber(&self, _room: &str, _identity: &str) -> Result<(Reception, KeepAlive)> {
        let mut peer = ClientPeer::new().await?;
        let reception = Reception::new(StampMode::FrameStamp, media::now_ns());
        let tracks = std::mem::replace(&mut peer.tracks, tokio::sync::mpsc::unbounded_channel().1);
        let readers = AbortOnDrop(client::spawn_track_readers(tracks, reception.clone()));
        // Tracks arrive after the server's offer on the data channel, answered by `connect`.
        let service = self.connect(peer).await?;
        Ok((reception, Box::new((service, readers))))
    }
}
