import { TypedEmitter } from './emitter.js';
import { ConnectionError, ConnectionErrorReason, NegotiationError, SluiceError } from './errors.js';
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
  LayersChanged: 'layersChanged',
  PublisherLayersApplied: 'publisherLayersApplied',
  ActiveSpeakersChanged: 'activeSpeakersChanged',
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
    this.appliedLayers.delete(publicationId);
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
      (subscriptionId, layer) => this.requestLayer(subscriptionId, layer),
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
    subscription.attach(remote, receiver);
    this.emit('trackSubscribed', { subscription, ...remote });
  }

  private endSubscription(subscriptionId: string): void {
    this.unclaimedTracks.delete(subscriptionId);
    this.unclaimedLayers.delete(subscriptionId);
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
