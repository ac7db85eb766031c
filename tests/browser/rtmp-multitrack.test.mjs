// Enhanced RTMP multitrack video end to end: ffmpeg 9 (PyPI imageio-ffmpeg, which
// scripts/test.sh installs and names in SLUICE_WHIP_FFMPEG) publishes three H.264 renditions
// (640x360, 320x180, 160x90) and AAC in one RTMP stream, as OBS's multitrack video does: the
// first as legacy FLV tags, the others as E-RTMP multitrack tags. Sluice publishes them as the
// q/h/f layers of one video publication. The SDK page sees the three rids; a plain WHEP page
// asking `?layer=q` decodes 160 px, one without a cap decodes 640 px, and each starts from the
// cached keyframe of its own layer at once, though the encoder's GOP is 10 s.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { closePage, launchBrowser, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';
import { joinPage, subscribeAndDecode } from './probe.mjs';
import { clockSource, plainPage as plainPageOf, whepPlay, whepStats } from './whip.mjs';

const ROOM = uniqueRoom('multitrack');
const KEY = `key-${Math.random().toString(36).slice(2)}-multitrack`;
/** 10 s at 30 fps: a viewer that started without the cache would mostly wait seconds. */
const GOP_FRAMES = 300;
/** How soon a WHEP viewer must show its first frame: the cache replays the last keyframe. */
const FIRST_FRAME_MS = 4_000;

let server;
let browser;
const pages = [];
let encoder;

before(async () => {
  server = await startServer('rtmp-multitrack', {
    env: { SLUICE_RTMP: '127.0.0.1:0', SLUICE_RTMP_KEYS: `${KEY}=${ROOM}/encoder` },
  });
  browser = await launchBrowser();
});

after(async () => {
  if (encoder && encoder.exitCode === null && encoder.signalCode === null) encoder.kill('SIGKILL');
  for (const page of pages) await closePage(page).catch(() => {});
  await browser?.close();
  await server?.stop();
});

const plainPage = (label) => plainPageOf(browser, server, pages, label);

/** Starts ffmpeg publishing three renditions of one source and a sine to `url`. */
function startMultitrackEncoder(ffmpeg, url) {
  const graph = `${clockSource('640x360')},split=3[out0][mid][low];[mid]scale=320:180[out1];[low]scale=160:90[out2]`;
  const args = [
    '-hide_banner', '-loglevel', 'warning', '-re',
    '-f', 'lavfi', '-i', graph,
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-map', '0:0', '-map', '0:1', '-map', '0:2', '-map', '1:a',
    '-pix_fmt', 'yuv420p', '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency',
    '-profile:v', 'baseline', '-bf', '0', '-g', String(GOP_FRAMES), '-keyint_min', String(GOP_FRAMES), '-sc_threshold', '0',
    '-c:a', 'aac', '-b:a', '64k', '-max_interleave_delta', '1',
    '-f', 'flv', url,
  ];
  const child = spawn(ffmpeg, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  child.log = [];
  child.stderr.on('data', (chunk) => child.log.push(String(chunk)));
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return child;
}

/** Plays `path` over WHEP in a new plain page; resolves with the stats once `done` holds. */
async function watch(label, path, what, done) {
  const viewer = await plainPage(label);
  const started = Date.now();
  const answer = await whepPlay(viewer, path);
  assert.equal(answer.status, 201, `WHEP POST ${path}: ${JSON.stringify(answer)}`);
  const first = await waitFor(
    `${label}: the first decoded frame`,
    () => whepStats(viewer),
    (s) => s.video?.framesDecoded > 0,
    { timeoutMs: 20_000, intervalMs: 50 },
  );
  const firstFrameMs = Date.now() - started;
  const stats = await waitFor(`${label}: ${what}`, () => whepStats(viewer), done, { timeoutMs: 20_000, intervalMs: 250 });
  console.log(`${label}: first frame after ${firstFrameMs} ms; ${JSON.stringify(stats)}`);
  return { viewer, first, stats, firstFrameMs };
}

test('ffmpeg multitrack over RTMP: three renditions become the q/h/f layers of one publication', { timeout: 120_000 }, async (t) => {
  const ffmpeg = process.env.SLUICE_WHIP_FFMPEG;
  if (!ffmpeg) {
    t.skip('SLUICE_WHIP_FFMPEG is not set (scripts/test.sh installs imageio-ffmpeg and sets it)');
    return;
  }
  const rtmpUrl = await waitFor(
    'the rtmp ingest line',
    () => server.log.map((line) => /rtmp ingest on (rtmp:\/\/[\d.:]+)\/live/.exec(line)?.[1]).find(Boolean),
    Boolean,
    { timeoutMs: 5_000, intervalMs: 50 },
  );
  encoder = startMultitrackEncoder(ffmpeg, `${rtmpUrl}/live/${KEY}`);
  try {
    await withDiagnostics('rtmp-multitrack', server, () => pages, async () => {
      const sdk = await joinPage(browser, server, ROOM, 'sdk-multitrack', { pages });
      const published = () =>
        sdk.evaluate(() =>
          [...window.probe.state.room.publications.values()].map((p) => ({ id: p.publicationId, kind: p.kind, codec: p.codec, rids: p.rids ?? [] })),
        );
      const both = await waitFor('the SDK page sees the encoder\'s video and audio', published, (p) => p.length === 2, { timeoutMs: 15_000 });
      const video = both.find((p) => p.kind === 'video');
      assert.equal(video?.codec, 'video/H264');
      assert.deepEqual(video?.rids, ['q', 'h', 'f'], 'one publication, three layers');
      assert.equal(both.find((p) => p.kind === 'audio')?.codec, 'audio/opus');

      // The SDK page plays it until the keyframe that opened the stream is 2 s behind: the
      // viewers below join mid-GOP, so only the cache of their own layer can show them a
      // picture at once.
      await subscribeAndDecode(sdk, video.id, { minFrames: 60 });
      const low = await watch('whep ?layer=q', `/whep/${ROOM}?layer=q`, 'the 160 px rendition', (s) => s.video?.framesDecoded >= 30 && s.video.frameWidth === 160);
      const full = await watch(
        'whep full',
        `/whep/${ROOM}`,
        'the 640 px rendition with sound',
        (s) => s.video?.framesDecoded >= 30 && s.video.frameWidth === 640 && s.audio?.totalAudioEnergy > 0,
      );
      for (const viewer of [low, full]) {
        assert.ok(viewer.firstFrameMs < FIRST_FRAME_MS, `first frame after ${viewer.firstFrameMs} ms, with a ${GOP_FRAMES / 30} s GOP: not from the keyframe cache`);
      }
      // The capped viewer's very first frames are its own layer's (the cap applies before the
      // replay), not the top layer's until the encoder's next keyframe.
      assert.equal(low.first.video.frameWidth, 160, `the capped viewer's first frames: ${JSON.stringify(low.first)}`);
      // Still the low layer: the cap holds while the full viewer plays 640.
      const lowAgain = await whepStats(low.viewer);
      assert.equal(lowAgain.video.frameWidth, 160);
      assert.ok(lowAgain.video.framesDecoded > low.stats.video.framesDecoded, 'the capped viewer keeps decoding');

      // A clean stop (SIGINT: ffmpeg unpublishes) removes the publication.
      encoder.kill('SIGINT');
      await waitFor('the publications end', published, (p) => p.length === 0, { timeoutMs: 15_000 });
    });
  } catch (err) {
    console.error(`--- ffmpeg log\n${encoder.log.join('')}`);
    throw err;
  }
});
