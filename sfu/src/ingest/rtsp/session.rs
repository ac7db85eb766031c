//! One RTSP source's task: connect (retina: DESCRIBE, SETUP, PLAY), hand its frames to the
//! stream's pipeline, and on any failure log one line and try again after a backoff. The
//! room side ([`RoomStream`]) lives as long as the task, so a camera that drops or reboots
//! continues the same publications: same RTP sources, timestamps advanced by the time it was
//! away, viewers resuming at its first keyframe without renegotiating.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use retina::client::{
    Credentials, Demuxed, InitialTimestampPolicy, PlayOptions, Session, SessionOptions,
    SetupOptions, TcpTransportOptions, Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::{Instrument, debug, info, info_span, warn};

use super::backoff::Backoff;
use super::convert::{self, AudioCodec, AudioSetup, Frames, NoUsableStream, Selection, Ticks};
use super::{RtspConfig, RtspSource, RtspTransport};
use crate::core::{MediaKind, RtpPacket};
use crate::ingest::media::{MediaError, MediaPipeline, Origin};
use crate::ingest::stream_publisher::RoomStream;
use crate::runtime::{RequestError, Sfu};

/// Failed attempts in a row logged as warnings; after them, only every [`REPEAT_EVERY`]th is
/// (at the 4 s ceiling: about once a minute).
const QUIET_AFTER: u64 = 5;
const REPEAT_EVERY: u64 = 15;

/// Why one attempt ended.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error(
        "the source refused the credentials (401 Unauthorized): check the username and \
         password environment variables of this source"
    )]
    Unauthorized,
    #[error("DESCRIBE failed: {0}")]
    Describe(retina::Error),
    #[error(transparent)]
    NoUsableStream(#[from] NoUsableStream),
    #[error("SETUP or PLAY failed: {0}")]
    Setup(retina::Error),
    #[error("{0}")]
    Timeout(&'static str),
    #[error("the session failed: {0}")]
    Stream(retina::Error),
    #[error("the source ended the session")]
    Closed,
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("room: {0}")]
    Room(#[from] RequestError),
    #[error("the RTSP client panicked on the source's input")]
    Panicked,
}

/// How one attempt went.
struct Outcome {
    end: End,
    /// Media reached the room: the source works, so the next retry comes quickly.
    played: bool,
}

impl From<End> for Outcome {
    fn from(end: End) -> Self {
        Self { end, played: false }
    }
}

/// Runs `source` until `stop` says so.
pub(super) async fn run(
    source: RtspSource,
    config: RtspConfig,
    sfu: Sfu,
    mut stop: watch::Receiver<bool>,
    playing: Arc<AtomicUsize>,
) {
    let span = info_span!(
        "rtsp",
        room = %source.target.room,
        identity = %source.target.identity,
        url = %source.url,
    );
    async move {
        let mut stream: Option<RoomStream> = None;
        let mut backoff = Backoff::new(config.backoff_first, config.backoff_max);
        // Attempts in a row that carried no media.
        let mut failures = 0u64;
        loop {
            let attempt = AssertUnwindSafe(attempt(&source, &config, &sfu, &mut stream, &playing))
                .catch_unwind();
            let outcome = tokio::select! {
                outcome = attempt => outcome,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            let outcome = outcome.unwrap_or_else(|_| {
                // The room side may be half updated: start it anew (its publications go).
                stream = None;
                End::Panicked.into()
            });
            if outcome.played {
                backoff.reset();
                failures = 0;
            }
            failures += u64::from(!outcome.played);
            let delay = backoff.next_delay();
            let retry_in_ms = delay.as_millis() as u64;
            match &outcome.end {
                End::Closed => info!(retry_in_ms, "the source ended the session; reconnecting"),
                // A source down for long is said again about once a minute, not every retry.
                end if failures <= QUIET_AFTER || failures.is_multiple_of(REPEAT_EVERY) => {
                    warn!(reason = %end, retry_in_ms, failures, "rtsp source unavailable; retrying")
                }
                end => {
                    debug!(reason = %end, retry_in_ms, failures, "rtsp source still unavailable")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        info!("rtsp source stopped");
        // Dropping `stream` removes its participant and publications.
        drop(stream);
    }
    .instrument(span)
    .await
}

/// Counts a source as playing while it is alive.
struct PlayingGuard(Arc<AtomicUsize>);

impl PlayingGuard {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for PlayingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection to the source, until it fails.
async fn attempt(
    source: &RtspSource,
    config: &RtspConfig,
    sfu: &Sfu,
    slot: &mut Option<RoomStream>,
    playing: &Arc<AtomicUsize>,
) -> Outcome {
    let (mut demuxed, selection) = match timeout(config.setup_timeout, connect(source)).await {
        Err(_) => {
            return End::Timeout("no answer to DESCRIBE, SETUP or PLAY within the setup timeout")
                .into();
        }
        Ok(Err(end)) => return end.into(),
        Ok(Ok(connected)) => connected,
    };
    let stream = match slot {
        Some(stream) => stream,
        None => match RoomStream::join(sfu, source.target.clone(), Origin::Rtsp).await {
            Ok(joined) => slot.insert(joined),
            Err(err) => return End::Room(err).into(),
        },
    };
    stream.stats().count_session();
    let mut media = stream.start_media(Instant::now());
    let _playing = PlayingGuard::enter(playing);
    info!(
        video = selection.video.is_some(),
        audio = ?selection.audio.map(|(_, codec)| codec),
        "playing"
    );
    let mut session = Playback {
        selection,
        frames: Frames::default(),
        video_configured: false,
        packets: Vec::new(),
        played: false,
    };
    let end = loop {
        let item = match timeout(config.idle_timeout, demuxed.next()).await {
            Err(_) => break End::Timeout("no media from the source within the idle timeout"),
            Ok(None) => break End::Closed,
            Ok(Some(Err(err))) => break End::Stream(err),
            Ok(Some(Ok(item))) => item,
        };
        if let Err(end) = session.handle(item, &demuxed, stream, &mut media).await {
            break end;
        }
    };
    stream.park_media(media, Instant::now());
    Outcome {
        end,
        played: session.played,
    }
}

/// DESCRIBE, SETUP of the streams Sluice plays, PLAY.
async fn connect(source: &RtspSource) -> Result<(Demuxed, Selection), End> {
    let credentials = source.credentials.as_ref().map(|c| Credentials {
        username: c.username.clone(),
        password: c.password.clone(),
    });
    let options = SessionOptions::default()
        .creds(credentials)
        .user_agent(format!("Sluice/{}", env!("CARGO_PKG_VERSION")));
    let mut session = Session::describe(source.url.clone(), options)
        .await
        .map_err(|err| match err.status_code() {
            Some(401) => End::Unauthorized,
            _ => End::Describe(err),
        })?;
    let selection = convert::select(
        session
            .streams()
            .iter()
            .map(|stream| (stream.media(), stream.encoding_name())),
    )?;
    let transport = match source.transport {
        RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
        RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
    };
    let chosen = selection
        .video
        .into_iter()
        .chain(selection.audio.map(|(i, _)| i));
    for i in chosen {
        // MP4 framing: 4-byte NAL lengths and the AVC record apart (the pipeline adds SPS/PPS
        // before each IDR), raw AAC frames.
        let options = SetupOptions::default()
            .transport(transport.clone())
            .frame_format(FrameFormat::MP4);
        session.setup(i, options).await.map_err(End::Setup)?;
    }
    // The RTP-Info header's rtptime puts every stream on the presentation's one timeline (A/V
    // sync) when the server sends it for all of them; otherwise each starts at its first packet.
    let play = PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive);
    let playing = session.play(play).await.map_err(End::Setup)?;
    let demuxed = playing.demuxed().map_err(End::Setup)?;
    Ok((demuxed, selection))
}

/// The state of one playing session.
struct Playback {
    selection: Selection,
    frames: Frames,
    /// The session's first video frame carries the parameters in force, new or not.
    video_configured: bool,
    packets: Vec<RtpPacket>,
    played: bool,
}

impl Playback {
    async fn handle(
        &mut self,
        item: CodecItem,
        demuxed: &Demuxed,
        stream: &mut RoomStream,
        media: &mut MediaPipeline,
    ) -> Result<(), End> {
        let now = Instant::now();
        self.packets.clear();
        let (kind, announce) = match item {
            CodecItem::VideoFrame(frame) if Some(frame.stream_id()) == self.selection.video => {
                let parameters = (frame.has_new_parameters() || !self.video_configured)
                    .then(|| video_parameters(demuxed, frame.stream_id()))
                    .flatten();
                self.video_configured |= parameters.is_some();
                let input = convert::VideoInput {
                    at: ticks(frame.timestamp()),
                    new_parameters: parameters,
                    data: frame.data(),
                };
                let announce = self.frames.video(media, now, input, &mut self.packets)?;
                (MediaKind::Video, announce)
            }
            CodecItem::AudioFrame(frame) => {
                let Some((id, codec)) = self.selection.audio else {
                    return Ok(());
                };
                if frame.stream_id() != id {
                    return Ok(());
                }
                let Some(setup) = audio_setup(demuxed, id, codec) else {
                    return Ok(());
                };
                let at = ticks(frame.timestamp());
                let announce =
                    self.frames
                        .audio(media, now, setup, at, frame.data(), &mut self.packets)?;
                (MediaKind::Audio, announce)
            }
            // RTCP, ONVIF metadata and streams not set up.
            _ => return Ok(()),
        };
        stream.apply(announce).await?;
        if !self.packets.is_empty() {
            self.played = true;
            stream.media_flowed(now).await?;
        }
        for packet in self.packets.drain(..) {
            stream.send(kind, packet);
        }
        Ok(())
    }
}

fn ticks(timestamp: retina::Timestamp) -> Ticks {
    Ticks {
        elapsed: timestamp.elapsed(),
        clock_rate: timestamp.clock_rate().get(),
    }
}

/// The AVCDecoderConfigurationRecord of video stream `id`, when known.
fn video_parameters(demuxed: &Demuxed, id: usize) -> Option<&[u8]> {
    match demuxed.streams().get(id)?.parameters()? {
        ParametersRef::Video(video) => Some(video.extra_data()),
        _ => None,
    }
}

/// How audio stream `id` is to be decoded, from its SDP.
fn audio_setup(demuxed: &Demuxed, id: usize, codec: AudioCodec) -> Option<AudioSetup<'_>> {
    let stream = demuxed.streams().get(id)?;
    Some(match codec {
        AudioCodec::Aac => match stream.parameters()? {
            ParametersRef::Audio(audio) => AudioSetup::Aac {
                config: audio.extra_data(),
            },
            _ => return None,
        },
        AudioCodec::G711(law) => AudioSetup::G711 {
            law,
            rate: stream.clock_rate_hz(),
            channels: stream.channels().map_or(1, |c| c.get()),
        },
    })
}
