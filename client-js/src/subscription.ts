import { AdaptiveStream, type AdaptiveStreamOptions } from './adaptive.js';
import { ConnectionError, ConnectionErrorReason, SubscriptionEndedError } from './errors.js';
import type { LayerChangeReason, Layer, PublicationInfo } from './protocol.gen.js';

/** The media of a subscription once it has arrived on the subscriber peer connection. */
export interface RemoteTrack {
  /** The received track. */
  track: MediaStreamTrack;
  /** A stream holding only this track, ready for `srcObject`. */
  stream: MediaStream;
}

/** A simulcast layer to ask for: spatial index (0 = lowest, `q`) and optionally a temporal one. */
export interface PreferredLayer {
  /** Spatial layer: 0 = `q` (¼ resolution), 1 = `h` (½), 2 = `f` (full). */
  spatial: number;
  /** Highest temporal layer (0 = base frame rate); absent for all of them. */
  temporal?: number;
}

/** @internal How a subscription sends `setPreferredLayer`. */
export type LayerRequester = (subscriptionId: string, layer: PreferredLayer) => Promise<void>;

/** @internal How a subscription sends `setSubscriptionPaused`. */
export type PauseRequester = (subscriptionId: string, paused: boolean) => Promise<void>;

/**
 * A publication the local participant receives. The media arrives after the server's next
 * offer has been answered: use `waitForTrack()` or the room's `trackSubscribed` event.
 *
 * **Adaptive stream.** Pass the video elements that show the subscription to `observeElement`
 * and the SDK asks the server for the lowest simulcast layer that covers the largest visible
 * one (its rendered width × `devicePixelRatio`), and for the lowest layer (`q`) while none is
 * visible: hidden, zero-sized, scrolled out of view, in a background tab, or no element
 * observed any more. Changes are debounced (150 ms by default) so a resize animation costs one
 * request. The rule with explicit choices: `setPreferredLayer` turns the adaptive stream off
 * (the app's layer stays until it decides otherwise) and `enableAdaptiveStream()` turns it
 * back on.
 */
export class Subscription {
  private remote: RemoteTrack | undefined;
  private receiver: RTCRtpReceiver | undefined;
  private isEnded = false;
  private current: Layer | undefined;
  private target: Layer | undefined;
  private preferred: PreferredLayer | undefined;
  private lastReason: LayerChangeReason | undefined;
  private readonly adaptive: AdaptiveStream;
  private isPaused = false;
  private readonly attached = new Set<HTMLMediaElement>();
  private readonly arrived: Promise<RemoteTrack>;
  private settle!: { resolve: (t: RemoteTrack) => void; reject: (e: Error) => void };

  /** @internal Created by `Room.subscribe`. */
  constructor(
    /** The server's id of this subscription. */
    readonly subscriptionId: string,
    /** The publication received. */
    readonly publicationId: string,
    /** What the room knew about the publication when subscribing, if anything. */
    readonly publication: PublicationInfo | undefined,
    private readonly requestLayer: LayerRequester,
    private readonly requestPaused: PauseRequester = async () => {
      throw new ConnectionError(ConnectionErrorReason.InvalidState, 'this subscription cannot be paused');
    },
  ) {
    this.arrived = new Promise<RemoteTrack>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // A subscription that ends before anyone waits must not raise an unhandled rejection.
    this.arrived.catch(() => undefined);
    this.adaptive = new AdaptiveStream({
      isVideo: () => this.publication === undefined || this.publication.kind === 'video',
      layerCount: () => this.layerCount(),
      requestLayer: (spatial) => this.sendLayer({ spatial }),
      requestPaused: (paused) => this.sendPaused(paused),
      requestFailed: (error) => {
        // Nobody awaits an adaptive request: say why the layer did not follow the element.
        if (!this.isEnded) console.warn(`sluice: adaptive stream of ${this.subscriptionId}: setPreferredLayer failed`, error);
      },
    });
  }

  /** The received track, once it arrived. */
  get track(): MediaStreamTrack | undefined {
    return this.remote?.track;
  }

  /** A stream holding only the received track, once it arrived (for `srcObject`). */
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
  get currentLayer(): Layer | undefined {
    return this.current;
  }

  /** The layer the server is switching to (or stays on), from its latest `layersChanged`. */
  get targetLayer(): Layer | undefined {
    return this.target;
  }

  /** Why the layers last changed, from the latest `layersChanged`. */
  get layerChangeReason(): LayerChangeReason | undefined {
    return this.lastReason;
  }

  /**
   * The layer last asked for, by `setPreferredLayer` or by the adaptive stream (once the server
   * accepted it).
   */
  get preferredLayer(): PreferredLayer | undefined {
    return this.preferred;
  }

  /**
   * Asks for the highest simulcast layer this subscription should receive: `spatial` 0 is the
   * lowest resolution (`q`), 1 `h`, 2 `f`; `temporal` (optional) caps the frame rate (0 = base
   * layer). The server forwards the best layer at or below it that the downlink allows and
   * reports the change with a `layersChanged` event. Resolves when the server accepted the
   * request; rejects with `ServerError` (e.g. `notFound`) or `ConnectionError`.
   *
   * An explicit choice wins over the adaptive stream: this turns it off until
   * `enableAdaptiveStream()`.
   */
  async setPreferredLayer(spatial: number, temporal?: number): Promise<void> {
    checkLayerIndex('spatial', spatial);
    if (temporal !== undefined) checkLayerIndex('temporal', temporal);
    this.assertNotEnded('setPreferredLayer');
    const adaptiveHadPaused = this.adaptive.pause();
    await this.sendLayer(temporal === undefined ? { spatial } : { spatial, temporal });
    // Asking for a layer means wanting the video: undo a pause the adaptive stream made.
    if (adaptiveHadPaused) await this.sendPaused(false);
  }

  /**
   * Pauses the subscription (the server forwards nothing of it and the publisher need not send
   * the layers only it watched) or resumes it (video restarts at a fresh keyframe). The
   * adaptive stream does this by itself for video nobody can see; an explicit call turns the
   * adaptive stream off, like `setPreferredLayer`, until `enableAdaptiveStream()`.
   */
  async setPaused(paused: boolean): Promise<void> {
    this.assertNotEnded('setPaused');
    this.adaptive.pause();
    await this.sendPaused(paused);
  }

  /** Whether the subscription is paused (by `setPaused` or by the adaptive stream). */
  get paused(): boolean {
    return this.isPaused;
  }

  /**
   * Adaptive stream: starts watching a video element that shows this subscription (its size
   * with a ResizeObserver, its visibility with an IntersectionObserver and the page's
   * `visibilityState`) and picks the layer from all the watched elements, as described on the
   * class. It does not touch the element's `srcObject`. Observing an element twice is a no-op.
   * `options` (source width, debounce) apply to the whole subscription, the latest given win.
   *
   * Only simulcast video publications have layers to pick from: for others nothing is sent.
   * While the app has chosen a layer with `setPreferredLayer`, elements are watched but no
   * layer is requested until `enableAdaptiveStream()`.
   */
  observeElement(element: HTMLVideoElement, options?: AdaptiveStreamOptions): void {
    this.assertNotEnded('observeElement');
    if (options !== undefined) this.adaptive.configure(options);
    this.adaptive.observe(element);
  }

  /**
   * Stops watching an element given to `observeElement`. Once no element is watched the
   * subscription drops to the lowest layer (after the debounce, so moving a video from one
   * element to another costs nothing).
   */
  unobserveElement(element: HTMLVideoElement): void {
    this.adaptive.unobserve(element);
  }

  /**
   * Hands the layer choice back to the adaptive stream after `setPreferredLayer`, and asks for
   * the layer the watched elements need at once. Does nothing visible if no element was ever
   * observed.
   */
  enableAdaptiveStream(): void {
    this.assertNotEnded('enableAdaptiveStream');
    this.adaptive.resume();
  }

  /** True unless `setPreferredLayer` turned the adaptive stream off (see `enableAdaptiveStream`). */
  get adaptiveStreamEnabled(): boolean {
    return this.adaptive.enabled;
  }

  private async sendPaused(paused: boolean): Promise<void> {
    await this.requestPaused(this.subscriptionId, paused);
    this.isPaused = paused;
  }

  private async sendLayer(layer: PreferredLayer): Promise<void> {
    await this.requestLayer(this.subscriptionId, layer);
    this.preferred = layer;
  }

  /** Spatial layers of the publication: its rids, or `q`/`h`/`f` when the room did not know it. */
  private layerCount(): number {
    if (this.publication === undefined) return 3;
    if (this.publication.kind !== 'video') return 0;
    return this.publication.rids?.length ?? 0;
  }

  private assertNotEnded(operation: string): void {
    if (this.isEnded) {
      throw new ConnectionError(ConnectionErrorReason.InvalidState, `${operation}() on ended subscription ${this.subscriptionId}`);
    }
  }

  /** Resolves when the track arrives; rejects if the subscription ends first. */
  waitForTrack(): Promise<RemoteTrack> {
    return this.arrived;
  }

  /** Statistics of this subscription's receiver (`inbound-rtp` and friends), once the track arrived. */
  async getStats(): Promise<RTCStatsReport | undefined> {
    return this.receiver?.getStats();
  }

  /**
   * Shows the subscription in a media element: sets its `srcObject` to the track's stream
   * (once the track arrived) and plays it; for a video element it also starts the adaptive
   * stream on it (`observeElement`), so the layer follows the element's size and the
   * subscription pauses while it is hidden. Returns the element.
   */
  attach<E extends HTMLMediaElement>(element: E, options?: AdaptiveStreamOptions): E {
    this.assertNotEnded('attach');
    if (isVideoElement(element)) {
      element.playsInline = true;
      this.observeElement(element, options);
    }
    element.autoplay = true;
    this.attached.add(element);
    void this.arrived
      .then(({ stream }) => {
        if (!this.attached.has(element) || element.srcObject === stream) return;
        element.srcObject = stream;
        return element.play();
      })
      .catch(() => undefined); // ended first, or autoplay refused: the app's element, its call
    return element;
  }

  /** Undoes `attach`: stops the adaptive stream on the element and clears its `srcObject`. */
  detach(element: HTMLMediaElement): void {
    if (!this.attached.delete(element)) return;
    if (isVideoElement(element)) this.unobserveElement(element);
    if (this.remote !== undefined && element.srcObject === this.remote.stream) element.srcObject = null;
  }

  /** @internal Called by the room when the track arrives. */
  bindTrack(remote: RemoteTrack, receiver: RTCRtpReceiver | undefined): void {
    if (this.isEnded || this.remote !== undefined) return;
    this.remote = remote;
    this.receiver = receiver;
    this.settle.resolve(remote);
  }

  /** @internal Called by the room on `layersChanged` for this subscription. */
  updateLayers(current: Layer | undefined, target: Layer, reason: LayerChangeReason): void {
    this.current = current;
    this.target = target;
    this.lastReason = reason;
  }

  /** @internal Called by the room when the subscription is over. */
  end(): void {
    if (this.isEnded) return;
    this.isEnded = true;
    this.adaptive.dispose();
    this.settle.reject(new SubscriptionEndedError(this.subscriptionId));
  }
}

function checkLayerIndex(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 255) {
    throw new RangeError(`${name} layer must be an integer from 0 to 255, got ${value}`);
  }
}

function isVideoElement(element: HTMLMediaElement): element is HTMLVideoElement {
  return typeof HTMLVideoElement === 'function' ? element instanceof HTMLVideoElement : element.tagName === 'VIDEO';
}
