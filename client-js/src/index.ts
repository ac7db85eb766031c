/** @sluice/client — browser SDK for the Sluice SFU. */
export { DisconnectCause, Room, RoomEvent, RoomState, SIMULCAST_ENCODINGS } from './room.js';
export { MAX_RECONNECT_DELAY_MS, RECONNECT_SCHEDULE_MS, reconnectDelayMs } from './reconnect.js';
export type {
  ActiveSpeakersChangedEvent,
  ConnectOptions,
  DisconnectedEvent,
  JoinInfo,
  LayersChangedEvent,
  LocalPublication,
  ParticipantLeftEvent,
  PublicationRemovedEvent,
  PublisherLayersAppliedEvent,
  ReconnectedEvent,
  ReconnectingEvent,
  PublishOptions,
  RoomEvents,
  RoomOptions,
  SubscribeOptions,
  TrackSubscribedEvent,
  TrackUnsubscribedEvent,
  VideoCodec,
} from './room.js';
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
  ErrorCode,
  IceCandidate,
  LayerActivity,
  LayerChangeReason,
  LayerRef,
  MediaKind,
  ParticipantInfo,
  PeerTarget,
  PublicationInfo,
  RequestId,
  SubscriptionInfo,
  ServerMessage,
  SpeakerInfo,
  TrackInfo,
  TrackSource,
} from './protocol.gen.js';
