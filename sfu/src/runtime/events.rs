//! Server-wide events for the application (webhooks): rooms opening and closing, participants
//! and publications coming and going, ingest sessions starting and ending. Sent on a broadcast
//! channel that never waits: a listener that falls behind loses the oldest events (and is
//! told how many), the media path is never slowed.

use tokio::sync::broadcast;

use super::{ParticipantInfo, PublicationInfo};

/// Events a listener may fall behind by before it loses the oldest.
pub const SERVER_EVENT_BACKLOG: usize = 1024;

/// How a server-side publisher gets its media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestKind {
    Rtmp,
    Rtsp,
    Whip,
}

impl IngestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rtmp => "rtmp",
            Self::Rtsp => "rtsp",
            Self::Whip => "whip",
        }
    }
}

/// Something the application may want to know about.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// The room's first participant joined.
    RoomStarted { room: String },
    /// The room's last participant left; the room is gone.
    RoomFinished { room: String },
    ParticipantJoined {
        room: String,
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        room: String,
        participant: ParticipantInfo,
    },
    PublicationAdded {
        room: String,
        publication: PublicationInfo,
    },
    PublicationRemoved {
        room: String,
        publication: PublicationInfo,
    },
    /// An RTMP encoder, RTSP source or WHIP client started publishing as `identity`.
    IngestStarted {
        room: String,
        identity: String,
        kind: IngestKind,
    },
    /// It stopped (for RTMP and RTSP: once the reconnect grace is over).
    IngestEnded {
        room: String,
        identity: String,
        kind: IngestKind,
    },
}

/// The sending side, held by the runtime.
#[derive(Debug)]
pub(crate) struct ServerEvents {
    sender: broadcast::Sender<ServerEvent>,
}

impl Default for ServerEvents {
    fn default() -> Self {
        Self {
            sender: broadcast::Sender::new(SERVER_EVENT_BACKLOG),
        }
    }
}

impl ServerEvents {
    /// Sends to every listener now; without listeners the event is dropped.
    pub(crate) fn send(&self, event: ServerEvent) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(event);
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ServerEvent> {
        self.sender.subscribe()
    }
}
