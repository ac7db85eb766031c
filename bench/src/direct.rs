//! The latency baseline: the same client stack's publisher and subscriber (webrtc-rs, or the
//! sans-IO generator's `rtc` connections) connected directly to each other (no SFU), running
//! during every step. Its receive − send is what the clients and
//! loopback cost; Sluice's figure minus this one is what Sluice adds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use sluice_e2e::peer::{ClientPeer, OPUS, VP8};

use crate::client::{self, AbortOnDrop, KeepAlive, MediaSource, Reception, SentCounters};
use crate::media::{self, VideoShape};
use crate::rtcgen::{self, Generator, Setup};
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

/// The same baseline on the sans-IO generator's stack: a publisher and a subscriber connection
/// on a generator thread of their own (so the ramp's generator threads carry only the target's
/// clients), connected to each other.
pub async fn start_rtc(shape: VideoShape) -> Result<(MediaSource, Reception, KeepAlive)> {
    let generator = Generator::start(1)?;
    let sent = Arc::new(SentCounters::default());
    let (publisher, offer) = generator
        .create(Setup::Publisher {
            shape,
            ssrc_base: 0x7000,
            simulcast: false,
            sent: Arc::clone(&sent),
        })
        .await?;
    let reception = Reception::new(StampMode::PacketTrailer, media::now_ns());
    let (subscriber, answer) = generator
        .create(Setup::Subscriber {
            offer: offer.sdp,
            reception: reception.clone(),
        })
        .await?;
    publisher.apply_answer(answer.sdp).await?;
    publisher.add_candidate(answer.candidate)?;
    subscriber.add_candidate(offer.candidate)?;
    let (mut published, mut subscribed) = (offer.state, answer.state);
    rtcgen::connected(&mut published, Duration::from_secs(10)).await?;
    rtcgen::connected(&mut subscribed, Duration::from_secs(10)).await?;
    Ok((
        MediaSource::counted(sent),
        reception,
        Box::new((publisher, subscriber, generator)),
    ))
}
