//! Session resume over real WebSockets: a participant outlives its dropped socket for the grace
//! period, a client re-attaches with `resume`, and bad or late resumes are refused.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sluice_e2e::peer::{ClientPeer, VP8};
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_signaling::protocol::{
    ClientMessage, ErrorCode, MediaKind, ServerMessage, SubscriptionInfo, TrackInfo, TrackSource,
};

/// A joined client with what it needs to resume.
struct Joined {
    client: SignalClient,
    participant_id: String,
    resume_token: String,
}

async fn join(server: &TestServer, room: &str, identity: &str) -> Result<Joined> {
    let mut client = SignalClient::connect(&server.ws_url()).await?;
    match client.join(token(room, identity)).await? {
        ServerMessage::Joined {
            participant,
            resume_token,
            ..
        } => Ok(Joined {
            client,
            participant_id: participant.participant_id,
            resume_token,
        }),
        other => bail!("join failed: {other:?}"),
    }
}

pub(crate) async fn resume(
    server: &TestServer,
    participant_id: &str,
    resume_token: &str,
) -> Result<(SignalClient, ServerMessage)> {
    let mut client = SignalClient::connect(&server.ws_url()).await?;
    let request_id = client.next_id();
    let response = client
        .request(ClientMessage::Resume {
            request_id,
            participant_id: participant_id.to_owned(),
            resume_token: resume_token.to_owned(),
        })
        .await?;
    Ok((client, response))
}

fn is_resume_failed(message: &ServerMessage) -> bool {
    matches!(
        message,
        ServerMessage::Error {
            code: ErrorCode::ResumeFailed,
            ..
        }
    )
}

/// Publishes one VP8 track (the offer of a webrtc-rs client); returns its publication id.
async fn publish_video(client: &mut SignalClient, peer: &ClientPeer) -> Result<String> {
    peer.add_send_track(VP8, 0x5151).await?;
    let offer = peer.offer().await?;
    let mid = sluice_sfu::transport::negotiated_codecs(&offer)
        .into_keys()
        .next()
        .context("the offer has a media section")?;
    let request_id = client.next_id();
    match client
        .request(ClientMessage::Publish {
            request_id,
            sdp: offer,
            tracks: vec![TrackInfo {
                mid,
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                name: None,
                rids: None,
            }],
        })
        .await?
    {
        ServerMessage::Published {
            sdp, publications, ..
        } => {
            peer.apply_answer(sdp).await?;
            Ok(publications
                .first()
                .context("one publication")?
                .publication_id
                .clone())
        }
        other => bail!("publish failed: {other:?}"),
    }
}

/// Fails if `client` is told within `wait` that someone left or a publication ended.
async fn expect_no_departure(client: &mut SignalClient, wait: Duration) -> Result<()> {
    let found = client
        .wait_event(wait, |m| match m {
            ServerMessage::ParticipantLeft { .. } | ServerMessage::PublicationRemoved { .. } => {
                Some(m.clone())
            }
            _ => None,
        })
        .await;
    match found {
        Ok(event) => bail!("seen during the grace period: {event:?}"),
        Err(_) => Ok(()),
    }
}

#[tokio::test]
async fn resume_within_grace_keeps_participant_publications_and_subscriptions() -> Result<()> {
    init_tracing();
    let server = TestServer::start_with(|c| c.resume_grace = Duration::from_secs(5)).await?;
    let mut alice = join(&server, "resume", "alice").await?;
    let alice_peer = ClientPeer::new().await?;
    let publication = publish_video(&mut alice.client, &alice_peer).await?;
    let mut bob = join(&server, "resume", "bob").await?;
    let request_id = bob.client.next_id();
    let subscription = match bob
        .client
        .request(ClientMessage::Subscribe {
            request_id,
            publication_id: publication.clone(),
        })
        .await?
    {
        ServerMessage::Subscribed {
            subscription_id, ..
        } => subscription_id,
        other => bail!("subscribe failed: {other:?}"),
    };
    let mut carol = join(&server, "resume", "carol").await?;

    // Alice's and Bob's sockets vanish (TCP gone, no leave, no close frame).
    drop(alice.client);
    drop(bob.client);
    expect_no_departure(&mut carol.client, Duration::from_millis(1_000)).await?;
    ensure!(
        server.sfu.room_count() == 1,
        "the room must stay while its participants are parked"
    );

    let started = Instant::now();
    let (_alice_again, response) =
        resume(&server, &alice.participant_id, &alice.resume_token).await?;
    eprintln!("resume answered in {:?}", started.elapsed());
    let ServerMessage::Resumed {
        participant,
        participants,
        publications,
        subscriptions,
        room,
        ..
    } = response
    else {
        bail!("alice's resume: {response:?}");
    };
    ensure!(room == "resume", "room {room}");
    ensure!(
        participant.participant_id == alice.participant_id,
        "same participant"
    );
    ensure!(
        publications
            .iter()
            .any(|p| p.publication_id == publication && p.participant_id == alice.participant_id),
        "alice's publication survives: {publications:?}"
    );
    ensure!(
        participants
            .iter()
            .all(|p| p.participant_id != alice.participant_id),
        "participants are the others"
    );
    ensure!(
        participants.len() == 2,
        "bob (parked) and carol: {participants:?}"
    );
    ensure!(subscriptions.is_empty(), "alice subscribed to nothing");

    let (mut bob_again, response) = resume(&server, &bob.participant_id, &bob.resume_token).await?;
    let ServerMessage::Resumed { subscriptions, .. } = response else {
        bail!("bob's resume: {response:?}");
    };
    ensure!(
        subscriptions
            == vec![SubscriptionInfo {
                subscription_id: subscription.clone(),
                publication_id: publication.clone(),
            }],
        "bob's subscription survives: {subscriptions:?}"
    );
    // Bob's subscriber connection was offered before the drop and never answered: the offer
    // comes again. Answering it and asking for an ICE restart gives a new offer.
    let offer = bob_again
        .wait_event(Duration::from_secs(5), |m| match m {
            ServerMessage::Offer { sdp } => Some(sdp.clone()),
            _ => None,
        })
        .await
        .context("the outstanding offer is sent again")?;
    let bob_peer = ClientPeer::new().await?;
    let answer = bob_peer.answer(offer.clone()).await?;
    let request_id = bob_again.next_id();
    let response = bob_again
        .request(ClientMessage::Answer {
            request_id,
            sdp: answer,
        })
        .await?;
    ensure!(
        matches!(response, ServerMessage::Ok { .. }),
        "answer: {response:?}"
    );
    let request_id = bob_again.next_id();
    let response = bob_again
        .request(ClientMessage::RestartIce { request_id })
        .await?;
    ensure!(
        matches!(response, ServerMessage::Ok { .. }),
        "restartIce: {response:?}"
    );
    let restart_offer = bob_again
        .wait_event(Duration::from_secs(5), |m| match m {
            ServerMessage::Offer { sdp } => Some(sdp.clone()),
            _ => None,
        })
        .await
        .context("restartIce brings a new offer")?;
    let ufrag = |sdp: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned)
    };
    ensure!(
        ufrag(&restart_offer).is_some() && ufrag(&restart_offer) != ufrag(&offer),
        "the ICE restart offer has new credentials"
    );

    // Nobody saw them leave, and now they are back for good.
    expect_no_departure(&mut carol.client, Duration::from_millis(300)).await?;
    alice_peer.close().await;
    bob_peer.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn bad_or_late_resumes_are_refused() -> Result<()> {
    init_tracing();
    let grace = Duration::from_millis(400);
    let server = TestServer::start_with(|c| c.resume_grace = grace).await?;
    let alice = join(&server, "refuse", "alice").await?;
    let mut other = join(&server, "refuse", "other").await?;
    let (id, secret) = (alice.participant_id.clone(), alice.resume_token.clone());
    // Alice's socket drops; once the server closed its side she is parked for a resume.
    alice.client.vanish(Duration::from_secs(2)).await?;

    let mut wrong = secret.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong)?;
    for (who, token) in [
        (id.as_str(), wrong.as_str()),
        (id.as_str(), ""),
        (id.as_str(), "not hex at all, but 32 bytes...."),
        (id.as_str(), "éééééééééééééééé"),
        ("PA999999", secret.as_str()),
        ("garbage", secret.as_str()),
        // Another participant's token does not open this one.
        (other.participant_id.as_str(), secret.as_str()),
    ] {
        let (_client, response) = resume(&server, who, token).await?;
        ensure!(
            is_resume_failed(&response),
            "resume({who}, {token:?}): {response:?}"
        );
    }

    // The grace period ends: the room sees her leave.
    let left = other
        .client
        .wait_event(grace + Duration::from_secs(2), |m| match m {
            ServerMessage::ParticipantLeft { participant_id } => Some(participant_id.clone()),
            _ => None,
        })
        .await?;
    ensure!(left == id, "{left} left, not {id}");
    let (mut client, response) = resume(&server, &id, &secret).await?;
    ensure!(
        is_resume_failed(&response),
        "a resume after the grace period: {response:?}"
    );
    // The refused connection can still join afresh.
    let response = client.join(token("refuse", "alice")).await?;
    ensure!(
        matches!(response, ServerMessage::Joined { .. }),
        "join after resumeFailed: {response:?}"
    );
    drop(other);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn dropped_participant_is_removed_after_the_grace_period() -> Result<()> {
    init_tracing();
    let grace = Duration::from_millis(600);
    let server = TestServer::start_with(|c| c.resume_grace = grace).await?;
    let mut stayer = join(&server, "grace", "stayer").await?;
    let leaver = join(&server, "grace", "leaver").await?;
    let leaver_peer = ClientPeer::new().await?;
    let mut leaver_client = leaver.client;
    let publication = publish_video(&mut leaver_client, &leaver_peer).await?;

    let dropped_at = Instant::now();
    drop(leaver_client);
    let removed = stayer
        .client
        .wait_event(Duration::from_secs(3), |m| match m {
            ServerMessage::PublicationRemoved { publication_id, .. } => {
                Some(publication_id.clone())
            }
            _ => None,
        })
        .await?;
    ensure!(removed == publication, "its publication ends");
    let gone = stayer
        .client
        .wait_event(Duration::from_secs(1), |m| match m {
            ServerMessage::ParticipantLeft { participant_id } => Some(participant_id.clone()),
            _ => None,
        })
        .await?;
    let after = dropped_at.elapsed();
    eprintln!("participantLeft {after:?} after the drop (grace {grace:?})");
    ensure!(gone == leaver.participant_id, "wrong participant left");
    ensure!(after >= grace, "left before the grace period was over");
    ensure!(
        after < grace + Duration::from_secs(2),
        "left too long after the grace"
    );

    drop(stayer);
    let deadline = Instant::now() + Duration::from_secs(3 + 1);
    while server.sfu.room_count() > 0 {
        if Instant::now() > deadline {
            bail!("room still open after everyone left");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    leaver_peer.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn resume_while_the_old_socket_is_open_replaces_it() -> Result<()> {
    init_tracing();
    let server = TestServer::start_with(|c| c.resume_grace = Duration::from_secs(5)).await?;
    let mut old = join(&server, "replace", "alice").await?;
    let mut watcher = join(&server, "replace", "watcher").await?;
    let (mut new, response) = resume(&server, &old.participant_id, &old.resume_token).await?;
    let ServerMessage::Resumed { participant, .. } = response else {
        bail!("resume: {response:?}");
    };
    ensure!(participant.participant_id == old.participant_id);
    let code = old.client.closed(Duration::from_secs(3)).await?;
    ensure!(
        code == Some(4001),
        "the old socket closes with 4001, got {code:?}"
    );
    expect_no_departure(&mut watcher.client, Duration::from_millis(300)).await?;

    // The new socket serves the participant: a leave now is seen by the others at once.
    let request_id = new.next_id();
    let response = new.request(ClientMessage::Leave { request_id }).await?;
    ensure!(
        matches!(response, ServerMessage::Ok { .. }),
        "leave: {response:?}"
    );
    let gone = watcher
        .client
        .wait_event(Duration::from_secs(2), |m| match m {
            ServerMessage::ParticipantLeft { participant_id } => Some(participant_id.clone()),
            _ => None,
        })
        .await?;
    ensure!(gone == old.participant_id);
    // A left participant cannot be resumed.
    let (_client, response) = resume(&server, &old.participant_id, &old.resume_token).await?;
    ensure!(
        is_resume_failed(&response),
        "resume after leave: {response:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_close_frame_from_the_client_leaves_at_once() -> Result<()> {
    init_tracing();
    // What a browser does when its page goes away: a close frame, no `leave`.
    let server = TestServer::start_with(|c| c.resume_grace = Duration::from_secs(10)).await?;
    let mut stayer = join(&server, "close-frame", "stayer").await?;
    let mut leaver = join(&server, "close-frame", "leaver").await?;
    let closed_at = Instant::now();
    leaver
        .client
        .send_raw(tokio_tungstenite::tungstenite::Message::Close(None))
        .await?;
    let gone = stayer
        .client
        .wait_event(Duration::from_secs(2), |m| match m {
            ServerMessage::ParticipantLeft { participant_id } => Some(participant_id.clone()),
            _ => None,
        })
        .await?;
    ensure!(gone == leaver.participant_id, "wrong participant left");
    eprintln!(
        "participantLeft {:?} after the close frame",
        closed_at.elapsed()
    );
    let (_client, response) = resume(&server, &leaver.participant_id, &leaver.resume_token).await?;
    ensure!(
        is_resume_failed(&response),
        "resume after a deliberate close: {response:?}"
    );
    server.stop().await;
    Ok(())
}
