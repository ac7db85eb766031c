//! The latency baseline: the same webrtc-rs publisher and subscriber connected directly to
//! each other (no SFU), running during every step. Its receive − send is what the clients and
//! loopback cost; Sluice's figure minus this one is what Sluice adds.

use std::time::Duration;

use anyhow::Result;
use sluice_e2e::peer::{ClientPeer, OPUS, VP8};

use crate::client::{self, AbortOnDrop, KeepAlive, MediaSource, Reception};
use crate::media::{self, VideoShape};
use crate::stats::StampMode;

/// Connects a publisher straight to a subscriber and starts the media.
pub async fn start(shape: VideoShape) -> Result<(MediaSource, Reception, KeepAlive)> {
    let publisher = ClientPeer::new().await?;
    let mut subscriber = ClientPeer::new().await?;
    let video = publisher.add_send_track(VP8, 0x7000).await?;
    let audio = publisher.add_send_track(OPUS, 0x7001).await?;
    let offer = publisher.offer().await?;
    let answer = subscriber.answer(offer).await?;
    publisher.apply_answer(answer).await?;
    let reception = Reception::new(StampMode::PacketTrailer, media::now_ns());
    let tracks = std::mem::replace(
        &mut subscriber.tracks,
        tokio::sync::mpsc::unbounded_channel().1,
    );
    let readers = AbortOnDrop(client::spawn_track_readers(tracks, reception.clone()));
    let mut publisher = publisher;
    let trickle = AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(c) = publisher.candidates.recv() => { let _ = subscriber.add_candidate(c).await; }
                Some(c) = subscriber.candidates.recv() => { let _ = publisher.add_candidate(c).await; }
                () = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
        }
    }));
    let source = client::start_media(video, audio, shape, (0x7000, 0x7001));
    Ok((source, reception, Box::new((trickle, readers))))
}
