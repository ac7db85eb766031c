//! Data messages on a real server: webrtc-rs participants open Sluice's two data channels (real
//! SCTP over DTLS) on a publisher connection without tracks, as the SDK does. A reliable
//! message reaches everyone else in the room, in order, with its sender and topic; one naming
//! an identity reaches only it; nothing crosses rooms; the lossy channel delivers too; and
//! oversized, over-rate and malformed messages reach nobody while the sender hears why
//! (`dataRejected`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::{BufMut, BytesMut};
use serde_json::{Value, json};
use sluice_e2e::peer::ClientPeer;
use sluice_e2e::{SignalClient, TestServer, init_tracing, token, token_with};
use sluice_signaling::protocol::{ClientMessage, DataRejection, ServerMessage};
use tokio::sync::{mpsc, oneshot};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

const WAIT: Duration = Duration::from_secs(10);

/// A message as a recipient reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    lossy: bool,
    from: String,
    identity: String,
    topic: Option<String>,
    text: bool,
    payload: Vec<u8>,
}

/// A participant with Sluice's data channels open.
struct DataPeer {
    signal: SignalClient,
    _peer: ClientPeer,
    id: String,
    reliable: Arc<dyn DataChannel>,
    lossy: Arc<dyn DataChannel>,
    inbox: mpsc::UnboundedReceiver<Delivered>,
}

/// A sender's envelope: version, header length, JSON header, payload.
fn envelope(header: &Value, payload: &[u8]) -> Result<BytesMut> {
    let header = serde_json::to_vec(header)?;
    let mut out = BytesMut::new();
    out.put_u8(1);
    out.put_u16(u16::try_from(header.len())?);
    out.put_slice(&header);
    out.put_slice(payload);
    Ok(out)
}

fn read_envelope(lossy: bool, data: &[u8]) -> Result<Delivered> {
    let [1, high, low, rest @ ..] = data else {
        bail!("not a version 1 envelope: {data:?}");
    };
    let length = usize::from(u16::from_be_bytes([*high, *low]));
    ensure!(rest.len() >= length, "header longer than the message");
    let (header, payload) = rest.split_at(length);
    let header: Value = serde_json::from_slice(header)?;
    Ok(Delivered {
        lossy,
        from: header["from"].as_str().context("no from")?.to_owned(),
        identity: header["identity"]
            .as_str()
            .context("no identity")?
            .to_owned(),
        topic: header["topic"].as_str().map(str::to_owned),
        text: header["text"].as_bool().unwrap_or(false),
        payload: payload.to_vec(),
    })
}

/// Reads one channel's events: tells `opened` when it opens, forwards its messages.
fn read_channel(
    channel: Arc<dyn DataChannel>,
    lossy: bool,
    opened: oneshot::Sender<()>,
    inbox: mpsc::UnboundedSender<Delivered>,
) {
    tokio::spawn(async move {
        let mut opened = Some(opened);
        while let Some(event) = channel.poll().await {
            match event {
                DataChannelEvent::OnOpen => {
                    if let Some(opened) = opened.take() {
                        let _ = opened.send(());
                    }
                }
                DataChannelEvent::OnMessage(message) => {
                    if let Ok(delivered) = read_envelope(lossy, &message.data) {
                        let _ = inbox.send(delivered);
                    }
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
}

impl DataPeer {
    async fn join(server: &TestServer, room: &str, identity: &str) -> Result<Self> {
        Self::join_with(server, room, identity, token(room, identity)).await
    }

    async fn join_with(
        server: &TestServer,
        room: &str,
        identity: &str,
        token: String,
    ) -> Result<Self> {
        let mut signal = SignalClient::connect(&server.ws_url()).await?;
        let joined = signal.join(token).await?;
        ensure!(
            matches!(&joined, ServerMessage::Joined { room: joined_room, .. } if joined_room == room),
            "{identity} joined elsewhere: {joined:?}"
        );
        let ServerMessage::Joined { participant, .. } = joined else {
            bail!("join refused: {joined:?}");
        };
        let mut peer = ClientPeer::new().await?;
        let reliable = peer.data_channel(false).await?;
        let lossy = peer.data_channel(true).await?;
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let (reliable_open, reliable_opened) = oneshot::channel();
        let (lossy_open, lossy_opened) = oneshot::channel();
        read_channel(
            Arc::clone(&reliable),
            false,
            reliable_open,
            inbox_tx.clone(),
        );
        read_channel(Arc::clone(&lossy), true, lossy_open, inbox_tx);
        let offer = peer.offer().await?;
        ensure!(
            offer.contains("m=application"),
            "the offer has no data section"
        );
        let request_id = signal.next_id();
        let published = signal
            .request(ClientMessage::Publish {
                request_id,
                sdp: offer,
                tracks: Vec::new(),
            })
            .await?;
        let ServerMessage::Published { sdp, .. } = published else {
            bail!("publish without tracks refused: {published:?}");
        };
        ensure!(
            sdp.contains("m=application"),
            "the answer has no data section"
        );
        peer.apply_answer(sdp).await?;
        peer.wait_connected(WAIT).await?;
        tokio::time::timeout(WAIT, reliable_opened)
            .await
            .context("reliable channel did not open")??;
        tokio::time::timeout(WAIT, lossy_opened)
            .await
            .context("lossy channel did not open")??;
        Ok(Self {
            signal,
            _peer: peer,
            id: participant.participant_id,
            reliable,
            lossy,
            inbox,
        })
    }

    async fn send(&self, lossy: bool, header: Value, payload: &[u8]) -> Result<()> {
        let channel = if lossy { &self.lossy } else { &self.reliable };
        channel.send(envelope(&header, payload)?).await?;
        Ok(())
    }

    async fn next(&mut self) -> Result<Delivered> {
        tokio::time::timeout(WAIT, self.inbox.recv())
            .await
            .context("no data message in time")?
            .context("channel reader ended")
    }

    /// The next `dataRejected`, skipping other events.
    async fn rejection(&mut self) -> Result<(DataRejection, u32)> {
        self.signal
            .wait_event(WAIT, |message| match message {
                ServerMessage::DataRejected { reason, dropped } => Some((*reason, *dropped)),
                _ => None,
            })
            .await
    }
}

/// Waits until the server has taken `received` data messages in all.
async fn server_received(server: &TestServer, received: u64) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = server.sfu.shard_stats().await?;
        if stats.data_received >= received {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the server took {} data messages, not {received}",
            stats.data_received
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_messages_reach_the_room_in_order_and_only_the_named_identities() -> Result<()> {
    init_tracing();
    let server = TestServer::start().await?;
    let alice = DataPeer::join(&server, "data-a", "alice").await?;
    let mut bob = DataPeer::join(&server, "data-a", "bob").await?;
    let mut carol = DataPeer::join(&server, "data-a", "carol").await?;
    let mut dave = DataPeer::join(&server, "data-b", "dave").await?;
    // A viewer without canPublish may still open the data channels and send.
    let viewer_token = token_with("data-b", "erin", false, true, Duration::from_secs(600));
    let erin = DataPeer::join_with(&server, "data-b", "erin", viewer_token).await?;

    const COUNT: u8 = 50;
    for index in 0..COUNT {
        alice
            .send(false, json!({"topic": "chat"}), &[index; 32])
            .await?;
    }
    for recipient in [&mut bob, &mut carol] {
        for index in 0..COUNT {
            let message = recipient.next().await?;
            let expected = Delivered {
                lossy: false,
                from: alice.id.clone(),
                identity: "alice".to_owned(),
                topic: Some("chat".to_owned()),
                text: false,
                payload: vec![index; 32],
            };
            ensure!(message == expected, "message {index}: {message:?}");
        }
    }

    // A message naming carol reaches only her: bob's next message is the broadcast sent after
    // it, which the reliable channel keeps in order.
    alice
        .send(false, json!({"to": ["carol"], "text": true}), b"psst")
        .await?;
    alice.send(false, json!({}), b"after").await?;
    let private = carol.next().await?;
    ensure!(
        private.payload == b"psst" && private.text && private.topic.is_none(),
        "{private:?}"
    );
    ensure!(carol.next().await?.payload == b"after", "carol's marker");
    let next = bob.next().await?;
    ensure!(
        next.payload == b"after",
        "bob got a message not meant for him: {next:?}"
    );

    // The lossy channel delivers on the recipients' lossy channels (nothing is lost on
    // loopback; the order is not promised).
    for index in 0..10u8 {
        alice
            .send(true, json!({"topic": "cursor"}), &[index])
            .await?;
    }
    for recipient in [&mut bob, &mut carol] {
        let mut got = Vec::new();
        for _ in 0..10 {
            let message = recipient.next().await?;
            ensure!(
                message.lossy && message.topic.as_deref() == Some("cursor"),
                "{message:?}"
            );
            got.extend(message.payload);
        }
        got.sort_unstable();
        ensure!(
            got == (0..10).collect::<Vec<u8>>(),
            "lossy messages {got:?}"
        );
    }

    // The other room hears only its own.
    erin.send(false, json!({"topic": "b"}), b"room b").await?;
    let own = dave.next().await?;
    ensure!(
        own.payload == b"room b" && own.identity == "erin",
        "dave got another room's message: {own:?}"
    );
    let sent = u64::from(COUNT) + 2 + 10 + 1;
    server_received(&server, sent).await?;
    let stats = server.sfu.shard_stats().await?;
    // Each of alice's broadcasts went to bob and carol, the private one to carol, erin's to
    // dave: nothing else was delivered, so nothing crossed rooms.
    let delivered = 2 * u64::from(COUNT) + 1 + 2 + 2 * 10 + 1;
    ensure!(
        stats.data_delivered == delivered && stats.data_rejected == 0,
        "delivered {} (expected {delivered}), rejected {}",
        stats.data_delivered,
        stats.data_rejected
    );
    ensure!(dave.inbox.try_recv().is_err(), "dave got more");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_over_rate_and_malformed_messages_reach_nobody_and_the_sender_hears_why()
-> Result<()> {
    init_tracing();
    let server = TestServer::start_with(|config| {
        config.limits.max_data_message_bytes = 1024;
        config.limits.data_messages_per_second = 20;
    })
    .await?;
    let mut alice = DataPeer::join(&server, "data-limits", "alice").await?;
    let mut bob = DataPeer::join(&server, "data-limits", "bob").await?;

    alice.send(false, json!({}), &[0; 2000]).await?;
    let rejected = alice.rejection().await?;
    ensure!(
        rejected == (DataRejection::TooLarge, 1),
        "oversized: {rejected:?}"
    );

    // Reports come at most every 250 ms: resend the malformed message until its own report.
    let deadline = Instant::now() + WAIT;
    let mut malformed = 0;
    loop {
        alice.reliable.send_text("not an envelope").await?;
        malformed += 1;
        let report = tokio::time::timeout(Duration::from_millis(100), alice.rejection()).await;
        if let Ok(Ok((DataRejection::Invalid, _))) = report {
            break;
        }
        ensure!(Instant::now() < deadline, "no report of the text message");
    }

    // A burst past the rate: one second's worth (20) is delivered, plus what the bucket
    // refills while the burst arrives; the rest reaches nobody.
    for index in 0..60u8 {
        alice.send(false, json!({}), &[index]).await?;
    }
    let rejected = alice.rejection().await?;
    ensure!(
        rejected.0 == DataRejection::RateLimited,
        "burst: {rejected:?}"
    );
    server_received(&server, 1 + malformed + 60).await?;
    let stats = server.sfu.shard_stats().await?;
    let delivered = stats.data_delivered;
    ensure!(
        (20..=25).contains(&delivered),
        "delivered {delivered} of a 60-message burst at 20/s"
    );
    ensure!(
        stats.data_rejected == 1 + malformed + (60 - delivered),
        "rejected {} of {} received, {delivered} delivered",
        stats.data_rejected,
        stats.data_received
    );
    let mut previous = None;
    for count in 0..delivered {
        let message = bob.next().await?;
        let index = *message.payload.first().context("empty payload")?;
        ensure!(
            count >= 20 || u64::from(index) == count,
            "bob's message {count} is {index}"
        );
        ensure!(
            previous < Some(index),
            "out of order: {index} after {previous:?}"
        );
        previous = Some(index);
    }
    ensure!(bob.inbox.try_recv().is_err(), "bob got a refused message");
    server.stop().await;
    Ok(())
}
