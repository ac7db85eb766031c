// Generated from signaling/src/protocol.rs by `SLUICE_BLESS=1 cargo test -p sluice-signaling protocol`.
// Do not edit by hand: a test fails when this file is stale.

export type RequestId = number;

export type ClientMessage = { "type": "join", requestId: number, token: string, room?: string, } | { "type": "publish", requestId: number, sdp: string, tracks: Array<TrackInfo>, } | { "type": "unpublish", requestId: number, publicationId: string, } | { "type": "setMuted", requestId: number, 
/**
 * One of the caller's publications.
 */
publicationId: string, 
/**
 * True mutes, false unmutes.
 */
muted: boolean, } | { "type": "subscribe", requestId: number, publicationId: string, } | { "type": "unsubscribe", requestId: number, subscriptionId: string, } | { "type": "answer", requestId: number, sdp: string, } | { "type": "trickle", requestId: number, target: PeerRole, candidate: IceCandidate, } | { "type": "setPreferredLayer", requestId: number, subscriptionId: string, spatial: number, temporal?: number, } | { "type": "setSubscriptionPaused", requestId: number, 
/**
 * The subscription to pause or resume.
 */
subscriptionId: string, 
/**
 * True pauses, false resumes.
 */
paused: boolean, } | { "type": "ping", requestId: number, } | { "type": "leave", requestId: number, } | { "type": "resume", requestId: number, 
/**
 * The `participant.participantId` of the session's `joined`.
 */
participantId: string, 
/**
 * The `resumeToken` of the session's `joined`.
 */
resumeToken: string, } | { "type": "restartIce", requestId: number, };

export type ServerMessage = { "type": "joined", requestId: number, room: string, participant: ParticipantInfo, participants: Array<ParticipantInfo>, publications: Array<PublicationInfo>, 
/**
 * Secret that lets this participant `resume` after its connection drops (128 random
 * bits, hex). Keep it like the token; it is valid only for this participant.
 */
resumeToken: string, 
/**
 * In a cluster: the signaling URLs of the other live nodes, to reconnect to in this
 * order when this one stops answering (the same order for every client of the room;
 * the session is joined anew there: a resume token is valid only on the node that
 * issued it, and ids are each node's own). Absent without a cluster.
 */
fallbackUrls?: Array<string>, } | { "type": "resumed", requestId: number, room: string, participant: ParticipantInfo, participants: Array<ParticipantInfo>, publications: Array<PublicationInfo>, 
/**
 * The caller's subscriptions; any other the client holds has ended.
 */
subscriptions: Array<SubscriptionInfo>, 
/**
 * As in `joined`: the other live nodes to reconnect to, as of now.
 */
fallbackUrls?: Array<string>, } | { "type": "published", requestId: number, sdp: string, publications: Array<PublicationInfo>, } | { "type": "subscribed", requestId: number, subscriptionId: string, publicationId: string, } | { "type": "ok", requestId: number, } | { "type": "error", requestId?: number, code: ErrorCode, message: string, } | { "type": "offer", sdp: string, } | { "type": "trickle", target: PeerRole, candidate: IceCandidate, } | { "type": "participantJoined", participant: ParticipantInfo, } | { "type": "participantUpdated", participant: ParticipantInfo, } | { "type": "participantLeft", participantId: string, } | { "type": "publicationAdded", publication: PublicationInfo, } | { "type": "publicationMuted", publicationId: string, participantId: string, } | { "type": "publicationUnmuted", publicationId: string, participantId: string, } | { "type": "publicationRemoved", publicationId: string, participantId: string, } | { "type": "layersChanged", subscriptionId: string, current?: Layer, target: Layer, reason: LayerChangeReason, } | { "type": "publisherLayers", publicationId: string, layers: Array<LayerActivity>, } | { "type": "activeSpeakers", 
/**
 * Loudest first; empty when nobody speaks.
 */
speakers: Array<SpeakerInfo>, } | { "type": "publicationStalled", publicationId: string, participantId: string, } | { "type": "publicationResumed", publicationId: string, participantId: string, } | { "type": "dataRejected", reason: DataRejection, 
/**
 * Messages refused since the previous `dataRejected` (at least 1).
 */
dropped: number, } | { "type": "subscriptionEnded", subscriptionId: string, reason: SubscriptionEndReason, };

export type ErrorCode = "invalidMessage" | "unauthorized" | "permissionDenied" | "notFound" | "notJoined" | "alreadyJoined" | "rateLimited" | "negotiationFailed" | "limitExceeded" | "internal" | "resumeFailed" | "serverFull";

export type PeerRole = "publisher" | "subscriber";

export type IceCandidate = { candidate: string, sdpMid?: string, sdpMLineIndex?: number, usernameFragment?: string, };

export type TrackInfo = { 
/**
 * The transceiver `mid` of the track in the offer.
 */
mid: string, kind: MediaKind, source: TrackSource, name?: string, 
/**
 * Simulcast: the `rid`s of the track's encodings, lowest resolution first (e.g.
 * `["q", "h", "f"]`). Absent or empty for a single encoding.
 */
rids?: Array<string>, };

export type MediaKind = "audio" | "video";

export type TrackSource = "camera" | "microphone" | "screen" | "rtmp" | "other";

export type ParticipantInfo = { participantId: string, identity: string, 
/**
 * Display name, from the token's `name` claim or the server API.
 */
name?: string, 
/**
 * Application data (opaque to Sluice), from the token's `metadata` claim or the server
 * API.
 */
metadata?: string, };

export type PublicationInfo = { publicationId: string, participantId: string, kind: MediaKind, source: TrackSource, name?: string, 
/**
 * Negotiated codec, e.g. `video/VP8`, `audio/opus`.
 */
codec: string, 
/**
 * Simulcast layers by `rid`, lowest first; empty for a single encoding.
 */
rids?: Array<string>, 
/**
 * `true` while the publication is muted (absent otherwise).
 */
muted?: boolean, };

export type SubscriptionInfo = { 
/**
 * The id `subscribed` gave it.
 */
subscriptionId: string, 
/**
 * The publication it receives.
 */
publicationId: string, };

export type Layer = { spatial: number, temporal: number, };

export type LayerChangeReason = "requested" | "bandwidth" | "layerUnavailable" | "switched";

export type DataRejection = "tooLarge" | "rateLimited" | "invalid";

export type SubscriptionEndReason = "permissionRevoked";

export type LayerActivity = { rid: string, active: boolean, };

export type SpeakerInfo = { 
/**
 * The speaking participant.
 */
participantId: string, 
/**
 * How loud, 0.0..=1.0 on the scale of WebRTC's `audioLevel`: linear amplitude, 1.0 is
 * 0 dBov, 0.5 about -6 dBov, 0.1 -20 dBov; the mean of the speech (not the pauses) of the
 * last 600 ms, four decimals.
 */
level: number, };

/** WebSocket close codes of the protocol. */
export const CloseCode = {
  /** The session ended as asked (`leave`, or the client closed). */
  Normal: 1000,
  /** The server is going away, or ended the participant. */
  GoingAway: 1001,
  /** A policy was broken (join timeout, message flood): do not reconnect. */
  Policy: 1008,
  /** A message over the size limit: do not reconnect. */
  TooBig: 1009,
  /** Sent by the SDK itself when its heartbeat gets no answer. */
  HeartbeatTimeout: 4000,
  /** Another connection resumed this participant, or a newer join of its identity replaced it: do not reconnect. */
  Replaced: 4001,
  /** Test hook only: dropped as a network failure would. */
  DroppedByTestHook: 4002,
  /** The application removed the participant or closed the room: do not reconnect. */
  Removed: 4003,
} as const;

/** One of the protocol's close codes. */
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];
