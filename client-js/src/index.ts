/** @sluice/client — browser SDK for the Sluice SFU. */
export { Room, RoomEvent, RoomState, SIMULCAST_ENCODINGS } from './room.js';
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
  PublishOptions,
  RoomEvents,
  RoomOptions,
  TrackSubscribedEvent,
  VideoCodec,
} from './room.js';
export { Subscription } from './subscription.js';
export type { PreferredLayer, RemoteTrack } from './subscription.js';
export {
  ConnectionError,
  ConnectionErrorReason,
  NegotiationError,
  ServerError,
  SluiceError,
  SubscriptionEndedError,
} from './errors.js';
export { TypedEmitter } from './emitter.js';
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
  ServerMessage,
  SpeakerInfo,
  TrackInfo,
  TrackSource,
} from './protocol.gen.js';
