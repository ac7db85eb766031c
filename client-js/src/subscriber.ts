/**
 * The subscriber side of a room: subscriptions, the subscriber connection (the server offers),
 * and matching the tracks and layer reports that arrive to their subscriptions.
 */
import { type RoomContext, asSluiceError } from './context.js';
import { NegotiationError } from './errors.js';
import { RoomState } from './events.js';
import type { Peer } from './peer.js';
import type { IceCandidate, PublicationInfo } from './protocol.gen.js';
import { msidTrackIdsByMid } from './sdp.js';
import type { ServerEvent } from './signal.js';
import { type PreferredLayer, type RemoteTrack, Subscription } from './subscription.js';

/** Options of `room.subscribe`. */
export interface SubscribeOptions {
  /** The layer to ask for at once (as `subscription.setPreferredLayer`); a number is the spatial layer. */
  preferredLayer?: number | PreferredLayer;
}

type LayersChanged = Extract<ServerEvent, { type: 'layersChanged' }>;

/**
 * The subscriber connection and the subscriptions. The server's offers are answered on the
 * connection's negotiation queue; a track or a `layersChanged` may overtake the `subscribed`
 * response, so it is kept until the subscription is known.
 */
export class Subscriber {
  private peer: Peer | undefined;
  /** Active subscriptions, by subscription id. */
  readonly subscriptions = new Map<string, Subscription>();
  /** Subscriber transceivers' mids → subscription ids, from the server's offers. */
  private readonly subscriptionByMid = new Map<string, string>();
  /** Tracks that arrived before their `subscribed` response, by subscription id. */
  private readonly unclaimedTracks = new Map<string, { remote: RemoteTrack; receiver: RTCRtpReceiver }>();
  /** The latest `layersChanged` of subscriptions whose `subscribed` response has not come yet. */
  private readonly unclaimedLayers = new Map<string, LayersChanged>();

  /** `publications`: the other participants' publications, by publication id. */
  constructor(
    private readonly room: RoomContext,
    private readonly publications: ReadonlyMap<string, PublicationInfo>,
  ) {}

  /** The subscriber RTCPeerConnection, once created. */
  get pc(): RTCPeerConnection | undefined {
    return this.peer?.pc;
  }

  /** Whether the connection has negotiated (so a resume restarts its ICE). */
  get negotiated(): boolean {
    return this.peer !== undefined && this.peer.pc.remoteDescription !== null;
  }

  /** Subscribes to a publication; resolves once the server accepted. */
  async subscribe(publicationId: string, options: SubscribeOptions): Promise<Subscription> {
    this.room.assertConnected('subscribe');
    this.ensurePeer();
    const subscribed = await this.room.signal().request({ type: 'subscribe', publicationId });
    const subscription = new Subscription(
      subscribed.subscriptionId,
      subscribed.publicationId,
      this.publications.get(subscribed.publicationId),
      (subscriptionId, layer) => this.requestLayer(subscriptionId, layer),
      (subscriptionId, paused) => this.requestPaused(subscriptionId, paused),
    );
    this.subscriptions.set(subscription.subscriptionId, subscription);
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

  /** Asks for the highest simulcast layer of a subscription; resolves when the server accepted it. */
  async setPreferredLayer(subscriptionId: string, spatial: number, temporal?: number): Promise<void> {
    const subscription = this.subscriptions.get(subscriptionId);
    if (subscription !== undefined) return subscription.setPreferredLayer(spatial, temporal);
    this.room.assertConnected('setPreferredLayer');
    // Unknown here: let the server answer (notFound).
    return this.requestLayer(subscriptionId, temporal === undefined ? { spatial } : { spatial, temporal });
  }

  /** Ends a subscription. */
  async unsubscribe(subscriptionId: string): Promise<void> {
    this.room.assertConnected('unsubscribe');
    await this.room.signal().request({ type: 'unsubscribe', subscriptionId });
    this.end(subscriptionId);
  }

  /** Answers a server offer on the negotiation queue. */
  handleOffer(sdp: string): void {
    const peer = this.ensurePeer();
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
        const request = this.room.signal().request({ type: 'answer', sdp });
        peer.localDescriptionSent();
        await request;
      })
      .catch((err: unknown) => {
        if (this.room.state() === RoomState.Connected) this.room.reportError(asSluiceError(err));
      });
  }

  /** A candidate from the server; one may come before the first offer: kept on a fresh connection. */
  addRemoteCandidate(candidate: IceCandidate): void {
    this.ensurePeer().addRemoteCandidate(candidate);
  }

  handleLayersChanged(event: LayersChanged): void {
    const subscription = this.subscriptions.get(event.subscriptionId);
    // It may overtake the `subscribed` response: keep the latest until the subscription is known.
    if (subscription === undefined) this.unclaimedLayers.set(event.subscriptionId, event);
    else this.applyLayersChanged(subscription, event);
  }

  /** Ends a subscription locally (`trackUnsubscribed` if it had media). */
  end(subscriptionId: string): void {
    this.unclaimedTracks.delete(subscriptionId);
    this.unclaimedLayers.delete(subscriptionId);
    const subscription = this.subscriptions.get(subscriptionId);
    if (subscription === undefined) return;
    this.subscriptions.delete(subscriptionId);
    const track = subscription.track;
    subscription.end();
    if (track !== undefined) this.room.emit('trackUnsubscribed', { subscription, track });
  }

  /** Ends the subscriptions to a publication that ended. */
  endPublication(publicationId: string): void {
    for (const subscription of [...this.subscriptions.values()]) {
      if (subscription.publicationId === publicationId) this.end(subscription.subscriptionId);
    }
  }

  /** Ends every subscription not in `held` (the ones the server still holds after a resume). */
  keepOnly(held: ReadonlySet<string>): void {
    for (const id of [...this.subscriptions.keys()]) if (!held.has(id)) this.end(id);
  }

  /** Closes the connection and ends every subscription (the session ended). */
  close(): void {
    this.peer?.close();
    for (const id of [...this.subscriptions.keys()]) this.end(id);
    this.unclaimedTracks.clear();
    this.subscriptionByMid.clear();
    this.unclaimedLayers.clear();
  }

  /** Drops the connection and everything negotiated on it (before a rejoin). */
  reset(): void {
    this.close();
    this.peer = undefined;
  }

  private ensurePeer(): Peer {
    if (this.peer !== undefined) return this.peer;
    const peer = this.room.newPeer('subscriber');
    peer.pc.addEventListener('track', (ev: RTCTrackEvent) => this.handleTrack(ev));
    this.peer = peer;
    return peer;
  }

  private async requestLayer(subscriptionId: string, layer: PreferredLayer): Promise<void> {
    this.room.assertConnected('setPreferredLayer');
    await this.room.signal().request({ type: 'setPreferredLayer', subscriptionId, ...layer });
  }

  private async requestPaused(subscriptionId: string, paused: boolean): Promise<void> {
    this.room.assertConnected('setPaused');
    await this.room.signal().request({ type: 'setSubscriptionPaused', subscriptionId, paused });
  }

  private applyLayersChanged(subscription: Subscription, event: LayersChanged): void {
    subscription.updateLayers(event.current, event.target, event.reason);
    this.room.emit('layersChanged', {
      subscription,
      subscriptionId: subscription.subscriptionId,
      current: event.current,
      target: event.target,
      reason: event.reason,
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
    const subscription = this.subscriptions.get(subscriptionId);
    if (subscription === undefined) {
      this.unclaimedTracks.set(subscriptionId, { remote, receiver: ev.receiver });
      return;
    }
    this.attachTrack(subscription, remote, ev.receiver);
  }

  private attachTrack(subscription: Subscription, remote: RemoteTrack, receiver: RTCRtpReceiver): void {
    if (subscription.track !== undefined) return;
    subscription.bindTrack(remote, receiver);
    this.room.emit('trackSubscribed', { subscription, ...remote });
  }
}
