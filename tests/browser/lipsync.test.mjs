// Lip sync of a browser publisher, across a simulcast layer switch. The publisher page draws a
// canvas that turns white, and an oscillator that beeps at 1 kHz, for the first 100 ms of every
// second of one AudioContext clock, and publishes them with the SDK as camera (simulcast) and
// microphone. A viewer page measures the offset between each flash and its beep (onsets.mjs).
//
// Camera and microphone share the publisher's msid stream, so Chromium synchronizes them by
// their sender reports; Sluice derives those from the publisher's own reports (its capture
// clock), and a layer switch continues the video timestamps by that clock. The server asks for
// a 500 ms minimum video playout delay, so unsynchronized audio would come ~300 ms early.
// Measured: offsets before and after a switch from f to q within the BT.1359 window.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openPage, startServer, uniqueRoom, withDiagnostics } from './harness.mjs';
import {
  AUDIO_EARLY_LIMIT_MS,
  AUDIO_LATE_LIMIT_MS,
  measureOnsets,
  offsetsBetween,
  reportOffsets,
  reportPlayoutDiff,
} from './onsets.mjs';

const ROOM = uniqueRoom('lipsync');
const PLAYOUT_DELAY_MS = 500;
// Chromium's synchronizer needs ~20 s to grow the audio buffer to the video's (docs/decisions.md §20).
const SETTLE_MS = Number(process.env.LIPSYNC_SETTLE_MS ?? 20_000);
const WINDOW_MS = 8_000;

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer('lipsync', { env: { SLUICE_PLAYOUT_DELAY_MS: String(PLAYOUT_DELAY_MS) } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** In the page: publishes a flashing canvas and a beeping oscillator on one clock. */
async function publishFlashAndBeep({ room }) {
  const query = new URLSearchParams({ room, identity: 'presenter' });
  const { token } = await (await fetch(`/dev/token?${query}`)).json();
  const sfu = new window.Sluice.Room();
  await sfu.connect(`ws://${location.host}/ws`, token);
  const ctx = new AudioContext();
  await ctx.resume();
  const oscillator = ctx.createOscillator();
  oscillator.frequency.value = 1000;
  const gain = ctx.createGain();
  gain.gain.value = 0;
  const destination = ctx.createMediaStreamDestination();
  oscillator.connect(gain).connect(destination);
  oscillator.start();
  const first = Math.ceil(ctx.currentTime) + 1;
  for (let second = first; second < first + 120; second++) {
    gain.gain.setValueAtTime(0.8, second);
    gain.gain.setValueAtTime(0, second + 0.1);
  }
  // 960×540: Chrome sends three simulcast layers from 960 px up (240, 480 and 960 px wide).
  const canvas = document.createElement('canvas');
  canvas.width = 960;
  canvas.height = 540;
  const g = canvas.getContext('2d');
  let frame = 0;
  window.lipsyncDraw = setInterval(() => {
    // The audio clock decides both: a flash while the beep is being rendered.
    const bright = ctx.currentTime >= first && ctx.currentTime % 1 < 0.1;
    g.fillStyle = bright ? '#fff' : '#000';
    g.fillRect(0, 0, canvas.width, canvas.height);
    // A changing corner keeps the encoder producing frames between flashes.
    g.fillStyle = '#444';
    g.fillRect((frame++ * 8) % canvas.width, 0, 8, 8);
  }, 10);
  const video = canvas.captureStream(30).getVideoTracks()[0];
  const audio = destination.stream.getAudioTracks()[0];
  const publications = await sfu.publish(new MediaStream([video, audio]));
  return publications.map((p) => ({ kind: p.kind, source: p.source }));
}

test('a browser publisher\'s camera and microphone play in sync, across a simulcast switch', { timeout: 150_000 }, async () => {
  await withDiagnostics('lipsync', server, () => pages, async () => {
    const publisher = await openPage(browser, server.url, 'publisher');
    pages.push(publisher);
    const published = await publisher.evaluate(publishFlashAndBeep, { room: ROOM });
    assert.equal(published.length, 2, `published ${JSON.stringify(published)}`);
    const viewer = await openPage(browser, server.url, 'viewer');
    pages.push(viewer);
    const result = await viewer.evaluate(measureOnsets, {
      room: ROOM,
      measureMs: SETTLE_MS + 2 * WINDOW_MS,
      switches: [{ atMs: SETTLE_MS + WINDOW_MS, spatial: 0 }],
    });
    const firstFlash = Math.min(...result.flashes);
    const settled = firstFlash + SETTLE_MS;
    const [switchedAt] = result.switchedAt;
    assert.ok(switchedAt !== undefined, 'the layer switch was not asked for');
    const widthAt = (t) => result.widths.filter((w) => w.at <= t).at(-1)?.width;
    const switchDone = result.widths.find((w) => w.at > switchedAt && w.width < widthAt(switchedAt));
    console.log(`LIPSYNC_WIDTHS ${result.widths.map((w) => `${w.width}@${(w.at - firstFlash).toFixed(0)}`).join(' ')} switch asked @${(switchedAt - firstFlash).toFixed(0)}`);
    assert.equal(widthAt(switchedAt), 960, 'the viewer was not on f before the switch');
    assert.ok(switchDone !== undefined && switchDone.at - switchedAt < 2_000, 'the viewer did not get q within 2 s of asking');
    const before = reportOffsets('LIPSYNC_BEFORE_SWITCH_MS', offsetsBetween(result, settled, switchedAt));
    const afterSwitch = reportOffsets('LIPSYNC_AFTER_SWITCH_MS', offsetsBetween(result, switchedAt));
    console.log(
      `flashes=${result.flashes.length} beeps=${result.beeps.length} frames=${result.frames}` +
        ` outputLatencyMs=${result.outputLatencyMs.toFixed(0)} ${JSON.stringify(result.stats)}`,
    );
    reportPlayoutDiff(result, settled);
    for (const kind of ['audio', 'video']) {
      assert.ok(result.stats[`${kind}SenderReports`] >= 2, `the ${kind} track got ${result.stats[`${kind}SenderReports`]} sender reports`);
    }
    assert.ok(
      result.stats.videoJitterBufferMs >= PLAYOUT_DELAY_MS * 0.6,
      `the video was not held back by the playout delay (${result.stats.videoJitterBufferMs} ms): the test would prove nothing`,
    );
    for (const [when, median, offsets] of [
      ['before the switch', before, offsetsBetween(result, settled, switchedAt)],
      ['after the switch', afterSwitch, offsetsBetween(result, switchedAt)],
    ]) {
      assert.ok(offsets.length >= 5, `${when}: only ${offsets.length} flash/beep pairs`);
      assert.ok(median <= AUDIO_LATE_LIMIT_MS && median >= -AUDIO_EARLY_LIMIT_MS, `${when}: audio is ${median.toFixed(0)} ms off the video`);
    }
  });
});
