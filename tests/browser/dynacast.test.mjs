// Dynacast: layers nobody watches are paused at the publisher (after 3 s unneeded: the core's
// PAUSE_DELAY). With both subscribers on q the
// publisher's h and f encodings go inactive (server `publisherLayers` → the SDK sets
// `active = false`); a subscriber asking for f brings f back, and its video reaches 1280 px
// within 2 s of the request.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, startServer, uniqueRoom, withDiagnostics } from './harness.mjs';
import {
  encodingState,
  inbound,
  joinPage,
  pageState,
  pollUntil,
  publishCamera,
  report,
  setPreferredLayer,
  subscribeAndDecode,
  waitWidth,
} from './probe.mjs';

const PAUSE_LIMIT_MS = 5_000;
const RESUME_LIMIT_MS = 2_000;

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer('dynacast');
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The SDK's applied state and the outbound stats of the publisher, per rid. */
async function publisherView(publisher, publicationId) {
  const applied = await publisher.evaluate((id) => window.probe.publisherLayers(id), publicationId);
  const sdk = Object.fromEntries((applied ?? []).map((l) => [l.rid, l.active]));
  const [q, h, f] = await Promise.all(['q', 'h', 'f'].map((rid) => encodingState(publisher, rid)));
  return { sdk, stats: { q, h, f } };
}

test('layers nobody watches are paused and resumed on demand', { timeout: 90_000 }, async () => {
  await withDiagnostics('dynacast', server, () => pages, async () => {
    const room = uniqueRoom('dynacast');
    const publisher = await joinPage(browser, server, room, 'publisher', { pages });
    const publication = await publishCamera(publisher, { codec: 'vp8' });
    const subscribers = [];
    const subscriptions = [];
    for (const label of ['subscriber-1', 'subscriber-2']) {
      const page = await joinPage(browser, server, room, label, { pages });
      subscribers.push(page);
      subscriptions.push(await subscribeAndDecode(page, publication.publicationId));
    }

    // Everyone on q: h and f must stop, and stay stopped.
    for (const [i, page] of subscribers.entries()) await setPreferredLayer(page, subscriptions[i], 0);
    const allOnQ = Date.now();
    const paused = await pollUntil(
      () => publisherView(publisher, publication.publicationId),
      (v) =>
        v.sdk.q === true &&
        v.sdk.h === false &&
        v.sdk.f === false &&
        v.stats.h.known &&
        v.stats.h.pausedThroughout &&
        v.stats.f.known &&
        v.stats.f.pausedThroughout &&
        v.stats.q.sending,
      { timeoutMs: PAUSE_LIMIT_MS + 1_000 + 3_000, intervalMs: 100 },
    );
    const pausedAt = Math.max(paused.value.stats.h.pausedSince ?? Infinity, paused.value.stats.f.pausedSince ?? Infinity);
    const widths = await Promise.all(subscribers.map((page, i) => inbound(page, subscriptions[i])));
    const appliedBefore = (await pageState(publisher)).appliedEvents.length;
    report('paused', {
      DYNACAST_PAUSE_MS: paused.ok ? pausedAt - allOnQ : null,
      sdk: paused.value.sdk,
      statsActive: { q: paused.value.stats.q.active, h: paused.value.stats.h.active, f: paused.value.stats.f.active },
      framesDelta1s: { q: paused.value.stats.q.framesDelta, h: paused.value.stats.h.framesDelta, f: paused.value.stats.f.framesDelta },
      subscriberWidths: widths.map((s) => s.frameWidth),
    });

    // Subscriber 1 asks for f: it must come back, and reach the subscriber within 2 s.
    const request = await setPreferredLayer(subscribers[0], subscriptions[0], 2);
    const [resumed, reached] = await Promise.all([
      pollUntil(
        () => publisherView(publisher, publication.publicationId),
        // Sent again: bytes of f within the last second (one sample pair can miss it under load).
        (v) => v.sdk.f === true && v.stats.f.known && (v.stats.f.sending || v.stats.f.bytesDelta > 0),
        { timeoutMs: RESUME_LIMIT_MS + 3_000, intervalMs: 50, since: request.at },
      ),
      waitWidth(subscribers[0], subscriptions[0], { equals: 1280 }, { since: request.at, timeoutMs: RESUME_LIMIT_MS + 3_000 }),
    ]);
    // f keeps going: active and sending for a whole second after it came back.
    const steady = await pollUntil(
      () => publisherView(publisher, publication.publicationId),
      (v) => v.sdk.f === true && v.stats.f.sendingThroughout,
      { timeoutMs: 3_000, intervalMs: 100 },
    );
    const other = await inbound(subscribers[1], subscriptions[1]);
    const appliedEvents = (await pageState(publisher)).appliedEvents;
    const flags = (e) => e.layers.map((l) => `${l.rid}${l.active ? '+' : '-'}`).join('');
    report('resumed', {
      DYNACAST_RESUME_MS: resumed.ms,
      RESUME_WIDTH_MS: reached.ms,
      RESUME_DISPLAY_MS: reached.displayMs,
      sdk: resumed.value.sdk,
      fSteady: steady.ok,
      hActive: steady.value.stats.h.active,
      subscriber2Width: other.frameWidth,
      publisherLayersApplied: appliedEvents.map((e) => `${e.at - allOnQ}ms:${flags(e)}`).join(','),
    });
    const flapsWhilePaused = appliedEvents.slice(appliedBefore).filter((e) => e.at < request.at).length;

    for (const page of [publisher, ...subscribers]) assert.deepEqual((await pageState(page)).errors, [], `${page.label} errors`);
    assert.ok(paused.ok, `h and f were not paused (for 1 s on end) within ${PAUSE_LIMIT_MS} ms: ${JSON.stringify(paused.value)}`);
    assert.ok(pausedAt - allOnQ <= PAUSE_LIMIT_MS, `h and f paused only after ${pausedAt - allOnQ} ms`);
    assert.equal(flapsWhilePaused, 0, 'the publisher was told to change its layers while every subscriber stayed on q');
    assert.deepEqual(widths.map((s) => s.frameWidth), [320, 320], 'both subscribers see q');
    assert.ok(resumed.ok, `f did not resume: ${JSON.stringify(resumed.value)}`);
    assert.ok(steady.ok, `f did not keep sending after it resumed: ${JSON.stringify(steady.value)}`);
    assert.ok(reached.ok && reached.ms <= RESUME_LIMIT_MS, `subscriber-1 reached 1280 px after ${reached.ms ?? 'never'} ms`);
    assert.equal(other.frameWidth, 320, 'subscriber-2 stays on q');
  });
});
