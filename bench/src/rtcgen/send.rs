//! What a generator publisher sends: stamped VP8-shaped frames on one layer or three (by rid)
//! and Opus-sized audio, written into its connection's senders on the generator thread's
//! schedule.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp;

use super::peer::{self, SendTracks};
use crate::client::{AUDIO_PT, SIMULCAST_LAYERS, SentCounters, VIDEO_PT};
use crate::media::{self, VideoShape};

/// What one publisher sends and where it stands.
pub(super) struct Sending {
    pub(super) tracks: SendTracks,
    pub(super) shape: VideoShape,
    sent: Arc<SentCounters>,
    /// Per layer: the shape, the next packet index and sequence number.
    layers: Vec<(VideoShape, u32, u16)>,
    /// The negotiated MID and RID extension ids and the video mid (simulcast only).
    pub(super) rid_extensions: Option<(u8, u8, Bytes)>,
    pub(super) simulcast: bool,
    frame: u64,
    audio_index: u32,
    /// Both unset until the connection is up.
    pub(super) next_frame: Option<Instant>,
    pub(super) next_audio: Option<Instant>,
}

impl Sending {
    /// A publisher of `shape` (three layers at 1/10, 1/3 and all of its bitrate when
    /// `simulcast`) that sends nothing until its connection is up.
    pub(super) fn new(
        tracks: SendTracks,
        shape: VideoShape,
        simulcast: bool,
        sent: Arc<SentCounters>,
    ) -> Self {
        let layers = if simulcast {
            SIMULCAST_LAYERS
                .iter()
                .enumerate()
                .map(|(layer, (_, fraction))| {
                    let bitrate_bps = (shape.bitrate_bps as f64 * fraction) as u64;
                    (
                        VideoShape {
                            bitrate_bps,
                            ..shape
                        },
                        media::layer_index_base(layer),
                        0,
                    )
                })
                .collect()
        } else {
            vec![(shape, 0, 0)]
        };
        Self {
            tracks,
            shape,
            sent,
            layers,
            rid_extensions: None,
            simulcast,
            frame: 0,
            audio_index: 0,
            next_frame: None,
            next_audio: None,
        }
    }
}

/// The next tick of a periodic sender; a late tick delays the ones after it (as tokio's
/// `MissedTickBehavior::Delay`), so a stalled loop never bursts to catch up.
pub(super) fn next_tick(current: Option<Instant>, interval: Duration, now: Instant) -> Instant {
    let next = current.map_or(now, |t| t + interval);
    if next <= now { now + interval } else { next }
}

/// The MID and RID extension ids the video sender negotiated, and its mid.
pub(super) fn rid_extensions(
    pc: &mut RTCPeerConnection,
    tracks: &SendTracks,
) -> Option<(u8, u8, Bytes)> {
    let mid_id = peer::extension_id(pc, tracks.video, rtc::sdp::extmap::SDES_MID_URI)?;
    let rid_id = peer::extension_id(pc, tracks.video, rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI)?;
    let sdp = pc.local_description()?.sdp;
    let mid = sluice_sfu::transport::negotiated_codecs(&sdp)
        .into_iter()
        .find(|(_, c)| c.mime_type.eq_ignore_ascii_case("video/VP8"))
        .map(|(mid, _)| mid)?;
    Some((mid_id, rid_id, Bytes::from(mid)))
}

/// One video frame on every layer (each layer's packets numbered in its own index space).
pub(super) fn write_frame(pc: &mut RTCPeerConnection, sending: &mut Sending, now: Instant) {
    let frame = sending.frame;
    sending.frame += 1;
    let timestamp = (frame * 90_000 / u64::from(sending.shape.fps)) as u32;
    let sent_ns = media::now_ns();
    for (layer, (shape, index, seq)) in sending.layers.iter_mut().enumerate() {
        let Some(&ssrc) = sending.tracks.video_ssrcs.get(layer) else {
            continue;
        };
        let payloads = media::video_frame(shape, frame, *index, sent_ns);
        let last = payloads.len().saturating_sub(1);
        for (i, payload) in payloads.into_iter().enumerate() {
            let mut header = rtp::header::Header {
                version: 2,
                payload_type: VIDEO_PT,
                sequence_number: *seq,
                timestamp,
                ssrc,
                marker: i == last,
                ..Default::default()
            };
            if let Some((mid_id, rid_id, mid)) = &sending.rid_extensions
                && let Some((rid, _)) = SIMULCAST_LAYERS.get(layer)
            {
                let _ = header.set_extension(*mid_id, mid.clone());
                let _ = header.set_extension(*rid_id, Bytes::from_static(rid.as_bytes()));
            }
            *seq = seq.wrapping_add(1);
            *index = index.wrapping_add(1);
            let packet = rtp::Packet {
                header,
                payload: payload.into(),
            };
            if let Some(mut sender) = pc.rtp_sender(sending.tracks.video)
                && sender.write_rtp(now, packet).is_ok()
            {
                sending.sent.video_packets.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One Opus-sized stamped audio packet.
pub(super) fn write_audio(pc: &mut RTCPeerConnection, sending: &mut Sending, now: Instant) {
    let index = sending.audio_index;
    sending.audio_index = index.wrapping_add(1);
    let packet = rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: AUDIO_PT,
            sequence_number: index as u16,
            timestamp: index.wrapping_mul(960),
            ssrc: sending.tracks.audio_ssrc,
            marker: index == 0,
            ..Default::default()
        },
        payload: media::audio_packet(index, media::now_ns()).into(),
    };
    if let Some(mut sender) = pc.rtp_sender(sending.tracks.audio)
        && sender.write_rtp(now, packet).is_ok()
    {
        sending.sent.audio_packets.fetch_add(1, Ordering::Relaxed);
    }
}
