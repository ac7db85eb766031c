/**
 * `Room`: one session in a Sluice room. It holds the signaling connection, the room's state
 * and membership, and hands publishing, subscribing and reconnecting to `Publisher`,
 * `Subscriber` and `Resumer`.
 */
import { type RoomContext, asSluiceError } from './context.js';
import { TypedEmitter } from './emitter.js';
import { DataChannels, type DataPublishOptions } from './data.js';
import { ConnectionError, ConnectionErrorReason, type SluiceError } from './errors.js';
import { DisconnectCause, type DisconnectedEvent, type RoomEvents, RoomState } from './events.js';
import { Peer } from './peer.js';
import type {
  IceCandidate,
  LayerActivity,
  ParticipantInfo,
  PeerRole,
  PublicationInfo,
  ServerMessage,
  SpeakerInfo,
} from './protocol.gen.js';
import { CloseCode } from './protocol.gen.js';
import { type LocalPublication, type PublishOptions, Publisher } from './publisher.js';
import { DEFAULT_RECONNECT_JITTER, NO_RECONNECT_CLOSE_CODES } from './reconnect.js';
import { Resumer } from './resume.js';
import { type CloseInfo, type ServerEvent, SignalClient } from './signal.js';
import { type SubscribeOptions, Subscriber } from './subscriber.js';
import type { Subscription } from './subscription.js';


/** Options of `new Room(options)`. */
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

/** Options of `room.connect`. */
export interface ConnectOptions {
  /**
   * The room the caller expects the token to be for; the server refuses the join
   * (`unauthorized`) when the token names another room.
   */
  room?: string;
  /**
   * Open the data channels right after joining, so `dataReceived` fires for messages from the
   * start; `publishData` opens them on first use anyway. Default: false.
   */
  data?: boolean;
}

/** What `connect` resolves with: the `joined` response. */
export type JoinInfo = Omit<Extract<ServerMessage, { type: 'joined' }>, 'type' | 'requestId'>;

const DEFAULT_RECONNECT_TIMEOUT_MS = 120_000;
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
  private readonly heartbeatIntervalMs: number;
  private readonly peerConnectionFactory: (config: RTCConfiguration) => RTCPeerConnection;
  private readonly rtcConfiguration: RTCConfiguration;
  private roomState: RoomState = RoomState.Idle;
  private leaving = false;
  private local: ParticipantInfo | undefined;
  private roomName: string | undefined;
  private readonly remoteParticipants = new Map<string, ParticipantInfo>();
  private readonly remotePublications = new Map<string, PublicationInfo>();
  private readonly publisher: Publisher;
  private readonly subscriber: Subscriber;
  private readonly resumer: Resumer;
  private readonly data: DataChannels;
  private speakers: readonly SpeakerInfo[] = [];
  private readonly stalled = new Set<string>();

  constructor(options: RoomOptions = {}) {
    super();
    this.webSocketFactory = options.webSocketFactory ?? ((url: string) => new WebSocket(url));
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.reconnectEnabled = options.reconnect ?? true;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    this.peerConnectionFactory =
      options.peerConnectionFactory ?? ((config: RTCConfiguration) => new RTCPeerConnection(config));
    this.rtcConfiguration = options.rtcConfiguration ?? {};
    this.signal = this.newSignal();
    const context: RoomContext = {
      signal: () => this.signal,
      state: () => this.roomState,
      emit: this.emit.bind(this),
      reportError: (error) => this.reportError(error),
      assertConnected: (operation) => this.assertConnected(operation),
      newPeer: (target) => this.newPeer(target),
    };
    this.publisher = new Publisher(context);
    this.subscriber = new Subscriber(context, this.remotePublications);
    this.data = new DataChannels(context, this.publisher, (id) => this.remoteParticipants.get(id));
    // A rejoin replaced the publisher connection: open the channels again on the new one.
    this.on('reconnected', ({ resumed }) => {
      if (resumed || this.resumer.session?.options.data !== true) return;
      this.data.reset();
      this.openDataInBackground();
    });
    this.resumer = new Resumer(
      {
        ...context,
        publisher: this.publisher,
        subscriber: this.subscriber,
        participants: this.remoteParticipants,
        publications: this.remotePublications,
        local: () => this.local,
        setState: (state) => this.setState(state),
        replaceSignal: () => {
          this.signal = this.newSignal();
          return this.signal;
        },
        joined: (room, participant) => {
          this.roomName = room;
          this.local = participant;
        },
        removePublication: (publicationId, participant) => this.handlePublicationRemoved(publicationId, participant),
        teardown: (event) => this.teardown(event),
      },
      options.reconnectTimeoutMs ?? DEFAULT_RECONNECT_TIMEOUT_MS,
      options.reconnectJitter ?? DEFAULT_RECONNECT_JITTER,
    );
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

  /** Where the session stands; `connectionStateChanged` reports each change. */
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
    return this.publisher.publications;
  }

  /** Active subscriptions, by subscription id. */
  get subscriptions(): ReadonlyMap<string, Subscription> {
    return this.subscriber.subscriptions;
  }

  /**
   * Dynacast: the `active` flags of a local simulcast publication's encodings as the SDK last
   * applied them on a `publisherLayers` event; undefined until the first one.
   */
  publisherLayers(publicationId: string): readonly LayerActivity[] | undefined {
    return this.publisher.layers(publicationId);
  }

  /**
   * The participants speaking now (the local participant included), loudest first, each with a
   * level in 0..1 (linear, as WebRTC's `audioLevel`), as of the last `activeSpeakersChanged`.
   */
  get activeSpeakers(): readonly SpeakerInfo[] {
    return this.speakers;
  }

  /** The publications (remote or local) whose media stopped, as of the last liveness events. */
  get stalledPublications(): ReadonlySet<string> {
    return this.stalled;
  }

  /** The publisher or subscriber RTCPeerConnection, once created (for statistics and diagnostics). */
  peerConnection(target: PeerRole): RTCPeerConnection | undefined {
    return (target === 'publisher' ? this.publisher : this.subscriber).pc;
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
      this.resumer.session = {
        url,
        token,
        options,
        resumeToken: joined.resumeToken,
        fallbackUrls: joined.fallbackUrls ?? [],
      };
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
      if (options.data === true) this.openDataInBackground();
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
    return this.publisher.publish(stream, stream.getTracks(), options);
  }

  /**
   * Shares the screen: asks the browser for a display capture (`getDisplayMedia`; the user
   * picks a screen, window or tab) and publishes it with `source: 'screen'`, one encoding (no
   * simulcast unless `options.simulcast`) and the `detail` content hint, so text stays sharp
   * rather than the frame rate smooth. Its audio, if the user shares some, is published too.
   * When the user stops sharing from the browser's own UI, the publication ends.
   */
  async publishScreen(
    options: PublishOptions & { audio?: boolean } = {},
  ): Promise<LocalPublication[]> {
    this.assertConnected('publishScreen');
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: options.audio ?? false });
    for (const track of stream.getVideoTracks()) track.contentHint = 'detail';
    const publications = await this.publish(stream, { videoSource: 'screen', audioSource: 'screen', ...options });
    for (const { track, publicationId } of publications) {
      track.addEventListener('ended', () => void this.unpublish(publicationId).catch(() => undefined));
    }
    return publications;
  }

  /**
   * Sends a data message to everyone else in the room (or `destinationIdentities`) over the
   * publisher connection's data channels, opening them on first use. Resolves once the browser
   * has queued it; rejects with `DataError` when it is over `DATA_MESSAGE_MAX_BYTES`. The server
   * may still refuse it (size, rate): `dataRejected` says so.
   */
  async publishData(data: string | Uint8Array, options: DataPublishOptions = {}): Promise<void> {
    this.assertConnected('publishData');
    return this.data.publish(data, options);
  }

  /**
   * Opens the data channels now (as `connect` with `data: true` does at join) and resolves once
   * they are open: from then on `dataReceived` fires for every message sent to this participant.
   */
  async openData(): Promise<void> {
    this.assertConnected('openData');
    return this.data.ready();
  }

  /** Stops publishing one of the local publications. */
  async unpublish(publicationId: string): Promise<void> {
    return this.publisher.unpublish(publicationId);
  }

  /**
   * Subscribes to a publication. Resolves once the server accepted; the media follows with the
   * server's next offer (`subscription.waitForTrack()`, or the `trackSubscribed` event).
   */
  async subscribe(publicationId: string, options: SubscribeOptions = {}): Promise<Subscription> {
    return this.subscriber.subscribe(publicationId, options);
  }

  /**
   * Asks for the highest simulcast layer of a subscription (see
   * `Subscription.setPreferredLayer`). Resolves when the server accepted it.
   */
  async setPreferredLayer(subscriptionId: string, spatial: number, temporal?: number): Promise<void> {
    return this.subscriber.setPreferredLayer(subscriptionId, spatial, temporal);
  }

  /** Ends a subscription. */
  async unsubscribe(subscriptionId: string): Promise<void> {
    return this.subscriber.unsubscribe(subscriptionId);
  }

  /** Leaves the room (best effort `leave`), then closes both peer connections and the socket. */
  async disconnect(): Promise<void> {
    if (this.roomState === RoomState.Disconnected) return;
    if (this.roomState === RoomState.Reconnecting) {
      this.teardown({ clientInitiated: true, code: CloseCode.Normal, reason: 'client left', cause: DisconnectCause.ClientLeft });
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
    this.teardown({ clientInitiated: true, code: CloseCode.Normal, reason: 'client left', cause: DisconnectCause.ClientLeft });
  }

  private handleEvent(event: ServerEvent): void {
    if (this.roomState === RoomState.Idle || this.roomState === RoomState.Disconnected) return;
    const { resumedOnce } = this.resumer;
    switch (event.type) {
      case 'offer':
        this.subscriber.handleOffer(event.sdp);
        break;
      case 'trickle':
        (event.target === 'subscriber' ? this.subscriber : this.publisher).addRemoteCandidate(event.candidate);
        break;
      case 'participantJoined':
        if (event.participant.participantId === this.local?.participantId) break;
        // After a resume, an event may repeat what the room state already showed.
        if (this.remoteParticipants.has(event.participant.participantId)) break;
        this.remoteParticipants.set(event.participant.participantId, event.participant);
        this.emit('participantJoined', event.participant);
        break;
      case 'participantUpdated':
        if (event.participant.participantId === this.local?.participantId) {
          this.local = event.participant;
        } else if (this.remoteParticipants.has(event.participant.participantId)) {
          this.remoteParticipants.set(event.participant.participantId, event.participant);
        } else {
          break;
        }
        this.emit('participantUpdated', event.participant);
        break;
      case 'participantLeft': {
        const participant = this.remoteParticipants.get(event.participantId);
        if (participant === undefined && resumedOnce) break; // already gone at the resume
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
          resumedOnce &&
          !this.remotePublications.has(event.publicationId) &&
          !this.publisher.publications.has(event.publicationId)
        ) {
          break; // already removed when the resume reconciled the room
        }
        this.handlePublicationRemoved(event.publicationId, event.participantId);
        break;
      case 'layersChanged':
        this.subscriber.handleLayersChanged(event);
        break;
      case 'publisherLayers':
        this.publisher.handlePublisherLayers(event.publicationId, event.layers);
        break;
      case 'activeSpeakers':
        this.speakers = event.speakers;
        this.emit('activeSpeakersChanged', { speakers: event.speakers });
        break;
      case 'publicationMuted':
      case 'publicationUnmuted': {
        const muted = event.type === 'publicationMuted';
        const { publicationId, participantId } = event;
        const remote = this.remotePublications.get(publicationId);
        if (remote !== undefined) {
          if ((remote.muted === true) === muted) break;
          this.remotePublications.set(publicationId, { ...remote, muted: muted ? true : undefined });
        } else if (this.publisher.publications.has(publicationId)) {
          this.publisher.applyMuted(publicationId, muted);
        } else {
          break;
        }
        const publication = this.remotePublications.get(publicationId) ?? this.publisher.publications.get(publicationId);
        this.emit(event.type, { publicationId, participantId, publication });
        break;
      }
      case 'subscriptionEnded':
        this.subscriber.end(event.subscriptionId);
        break;
      case 'dataRejected':
        this.emit('dataRejected', { reason: event.reason, dropped: event.dropped });
        break;
      case 'publicationStalled':
      case 'publicationResumed': {
        const stalled = event.type === 'publicationStalled';
        if (this.stalled.has(event.publicationId) === stalled) break;
        if (stalled) this.stalled.add(event.publicationId);
        else this.stalled.delete(event.publicationId);
        const { publicationId, participantId } = event;
        const publication = this.remotePublications.get(publicationId) ?? this.publisher.publications.get(publicationId);
        this.emit(event.type, { publicationId, participantId, publication });
        break;
      }
    }
  }

  private openDataInBackground(): void {
    this.data.open().catch((err: unknown) => {
      if (this.roomState === RoomState.Connected) this.reportError(asSluiceError(err));
    });
  }

  private handlePublicationRemoved(publicationId: string, participantId: string): void {
    const publication = this.remotePublications.get(publicationId) ?? this.publisher.publications.get(publicationId);
    this.remotePublications.delete(publicationId);
    this.stalled.delete(publicationId);
    this.publisher.forget(publicationId);
    this.subscriber.endPublication(publicationId);
    this.emit('publicationRemoved', { publicationId, participantId, publication });
  }

  private handleClose(info: CloseInfo): void {
    const clientInitiated = info.clientInitiated || this.leaving;
    if (this.roomState === RoomState.Reconnecting) return; // the attempt in progress sees it fail
    if (
      !clientInitiated &&
      this.roomState === RoomState.Connected &&
      this.reconnectEnabled &&
      this.resumer.session !== undefined &&
      !NO_RECONNECT_CLOSE_CODES.has(info.code)
    ) {
      void this.resumer.reconnect(info);
      return;
    }
    const cause = clientInitiated
      ? DisconnectCause.ClientLeft
      : info.code === CloseCode.Replaced
        ? DisconnectCause.Replaced
        : info.code === CloseCode.Removed
          ? DisconnectCause.Removed
          : DisconnectCause.ServerClosed;
    this.teardown({ clientInitiated, code: info.code, reason: info.reason, cause });
  }

  private newPeer(target: PeerRole): Peer {
    return new Peer(
      target,
      this.peerConnectionFactory(this.rtcConfiguration),
      (candidate) => this.sendCandidate(target, candidate),
      (error) => this.reportError(error),
    );
  }

  private sendCandidate(target: PeerRole, candidate: IceCandidate): void {
    if (this.roomState !== RoomState.Connected) return;
    this.signal.request({ type: 'trickle', target, candidate }).catch((err: unknown) => {
      if (this.roomState === RoomState.Connected) this.reportError(asSluiceError(err));
    });
  }

  private teardown(event: DisconnectedEvent | undefined): void {
    if (this.roomState === RoomState.Disconnected) return;
    const wasConnected = this.roomState === RoomState.Connected || this.roomState === RoomState.Reconnecting;
    this.setState(RoomState.Disconnected);
    this.resumer.cancel();
    this.signal.close();
    this.publisher.close();
    this.subscriber.close();
    this.speakers = [];
    this.stalled.clear();
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
