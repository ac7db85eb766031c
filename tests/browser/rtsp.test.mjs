// RTSP ingest end to end: GStreamer's RTSP server (tests/rtsp/serve.py: a test pattern and a
// 440 Hz tone, H.264 with a 2 s GOP, AAC or PCMU) on loopback, a real `sluice` pulling it from
// its TOML `[[rtsp_sources]]`, and headless Chromium viewers on the watch page.
//
// Measured: frames decoded and audio energy for H.264 + AAC and H.264 + PCMU; join to first
// frame (p95) at arbitrary points of the GOP; the camera killed and restarted → the viewer
// plays again, without reloading, within 5 s.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { REPO, closePage, launchBrowser, openPage, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';

const ROOM_AAC = uniqueRoom('rtsp-aac');
const ROOM_PCMU = uniqueRoom('rtsp-pcmu');
// As many as the RTMP test's, so the two p95 figures compare.
const JOINS = 40;

let server;
let browser;
let configDir;
const pages = [];
const cameras = new Set();

/** Starts tests/rtsp/serve.py on `port` (0: any); resolves once it listens. */
async function startCamera(port, audio) {
  const child = spawn('/usr/bin/python3', [join(REPO, 'tests/rtsp/serve.py'), String(port), '--audio', audio], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  cameras.add(child);
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const lines = createInterface({ input: child.stdout });
  const ready = await Promise.race([
    new Promise((resolve) => lines.once('line', resolve)),
    child.exited.then((exit) => `exited ${JSON.stringify(exit)}`),
    new Promise((resolve) => setTimeout(() => resolve('timeout'), 10_000)),
  ]);
  const match = /^ready (\d+)$/.exec(ready);
  assert.ok(match, `the RTSP server did not start: ${ready}`);
  child.port = Number(match[1]);
  return child;
}

async function stopCamera(camera) {
  camera.kill('SIGKILL');
  await camera.exited;
  cameras.delete(camera);
}

let aacCamera;
let pcmuCamera;

before(async () => {
  aacCamera = await startCamera(0, 'aac');
  pcmuCamera = await startCamera(0, 'pcmu');
  configDir = mkdtempSync(join(tmpdir(), 'sluice-rtsp-'));
  const config = join(configDir, 'sluice.toml');
  writeFileSync(
    config,
    [
      '[[rtsp_sources]]',
      `url = "rtsp://127.0.0.1:${aacCamera.port}/cam"`,
      `room = "${ROOM_AAC}"`,
      'identity = "camera"',
      '',
      '[[rtsp_sources]]',
      `url = "rtsp://127.0.0.1:${pcmuCamera.port}/cam"`,
      `room = "${ROOM_PCMU}"`,
      'identity = "camera"',
      'transport = "tcp"',
      '',
    ].join('\n'),
  );
  server = await startServer('rtsp', { env: { SLUICE_CONFIG: config } });
  browser = await launchBrowser();
});

after(async () => {
  for (const camera of cameras) camera.kill('SIGKILL');
  await browser?.close();
  await server?.stop();
  if (configDir) rmSync(configDir, { recursive: true, force: true });
});

/** In the watch page: inbound video/audio stats of its subscriptions. */
async function watchStats() {
  const room = window.sluiceWatch.room;
  const out = { framesDecoded: 0, frameWidth: 0, frameHeight: 0, energy: 0, audioPackets: 0 };
  if (room === undefined) return out;
  for (const sub of room.subscriptions.values()) {
    const report = await sub.getStats();
    report?.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'video') {
        out.framesDecoded = s.framesDecoded ?? 0;
        out.frameWidth = s.frameWidth ?? 0;
        out.frameHeight = s.frameHeight ?? 0;
      } else {
        out.energy = s.totalAudioEnergy ?? 0;
        out.audioPackets = s.packetsReceived ?? 0;
      }
    });
  }
  return out;
}

async function openWatchPage(room, label) {
  // The SDK mode (`?sdk`): these tests read the page's room, subscriptions and warnings.
  const page = await openPage(browser, `${server.url}/watch/${encodeURIComponent(room)}?sdk`, label);
  pages.push(page);
  await page.evaluate(() => {
    window.removed = [];
    const attach = () => {
      if (window.sluiceWatch.room === undefined) return setTimeout(attach, 20);
      window.sluiceWatch.room.on('publicationRemoved', (e) => window.removed.push(e.publicationId));
    };
    attach();
  });
  return page;
}

/** Nearest-rank quantile. */
const quantile = (values, q) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
};

/**
 * One viewer connects (subscriber connection up, with the audio), then subscribes to the video
 * `count` times at arbitrary points of the 2 s GOP, timing subscribe → first frame presented.
 */
async function measureJoins(room, count) {
  const page = await openPage(browser, server.url, 'joiner');
  pages.push(page);
  const ttffs = await page.evaluate(
    async ({ room, count }) => {
      const query = new URLSearchParams({ room, identity: `joiner-${Math.random().toString(36).slice(2, 8)}` });
      const { token } = await (await fetch(`/dev/token?${query}`)).json();
      const sfu = new window.Sluice.Room();
      await sfu.connect(`ws://${location.host}/ws`, token);
      for (const deadline = performance.now() + 20_000; sfu.publications.size < 2 && performance.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const publications = [...sfu.publications.values()];
      const audio = await sfu.subscribe(publications.find((p) => p.kind === 'audio').publicationId);
      await audio.waitForTrack();
      const pc = sfu.peerConnection('subscriber');
      for (const start = performance.now(); pc.connectionState !== 'connected' && performance.now() - start < 10_000; ) {
        await new Promise((r) => setTimeout(r, 5));
      }
      const out = [];
      for (let i = 0; i < count; i++) {
        await new Promise((r) => setTimeout(r, Math.random() * 900));
        const video = document.createElement('video');
        video.muted = true;
        video.autoplay = true;
        video.playsInline = true;
        document.body.append(video);
        const firstFrame = new Promise((resolve) => {
          video.requestVideoFrameCallback((_now, meta) => resolve(meta.presentationTime));
          setTimeout(() => resolve(undefined), 5_000);
        });
        const startedAt = performance.now();
        const sub = await sfu.subscribe(publications.find((p) => p.kind === 'video').publicationId);
        sub.waitForTrack().then(({ stream }) => {
          video.srcObject = stream;
          void video.play();
        });
        const presentedAt = await firstFrame;
        out.push(presentedAt === undefined ? undefined : presentedAt - startedAt);
        await sfu.unsubscribe(sub.subscriptionId);
        video.remove();
      }
      await sfu.disconnect();
      return out;
    },
    { room, count },
  );
  await closePage(page);
  pages.splice(pages.indexOf(page), 1);
  return ttffs;
}

test('RTSP H.264 + AAC and H.264 + PCMU: pictures and sound in the watch page', { timeout: 90_000 }, async () => {
  await withDiagnostics('rtsp-codecs', server, () => pages, async () => {
    for (const [room, label] of [[ROOM_AAC, 'aac'], [ROOM_PCMU, 'pcmu']]) {
      const viewer = await openWatchPage(room, `viewer-${label}`);
      const media = await waitFor(
        `${label}: ≥ 60 frames and audio energy`,
        () => viewer.evaluate(watchStats),
        (s) => s.framesDecoded >= 60 && s.energy > 0,
        { timeoutMs: 30_000, intervalMs: 250 },
      );
      console.log(`RTSP_${label.toUpperCase()} frames=${media.framesDecoded} ${media.frameWidth}x${media.frameHeight} energy=${media.energy.toFixed(4)} audioPackets=${media.audioPackets}`);
      assert.equal(media.frameWidth, 640);
      assert.equal(media.frameHeight, 360);
      await closePage(viewer);
      pages.splice(pages.indexOf(viewer), 1);
    }
  });
});

test('RTSP join to first frame with a 2 s GOP', { timeout: 120_000 }, async () => {
  await withDiagnostics('rtsp-join', server, () => pages, async () => {
    const ttffs = await measureJoins(ROOM_AAC, JOINS);
    const p95 = quantile(ttffs.map((t) => t ?? Infinity), 0.95);
    const shown = ttffs.filter((t) => t !== undefined);
    console.log(`RTSP_JOIN_TTFF_MS ${ttffs.map((t) => Math.round(t)).join(' ')} p50=${Math.round(quantile(shown, 0.5))} p95=${Math.round(p95)} max=${Math.round(Math.max(...shown))}`);
    assert.ok(ttffs.every((t) => t !== undefined), `a join showed no frame within 5 s: ${ttffs}`);
    assert.ok(p95 <= 300, `join p95 ${Math.round(p95)} ms > 300 ms`);
  });
});

test('RTSP camera killed and restarted: the viewer plays again within 5 s, same publications', { timeout: 90_000 }, async () => {
  await withDiagnostics('rtsp-restart', server, () => pages, async () => {
    const viewer = await openWatchPage(ROOM_AAC, 'viewer-restart');
    await waitFor('frames before the restart', () => viewer.evaluate(watchStats), (s) => s.framesDecoded >= 30 && s.energy > 0, {
      timeoutMs: 30_000,
      intervalMs: 250,
    });
    const publications = await viewer.evaluate(() => [...window.sluiceWatch.playing.keys()].sort());
    const port = aacCamera.port;
    await stopCamera(aacCamera);
    // Away for a second (a camera rebooting takes longer; the retry delay doubles meanwhile).
    await new Promise((r) => setTimeout(r, 1_000));
    let before = await viewer.evaluate(watchStats);
    let settled = false;
    for (const deadline = Date.now() + 5_000; !settled && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 300));
      const now = await viewer.evaluate(watchStats);
      settled = now.framesDecoded === before.framesDecoded;
      before = now;
    }
    assert.ok(settled, 'the viewer was still decoding after the camera was killed');
    const restartedAt = Date.now();
    aacCamera = await startCamera(port, 'aac');
    const listeningMs = Date.now() - restartedAt;
    await waitFor(
      'frames after the restart',
      () => viewer.evaluate(watchStats),
      (s) => s.framesDecoded > before.framesDecoded + 5,
      { timeoutMs: 10_000, intervalMs: 50 },
    );
    const resumeMs = Date.now() - restartedAt;
    const energyBefore = before.energy;
    const after = await waitFor('sound after the restart', () => viewer.evaluate(watchStats), (s) => s.energy > energyBefore, {
      timeoutMs: 5_000,
      intervalMs: 100,
    });
    console.log(`RTSP_RESTART_RESUME_MS=${resumeMs} (camera restarted → 5 new frames decoded; its start-up ${listeningMs} ms) energy=${after.energy.toFixed(4)}`);
    assert.ok(resumeMs <= 5_000, `the viewer played again ${resumeMs} ms after the camera restarted`);
    assert.deepEqual(await viewer.evaluate(() => [...window.sluiceWatch.playing.keys()].sort()), publications);
    assert.deepEqual(await viewer.evaluate(() => window.removed), [], 'no publication was removed');
  });
});
