// A/V sync of an RTMP publication: Debian's ffmpeg publishes a flash-and-beep source (the
// picture turns white and a 1 kHz tone sounds for the first 100 ms of every second, both from
// the same lavfi clock), Sluice converts it (H.264 passthrough, AAC → Opus), and a headless
// Chromium viewer measures the offset between each flash and its beep (onsets.mjs).
//
// The server asks subscribers for a 500 ms minimum video playout delay (--playout-delay-ms):
// the browser then holds every video frame ≥ 500 ms. Audio is only held as long if the browser
// synchronizes the two, which it does for tracks of one msid stream, by their RTCP sender
// reports. Unsynchronized, the beeps come ~300 ms before the flashes (measured: the audio path is ~150 ms slower).
//
// Sluice's sender reports map both tracks to the encoder's sampling clock (sfu/src/transport/
// reports.rs). Chrome closes the gap slowly: its synchronizer grows the audio buffer a step per
// second, and the offset goes from about −140 ms to +30 ms over some 20 s (measured, quiet and
// with one core busy). So the test lets it settle 20 s before it measures.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { launchBrowser, openPage, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';
import {
  AUDIO_EARLY_LIMIT_MS,
  AUDIO_LATE_LIMIT_MS,
  measureOnsets,
  offsetsBetween,
  reportOffsets,
  reportPlayoutDiff,
} from './onsets.mjs';

const ROOM = uniqueRoom('avsync');
const KEY = `key-${Math.random().toString(36).slice(2)}-avsync`;
const PLAYOUT_DELAY_MS = Number(process.env.AVSYNC_PLAYOUT_DELAY_MS ?? 500);
const MEASURE_MS = 8_000;

process.env.SLUICE_RTMP = '127.0.0.1:0';
process.env.SLUICE_RTMP_KEYS = `${KEY}=${ROOM}/encoder`;
process.env.SLUICE_PLAYOUT_DELAY_MS = String(PLAYOUT_DELAY_MS);

let server;
let browser;
let encoder;
const pages = [];

before(async () => {
  server = await startServer('avsync');
  browser = await launchBrowser();
});

after(async () => {
  encoder?.kill('SIGKILL');
  await browser?.close();
  await server?.stop();
});

function startEncoder(rtmpUrl) {
  const flash = "drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t,1),0.1)'";
  const beep = "aevalsrc='if(lt(mod(t,1),0.1),0.8*sin(2*PI*1000*t),0)':s=44100:c=mono";
  const args = [
    '-hide_banner', '-loglevel', 'warning', '-re',
    '-f', 'lavfi', '-i', `color=c=black:s=640x360:r=30,${flash}`,
    '-f', 'lavfi', '-i', beep,
    '-pix_fmt', 'yuv420p', '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency',
    '-profile:v', 'baseline', '-bf', '0', '-g', '60',
    '-c:a', 'aac', '-b:a', '96k', '-f', 'flv', `${rtmpUrl}/live/${KEY}`,
  ];
  const child = spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  child.log = [];
  child.stderr.on('data', (chunk) => child.log.push(String(chunk)));
  return child;
}

test('RTMP audio and video play in sync in the browser', { timeout: 120_000 }, async () => {
  await withDiagnostics('avsync', server, () => pages, async () => {
    const rtmpUrl = await waitFor(
      'the rtmp ingest line',
      () => server.log.map((line) => /rtmp ingest on (rtmp:\/\/[\d.:]+)\/live/.exec(line)?.[1]).find(Boolean),
      Boolean,
      { timeoutMs: 5_000, intervalMs: 50 },
    );
    encoder = startEncoder(rtmpUrl);
    await waitFor(
      'both RTMP publications',
      () => server.log.filter((line) => /ingest::stream_publisher: published/.test(line)).length,
      (n) => n >= 2,
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    const page = await openPage(browser, server.url, 'viewer');
    pages.push(page);
    // Let the jitter buffers and the synchronizer settle before measuring.
    const settleMs = Number(process.env.AVSYNC_SETTLE_MS ?? 20_000);
    const result = await page.evaluate(measureOnsets, { room: ROOM, measureMs: MEASURE_MS + settleMs });
    const start = Math.min(...result.flashes) + settleMs;
    const offsets = offsetsBetween(result, start);
    const median = reportOffsets('AV_OFFSET_MS', offsets);
    console.log(
      `flashes=${result.flashes.length} beeps=${result.beeps.length} frames=${result.frames}` +
        ` outputLatencyMs=${result.outputLatencyMs.toFixed(0)} ${JSON.stringify(result.stats)}`,
    );
    reportPlayoutDiff(result, start);
    for (const kind of ['audio', 'video']) {
      assert.ok(result.stats[`${kind}SenderReports`] >= 2, `the ${kind} track got ${result.stats[`${kind}SenderReports`]} sender reports`);
    }
    assert.ok(offsets.length >= 5, `only ${offsets.length} flash/beep pairs (flashes ${result.flashes.length}, beeps ${result.beeps.length})`);
    assert.ok(
      result.stats.videoJitterBufferMs >= PLAYOUT_DELAY_MS * 0.6,
      `the video was not held back by the playout delay (${result.stats.videoJitterBufferMs} ms): the test would prove nothing`,
    );
    assert.ok(median <= AUDIO_LATE_LIMIT_MS && median >= -AUDIO_EARLY_LIMIT_MS, `audio is ${median.toFixed(0)} ms off the video`);
  });
});
