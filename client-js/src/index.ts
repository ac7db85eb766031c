/** @sluice/client — browser SDK for the Sluice SFU. */
export { Room } from './room.js';
export type { ConnectOptions, JoinInfo, RoomOptions } from './room.js';
export { DisconnectCause, RoomEvent, RoomState } from './events.js';
export type {
  ActiveSpeakersChangedEvent,
  DisconnectedEvent,
  LayersChangedEvent,
  ParticipantLeftEvent,
  PublicationLivenessEvent,
  PublicationRemovedEvent,
  PublisherLayersAppliedEvent,
  ReconnectedEvent,
  ReconnectingEvent,
  RoomEvents,
  TrackSubscribedEvent,
  TrackUnsubscribedEvent,
} from './events.js';
export { DATA_MESSAGE_MAX_BYTES, DataError } from './data.js';
export type { DataPublishOptions, DataReceivedEvent, DataRejectedEvent } from './data.js';
export { SIMULCAST_ENCODINGS } from './publisher.js';
export type { LocalPublication, PublishOptions, VideoCodec } from './publisher.js';
export type { SubscribeOptions } from './subscriber.js';
export { MAX_RECONNECT_DELAY_MS, RECONNECT_SCHEDULE_MS, reconnectDelayMs } from './reconnect.js';
export { Subscription } from './subscription.js';
export type { PreferredLayer, RemoteTrack } from './subscription.js';
export { DEFAULT_DEBOUNCE_MS, DEFAULT_SOURCE_WIDTH, UPSCALE_TOLERANCE } from './adaptive.js';
export type { AdaptiveStreamOptions } from './adaptive.js';
export {
  ConnectionError,
  ConnectionErrorReason,
  NegotiationError,
  ServerError,
  SluiceError,
  SubscriptionEndedError,
} from './errors.js';
export { TypedEmitter } from './emitter.js';
export type { EventMap } from './emitter.js';
export type {
  ClientMessage,
  DataRejection,
  ErrorCode,
  IceCandidate,
  LayerActivity,
  LayerChangeReason,
  Layer,
  MediaKind,
  ParticipantInfo,
  PeerRole,
  PublicationInfo,
  RequestId,
  SubscriptionEndReason,
  SubscriptionInfo,
  ServerMessage,
  SpeakerInfo,
  TrackInfo,
  TrackSource,
} from './protocol.gen.js';
export { CloseCode } from './protocol.gen.js';

import type { Layer, PeerRole } from './protocol.gen.js';
/** @deprecated Renamed {@link Layer}; this alias goes in the next major version. */
export type LayerRef = Layer;
/** @deprecated Renamed {@link PeerRole}; this alias goes in the next major version. */
export type PeerTarget = PeerRole;
