// RTMP ingest end to end: Debian's ffmpeg publishes testsrc + a 440 Hz sine over RTMP to a real
// `sluice`, and headless Chromium viewers watch through WebRTC.
//
// The video carries its own capture clock: ffmpeg stamps every frame with the wall clock
// (setpts=RTCTIME) and draws its low 20 bits of milliseconds as 20 black/white squares in the
// top-left corner. A viewer reads the squares of each frame it presents
// (requestVideoFrameCallback + canvas), which gives the RTMP → screen delay of every frame
// (same machine, same clock) and shows whether frames are presented in order.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { after, before, test } from 'node:test';
import { closePage, launchBrowser, openPage, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';

const ROOM = uniqueRoom('rtmp');
const ROOM_BFRAMES = uniqueRoom('rtmp-bframes');
const KEY = `key-${Math.random().toString(36).slice(2)}-main`;
const KEY_BFRAMES = `key-${Math.random().toString(36).slice(2)}-bframes`;
const ROOM_VIDEO_ONLY = uniqueRoom('rtmp-video-only');
const KEY_VIDEO_ONLY = `key-${Math.random().toString(36).slice(2)}-video-only`;
const GOP_FRAMES = 120; // 4 s at 30 fps
const JOINS = 40;
const CODE_BITS = 20;
const CODE_SPAN = 2 ** CODE_BITS;

// The harness passes the environment on to `sluice`: an ephemeral RTMP port and three keys.
process.env.SLUICE_RTMP = '127.0.0.1:0';
process.env.SLUICE_RTMP_KEYS = [
  `${KEY}=${ROOM}/encoder`,
  `${KEY_BFRAMES}=${ROOM_BFRAMES}/encoder`,
  `${KEY_VIDEO_ONLY}=${ROOM_VIDEO_ONLY}/encoder`,
].join(',');

let server;
let browser;
let rtmpUrl;
const pages = [];
const encoders = [];

before(async () => {
  server = await startServer('rtmp');
  browser = await launchBrowser();
  rtmpUrl = await waitFor(
    'the rtmp ingest line',
    () => server.log.map((line) => /rtmp ingest on (rtmp:\/\/[\d.:]+)\/live/.exec(line)?.[1]).find(Boolean),
    Boolean,
    { timeoutMs: 5_000, intervalMs: 50 },
  );
});

after(async () => {
  for (const encoder of encoders) encoder.kill('SIGKILL');
  await browser?.close();
  await server?.stop();
});

/**
 * testsrc with the capture clock drawn in (see the top of this file) and, with `audio`, the
 * 440 Hz sine from the same lavfi graph (`[out0]` video, `[out1]` audio). One input, not two:
 * with two inputs ffmpeg reads each in a thread of its own into an 8-packet queue, so lavfi
 * makes (and stamps) each frame up to 8 frames before `-re` releases it, and the figure counted
 * 260 ms that no live source has (docs/rtmp.md, "Latency budget").
 */
function encoderInput(size, { audio = true } = {}) {
  const video = clockSource(size);
  return audio ? `${video}[out0];sine=frequency=440:sample_rate=44100[out1]` : video;
}

function clockSource(size) {
  const boxes = Array.from(
    { length: CODE_BITS },
    (_, i) => `drawbox=x=${i * 32}:y=0:w=32:h=32:color=white:t=fill:enable='eq(mod(floor(t*1000/${2 ** i}),2),1)'`,
  );
  return [
    // One second of testsrc, converted once and looped: generating and converting it live cost
    // 0.5 of a core, which the encoder took from the server and the viewers on a 2-core CI box.
    `testsrc=size=${size}:rate=30:duration=1`,
    'format=yuv420p',
    'loop=loop=-1:size=30',
    'settb=1/1000',
    'setpts=RTCTIME/1000',
    `drawbox=x=0:y=0:w=${CODE_BITS * 32}:h=32:color=black:t=fill`,
    ...boxes,
    'setpts=N*1000/30',
  ].join(',');
}

/**
 * Starts ffmpeg publishing to `key`. `bframes`: x264's defaults (High, B-frames, veryfast: what
 * OBS sends); otherwise low-latency baseline without B-frames, ultrafast (0.34 of a core with the
 * looped source, against 0.52 for veryfast and 0.80 for veryfast with a live testsrc). `sliced-threads=0` keeps one slice
 * per frame: with several IDR slices the routing core's keyframe cache restarts at each slice,
 * so joiners wait for the next keyframe (see docs/rtmp.md, "Known limits").
 */
function startEncoder(key, { bframes = false, size = '1280x720', audio = true } = {}) {
  const video = bframes
    ? ['-preset', 'veryfast', '-profile:v', 'high']
    : ['-preset', 'ultrafast', '-tune', 'zerolatency', '-x264-params', 'sliced-threads=0', '-profile:v', 'baseline', '-bf', '0'];
  // The README's low-latency recipe: the FLV muxer writes each packet as it comes instead of
  // holding audio until the next video frame (and video until the next audio frame).
  const mux = bframes ? [] : ['-max_interleave_delta', '1'];
  const args = [
    '-hide_banner', '-loglevel', 'warning', '-re',
    '-f', 'lavfi', '-i', encoderInput(size, { audio }),
    '-pix_fmt', 'yuv420p', '-c:v', 'libx264', ...video,
    '-g', String(GOP_FRAMES), '-keyint_min', String(GOP_FRAMES), '-sc_threshold', '0',
    ...(audio ? ['-c:a', 'aac', '-b:a', '96k'] : ['-an']), ...mux, '-f', 'flv', `${rtmpUrl}/live/${key}`,
  ];
  const child = spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  child.log = [];
  child.stderr.on('data', (chunk) => child.log.push(String(chunk)));
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  encoders.push(child);
  return child;
}

/** In the page: reads the clock squares of each presented frame of `selector` for `durationMs`. */
function measureClock({ selector, durationMs, bits }) {
  const video = document.querySelector(selector);
  const span = 2 ** bits;
  const canvas = document.createElement('canvas');
  canvas.width = bits * 32;
  canvas.height = 32;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const samples = [];
  return new Promise((resolve) => {
    const end = performance.now() + durationMs;
    const onFrame = (_now, meta) => {
      ctx.drawImage(video, 0, 0, canvas.width, 32, 0, 0, canvas.width, 32);
      const px = ctx.getImageData(0, 0, canvas.width, 32).data;
      let code = 0;
      for (let i = 0; i < bits; i++) {
        if (px[(16 * canvas.width + i * 32 + 16) * 4] > 128) code += 2 ** i;
      }
      const shown = Math.round(performance.timeOrigin + meta.expectedDisplayTime);
      samples.push({ code, delay: (((shown % span) - code) % span + span) % span });
      if (performance.now() < end) video.requestVideoFrameCallback(onFrame);
      else resolve(samples);
    };
    video.requestVideoFrameCallback(onFrame);
  });
}

function summarize(samples) {
  const delays = samples.map((s) => s.delay).sort((a, b) => a - b);
  const at = (q) => delays[Math.min(delays.length - 1, Math.floor(q * delays.length))];
  let backwards = 0;
  for (let i = 1; i < samples.length; i++) {
    const step = (samples[i].code - samples[i - 1].code + CODE_SPAN) % CODE_SPAN;
    if (step > CODE_SPAN / 2) backwards += 1;
  }
  return { frames: samples.length, p50: at(0.5), p95: at(0.95), max: delays.at(-1), backwards };
}

/** In the watch page: inbound video/audio stats of its subscriptions. */
async function watchStats() {
  {
    const room = window.sluiceWatch.room;
    const out = { framesDecoded: 0, frameWidth: 0, frameHeight: 0, freezeCount: 0, energy: 0, audioPackets: 0 };
    for (const sub of room.subscriptions.values()) {
      const report = await sub.getStats();
      report?.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          out.framesDecoded = s.framesDecoded ?? 0;
          out.framesReceived = s.framesReceived ?? 0;
          out.keyFramesDecoded = s.keyFramesDecoded ?? 0;
          out.frameWidth = s.frameWidth ?? 0;
          out.frameHeight = s.frameHeight ?? 0;
          out.freezeCount = s.freezeCount ?? 0;
          out.totalFreezesDuration = s.totalFreezesDuration ?? 0;
          out.framesDropped = s.framesDropped ?? 0;
        } else {
          out.energy = s.totalAudioEnergy ?? 0;
          out.audioPackets = s.packetsReceived ?? 0;
        }
      });
    }
    return out;
  }
}

/**
 * In the watch page: per kind, the cumulative jitter-buffer figures of getStats (seconds summed
 * over emitted samples or frames); `jitterBufferSplit` turns two of them into averages.
 */
async function jitterBufferTotals() {
  const out = {};
  for (const sub of window.sluiceWatch.room.subscriptions.values()) {
    (await sub.getStats())?.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      out[s.kind] = {
        delay: s.jitterBufferDelay ?? 0,
        target: s.jitterBufferTargetDelay ?? 0,
        minimum: s.jitterBufferMinimumDelay ?? 0,
        emitted: s.jitterBufferEmittedCount ?? 0,
      };
    });
  }
  return out;
}

/**
 * `kind: jb=… target=… min=…` in ms, averaged between two `jitterBufferTotals`: the time spent
 * in the jitter buffer, what it aimed at, and what it would aim at without A/V sync (a video
 * target above its minimum is the picture held back for the audio).
 */
function jitterBufferSplit(before, after) {
  return ['video', 'audio']
    .filter((kind) => before[kind] && after[kind] && after[kind].emitted > before[kind].emitted)
    .map((kind) => {
      const n = after[kind].emitted - before[kind].emitted;
      const ms = (key) => Math.round(((after[kind][key] - before[kind][key]) / n) * 1000);
      return `${kind}: jb=${ms('delay')} target=${ms('target')} min=${ms('minimum')}`;
    })
    .join(' ');
}

/**
 * Waits until Chromium's A/V sync holds the picture in `viewer`, and has settled (at most
 * `timeoutMs`). A page that just opened plays the picture at once and starts syncing it to the
 * audio only seconds later (after two sender reports of each track), then moves the picture's
 * delay a step per second: a figure taken before that is of a picture running ahead of its
 * sound. Settled: over each of two consecutive 1 s windows the video's jitter-buffer target
 * was above its minimum (the sync hold, see `jitterBufferSplit`) and moved less than 20 ms.
 * Returns how long it took, or undefined when that did not happen in time.
 */
async function waitForSyncSettled(viewer, timeoutMs) {
  const started = Date.now();
  let previous = await viewer.evaluate(jitterBufferTotals);
  let previousTargetMs;
  let steady = 0;
  while (Date.now() - started < timeoutMs) {
    await new Promise((r) => setTimeout(r, 1_000));
    const now = await viewer.evaluate(jitterBufferTotals);
    const frames = (now.video?.emitted ?? 0) - (previous.video?.emitted ?? 0);
    if (!now.audio || frames <= 0) {
      previous = now;
      continue;
    }
    const perFrameMs = (key) => ((now.video[key] - previous.video[key]) / frames) * 1000;
    const targetMs = perFrameMs('target');
    const holding = targetMs - perFrameMs('minimum') >= 10;
    const still = previousTargetMs !== undefined && Math.abs(targetMs - previousTargetMs) < 20;
    steady = holding && still ? steady + 1 : 0;
    if (steady >= 2) return Date.now() - started;
    previous = now;
    previousTargetMs = targetMs;
  }
  return undefined;
}

/** RTMP → screen over `durationMs` in `viewer`, with the jitter-buffer split of that window. */
async function measureRtmpToScreen(viewer, durationMs) {
  const before = await viewer.evaluate(jitterBufferTotals);
  const clock = summarize(await viewer.evaluate(measureClock, { selector: '#video', durationMs, bits: CODE_BITS }));
  const split = jitterBufferSplit(before, await viewer.evaluate(jitterBufferTotals));
  return { ...clock, split };
}

async function openWatchPage(room, label) {
  // The SDK mode (`?sdk`): these tests read the page's room, subscriptions and warnings.
  const page = await openPage(browser, `${server.url}/watch/${encodeURIComponent(room)}?sdk`, label);
  pages.push(page);
  await page.evaluate(() => {
    window.removed = [];
    const attach = () => {
      if (window.sluiceWatch.room === undefined) return setTimeout(attach, 20);
      window.sluiceWatch.room.on('publicationRemoved', (e) => window.removed.push({ id: e.publicationId, at: Date.now() }));
    };
    attach();
  });
  return page;
}

/**
 * Instant join: one viewer connects (its subscriber connection is up, with the audio), then
 * subscribes to the video `count` times, at arbitrary points of the 4 s GOP, timing each
 * subscribe → first frame presented, and unsubscribing in between. Each join's time is split
 * (server offer received, answer made, track, first frame) and printed, so a slow one shows
 * where it waited.
 */
async function measureJoins(count) {
  const page = await openPage(browser, server.url, 'joiner');
  pages.push(page);
  const result = await page.evaluate(
    async ({ room, count, measure, bits }) => {
      const query = new URLSearchParams({ room, identity: `joiner-${Math.random().toString(36).slice(2, 8)}` });
      const { token } = await (await fetch(`/dev/token?${query}`)).json();
      const sfu = new window.Sluice.Room();
      await sfu.connect(`ws://${location.host}/ws`, token);
      // The encoder may still be starting: wait for its audio and video.
      for (const deadline = performance.now() + 20_000; sfu.publications.size < 2 && performance.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const publications = [...sfu.publications.values()];
      // The encoder's tone makes it an active speaker, like a talking browser publisher.
      const encoderId = publications[0]?.participantId;
      const speakerSince = performance.now();
      let speakerAfterMs;
      const isSpeaking = () => sfu.activeSpeakers.find((s) => s.participantId === encoderId);
      const noteSpeaker = () => {
        if (speakerAfterMs === undefined && isSpeaking()) speakerAfterMs = performance.now() - speakerSince;
      };
      noteSpeaker();
      sfu.on('activeSpeakersChanged', noteSpeaker);
      const connectStart = performance.now();
      const audio = await sfu.subscribe(publications.find((p) => p.kind === 'audio').publicationId);
      await audio.waitForTrack();
      const pc = sfu.peerConnection('subscriber');
      while (pc.connectionState !== 'connected' && performance.now() - connectStart < 10_000) {
        await new Promise((r) => setTimeout(r, 5));
      }
      const connectMs = performance.now() - connectStart;
      // Where a join's time goes: when the server's offer reached the page, and when the answer
      // was made (both on the subscriber connection), timed by wrapping the page's own calls.
      const marks = {};
      const setRemote = pc.setRemoteDescription.bind(pc);
      pc.setRemoteDescription = (description) => {
        if (description?.type === 'offer') {
          marks.offer ??= performance.now();
          marks.mlines = description.sdp.split('\nm=').length - 1;
        }
        return setRemote(description);
      };
      const setLocal = pc.setLocalDescription.bind(pc);
      pc.setLocalDescription = async (description) => {
        await setLocal(description);
        marks.answered ??= performance.now();
      };
      const joins = [];
      let samples = [];
      for (let i = 0; i < count; i++) {
        await new Promise((r) => setTimeout(r, Math.random() * 900));
        const video = document.createElement('video');
        video.id = 'joined';
        video.muted = true;
        video.autoplay = true;
        video.playsInline = true;
        document.body.append(video);
        // The first frame presented (decoded and handed to the compositor), timed by the frame
        // callback rather than by polling getStats (which takes tens of ms on a busy machine).
        const firstFrame = new Promise((resolve) => {
          video.requestVideoFrameCallback((_now, meta) => resolve(meta.presentationTime));
          setTimeout(() => resolve(undefined), 5_000);
        });
        for (const key of Object.keys(marks)) delete marks[key];
        const startedAt = performance.now();
        const startedWall = Date.now();
        const sub = await sfu.subscribe(publications.find((p) => p.kind === 'video').publicationId);
        marks.subscribed = performance.now();
        sub.waitForTrack().then(({ stream }) => {
          marks.track = performance.now();
          video.srcObject = stream;
          void video.play();
        });
        const presentedAt = await firstFrame;
        const ttff = presentedAt === undefined ? undefined : presentedAt - startedAt;
        const phases = Object.fromEntries(
          ['subscribed', 'offer', 'answered', 'track'].map((k) => [k, marks[k] === undefined ? undefined : Math.round(marks[k] - startedAt)]),
        );
        phases.mlines = marks.mlines;
        let stats;
        (await sub.getStats())?.forEach((s) => {
          if (s.type === 'inbound-rtp')
            stats = `packets=${s.packetsReceived} frames=${s.framesDecoded} keyframes=${s.keyFramesDecoded} pli=${s.pliCount}`;
        });
        joins.push({ ttff, stats, phases, startedWall });
        // The delay a joiner settles at, once (2.5 s of frames).
        if (i === count - 1) {
          // eslint-disable-next-line no-new-func
          samples = await new Function(`return (${measure})`)()({ selector: '#joined', durationMs: 2_500, bits });
        }
        await sfu.unsubscribe(sub.subscriptionId);
        video.remove();
      }
      const speaker = { afterMs: speakerAfterMs, level: isSpeaking()?.level, now: sfu.activeSpeakers.map((s) => s.participantId) };
      await sfu.disconnect();
      return { joins, connectMs, samples, speaker };
    },
    { room: ROOM, count, measure: measureClock.toString(), bits: CODE_BITS },
  );
  await closePage(page);
  pages.splice(pages.indexOf(page), 1);
  for (const join of result.joins) {
    const phases = Object.entries(join.phases).map(([k, v]) => `${k}=${v}`).join(' ');
    const line = `${Math.round(join.ttff)} ms: ${phases} presented=${Math.round(join.ttff)} ${join.stats} wall=${new Date(join.startedWall).toISOString()}`;
    console.log(join.ttff === undefined || join.ttff > 300 ? `SLOW_JOIN ${line}` : `JOIN ${line}`);
  }
  return {
    ttffs: result.joins.map((j) => j.ttff),
    connectMs: result.connectMs,
    settled: summarize(result.samples.slice(-30)),
    speaker: result.speaker,
  };
}

/** Nearest-rank quantile: the smallest value with at least q of the values at or below it. */
const quantile = (values, q) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
};

test('RTMP without B-frames: video, sound, delay, instant join, reconnect, stop', { timeout: 240_000 }, async () => {
  await withDiagnostics('rtmp', server, () => pages, async () => {
    const encoder = startEncoder(KEY);
    // Instant join first, while the joiner is the only page: on a 2-core machine that also runs
    // the encoder, a second page decoding 720p made Chromium's own steps (applying the offer,
    // making the answer, presenting) the slow part of the slowest joins (docs/rtmp.md).
    // Subscribes at arbitrary points of the 4 s GOP; the target is p95 ≤ 300 ms.
    const joins = await measureJoins(JOINS);
    const ttffs = joins.ttffs;
    const joinP95 = quantile(ttffs.map((t) => t ?? Infinity), 0.95);
    console.log(`JOIN_TTFF_MS ${ttffs.map((t) => Math.round(t)).join(' ')} p50=${Math.round(quantile(ttffs, 0.5))} p95=${Math.round(joinP95)} max=${Math.round(Math.max(...ttffs))}`);
    console.log(`JOIN_SETTLED_DELAY_MS p50=${joins.settled.p50} (the last join, over 2.5 s)`);
    console.log(`JOIN_CONNECT_MS ${Math.round(joins.connectMs)} (the viewer's subscriber connection: ICE + DTLS)`);
    console.log(`RTMP_SPEAKER after=${Math.round(joins.speaker.afterMs)} ms level=${joins.speaker.level} speakers at the end=${joins.speaker.now}`);
    // The levels come from the decoded AAC (ffmpeg's sine: -21 dBov, amplitude 0.09).
    assert.ok(joins.speaker.afterMs <= 2_000, 'the RTMP publisher never became an active speaker');
    assert.ok(joins.speaker.level > 0.05 && joins.speaker.level < 0.15, `speaker level ${joins.speaker.level}`);
    const orphanWrites = server.log.filter((line) => line.includes('unknown sender id')).length;
    console.log(`ORPHAN_WRITES=${orphanWrites} (packets still queued for a removed subscriber track)`);
    // Each removal waits (bounded: 300 ms, or 100 ms without progress) for its queued packets;
    // before that wait there were 449-763 per run. A starved driver (CI: 39) may still leave some.
    assert.ok(orphanWrites <= 128, `${orphanWrites} packets were queued for removed subscriber tracks`);

    const viewer = await openWatchPage(ROOM, 'viewer');
    const stats = watchStats;

    const media = await waitFor(
      'the watch page: ≥ 60 frames at 1280x720 and audio energy',
      () => viewer.evaluate(stats),
      (s) => s.framesDecoded >= 60 && s.energy > 0,
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    assert.equal(media.frameWidth, 1280);
    assert.equal(media.frameHeight, 720);
    // The page refreshes its estimate periodically; a viewer joining a running stream decodes
    // 60 frames (the replayed GOP) before the first refresh.
    const pageDelay = await waitFor("the watch page's delay estimate", () => viewer.evaluate(() => window.sluiceWatch.delayMs), (d) => d !== undefined, {
      timeoutMs: 5_000,
      intervalMs: 100,
    }).catch(() => undefined);
    const delayText = await viewer.evaluate(() => document.getElementById('delay').textContent);
    console.log(`WATCH_PAGE frames=${media.framesDecoded} ${media.frameWidth}x${media.frameHeight} energy=${media.energy.toFixed(4)} delayText="${delayText}"`);
    assert.ok(pageDelay !== undefined, 'the watch page shows a delay estimate');

    const settledMs = await waitForSyncSettled(viewer, 30_000);
    console.log(`RTMP_SYNC_SETTLED_MS=${settledMs ?? 'not within 30 s'}`);
    const clock = await measureRtmpToScreen(viewer, 5_000);
    console.log(`RTMP_TO_SCREEN_MS p50=${clock.p50} p95=${clock.p95} max=${clock.max} frames=${clock.frames} backwards=${clock.backwards} | ${clock.split} | load ${loadavg()[0].toFixed(1)}`);
    assert.ok(clock.frames >= 60, `only ${clock.frames} frames presented in 5 s`);
    assert.equal(clock.backwards, 0, 'frames presented out of order');
    // Issue 21's goal, with the sound on (Chromium holds the picture for the audio's jitter
    // buffer): measured p95 181-359 ms at load 10-12 on the shared 2-core machine, 403-2098 ms
    // when other jobs pushed it to 13-19 and starved Chromium's audio (docs/rtmp.md).
    assert.ok(clock.p95 <= 300, `RTMP → screen p95 ${clock.p95} ms > 300 ms with audio (${clock.split})`);

    // Reconnect within the grace period: same publication, frames resume.
    const publications = await viewer.evaluate(() => [...window.sluiceWatch.playing.keys()].sort());
    encoder.kill('SIGKILL');
    await encoder.exited;
    await new Promise((r) => setTimeout(r, 1_000)); // the encoder is away for a second
    // On a loaded machine the viewer may still be decoding frames it received before the kill;
    // count only frames decoded after that backlog, so the resume figure is the new encoder's.
    let before = await viewer.evaluate(stats);
    let settled = false;
    for (const deadline = Date.now() + 5_000; !settled && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 300));
      const now = await viewer.evaluate(stats);
      settled = now.framesDecoded === before.framesDecoded;
      before = now;
    }
    assert.ok(settled, 'the viewer was still decoding 6 s after the encoder was killed');
    const restartedAt = Date.now();
    const second = startEncoder(KEY);
    await waitFor(
      'a frame after the reconnect',
      () => viewer.evaluate(stats),
      (s) => s.framesDecoded > before.framesDecoded,
      { timeoutMs: 10_000, intervalMs: 20 },
    );
    const firstFrameAt = Date.now();
    const firstFrameMs = firstFrameAt - restartedAt;
    // Split the figure: encoder start-up and handshake, then server → first new frame decoded.
    const resumedLine = server.log.findLast((line) => line.includes('resuming its publications'));
    const resumedAt = Date.parse(resumedLine?.match(/\d{4}-\d\d-\d\dT[\d:.]+Z/)?.[0] ?? '');
    assert.ok(Number.isFinite(resumedAt), 'the server logged no resumed publication');
    console.log(`RECONNECT_SPLIT restart→publishing=${resumedAt - restartedAt} ms, publishing→first frame=${firstFrameAt - resumedAt} ms`);
    const resumed = await waitFor(
      'frames after the reconnect',
      () => viewer.evaluate(stats),
      (s) => s.framesDecoded > before.framesDecoded + 30,
      { timeoutMs: 10_000, intervalMs: 50 },
    );
    const resumeMs = Date.now() - restartedAt;
    console.log(`RECONNECT_RESUME_MS=${resumeMs} (restart → 30 new frames decoded) first=${firstFrameMs}`);
    // ffmpeg's own start-up and RTMP handshake are in this figure (0.6-0.9 s), and the watch
    // page's ~0.2 s RTMP-to-screen delay; a loaded CI machine measured 2.5 s.
    assert.ok(firstFrameMs <= 4_000, `the first frame after the reconnect came ${firstFrameMs} ms after the restart`);
    assert.deepEqual(await viewer.evaluate(() => [...window.sluiceWatch.playing.keys()].sort()), publications);
    assert.deepEqual(await viewer.evaluate(() => window.removed), [], 'no publication was removed');
    assert.ok(resumed.frameWidth === 1280);

    // A second encoder on the live key is refused.
    const intruder = startEncoder(KEY, { size: '320x240' });
    const refused = await Promise.race([intruder.exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
    console.log(`SECOND_PUBLISHER exit=${JSON.stringify(refused)} ${intruder.log.join('').trim().split('\n').slice(-3).join(' | ')}`);
    if (refused === 'still running') {
      const refusals = server.log.filter((line) => line.includes('publish refused'));
      console.log(`SECOND_PUBLISHER server refusals: ${refusals.join(' | ') || 'none'}`);
    }
    assert.notEqual(refused, 'still running', 'a second publisher on a live key was not refused');
    assert.notEqual(refused.code, 0);

    // A clean stop (SIGINT: ffmpeg unpublishes) removes the publications within 2 s.
    const stoppedAt = Date.now();
    second.kill('SIGINT');
    const removed = await waitFor(
      'publicationRemoved after the encoder stopped',
      () => viewer.evaluate(() => window.removed),
      (r) => publications.every((id) => r.some((e) => e.id === id)),
      { timeoutMs: 5_000, intervalMs: 50 },
    );
    const removalMs = Math.max(...removed.map((e) => e.at)) - stoppedAt;
    console.log(`STOP_REMOVAL_MS=${removalMs}`);
    assert.ok(removalMs <= 2_000, `publications removed after ${removalMs} ms`);

    assert.ok(ttffs.every((t) => t !== undefined), `a join showed no frame within 5 s: ${ttffs}`);
    assert.ok(joinP95 <= 300, `join p95 ${Math.round(joinP95)} ms > 300 ms (of ${ttffs.map(Math.round)})`);
  });
});

test('RTMP video only: RTMP → screen', { timeout: 60_000 }, async () => {
  await withDiagnostics('rtmp-video-only', server, () => pages, async () => {
    const encoder = startEncoder(KEY_VIDEO_ONLY, { audio: false });
    const viewer = await openWatchPage(ROOM_VIDEO_ONLY, 'video-only-viewer');
    await waitFor('the video-only stream: 60 frames decoded', () => viewer.evaluate(watchStats), (s) => s.framesDecoded >= 60, {
      timeoutMs: 30_000,
      intervalMs: 250,
    });
    const clock = await measureRtmpToScreen(viewer, 5_000);
    console.log(`RTMP_TO_SCREEN_VIDEO_ONLY_MS p50=${clock.p50} p95=${clock.p95} max=${clock.max} frames=${clock.frames} | ${clock.split} | load ${loadavg()[0].toFixed(1)}`);
    encoder.kill('SIGINT');
    assert.ok(clock.frames >= 60, `only ${clock.frames} frames presented in 5 s`);
    assert.equal(clock.backwards, 0, 'frames presented out of order');
    // Issue 21's goal without audio (nothing to sync with): p95 ≤ 150 ms.
    assert.ok(clock.p95 <= 150, `RTMP → screen p95 ${clock.p95} ms > 150 ms without audio (${clock.split})`);
  });
});

test('RTMP with x264 default B-frames: forwarded unchanged, viewers warned', { timeout: 120_000 }, async () => {
  await withDiagnostics('rtmp-bframes', server, () => pages, async () => {
    const encoder = startEncoder(KEY_BFRAMES, { bframes: true, size: '640x360' });
    const viewer = await openWatchPage(ROOM_BFRAMES, 'bframes-viewer');
    const stats = watchStats;
    await waitFor('B-frame stream: 60 frames received and sound', () => viewer.evaluate(stats), (s) => s.framesReceived >= 60 && s.energy > 0, {
      timeoutMs: 30_000,
      intervalMs: 250,
    });
    const start = await viewer.evaluate(stats);
    await new Promise((r) => setTimeout(r, 8_000));
    const end = await viewer.evaluate(stats);
    const warning = await viewer.evaluate(() => window.sluiceWatch.warning);
    const received = end.framesReceived - start.framesReceived;
    const decoded = end.framesDecoded - start.framesDecoded;
    console.log(
      `BFRAMES in 8 s: received=${received} decoded=${decoded} keyframesDecoded=${end.keyFramesDecoded} ` +
        `dropped=${end.framesDropped} freezes=${end.freezeCount} energy=${end.energy.toFixed(3)} warning=${JSON.stringify(warning)}`,
    );
    // Sluice forwards every frame unchanged and says why the picture may not move.
    assert.ok(received >= 120, `only ${received} frames forwarded in 8 s`);
    assert.ok(end.keyFramesDecoded >= 1, 'not even the keyframes decoded');
    assert.ok(end.energy > start.energy, 'the sound stopped');
    assert.match(warning ?? '', /B-frames/);
    encoder.kill('SIGINT');
  });
});
