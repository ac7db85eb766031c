//! The wire protocol between a client and the Sluice signaling server.
//!
//! Every frame is one JSON object with a `type` tag (camelCase). Every client message is a
//! *request* carrying a client-chosen `requestId`; the server answers each request with exactly
//! one *response* carrying the same `requestId`: either the request's success message
//! (`joined`, `published`, `subscribed`, `ok`) or `error` with a stable [`ErrorCode`]. Everything
//! else the server sends is an *event* and carries no `requestId`.
//!
//! These types are the single source of truth: the TypeScript types in
//! `client-js/src/protocol.gen.ts` are generated from them (see [`typescript_bindings`]) and a
//! test fails when the checked-in file is stale. `docs/protocol.md` documents the flow, and
//! `tests/fixtures/protocol/*.json` holds one golden example per message, read by the Rust and
//! the TypeScript tests alike. `limits` bounds every string and list a client sends.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

mod limits;
mod typescript;

pub use self::limits::{
    FieldError, MAX_CANDIDATE_BYTES, MAX_ID_BYTES, MAX_NAME_BYTES, MAX_RESUME_TOKEN_BYTES,
    MAX_RIDS_PER_TRACK, MAX_TRACKS_PER_PUBLISH, MAX_TRICKLED_CANDIDATES, MAX_UFRAG_BYTES,
};
pub use self::typescript::typescript_bindings;

/// Client-chosen request correlation id, echoed in the response.
pub type RequestId = u32;

/// Messages a client sends. Each one is a request and gets exactly one response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ClientMessage {
    /// Enter a room with a signed room token. Answered by `joined`. When `room` is given it
    /// must be the token's room, so a client never lands in another room by mistake.
    Join {
        request_id: RequestId,
        token: String,
        #[ts(optional)]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// Offer for the publisher peer connection, announcing the tracks it carries (by `mid`).
    /// Answered by `published` with the SDP answer and one publication per track.
    Publish {
        request_id: RequestId,
        sdp: String,
        tracks: Vec<TrackInfo>,
    },
    /// Stop forwarding one of the caller's publications. Answered by `ok`.
    Unpublish {
        request_id: RequestId,
        publication_id: String,
    },
    /// Mute (nothing of it is forwarded) or unmute one of the caller's publications; the room
    /// is told with `publicationMuted` / `publicationUnmuted`. Answered by `ok`.
    SetMuted {
        request_id: RequestId,
        /// One of the caller's publications.
        publication_id: String,
        /// True mutes, false unmutes.
        muted: bool,
    },
    /// Receive a publication on the subscriber peer connection. Answered by `subscribed`; the
    /// media arrives after the server's next `offer` has been answered.
    Subscribe {
        request_id: RequestId,
        publication_id: String,
    },
    /// Stop receiving a subscription. Answered by `ok`; a new `offer` follows.
    Unsubscribe {
        request_id: RequestId,
        subscription_id: String,
    },
    /// Answer to the server's latest `offer` for the subscriber peer connection. Answered by `ok`.
    Answer { request_id: RequestId, sdp: String },
    /// A local ICE candidate of one of the client's peer connections. Answered by `ok`.
    Trickle {
        request_id: RequestId,
        target: PeerRole,
        candidate: IceCandidate,
    },
    /// Ask for a simulcast layer of a subscription: the highest spatial (and optionally
    /// temporal) layer the client wants. The server forwards the best layer at or below it
    /// that the subscriber's bandwidth allows. Answered by `ok`; `layersChanged` follows.
    SetPreferredLayer {
        request_id: RequestId,
        subscription_id: String,
        spatial: u8,
        #[ts(optional)]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        temporal: Option<u8>,
    },
    /// Pause a subscription (nothing is forwarded and no layer of it is needed, e.g. while
    /// its video element is hidden) or resume it (video restarts at a keyframe the server
    /// asks the publisher for). Answered by `ok`.
    SetSubscriptionPaused {
        request_id: RequestId,
        /// The subscription to pause or resume.
        subscription_id: String,
        /// True pauses, false resumes.
        paused: bool,
    },
    /// Heartbeat: answered by `ok`. A client that gets no answer within a few seconds
    /// treats the connection as dead and reconnects (a network failure closes nothing).
    Ping { request_id: RequestId },
    /// Leave the room; the server closes the connection after answering `ok`.
    Leave { request_id: RequestId },
    /// On a new connection, re-attach to a participant whose connection dropped, within the
    /// server's grace period: the `participantId` and `resumeToken` of its `joined`. Answered
    /// by `resumed` (the participant, its publications and subscriptions are as they were) or
    /// `error` `resumeFailed` (then `join` again). A resume while the old connection is still
    /// open closes the old one (code 4001).
    Resume {
        request_id: RequestId,
        /// The `participant.participantId` of the session's `joined`.
        participant_id: String,
        /// The `resumeToken` of the session's `joined`.
        resume_token: String,
    },
    /// Restart ICE on the subscriber connection: the server sends a new `offer` with new ICE
    /// credentials (after the answer to any offer still outstanding). Answered by `ok`. The
    /// client restarts its publisher connection itself (`publish` with an ICE-restart offer
    /// and no `tracks`).
    RestartIce { request_id: RequestId },
}

impl ClientMessage {
    /// The correlation id every request carries.
    pub fn request_id(&self) -> RequestId {
        match self {
            Self::Join { request_id, .. }
            | Self::Publish { request_id, .. }
            | Self::Unpublish { request_id, .. }
            | Self::SetMuted { request_id, .. }
            | Self::Subscribe { request_id, .. }
            | Self::Unsubscribe { request_id, .. }
            | Self::Answer { request_id, .. }
            | Self::Trickle { request_id, .. }
            | Self::SetPreferredLayer { request_id, .. }
            | Self::SetSubscriptionPaused { request_id, .. }
            | Self::Resume { request_id, .. }
            | Self::Ping { request_id }
            | Self::Leave { request_id }
            | Self::RestartIce { request_id } => *request_id,
        }
    }
}

/// Messages the server sends: responses (with `requestId`) and events (without).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage {
    /// Response to `join`: who you are and what the room already holds.
    Joined {
        request_id: RequestId,
        room: String,
        participant: ParticipantInfo,
        participants: Vec<ParticipantInfo>,
        publications: Vec<PublicationInfo>,
        /// Secret that lets this participant `resume` after its connection drops (128 random
        /// bits, hex). Keep it like the token; it is valid only for this participant.
        resume_token: String,
        /// In a cluster: the signaling URLs of the other live nodes, to reconnect to in this
        /// order when this one stops answering (the same order for every client of the room;
        /// the session is joined anew there: a resume token is valid only on the node that
        /// issued it, and ids are each node's own). Absent without a cluster.
        #[ts(optional)]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback_urls: Option<Vec<String>>,
    },
    /// Response to `resume`: the room as it is now (events missed while away are not
    /// replayed), so the client can reconcile. `participants` are the others;
    /// `publications` include the caller's own; `subscriptions` are the caller's.
    Resumed {
        request_id: RequestId,
        room: String,
        participant: ParticipantInfo,
        participants: Vec<ParticipantInfo>,
        publications: Vec<PublicationInfo>,
        /// The caller's subscriptions; any other the client holds has ended.
        subscriptions: Vec<SubscriptionInfo>,
        /// As in `joined`: the other live nodes to reconnect to, as of now.
        #[ts(optional)]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback_urls: Option<Vec<String>>,
    },
    /// Response to `publish`: the SDP answer and the publications created for the offered tracks.
    Published {
        request_id: RequestId,
        sdp: String,
        publications: Vec<PublicationInfo>,
    },
    /// Response to `subscribe`. In the next offer, the track's media section has `a=msid:<publisher's stream> <subscriptionId>`.
    Subscribed {
        request_id: RequestId,
        subscription_id: String,
        publication_id: String,
    },
    /// Success response to a request that returns nothing else.
    Ok { request_id: RequestId },
    /// Failure response. `requestId` is absent only when the request could not be parsed far
    /// enough to find one.
    Error {
        #[ts(optional)]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<RequestId>,
        code: ErrorCode,
        message: String,
    },
    /// Event: a new offer for the subscriber peer connection; reply with `answer`.
    Offer { sdp: String },
    /// Event: an ICE candidate of one of the server's peer connections.
    Trickle {
        target: PeerRole,
        candidate: IceCandidate,
    },
    /// Event: someone entered the room.
    ParticipantJoined { participant: ParticipantInfo },
    /// Event: a participant's `name` or `metadata` changed (through the server API); sent to
    /// everyone in the room, the participant included.
    ParticipantUpdated { participant: ParticipantInfo },
    /// Event: someone left the room (or their connection dropped).
    ParticipantLeft { participant_id: String },
    /// Event: a publication became available.
    PublicationAdded { publication: PublicationInfo },
    /// Event to everyone in the room, the publisher included: a publication was muted (by
    /// its publisher, or by the application through the server API); nothing of it is
    /// forwarded until `publicationUnmuted`.
    PublicationMuted {
        publication_id: String,
        participant_id: String,
    },
    /// Event to everyone in the room: a muted publication was unmuted.
    PublicationUnmuted {
        publication_id: String,
        participant_id: String,
    },
    /// Event: a publication ended; subscriptions to it ended with it.
    PublicationRemoved {
        publication_id: String,
        participant_id: String,
    },
    /// Event: the layer forwarded on a subscription (`current`) or the one the server is
    /// switching to (`target`) changed, and why.
    LayersChanged {
        subscription_id: String,
        #[ts(optional)]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current: Option<Layer>,
        target: Layer,
        reason: LayerChangeReason,
    },
    /// Event to a publisher (dynacast): which simulcast layers of its publication anyone
    /// watches. Set `active = false` on the encodings that nobody needs, `true` on the others.
    PublisherLayers {
        publication_id: String,
        layers: Vec<LayerActivity>,
    },
    /// Event to everyone in the room: the participants speaking now, loudest first. Sent when
    /// that ordered list changes (not when only the levels move); an empty list once nobody
    /// speaks any more.
    ActiveSpeakers {
        /// Loudest first; empty when nobody speaks.
        speakers: Vec<SpeakerInfo>,
    },
    /// Event to everyone in the room: a publication sent no media for 1.5 s (the server's
    /// `publication_stall_timeout`): its publisher's process, network or encoder is gone. The
    /// publication stays (its publisher may come back); subscribers see a frozen picture or
    /// silence until `publicationResumed` or `publicationRemoved`. Sent on `join` for each
    /// publication stalled at the time.
    PublicationStalled {
        publication_id: String,
        participant_id: String,
    },
    /// Event to everyone in the room: a stalled publication sends media again.
    PublicationResumed {
        publication_id: String,
        participant_id: String,
    },
    /// Event to a sender of data messages: some were not delivered to anyone. Sent at most
    /// four times a second, and within a second of a refusal; `dropped` counts the messages
    /// refused since the previous one, and `reason` is the latest refusal's.
    DataRejected {
        reason: DataRejection,
        /// Messages refused since the previous `dataRejected` (at least 1).
        dropped: u32,
    },
    /// Event to a subscriber: the server ended one of its subscriptions for a reason other
    /// than its publication ending (which `publicationRemoved` tells): its `canSubscribe`
    /// grant was revoked through the server API. The subscriber connection's next `offer`
    /// takes the track away.
    SubscriptionEnded {
        subscription_id: String,
        reason: SubscriptionEndReason,
    },
}

/// Why the server ended a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub enum SubscriptionEndReason {
    /// The participant's `canSubscribe` grant was revoked.
    PermissionRevoked,
}

/// Why the server refused a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub enum DataRejection {
    /// Larger than the server's `max_data_message_bytes` (envelope included).
    TooLarge,
    /// Over the server's `data_messages_per_second` for one participant.
    RateLimited,
    /// Not a Sluice data envelope (a text message, or a bad version, header or topic).
    Invalid,
}

/// One simulcast layer: spatial index (0 = lowest, `q`) and temporal index (0 = base).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    pub spatial: u8,
    pub temporal: u8,
}

/// Why a subscription's layers changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub enum LayerChangeReason {
    /// The subscriber asked (`setPreferredLayer`).
    Requested,
    /// The subscriber's estimated downlink bandwidth went down or up.
    Bandwidth,
    /// The layer being forwarded stopped arriving from the publisher.
    LayerUnavailable,
    /// A pending switch completed on a keyframe of the target layer.
    Switched,
}

/// Whether a simulcast layer (by `rid`) is needed by any subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct LayerActivity {
    pub rid: String,
    pub active: bool,
}

/// One participant in `activeSpeakers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerInfo {
    /// The speaking participant.
    pub participant_id: String,
    /// How loud, 0.0..=1.0 on the scale of WebRTC's `audioLevel`: linear amplitude, 1.0 is
    /// 0 dBov, 0.5 about -6 dBov, 0.1 -20 dBov; the mean of the speech (not the pauses) of the
    /// last 600 ms, four decimals.
    pub level: f64,
}

/// Stable machine-readable error codes. New codes may be added; existing ones never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub enum ErrorCode {
    /// The frame is not valid JSON or not a known message.
    InvalidMessage,
    /// The token is missing, malformed, badly signed or expired.
    Unauthorized,
    /// The token does not grant this action (publish, subscribe).
    PermissionDenied,
    /// The room, publication or subscription does not exist.
    NotFound,
    /// The request needs a joined session.
    NotJoined,
    /// `join` on a session that already joined.
    AlreadyJoined,
    /// Too many messages on this connection.
    RateLimited,
    /// The SDP or ICE candidate was rejected.
    NegotiationFailed,
    /// A server-side limit was reached (participants, publications).
    LimitExceeded,
    /// Something failed on the server; retrying may help.
    Internal,
    /// `resume` refused: unknown participant, wrong token, or the grace period is over. Join
    /// again.
    ResumeFailed,
    /// The server takes no new subscriber connection now: it is at its configured capacity
    /// or its media thread is too busy. Those already admitted and publishers are not
    /// affected; retry later (or on another server).
    ServerFull,
}

impl ErrorCode {
    /// The camelCase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidMessage => "invalidMessage",
            Self::Unauthorized => "unauthorized",
            Self::PermissionDenied => "permissionDenied",
            Self::NotFound => "notFound",
            Self::NotJoined => "notJoined",
            Self::AlreadyJoined => "alreadyJoined",
            Self::RateLimited => "rateLimited",
            Self::NegotiationFailed => "negotiationFailed",
            Self::LimitExceeded => "limitExceeded",
            Self::Internal => "internal",
            Self::ResumeFailed => "resumeFailed",
            Self::ServerFull => "serverFull",
        }
    }
}

/// Which of the participant's two peer connections a candidate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub enum PeerRole {
    /// The client-offered connection that carries the client's own media up.
    Publisher,
    /// The server-offered connection that carries subscriptions down.
    Subscriber,
}

/// An ICE candidate as `RTCIceCandidateInit` spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: String,
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// What the client says about one track of its publish offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct TrackInfo {
    /// The transceiver `mid` of the track in the offer.
    pub mid: String,
    pub kind: MediaKind,
    pub source: TrackSource,
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Simulcast: the `rid`s of the track's encodings, lowest resolution first (e.g.
    /// `["q", "h", "f"]`). Absent or empty for a single encoding.
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub enum MediaKind {
    Audio,
    Video,
}

/// Where a publication's media comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
    Rtmp,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    pub participant_id: String,
    pub identity: String,
    /// Display name, from the token's `name` claim or the server API.
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Application data (opaque to Sluice), from the token's `metadata` claim or the server
    /// API.
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// One of the caller's subscriptions, as `resumed` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionInfo {
    /// The id `subscribed` gave it.
    pub subscription_id: String,
    /// The publication it receives.
    pub publication_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct PublicationInfo {
    pub publication_id: String,
    pub participant_id: String,
    pub kind: MediaKind,
    pub source: TrackSource,
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Negotiated codec, e.g. `video/VP8`, `audio/opus`.
    pub codec: String,
    /// Simulcast layers by `rid`, lowest first; empty for a single encoding.
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rids: Option<Vec<String>>,
    /// `true` while the publication is muted (absent otherwise).
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted: Option<bool>,
}

/// The WebSocket close codes of the protocol (generated into the TypeScript types as the
/// `CloseCode` constant, so client and server cannot disagree on a number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    /// The session ended as asked (`leave`, or the client closed).
    Normal = 1000,
    /// The server is going away, or the participant ended on the server's side.
    GoingAway = 1001,
    /// A policy was broken (join timeout, message flood): reconnecting cannot help.
    Policy = 1008,
    /// A message over the size limit.
    TooBig = 1009,
    /// Sent by the SDK itself when its heartbeat gets no answer.
    HeartbeatTimeout = 4000,
    /// Another connection resumed this participant, or a newer `join` of the same identity in
    /// the same room replaced it; the client must not reconnect from this one.
    Replaced = 4001,
    /// Test hook only: the server dropped the socket as a network failure would.
    DroppedByTestHook = 4002,
    /// The application removed the participant or closed the room (server API); the client
    /// must not reconnect.
    Removed = 4003,
}

impl CloseCode {
    /// Every close code, in the order the TypeScript constant lists them.
    pub const ALL: [CloseCode; 8] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::Policy,
        CloseCode::TooBig,
        CloseCode::HeartbeatTimeout,
        CloseCode::Replaced,
        CloseCode::DroppedByTestHook,
        CloseCode::Removed,
    ];

    /// The number sent in the close frame.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// What the code means, for the generated TypeScript documentation.
    fn meaning(self) -> &'static str {
        match self {
            CloseCode::Normal => "The session ended as asked (`leave`, or the client closed).",
            CloseCode::GoingAway => "The server is going away, or ended the participant.",
            CloseCode::Policy => {
                "A policy was broken (join timeout, message flood): do not reconnect."
            }
            CloseCode::TooBig => "A message over the size limit: do not reconnect.",
            CloseCode::HeartbeatTimeout => {
                "Sent by the SDK itself when its heartbeat gets no answer."
            }
            CloseCode::Replaced => {
                "Another connection resumed this participant, or a newer join of its identity replaced it: do not reconnect."
            }
            CloseCode::DroppedByTestHook => "Test hook only: dropped as a network failure would.",
            CloseCode::Removed => {
                "The application removed the participant or closed the room: do not reconnect."
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            CloseCode::Normal => "Normal",
            CloseCode::GoingAway => "GoingAway",
            CloseCode::Policy => "Policy",
            CloseCode::TooBig => "TooBig",
            CloseCode::HeartbeatTimeout => "HeartbeatTimeout",
            CloseCode::Replaced => "Replaced",
            CloseCode::DroppedByTestHook => "DroppedByTestHook",
            CloseCode::Removed => "Removed",
        }
    }
}

#[cfg(test)]
mod tests;
