//! Driving `sluice-rtc-relay` (bench/src/bin/rtc-relay.rs): the prototype relay on the sans-IO
//! `rtc` 0.21 core with one shared UDP socket. Its protocol: `POST /publish/<room>` or
//! `POST /subscribe/<room>` with the client's offer (all candidates inside) as JSON, the answer
//! back. It forwards RTP packets unchanged, so every packet is measured by its trailer stamp.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sluice_e2e::peer::{ClientPeer, OPUS, VP8};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use crate::client::{self, AbortOnDrop, KeepAlive, MediaSource, Reception};
use crate::media::{self, VideoShape};
use crate::process::ServerProcess;
use crate::ramp::{self, RampConfig, RampResult, Target};
use crate::stats::StampMode;
use crate::str0m_target::{gather, with_candidates};

struct RtcRelay {
    name: String,
    process: ServerProcess,
    room_size: usize,
}

/// One configuration of the relay: its target name and its flags (e.g. `--batch`).
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub flags: Vec<String>,
}

impl Variant {
    /// `plain`, `batch`, `no-gcc`, `batch+no-gcc`, … → flags; the name is `rtc-relay[…]`.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut flags = Vec::new();
        for part in spec.split('+').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "plain" => {}
                "batch" => flags.push("--batch".to_owned()),
                "no-gcc" => flags.push("--no-gcc".to_owned()),
                other => {
                    anyhow::bail!("unknown rtc-relay variant part {other:?} (plain, batch, no-gcc)")
                }
            }
        }
        Ok(Self {
            name: format!("rtc-relay[{spec}]"),
            flags,
        })
    }
}

/// Starts the relay as `variant` and runs the same ramp against it.
pub async fn run(
    bin: &Path,
    variant: &Variant,
    room_size: usize,
    config: &RampConfig,
    direct: &Reception,
    started: Instant,
    perf: Option<crate::ramp::Profiler>,
) -> Result<RampResult> {
    let name = variant.name.as_str();
    eprintln!(
        "[{:6.1}s] {name}: starting {} {}",
        started.elapsed().as_secs_f64(),
        bin.display(),
        variant.flags.join(" ")
    );
    let process = ramp::start_server(
        name,
        bin,
        &variant.flags,
        &[("RUST_LOG", "error")],
        perf.as_ref(),
    )?;
    let target = Arc::new(RtcRelay {
        name: name.to_owned(),
        process,
        room_size,
    });
    let result = ramp::run(
        Arc::clone(&target) as Arc<dyn Target>,
        config,
        direct,
        started,
        perf,
    )
    .await;
    if let Ok(t) = Arc::try_unwrap(target) {
        crate::process::stop_and_clean(t.process);
    }
    result
}

impl RtcRelay {
    /// POSTs the offer to `path`, returns the answer SDP.
    async fn post_offer(&self, path: &str, sdp: String) -> Result<String> {
        crate::str0m_target::post_offer(self.process.host_port(), path, "relay", sdp).await
    }

    /// Offer with all candidates, POST, apply the answer, wait until connected.
    async fn connect(&self, mut peer: ClientPeer, path: &str) -> Result<ClientPeer> {
        let offer = peer.offer().await?;
        let candidates = gather(&mut peer).await;
        let answer = self
            .post_offer(path, with_candidates(&offer, &candidates))
            .await?;
        peer.apply_answer(answer).await?;
        peer.wait_connected(Duration::from_secs(20)).await?;
        Ok(peer)
    }
}

#[async_trait::async_trait]
impl Target for RtcRelay {
    fn name(&self) -> &str {
        &self.name
    }
    fn pid(&self) -> u32 {
        self.process.pid()
    }
    fn room_size(&self) -> usize {
        self.room_size
    }
    async fn add_publisher(
        &self,
        room: &str,
        shape: VideoShape,
        ssrc_base: u32,
    ) -> Result<(MediaSource, KeepAlive)> {
        let peer = ClientPeer::new().await?;
        let video = peer.add_send_track(VP8, ssrc_base).await?;
        let audio = peer.add_send_track(OPUS, ssrc_base + 1).await?;
        let peer = self.connect(peer, &format!("/publish/{room}")).await?;
        let source = client::start_media(video, audio, shape, (ssrc_base, ssrc_base + 1));
        Ok((source, Box::new(peer)))
    }
    async fn add_subscriber(&self, room: &str, _identity: &str) -> Result<(Reception, KeepAlive)> {
        let mut peer = ClientPeer::new().await?;
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            peer.pc
                .add_transceiver_from_kind(
                    kind,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await?;
        }
        let reception = Reception::new(StampMode::PacketTrailer, media::now_ns());
        let tracks = std::mem::replace(&mut peer.tracks, tokio::sync::mpsc::unbounded_channel().1);
        let readers = AbortOnDrop(client::spawn_track_readers(tracks, reception.clone()));
        let peer = self.connect(peer, &format!("/subscribe/{room}")).await?;
        Ok((reception, Box::new((peer, readers))))
    }
}
