import { SubscriptionEndedError } from './errors.js';
import type { PublicationInfo } from './protocol.gen.js';

/** The media of a subscription once it has arrived on the subscriber peer connection. */
export interface RemoteTrack {
  track: MediaStreamTrack;
  /** The stream the track arrived in; its id is the subscription id. */
  stream: MediaStream;
}

/**
 * A publication the local participant receives. The media arrives after the server's next
 * offer has been answered: use `waitForTrack()` or the room's `trackSubscribed` event.
 */
export class Subscription {
  private remote: RemoteTrack | undefined;
  private receiver: RTCRtpReceiver | undefined;
  private isEnded = false;
  private readonly arrived: Promise<RemoteTrack>;
  private settle!: { resolve: (t: RemoteTrack) => void; reject: (e: Error) => void };

  constructor(
    readonly subscriptionId: string,
    readonly publicationId: string,
    /** What the room knew about the publication when subscribing, if anything. */
    readonly publication: PublicationInfo | undefined,
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

  /** @internal Called by the room when the subscription is over. */
  end(): void {
    if (this.isEnded) return;
    this.isEnded = true;
    this.settle.reject(new SubscriptionEndedError(this.subscriptionId));
  }
}
