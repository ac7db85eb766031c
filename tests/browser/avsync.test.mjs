// A/V sync of an RTMP publication: Debian's ffmpeg publishes a flash-and-beep source (the
// picture turns white and a 1 kHz tone sounds for the first 100 ms of every second, both from
// the same lavfi clock), Sluice converts it (H.264 passthrough, AAC → Opus), and a headless
// Chromium viewer measures when each flash is presented (requestVideoFrameCallback) and when
// each beep is played (an AudioWorklet on the received track, mapped to the page clock with
// AudioContext.getOutputTimestamp). The offset beep − flash is the lip-sync error.
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

const ROOM = uniqueRoom('avsync');
const KEY = `key-${Math.random().toString(36).slice(2)}-avsync`;
const PLAYOUT_DELAY_MS = Number(process.env.AVSYNC_PLAYOUT_DELAY_MS ?? 500);
const MEASURE_MS = 8_000;
// ITU-R BT.1359's acceptability limits for broadcast: audio at most 90 ms early or 185 ms late.
// Unsynchronized, the audio comes ~300 ms early here (measured).
const AUDIO_LATE_LIMIT_MS = 185;
const AUDIO_EARLY_LIMIT_MS = 90;

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

/** In the page: subscribes to the room's audio and video and records flash and beep onsets. */
async function measureOnsets({ room, measureMs }) {
  const query = new URLSearchParams({ room, identity: 'viewer' });
  const { token } = await (await fetch(`/dev/token?${query}`)).json();
  const sfu = new window.Sluice.Room();
  await sfu.connect(`ws://${location.host}/ws`, token);
  const deadline = performance.now() + 10_000;
  while (sfu.publications.size < 2 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const publications = [...sfu.publications.values()];
  const audioSub = await sfu.subscribe(publications.find((p) => p.kind === 'audio').publicationId);
  const videoSub = await sfu.subscribe(publications.find((p) => p.kind === 'video').publicationId);
  const [audio, video] = await Promise.all([audioSub.waitForTrack(), videoSub.waitForTrack()]);

  const element = document.createElement('video');
  element.muted = true;
  element.autoplay = true;
  element.playsInline = true;
  element.srcObject = video.stream;
  document.body.append(element);
  await element.play();

  // Audio: an AudioWorklet reports the context time of each tone onset.
  const ctx = new AudioContext();
  await ctx.resume();
  const worklet = `
    registerProcessor('onsets', class extends AudioWorkletProcessor {
      constructor() { super(); this.quietSamples = 0; }
      process(inputs) {
        const channel = inputs[0][0];
        if (!channel) return true;
        for (let i = 0; i < channel.length; i++) {
          if (Math.abs(channel[i]) > 0.2) {
            if (this.quietSamples > sampleRate * 0.3) this.port.postMessage(currentTime + i / sampleRate);
            this.quietSamples = 0;
          } else {
            this.quietSamples++;
          }
        }
        return true;
      }
    });`;
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], { type: 'text/javascript' })));
  const node = new AudioWorkletNode(ctx, 'onsets');
  ctx.createMediaStreamSource(audio.stream).connect(node);
  // Chrome pulls a remote track's audio only while something plays it.
  const sink = new Audio();
  sink.srcObject = audio.stream;
  sink.volume = 0.01;
  await sink.play().catch(() => undefined);
  const beeps = [];
  node.port.onmessage = (e) => {
    // Context time → the page clock at which that sample is played out.
    const { contextTime, performanceTime } = ctx.getOutputTimestamp();
    beeps.push(performanceTime + (e.data - contextTime) * 1000);
  };

  // Video: the presentation time of each frame that turns white.
  const canvas = document.createElement('canvas');
  canvas.width = 8;
  canvas.height = 8;
  const g = canvas.getContext('2d', { willReadFrequently: true });
  // The browser's own account, from one getStats of the connection at a time: which moment
  // of the sender's clock (RTCP sender reports) each track plays out now.
  const playoutDiffs = [];
  const pc = sfu.peerConnection('subscriber');
  const sampler = setInterval(async () => {
    const playout = {};
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.estimatedPlayoutTimestamp !== undefined) playout[s.kind] = s.estimatedPlayoutTimestamp;
    });
    if (playout.audio !== undefined && playout.video !== undefined) playoutDiffs.push({ at: performance.now(), diff: playout.video - playout.audio });
  }, 250);
  const flashes = [];
  let wasBright = true; // the first flash seen counts only once it started dark
  let frames = 0;
  const end = performance.now() + measureMs;
  await new Promise((resolve) => {
    const onFrame = (_now, meta) => {
      frames++;
      g.drawImage(element, 0, 0, 8, 8);
      const bright = g.getImageData(4, 4, 1, 1).data[0] > 128;
      if (bright && !wasBright) flashes.push(meta.expectedDisplayTime);
      wasBright = bright;
      if (performance.now() < end) element.requestVideoFrameCallback(onFrame);
      else resolve();
    };
    element.requestVideoFrameCallback(onFrame);
  });
  clearInterval(sampler);
  const stats = {};
  for (const [kind, sub] of [['video', videoSub], ['audio', audioSub]]) {
    (await sub.getStats())?.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        stats[`${kind}JitterBufferMs`] = (1000 * s.jitterBufferDelay) / Math.max(1, s.jitterBufferEmittedCount);
        stats[`${kind}EstimatedPlayout`] = s.estimatedPlayoutTimestamp;
      }
      if (s.type === 'remote-outbound-rtp') stats[`${kind}SenderReports`] = s.reportsSent;
    });
  }
  await ctx.close();
  await sfu.disconnect();
  return { flashes, beeps, playoutDiffs, frames, stats, outputLatencyMs: 1000 * (ctx.outputLatency ?? 0) };
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
      () => server.log.filter((line) => /ingest::room: published/.test(line)).length,
      (n) => n >= 2,
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    const page = await openPage(browser, server.url, 'viewer');
    pages.push(page);
    // Let the jitter buffers and the synchronizer settle before measuring.
    const settleMs = Number(process.env.AVSYNC_SETTLE_MS ?? 20_000);
    const result = await page.evaluate(measureOnsets, { room: ROOM, measureMs: MEASURE_MS + settleMs });
    const start = Math.min(...result.flashes) + settleMs;
    const offsets = [];
    for (const flash of result.flashes.filter((f) => f >= start)) {
      const nearest = result.beeps.reduce((best, b) => (Math.abs(b - flash) < Math.abs(best - flash) ? b : best), Infinity);
      if (Math.abs(nearest - flash) < 500) offsets.push(nearest - flash);
    }
    const sorted = [...offsets].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    console.log(
      `AV_OFFSET_MS (beep − flash, + = audio late) median=${median?.toFixed(1)} min=${sorted[0]?.toFixed(1)} max=${sorted.at(-1)?.toFixed(1)} n=${offsets.length}` +
        ` flashes=${result.flashes.length} beeps=${result.beeps.length} frames=${result.frames}` +
        ` outputLatencyMs=${result.outputLatencyMs.toFixed(0)} ${JSON.stringify(result.stats)}`,
    );
    console.log(`AV_OFFSETS_MS ${offsets.map((o) => o.toFixed(0)).join(' ')}`);
    // + = audio late: the video plays a later moment of the sender's clock than the audio.
    const playoutDiffs = result.playoutDiffs.filter((d) => d.at >= start).map((d) => d.diff).sort((a, b) => a - b);
    const playoutMedian = playoutDiffs[Math.floor(playoutDiffs.length / 2)];
    console.log(
      `AV_ESTIMATED_PLAYOUT_DIFF_MS (video − audio, sender clock) median=${playoutMedian} p10=${playoutDiffs[Math.floor(playoutDiffs.length * 0.1)]} p90=${playoutDiffs[Math.floor(playoutDiffs.length * 0.9)]} n=${playoutDiffs.length}`,
    );
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
