/** @sluice/client — browser SDK for the Sluice SFU. */
export { Room, RoomEvent, RoomState } from './room.js';
export type {
  ConnectOptions,
  DisconnectedEvent,
  JoinInfo,
  LocalPublication,
  ParticipantLeftEvent,
  PublicationRemovedEvent,
  PublishOptions,
  RoomEvents,
  RoomOptions,
  TrackSubscribedEvent,
} from './room.js';
export { Subscription } from './subscription.js';
export type { RemoteTrack } from './subscription.js';
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
  MediaKind,
  ParticipantInfo,
  PeerTarget,
  PublicationInfo,
  RequestId,
  ServerMessage,
  TrackInfo,
  TrackSource,
} from './protocol.gen.js';
