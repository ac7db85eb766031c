// Lip-sync measurement shared by the A/V sync tests: a viewer page records when each white
// flash is presented (requestVideoFrameCallback) and when each beep is played (an AudioWorklet on
// the received track, mapped to the page clock with AudioContext.getOutputTimestamp). The offset
// beep − flash of each flash is the lip-sync error (+ = audio late).

// ITU-R BT.1359's acceptability limits for broadcast: audio at most 90 ms early or 185 ms late.
export const AUDIO_LATE_LIMIT_MS = 185;
export const AUDIO_EARLY_LIMIT_MS = 90;

/**
 * In the page: subscribes to the room's audio and video and records flash and beep onsets for
 * `measureMs`. `switches` ([{ atMs, spatial }], from the start) ask for another simulcast layer
 * on the way; each one's page time is returned in `switchedAt`.
 */
export async function measureOnsets({ room, measureMs, switches = [] }) {
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
  const switchedAt = [];
  const measureStart = performance.now();
  const switchTimers = switches.map(({ atMs, spatial }) =>
    setTimeout(() => {
      switchedAt.push(performance.now());
      videoSub.setPreferredLayer(spatial).catch((err) => console.error(`setPreferredLayer: ${err}`));
    }, atMs - (performance.now() - measureStart)),
  );
  const flashes = [];
  // Each change of the presented frame width, with its page time.
  const widths = [];
  let wasBright = true; // the first flash seen counts only once it started dark
  let frames = 0;
  const end = performance.now() + measureMs;
  await new Promise((resolve) => {
    const onFrame = (_now, meta) => {
      frames++;
      g.drawImage(element, 0, 0, 8, 8);
      const bright = g.getImageData(4, 4, 1, 1).data[0] > 128;
      if (bright && !wasBright) flashes.push(meta.expectedDisplayTime);
      if (widths.at(-1)?.width !== meta.width) widths.push({ at: meta.expectedDisplayTime, width: meta.width });
      wasBright = bright;
      if (performance.now() < end) element.requestVideoFrameCallback(onFrame);
      else resolve();
    };
    element.requestVideoFrameCallback(onFrame);
  });
  clearInterval(sampler);
  switchTimers.forEach(clearTimeout);
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
  return { flashes, beeps, playoutDiffs, frames, stats, switchedAt, widths, outputLatencyMs: 1000 * (ctx.outputLatency ?? 0) };
}

/** The offsets (beep − flash, ms) of the flashes presented in [from, to). */
export function offsetsBetween(result, from, to = Infinity) {
  const offsets = [];
  for (const flash of result.flashes.filter((f) => f >= from && f < to)) {
    const nearest = result.beeps.reduce((best, b) => (Math.abs(b - flash) < Math.abs(best - flash) ? b : best), Infinity);
    if (Math.abs(nearest - flash) < 500) offsets.push(nearest - flash);
  }
  return offsets;
}

/** Prints and returns the median of `offsets`. */
export function reportOffsets(label, offsets) {
  const sorted = [...offsets].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  console.log(
    `${label} (beep − flash, + = audio late) median=${median?.toFixed(1)} min=${sorted[0]?.toFixed(1)} max=${sorted.at(-1)?.toFixed(1)} n=${offsets.length}`,
  );
  console.log(`${label}_VALUES ${offsets.map((o) => o.toFixed(0)).join(' ')}`);
  return median;
}

/** Chrome's own account: video − audio estimated playout (sender clock) after `from`. */
export function reportPlayoutDiff(result, from) {
  const diffs = result.playoutDiffs.filter((d) => d.at >= from).map((d) => d.diff).sort((a, b) => a - b);
  console.log(
    `AV_ESTIMATED_PLAYOUT_DIFF_MS (video − audio, sender clock) median=${diffs[Math.floor(diffs.length / 2)]} p10=${diffs[Math.floor(diffs.length * 0.1)]} p90=${diffs[Math.floor(diffs.length * 0.9)]} n=${diffs.length}`,
  );
}
