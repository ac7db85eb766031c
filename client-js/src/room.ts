import { TypedEmitter } from './emitter.js';
import { ConnectionError, ConnectionErrorReason, NegotiationError, SluiceError } from './errors.js';
import { Peer } from './peer.js';
import type {
  IceCandidate,
  MediaKind,
  ParticipantInfo,
  PeerTarget,
  PublicationInfo,
  ServerMessage,
  TrackInfo,
  TrackSource,
} from './protocol.gen.js';
import { type CloseInfo, type ServerEvent, SignalClient } from './signal.js';
import { type RemoteTrack, Subscription } from './subscription.js';

export interface RoomOptions {
  /** Opens the signaling WebSocket. Default: `new WebSocket(url)`. */
  webSocketFactory?: (url: string) => WebSocket;
  /** Creates the publisher and subscriber connections. Default: `new RTCPeerConnection(config)`. */
  peerConnectionFactory?: (config: RTCConfiguration) => RTCPeerConnection;
  /** How long to wait for the socket to open and for each response. Default: 10 000 ms. */
  requestTimeoutMs?: number;
  /** Passed to the peer connection factory. Default: no ICE servers (the SFU is reachable directly). */
  rtcConfiguration?: RTCConfiguration;
}

export interface PublishOptions {
  /** Source announced for audio tracks. Default: `microphone`. */
  audioSource?: TrackSource;
  /** Source announced for video tracks. Default: `camera`. */
  videoSource?: TrackSource;
  /** A human-readable name announced for every track of this call. */
  name?: string;
}

export interface ConnectOptions {
  /**
   * The room the caller expects the token to be for; the server refuses the join
   * (`unauthorized`) when the token names another room.
   */
  room?: string;
}

/** A publication of the local participant. */
export interface LocalPublication extends PublicationInfo {
  readonly track: MediaStreamTrack;
}

/** What `connect` resolves with: the `joined` response. */
export type JoinInfo = Omit<Extract<ServerMessage, { type: 'joined' }>, 'type' | 'requestId'>;

export const RoomState = {
  Idle: 'idle',
  Connecting: 'connecting',
  Connected: 'connected',
  Disconnected: 'disconnected',
} as const;
export type RoomState = (typeof RoomState)[keyof typeof RoomState];

export const RoomEvent = {
  ParticipantJoined: 'participantJoined',
  ParticipantLeft: 'participantLeft',
  PublicationAdded: 'publicationAdded',
  PublicationRemoved: 'publicationRemoved',
  TrackSubscribed: 'trackSubscribed',
  Error: 'error',
  Disconnected: 'disconnected',
} as const;

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

export interface TrackSubscribedEvent extends RemoteTrack {
  subscription: Subscription;
}

export interface DisconnectedEvent {
  /** True when `disconnect()` ended the session. */
  clientInitiated: boolean;
  /** WebSocket close code. */
  code: number;
  reason: string;
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
  /** A failure that belongs to no call: a server error without requestId, a failed server offer. */
  error: (error: SluiceError) => void;
  /** The session ended; emitted once, only after `connect` succeeded. */
  disconnected: (event: DisconnectedEvent) => void;
};

const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * A session in one Sluice room: one WebSocket for signaling, one publisher RTCPeerConnection
 * (client offers) and one subscriber RTCPeerConnection (server offers). A Room is used once:
 * after `disconnect()` create a new one.
 */
export class Room extends TypedEmitter<RoomEvents> {
  private readonly signal: SignalClient;
  private readonly peerConnectionFactory: (config: RTCConfiguration) => RTCPeerConnection;
  private readonly rtcConfiguration: RTCConfiguration;
  private roomState: RoomState = RoomState.Idle;
  private leaving = false;
  private publisher: Peer | undefined;
  private subscriber: Peer | undefined;
  private local: ParticipantInfo | undefined;
  private roomName: string | undefined;
  private readonly remoteParticipants = new Map<string, ParticipantInfo>();
  private readonly remotePublications = new Map<string, PublicationInfo>();
  private readonly ownPublications = new Map<string, LocalPublication & { sender: RTCRtpSender }>();
  private readonly activeSubscriptions = new Map<string, Subscription>();
  /** Tracks that arrived before their `subscribed` response, by stream id (= subscription id). */
  private readonly unclaimedTracks = new Map<string, { remote: RemoteTrack; receiver: RTCRtpReceiver }>();

  constructor(options: RoomOptions = {}) {
    super();
    const webSocketFactory = options.webSocketFactory ?? ((url: string) => new WebSocket(url));
    this.peerConnectionFactory =
      options.peerConnectionFactory ?? ((config: RTCConfiguration) => new RTCPeerConnection(config));
    this.rtcConfiguration = options.rtcConfiguration ?? {};
    this.signal = new SignalClient(webSocketFactory, options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS, {
      onEvent: (event) => this.handleEvent(event),
      onUnsolicitedError: (error) => this.reportError(error),
      onClose: (info) => this.handleClose(info),
    });
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
    this.roomState = RoomState.Connecting;
    try {
      await this.signal.connect(url);
      const joined = await this.signal.request(
        options.room === undefined ? { type: 'join', token } : { type: 'join', token, room: options.room },
      );
      if (this.roomState !== RoomState.Connecting) {
        throw new ConnectionError(ConnectionErrorReason.Closed, 'disconnected while joining');
      }
      this.roomName = joined.room;
      this.local = joined.participant;
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
      this.roomState = RoomState.Connected;
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
    const tracks = stream.getTracks();
    if (tracks.length === 0) return [];
    const peer = this.ensurePeer('publisher');
    return peer.negotiate(async () => {
      this.assertConnected('publish');
      const added = tracks.map((track) => ({
        track,
        transceiver: peer.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] }),
      }));
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
        const offer = await peer.pc.createOffer();
        await peer.pc.setLocalDescription(offer);
        sdp = peer.pc.localDescription?.sdp ?? offer.sdp ?? '';
        infos = added.map(({ track, transceiver }) => {
          if (transceiver.mid === null) throw new NegotiationError('publisher: transceiver has no mid after the offer');
          return trackInfo(transceiver.mid, track, options);
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
      return this.claimPublications(published.publications, added, infos);
    });
  }

  /** Stops publishing one of the local publications. */
  async unpublish(publicationId: string): Promise<void> {
    this.assertConnected('unpublish');
    await this.signal.request({ type: 'unpublish', publicationId });
    const own = this.ownPublications.get(publicationId);
    if (own === undefined) return;
    this.ownPublications.delete(publicationId);
    await own.sender.replaceTrack(null).catch(() => undefined);
  }

  /**
   * Subscribes to a publication. Resolves once the server accepted; the media follows with the
   * server's next offer (`subscription.waitForTrack()`, or the `trackSubscribed` event).
   */
  async subscribe(publicationId: string): Promise<Subscription> {
    this.assertConnected('subscribe');
    this.ensurePeer('subscriber');
    const subscribed = await this.signal.request({ type: 'subscribe', publicationId });
    const subscription = new Subscription(
      subscribed.subscriptionId,
      subscribed.publicationId,
      this.remotePublications.get(subscribed.publicationId),
    );
    this.activeSubscriptions.set(subscription.subscriptionId, subscription);
    const early = this.unclaimedTracks.get(subscription.subscriptionId);
    if (early !== undefined) {
      this.unclaimedTracks.delete(subscription.subscriptionId);
      this.attachTrack(subscription, early.remote, early.receiver);
    }
    return subscription;
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
    if (this.roomState === RoomState.Connected) {
      this.leaving = true;
      try {
        await this.signal.request({ type: 'leave' });
      } catch {
        // The session ends either way.
      }
    }
    this.teardown({ clientInitiated: true, code: 1000, reason: 'client left' });
  }

  private handleEvent(event: ServerEvent): void {
    if (this.roomState !== RoomState.Connected && this.roomState !== RoomState.Connecting) return;
    switch (event.type) {
      case 'offer':
        this.handleOffer(event.sdp);
        break;
      case 'trickle':
        this.handleRemoteCandidate(event.target, event.candidate);
        break;
      case 'participantJoined':
        if (event.participant.participantId === this.local?.participantId) break;
        this.remoteParticipants.set(event.participant.participantId, event.participant);
        this.emit('participantJoined', event.participant);
        break;
      case 'participantLeft': {
        const participant = this.remoteParticipants.get(event.participantId);
        this.remoteParticipants.delete(event.participantId);
        this.emit('participantLeft', { participantId: event.participantId, participant });
        break;
      }
      case 'publicationAdded':
        if (event.publication.participantId === this.local?.participantId) break;
        this.remotePublications.set(event.publication.publicationId, event.publication);
        this.emit('publicationAdded', event.publication);
        break;
      case 'publicationRemoved':
        this.handlePublicationRemoved(event.publicationId, event.participantId);
        break;
    }
  }

  private handleOffer(sdp: string): void {
    const peer = this.ensurePeer('subscriber');
    peer
      .negotiate(async () => {
        try {
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
    for (const subscription of [...this.activeSubscriptions.values()]) {
      if (subscription.publicationId === publicationId) this.endSubscription(subscription.subscriptionId);
    }
    this.emit('publicationRemoved', { publicationId, participantId, publication });
  }

  private handleClose(info: CloseInfo): void {
    const clientInitiated = info.clientInitiated || this.leaving;
    this.teardown({ clientInitiated, code: info.code, reason: info.reason });
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
    const stream = ev.streams[0];
    if (stream === undefined) {
      console.warn('sluice: ignoring a subscriber track without a stream id');
      return;
    }
    const remote = { track: ev.track, stream };
    const subscription = this.activeSubscriptions.get(stream.id);
    if (subscription === undefined) {
      this.unclaimedTracks.set(stream.id, { remote, receiver: ev.receiver });
      return;
    }
    this.attachTrack(subscription, remote, ev.receiver);
  }

  private attachTrack(subscription: Subscription, remote: RemoteTrack, receiver: RTCRtpReceiver): void {
    if (subscription.track !== undefined) return;
    subscription.attach(remote, receiver);
    this.emit('trackSubscribed', { subscription, ...remote });
  }

  private endSubscription(subscriptionId: string): void {
    this.unclaimedTracks.delete(subscriptionId);
    const subscription = this.activeSubscriptions.get(subscriptionId);
    if (subscription === undefined) return;
    this.activeSubscriptions.delete(subscriptionId);
    subscription.end();
  }

  private claimPublications(
    publications: PublicationInfo[],
    added: { track: MediaStreamTrack; transceiver: RTCRtpTransceiver }[],
    infos: TrackInfo[],
  ): LocalPublication[] {
    const unclaimed = publications.filter((p) => !this.ownPublications.has(p.publicationId));
    const result: LocalPublication[] = [];
    added.forEach(({ track, transceiver }, i) => {
      const info = infos[i];
      const index = unclaimed.findIndex((p) => p.kind === info?.kind && p.source === info.source);
      if (index < 0) return;
      const [publication] = unclaimed.splice(index, 1);
      if (publication === undefined) return;
      const local = { ...publication, track, sender: transceiver.sender };
      this.ownPublications.set(publication.publicationId, local);
      const { sender: _sender, ...pub } = local;
      result.push(pub);
    });
    return result;
  }

  private teardown(event: DisconnectedEvent | undefined): void {
    if (this.roomState === RoomState.Disconnected) return;
    const wasConnected = this.roomState === RoomState.Connected;
    this.roomState = RoomState.Disconnected;
    this.signal.close();
    this.publisher?.close();
    this.subscriber?.close();
    for (const id of [...this.activeSubscriptions.keys()]) this.endSubscription(id);
    this.unclaimedTracks.clear();
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

function trackInfo(mid: string, track: MediaStreamTrack, options: PublishOptions): TrackInfo {
  const kind: MediaKind = track.kind === 'audio' ? 'audio' : 'video';
  const source = kind === 'audio' ? (options.audioSource ?? 'microphone') : (options.videoSource ?? 'camera');
  const info: TrackInfo = { mid, kind, source };
  if (options.name !== undefined) info.name = options.name;
  return info;
}

function asSluiceError(err: unknown): SluiceError {
  return err instanceof SluiceError ? err : new SluiceError(String(err), { cause: err });
}
