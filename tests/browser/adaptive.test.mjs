// Adaptive stream end to end: a Chromium publisher sends simulcast (q/h/f) and a Chromium
// subscriber hands its <video> to `subscription.attach`. Resizing the element must move the
// decoded frameWidth (1280 → 320 → 1280) through setPreferredLayer requests the SDK sends by
// itself — one per change, none for an animation's intermediate sizes — and hiding it or
// scrolling it away must pause the subscription (setSubscriptionPaused: no frame arrives) until
// it is shown again (frames at 1280 again). Then the demo page on a phone-sized viewport (390x844) with
// two participants: both video tiles inside the viewport, a screenshot in artifacts/.
//
// The pages load the demo's script, the SDK module and the stylesheet (conference.js,
// sluice-client.js, style.css) from signaling/assets/ on disk, not the copies embedded in the
// server binary, so SDK and demo changes are tested without rebuilding the server. index.html comes from the server: a
// document fulfilled by the test would count as a public page, and Chrome's local network
// access checks would then block its WebSocket to 127.0.0.1.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { REPO, installProbe, launchBrowser, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';
import {
  LAYER_WIDTH,
  RIDS,
  floorPublisherUplink,
  inbound,
  outboundRates,
  pageState,
  pollUntil,
  publishCamera,
  report,
  subscribeAndDecode,
  waitWidth,
} from './probe.mjs';

const ASSETS = join(REPO, 'signaling/assets');
const ARTIFACTS = join(REPO, 'tests/browser/artifacts');
/** From the element change to the new frameWidth: the SDK's 150 ms debounce + the server's switch (2 s in simulcast.test.mjs). */
const FOLLOW_LIMIT_MS = 2_500;
/** How long to keep waiting after a missed deadline, to report how late it was. */
const FOLLOW_GRACE_MS = 4_000;
const PHONE = { width: 390, height: 844 };

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer('adaptive');
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/**
 * Like harness.openPage, but serves the demo page's script and stylesheet from signaling/assets/ on disk,
 * and records every setPreferredLayer the page sends (window.sentLayerRequests).
 */
async function openDiskPage(url, label) {
  const context = await browser.newContext();
  const page = await context.newPage();
  pages.push(page);
  page.logs = [];
  page.label = label;
  page.on('console', (msg) => page.logs.push(`[${label} ${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => page.logs.push(`[${label} pageerror] ${err.message}`));
  const files = [
    ['/assets/conference.js', 'conference.js', 'text/javascript; charset=utf-8'],
    ['/sdk/v0/sluice-client.js', 'sluice-client.js', 'text/javascript; charset=utf-8'],
    ['/assets/style.css', 'style.css', 'text/css; charset=utf-8'],
  ];
  for (const [path, file, contentType] of files) {
    const body = readFileSync(join(ASSETS, file), 'utf8');
    await page.route((u) => u.pathname === path, (route) => route.fulfill({ status: 200, contentType, body }));
  }
  await context.addInitScript(() => {
    window.sentLayerRequests = [];
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
      try {
        const msg = JSON.parse(data);
        if (msg.type === 'setPreferredLayer') window.sentLayerRequests.push({ at: Date.now(), spatial: msg.spatial });
        if (msg.type === 'setSubscriptionPaused') window.sentLayerRequests.push({ at: Date.now(), paused: msg.paused });
      } catch {
        // Not JSON: not ours to record.
      }
      return send.call(this, data);
    };
  });
  await page.goto(url);
  await page.waitForFunction(() => typeof window.Sluice?.Room === 'function', null, { timeout: 10_000 });
  return page;
}

async function joinProbePage(room, label) {
  const page = await openDiskPage(server.url, label);
  await installProbe(page);
  await page.evaluate(({ room, label }) => window.probe.connect(room, label), { room, label });
  return page;
}

/** Applies CSS to the subscription's video element; returns the epoch ms of the change. */
function styleVideo(page, subscriptionId, css) {
  return page.evaluate(
    ({ id, css }) => {
      const { video } = window.probe.state.subs.get(id);
      Object.assign(video.style, css);
      return Date.now();
    },
    { id: subscriptionId, css },
  );
}

function layerRequests(page) {
  return page.evaluate(() => window.sentLayerRequests);
}

test('adaptive stream: the layer follows the video element size and visibility', { timeout: 150_000 }, async () => {
  await withDiagnostics('adaptive', server, () => pages, async () => {
    const room = uniqueRoom('adaptive');
    const publisher = await joinProbePage(room, 'publisher');
    // Rig: the publisher's uplink estimate is floored (see floorPublisherUplink): unfloored it can
    // stay so low on a loaded machine that f never comes within 25 s, and this test is about the
    // element's size, not the publisher's uplink.
    await floorPublisherUplink(publisher, 2_000);
    const publication = await publishCamera(publisher, { codec: 'vp8' });
    assert.deepEqual(publication.rids, RIDS, 'the publication is simulcast');

    const subscriber = await joinProbePage(room, 'subscriber');
    const subscriptionId = await subscribeAndDecode(subscriber, publication.publicationId);
    // The element starts 1280 px wide (height from the 16:9 picture) at the top of the page,
    // then the SDK watches it.
    await styleVideo(subscriber, subscriptionId, { position: 'absolute', left: '0px', top: '0px', width: '1280px', height: 'auto' });
    await subscriber.evaluate((id) => {
      const { sub, video } = window.probe.state.subs.get(id);
      video.removeAttribute('width');
      sub.attach(video);
    }, subscriptionId);
    // First the full layer, once the publisher sends it.
    const full = await pollUntil(
      () => inbound(subscriber, subscriptionId),
      (s) => s?.frameWidth === 1280,
      { timeoutMs: 25_000, intervalMs: 200 },
    );
    assert.ok(
      full.ok,
      `a 1280-px element never got the full layer: ${JSON.stringify(full.value)}; the publisher sent (kbit/s) ${JSON.stringify(await outboundRates(publisher))}`,
    );
    report('adaptive start', { frameWidth: full.value.frameWidth, requests: JSON.stringify((await layerRequests(subscriber)).map((r) => r.spatial)) });

    const steps = [
      { name: 'resize to 160 px', css: { width: '160px' }, expect: { spatial: 0 } },
      { name: 'resize to 1280 px', css: { width: '1280px' }, expect: { spatial: 2 } },
      { name: 'display:none', css: { display: 'none' }, expect: { paused: true } },
      { name: 'shown again', css: { display: 'block' }, expect: { paused: false } },
      { name: 'scrolled out of view', css: { top: '-5000px' }, expect: { paused: true } },
      { name: 'back in view', css: { top: '0px' }, expect: { paused: false } },
    ];
    const describe = (r) => (r.paused === undefined ? RIDS[r.spatial] : r.paused ? 'pause' : 'play');
    const results = [];
    for (const step of steps) {
      const requestsBefore = (await layerRequests(subscriber)).length;
      const framesBefore = (await inbound(subscriber, subscriptionId))?.framesDecoded ?? 0;
      const at = await styleVideo(subscriber, subscriptionId, step.css);
      let reached;
      let framesWhilePaused = null;
      if (step.expect.paused === true) {
        // Paused: after the request and the frames already on their way, none may arrive.
        await new Promise((r) => setTimeout(r, 800));
        const a = (await inbound(subscriber, subscriptionId))?.framesDecoded ?? 0;
        await new Promise((r) => setTimeout(r, 1_200));
        const b = (await inbound(subscriber, subscriptionId))?.framesDecoded ?? 0;
        framesWhilePaused = b - a;
        reached = { ok: b > framesBefore || a >= framesBefore, ms: null, stats: await inbound(subscriber, subscriptionId) };
      } else {
        const width = step.expect.spatial === undefined ? LAYER_WIDTH[2] : LAYER_WIDTH[step.expect.spatial];
        reached = await waitWidth(subscriber, subscriptionId, { equals: width }, { since: at, timeoutMs: FOLLOW_LIMIT_MS + FOLLOW_GRACE_MS });
        if (step.expect.paused === false) {
          // Resumed: frames must be decoded again (not only the width of the last frame).
          const resumed = await pollUntil(
            () => inbound(subscriber, subscriptionId),
            (s) => (s?.framesDecoded ?? 0) > framesBefore + 5 && s?.frameWidth === width,
            { timeoutMs: FOLLOW_LIMIT_MS + FOLLOW_GRACE_MS, intervalMs: 20, since: at },
          );
          reached = { ok: resumed.ok, ms: resumed.ms, stats: resumed.value };
        }
      }
      // Settle: no further request may follow (debounce + one request per change).
      await new Promise((r) => setTimeout(r, 400));
      const sent = (await layerRequests(subscriber)).slice(requestsBefore);
      const result = {
        step: step.name,
        expected: step.expect.paused === true ? 'paused' : `${step.expect.spatial === undefined ? LAYER_WIDTH[2] : LAYER_WIDTH[step.expect.spatial]} px`,
        CHANGE_TO_FRAMES_MS: reached.ms,
        FRAMES_WHILE_PAUSED: framesWhilePaused,
        REQUEST_AFTER_MS: sent.length > 0 ? sent[0].at - at : null,
        requested: sent.map(describe).join(','),
        frameWidth: reached.stats?.frameWidth ?? null,
        ok: reached.ok,
      };
      report(`adaptive ${step.name}`, result);
      results.push({ ...result, sent, expect: step.expect });
    }

    // A resize animation (160 → 1280 px over ~600 ms, one size per animation frame) costs one request.
    await styleVideo(subscriber, subscriptionId, { width: '160px' });
    await waitWidth(subscriber, subscriptionId, { equals: LAYER_WIDTH[0] }, { timeoutMs: FOLLOW_LIMIT_MS + FOLLOW_GRACE_MS });
    await new Promise((r) => setTimeout(r, 400));
    const beforeAnimation = (await layerRequests(subscriber)).length;
    const animation = await subscriber.evaluate(
      (id) =>
        new Promise((resolve) => {
          const { video } = window.probe.state.subs.get(id);
          const start = performance.now();
          let frames = 0;
          const step = (now) => {
            const progress = Math.min(1, (now - start) / 600);
            video.style.width = `${Math.round(160 + 1120 * progress)}px`;
            frames += 1;
            if (progress < 1) requestAnimationFrame(step);
            else resolve({ frames, endedAt: Date.now() });
          };
          requestAnimationFrame(step);
        }),
      subscriptionId,
    );
    const animated = await waitWidth(subscriber, subscriptionId, { equals: LAYER_WIDTH[2] }, { since: animation.endedAt, timeoutMs: FOLLOW_LIMIT_MS + FOLLOW_GRACE_MS });
    await new Promise((r) => setTimeout(r, 400));
    const animationRequests = (await layerRequests(subscriber)).slice(beforeAnimation);
    report('adaptive animation', {
      animationFrames: animation.frames,
      requests: animationRequests.map((r) => RIDS[r.spatial]).join(','),
      END_TO_FRAMEWIDTH_MS: animated.ms,
    });

    const sdk = await subscriber.evaluate((id) => {
      const { sub } = window.probe.state.subs.get(id);
      return { enabled: sub.adaptiveStreamEnabled, preferred: sub.preferredLayer ?? null };
    }, subscriptionId);
    const state = await pageState(subscriber);
    assert.deepEqual(state.errors, [], 'subscriber errors');
    assert.deepEqual((await pageState(publisher)).errors, [], 'publisher errors');
    for (const r of results) {
      assert.equal(r.sent.length, 1, `${r.step}: exactly one request, got ${JSON.stringify(r.sent)}`);
      if (r.expect.spatial !== undefined) assert.equal(r.sent[0].spatial, r.expect.spatial, `${r.step}: requested layer`);
      if (r.expect.paused !== undefined) assert.equal(r.sent[0].paused, r.expect.paused, `${r.step}: pause request`);
      if (r.expect.paused === true) {
        assert.equal(r.FRAMES_WHILE_PAUSED, 0, `${r.step}: frames kept arriving while paused`);
      } else {
        assert.ok(r.ok, `${r.step}: frames at ${r.expected} never came (last width ${r.frameWidth})`);
        assert.ok(r.CHANGE_TO_FRAMES_MS <= FOLLOW_LIMIT_MS, `${r.step}: ${r.expected} after ${r.CHANGE_TO_FRAMES_MS} ms`);
      }
    }
    assert.deepEqual(animationRequests.map((r) => r.spatial), [2], 'one request (f) for the whole animation');
    assert.ok(animated.ok, 'after the animation the full layer arrived');
    assert.deepEqual(sdk, { enabled: true, preferred: { spatial: 2 } }, 'the SDK state after the animation');
    assert.ok(
      state.layerEvents.some((e) => e.subscriptionId === subscriptionId && e.reason === 'requested' && e.target.spatial === 0),
      'the server reported a requested switch to q',
    );
  });
});

/** Where the demo's tiles are and whether their videos play, in CSS pixels of the viewport. */
function demoTiles(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('.tile')].map((tile) => {
      const video = tile.querySelector('video');
      const box = video.getBoundingClientRect();
      return {
        kind: tile.classList.contains('local') ? 'local' : 'remote',
        box: { x: box.x, y: box.y, width: box.width, height: box.height },
        videoWidth: video.videoWidth,
        playing: !video.paused && video.readyState >= 2,
        stats: tile.querySelector('.stats')?.textContent ?? '',
        picker: tile.querySelector('.layer-picker')?.value ?? null,
      };
    }),
  );
}

/** The remote tile's stats overlay, every field present. */
const STATS_OVERLAY = /^\d+×\d+ · \d+ fps · \d+ kb\/s · \d+ ms RTT · \d+\.\d % loss · layer [qhf]$/;

test('demo on a phone viewport: two participants, both tiles inside the screen and moving', { timeout: 90_000 }, async () => {
  await withDiagnostics('adaptive-phone', server, () => pages, async () => {
    const room = uniqueRoom('phone');
    const phone = await openDiskPage(`${server.url}/?${new URLSearchParams({ room, name: 'ann', autojoin: '1' })}`, 'ann');
    await phone.setViewportSize(PHONE);
    await openDiskPage(`${server.url}/?${new URLSearchParams({ room, name: 'ben', autojoin: '1' })}`, 'ben');
    const tiles = await waitFor(
      'ann: her preview and ben playing, with stats',
      () => demoTiles(phone),
      (list) =>
        list.length === 2 &&
        list.every((t) => t.playing && t.videoWidth > 0) &&
        // The overlay is complete once Chrome reports a frame rate (after ~1 s of frames) and it
        // names the forwarded layer once the server reported it (layersChanged).
        list.some((t) => t.kind === 'remote' && STATS_OVERLAY.test(t.stats)),
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    mkdirSync(ARTIFACTS, { recursive: true });
    const screenshot = join(ARTIFACTS, 'adaptive-phone.png');
    await phone.screenshot({ path: screenshot });
    const remote = tiles.find((t) => t.kind === 'remote');
    report('phone tiles', Object.fromEntries(tiles.map((t) => [t.kind, `${JSON.stringify(t.box)} ${t.stats}`])));
    console.log(`screenshot: ${screenshot}`);

    for (const tile of tiles) {
      const { x, y, width, height } = tile.box;
      assert.ok(width > 100 && height > 50, `${tile.kind} tile is laid out: ${JSON.stringify(tile.box)}`);
      assert.ok(x >= 0 && y >= 0 && x + width <= PHONE.width && y + height <= PHONE.height, `${tile.kind} tile inside the 390x844 viewport: ${JSON.stringify(tile.box)}`);
    }
    assert.equal(remote?.picker, 'auto', 'the remote tile starts with the adaptive layer');
    assert.match(remote?.stats ?? '', STATS_OVERLAY, 'stats overlay');
    // The remote tile is ~366 px wide at devicePixelRatio 1: h (640) is the lowest layer covering it.
    const requests = (await layerRequests(phone)).filter((r) => r.spatial !== undefined);
    assert.equal(requests.at(-1)?.spatial, 1, `adaptive request for a ${Math.round(remote.box.width)}-px tile: ${JSON.stringify(requests)}`);

    // Both tiles show moving video: three screenshots 1 s apart, decoded by the browser, per
    // tile the pixel variance (not a blank or black tile) and the largest change between two
    // of them. Chrome's fake camera moves little (a rotating sector and a counter): 1 s apart
    // a tile once changed by 0.27 (remote, right after it started) and 0.46 (local, on a
    // loaded machine); a frozen tile changes by 0.
    const shots = [];
    for (let i = 0; i < 3; i += 1) {
      if (i > 0) await new Promise((r) => setTimeout(r, 1_000));
      shots.push(await phone.screenshot());
    }
    const pixels = await phone.evaluate(
      async ({ shots, boxes }) => {
        const decode = async (b64) => {
          const img = new Image();
          img.src = `data:image/png;base64,${b64}`;
          await img.decode();
          const canvas = document.createElement('canvas');
          canvas.width = img.naturalWidth;
          canvas.height = img.naturalHeight;
          const g = canvas.getContext('2d', { willReadFrequently: true });
          g.drawImage(img, 0, 0);
          return g;
        };
        const images = await Promise.all(shots.map(decode));
        const scale = images[0].canvas.width / window.innerWidth;
        return boxes.map((box) => {
          const [x, y, w, h] = [box.x, box.y, box.width, box.height].map((v) => Math.round(v * scale));
          const data = images.map((g) => g.getImageData(x, y, w, h).data);
          const n = data[0].length / 4;
          let sum = 0;
          let sumSq = 0;
          for (let i = 0; i < data[0].length; i += 4) {
            const luma = 0.299 * data[0][i] + 0.587 * data[0][i + 1] + 0.114 * data[0][i + 2];
            sum += luma;
            sumSq += luma * luma;
          }
          const change = (pa, pb) => {
            let diff = 0;
            for (let i = 0; i < pa.length; i += 4) {
              diff += Math.abs(pa[i] - pb[i]) + Math.abs(pa[i + 1] - pb[i + 1]) + Math.abs(pa[i + 2] - pb[i + 2]);
            }
            return diff / (3 * n);
          };
          const diffs = [change(data[0], data[1]), change(data[1], data[2]), change(data[0], data[2])];
          const mean = sum / n;
          return {
            mean: Math.round(mean),
            variance: Math.round(sumSq / n - mean * mean),
            meanAbsDiffs: diffs.map((d) => +d.toFixed(2)),
            meanAbsDiff: +Math.max(...diffs).toFixed(2),
          };
        });
      },
      { shots: shots.map((buf) => buf.toString('base64')), boxes: tiles.map((t) => t.box) },
    );
    report('phone pixels', Object.fromEntries(tiles.map((t, i) => [t.kind, JSON.stringify(pixels[i])])));
    for (const [i, tile] of tiles.entries()) {
      assert.ok(pixels[i].variance > 100, `${tile.kind} tile is blank or flat: ${JSON.stringify(pixels[i])}`);
      assert.ok(pixels[i].meanAbsDiff > 0.5, `${tile.kind} tile did not move across three screenshots: ${JSON.stringify(pixels[i])}`);
    }

    // The mic button mutes the local microphone track.
    await phone.click('#mic');
    const micEnabled = await phone.evaluate(() => window.sluiceDemo.localStream.getAudioTracks().map((t) => t.enabled));
    assert.deepEqual(micEnabled, [false], 'mic muted by the button');
    assert.deepEqual(await phone.evaluate(() => window.sluiceDemo.errors), [], 'demo errors');
  });
});
