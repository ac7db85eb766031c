/**
 * The names and payloads of the events a `Room` emits, and its state and disconnect causes.
 */
import type { SluiceError } from './errors.js';
import type {
  LayerActivity,
  LayerChangeReason,
  LayerRef,
  ParticipantInfo,
  PublicationInfo,
  SpeakerInfo,
} from './protocol.gen.js';
import type { RemoteTrack, Subscription } from './subscription.js';

/** The states of a `Room` (`room.state`); `connectionStateChanged` reports each change. */
export const RoomState = {
  Idle: 'idle',
  Connecting: 'connecting',
  Connected: 'connected',
  /** The signaling connection dropped; the SDK is resuming the session (media may still flow). */
  Reconnecting: 'reconnecting',
  Disconnected: 'disconnected',
} as const;
/** A state of a `Room`. */
export type RoomState = (typeof RoomState)[keyof typeof RoomState];

/**
 * The names of the events a `Room` emits (`room.on(RoomEvent.LayersChanged, …)`); `RoomEvents`
 * has their listeners.
 */
export const RoomEvent = {
  ParticipantJoined: 'participantJoined',
  ParticipantLeft: 'participantLeft',
  PublicationAdded: 'publicationAdded',
  PublicationRemoved: 'publicationRemoved',
  TrackSubscribed: 'trackSubscribed',
  /** A subscription's media ended (see `RoomEvents.trackUnsubscribed`). */
  TrackUnsubscribed: 'trackUnsubscribed',
  LayersChanged: 'layersChanged',
  PublisherLayersApplied: 'publisherLayersApplied',
  /** Who speaks now changed (see `RoomEvents.activeSpeakersChanged`). */
  ActiveSpeakersChanged: 'activeSpeakersChanged',
  Error: 'error',
  /** The signaling connection dropped; the SDK is reconnecting. */
  Reconnecting: 'reconnecting',
  /** The session is back after `reconnecting`. */
  Reconnected: 'reconnected',
  /** `room.state` changed. */
  ConnectionStateChanged: 'connectionStateChanged',
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
}

export interface ParticipantLeftEvent {
  participantId: string;
  /** The participant as the room knew it, if it did. */
  participant: ParticipantInfo | undefined;
}

export interface PublicationRemovedEvent {
  publicationId: string;
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

export interface TrackSubscribedEvent extends RemoteTrack {
  subscription: Subscription;
}

export interface LayersChangedEvent {
  subscription: Subscription;
  subscriptionId: string;
  /** The layer forwarded now; absent while nothing is forwarded. */
  current: LayerRef | undefined;
  /** The layer the server switches to (equal to `current` once a switch completed). */
  target: LayerRef;
  reason: LayerChangeReason;
}

export interface PublisherLayersAppliedEvent {
  publicationId: string;
  /** The encodings of the publication's sender after the change, by rid. */
  layers: LayerActivity[];
}

/** `activeSpeakersChanged`: the participants speaking now. */
export interface ActiveSpeakersChangedEvent {
  /** Who speaks now (the local participant included), loudest first; empty when nobody does. */
  speakers: SpeakerInfo[];
}

export interface DisconnectedEvent {
  /** True when `disconnect()` ended the session. */
  clientInitiated: boolean;
  /** WebSocket close code. */
  code: number;
  reason: string;
  /** Why the session ended. */
  cause: DisconnectCause;
}

export type RoomEvents = {
  /** Another participant entered the room. */
  participantJoined: (participant: ParticipantInfo) => void;
  participantLeft: (event: ParticipantLeftEvent) => void;
  /** Another participant's publication became available (own publications come from `publish`). */
  publicationAdded: (publication: PublicationInfo) => void;
  /** A publication ended, another participant's or (when the server ended it) the local one's. */
  publicationRemoved: (event: PublicationRemovedEvent) => void;
  /** The media of a subscription arrived. */
  trackSubscribed: (event: TrackSubscribedEvent) => void;
  /** A subscription that had its media ended (unsubscribed, publication removed, disconnect). */
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
