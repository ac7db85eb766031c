//! A webrtc-rs client peer for the end-to-end tests: the client side of a publisher or a
//! subscriber connection, doing real ICE/DTLS/SRTP against the server on loopback.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use sluice_signaling::protocol::IceCandidate;
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel, RTCDataChannelInit};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceConnectionState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
    register_default_interceptors,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

pub const VP8: &str = "video/VP8";
pub const OPUS: &str = "audio/opus";
pub const H264: &str = "video/H264";

struct Handler {
    candidates: mpsc::UnboundedSender<IceCandidate>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    state: watch::Sender<RTCPeerConnectionState>,
    ice_states: mpsc::UnboundedSender<RTCIceConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.candidates.send(IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_m_line_index: init.sdp_mline_index,
                username_fragment: init.username_fragment,
            });
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let _ = self.ice_states.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

pub struct ClientPeer {
    pub pc: Arc<dyn PeerConnection>,
    pub candidates: mpsc::UnboundedReceiver<IceCandidate>,
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    /// Every ICE connection state the connection went through, in order.
    pub ice_states: mpsc::UnboundedReceiver<RTCIceConnectionState>,
}

fn codec(mime: &str) -> (RTCRtpCodec, u8, RtpCodecKind) {
    if mime == OPUS {
        (
            RTCRtpCodec {
                mime_type: OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            111,
            RtpCodecKind::Audio,
        )
    } else if mime == H264 {
        (
            RTCRtpCodec {
                mime_type: H264.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                // What an RTMP ingest of a baseline/constrained-baseline stream announces.
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                        .to_owned(),
                rtcp_feedback: vec![RTCPFeedback {
                    typ: "nack".to_owned(),
                    parameter: "pli".to_owned(),
                }],
            },
            102,
            RtpCodecKind::Video,
        )
    } else {
        (
            RTCRtpCodec {
                mime_type: VP8.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![
                    RTCPFeedback {
                        typ: "nack".to_owned(),
                        parameter: String::new(),
                    },
                    RTCPFeedback {
                        typ: "nack".to_owned(),
                        parameter: "pli".to_owned(),
                    },
                ],
            },
            96,
            RtpCodecKind::Video,
        )
    }
}

impl ClientPeer {
    pub async fn new() -> Result<Self> {
        Self::build(false).await
    }

    /// A peer that can send simulcast: it negotiates the MID and RID header extensions, which
    /// a simulcast sender must stamp on every packet (see [`ClientPeer::add_simulcast_track`]).
    pub async fn simulcast_publisher() -> Result<Self> {
        Self::build(true).await
    }

    async fn build(simulcast: bool) -> Result<Self> {
        Self::build_with(simulcast, None).await
    }

    /// A peer whose interceptor chain also holds `interceptor` at `slot` (it sees outgoing
    /// packets after the sender's own checks).
    pub async fn with_interceptor(
        slot: rtc::interceptor::Slot,
        interceptor: Box<dyn rtc::interceptor::Interceptor>,
    ) -> Result<Self> {
        Self::build_with(false, Some((slot, interceptor))).await
    }

    async fn build_with(
        simulcast: bool,
        extra: Option<(
            rtc::interceptor::Slot,
            Box<dyn rtc::interceptor::Interceptor>,
        )>,
    ) -> Result<Self> {
        let mut engine = MediaEngine::default();
        if simulcast {
            rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers(
                &mut engine,
            )?;
        }
        for mime in [OPUS, VP8, H264] {
            let (rtp_codec, payload_type, kind) = codec(mime);
            engine.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec,
                    payload_type,
                },
                kind,
            )?;
        }
        // Like the server, mark PLI/FIR/REMB so they reach the application (webrtc-rs 0.21's
        // chain drops inbound RTCP otherwise).
        let registry = register_default_interceptors(Registry::new(), &mut engine)?.with(
            rtc::interceptor::Slot::Custom(20_000),
            sluice_sfu::transport::FeedbackToApplication::default(),
        );
        let registry = match extra {
            Some((slot, interceptor)) => registry.with(slot, interceptor),
            None => registry,
        };
        let (candidates_tx, candidates) = mpsc::unbounded_channel();
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (ice_states_tx, ice_states) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(engine)
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_include_loopback_candidate(true)
                    .build(),
            )
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                candidates: candidates_tx,
                tracks: tracks_tx,
                state: state_tx,
                ice_states: ice_states_tx,
            }) as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await?;
        Ok(Self {
            pc: Arc::new(pc),
            candidates,
            tracks,
            state,
            ice_states,
        })
    }

    /// Adds a send-only track of `mime` with `ssrc`; returns the track to write RTP into.
    pub async fn add_send_track(&self, mime: &str, ssrc: u32) -> Result<Arc<TrackLocalStaticRTP>> {
        let (rtp_codec, _, kind) = codec(mime);
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("stream-{ssrc}"),
            format!("track-{ssrc}"),
            format!("track-{ssrc}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: rtp_codec,
                ..Default::default()
            }],
        )));
        self.pc
            .add_transceiver_from_track(
                Arc::clone(&track) as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await?;
        Ok(track)
    }

    /// A simulcast video track: one encoding per `(rid, ssrc)`, lowest first. Packets are
    /// written with the layer's SSRC and [`rid_extension`] of its rid.
    pub async fn add_simulcast_track(
        &self,
        mime: &str,
        layers: &[(&str, u32)],
    ) -> Result<Arc<TrackLocalStaticRTP>> {
        let (rtp_codec, _, kind) = codec(mime);
        let encodings = layers
            .iter()
            .map(|(rid, ssrc)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: (*rid).to_owned(),
                    ssrc: Some(*ssrc),
                    ..Default::default()
                },
                codec: rtp_codec.clone(),
                ..Default::default()
            })
            .collect();
        let first = layers.first().map_or(0, |(_, ssrc)| *ssrc);
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("stream-{first}"),
            format!("track-{first}"),
            format!("track-{first}"),
            kind,
            encodings,
        )));
        self.pc
            .add_transceiver_from_track(
                Arc::clone(&track) as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await?;
        Ok(track)
    }

    pub async fn offer(&self) -> Result<String> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        Ok(self
            .pc
            .local_description()
            .await
            .context("no local description")?
            .sdp)
    }

    pub async fn apply_answer(&self, sdp: String) -> Result<()> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        Ok(())
    }

    pub async fn answer(&self, offer: String) -> Result<String> {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(offer)?)
            .await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        Ok(self
            .pc
            .local_description()
            .await
            .context("no local description")?
            .sdp)
    }

    pub async fn add_candidate(&self, candidate: IceCandidate) -> Result<()> {
        if candidate.candidate.is_empty() {
            return Ok(());
        }
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_m_line_index,
                username_fragment: candidate.username_fragment,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    pub async fn wait_connected(&mut self, wait: Duration) -> Result<()> {
        tokio::time::timeout(
            wait,
            self.state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .context("peer connection did not connect in time")?
        .context("peer connection dropped")?;
        Ok(())
    }

    /// Opens one of Sluice's data channels (`sluice-reliable`, or with `lossy` the unordered
    /// `sluice-lossy` without retransmissions) as the SDK does; it opens once the connection
    /// is negotiated.
    pub async fn data_channel(&self, lossy: bool) -> Result<Arc<dyn DataChannel>> {
        let (label, init) = if lossy {
            (
                sluice_sfu::shard::LOSSY_LABEL,
                RTCDataChannelInit {
                    ordered: false,
                    max_retransmits: Some(0),
                    ..Default::default()
                },
            )
        } else {
            (
                sluice_sfu::shard::RELIABLE_LABEL,
                RTCDataChannelInit::default(),
            )
        };
        Ok(self.pc.create_data_channel(label, Some(init)).await?)
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// The RTP stream id (RFC 8852) of a simulcast layer, as a header extension for
/// `TrackLocalStaticRTP::write_rtp_with_extensions`.
pub fn rid_extension(rid: &str) -> rtc::rtp::extension::HeaderExtension {
    sdes_extension(rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI, rid)
}

/// The media id (RFC 8843) of the packet's transceiver: a receiver needs it, with the rid, to
/// bind a simulcast layer whose SSRC was not signalled.
pub fn mid_extension(mid: &str) -> rtc::rtp::extension::HeaderExtension {
    sdes_extension(rtc::sdp::extmap::SDES_MID_URI, mid)
}

fn sdes_extension(uri: &'static str, value: &str) -> rtc::rtp::extension::HeaderExtension {
    rtc::rtp::extension::HeaderExtension::Custom {
        uri: std::borrow::Cow::Borrowed(uri),
        extension: Box::new(SdesItem(value.as_bytes().to_vec())),
    }
}

struct SdesItem(Vec<u8>);

impl rtc::shared::marshal::MarshalSize for SdesItem {
    fn marshal_size(&self) -> usize {
        self.0.len()
    }
}

impl rtc::shared::marshal::Marshal for SdesItem {
    fn marshal_to(&self, buf: &mut [u8]) -> rtc::shared::error::Result<usize> {
        let target = buf
            .get_mut(..self.0.len())
            .ok_or(rtc::shared::error::Error::ErrBufferTooSmall)?;
        target.copy_from_slice(&self.0);
        Ok(self.0.len())
    }
}
