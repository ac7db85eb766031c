// A WHEP viewer picks its layer by its bandwidth: Chromium publishes q/h/f over WHIP (a plain
// page), a plain WHEP page plays it through the UDP relay (udp-relay.mjs). Uncapped it decodes
// 1280 px; with its downlink capped below what f needs it must drop to a lower layer within
// 5 s, and with the cap lifted be back at 1280 px within 20 s; no gap between presented frames
// longer than 0.5 s at either switch (as the SDK subscriber of bandwidth.test.mjs).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { closePage, launchBrowser, startServer, uniqueRoom, withDiagnostics } from './harness.mjs';
import { floorPublisherUplink, pollUntil, report } from './probe.mjs';
import { startUdpRelay } from './udp-relay.mjs';
import { devToken, plainPage, whepFrameGap, whepPlay, whepStats, whipPublish } from './whip.mjs';

const CAP_BPS = 350_000;
const CAP_QUEUE_MS = 250;
const DOWN_LIMIT_MS = 5_000;
const UP_LIMIT_MS = 20_000;
const FREEZE_LIMIT_MS = 500;
/** Past the server's 8 s congestion hold, as in capped-downlink.mjs. */
const CAPPED_MS = 12_000;
const AFTER_SWITCH_MS = 1_000;

let server;
let browser;
let relay;
const pages = [];

before(async () => {
  server = await startServer('whep-capped');
  browser = await launchBrowser({ fps: 20 });
  relay = await startUdpRelay({ seed: 20 });
});

after(async () => {
  for (const page of pages) await closePage(page).catch(() => {});
  relay?.close();
  await browser?.close();
  await server?.stop();
});

/** Polls the viewer until its frame width satisfies `done`; the time it took, or null. */
async function widthWithin(viewer, done, timeoutMs) {
  const since = Date.now();
  const result = await pollUntil(() => whepStats(viewer), (s) => done(s.video?.frameWidth ?? 0), { timeoutMs, intervalMs: 100 });
  return { ms: result.ok ? Date.now() - since : null, width: result.value?.video?.frameWidth ?? null };
}

test('a capped WHEP viewer drops a layer and comes back when the cap lifts', { timeout: 120_000 }, async () => {
  await withDiagnostics('whep-capped', server, () => pages, async () => {
    const room = uniqueRoom('whep-capped');
    const publisher = await plainPage(browser, server, pages, 'whip-publisher');
    await floorPublisherUplink(publisher, 2_000);
    const published = await whipPublish(publisher, room, await devToken(server, room, 'whip'));
    assert.equal(published.status, 201, JSON.stringify(published));

    const viewer = await plainPage(browser, server, pages, 'whep-viewer');
    const played = await whepPlay(viewer, `/whep/${room}`, { relay });
    assert.equal(played.status, 201, JSON.stringify(played));
    const uncapped = await pollUntil(() => whepStats(viewer), (s) => s.video?.frameWidth === 1280, { timeoutMs: 25_000, intervalMs: 200 });
    const connection = await viewer.evaluate(() => ({ ice: window.whep.pc.iceConnectionState, pc: window.whep.pc.connectionState }));
    report('whep capped uncapped', { ...uncapped.value, ...connection, relay: JSON.stringify(relay.stats()) });
    assert.ok(uncapped.ok, 'uncapped, the viewer decodes 1280 px');
    assert.ok(relay.stats().down.forwarded > 0, 'media flows through the relay');
    const full = uncapped.value;

    const capAt = Date.now();
    relay.configure('down', { rateBps: CAP_BPS, queueMs: CAP_QUEUE_MS });
    const down = await widthWithin(viewer, (w) => w > 0 && w < 1280, DOWN_LIMIT_MS + 5_000);
    const downAt = down.ms === null ? Date.now() : capAt + down.ms;
    await pollUntil(() => Date.now(), (now) => now >= capAt + CAPPED_MS, { timeoutMs: CAPPED_MS + 5_000, intervalMs: 200 });
    const downGap = await whepFrameGap(viewer, downAt - 1_000, downAt + AFTER_SWITCH_MS);
    const capped = await whepStats(viewer);

    const liftAt = Date.now();
    relay.configure('down', { rateBps: Infinity });
    const up = await widthWithin(viewer, (w) => w === 1280, UP_LIMIT_MS + 5_000);
    const upAt = up.ms === null ? Date.now() : liftAt + up.ms;
    await pollUntil(() => Date.now(), (now) => now >= upAt + AFTER_SWITCH_MS, { timeoutMs: 5_000, intervalMs: 100 });
    const upGap = await whepFrameGap(viewer, upAt - 2_000, upAt + AFTER_SWITCH_MS);
    const end = await whepStats(viewer);
    report('whep capped downlink', {
      startWidth: full.video.frameWidth,
      DOWNGRADE_MS: down.ms,
      cappedWidth: down.width,
      widthAtLift: capped.video?.frameWidth,
      DOWN_MAX_FRAME_GAP_MS: downGap.maxGapMs,
      UPGRADE_MS: up.ms,
      UP_MAX_FRAME_GAP_MS: upGap.maxGapMs,
      freezes: end.video?.freezeCount,
      freezesDurationS: end.video?.totalFreezesDuration,
      relay: JSON.stringify(relay.stats()),
    });
    assert.ok(down.ms !== null && down.ms <= DOWN_LIMIT_MS, `downgrade: frameWidth < 1280 after ${down.ms ?? 'never'} ms`);
    assert.ok(up.ms !== null && up.ms <= UP_LIMIT_MS, `upgrade: frameWidth 1280 after ${up.ms ?? 'never'} ms`);
    assert.ok(downGap.maxGapMs <= FREEZE_LIMIT_MS, `downgrade: ${downGap.maxGapMs} ms without a frame`);
    assert.ok(upGap.maxGapMs <= FREEZE_LIMIT_MS, `upgrade: ${upGap.maxGapMs} ms without a frame`);
  });
});
