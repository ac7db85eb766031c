//! The media engine extensions and interceptor chain of each connection role, and the state
//! its own interceptors share with the shard that drives the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rtc::interceptor::{
    BandwidthEstimator, CongestionControlBuilder, Gcc, NackGeneratorBuilder, Registry, Slot,
    TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp::extension::playout_delay_extension::PlayoutDelayExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability,
    RtpCodecKind, TYPE_RTCP_FB_NACK, TYPE_RTCP_FB_TRANSPORT_CC,
};
use tokio::sync::mpsc;

use super::congestion::{PathState, QueueDelayWatch};
use super::feedback::FeedbackToApplication;
use super::horizon::{NackHorizon, RepairHorizons};
use super::nack_responder::NackResponder;
use super::probe::{ProbeControl, Prober};
use super::repeat::RepeatedRetransmissions;
use super::reports::{SampledClocks, SenderReports, SentReports};
use super::rtx::RepairedStreams;
use super::send_time::{ABS_SEND_TIME_URI, AbsSendTimeStamper, TRANSPORT_CC_URI};
use super::unsignaled::{UnsignaledPackets, UnsignaledStreams};
use super::{Congestion, PeerRole, TransportError};

/// GCC's starting point on a subscriber connection: high enough for a 720p simulcast layer
/// at once on a good path; GCC backs off within about a second where the path cannot carry it.
const GCC_INITIAL_BPS: f64 = 2_500_000.0;
const GCC_MIN_BPS: f64 = 100_000.0;
const GCC_MAX_BPS: f64 = 50_000_000.0;
/// How often lost packets of a publisher's are asked for again, and at most how many times.
const PUBLISHER_NACK_INTERVAL: Duration = Duration::from_millis(20);
const PUBLISHER_NACKS_PER_PACKET: u16 = 15;
/// Wire-ward of the FEC decoder (6_000) and the NACK generator (7_000).
const RTX_SLOT: usize = 5_500;
/// Below `Slot::CongestionControl` (1_000), the wire-most built-in.
const REPEAT_SLOT: usize = 500;
/// Wire-ward of `Slot::NackResponder` (4_000) on the read path: the responder never sees a
/// NACK for a packet the decoder will not show.
const NACK_HORIZON_SLOT: usize = 3_900;
const PROBE_SLOT: usize = 400;
/// The very last before the wire: the stamp is when a packet leaves.
const SEND_TIME_SLOT: usize = 300;
/// Application-most: it sees inbound RTCP after every built-in interceptor.
const FEEDBACK_SLOT: usize = 20_000;
/// App-ward of every built-in interceptor, so they all see a packet it takes off the chain.
const UNSIGNALED_SLOT: usize = 19_000;
/// RTP header extension that asks the receiver for a playout delay range.
pub(crate) const PLAYOUT_DELAY_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
/// One packet in this many carries the playout-delay extension (after the first few):
/// browsers keep the last playout delay they saw, and the extension costs a marshal per use.
pub(crate) const PLAYOUT_DELAY_EVERY: u64 = 64;
/// The maximum playout delay asked for, in 10 ms units: one second.
pub(crate) const PLAYOUT_DELAY_MAX_10MS: u16 = 100;
/// RFC 6464: the sender's audio level on every audio packet, for active speaker detection
/// without decoding.
pub(crate) const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// What a connection's own interceptors share with the code that drives it.
#[derive(Debug, Default, Clone)]
pub(crate) struct ConnectionControls {
    /// Written as the shard forwards, read by the connection's sender reports.
    pub(crate) clocks: Arc<SampledClocks>,
    /// Written by the sender reports, read where receiver reports arrive (round trips).
    pub(crate) sent_reports: Arc<SentReports>,
    /// The probe this connection sends (subscriber connections).
    pub(crate) probe: Arc<ProbeControl>,
    /// Whether the path to the client was just found congested.
    pub(crate) path: Arc<PathState>,
    /// Where each outgoing stream's decoder last restarted (see `horizon`).
    pub(crate) horizons: Arc<RepairHorizons>,
    /// The send-side estimate (GCC over TWCC), bits per second; 0 before the first.
    pub(crate) estimate: Arc<BandwidthEstimate>,
    /// RTP of SSRCs `rtc` did not bind, for the shard (publisher connections).
    pub(crate) unsignaled: Arc<UnsignaledPackets>,
}

/// The latest send-side bandwidth estimate of a subscriber connection.
#[derive(Debug, Default)]
pub(crate) struct BandwidthEstimate(AtomicU64);

impl BandwidthEstimate {
    pub(crate) fn set(&self, bits_per_second: f64) {
        if bits_per_second.is_finite() && bits_per_second > 0.0 {
            self.0.store(bits_per_second as u64, Ordering::Relaxed);
        }
    }

    /// `None` before the estimator has produced one.
    pub(crate) fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|bps| *bps > 0)
    }
}

/// Registers the header extensions and codecs `role` needs on `engine` and builds its
/// interceptor chain. With `playout_delay`, subscriber video negotiates the playout-delay
/// extension. Congestion signals of a subscriber connection go to `congestion`.
pub(crate) fn configure(
    role: PeerRole,
    engine: &mut MediaEngine,
    playout_delay: bool,
    controls: &ConnectionControls,
    congestion: mpsc::Sender<Congestion>,
) -> Result<Registry, TransportError> {
    let registry = match role {
        // The client estimates its uplink from our TWCC feedback (and NACKs us for loss), and
        // tells us how loud each audio packet is.
        PeerRole::Publisher => {
            engine
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: AUDIO_LEVEL_URI.to_owned(),
                    },
                    RtpCodecKind::Audio,
                    None,
                )
                .map_err(peer_err)?;
            register_publisher_rtx(engine).map_err(peer_err)?;
            // webrtc-rs's defaults, except the NACK generator: by default it asks every
            // 100 ms, so a packet lost on the uplink comes back after the subscriber's
            // playout deadline. Chrome ignores a repeated NACK within one round trip, so
            // asking every 20 ms costs no duplicate retransmissions (ADR 0002).
            configure_simulcast_extension_headers(engine).map_err(peer_err)?;
            let registry = Registry::new().with(
                Slot::NackGenerator,
                NackGeneratorBuilder::new()
                    .with_interval(PUBLISHER_NACK_INTERVAL)
                    .with_max_nacks_per_packet(PUBLISHER_NACKS_PER_PACKET)
                    .build(),
            );
            let registry = configure_twcc_receiver_only(registry, engine).map_err(peer_err)?;
            configure_rtcp_reports(registry)
                // Before the NACK generator (7_000) on the read path, so a repaired packet
                // fills its gap there (ADR 0002).
                .with(Slot::Custom(RTX_SLOT), RepairedStreams::default())
                .with(
                    Slot::Custom(UNSIGNALED_SLOT),
                    UnsignaledStreams::new(Arc::clone(&controls.unsignaled)),
                )
        }
        // We send here: send-side bandwidth estimation (GCC over TWCC) drives layer
        // allocation, and the NACK responder answers the subscriber's NACKs.
        PeerRole::Subscriber => {
            if playout_delay {
                engine
                    .register_header_extension(
                        RTCRtpHeaderExtensionCapability {
                            uri: PLAYOUT_DELAY_URI.to_owned(),
                        },
                        RtpCodecKind::Video,
                        None,
                    )
                    .map_err(peer_err)?;
            }
            // The publisher's level of each audio packet, forwarded: the subscriber's browser
            // reports it (`getSynchronizationSources().audioLevel`) for speaking indicators.
            engine
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: AUDIO_LEVEL_URI.to_owned(),
                    },
                    RtpCodecKind::Audio,
                    None,
                )
                .map_err(peer_err)?;
            // For receivers that estimate their downlink themselves (REMB): see `send_time`.
            engine
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: ABS_SEND_TIME_URI.to_owned(),
                    },
                    RtpCodecKind::Video,
                    None,
                )
                .map_err(peer_err)?;
            // Video NACK and PLI, answered by Sluice's responder: it keeps a second of what
            // was sent rather than `rtc`'s 1 024 packet slots per stream (see
            // `nack_responder`). A subscriber leg receives no media, so it has no NACK
            // generator.
            for parameter in ["", "pli"] {
                engine.register_feedback(
                    RTCPFeedback {
                        typ: TYPE_RTCP_FB_NACK.to_owned(),
                        parameter: parameter.to_owned(),
                    },
                    RtpCodecKind::Video,
                );
            }
            let registry = Registry::new().with(Slot::NackResponder, NackResponder::default());
            configure_simulcast_extension_headers(engine).map_err(peer_err)?;
            // Our own sender reports: they follow each source's sampling clock (see
            // `reports`), which webrtc-rs's report interceptor cannot know. No receiver
            // reports: nothing is received here.
            let registry = registry.with(
                Slot::SenderReport,
                SenderReports::new(
                    Arc::clone(&controls.clocks),
                    Arc::clone(&controls.sent_reports),
                ),
            );
            send_side_congestion_control(
                registry,
                QueueDelayWatch::new(
                    Gcc::new(GCC_INITIAL_BPS, GCC_MIN_BPS, GCC_MAX_BPS),
                    congestion,
                    Arc::clone(&controls.probe),
                    Arc::clone(&controls.path),
                    Arc::clone(&controls.estimate),
                ),
                engine,
            )
            .map_err(peer_err)?
            // Wire-most, below the transport-wide numbering and the send history: the
            // repeat carries the same transport sequence number as the retransmission,
            // so the congestion controller sees one packet (ADR 0020).
            .with(
                Slot::Custom(REPEAT_SLOT),
                RepeatedRetransmissions::new(Arc::clone(&controls.path)),
            )
            // Wire-most too, for the same reason: a probe's copies share their originals'
            // transport sequence numbers.
            .with(
                Slot::Custom(PROBE_SLOT),
                Prober::new(Arc::clone(&controls.probe)),
            )
            .with(
                Slot::Custom(NACK_HORIZON_SLOT),
                NackHorizon::new(Arc::clone(&controls.horizons)),
            )
            .with(Slot::Custom(SEND_TIME_SLOT), AbsSendTimeStamper::default())
        }
    };
    Ok(registry.with(
        Slot::Custom(FEEDBACK_SLOT),
        FeedbackToApplication::default(),
    ))
}

/// GCC over transport-wide feedback on a connection that only sends: `rtc`'s
/// `configure_congestion_control` without the pacer (ADR 0010) and without the TWCC
/// recorder, which reports on received media and would sit idle in every subscriber's chain.
fn send_side_congestion_control<E: BandwidthEstimator + 'static>(
    registry: Registry,
    estimator: E,
    engine: &mut MediaEngine,
) -> rtc::shared::error::Result<Registry> {
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        engine.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: TRANSPORT_CC_URI.to_owned(),
            },
            kind,
            None,
        )?;
    }
    Ok(registry
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(estimator).build(),
        )
        .with(Slot::TwccSender, TwccSenderBuilder::new().build()))
}

/// The video payload types of [`sluice_media_engine`](super::sluice_media_engine) and the RTX
/// payload type of each.
const VIDEO_RTX_PAYLOAD_TYPES: [(u8, u8); 6] = [
    (96, 97),
    (102, 103),
    (104, 105),
    (106, 107),
    (108, 109),
    (110, 112),
];

/// RTX (RFC 4588) for publishers' video: Chrome then retransmits on a separate stream per
/// simulcast encoding, named by repaired-rid, which [`RepairedStreams`] turns back into the
/// packets repaired. Only publishers: towards subscribers, retransmissions stay on the media
/// SSRC (the NACK responder would otherwise switch to RTX for them too).
fn register_publisher_rtx(engine: &mut MediaEngine) -> rtc::shared::error::Result<()> {
    for (primary, rtx) in VIDEO_RTX_PAYLOAD_TYPES {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/rtx".to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={primary}"),
                    rtcp_feedback: Vec::new(),
                },
                payload_type: rtx,
            },
            RtpCodecKind::Video,
        )?;
    }
    Ok(())
}

/// Whether the `sent`-th packet of a stream (from 0) carries the playout-delay extension.
pub(crate) fn carries_playout_delay(sent: u64) -> bool {
    sent < 8 || sent.is_multiple_of(PLAYOUT_DELAY_EVERY)
}

/// The playout-delay extension's payload asking for at least `min_ms` (and at most one second).
pub(crate) fn playout_delay_payload(min_ms: u16) -> Option<bytes::Bytes> {
    use rtc::shared::marshal::{Marshal, MarshalSize};
    let extension = PlayoutDelayExtension {
        min_delay: min_ms.div_ceil(10),
        max_delay: PLAYOUT_DELAY_MAX_10MS,
    };
    let mut buf = vec![0u8; extension.marshal_size()];
    extension.marshal_to(&mut buf).ok()?;
    Some(bytes::Bytes::from(buf))
}

fn peer_err(err: impl std::fmt::Display) -> TransportError {
    TransportError::Peer(err.to_string())
}
