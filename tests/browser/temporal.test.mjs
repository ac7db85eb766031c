// Temporal layers end to end: a Chromium publisher sends VP8 simulcast (Chrome encodes each
// layer L1T3: TID 0 is every 4th frame), a Chromium subscriber on h asks temporal 0 and then
// all temporal layers again. The decoded frame rate must drop to about a quarter and come
// back, with frames decoding all along and no freeze.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { closePage, launchBrowser, startServer, uniqueRoom, withDiagnostics } from './harness.mjs';
import {
  LAYER_WIDTH,
  RIDS,
  inbound,
  outbound,
  joinPage,
  maxFrameGap,
  pageState,
  pollUntil,
  publishCamera,
  report,
  setPreferredLayer,
  subscribeAndDecode,
  waitWidth,
} from './probe.mjs';

const SPATIAL = 1;
/** Frame rates are measured over this long, after letting a switch settle. */
const MEASURE_MS = 4_000;
const SETTLE_MS = 1_500;

let server;
let browser;
let pages = [];

before(async () => {
  // The core logs "temporal layers arrive" at debug when a layer's first TID > 0 arrives.
  server = await startServer('temporal', { env: { SLUICE_LOG: 'info,sluice_core=debug,rtc=error,webrtc=error' } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const round1 = (x) => Math.round(x * 10) / 10;

/**
 * Over `ms`: frames decoded per second by the subscriber (from framesDecoded), frames encoded
 * per second on the publisher's layer (the reference: Chrome lowers its frame rate when the
 * machine is busy), the longest frame gap and the freeze count.
 */
async function measure(page, subscriptionId, publisher, ms) {
  const from = Date.now();
  const [a, pa] = [await inbound(page, subscriptionId), await outbound(publisher)];
  await new Promise((r) => setTimeout(r, ms));
  const [b, pb] = [await inbound(page, subscriptionId), await outbound(publisher)];
  const gap = await maxFrameGap(page, subscriptionId, from, Date.now());
  const seconds = (b.at - a.at) / 1000;
  const rid = RIDS[SPATIAL];
  const fps = round1((b.framesDecoded - a.framesDecoded) / seconds);
  const encodedFps = round1((pb[rid].framesEncoded - pa[rid].framesEncoded) / seconds);
  return {
    fps,
    encodedFps,
    share: Math.round((fps / encodedFps) * 100) / 100,
    statsFps: b.framesPerSecond,
    framesDecoded: b.framesDecoded - a.framesDecoded,
    maxGapMs: gap.maxGapMs,
    freezeCount: b.freezeCount,
    frameWidth: b.frameWidth,
  };
}

async function temporalFollowsRequests() {
  const room = uniqueRoom('temporal');
  const publisher = await joinPage(browser, server, room, 'publisher', { pages });
  const publication = await publishCamera(publisher, { codec: 'vp8' });
  assert.equal(publication.codec, 'video/VP8');
  const subscriber = await joinPage(browser, server, room, 'subscriber', { pages });
  const subscriptionId = await subscribeAndDecode(subscriber, publication.publicationId);

  await setPreferredLayer(subscriber, subscriptionId, SPATIAL);
  const onLayer = await waitWidth(subscriber, subscriptionId, { equals: LAYER_WIDTH[SPATIAL] }, { timeoutMs: 25_000 });
  assert.ok(onLayer.ok, `never reached ${LAYER_WIDTH[SPATIAL]} px: ${JSON.stringify(onLayer.stats)}`);
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const full = await measure(subscriber, subscriptionId, publisher, MEASURE_MS);
  report('temporal all (before)', full);

  const down = await setPreferredLayer(subscriber, subscriptionId, SPATIAL, 0);
  const reportedT0 = await pollUntil(
    () => pageState(subscriber),
    (s) => s.layerEvents.some((e) => e.at >= down.at && e.current?.temporal === 0),
    { timeoutMs: 3_000 },
  );
  const arrive = server.log.filter((line) => line.includes('temporal layers arrive'));
  report('server', { TEMPORAL_LAYERS_ARRIVE: arrive.length, first: arrive[0]?.replace(/^.*?(layer=\d+ temporal=\d+).*$/, '$1') ?? null });
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const t0 = await measure(subscriber, subscriptionId, publisher, MEASURE_MS);
  report('temporal 0', { ...t0, reportedAfterMs: reportedT0.ms });

  const up = await setPreferredLayer(subscriber, subscriptionId, SPATIAL, 2);
  const reportedAll = await pollUntil(
    () => pageState(subscriber),
    (s) => s.layerEvents.some((e) => e.at >= up.at && e.current?.temporal === 2),
    { timeoutMs: 3_000 },
  );
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const back = await measure(subscriber, subscriptionId, publisher, MEASURE_MS);
  report('temporal all (after)', { ...back, reportedAfterMs: reportedAll.ms });

  const state = await pageState(subscriber);
  report('layersChanged', {
    events: state.layerEvents
      .map((e) => `${e.reason}:${e.current ? `${e.current.spatial}/${e.current.temporal}` : '-'}→${e.target.spatial}/${e.target.temporal}`)
      .join(','),
  });
  const end = await inbound(subscriber, subscriptionId);
  report('end', { FREEZE_COUNT: end.freezeCount, framesDropped: end.framesDropped, pliCount: end.pliCount, keyFramesDecoded: end.keyFramesDecoded });

  assert.deepEqual(state.errors, [], 'subscriber errors');
  assert.ok(arrive.length > 0, 'Chrome sent no VP8 frame above TID 0 (no temporal layers)');
  assert.ok(reportedT0.ok, 'layersChanged never reported current temporal 0');
  assert.ok(reportedAll.ok, 'layersChanged never reported current temporal 2 again');
  // All temporal layers: the subscriber decodes (about) every frame the publisher encodes.
  for (const [what, m] of [['before', full], ['after', back]]) {
    assert.ok(m.encodedFps >= 10, `${what}: the publisher encoded only ${m.encodedFps} fps, too few to judge`);
    assert.ok(m.share >= 0.85, `${what}: ${m.fps} fps decoded of ${m.encodedFps} fps encoded`);
  }
  // Chrome's L1T3: TID 0 is one frame in four.
  assert.ok(t0.share >= 0.18 && t0.share <= 0.33, `temporal 0: ${t0.fps} fps decoded of ${t0.encodedFps} fps encoded`);
  assert.ok(t0.framesDecoded > 0 && t0.frameWidth === LAYER_WIDTH[SPATIAL], 'frames still decode at temporal 0, same layer');
  // A base-layer frame every ~133 ms at 30 fps: a gap far longer than four frames is a stall.
  assert.ok(t0.maxGapMs < Math.max(500, (4_000 / t0.encodedFps) * 2), `longest frame gap at temporal 0: ${t0.maxGapMs} ms`);
  assert.equal(end.freezeCount, full.freezeCount, `freezes during the test (totalFreezesDuration ${end.totalFreezesDuration} s)`);

  for (const page of [subscriber, publisher]) await closePage(page);
  pages = [];
}

test('VP8 L1T3: temporal 0 quarters the frame rate, temporal 2 restores it', { timeout: 90_000 }, async () => {
  await withDiagnostics('temporal', server, () => pages, () => temporalFollowsRequests());
});
