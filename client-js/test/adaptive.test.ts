/**
 * Adaptive stream: `Subscription.observeElement` watches video elements (ResizeObserver,
 * IntersectionObserver and `document.visibilityState`, all faked here) and sends
 * `setPreferredLayer` for the lowest layer covering the largest visible element, debounced,
 * until the app picks a layer itself.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_DEBOUNCE_MS, type Subscription } from '../src/index.js';
import { layerForWidth, layerWidths, renderedVideoWidth } from '../src/adaptive.js';
import type { ClientMessage } from '../src/protocol.gen.js';
import { JOINED, createHarness, flush, type Harness, offerSdp, type Reply, type Responder, until } from './fakes.js';

/** A ResizeObserver whose notifications the test sends (`resize`). */
class FakeResizeObserver {
  static instances: FakeResizeObserver[] = [];
  readonly observed = new Set<Element>();
  disconnected = false;
  constructor(private readonly callback: (entries: { target: Element; contentRect: { width: number; height: number } }[]) => void) {
    FakeResizeObserver.instances.push(this);
  }
  observe(element: Element): void {
    this.observed.add(element);
  }
  unobserve(element: Element): void {
    this.observed.delete(element);
  }
  disconnect(): void {
    this.disconnected = true;
    this.observed.clear();
  }
  static resize(element: Element, width: number, height: number): void {
    for (const observer of FakeResizeObserver.instances) {
      if (observer.observed.has(element)) observer.callback([{ target: element, contentRect: { width, height } }]);
    }
  }
}

/** An IntersectionObserver whose notifications the test sends (`intersect`). */
class FakeIntersectionObserver {
  static instances: FakeIntersectionObserver[] = [];
  readonly observed = new Set<Element>();
  disconnected = false;
  constructor(private readonly callback: (entries: { target: Element; isIntersecting: boolean }[]) => void) {
    FakeIntersectionObserver.instances.push(this);
  }
  observe(element: Element): void {
    this.observed.add(element);
  }
  unobserve(element: Element): void {
    this.observed.delete(element);
  }
  disconnect(): void {
    this.disconnected = true;
    this.observed.clear();
  }
  static intersect(element: Element, isIntersecting: boolean): void {
    for (const observer of FakeIntersectionObserver.instances) {
      if (observer.observed.has(element)) observer.callback([{ target: element, isIntersecting }]);
    }
  }
}

/** The page: `visibilityState` and its `visibilitychange` event. */
class FakeDocument extends EventTarget {
  visibilityState: DocumentVisibilityState = 'visible';
  setVisibility(state: DocumentVisibilityState): void {
    this.visibilityState = state;
    this.dispatchEvent(new Event('visibilitychange'));
  }
}

/** `object-fit` of each fake element (default `contain`, as for a real video element). */
const objectFit = new Map<object, string>();
let fakeDocument: FakeDocument;

/** A video element showing a 1280x720 picture (what the fake camera sends at full layer). */
function videoElement(fit = 'contain'): HTMLVideoElement {
  const element = { videoWidth: 1280, videoHeight: 720 };
  objectFit.set(element, fit);
  return element as unknown as HTMLVideoElement;
}

/** The element is laid out at `width` × `height` CSS pixels and visible (or not). */
function show(element: HTMLVideoElement, width: number, height = (width * 9) / 16, visible = true): void {
  FakeResizeObserver.resize(element, width, height);
  FakeIntersectionObserver.intersect(element, visible);
}

/** A simulcast camera publication (the default fake PU4 has no rids) and a non-simulcast one. */
const SIMULCAST_JOINED: Reply = {
  ...JOINED,
  publications: [
    ...(JOINED.type === 'joined' ? JOINED.publications : []),
    { publicationId: 'PU5', participantId: 'PA1', kind: 'video', source: 'camera', codec: 'video/VP8', rids: ['q', 'h', 'f'] },
  ],
} as Reply;

function harness(responder?: Responder): Harness {
  return createHarness({ responder: (msg) => (msg.type === 'join' ? SIMULCAST_JOINED : responder?.(msg)) });
}

async function subscribed(h: Harness, publicationId = 'PU5'): Promise<Subscription> {
  await h.connect();
  return h.room.subscribe(publicationId);
}

/** The spatial layers sent so far, in order. */
function requested(h: Harness): number[] {
  return h.socket().sentOfType('setPreferredLayer').map((m) => m.spatial);
}

/** What the adaptive stream asked of the server so far, in order: a layer, `pause` or `play`. */
function requests(h: Harness): (number | 'pause' | 'play')[] {
  const out: (number | 'pause' | 'play')[] = [];
  for (const m of h.socket().sent) {
    if (m.type === 'setPreferredLayer') out.push(m.spatial);
    if (m.type === 'setSubscriptionPaused') out.push(m.paused ? 'pause' : 'play');
  }
  return out;
}

/** Lets `ms` of fake time pass, then lets the fake server answer. */
async function elapse(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
  await flush();
}

beforeEach(() => {
  FakeResizeObserver.instances = [];
  FakeIntersectionObserver.instances = [];
  objectFit.clear();
  fakeDocument = new FakeDocument();
  vi.stubGlobal('ResizeObserver', FakeResizeObserver);
  vi.stubGlobal('IntersectionObserver', FakeIntersectionObserver);
  vi.stubGlobal('document', fakeDocument);
  vi.stubGlobal('devicePixelRatio', 1);
  vi.stubGlobal('getComputedStyle', (element: object) => ({ objectFit: objectFit.get(element) ?? 'contain' }));
  // Only the debounce timer is faked: the fake server answers through setImmediate/microtasks.
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
});

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

describe('layer choice', () => {
  it('assumes a 1280-wide source with ¼ and ½ layers when the width is not given', () => {
    expect(layerWidths(1280, 3)).toEqual([320, 640, 1280]);
    expect(layerWidths(1920, 2)).toEqual([960, 1920]);
  });

  it('takes the lowest layer that covers the width with at most 10 % upscaling', () => {
    const widths = [320, 640, 1280];
    const cases: [number, number][] = [
      [0, 0],
      [160, 0],
      [320, 0],
      [352, 0],
      [353, 1],
      [704, 1],
      [705, 2],
      [1280, 2],
      [3840, 2],
    ];
    for (const [width, layer] of cases) expect([width, layerForWidth(width, widths)]).toEqual([width, layer]);
  });

  it('measures the picture as drawn: letterboxed for contain, cropped for cover', () => {
    // A 16:9 picture in a square 400x400 box.
    expect(renderedVideoWidth(400, 400, 'contain', 16 / 9)).toBe(400);
    expect(renderedVideoWidth(400, 400, 'cover', 16 / 9)).toBeCloseTo(711.1, 1);
    expect(renderedVideoWidth(400, 0, 'cover', 16 / 9)).toBe(0);
  });
});

describe('observeElement', () => {
  it('asks for the layer that covers the element, once its size settled', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video);
    show(video, 160);
    await elapse(DEFAULT_DEBOUNCE_MS - 10);
    expect(requested(h)).toEqual([]);
    await elapse(10);
    expect(requested(h)).toEqual([0]);
    expect(sub.preferredLayer).toEqual({ spatial: 0 });

    show(video, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS);
    show(video, 640);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([0, 2, 1]);
    expect(h.socket().sentOfType('setPreferredLayer')[0]).toMatchObject({ subscriptionId: sub.subscriptionId });
  });

  it('sends one request for a whole resize animation, and none for a size that needs the same layer', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video);
    // 60 frames at 16 ms from 200 to 1200 px: the debounce restarts on each one.
    for (let frame = 0; frame <= 60; frame++) {
      show(video, 200 + (1000 * frame) / 60);
      await elapse(16);
    }
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([2]);
    show(video, 1000);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([2]);
  });

  it('counts device pixels (devicePixelRatio)', async () => {
    vi.stubGlobal('devicePixelRatio', 2);
    const h = harness();
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video);
    show(video, 300); // 600 device pixels: h
    await elapse(DEFAULT_DEBOUNCE_MS);
    show(video, 400); // 800 device pixels: f
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([1, 2]);
  });

  it('follows object-fit: a cropped (cover) square tile needs more pixels than a letterboxed one', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const contained = videoElement('contain');
    sub.observeElement(contained);
    show(contained, 400, 400);
    await elapse(DEFAULT_DEBOUNCE_MS);
    const covered = videoElement('cover');
    sub.observeElement(covered);
    show(covered, 400, 400);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([1, 2]);
  });

  it('serves the largest visible element of several', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const thumbnail = videoElement();
    const stage = videoElement();
    sub.observeElement(thumbnail);
    sub.observeElement(stage);
    show(thumbnail, 160);
    show(stage, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS);
    show(stage, 1280, 720, false); // scrolled out of view
    await elapse(DEFAULT_DEBOUNCE_MS);
    show(stage, 600);
    await elapse(DEFAULT_DEBOUNCE_MS);
    sub.unobserveElement(stage);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([2, 0, 1, 0]);
  });

  it('pauses the subscription when hidden, zero-sized, in a background tab or no longer observed', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video);
    const steps: [string, () => void][] = [
      ['visible', () => show(video, 1280)],
      ['out of view', () => FakeIntersectionObserver.intersect(video, false)],
      ['back in view', () => FakeIntersectionObserver.intersect(video, true)],
      ['display:none (0x0)', () => FakeResizeObserver.resize(video, 0, 0)],
      ['laid out small', () => FakeResizeObserver.resize(video, 320, 180)],
      ['tab hidden', () => fakeDocument.setVisibility('hidden')],
      ['tab visible', () => fakeDocument.setVisibility('visible')],
      ['unobserved', () => sub.unobserveElement(video)],
    ];
    const seen: [string, (number | 'pause' | 'play')[], boolean][] = [];
    for (const [step, act] of steps) {
      const before = requests(h).length;
      act();
      await elapse(DEFAULT_DEBOUNCE_MS);
      seen.push([step, requests(h).slice(before), sub.paused]);
    }
    expect(seen).toEqual([
      ['visible', [2], false],
      ['out of view', ['pause'], true],
      ['back in view', ['play'], false],
      ['display:none (0x0)', ['pause'], true],
      // The layer first, so the resumed video starts on the right layer's keyframe.
      ['laid out small', [0, 'play'], false],
      ['tab hidden', ['pause'], true],
      ['tab visible', ['play'], false],
      ['unobserved', ['pause'], true],
    ]);
  });

  it('an explicit layer choice undoes a pause the adaptive stream made', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video);
    show(video, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS);
    FakeIntersectionObserver.intersect(video, false);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(sub.paused).toBe(true);
    await sub.setPreferredLayer(1);
    expect(requests(h).slice(-2)).toEqual([1, 'play']);
    expect(sub.paused).toBe(false);
    expect(sub.adaptiveStreamEnabled).toBe(false);
  });

  it('setPaused is an explicit choice: adaptive stays out until enableAdaptiveStream', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video);
    show(video, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS);
    await sub.setPaused(true);
    FakeIntersectionObserver.intersect(video, true);
    FakeResizeObserver.resize(video, 640, 360);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requests(h)).toEqual([2, 'pause']);
    expect(sub.paused).toBe(true);
  });

  it('costs nothing when an element is replaced by another within the debounce', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const first = videoElement();
    sub.observeElement(first);
    show(first, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS);
    const second = videoElement();
    sub.unobserveElement(first);
    sub.observeElement(second);
    show(second, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([2]);
  });

  it('uses the given source width and debounce', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video, { sourceWidth: 1920, debounceMs: 50 });
    show(video, 900); // layers 480/960/1920: 960 covers 900
    await elapse(50);
    expect(requested(h)).toEqual([1]);
    expect(() => sub.observeElement(video, { sourceWidth: 0 })).toThrow(RangeError);
  });

  it('asks no layer of a publication without simulcast layers (only pauses it), nothing of audio', async () => {
    const h = harness();
    await h.connect();
    const single = await h.room.subscribe('PU4'); // video without rids
    const audio = await h.room.subscribe('PU1');
    const elements = [single, audio].map((sub) => {
      const video = videoElement();
      sub.observeElement(video);
      show(video, 1280);
      return video;
    });
    await elapse(DEFAULT_DEBOUNCE_MS * 2);
    expect(requests(h)).toEqual([]);
    for (const video of elements) FakeIntersectionObserver.intersect(video, false);
    await elapse(DEFAULT_DEBOUNCE_MS * 2);
    const paused = h.socket().sentOfType('setSubscriptionPaused');
    expect(paused.map((m) => [m.subscriptionId, m.paused])).toEqual([[single.subscriptionId, true]]);
  });

  it('keeps one request in flight and then sends only the latest need', async () => {
    const held: ClientMessage[] = [];
    const h = harness((msg) => {
      if (msg.type !== 'setPreferredLayer' || held.length > 0) return undefined;
      held.push(msg);
      return null; // the first one stays unanswered until the test answers it
    });
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video);
    show(video, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS);
    show(video, 160);
    await elapse(DEFAULT_DEBOUNCE_MS);
    show(video, 640);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([2]);
    const [first] = held;
    h.socket().receive({ type: 'ok', requestId: first?.requestId });
    await flush();
    expect(requested(h)).toEqual([2, 1]);
  });

  it('retries after a refused request on the next change, and warns', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    let refuse = true;
    const h = harness((msg) =>
      msg.type === 'setPreferredLayer' && refuse ? { type: 'error', code: 'rateLimited', message: 'slow down' } : undefined,
    );
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video);
    show(video, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(sub.preferredLayer).toBeUndefined();
    refuse = false;
    show(video, 1200); // the same layer: sent again because the first did not go through
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([2, 2]);
    expect(sub.preferredLayer).toEqual({ spatial: 2 });
  });

  it('stops watching when the subscription ends', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video);
    show(video, 1280);
    await h.room.unsubscribe(sub.subscriptionId);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([]);
    expect(FakeResizeObserver.instances.every((o) => o.disconnected)).toBe(true);
    expect(FakeIntersectionObserver.instances.every((o) => o.disconnected)).toBe(true);
    expect(() => sub.observeElement(video)).toThrow(/ended subscription/);
  });
});

describe('explicit layer choice', () => {
  it('setPreferredLayer turns the adaptive stream off until enableAdaptiveStream', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video);
    show(video, 160);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(sub.adaptiveStreamEnabled).toBe(true);

    await sub.setPreferredLayer(2);
    expect(sub.adaptiveStreamEnabled).toBe(false);
    show(video, 640);
    await elapse(DEFAULT_DEBOUNCE_MS);
    show(video, 160, 90, false);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([0, 2]);
    expect(sub.preferredLayer).toEqual({ spatial: 2 });

    // Back to adaptive: at once (no debounce). The element is out of view now: paused.
    sub.enableAdaptiveStream();
    await flush();
    expect(requests(h)).toEqual([0, 2, 'pause']);
    expect(sub.adaptiveStreamEnabled).toBe(true);
    show(video, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS);
    // Adaptive forgot what the app sent: its own layer first, then the video resumes.
    expect(requests(h)).toEqual([0, 2, 'pause', 2, 'play']);
    show(video, 160);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requests(h)).toEqual([0, 2, 'pause', 2, 'play', 0]);
  });

  it('a change pending in the debounce does not overtake the app choice', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const video = videoElement();
    sub.observeElement(video);
    show(video, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS / 2);
    await sub.setPreferredLayer(0);
    await elapse(DEFAULT_DEBOUNCE_MS * 2);
    expect(requested(h)).toEqual([0]);
  });

  it('room.setPreferredLayer counts as an explicit choice too', async () => {
    const h = harness();
    const sub = await subscribed(h);
    await h.room.setPreferredLayer(sub.subscriptionId, 1);
    const video = videoElement();
    sub.observeElement(video);
    show(video, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requested(h)).toEqual([1]);
    expect(sub.adaptiveStreamEnabled).toBe(false);
  });
});

describe('attach', () => {
  it('shows the track in the element once it arrives, adapts to it, and detach undoes both', async () => {
    const h = harness();
    const sub = await subscribed(h);
    const element = Object.assign(videoElement(), {
      tagName: 'VIDEO',
      srcObject: null as MediaStream | null,
      played: 0,
      play(): Promise<void> {
        this.played++;
        return Promise.resolve();
      },
    });
    expect(sub.attach(element as unknown as HTMLVideoElement)).toBe(element);
    expect((element as unknown as HTMLVideoElement).autoplay).toBe(true);
    show(element as unknown as HTMLVideoElement, 1280);
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requests(h)).toEqual([2]);
    expect(element.srcObject).toBeNull();

    h.socket().receive({ type: 'offer', sdp: offerSdp([{ mid: '0', trackId: sub.subscriptionId }]) });
    await until(() => h.socket().sentOfType('answer').length === 1);
    h.pcs[0]?.emitTrack('0', 'video');
    const { stream } = await sub.waitForTrack();
    await flush();
    expect(element.srcObject).toBe(stream);
    expect(element.played).toBe(1);

    sub.detach(element as unknown as HTMLVideoElement);
    expect(element.srcObject).toBeNull();
    await elapse(DEFAULT_DEBOUNCE_MS);
    expect(requests(h)).toEqual([2, 'pause']);
  });
});
