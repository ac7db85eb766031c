/**
 * Adaptive stream: pick the simulcast layer of a subscription from the size and visibility of
 * the video elements that show it, so a thumbnail never costs a full-resolution downlink and a
 * hidden tile costs nothing (the subscription is paused).
 */

/** Settings of a subscription's adaptive stream. */
export interface AdaptiveStreamOptions {
  /**
   * The width in pixels of the publication's top (full-resolution) layer. The server does not
   * announce it, so the default is 1280: a 720p camera, the SDK's own capture default and
   * what `SIMULCAST_ENCODINGS` scales down to ¼ (320) and ½ (640). Pass the real width when
   * the app knows it (e.g. 1920 for a 1080p publisher).
   */
  sourceWidth?: number;
  /**
   * How long the elements' size and visibility must stay still before a layer is requested,
   * in milliseconds. Every change restarts the wait, so a resize animation costs one request.
   * Default: 150.
   */
  debounceMs?: number;
}

/** Default width of a publication's full-resolution layer: a 720p camera. */
export const DEFAULT_SOURCE_WIDTH = 1280;
/** Default quiet time before a layer request, in ms. */
export const DEFAULT_DEBOUNCE_MS = 150;
/**
 * How far a layer may be upscaled and still count as covering an element: ×1.1. The next
 * layer up has four times the pixels and about three times the bitrate, while a 10 % upscale
 * is not visible; so a 352-pixel tile gets the 320-wide layer, a 353-pixel one the 640-wide.
 */
export const UPSCALE_TOLERANCE = 1.1;
/** The aspect ratio assumed before the first frame tells the real one (a camera's 16:9). */
const DEFAULT_ASPECT = 16 / 9;

/** The spatial layers' widths, lowest first: layer `i` of `count` is `sourceWidth / 2^(count-1-i)`. */
export function layerWidths(sourceWidth: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => sourceWidth / 2 ** (count - 1 - i));
}

/**
 * The lowest spatial layer whose width, upscaled by at most `UPSCALE_TOLERANCE`, covers
 * `requiredWidth` device pixels; the top layer when none does; layer 0 for nothing to show.
 */
export function layerForWidth(requiredWidth: number, widths: readonly number[]): number {
  if (!(requiredWidth > 0) || widths.length === 0) return 0;
  const index = widths.findIndex((width) => width * UPSCALE_TOLERANCE >= requiredWidth);
  return index < 0 ? widths.length - 1 : index;
}

/**
 * How many CSS pixels wide the video's picture is drawn inside an element box of
 * `width` × `height`, for the element's `object-fit` and the video's aspect ratio: `contain`
 * (a video element's default) letterboxes, `cover` and `fill` crop or stretch to fill the box.
 */
export function renderedVideoWidth(width: number, height: number, objectFit: string, aspect: number): number {
  if (!(width > 0) || !(height > 0)) return 0;
  const widthAtFullHeight = height * aspect;
  return objectFit === 'cover' || objectFit === 'fill'
    ? Math.max(width, widthAtFullHeight)
    : Math.min(width, widthAtFullHeight);
}

/** What the adaptive stream needs from its subscription. */
export interface AdaptiveStreamHost {
  /** Whether the subscription is video (only video is adapted). */
  isVideo(): boolean;
  /** How many spatial layers the publication has; 0 or 1 when there is nothing to choose. */
  layerCount(): number;
  /** Sends `setPreferredLayer` with this spatial layer (all temporal layers). */
  requestLayer(spatial: number): Promise<void>;
  /** Sends `setSubscriptionPaused`: nothing shows the video, or something does again. */
  requestPaused(paused: boolean): Promise<void>;
  /** Called when a request failed; the next change of the elements retries. */
  requestFailed(error: unknown): void;
}

/** What is known of one observed element. */
interface ElementView {
  /** Content-box size in CSS pixels, from the latest ResizeObserver entry; undefined until the first. */
  width: number | undefined;
  height: number | undefined;
  /** From the latest IntersectionObserver entry; undefined (counted as visible) until the first. */
  intersecting: boolean | undefined;
}

/**
 * @internal The adaptive stream of one subscription: watches its elements with a
 * ResizeObserver and an IntersectionObserver (and the page's `visibilityState`), and after a
 * quiet period asks the host for the lowest layer covering the largest visible element, or
 * pauses the subscription when none is visible or none is observed any more (and resumes it,
 * layer first, when one is again). It never repeats a request, keeps one in flight at a time,
 * and sends nothing while the app has taken the choice over.
 */
export class AdaptiveStream {
  private readonly views = new Map<HTMLVideoElement, ElementView>();
  private resizeObserver: ResizeObserver | undefined;
  private intersectionObserver: IntersectionObserver | undefined;
  private listeningToVisibility = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private sourceWidth = DEFAULT_SOURCE_WIDTH;
  private debounceMs = DEFAULT_DEBOUNCE_MS;
  /** True once any element was observed: an adaptive stream nobody used never sends. */
  private used = false;
  /** The app chose a layer itself (`setPreferredLayer`): adaptive sends nothing. */
  private appChose = false;
  private disposed = false;
  /** The layer last sent (or being sent); undefined when the next evaluation must send. */
  private lastSent: number | undefined;
  /** Whether the subscription is paused on the server by this adaptive stream. */
  private pausedByAdaptive = false;
  private inFlight = false;
  /** A change arrived while a request was in flight: evaluate again once it settles. */
  private evaluateAfterFlight = false;

  constructor(private readonly host: AdaptiveStreamHost) {}

  /** Whether the adaptive stream picks the layer (false after an explicit layer choice). */
  get enabled(): boolean {
    return !this.appChose;
  }

  /**
   * The layer the observed elements call for now; undefined when none is visible (or none is
   * observed): then nothing needs the video at all.
   */
  wantedLayer(): number | undefined {
    const count = this.host.layerCount();
    const dpr = typeof devicePixelRatio === 'number' && devicePixelRatio > 0 ? devicePixelRatio : 1;
    const hiddenPage = typeof document !== 'undefined' && document.visibilityState === 'hidden';
    let required = 0;
    if (!hiddenPage) {
      for (const [element, view] of this.views) {
        if (view.intersecting === false || view.width === undefined || view.height === undefined) continue;
        const fit = typeof getComputedStyle === 'function' ? getComputedStyle(element).objectFit : 'contain';
        const aspect = element.videoWidth > 0 && element.videoHeight > 0 ? element.videoWidth / element.videoHeight : DEFAULT_ASPECT;
        required = Math.max(required, renderedVideoWidth(view.width, view.height, fit, aspect) * dpr);
      }
    }
    if (!(required > 0)) return undefined;
    return count <= 1 ? 0 : layerForWidth(required, layerWidths(this.sourceWidth, count));
  }

  configure(options: AdaptiveStreamOptions): void {
    if (options.sourceWidth !== undefined) {
      if (!(options.sourceWidth > 0)) throw new RangeError(`sourceWidth must be positive, got ${options.sourceWidth}`);
      this.sourceWidth = options.sourceWidth;
    }
    if (options.debounceMs !== undefined) {
      if (!(options.debounceMs >= 0)) throw new RangeError(`debounceMs must be 0 or more, got ${options.debounceMs}`);
      this.debounceMs = options.debounceMs;
    }
    if (this.used) this.schedule();
  }

  observe(element: HTMLVideoElement): void {
    if (this.disposed || this.views.has(element)) return;
    this.used = true;
    this.views.set(element, { width: undefined, height: undefined, intersecting: undefined });
    this.startObservers();
    // Both observers report an element's initial state right after `observe`, which schedules
    // the first evaluation.
    this.resizeObserver?.observe(element);
    this.intersectionObserver?.observe(element);
    if (this.resizeObserver === undefined) this.schedule();
  }

  unobserve(element: HTMLVideoElement): void {
    if (!this.views.delete(element)) return;
    this.resizeObserver?.unobserve(element);
    this.intersectionObserver?.unobserve(element);
    this.schedule();
  }

  /**
   * The app chose a layer itself: stop sending until `resume`. Returns whether the adaptive
   * stream had paused the subscription, which the app's choice should undo.
   */
  pause(): boolean {
    this.appChose = true;
    this.cancelTimer();
    const hadPaused = this.pausedByAdaptive;
    this.pausedByAdaptive = false;
    return hadPaused;
  }

  /** Adaptive picks the layer again, at once (the app's choice is replaced, even if equal). */
  resume(): void {
    if (this.disposed) return;
    this.appChose = false;
    this.lastSent = undefined;
    this.cancelTimer();
    if (this.used) this.evaluate();
  }

  /** Stops observing everything; the subscription ended. */
  dispose(): void {
    this.disposed = true;
    this.cancelTimer();
    this.resizeObserver?.disconnect();
    this.intersectionObserver?.disconnect();
    if (this.listeningToVisibility) document.removeEventListener('visibilitychange', this.onVisibilityChange);
    this.views.clear();
  }

  private startObservers(): void {
    if (this.resizeObserver === undefined && typeof ResizeObserver === 'function') {
      this.resizeObserver = new ResizeObserver((entries) => {
        for (const entry of entries) {
          const view = this.views.get(entry.target as HTMLVideoElement);
          if (view === undefined) continue;
          view.width = entry.contentRect.width;
          view.height = entry.contentRect.height;
        }
        this.schedule();
      });
    }
    if (this.intersectionObserver === undefined && typeof IntersectionObserver === 'function') {
      this.intersectionObserver = new IntersectionObserver((entries) => {
        for (const entry of entries) {
          const view = this.views.get(entry.target as HTMLVideoElement);
          if (view !== undefined) view.intersecting = entry.isIntersecting;
        }
        this.schedule();
      });
    }
    if (!this.listeningToVisibility && typeof document !== 'undefined') {
      document.addEventListener('visibilitychange', this.onVisibilityChange);
      this.listeningToVisibility = true;
    }
  }

  private readonly onVisibilityChange = (): void => this.schedule();

  /** (Re)starts the quiet period; the evaluation runs when nothing changed for `debounceMs`. */
  private schedule(): void {
    if (this.disposed || this.appChose) return;
    this.cancelTimer();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.evaluate();
    }, this.debounceMs);
  }

  private cancelTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private evaluate(): void {
    if (this.disposed || this.appChose || !this.host.isVideo()) return;
    if (this.inFlight) {
      this.evaluateAfterFlight = true;
      return;
    }
    const wanted = this.wantedLayer();
    const steps: (() => Promise<void>)[] = [];
    if (wanted === undefined) {
      if (!this.pausedByAdaptive) {
        steps.push(async () => {
          this.pausedByAdaptive = true;
          await this.host.requestPaused(true);
        });
      }
    } else {
      // The layer first, so the resumed video starts at the keyframe of the right one.
      if (this.host.layerCount() > 1 && wanted !== this.lastSent) {
        steps.push(async () => {
          this.lastSent = wanted;
          await this.host.requestLayer(wanted);
        });
      }
      if (this.pausedByAdaptive) {
        steps.push(async () => {
          this.pausedByAdaptive = false;
          await this.host.requestPaused(false);
        });
      }
    }
    if (steps.length === 0) return;
    this.inFlight = true;
    const run = async (): Promise<void> => {
      for (const step of steps) await step();
    };
    run()
      .catch((err: unknown) => {
        // Unknown what the server holds now: the next evaluation sends everything again.
        this.lastSent = undefined;
        if (!this.disposed) this.host.requestFailed(err);
      })
      .finally(() => {
        this.inFlight = false;
        if (this.evaluateAfterFlight) {
          this.evaluateAfterFlight = false;
          this.evaluate();
        }
      });
  }
}
