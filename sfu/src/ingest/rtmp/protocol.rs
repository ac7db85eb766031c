//! Sluice's own view of an RTMP server connection, so the implementation under it (rml_rtmp
//! today, an Enhanced-RTMP crate later) can be replaced without touching the rest of ingest.
//!
//! It is sans-IO: the connection task feeds it the bytes it read and carries out the events it
//! returns, in order — [`ProtocolEvent::Send`] bytes go to the socket, a publish request is
//! answered with [`RtmpProtocol::accept_publish`] or [`RtmpProtocol::reject_publish`] once the
//! stream key has been checked, media goes to the stream.

use bytes::Bytes;

/// What happened on the connection, in the order it happened.
pub enum ProtocolEvent {
    /// Bytes to write to the peer.
    Send(Vec<u8>),
    /// The peer asks to publish. `stream_key` is a secret: never log it.
    PublishRequested {
        request: u32,
        app: String,
        stream_key: String,
    },
    /// The peer asks to play a stream: Sluice refuses ([`RtmpProtocol::reject_publish`]).
    PlayRequested { request: u32 },
    /// One FLV video tag body and its RTMP timestamp (decode time, ms).
    Video { timestamp_ms: u32, data: Bytes },
    /// One FLV audio tag body and its RTMP timestamp (ms).
    Audio { timestamp_ms: u32, data: Bytes },
    /// The peer stopped publishing on purpose (FCUnpublish / deleteStream).
    PublishFinished,
}

impl std::fmt::Debug for ProtocolEvent {
    /// Without the stream key or the media bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Send(bytes) => write!(f, "Send({} bytes)", bytes.len()),
            Self::PublishRequested { request, app, .. } => {
                write!(f, "PublishRequested {{ request: {request}, app: {app:?} }}")
            }
            Self::PlayRequested { request } => write!(f, "PlayRequested({request})"),
            Self::Video { timestamp_ms, data } => {
                write!(f, "Video {{ {timestamp_ms} ms, {} bytes }}", data.len())
            }
            Self::Audio { timestamp_ms, data } => {
                write!(f, "Audio {{ {timestamp_ms} ms, {} bytes }}", data.len())
            }
            Self::PublishFinished => write!(f, "PublishFinished"),
        }
    }
}

/// Why a connection cannot go on. Each closes that connection only.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid handshake: {0}")]
    Handshake(String),
    #[error("SetChunkSize {0} outside the accepted {min}..={max}", min = super::guard::MIN_CHUNK_SIZE, max = super::guard::MAX_CHUNK_SIZE)]
    ChunkSize(u32),
    #[error("AMF value nested deeper than {0} levels")]
    AmfTooDeep(usize),
    #[error("message larger than {0} bytes (or a declared length its body never reaches)")]
    MessageTooLarge(usize),
    #[error("malformed RTMP: {0}")]
    Malformed(String),
    #[error("the RTMP decoder failed on malformed input")]
    DecoderPanicked,
}

/// The server side of one RTMP connection.
pub trait RtmpProtocol: Send {
    /// Feeds bytes read from the peer; appends what they caused to `events`.
    /// `publishing` raises the bound on a message still being received (media frames are
    /// large; before a publish is accepted only small commands are expected).
    fn handle_input(
        &mut self,
        bytes: &[u8],
        publishing: bool,
        events: &mut Vec<ProtocolEvent>,
    ) -> Result<(), ProtocolError>;

    /// Whether the RTMP handshake is complete (the connection deadline depends on it).
    fn handshake_done(&self) -> bool;

    /// Lets the peer publish (answers [`ProtocolEvent::PublishRequested`]) with
    /// `onStatus NetStream.Publish.Start`, whose description never names the stream key.
    fn accept_publish(
        &mut self,
        request: u32,
        events: &mut Vec<ProtocolEvent>,
    ) -> Result<(), ProtocolError>;

    /// Refuses a publish (or play) request with `onStatus` at level `error`, `code` and
    /// `description` (what ffmpeg prints as "Server error: …"); the caller then closes.
    fn reject_publish(
        &mut self,
        request: u32,
        code: &str,
        description: &str,
        events: &mut Vec<ProtocolEvent>,
    ) -> Result<(), ProtocolError>;
}
