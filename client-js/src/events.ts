/**
 * The names and payloads of the events a `Room` emits, and its state and disconnect causes.
 */
import type { DataReceivedEvent, DataRejectedEvent } from './data.js';
import type { SluiceError } from './errors.js';
import type {
  LayerActivity,
  LayerChangeReason,
  Layer,
  ParticipantInfo,
  PublicationInfo,
  SpeakerInfo,
} from './protocol.gen.js';
import type { RemoteTrack, Subscription } from './subscription.js';

/** The states of a `Room` (`room.state`); `connectionStateChanged` reports each change. */
export const RoomState = {
  /** Created; `connect` not called yet. */
  Idle: 'idle',
  /** `connect` is opening the socket and joining. */
  Connecting: 'connecting',
  /** Joined: requests can be made. */
  Connected: 'connected',
  /** The signaling connection dropped; the SDK is resuming the session (media may still flow). */
  Reconnecting: 'reconnecting',
  /** The session ended (or `connect` failed); the room cannot be used again. */
  Disconnected: 'disconnected',
} as const;
/** A state of a `Room`. */
export type RoomState = (typeof RoomState)[keyof typeof RoomState];

/**
 * The names of the events a `Room` emits (`room.on(RoomEvent.LayersChanged, …)`); `RoomEvents`
 * has their listeners.
 */
export const RoomEvent = {
  /** Another participant entered the room (see `RoomEvents.participantJoined`). */
  ParticipantJoined: 'participantJoined',
  /** A participant's name or metadata changed (see `RoomEvents.participantUpdated`). */
  ParticipantUpdated: 'participantUpdated',
  /** Another participant left the room (see `RoomEvents.participantLeft`). */
  ParticipantLeft: 'participantLeft',
  /** Another participant's publication became available (see `RoomEvents.publicationAdded`). */
  PublicationAdded: 'publicationAdded',
  /** A publication ended (see `RoomEvents.publicationRemoved`). */
  PublicationRemoved: 'publicationRemoved',
  /** A subscription's media arrived (see `RoomEvents.trackSubscribed`). */
  TrackSubscribed: 'trackSubscribed',
  /** A subscription's media ended (see `RoomEvents.trackUnsubscribed`). */
  TrackUnsubscribed: 'trackUnsubscribed',
  /** The server changed a subscription's simulcast layer (see `RoomEvents.layersChanged`). */
  LayersChanged: 'layersChanged',
  /** Dynacast changed a local publication's active layers (see `RoomEvents.publisherLayersApplied`). */
  PublisherLayersApplied: 'publisherLayersApplied',
  /** Who speaks now changed (see `RoomEvents.activeSpeakersChanged`). */
  ActiveSpeakersChanged: 'activeSpeakersChanged',
  /** A publication was muted (see `RoomEvents.publicationMuted`). */
  PublicationMuted: 'publicationMuted',
  /** A muted publication was unmuted (see `RoomEvents.publicationUnmuted`). */
  PublicationUnmuted: 'publicationUnmuted',
  /** A publication stopped sending media (see `RoomEvents.publicationStalled`). */
  PublicationStalled: 'publicationStalled',
  /** A stalled publication sends media again (see `RoomEvents.publicationResumed`). */
  PublicationResumed: 'publicationResumed',
  /** A data message arrived (see `RoomEvents.dataReceived`). */
  DataReceived: 'dataReceived',
  /** The server refused local data messages (see `RoomEvents.dataRejected`). */
  DataRejected: 'dataRejected',
  /** A failure that belongs to no call (see `RoomEvents.error`). */
  Error: 'error',
  /** The signaling connection dropped; the SDK is reconnecting. */
  Reconnecting: 'reconnecting',
  /** The session is back after `reconnecting`. */
  Reconnected: 'reconnected',
  /** `room.state` changed. */
  ConnectionStateChanged: 'connectionStateChanged',
  /** The session ended (see `RoomEvents.disconnected`). */
  Disconnected: 'disconnected',
} as const;

/** Why the session ended. */
export const DisconnectCause = {
  /** `disconnect()` was called. */
  ClientLeft: 'clientLeft',
  /** The server closed the connection in a way reconnecting cannot fix (or reconnect is off). */
  ServerClosed: 'serverClosed',
  /** Another connection resumed this session (close code 4001). */
  Replaced: 'replaced',
  /** The application removed this participant or closed the room (close code 4003). */
  Removed: 'removed',
  /** Reconnecting did not succeed within `reconnectTimeoutMs`, or the server refused the rejoin. */
  ReconnectFailed: 'reconnectFailed',
} as const;
export type DisconnectCause = (typeof DisconnectCause)[keyof typeof DisconnectCause];

/** The `reconnecting` event: how the connection dropped. */
export interface ReconnectingEvent {
  /** Close code of the connection that dropped. */
  code: number;
  /** Close reason of the connection that dropped. */
  reason: string;
}

/** The `reconnected` event: how the session came back. */
export interface ReconnectedEvent {
  /**
   * True: the server resumed the session (same participant, publications and subscriptions).
   * False: it had forgotten it, so the SDK joined again, republished the local tracks and
   * resubscribed; publications and subscriptions then have new ids and objects.
   */
  resumed: boolean;
  /** Connection attempts it took. */
  attempts: number;
  /** From the drop to this event. */
  durationMs: number;
  /**
   * The signaling URL the session is on now: another node's after a failover in a cluster
   * (the server's `fallbackUrls`), else the one it connected to.
   */
  url: string;
}

/** `participantLeft`: another participant left the room. */
export interface ParticipantLeftEvent {
  /** The participant that left. */
  participantId: string;
  /** The participant as the room knew it, if it did. */
  participant: ParticipantInfo | undefined;
}

/** `publicationRemoved`: a publication ended. */
export interface PublicationRemovedEvent {
  /** The publication that ended. */
  publicationId: string;
  /** Its publisher. */
  participantId: string;
  /** The publication as the room knew it, if it did. */
  publication: PublicationInfo | undefined;
}

/** `trackUnsubscribed`: a subscription that had its media ended. */
export interface TrackUnsubscribedEvent {
  /** The ended subscription. */
  subscription: Subscription;
  /** The track that stopped receiving. */
  track: MediaStreamTrack;
}

/** `trackSubscribed`: the media of a subscription arrived (its track and a stream holding it). */
export interface TrackSubscribedEvent extends RemoteTrack {
  /** The subscription whose media arrived. */
  subscription: Subscription;
}

/** `layersChanged`: the server changed (or plans to change) a subscription's simulcast layer. */
export interface LayersChangedEvent {
  /** The subscription (its `currentLayer` and `targetLayer` are updated already). */
  subscription: Subscription;
  /** Its id. */
  subscriptionId: string;
  /** The layer forwarded now; absent while nothing is forwarded. */
  current: Layer | undefined;
  /** The layer the server switches to (equal to `current` once a switch completed). */
  target: Layer;
  /** Why: asked for, the bandwidth, a layer the publisher stopped sending, or a switch completed. */
  reason: LayerChangeReason;
}

/** `publisherLayersApplied`: dynacast set which encodings of a local publication are sent. */
export interface PublisherLayersAppliedEvent {
  /** The local publication. */
  publicationId: string;
  /** The encodings of the publication's sender after the change, by rid. */
  layers: LayerActivity[];
}

/** `activeSpeakersChanged`: the participants speaking now. */
export interface ActiveSpeakersChangedEvent {
  /** Who speaks now (the local participant included), loudest first; empty when nobody does. */
  speakers: SpeakerInfo[];
}

/**
 * `publicationStalled` and `publicationResumed` (a publication's media stopped or returned),
 * `publicationMuted` and `publicationUnmuted`.
 */
export interface PublicationLivenessEvent {
  /** The publication. */
  publicationId: string;
  /** Its publisher. */
  participantId: string;
  /** The publication as the room knows it, if it does. */
  publication: PublicationInfo | undefined;
}

/** `disconnected`: the session ended. */
export interface DisconnectedEvent {
  /** True when `disconnect()` ended the session. */
  clientInitiated: boolean;
  /** WebSocket close code. */
  code: number;
  /** WebSocket close reason, or why reconnecting gave up. */
  reason: string;
  /** Why the session ended. */
  cause: DisconnectCause;
}

/** The listener of each event a `Room` emits, by event name (`room.on(name, listener)`). */
export type RoomEvents = {
  /** Another participant entered the room. */
  participantJoined: (participant: ParticipantInfo) => void;
  /**
   * A participant's `name` or `metadata` changed (the application's backend set it through the
   * server API); the local participant's too (`room.localParticipant` is updated first).
   */
  participantUpdated: (participant: ParticipantInfo) => void;
  /** Another participant left the room. */
  participantLeft: (event: ParticipantLeftEvent) => void;
  /** Another participant's publication became available (own publications come from `publish`). */
  publicationAdded: (publication: PublicationInfo) => void;
  /** A publication ended, another participant's or (when the server ended it) the local one's. */
  publicationRemoved: (event: PublicationRemovedEvent) => void;
  /** The media of a subscription arrived. */
  trackSubscribed: (event: TrackSubscribedEvent) => void;
  /**
   * A subscription that had its media ended (unsubscribed, publication removed, the
   * participant's `canSubscribe` revoked by the application, disconnect).
   */
  trackUnsubscribed: (event: TrackUnsubscribedEvent) => void;
  /** The server changed (or plans to change) the simulcast layer of a subscription. */
  layersChanged: (event: LayersChangedEvent) => void;
  /**
   * Dynacast: the server said which simulcast layers of a local publication anyone watches,
   * and the SDK has set `active` on the sender's encodings accordingly.
   */
  publisherLayersApplied: (event: PublisherLayersAppliedEvent) => void;
  /** The server's list of active speakers changed (see `room.activeSpeakers`). */
  activeSpeakersChanged: (event: ActiveSpeakersChangedEvent) => void;
  /**
   * A publication sent no media for 1.5 s: its publisher's process, network or encoder is gone
   * (see `room.stalledPublications`). It stays published; its picture is frozen until
   * `publicationResumed` or `publicationRemoved`.
   */
  publicationStalled: (event: PublicationLivenessEvent) => void;
  /**
   * A publication was muted, by its publisher (`mute()`) or by the application; the server
   * forwards nothing of it until `publicationUnmuted`. `publication.muted` is then `true`.
   * For a local publication muted by the application, its track is disabled too.
   */
  publicationMuted: (event: PublicationLivenessEvent) => void;
  /** A muted publication was unmuted. */
  publicationUnmuted: (event: PublicationLivenessEvent) => void;
  /** A stalled publication sends media again. */
  publicationResumed: (event: PublicationLivenessEvent) => void;
  /**
   * A data message from another participant (`room.publishData`); the local participant
   * receives only once its data channels are open (`connect` with `data: true`, or after its
   * first `publishData`).
   */
  dataReceived: (event: DataReceivedEvent) => void;
  /**
   * The server delivered some of the local participant's data messages to nobody: too large,
   * over its rate, or malformed. At most four a second; `dropped` counts the refusals since the
   * previous one.
   */
  dataRejected: (event: DataRejectedEvent) => void;
  /** A failure that belongs to no call: a server error without requestId, a failed server offer. */
  error: (error: SluiceError) => void;
  /**
   * The signaling connection dropped and the SDK is reconnecting (with backoff: 0, 1, 2, 4, 8,
   * 16, 30, 30… s ±jitter). Requests made meanwhile reject with `ConnectionError`.
   */
  reconnecting: (event: ReconnectingEvent) => void;
  /** The session is back after `reconnecting`: resumed, or rejoined when resume was refused. */
  reconnected: (event: ReconnectedEvent) => void;
  /** `room.state` changed. */
  connectionStateChanged: (state: RoomState, previous: RoomState) => void;
  /** The session ended; emitted once, only after `connect` succeeded. */
  disconnected: (event: DisconnectedEvent) => void;
};
