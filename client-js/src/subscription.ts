import { ConnectionError, ConnectionErrorReason, SubscriptionEndedError } from './errors.js';
import type { LayerChangeReason, LayerRef, PublicationInfo } from './protocol.gen.js';

/** The media of a subscription once it has arrived on the subscriber peer connection. */
export interface RemoteTrack {
  track: MediaStreamTrack;
  /** A stream holding only this track, ready for `srcObject`. */
  stream: MediaStream;
}

/** A simulcast layer to ask for: spatial index (0 = lowest, `q`) and optionally a temporal one. */
export interface PreferredLayer {
  spatial: number;
  temporal?: number;
}

/** @internal How a subscription sends `setPreferredLayer`. */
export type LayerRequester = (subscriptionId: string, layer: PreferredLayer) => Promise<void>;

/**
 * A publication the local participant receives. The media arrives after the server's next
 * offer has been answered: use `waitForTrack()` or the room's `trackSubscribed` event.
 */
export class Subscription {
  private remote: RemoteTrack | undefined;
  private receiver: RTCRtpReceiver | undefined;
  private isEnded = false;
  private current: LayerRef | undefined;
  private target: LayerRef | undefined;
  private preferred: PreferredLayer | undefined;
  private lastReason: LayerChangeReason | undefined;
  private readonly arrived: Promise<RemoteTrack>;
  private settle!: { resolve: (t: RemoteTrack) => void; reject: (e: Error) => void };

  constructor(
    readonly subscriptionId: string,
    readonly publicationId: string,
    /** What the room knew about the publication when subscribing, if anything. */
    readonly publication: PublicationInfo | undefined,
    private readonly requestLayer: LayerRequester,
  ) {
    this.arrived = new Promise<RemoteTrack>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // A subscription that ends before anyone waits must not raise an unhandled rejection.
    this.arrived.catch(() => undefined);
  }

  get track(): MediaStreamTrack | undefined {
    return this.remote?.track;
  }

  get stream(): MediaStream | undefined {
    return this.remote?.stream;
  }

  /** True once unsubscribed, once its publication was removed, or once the room disconnected. */
  get ended(): boolean {
    return this.isEnded;
  }

  /**
   * The simulcast layer the server forwards now, from its latest `layersChanged`; undefined
   * until it reported one (or while nothing is forwarded yet).
   */
  get currentLayer(): LayerRef | undefined {
    return this.current;
  }

  /** The layer the server is switching to (or stays on), from its latest `layersChanged`. */
  get targetLayer(): LayerRef | undefined {
    return this.target;
  }

  /** Why the layers last changed, from the latest `layersChanged`. */
  get layerChangeReason(): LayerChangeReason | undefined {
    return this.lastReason;
  }

  /** The layer last asked for with `setPreferredLayer` (once the server accepted it). */
  get preferredLayer(): PreferredLayer | undefined {
    return this.preferred;
  }

  /**
   * Asks for the highest simulcast layer this subscription should receive: `spatial` 0 is the
   * lowest resolution (`q`), 1 `h`, 2 `f`; `temporal` (optional) caps the frame rate (0 = base
   * layer). The server forwards the best layer at or below it that the downlink allows and
   * reports the change with a `layersChanged` event. Resolves when the server accepted the
   * request; rejects with `ServerError` (e.g. `notFound`) or `ConnectionError`.
   */
  async setPreferredLayer(spatial: number, temporal?: number): Promise<void> {
    checkLayerIndex('spatial', spatial);
    if (temporal !== undefined) checkLayerIndex('temporal', temporal);
    if (this.isEnded) {
      throw new ConnectionError(
        ConnectionErrorReason.InvalidState,
        `setPreferredLayer() on ended subscription ${this.subscriptionId}`,
      );
    }
    const layer: PreferredLayer = temporal === undefined ? { spatial } : { spatial, temporal };
    await this.requestLayer(this.subscriptionId, layer);
    this.preferred = layer;
  }

  /** Resolves when the track arrives; rejects if the subscription ends first. */
  waitForTrack(): Promise<RemoteTrack> {
    return this.arrived;
  }

  /** Statistics of this subscription's receiver (`inbound-rtp` and friends), once the track arrived. */
  async getStats(): Promise<RTCStatsReport | undefined> {
    return this.receiver?.getStats();
  }

  /** @internal Called by the room when the track arrives. */
  attach(remote: RemoteTrack, receiver: RTCRtpReceiver | undefined): void {
    if (this.isEnded || this.remote !== undefined) return;
    this.remote = remote;
    this.receiver = receiver;
    this.settle.resolve(remote);
  }

  /** @internal Called by the room on `layersChanged` for this subscription. */
  updateLayers(current: LayerRef | undefined, target: LayerRef, reason: LayerChangeReason): void {
    this.current = current;
    this.target = target;
    this.lastReason = reason;
  }

  /** @internal Called by the room when the subscription is over. */
  end(): void {
    if (this.isEnded) return;
    this.isEnded = true;
    this.settle.reject(new SubscriptionEndedError(this.subscriptionId));
  }
}

function checkLayerIndex(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 255) {
    throw new RangeError(`${name} layer must be an integer from 0 to 255, got ${value}`);
  }
}
