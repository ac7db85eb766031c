// Screen share end to end: a Chromium page shares its screen with `room.publishScreen()`
// (Chromium's fake display capture, 1280×720) and a second page in the room sees a `screen`
// publication without simulcast layers, subscribes and decodes it at the captured
// resolution; the shared track carries the `detail` content hint. Then the publisher mutes it
// and the viewer is told (`publicationMuted`) and sees `muted` on it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';
import { inbound, joinPage, report, subscribeAndDecode } from './probe.mjs';

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer('screen');
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('a shared screen reaches a viewer at full resolution, and its mute is seen', { timeout: 90_000 }, async () => {
  await withDiagnostics('screen', server, () => pages, async () => {
    const room = uniqueRoom('screen');
    const viewer = await joinPage(browser, server, room, 'viewer', { pages });
    await viewer.evaluate(() => {
      window.added = [];
      window.mutes = [];
      const room = window.probe.state.room;
      room.on('publicationAdded', (p) => window.added.push(p));
      room.on('publicationMuted', (e) => window.mutes.push({ id: e.publicationId, muted: e.publication?.muted }));
    });
    const sharer = await joinPage(browser, server, room, 'sharer', { pages });
    const shared = await sharer.evaluate(async () => {
      const pubs = await window.probe.state.room.publishScreen();
      window.screenPublications = pubs;
      return pubs.map((p) => ({
        publicationId: p.publicationId,
        kind: p.kind,
        source: p.source,
        rids: p.rids ?? null,
        contentHint: p.track.contentHint,
        label: p.track.label,
      }));
    });
    assert.equal(shared.length, 1, `one publication (no audio asked): ${JSON.stringify(shared)}`);
    const [screen] = shared;
    assert.equal(screen.kind, 'video');
    assert.equal(screen.source, 'screen');
    assert.equal(screen.rids, null, 'no simulcast by default');
    assert.equal(screen.contentHint, 'detail');

    const announced = await waitFor(
      'viewer: screen publication announced',
      () => viewer.evaluate(() => window.added),
      (added) => added.find((p) => p.publicationId === screen.publicationId),
    );
    const seen = announced.find((p) => p.publicationId === screen.publicationId);
    assert.equal(seen.source, 'screen', 'the viewer sees the source');

    const subscriptionId = await subscribeAndDecode(viewer, screen.publicationId, { minFrames: 15 });
    const stats = await inbound(viewer, subscriptionId);
    report('screen', { width: stats.frameWidth, height: stats.frameHeight, decoded: stats.framesDecoded });
    assert.equal(stats.frameWidth, 1280, 'decoded at the captured width');
    assert.equal(stats.frameHeight, 720, 'decoded at the captured height');

    await sharer.evaluate(() => window.screenPublications[0].mute());
    const mutes = await waitFor(
      'viewer: publicationMuted',
      () => viewer.evaluate(() => window.mutes),
      (mutes) => mutes.some((m) => m.id === screen.publicationId),
    );
    assert.deepEqual(mutes, [{ id: screen.publicationId, muted: true }]);
  });
});
