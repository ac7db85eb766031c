import { TypedEmitter } from './emitter.js';
import { ConnectionError, ConnectionErrorReason, NegotiationError, ServerError, SluiceError } from './errors.js';
import { Peer } from './peer.js';
import type {
  IceCandidate,
  LayerActivity,
  LayerChangeReason,
  LayerRef,
  MediaKind,
  ParticipantInfo,
  PeerTarget,
  PublicationInfo,
  ServerMessage,
  SpeakerInfo,
  TrackInfo,
  TrackSource,
} from './protocol.gen.js';
import { DEFAULT_RECONNECT_JITTER, NO_RECONNECT_CLOSE_CODES, reconnectDelayMs } from './reconnect.js';
import { type CloseInfo, type ServerEvent, SignalClient } from './signal.js';
import { msidTrackIdsByMid } from './sdp.js';
import { type PreferredLayer, type RemoteTrack, Subscription } from './subscription.js';

export interface RoomOptions {
  /** Opens the signaling WebSocket. Default: `new WebSocket(url)`. */
  webSocketFactory?: (url: string) => WebSocket;
  /** Creates the publisher and subscriber connections. Default: `new RTCPeerConnection(config)`. */
  peerConnectionFactory?: (config: RTCConfiguration) => RTCPeerConnection;
  /** How long to wait for the socket to open and for each response. Default: 10 000 ms. */
  requestTimeoutMs?: number;
  /** Passed to the peer connection factory. Default: no ICE servers (the SFU is reachable directly). */
  rtcConfiguration?: RTCConfiguration;
  /**
   * Reconnect after the signaling connection drops (see `RoomEvent.Reconnecting`). Default: true.
   * When false, a drop ends the session (`disconnected`).
   */
  reconnect?: boolean;
  /** Give up reconnecting after this long and emit `disconnected`. Default: 120 000 ms. */
  reconnectTimeoutMs?: number;
  /** Spread of each reconnection delay, 0–1 (±20 % by default). */
  reconnectJitter?: number;
  /**
   * Heartbeat: a `ping` this often; one unanswered for as long counts as a dropped connection
   * (then the SDK reconnects). A network failure closes nothing, so without it a dead
   * connection is noticed only when TCP gives up. Default: 5 000 ms; 0 turns it off.
   */
  heartbeatIntervalMs?: number;
}

/** A video codec the publisher can prefer. */
export type VideoCodec = 'vp8' | 'h264';

export interface PublishOptions {
  /** Source announced for audio tracks. Default: `microphone`. */
  audioSource?: TrackSource;
  /** Source announced for video tracks. Default: `camera`. */
  videoSource?: TrackSource;
  /** A human-readable name announced for every track of this call. */
  name?: string;
  /**
   * Send video as three simulcast encodings (`SIMULCAST_ENCODINGS`: rids `q`, `h`, `f` at ¼, ½
   * and full resolution), so the server can give each subscriber the layer it wants and its
   * downlink allows. Default: `true` when the video source is `camera`, `false` otherwise.
   */
  simulcast?: boolean;
  /**
   * The video codec to offer first (`setCodecPreferences`); for H.264 the packetization-mode=1
   * constrained-baseline profile (42e01f) is preferred. Default: the browser's order.
   * Rejects with `NegotiationError` when the browser cannot send it.
   */
  codec?: VideoCodec;
}

/**
 * The encodings of a simulcast video track, lowest resolution first: the spatial layer index
 * the server reports (`LayerRef.spatial`) is the index in this list.
 */
export const SIMULCAST_ENCODINGS: readonly Readonly<RTCRtpEncodingParameters & { rid: string }>[] = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', maxBitrate: 1_500_000 },
];

export interface ConnectOptions {
  /**
   * The room the caller expects the token to be for; the server refuses the join
   * (`unauthorized`) when the token names another room.
   */
  room?: string;
}

/** A publication of the local participant. */
/** A local track being published, as returned by `publish`. */
export interface LocalPublication extends PublicationInfo {
  /** The track being sent (the latest one given to `replaceTrack`). */
  readonly track: MediaStreamTrack;
  /** Whether the track is muted: it then sends silence or black frames. */
  readonly muted: boolean;
  /** Mutes the track (`enabled = false`): the publication stays, the media goes quiet. */
  mute(): void;
  /** Unmutes the track. */
  unmute(): void;
  /** Sends another track of the same kind instead (a camera switch) without renegotiating. */
  replaceTrack(track: MediaStreamTrack): Promise<void>;
  /** Stops publishing it (as `room.unpublish`). */
  unpublish(): Promise<void>;
}

/** What `connect` resolves with: the `joined` response. */
export type JoinInfo = Omit<Extract<ServerMessage, { type: 'joined' }>, 'type' | 'requestId'>;

export const RoomState = {
  Idle: 'idle',
  Connecting: 'connecting',
  Connected: 'connected',
  /** The signaling connection dropped; the SDK is resuming the session (media may still flow). */
  Reconnecting: 'reconnecting',
  Disconnected: 'disconnected',
} as const;
export type RoomState = (typeof RoomState)[keyof typeof RoomState];

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

/** Options of `room.subscribe`. */
export interface SubscribeOptions {
  /** The layer to ask for at once (as `subscription.setPreferredLayer`); a number is the spatial layer. */
  preferredLayer?: number | PreferredLayer;
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

const DEFAULT_RECONNECT_TIMEOUT_MS = 120_000;

/** What `publish` was called with, kept to publish the tracks again after a rejoin. */
interface PublishCall {
  stream: MediaStream;
  options: PublishOptions;
}

type OwnPublication = LocalPublication & { sender: RTCRtpSender; call: PublishCall; sending: MediaStreamTrack };

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_HEARTBEAT_INTERVAL_MS = 5_000;

/**
 * A session in one Sluice room: one WebSocket for signaling, one publisher RTCPeerConnection
 * (client offers) and one subscriber RTCPeerConnection (server offers). A Room is used once:
 * after `disconnect()` create a new one.
 */
export class Room extends TypedEmitter<RoomEvents> {
  private signal: SignalClient;
  private readonly webSocketFactory: (url: string) => WebSocket;
  private readonly requestTimeoutMs: number;
  private readonly reconnectEnabled: boolean;
  private readonly reconnectTimeoutMs: number;
  private readonly heartbeatIntervalMs: number;
  private readonly reconnectJitter: number;
  /** Where and how the session was joined, to reconnect. */
  private session: { url: string; token: string; options: ConnectOptions; resumeToken: string } | undefined;
  /** Cancels the wait before the next reconnection attempt. */
  private cancelReconnectWait: (() => void) | undefined;
  private readonly peerConnectionFactory: (config: RTCConfiguration) => RTCPeerConnection;
  private readonly rtcConfiguration: RTCConfiguration;
  private roomState: RoomState = RoomState.Idle;
  private leaving = false;
  /** A resume happened: later membership events may repeat what its room state showed. */
  private resumedOnce = false;
  private publisher: Peer | undefined;
  private subscriber: Peer | undefined;
  private local: ParticipantInfo | undefined;
  private roomName: string | undefined;
  private readonly remoteParticipants = new Map<string, ParticipantInfo>();
  private readonly remotePublications = new Map<string, PublicationInfo>();
  private readonly ownPublications = new Map<string, OwnPublication>();
  private readonly activeSubscriptions = new Map<string, Subscription>();
  /** Tracks that arrived before their `subscribed` response, by stream id (= subscription id). */
  /** Subscriber transceivers' mids → subscription ids, from the server's offers. */
  private readonly subscriptionByMid = new Map<string, string>();
  private readonly unclaimedTracks = new Map<string, { remote: RemoteTrack; receiver: RTCRtpReceiver }>();
  /** The latest `layersChanged` of subscriptions whose `subscribed` response has not come yet. */
  private readonly unclaimedLayers = new Map<string, Extract<ServerEvent, { type: 'layersChanged' }>>();
  /** Dynacast: the encodings' `active` flags last applied per local publication. */
  private readonly appliedLayers = new Map<string, LayerActivity[]>();
  /** Dynacast: `publisherLayers` not applied yet, merged per publication (rid → active). */
  private readonly pendingLayers = new Map<string, Map<string, boolean>>();
  private speakers: readonly SpeakerInfo[] = [];

  constructor(options: RoomOptions = {}) {
    super();
    this.webSocketFactory = options.webSocketFactory ?? ((url: string) => new WebSocket(url));
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.reconnectEnabled = options.reconnect ?? true;
    this.reconnectTimeoutMs = options.reconnectTimeoutMs ?? DEFAULT_RECONNECT_TIMEOUT_MS;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    this.reconnectJitter = options.reconnectJitter ?? DEFAULT_RECONNECT_JITTER;
    this.peerConnectionFactory =
      options.peerConnectionFactory ?? ((config: RTCConfiguration) => new RTCPeerConnection(config));
    this.rtcConfiguration = options.rtcConfiguration ?? {};
    this.signal = this.newSignal();
  }

  /** A signaling client for one socket; a stale one's events and close are ignored. */
  private newSignal(): SignalClient {
    const signal: SignalClient = new SignalClient(this.webSocketFactory, this.requestTimeoutMs, {
      onEvent: (event) => {
        if (signal === this.signal) this.handleEvent(event);
      },
      onUnsolicitedError: (error) => {
        if (signal === this.signal) this.reportError(error);
      },
      onClose: (info) => {
        if (signal === this.signal) this.handleClose(info);
      },
    });
    return signal;
  }

  /** The state, read afresh (TypeScript would narrow `this.roomState` across awaits). */
  private stateNow(): RoomState {
    return this.roomState;
  }

  private setState(state: RoomState): void {
    const previous = this.roomState;
    if (previous === state) return;
    this.roomState = state;
    if (state === RoomState.Connected) this.signal.startHeartbeat(this.heartbeatIntervalMs);
    this.emit('connectionStateChanged', state, previous);
  }

  get state(): RoomState {
    return this.roomState;
  }

  /** The room's name, once joined. */
  get name(): string | undefined {
    return this.roomName;
  }

  /** The local participant, once joined. */
  get localParticipant(): ParticipantInfo | undefined {
    return this.local;
  }

  /** The other participants, by participant id. */
  get participants(): ReadonlyMap<string, ParticipantInfo> {
    return this.remoteParticipants;
  }

  /** The other participants' publications, by publication id. */
  get publications(): ReadonlyMap<string, PublicationInfo> {
    return this.remotePublications;
  }

  /** The local participant's publications, by publication id. */
  get localPublications(): ReadonlyMap<string, LocalPublication> {
    return this.ownPublications;
  }

  /** Active subscriptions, by subscription id. */
  get subscriptions(): ReadonlyMap<string, Subscription> {
    return this.activeSubscriptions;
  }

  /**
   * Dynacast: the `active` flags of a local simulcast publication's encodings as the SDK last
   * applied them on a `publisherLayers` event; undefined until the first one.
   */
  publisherLayers(publicationId: string): readonly LayerActivity[] | undefined {
    return this.appliedLayers.get(publicationId);
  }

  /**
   * The participants speaking now (the local participant included), loudest first, each with a
   * level in 0..1 (linear, as WebRTC's `audioLevel`), as of the last `activeSpeakersChanged`.
   */
  get activeSpeakers(): readonly SpeakerInfo[] {
    return this.speakers;
  }

  /** The publisher or subscriber RTCPeerConnection, once created (for statistics and diagnostics). */
  peerConnection(target: PeerTarget): RTCPeerConnection | undefined {
    return (target === 'publisher' ? this.publisher : this.subscriber)?.pc;
  }

  /**
   * Opens the signaling connection to `url` (e.g. `wss://sfu.example/ws`) and joins the room the
   * token names. Rejects with `ServerError` (with its `code`) or `ConnectionError`.
   */
  async connect(url: string, token: string, options: ConnectOptions = {}): Promise<JoinInfo> {
    if (this.roomState !== RoomState.Idle) {
      throw new ConnectionError(ConnectionErrorReason.InvalidState, `connect() on a ${this.roomState} room`);
    }
    this.setState(RoomState.Connecting);
    try {
      await this.signal.connect(url);
      const joined = await this.signal.request(
        options.room === undefined ? { type: 'join', token } : { type: 'join', token, room: options.room },
      );
      if (this.stateNow() !== RoomState.Connecting) {
        throw new ConnectionError(ConnectionErrorReason.Closed, 'disconnected while joining');
      }
      this.roomName = joined.room;
      this.local = joined.participant;
      this.session = { url, token, options, resumeToken: joined.resumeToken };
      for (const participant of joined.participants) {
        if (participant.participantId !== joined.participant.participantId) {
          this.remoteParticipants.set(participant.participantId, participant);
        }
      }
      for (const publication of joined.publications) {
        if (publication.participantId !== joined.participant.participantId) {
          this.remotePublications.set(publication.publicationId, publication);
        }
      }
      this.setState(RoomState.Connected);
      const { type: _type, requestId: _requestId, ...info } = joined;
      return info;
    } catch (err) {
      this.teardown(undefined);
      throw err;
    }
  }

  /**
   * Publishes every track of `stream` through the publisher connection (one sendonly transceiver
   * each, one offer for all) and resolves with the publications the server created.
   */
  async publish(stream: MediaStream, options: PublishOptions = {}): Promise<LocalPublication[]> {
    this.assertConnected('publish');
    return this.publishTracks(stream, stream.getTracks(), options);
  }

  private async publishTracks(
    stream: MediaStream,
    tracks: MediaStreamTrack[],
    options: PublishOptions,
  ): Promise<LocalPublication[]> {
    if (tracks.length === 0) return [];
    const peer = this.ensurePeer('publisher');
    return peer.negotiate(async () => {
      this.assertConnected('publish');
      const added = tracks.map((track) => {
        const simulcast = track.kind === 'video' && (options.simulcast ?? videoSource(options) === 'camera');
        const init: RTCRtpTransceiverInit = { direction: 'sendonly', streams: [stream] };
        if (simulcast) init.sendEncodings = SIMULCAST_ENCODINGS.map((encoding) => ({ ...encoding }));
        const transceiver = peer.pc.addTransceiver(track, init);
        return { track, transceiver, rids: simulcast ? SIMULCAST_ENCODINGS.map((e) => e.rid) : undefined };
      });
      const rollback = async (): Promise<void> => {
        for (const { transceiver } of added) {
          try {
            peer.pc.removeTrack(transceiver.sender);
          } catch {
            // The connection may already be closed: nothing left to undo.
          }
        }
        if (peer.pc.signalingState === 'have-local-offer') {
          await peer.pc.setLocalDescription({ type: 'rollback' }).catch(() => undefined);
        }
      };
      let infos: TrackInfo[];
      let sdp: string;
      try {
        if (options.codec !== undefined) {
          for (const { track, transceiver } of added) {
            if (track.kind === 'video') preferCodec(transceiver, options.codec);
          }
        }
        const offer = await peer.pc.createOffer();
        await peer.pc.setLocalDescription(offer);
        sdp = peer.pc.localDescription?.sdp ?? offer.sdp ?? '';
        infos = added.map(({ track, transceiver, rids }) => {
          if (transceiver.mid === null) throw new NegotiationError('publisher: transceiver has no mid after the offer');
          return trackInfo(transceiver.mid, track, options, rids);
        });
      } catch (err) {
        await rollback();
        throw err instanceof SluiceError ? err : new NegotiationError('publisher: cannot create the offer', { cause: err });
      }
      const request = this.signal.request({ type: 'publish', sdp, tracks: infos });
      peer.localDescriptionSent();
      let published: Extract<ServerMessage, { type: 'published' }>;
      try {
        published = await request;
      } catch (err) {
        await rollback();
        throw err;
      }
      try {
        await peer.setRemoteDescription({ type: 'answer', sdp: published.sdp });
      } catch (err) {
        throw new NegotiationError('publisher: the server answer was rejected', { cause: err });
      }
      return this.claimPublications(published.publications, added, infos, { stream, options });
    });
  }

  /** Stops publishing one of the local publications. */
  async unpublish(publicationId: string): Promise<void> {
    this.assertConnected('unpublish');
    await this.signal.request({ type: 'unpublish', publicationId });
    const own = this.ownPublications.get(publicationId);
    if (own === undefined) return;
    this.ownPublications.delete(publicationId);
    this.appliedLayers.delete(publicationId);
    await own.sender.replaceTrack(null).catch(() => undefined);
  }

  /**
   * Subscribes to a publication. Resolves once the server accepted; the media follows with the
   * server's next offer (`subscription.waitForTrack()`, or the `trackSubscribed` event).
   */
  async subscribe(publicationId: string, options: SubscribeOptions = {}): Promise<Subscription> {
    this.assertConnected('subscribe');
    this.ensurePeer('subscriber');
    const subscribed = await this.signal.request({ type: 'subscribe', publicationId });
    const subscription = new Subscription(
      subscribed.subscriptionId,
      subscribed.publicationId,
      this.remotePublications.get(subscribed.publicationId),
      (subscriptionId, layer) => this.requestLayer(subscriptionId, layer),
      (subscriptionId, paused) => this.requestPaused(subscriptionId, paused),
    );
    this.activeSubscriptions.set(subscription.subscriptionId, subscription);
    const early = this.unclaimedTracks.get(subscription.subscriptionId);
    if (early !== undefined) {
      this.unclaimedTracks.delete(subscription.subscriptionId);
      this.attachTrack(subscription, early.remote, early.receiver);
    }
    const earlyLayers = this.unclaimedLayers.get(subscription.subscriptionId);
    if (earlyLayers !== undefined) {
      this.unclaimedLayers.delete(subscription.subscriptionId);
      this.applyLayersChanged(subscription, earlyLayers);
    }
    const { preferredLayer } = options;
    if (preferredLayer !== undefined) {
      const layer = typeof preferredLayer === 'number' ? { spatial: preferredLayer } : preferredLayer;
      await subscription.setPreferredLayer(layer.spatial, layer.temporal);
    }
    return subscription;
  }

  /**
   * Asks for the highest simulcast layer of a subscription (see
   * `Subscription.setPreferredLayer`). Resolves when the server accepted it.
   */
  async setPreferredLayer(subscriptionId: string, spatial: number, temporal?: number): Promise<void> {
    const subscription = this.activeSubscriptions.get(subscriptionId);
    if (subscription !== undefined) return subscription.setPreferredLayer(spatial, temporal);
    this.assertConnected('setPreferredLayer');
    // Unknown here: let the server answer (notFound).
    return this.requestLayer(subscriptionId, temporal === undefined ? { spatial } : { spatial, temporal });
  }

  /** Ends a subscription. */
  async unsubscribe(subscriptionId: string): Promise<void> {
    this.assertConnected('unsubscribe');
    await this.signal.request({ type: 'unsubscribe', subscriptionId });
    this.endSubscription(subscriptionId);
  }

  /** Leaves the room (best effort `leave`), then closes both peer connections and the socket. */
  async disconnect(): Promise<void> {
    if (this.roomState === RoomState.Disconnected) return;
    if (this.roomState === RoomState.Reconnecting) {
      this.teardown({ clientInitiated: true, code: 1000, reason: 'client left', cause: DisconnectCause.ClientLeft });
      return;
    }
    if (this.roomState === RoomState.Connected) {
      this.leaving = true;
      try {
        await this.signal.request({ type: 'leave' });
      } catch {
        // The session ends either way.
      }
    }
    this.teardown({ clientInitiated: true, code: 1000, reason: 'client left', cause: DisconnectCause.ClientLeft });
  }

  private handleEvent(event: ServerEvent): void {
    if (this.roomState === RoomState.Idle || this.roomState === RoomState.Disconnected) return;
    switch (event.type) {
      case 'offer':
        this.handleOffer(event.sdp);
        break;
      case 'trickle':
        this.handleRemoteCandidate(event.target, event.candidate);
        break;
      case 'participantJoined':
        if (event.participant.participantId === this.local?.participantId) break;
        // After a resume, an event may repeat what the room state already showed.
        if (this.remoteParticipants.has(event.participant.participantId)) break;
        this.remoteParticipants.set(event.participant.participantId, event.participant);
        this.emit('participantJoined', event.participant);
        break;
      case 'participantLeft': {
        const participant = this.remoteParticipants.get(event.participantId);
        if (participant === undefined && this.resumedOnce) break; // already gone at the resume
        this.remoteParticipants.delete(event.participantId);
        this.emit('participantLeft', { participantId: event.participantId, participant });
        break;
      }
      case 'publicationAdded':
        if (event.publication.participantId === this.local?.participantId) break;
        if (this.remotePublications.has(event.publication.publicationId)) break;
        this.remotePublications.set(event.publication.publicationId, event.publication);
        this.emit('publicationAdded', event.publication);
        break;
      case 'publicationRemoved':
        if (
          this.resumedOnce &&
          !this.remotePublications.has(event.publicationId) &&
          !this.ownPublications.has(event.publicationId)
        ) {
          break; // already removed when the resume reconciled the room
        }
        this.handlePublicationRemoved(event.publicationId, event.participantId);
        break;
      case 'layersChanged': {
        const subscription = this.activeSubscriptions.get(event.subscriptionId);
        // It may overtake the `subscribed` response: keep the latest until the subscription is known.
        if (subscription === undefined) this.unclaimedLayers.set(event.subscriptionId, event);
        else this.applyLayersChanged(subscription, event);
        break;
      }
      case 'publisherLayers':
        this.handlePublisherLayers(event.publicationId, event.layers);
        break;
      case 'activeSpeakers':
        this.speakers = event.speakers;
        this.emit('activeSpeakersChanged', { speakers: event.speakers });
        break;
    }
  }

  private async requestLayer(subscriptionId: string, layer: PreferredLayer): Promise<void> {
    this.assertConnected('setPreferredLayer');
    await this.signal.request({ type: 'setPreferredLayer', subscriptionId, ...layer });
  }

  private async requestPaused(subscriptionId: string, paused: boolean): Promise<void> {
    this.assertConnected('setPaused');
    await this.signal.request({ type: 'setSubscriptionPaused', subscriptionId, paused });
  }

  private applyLayersChanged(subscription: Subscription, event: Extract<ServerEvent, { type: 'layersChanged' }>): void {
    subscription.updateLayers(event.current, event.target, event.reason);
    this.emit('layersChanged', {
      subscription,
      subscriptionId: subscription.subscriptionId,
      current: event.current,
      target: event.target,
      reason: event.reason,
    });
  }

  /**
   * Dynacast: sets `active` on the encodings of a local publication's sender by rid. Runs on the
   * publisher's negotiation queue, so it never interleaves with an offer/answer (and a
   * `publisherLayers` for a publication still being published waits until it is known).
   * Messages that arrive while an earlier one still waits in the queue are merged into it (the
   * later flag wins), so a burst costs one `setParameters`.
   */
  private handlePublisherLayers(publicationId: string, layers: LayerActivity[]): void {
    const peer = this.publisher;
    if (peer === undefined) return;
    const pending = this.pendingLayers.get(publicationId);
    if (pending !== undefined) {
      for (const { rid, active } of layers) pending.set(rid, active);
      return;
    }
    this.pendingLayers.set(publicationId, new Map(layers.map((l) => [l.rid, l.active])));
    peer
      .negotiate(async () => {
        const wanted = this.pendingLayers.get(publicationId);
        this.pendingLayers.delete(publicationId);
        const own = this.ownPublications.get(publicationId);
        if (wanted === undefined || own === undefined || this.roomState !== RoomState.Connected) return;
        const params = own.sender.getParameters();
        let changed = false;
        for (const encoding of params.encodings) {
          const active = encoding.rid === undefined ? undefined : wanted.get(encoding.rid);
          if (active !== undefined && encoding.active !== active) {
            encoding.active = active;
            changed = true;
          }
        }
        if (changed) {
          try {
            await own.sender.setParameters(params);
          } catch (err) {
            throw new NegotiationError(`publisher: cannot set the active layers of ${publicationId}`, { cause: err });
          }
        }
        const applied = own.sender
          .getParameters()
          .encodings.filter((e): e is RTCRtpEncodingParameters & { rid: string } => e.rid !== undefined)
          .map((e) => ({ rid: e.rid, active: e.active !== false }));
        if (!this.ownPublications.has(publicationId)) return;
        this.appliedLayers.set(publicationId, applied);
        this.emit('publisherLayersApplied', { publicationId, layers: applied });
      })
      .catch((err: unknown) => {
        if (this.roomState === RoomState.Connected) this.reportError(asSluiceError(err));
      });
  }

  private handleOffer(sdp: string): void {
    const peer = this.ensurePeer('subscriber');
    peer
      .negotiate(async () => {
        try {
          // Before applying it: `track` events fire inside setRemoteDescription.
          for (const [mid, subscriptionId] of msidTrackIdsByMid(sdp)) this.subscriptionByMid.set(mid, subscriptionId);
          await peer.setRemoteDescription({ type: 'offer', sdp });
          const answer = await peer.pc.createAnswer();
          await peer.pc.setLocalDescription(answer);
          sdp = peer.pc.localDescription?.sdp ?? answer.sdp ?? '';
        } catch (err) {
          throw new NegotiationError('subscriber: cannot answer the server offer', { cause: err });
        }
        const request = this.signal.request({ type: 'answer', sdp });
        peer.localDescriptionSent();
        await request;
      })
      .catch((err: unknown) => {
        if (this.roomState === RoomState.Connected) this.reportError(asSluiceError(err));
      });
  }

  private handleRemoteCandidate(target: PeerTarget, candidate: IceCandidate): void {
    // A subscriber candidate may come before the first offer: keep it on a fresh connection.
    const peer = target === 'subscriber' ? this.ensurePeer('subscriber') : this.publisher;
    if (peer === undefined) {
      console.warn('sluice: ignoring a publisher candidate before any publish');
      return;
    }
    peer.addRemoteCandidate(candidate);
  }

  private handlePublicationRemoved(publicationId: string, participantId: string): void {
    const publication = this.remotePublications.get(publicationId) ?? this.ownPublications.get(publicationId);
    this.remotePublications.delete(publicationId);
    this.ownPublications.delete(publicationId);
    this.appliedLayers.delete(publicationId);
    for (const subscription of [...this.activeSubscriptions.values()]) {
      if (subscription.publicationId === publicationId) this.endSubscription(subscription.subscriptionId);
    }
    this.emit('publicationRemoved', { publicationId, participantId, publication });
  }

  private handleClose(info: CloseInfo): void {
    const clientInitiated = info.clientInitiated || this.leaving;
    if (this.roomState === RoomState.Reconnecting) return; // the attempt in progress sees it fail
    if (
      !clientInitiated &&
      this.roomState === RoomState.Connected &&
      this.reconnectEnabled &&
      this.session !== undefined &&
      !NO_RECONNECT_CLOSE_CODES.has(info.code)
    ) {
      void this.reconnect(info);
      return;
    }
    const cause = clientInitiated
      ? DisconnectCause.ClientLeft
      : info.code === 4001
        ? DisconnectCause.Replaced
        : DisconnectCause.ServerClosed;
    this.teardown({ clientInitiated, code: info.code, reason: info.reason, cause });
  }

  /**
   * After an unexpected close: retries with backoff until the session is resumed (or rejoined)
   * or `reconnectTimeoutMs` has passed. Media keeps flowing on the peer connections meanwhile
   * when only the WebSocket dropped.
   */
  private async reconnect(dropped: CloseInfo): Promise<void> {
    const session = this.session;
    if (session === undefined) return;
    const startedAt = Date.now();
    this.setState(RoomState.Reconnecting);
    this.emit('reconnecting', { code: dropped.code, reason: dropped.reason });
    let attempts = 0;
    let lastError: unknown;
    while (this.stateNow() === RoomState.Reconnecting) {
      const delay = reconnectDelayMs(attempts, this.reconnectJitter);
      if (Date.now() - startedAt + delay > this.reconnectTimeoutMs) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.cancelReconnectWait = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.cancelReconnectWait = undefined;
      if (this.stateNow() !== RoomState.Reconnecting) return;
      attempts += 1;
      const signal = this.newSignal();
      this.signal = signal;
      try {
        await signal.connect(session.url);
        const resumed = await this.resumeOrRejoin(signal, session);
        if (this.signal !== signal || this.stateNow() !== RoomState.Connected) return;
        this.emit('reconnected', { resumed, attempts, durationMs: Date.now() - startedAt });
        return;
      } catch (err) {
        lastError = err;
        if (this.signal === signal) signal.close();
        if (this.stateNow() === RoomState.Disconnected) return;
        if (this.stateNow() === RoomState.Connected) {
          // It broke again after it was back: the new close starts a new round.
          return;
        }
        if (err instanceof ServerError && (err.code === 'unauthorized' || err.code === 'permissionDenied')) break;
      }
    }
    if (this.stateNow() !== RoomState.Reconnecting) return;
    const why = lastError instanceof Error ? `: ${lastError.message}` : '';
    this.teardown({
      clientInitiated: false,
      code: dropped.code,
      reason: `reconnect gave up after ${attempts} attempts in ${Date.now() - startedAt} ms${why}`,
      cause: DisconnectCause.ReconnectFailed,
    });
  }

  /** One attempt on an open socket: `resume`, or a full rejoin when the server refuses it. */
  private async resumeOrRejoin(
    signal: SignalClient,
    session: NonNullable<Room['session']>,
  ): Promise<boolean> {
    const participantId = this.local?.participantId;
    let resumed: Extract<ServerMessage, { type: 'resumed' }> | undefined;
    if (participantId !== undefined) {
      try {
        resumed = await signal.request({ type: 'resume', participantId, resumeToken: session.resumeToken });
      } catch (err) {
        if (!(err instanceof ServerError && err.code === 'resumeFailed')) throw err;
      }
    }
    if (resumed !== undefined) {
      this.resumedOnce = true;
      this.reconcile(resumed.participants, resumed.publications, resumed.subscriptions);
      this.setState(RoomState.Connected);
      await this.restartIce(signal);
      return true;
    }
    await this.rejoin(signal, session);
    return false;
  }

  /**
   * Brings the room's view in line with the server's after time away, emitting the events the
   * missed ones would have caused.
   */
  private reconcile(
    participants: ParticipantInfo[],
    publications: PublicationInfo[],
    subscriptions: { subscriptionId: string; publicationId: string }[] | undefined,
  ): void {
    const self = this.local?.participantId;
    const present = new Set(publications.map((p) => p.publicationId));
    for (const [id, publication] of [...this.remotePublications, ...this.ownPublications]) {
      if (!present.has(id)) this.handlePublicationRemoved(id, publication.participantId);
    }
    const here = new Map(participants.filter((p) => p.participantId !== self).map((p) => [p.participantId, p]));
    for (const [id, participant] of [...this.remoteParticipants]) {
      if (here.has(id)) continue;
      this.remoteParticipants.delete(id);
      this.emit('participantLeft', { participantId: id, participant });
    }
    for (const [id, participant] of here) {
      if (this.remoteParticipants.has(id)) continue;
      this.remoteParticipants.set(id, participant);
      this.emit('participantJoined', participant);
    }
    for (const publication of publications) {
      if (publication.participantId === self || this.remotePublications.has(publication.publicationId)) continue;
      this.remotePublications.set(publication.publicationId, publication);
      this.emit('publicationAdded', publication);
    }
    if (subscriptions !== undefined) {
      const held = new Set(subscriptions.map((s) => s.subscriptionId));
      for (const id of [...this.activeSubscriptions.keys()]) if (!held.has(id)) this.endSubscription(id);
    }
  }

  /**
   * ICE-restarts both connections after a resume, so they recover if the network under them
   * changed too: the publisher with an `iceRestart` offer (`publish` without tracks), the
   * subscriber by asking the server (`restartIce`; its new offer arrives as an event).
   */
  private async restartIce(signal: SignalClient): Promise<void> {
    const steps: Promise<unknown>[] = [];
    const publisher = this.publisher;
    if (publisher !== undefined && publisher.pc.localDescription !== null) {
      steps.push(
        publisher.negotiate(async () => {
          if (publisher.pc.signalingState === 'have-local-offer') {
            await publisher.pc.setLocalDescription({ type: 'rollback' });
          }
          let sdp: string;
          try {
            const offer = await publisher.pc.createOffer({ iceRestart: true });
            await publisher.pc.setLocalDescription(offer);
            sdp = publisher.pc.localDescription?.sdp ?? offer.sdp ?? '';
          } catch (err) {
            throw new NegotiationError('publisher: cannot create the ICE restart offer', { cause: err });
          }
          const published = await signal.request({ type: 'publish', sdp, tracks: [] });
          try {
            await publisher.setRemoteDescription({ type: 'answer', sdp: published.sdp });
          } catch (err) {
            throw new NegotiationError('publisher: the ICE restart answer was rejected', { cause: err });
          }
        }),
      );
    }
    if (this.subscriber !== undefined && this.subscriber.pc.remoteDescription !== null) {
      steps.push(signal.request({ type: 'restartIce' }));
    }
    const results = await Promise.allSettled(steps);
    for (const result of results) {
      if (result.status === 'rejected' && this.signal === signal) this.reportError(asSluiceError(result.reason));
    }
  }

  /**
   * The server forgot the session: join again with the same token, publish the local tracks
   * again and subscribe again to what is still published. Both peer connections start afresh.
   */
  private async rejoin(signal: SignalClient, session: NonNullable<Room['session']>): Promise<void> {
    const calls = new Map<PublishCall, MediaStreamTrack[]>();
    for (const own of this.ownPublications.values()) {
      const tracks = calls.get(own.call) ?? [];
      tracks.push(own.track);
      calls.set(own.call, tracks);
    }
    const wanted = [...this.activeSubscriptions.values()].map((s) => s.publicationId);
    const joined = await signal.request(
      session.options.room === undefined
        ? { type: 'join', token: session.token }
        : { type: 'join', token: session.token, room: session.options.room },
    );
    this.resetMedia();
    this.session = { ...session, resumeToken: joined.resumeToken };
    this.roomName = joined.room;
    this.local = joined.participant;
    this.reconcile(joined.participants, joined.publications, undefined);
    this.setState(RoomState.Connected);
    for (const [call, tracks] of calls) {
      try {
        await this.publishTracks(call.stream, tracks, call.options);
      } catch (err) {
        if (this.signal !== signal) throw err;
        this.reportError(asSluiceError(err));
      }
    }
    for (const publicationId of wanted) {
      if (!this.remotePublications.has(publicationId)) continue;
      try {
        await this.subscribe(publicationId);
      } catch (err) {
        if (this.signal !== signal) throw err;
        this.reportError(asSluiceError(err));
      }
    }
  }

  /** Drops both peer connections and everything negotiated on them (before a rejoin). */
  private resetMedia(): void {
    this.publisher?.close();
    this.subscriber?.close();
    this.publisher = undefined;
    this.subscriber = undefined;
    for (const id of [...this.activeSubscriptions.keys()]) this.endSubscription(id);
    this.ownPublications.clear();
    this.appliedLayers.clear();
    this.pendingLayers.clear();
    this.subscriptionByMid.clear();
    this.unclaimedTracks.clear();
    this.unclaimedLayers.clear();
  }

  private ensurePeer(target: PeerTarget): Peer {
    const existing = target === 'publisher' ? this.publisher : this.subscriber;
    if (existing !== undefined) return existing;
    const pc = this.peerConnectionFactory(this.rtcConfiguration);
    const peer = new Peer(
      target,
      pc,
      (candidate) => this.sendCandidate(target, candidate),
      (error) => this.reportError(error),
    );
    if (target === 'subscriber') {
      pc.addEventListener('track', (ev: RTCTrackEvent) => this.handleTrack(ev));
      this.subscriber = peer;
    } else {
      this.publisher = peer;
    }
    return peer;
  }

  private sendCandidate(target: PeerTarget, candidate: IceCandidate): void {
    if (this.roomState !== RoomState.Connected) return;
    this.signal.request({ type: 'trickle', target, candidate }).catch((err: unknown) => {
      if (this.roomState === RoomState.Connected) this.reportError(asSluiceError(err));
    });
  }

  private handleTrack(ev: RTCTrackEvent): void {
    const mid = ev.transceiver.mid;
    const subscriptionId = mid === null ? undefined : this.subscriptionByMid.get(mid);
    if (subscriptionId === undefined) {
      console.warn(`sluice: ignoring a subscriber track on mid ${mid ?? '(none)'}: not in the server's offer`);
      return;
    }
    // A stream of its own: the msid stream (shared by a publisher's tracks, for A/V sync)
    // would make a video element play the publisher's audio too.
    const remote = { track: ev.track, stream: new MediaStream([ev.track]) };
    const subscription = this.activeSubscriptions.get(subscriptionId);
    if (subscription === undefined) {
      this.unclaimedTracks.set(subscriptionId, { remote, receiver: ev.receiver });
      return;
    }
    this.attachTrack(subscription, remote, ev.receiver);
  }

  private attachTrack(subscription: Subscription, remote: RemoteTrack, receiver: RTCRtpReceiver): void {
    if (subscription.track !== undefined) return;
    subscription.bindTrack(remote, receiver);
    this.emit('trackSubscribed', { subscription, ...remote });
  }

  private endSubscription(subscriptionId: string): void {
    this.unclaimedTracks.delete(subscriptionId);
    this.unclaimedLayers.delete(subscriptionId);
    const subscription = this.activeSubscriptions.get(subscriptionId);
    if (subscription === undefined) return;
    this.activeSubscriptions.delete(subscriptionId);
    const track = subscription.track;
    subscription.end();
    if (track !== undefined) this.emit('trackUnsubscribed', { subscription, track });
  }

  private localPublication(
    publication: PublicationInfo,
    track: MediaStreamTrack,
    sender: RTCRtpSender,
    call: PublishCall,
  ): OwnPublication {
    const id = publication.publicationId;
    return {
      ...publication,
      sender,
      call,
      sending: track,
      get track(): MediaStreamTrack {
        return this.sending;
      },
      get muted(): boolean {
        return !this.sending.enabled;
      },
      mute(): void {
        this.sending.enabled = false;
      },
      unmute(): void {
        this.sending.enabled = true;
      },
      replaceTrack: async (next: MediaStreamTrack): Promise<void> => {
        const own = this.ownPublications.get(id);
        if (own === undefined) {
          throw new ConnectionError(ConnectionErrorReason.InvalidState, `replaceTrack() on ended publication ${id}`);
        }
        if (next.kind !== own.kind) throw new TypeError(`replaceTrack(): a ${next.kind} track for ${own.kind} publication ${id}`);
        await own.sender.replaceTrack(next);
        own.sending = next;
      },
      unpublish: () => this.unpublish(id),
    };
  }

  private claimPublications(
    publications: PublicationInfo[],
    added: { track: MediaStreamTrack; transceiver: RTCRtpTransceiver }[],
    infos: TrackInfo[],
    call: PublishCall,
  ): LocalPublication[] {
    const unclaimed = publications.filter((p) => !this.ownPublications.has(p.publicationId));
    const result: LocalPublication[] = [];
    added.forEach(({ track, transceiver }, i) => {
      const info = infos[i];
      const index = unclaimed.findIndex((p) => p.kind === info?.kind && p.source === info.source);
      if (index < 0) return;
      const [publication] = unclaimed.splice(index, 1);
      if (publication === undefined) return;
      const local = this.localPublication(publication, track, transceiver.sender, call);
      this.ownPublications.set(publication.publicationId, local);
      result.push(local);
    });
    return result;
  }

  private teardown(event: DisconnectedEvent | undefined): void {
    if (this.roomState === RoomState.Disconnected) return;
    const wasConnected = this.roomState === RoomState.Connected || this.roomState === RoomState.Reconnecting;
    this.setState(RoomState.Disconnected);
    this.cancelReconnectWait?.();
    this.cancelReconnectWait = undefined;
    this.signal.close();
    this.publisher?.close();
    this.subscriber?.close();
    for (const id of [...this.activeSubscriptions.keys()]) this.endSubscription(id);
    this.unclaimedTracks.clear();
    this.subscriptionByMid.clear();
    this.unclaimedLayers.clear();
    this.pendingLayers.clear();
    this.speakers = [];
    if (wasConnected && event !== undefined) this.emit('disconnected', event);
  }

  private reportError(error: SluiceError): void {
    if (this.listenerCount('error') > 0) this.emit('error', error);
    else console.error('sluice:', error);
  }

  private assertConnected(operation: string): void {
    if (this.roomState !== RoomState.Connected) {
      throw new ConnectionError(ConnectionErrorReason.InvalidState, `${operation}() on a ${this.roomState} room`);
    }
  }
}

function videoSource(options: PublishOptions): TrackSource {
  return options.videoSource ?? 'camera';
}

function trackInfo(mid: string, track: MediaStreamTrack, options: PublishOptions, rids: string[] | undefined): TrackInfo {
  const kind: MediaKind = track.kind === 'audio' ? 'audio' : 'video';
  const source = kind === 'audio' ? (options.audioSource ?? 'microphone') : videoSource(options);
  const info: TrackInfo = { mid, kind, source };
  if (options.name !== undefined) info.name = options.name;
  if (rids !== undefined) info.rids = rids;
  return info;
}

const CODEC_MIME: Record<VideoCodec, string> = { vp8: 'video/vp8', h264: 'video/h264' };

/**
 * Lower is better: for H.264, packetization-mode=1 with constrained baseline 42e01f first, then
 * other packetization-mode=1 baseline profiles, then the rest.
 */
function codecRank(codec: RTCRtpCodec, wanted: VideoCodec): number {
  if (codec.mimeType.toLowerCase() !== CODEC_MIME[wanted]) return Number.POSITIVE_INFINITY;
  if (wanted !== 'h264') return 0;
  const fmtp = new Map(
    (codec.sdpFmtpLine ?? '').split(';').map((kv) => {
      const [key = '', value = ''] = kv.trim().split('=');
      return [key.toLowerCase(), value.toLowerCase()] as const;
    }),
  );
  const mode1 = fmtp.get('packetization-mode') === '1';
  const profile = fmtp.get('profile-level-id') ?? '';
  if (mode1 && profile === '42e01f') return 0;
  if (mode1 && profile.startsWith('42')) return 1;
  if (mode1) return 2;
  return 3;
}

/** The codec list with `wanted` first (best variant first), the others in their original order. */
export function orderCodecs(codecs: RTCRtpCodec[], wanted: VideoCodec): RTCRtpCodec[] {
  const ranked = codecs.map((codec, index) => ({ codec, index, rank: codecRank(codec, wanted) }));
  if (!ranked.some((c) => Number.isFinite(c.rank))) return [];
  ranked.sort((a, b) => (a.rank === b.rank ? a.index - b.index : a.rank < b.rank ? -1 : 1));
  return ranked.map((c) => c.codec);
}

/** Puts `wanted` first in the transceiver's codec preferences; throws NegotiationError if unsupported. */
function preferCodec(transceiver: RTCRtpTransceiver, wanted: VideoCodec): void {
  const capabilities = (kind: 'sender' | 'receiver'): RTCRtpCodec[] => {
    const api = kind === 'sender' ? globalThis.RTCRtpSender : globalThis.RTCRtpReceiver;
    return api?.getCapabilities?.('video')?.codecs ?? [];
  };
  if (typeof transceiver.setCodecPreferences !== 'function') {
    throw new NegotiationError('publisher: this browser cannot choose a codec (no setCodecPreferences)');
  }
  let lastError: unknown;
  // The spec checks sendonly preferences against the sender's capabilities; older browsers
  // checked against the receiver's.
  for (const kind of ['sender', 'receiver'] as const) {
    const ordered = orderCodecs(capabilities(kind), wanted);
    if (ordered.length === 0) continue;
    try {
      transceiver.setCodecPreferences(ordered);
      return;
    } catch (err) {
      lastError = err;
    }
  }
  throw new NegotiationError(`publisher: this browser cannot send ${wanted}`, { cause: lastError });
}

function asSluiceError(err: unknown): SluiceError {
  return err instanceof SluiceError ? err : new SluiceError(String(err), { cause: err });
}
