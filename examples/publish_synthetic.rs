//! Publishes a synthetic VP8 stream into a room of a running Sluice server, with real
//! ICE/DTLS/SRTP (webrtc-rs), so you can watch something without a camera.
//!
//! ```sh
//! cargo run --release                                   # terminal 1: the server (demo mode)
//! TOKEN=$(curl -s 'http://127.0.0.1:8080/dev/token?room=demo&identity=robot' | sed 's/.*"token":"\([^"]*\)".*/\1/')
//! cargo run -p sluice-e2e --example publish_synthetic -- ws://127.0.0.1:8080/ws "$TOKEN"
//! ```
//!
//! The payload is not decodable video (it only has real VP8 keyframe headers), so browsers
//! receive packets but show no picture: it is a load and plumbing tool, like the tests.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use rtc::rtp;
use sluice_e2e::SignalClient;
use sluice_e2e::peer::{ClientPeer, VP8};
use sluice_signaling::protocol::{
    ClientMessage, MediaKind, PeerRole, ServerMessage, TrackInfo, TrackSource,
};
use webrtc::media_stream::track_local::TrackLocal;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(token)) = (args.next(), args.next()) else {
        bail!("usage: publish_synthetic <ws://host:port/ws> <token>");
    };
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(60);

    let mut signal = SignalClient::connect(&url).await?;
    match signal.join(token).await? {
        ServerMessage::Joined {
            room, participant, ..
        } => {
            println!("joined {room} as {}", participant.participant_id)
        }
        other => bail!("join refused: {other:?}"),
    }
    let mut peer = ClientPeer::new().await?;
    let video = peer.add_send_track(VP8, 0x5105).await?;
    let offer = peer.offer().await?;
    let mid = sluice_sfu::transport::negotiated_codecs(&offer)
        .into_keys()
        .next()
        .context("no media section in the offer")?;
    let request_id = signal.next_id();
    let ServerMessage::Published {
        sdp, publications, ..
    } = signal
        .request(ClientMessage::Publish {
            request_id,
            sdp: offer,
            tracks: vec![TrackInfo {
                mid,
                kind: MediaKind::Video,
                source: TrackSource::Other,
                name: Some("synthetic".into()),
                rids: None,
            }],
        })
        .await?
    else {
        bail!("publish refused");
    };
    peer.apply_answer(sdp).await?;
    // Trickle until connected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while *peer.state.borrow() != webrtc::peer_connection::RTCPeerConnectionState::Connected {
        if tokio::time::Instant::now() > deadline {
            bail!("not connected within 15 s");
        }
        while let Ok(candidate) = peer.candidates.try_recv() {
            signal.trickle(PeerRole::Publisher, candidate).await?;
        }
        if let Ok(ServerMessage::Trickle { candidate, .. }) =
            signal.next_event(Duration::from_millis(50)).await
        {
            peer.add_candidate(candidate).await?;
        }
    }
    println!(
        "publishing {} for {seconds} s",
        publications[0].publication_id
    );
    for index in 0..seconds * 30 {
        let keyframe = index % 60 == 0;
        let mut payload = vec![0x10, u8::from(!keyframe), 0, 0];
        if keyframe {
            payload.extend([0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
        }
        payload.resize(1000, 0x55);
        video
            .write_rtp(rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: index as u16,
                    timestamp: (index * 3000) as u32,
                    ssrc: 0x5105,
                    marker: true,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            })
            .await?;
        tokio::time::sleep(Duration::from_millis(33)).await;
    }
    peer.close().await;
    Ok(())
}
