// Publisher liveness, end to end: a Chromium publisher's browser process is killed (SIGKILL: no
// leave, no WebSocket close, no DTLS close) while a second Chromium watches its camera through
// the SDK and on the /watch page. The viewer must get `publicationStalled` within 2 s of the
// kill, and the /watch player must show its stalled state.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, CHROMIUM_PATH, launchBrowser, openPage, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';
import { joinPage, publishCamera, report, subscribeAndDecode } from './probe.mjs';

/** What subscribers are promised: told within 2 s that a publisher's media stopped. */
const STALL_GOAL_MS = 2_000;

let server;
let viewerBrowser;
let publisherServer;
const pages = [];

before(async () => {
  server = await startServer('liveness');
  viewerBrowser = await launchBrowser();
  // The publisher runs in a browser process of its own, so it can be killed like a crashed one.
  publisherServer = await chromium.launchServer({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await viewerBrowser?.close();
  await publisherServer?.kill();
  await server?.stop();
});

test('a killed browser publisher is announced stalled within 2 s', { timeout: 90_000 }, async () => {
  await withDiagnostics('liveness', server, () => pages, async () => {
    const room = uniqueRoom('liveness');
    const publisherBrowser = await chromium.connect(publisherServer.wsEndpoint());
    const publisher = await joinPage(publisherBrowser, server, room, 'publisher', { pages });
    const video = await publishCamera(publisher, { simulcast: false });

    const viewer = await joinPage(viewerBrowser, server, room, 'viewer', { pages });
    await viewer.evaluate(() => {
      window.livenessEvents = [];
      for (const name of ['publicationStalled', 'publicationResumed']) {
        window.probe.state.room.on(name, (e) => window.livenessEvents.push({ name, at: Date.now(), publicationId: e.publicationId }));
      }
    });
    await subscribeAndDecode(viewer, video.publicationId);

    const watch = await openPage(viewerBrowser, `${server.url}/watch/${encodeURIComponent(room)}`, 'watch');
    pages.push(watch);
    await waitFor(
      'watch: the picture plays',
      () => watch.evaluate(() => document.querySelector('video')?.videoWidth ?? 0),
      (width) => width > 0,
      { timeoutMs: 20_000 },
    );
    const before = await viewer.evaluate(() => window.livenessEvents.length);
    assert.equal(before, 0, 'no liveness event while the publisher sends');

    const killedAt = Date.now();
    await publisherServer.kill();
    const events = await waitFor(
      'viewer: publicationStalled',
      () => viewer.evaluate(() => window.livenessEvents),
      (events) => events.some((e) => e.name === 'publicationStalled' && e.publicationId === video.publicationId),
      { timeoutMs: 10_000, intervalMs: 20 },
    );
    const stalled = events.find((e) => e.name === 'publicationStalled');
    const stalledAfterMs = stalled.at - killedAt;
    const watchShownAt = await waitFor(
      'watch: the player shows the stalled state',
      () => watch.evaluate(() => (document.querySelector('.tile')?.classList.contains('stalled') ? Date.now() : null)),
      (at) => at !== null,
      { timeoutMs: 5_000, intervalMs: 20 },
    );
    const status = await watch.evaluate(() => document.getElementById('status')?.textContent ?? '');
    report('liveness', { STALLED_AFTER_KILL_MS: stalledAfterMs, WATCH_STALLED_AFTER_KILL_MS: watchShownAt - killedAt });
    assert.ok(stalledAfterMs <= STALL_GOAL_MS, `told ${stalledAfterMs} ms after the publisher was killed`);
    assert.match(status, /Stalled/);
  });
});
