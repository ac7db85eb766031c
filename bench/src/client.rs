//! The load generator's clients: webrtc-rs peers (real ICE/DTLS/SRTP) that publish synthetic
//! stamped media and receive it, plus what every target shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::media::{self, VideoShape};
use crate::stats::{StampMode, TrackStats};

pub const VIDEO_PT: u8 = 96;
pub const AUDIO_PT: u8 = 111;
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

/// Packets a publisher has sent, by kind.
#[derive(Debug, Default)]
pub struct SentCounters {
    pub video_packets: AtomicU64,
    pub audio_packets: AtomicU64,
}

/// A running synthetic media source; stops when dropped.
pub struct MediaSource {
    pub sent: Arc<SentCounters>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for MediaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl MediaSource {
    /// A source sending elsewhere (a sans-IO generator thread) that stops with its connection;
    /// only its counters live here.
    pub fn counted(sent: Arc<SentCounters>) -> Self {
        Self {
            sent,
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        }
    }
}

/// Starts sending stamped VP8-shaped video (`shape`) and Opus-sized audio at 50 packets/s.
pub fn start_media(
    video: Arc<TrackLocalStaticRTP>,
    audio: Arc<TrackLocalStaticRTP>,
    shape: VideoShape,
    ssrcs: (u32, u32),
) -> MediaSource {
    let sent = Arc::new(SentCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let video_task = {
        let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(shape.frame_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut packet_index, mut seq) = (0u32, 0u16);
            for frame in 0u64.. {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let timestamp = (frame * 90_000 / u64::from(shape.fps)) as u32;
                let payloads = media::video_frame(&shape, frame, packet_index, media::now_ns());
                let last = payloads.len() - 1;
                for (i, payload) in payloads.into_iter().enumerate() {
                    let packet = rtp::Packet {
                        header: rtp::header::Header {
                            version: 2,
                            payload_type: VIDEO_PT,
                            sequence_number: seq,
                            timestamp,
                            ssrc: ssrcs.0,
                            marker: i == last,
                            ..Default::default()
                        },
                        payload: payload.into(),
                    };
                    seq = seq.wrapping_add(1);
                    packet_index = packet_index.wrapping_add(1);
                    if video.write_rtp(packet).await.is_ok() {
                        sent.video_packets.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let audio_task = spawn_audio(audio, ssrcs.1, Arc::clone(&sent), Arc::clone(&stop));
    MediaSource {
        sent,
        stop,
        tasks: vec![video_task, audio_task],
    }
}

/// Opus-sized stamped audio at 50 packets/s on `audio` (SSRC `ssrc`).
fn spawn_audio(
    audio: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    sent: Arc<SentCounters>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(AUDIO_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for index in 0u32.. {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    payload_type: AUDIO_PT,
                    sequence_number: index as u16,
                    timestamp: index.wrapping_mul(960),
                    ssrc,
                    marker: index == 0,
                    ..Default::default()
                },
                payload: media::audio_packet(index, media::now_ns()).into(),
            };
            if audio.write_rtp(packet).await.is_ok() {
                sent.audio_packets.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Simulcast layers by rid, lowest first, as a fraction of the full layer's bitrate (a
/// browser's 1/4, 1/2, full resolution layers run at roughly 150 k / 500 k / 1.5 Mb/s).
pub const SIMULCAST_LAYERS: [(&str, f64); 3] = [("q", 0.1), ("h", 1.0 / 3.0), ("f", 1.0)];

/// Like [`start_media`], with simulcast video: one encoding per [`SIMULCAST_LAYERS`] entry
/// (SSRCs `video_ssrcs`), each packet carrying its layer's rid; every layer has a keyframe at
/// the same frames, as a browser's encoder produces them.
pub fn start_simulcast_media(
    video: Arc<TrackLocalStaticRTP>,
    audio: Arc<TrackLocalStaticRTP>,
    shape: VideoShape,
    video_mid: String,
    video_ssrcs: [u32; 3],
    audio_ssrc: u32,
) -> MediaSource {
    let sent = Arc::new(SentCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let video_task = {
        let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
        tokio::spawn(async move {
            let shapes = SIMULCAST_LAYERS.map(|(_, fraction)| VideoShape {
                bitrate_bps: (shape.bitrate_bps as f64 * fraction) as u64,
                ..shape
            });
            let mut tick = tokio::time::interval(shape.frame_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut packet_index: [u32; 3] = std::array::from_fn(media::layer_index_base);
            let mut seq = [0u16; 3];
            for frame in 0u64.. {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let timestamp = (frame * 90_000 / u64::from(shape.fps)) as u32;
                for (layer, (rid, _)) in SIMULCAST_LAYERS.iter().enumerate() {
                    let payloads = media::video_frame(
                        &shapes[layer],
                        frame,
                        packet_index[layer],
                        media::now_ns(),
                    );
                    let last = payloads.len() - 1;
                    let extensions = [
                        sluice_e2e::peer::mid_extension(&video_mid),
                        sluice_e2e::peer::rid_extension(rid),
                    ];
                    for (i, payload) in payloads.into_iter().enumerate() {
                        let packet = rtp::Packet {
                            header: rtp::header::Header {
                                version: 2,
                                payload_type: VIDEO_PT,
                                sequence_number: seq[layer],
                                timestamp,
                                ssrc: video_ssrcs[layer],
                                marker: i == last,
                                ..Default::default()
                            },
                            payload: payload.into(),
                        };
                        seq[layer] = seq[layer].wrapping_add(1);
                        packet_index[layer] = packet_index[layer].wrapping_add(1);
                        if video
                            .write_rtp_with_extensions(packet, &extensions)
                            .await
                            .is_ok()
                        {
                            sent.video_packets.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    };
    let audio_task = spawn_audio(audio, audio_ssrc, Arc::clone(&sent), Arc::clone(&stop));
    MediaSource {
        sent,
        stop,
        tasks: vec![video_task, audio_task],
    }
}

/// What one subscriber receives: per-kind counters, and when it asked to subscribe.
#[derive(Debug, Clone)]
pub struct Reception {
    pub audio: Arc<TrackStats>,
    pub video: Arc<TrackStats>,
    /// `media::now_ns()` when the subscriber sent its first subscribe request.
    pub subscribed_at_ns: u64,
}

impl Reception {
    pub fn new(mode: StampMode, subscribed_at_ns: u64) -> Self {
        Self {
            audio: Arc::new(TrackStats::new(mode)),
            video: Arc::new(TrackStats::new(mode)),
            subscribed_at_ns,
        }
    }

    /// Subscribe → first packet, per kind, in ms.
    pub fn join_ms(&self) -> (Option<f64>, Option<f64>) {
        let since =
            |t: Option<u64>| t.map(|t| t.saturating_sub(self.subscribed_at_ns) as f64 / 1e6);
        (
            since(self.audio.first_packet_ns()),
            since(self.video.first_packet_ns()),
        )
    }
}

/// Reads every remote track that arrives on `tracks` into `reception`, by kind.
pub fn spawn_track_readers(
    mut tracks: tokio::sync::mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    reception: Reception,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let video = track.kind().await == RtpCodecKind::Video;
            let stats = Arc::clone(if video {
                &reception.video
            } else {
                &reception.audio
            });
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    match event {
                        TrackRemoteEvent::OnRtpPacket(packet) => {
                            stats.record(&packet.payload, video);
                        }
                        TrackRemoteEvent::OnEnded => break,
                        _ => {}
                    }
                }
            });
        }
    })
}

/// Keeps whatever a client needs alive (peer connection, signaling socket, tasks).
pub type KeepAlive = Box<dyn std::any::Any + Send + Sync>;

/// Aborts its task when dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
