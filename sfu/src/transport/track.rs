//! Tracks of a peer connection: a publisher's remote track read into the room, and a
//! subscriber's local track written from its subscription queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::playout_delay_extension::PlayoutDelayExtension;

use super::interceptors::{PLAYOUT_DELAY_MAX_10MS, carries_playout_delay};
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::rtp_transceiver::RtpSender;

use super::feedback::{nacked_packets, remb_bits_per_second, round_trip};
use super::reports::{
    ClockAnchor, RemoteSenderClock, SampledClocks, SentReports, is_plausible_sampling,
};
use super::{CodecInfo, TransportError};
use crate::core::{RtpPacket, Ssrc};

/// Receives the RTP of one remote track. Called on the track's reader task for every packet, so
/// it must not block: hand the packet to a bounded queue and count what does not fit.
pub trait RtpSink: Send + Sync + 'static {
    /// `layer` is the simulcast spatial layer (0 without simulcast).
    fn deliver(&self, layer: u8, packet: RtpPacket);
}

/// What a subscriber tells us about a track we send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriberFeedback {
    /// PLI or FIR.
    KeyframeRequest,
    /// A NACK naming this many lost packets.
    Nacked(u32),
    /// A receiver-estimated maximum bitrate (REMB), from a client that estimates its downlink
    /// itself (one that did not take transport-wide feedback).
    Remb(u64),
    /// The round trip a receiver report gave (only on the one video stream per connection to a
    /// receiver without transport-wide feedback that reports every 50 ms).
    RoundTrip(Duration),
}

/// A track a publisher sends us, opened when its first RTP packet arrived.
#[derive(Clone)]
pub struct RemoteTrack {
    track: Arc<dyn TrackRemote>,
    track_id: String,
    ssrc: Ssrc,
    codec: CodecInfo,
    sender_clock: Arc<RemoteSenderClock>,
}

impl RemoteTrack {
    pub(super) async fn open(
        track: Arc<dyn TrackRemote>,
        sender_clock: Arc<RemoteSenderClock>,
    ) -> Option<Self> {
        let ssrc = *track.ssrcs().await.first()?;
        let codec = track.codec(ssrc).await?;
        let track_id = track.track_id().await.to_string();
        Some(Self {
            track,
            track_id,
            ssrc: Ssrc(ssrc),
            codec: CodecInfo {
                mime_type: codec.mime_type,
                clock_rate: codec.clock_rate,
                channels: codec.channels,
                sdp_fmtp_line: codec.sdp_fmtp_line,
            },
            sender_clock,
        })
    }

    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    pub fn codec(&self) -> &CodecInfo {
        &self.codec
    }

    pub(super) fn track_id(&self) -> &str {
        &self.track_id
    }

    /// Starts the task that reads this track's RTP into `sink`; it ends with the track.
    /// With simulcast, `rids` lists the encodings lowest first and each packet is delivered
    /// with the index of its `rid` (learned per SSRC when that encoding opens). With
    /// `audio_level_extension_id` (see [`Peer::audio_level_extension_id`](super::Peer::audio_level_extension_id)),
    /// each packet carries the level the publisher measured.
    pub fn spawn_reader(
        &self,
        rids: Vec<String>,
        audio_level_extension_id: Option<u8>,
        sink: Arc<dyn RtpSink>,
    ) -> tokio::task::JoinHandle<()> {
        let track = Arc::clone(&self.track);
        let sender_clock = Arc::clone(&self.sender_clock);
        let clock_rate = self.codec.clock_rate;
        tokio::spawn(async move {
            let mut layers: HashMap<u32, u8> = HashMap::new();
            // Per SSRC: the latest sender report, its NTP time placed on our clock.
            let mut reported: HashMap<u32, ClockAnchor> = HashMap::new();
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnOpen(init) => {
                        let layer = init
                            .rid
                            .as_deref()
                            .and_then(|rid| rids.iter().position(|r| r == rid))
                            .and_then(|i| u8::try_from(i).ok());
                        match layer {
                            Some(layer) => {
                                layers.insert(init.ssrc, layer);
                            }
                            None if !rids.is_empty() => {
                                debug!(ssrc = init.ssrc, rid = ?init.rid, "encoding with an unannounced rid ignored");
                            }
                            None => {}
                        }
                    }
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        let layer = if rids.is_empty() {
                            Some(0)
                        } else {
                            layers.get(&packet.header.ssrc).copied()
                        };
                        if let Some(layer) = layer {
                            let sampled_at = reported
                                .get(&packet.header.ssrc)
                                .and_then(|anchor| {
                                    anchor.instant_of(packet.header.timestamp, clock_rate)
                                })
                                .filter(|at| is_plausible_sampling(*at, Instant::now()));
                            let mut packet = from_wire(packet, audio_level_extension_id);
                            packet.sampled_at = sampled_at;
                            sink.deliver(layer, packet);
                        }
                    }
                    TrackRemoteEvent::OnRtcpPacket(packets) => {
                        let arrived = Instant::now();
                        for report in packets
                            .iter()
                            .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
                        {
                            if let Some(at) = sender_clock.place(report.ntp_time, arrived) {
                                let anchor = ClockAnchor {
                                    rtp_timestamp: report.rtp_time,
                                    at,
                                };
                                if reported.insert(report.ssrc, anchor).is_none() {
                                    debug!(
                                        ssrc = report.ssrc,
                                        "first sender report: media placed on the publisher's clock"
                                    );
                                }
                            }
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
            trace!("remote track reader ended");
        })
    }

    /// Sends a PLI for `media_ssrc` to the publisher. Fire-and-forget: the throttling is the
    /// routing core's job, and a lost request is repeated by the core's retry.
    pub fn request_keyframe(&self, media_ssrc: Ssrc) {
        let track = Arc::clone(&self.track);
        tokio::spawn(async move {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: media_ssrc.0,
            };
            if let Err(err) = track.write_rtcp(vec![Box::new(pli)]).await {
                debug!(%err, "PLI not sent");
            }
        });
    }
}

pub(crate) fn from_wire(packet: rtp::Packet, audio_level_extension_id: Option<u8>) -> RtpPacket {
    RtpPacket {
        ssrc: Ssrc(packet.header.ssrc),
        payload_type: packet.header.payload_type,
        sequence_number: packet.header.sequence_number,
        timestamp: packet.header.timestamp,
        marker: packet.header.marker,
        audio_level: audio_level_extension_id.and_then(|id| audio_level(&packet.header, id)),
        sampled_at: None,
        payload: packet.payload,
    }
}

/// The RFC 6464 level (-dBov, 0..=127) in the extension with `id`, without copying: the first
/// byte is the voice-activity flag and the level, in both the one-byte and the two-byte header
/// form (which pads it). The flag is not returned: senders set it from their own VAD or not at
/// all, so the level alone decides. A missing or empty extension is `None`.
fn audio_level(header: &rtp::header::Header, id: u8) -> Option<u8> {
    if !header.extension {
        return None;
    }
    let extension = header.extensions.iter().find(|e| e.id == id)?;
    extension.payload.first().map(|byte| byte & 0x7f)
}

/// Builds the outgoing packet. Header extensions are not carried over: their ids were
/// negotiated with the publisher, not with this subscriber, and the sender rejects unknown ids.
pub(crate) fn to_wire(packet: RtpPacket) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker: packet.marker,
            payload_type: packet.payload_type,
            sequence_number: packet.sequence_number,
            timestamp: packet.timestamp,
            ssrc: packet.ssrc.0,
            ..Default::default()
        },
        payload: packet.payload,
    }
}

/// A track we send to a subscriber.
#[derive(Clone)]
pub struct LocalTrack {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    codec: CodecInfo,
    ssrc: Ssrc,
    /// Minimum playout delay to ask of the subscriber, in ms.
    playout_delay_ms: Option<u16>,
    /// Set when the track leaves the connection: the writer drops what is still queued
    /// instead of handing it to a sender that no longer exists.
    removed: Arc<AtomicBool>,
    /// Packets handed to the connection's driver (or about to be). The driver queues them; a
    /// removal waits until the sender's stats have counted them, because the driver logs an
    /// error for every queued packet whose sender has gone.
    handed: Arc<AtomicU64>,
    /// Packets the subscriber NACKed: the responder resends them on the same SSRC, so they
    /// count in the sender's `packetsSent` too.
    nacked: Arc<AtomicU64>,
    /// Where the writer leaves when its packets' media was sampled, for the sender reports.
    clocks: Arc<SampledClocks>,
    /// When the connection's sender reports left, for the round trip of receiver reports.
    sent_reports: Arc<SentReports>,
}

impl LocalTrack {
    pub(super) fn new(
        track: Arc<TrackLocalStaticRTP>,
        sender: Arc<dyn RtpSender>,
        codec: CodecInfo,
        ssrc: u32,
        playout_delay_ms: Option<u16>,
        clocks: Arc<SampledClocks>,
        sent_reports: Arc<SentReports>,
    ) -> Self {
        Self {
            track,
            sender,
            codec,
            ssrc: Ssrc(ssrc),
            playout_delay_ms,
            removed: Arc::new(AtomicBool::new(false)),
            handed: Arc::new(AtomicU64::new(0)),
            nacked: Arc::new(AtomicU64::new(0)),
            clocks,
            sent_reports,
        }
    }

    /// Stops the writer and returns the sender, for removing the track from its connection,
    /// with the number of packets the writer handed to the driver: no packet is handed after
    /// this returns.
    pub(super) fn stop_for_removal(&self) -> (&Arc<dyn RtpSender>, u64) {
        // SeqCst pairs with the writer's count-then-check: either the writer's count is seen
        // here, or the writer sees `removed` and does not write.
        self.removed.store(true, Ordering::SeqCst);
        (&self.sender, self.handed.load(Ordering::SeqCst))
    }

    /// Packets the subscriber asked to be resent so far (an upper bound of the resends).
    pub(super) fn nacked(&self) -> u64 {
        self.nacked.load(Ordering::Relaxed)
    }

    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// The payload type the subscriber agreed to for this track's codec. Valid once the
    /// subscriber's answer has been applied.
    pub async fn payload_type(&self) -> Result<u8, TransportError> {
        let params = self
            .sender
            .get_parameters()
            .await
            .map_err(|e| TransportError::Peer(e.to_string()))?;
        pick_payload_type(&params.rtp_parameters.codecs, &self.codec)
            .ok_or_else(|| TransportError::CodecNotNegotiated(self.codec.mime_type.clone()))
    }

    /// Starts the tasks that write packets from the returned queue to the subscriber and turn
    /// the subscriber's feedback (PLI/FIR, NACKs) into calls of `on_feedback`. Both end when
    /// the queue's sender is dropped or the connection closes.
    pub fn spawn_io(
        &self,
        queue_capacity: usize,
        on_feedback: impl Fn(SubscriberFeedback) + Send + Sync + 'static,
    ) -> mpsc::Sender<RtpPacket> {
        let (tx, mut rx) = mpsc::channel::<RtpPacket>(queue_capacity);
        // Dropped when the writer ends, which ends the feedback task too.
        let (writer_done, mut writer_gone) = oneshot::channel::<()>();
        let writer = Arc::clone(&self.track);
        let removed = Arc::clone(&self.removed);
        let handed = Arc::clone(&self.handed);
        // Browsers keep the last playout delay they saw, so it rides on the first packets and
        // then on one in every PLAYOUT_DELAY_EVERY (the extension costs a marshal per use).
        let playout_delay = self.playout_delay_ms.map(|ms| {
            HeaderExtension::PlayoutDelay(PlayoutDelayExtension {
                min_delay: ms.div_ceil(10),
                max_delay: PLAYOUT_DELAY_MAX_10MS,
            })
        });
        let clocks = Arc::clone(&self.clocks);
        let ssrc = self.ssrc.0;
        tokio::spawn(async move {
            let _writer_done = writer_done;
            let mut sent: u64 = 0;
            let mut anchored: Option<u32> = None;
            while let Some(packet) = rx.recv().await {
                handed.fetch_add(1, Ordering::SeqCst);
                if removed.load(Ordering::SeqCst) {
                    handed.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                // Once per frame: the anchor is a (timestamp, instant) pair of a linear clock.
                match packet.sampled_at {
                    Some(at) if anchored != Some(packet.timestamp) => {
                        anchored = Some(packet.timestamp);
                        clocks.set(
                            ssrc,
                            ClockAnchor {
                                rtp_timestamp: packet.timestamp,
                                at,
                            },
                        );
                    }
                    None if anchored.take().is_some() => clocks.clear(ssrc),
                    _ => {}
                }
                let result = match &playout_delay {
                    Some(extension) if carries_playout_delay(sent) => {
                        writer
                            .write_rtp_with_extensions(
                                to_wire(packet),
                                std::slice::from_ref(extension),
                            )
                            .await
                    }
                    _ => writer.write_rtp(to_wire(packet)).await,
                };
                if let Err(err) = result {
                    // Not queued, so a removal must not wait for it to be sent.
                    handed.fetch_sub(1, Ordering::SeqCst);
                    trace!(%err, "RTP write failed");
                }
                sent += 1;
            }
        });
        let feedback = Arc::clone(&self.track);
        let nacked = Arc::clone(&self.nacked);
        let sent_reports = Arc::clone(&self.sent_reports);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = feedback.poll() => match event {
                        Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                            let wants_keyframe = packets.iter().any(|p| {
                                p.as_any().is::<PictureLossIndication>()
                                    || p.as_any().is::<FullIntraRequest>()
                            });
                            if wants_keyframe {
                                on_feedback(SubscriberFeedback::KeyframeRequest);
                            }
                            let lost: u32 = packets
                                .iter()
                                .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
                                .map(nacked_packets)
                                .sum();
                            if lost > 0 {
                                nacked.fetch_add(u64::from(lost), Ordering::Relaxed);
                                on_feedback(SubscriberFeedback::Nacked(lost));
                            }
                            if let Some(bps) = remb_bits_per_second(&packets) {
                                on_feedback(SubscriberFeedback::Remb(bps));
                            }
                            let round_trip = round_trip(&packets, &sent_reports, Instant::now());
                            if let Some(round_trip) = round_trip {
                                on_feedback(SubscriberFeedback::RoundTrip(round_trip));
                            }
                        }
                        Some(_) => {}
                        None => break,
                    },
                    _ = &mut writer_gone => break,
                }
            }
        });
        tx
    }
}

/// The negotiated payload type for `codec`: same MIME type and, for H.264, the same profile
/// and packetization mode, since a decoder set up for another profile may reject the stream.
fn pick_payload_type(negotiated: &[RTCRtpCodecParameters], codec: &CodecInfo) -> Option<u8> {
    let same_mime: Vec<&RTCRtpCodecParameters> = negotiated
        .iter()
        .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type))
        .collect();
    let fmtp_key = |fmtp: &str, key: &str| {
        fmtp.split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let h264_match = |c: &&&RTCRtpCodecParameters| {
        ["profile-level-id", "packetization-mode"]
            .iter()
            .all(|key| {
                let ours = fmtp_key(&c.rtp_codec.sdp_fmtp_line, key);
                let theirs = fmtp_key(&codec.sdp_fmtp_line, key);
                // Compare the profile (first 4 hex digits), not the level.
                match (*key, ours, theirs) {
                    ("profile-level-id", Some(a), Some(b)) => a.get(..4) == b.get(..4),
                    (_, a, b) => a == b,
                }
            })
    };
    same_mime
        .iter()
        .find(h264_match)
        .or_else(|| same_mime.first())
        .map(|c| c.payload_type)
}

#[cfg(test)]
mod tests;
