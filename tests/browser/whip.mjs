// Plain WHIP and WHEP pages for the browser tests: fetch + RTCPeerConnection in a page at the
// server's origin that loads no Sluice code (whip-whep.test.mjs, whep-capped.test.mjs).
import assert from 'node:assert/strict';

/** A page at the server's origin that is not the demo page: it loads no Sluice code. */
export async function plainPage(browser, server, pages, label) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.logs = [];
  page.label = label;
  page.on('console', (msg) => page.logs.push(`[${label} ${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => page.logs.push(`[${label} pageerror] ${err.message}`));
  await page.goto(`${server.url}/healthz`);
  pages.push(page);
  return page;
}

/** A demo token (the test servers run in demo mode). */
export async function devToken(server, room, identity) {
  const response = await fetch(`${server.url}/dev/token?room=${room}&identity=${identity}`);
  assert.equal(response.status, 200);
  return (await response.json()).token;
}

/** One gauge or counter of the server's /metrics. */
export async function metric(server, name) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? null : Number(line.split(' ')[1]);
}

/** WHIP from a plain page: camera in three simulcast encodings (q/h/f), and the microphone. */
export async function whipPublish(page, room, token) {
  return page.evaluate(
    async ({ room, token }) => {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 1280, height: 720, frameRate: 20 } });
      const pc = new RTCPeerConnection();
      pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly' });
      const video = pc.addTransceiver(stream.getVideoTracks()[0], {
        direction: 'sendonly',
        sendEncodings: [
          { rid: 'q', scaleResolutionDownBy: 4 },
          { rid: 'h', scaleResolutionDownBy: 2 },
          { rid: 'f' },
        ],
      });
      await pc.setLocalDescription(await pc.createOffer());
      const response = await fetch(`/whip/${room}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      const answer = await response.text();
      if (response.status !== 201) return { status: response.status, body: answer };
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      // The machine's CPU is shared: keep the layers' resolutions (frameWidth tells the layer).
      const params = video.sender.getParameters();
      params.degradationPreference = 'maintain-resolution';
      await video.sender.setParameters(params);
      window.whip = { pc, stream };
      return { status: response.status, location: response.headers.get('Location'), etag: response.headers.get('ETag') };
    },
    { room, token },
  );
}

/**
 * WHEP from a plain page: recvonly audio and video, played in an unmuted element, every
 * presented frame's time recorded. With `relay` (a UdpRelay), the connection goes through it:
 * the answer's candidate is rewritten to the relay's front port and the relay learns the
 * server's; it sends the browser's way to whichever address the browser last sent from
 * (Chrome may check from any of its interfaces).
 */
export async function whepPlay(page, path, { relay } = {}) {
  if (relay !== undefined) {
    await page.exposeFunction('relayLearn', (info) => relay.learn(info));
    // Media permission makes Chrome expose its loopback candidate instead of an mDNS name.
    await page.evaluate(async () => {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      for (const track of stream.getTracks()) track.stop();
    });
  }
  return page.evaluate(
    async ({ path, frontPort }) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      const media = document.createElement('video');
      media.id = 'whep-video';
      media.autoplay = true;
      media.playsInline = true;
      document.body.append(media);
      const frames = [];
      const onFrame = (now) => {
        if (frames.length >= 30_000) frames.splice(0, 15_000);
        frames.push(performance.timeOrigin + now);
        media.requestVideoFrameCallback(onFrame);
      };
      media.requestVideoFrameCallback(onFrame);
      const stream = new MediaStream();
      pc.ontrack = (event) => {
        stream.addTrack(event.track);
        media.srcObject = stream;
        media.play().catch(() => {});
      };
      await pc.setLocalDescription(await pc.createOffer());
      let offer = pc.localDescription.sdp;
      const hostCandidate = (line) => {
        const parts = line.replace(/^a=/, '').split(' ');
        const loopback = parts.length >= 8 && parts[2].toLowerCase() === 'udp' && parts[4] === '127.0.0.1' && parts[7] === 'host' && parts[1] === '1';
        return loopback ? { parts, port: Number(parts[5]) } : undefined;
      };
      const response = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer });
      let answer = await response.text();
      if (response.status !== 201) return { status: response.status, body: answer };
      if (frontPort !== undefined) {
        const lines = [];
        for (const line of answer.split('\r\n')) {
          const c = line.startsWith('a=candidate:') ? hostCandidate(line) : undefined;
          if (line.startsWith('a=candidate:') && c === undefined) continue;
          if (c) {
            await window.relayLearn({ server: { host: '127.0.0.1', port: c.port } });
            c.parts[5] = String(frontPort);
            lines.push(`a=${c.parts.join(' ')}`);
          } else {
            lines.push(line);
          }
        }
        answer = lines.join('\r\n');
      }
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      window.whep = { pc, frames, location: response.headers.get('Location') };
      return { status: response.status, location: response.headers.get('Location') };
    },
    { path, frontPort: relay?.frontPort },
  );
}

/** The WHEP page's inbound video and audio stats. */
export async function whepStats(page) {
  return page.evaluate(async () => {
    const out = { video: null, audio: null };
    for (const s of (await window.whep.pc.getStats()).values()) {
      if (s.type !== 'inbound-rtp') continue;
      if (s.kind === 'video') {
        out.video = {
          framesDecoded: s.framesDecoded ?? 0,
          frameWidth: s.frameWidth ?? 0,
          freezeCount: s.freezeCount ?? 0,
          totalFreezesDuration: s.totalFreezesDuration ?? 0,
        };
      }
      if (s.kind === 'audio') out.audio = { packetsReceived: s.packetsReceived ?? 0, totalAudioEnergy: s.totalAudioEnergy ?? 0 };
    }
    return out;
  });
}

/** The longest gap between presented frames of the WHEP page within [from, to] (epoch ms). */
export async function whepFrameGap(page, from, to) {
  return page.evaluate(
    ({ from, to }) => {
      const times = window.whep.frames.filter((t) => t >= from && t <= to);
      let max = 0;
      for (let i = 1; i < times.length; i += 1) max = Math.max(max, times[i] - times[i - 1]);
      return { maxGapMs: Math.round(max), frames: times.length };
    },
    { from, to },
  );
}

/** Bits of the capture clock an encoder draws into its picture (milliseconds, modulo 2^20). */
export const CLOCK_BITS = 20;

/**
 * An ffmpeg lavfi source: one second of testsrc at `size` (640 px wide), looped,
 * with the wall clock at capture drawn as CLOCK_BITS white/black 32 px squares on the top row.
 */
export function clockSource(size) {
  const boxes = Array.from(
    { length: CLOCK_BITS },
    (_, i) => `drawbox=x=${i * 32}:y=0:w=32:h=32:color=white:t=fill:enable='eq(mod(floor(t*1000/${2 ** i}),2),1)'`,
  );
  return [
    `testsrc=size=${size}:rate=30:duration=1`,
    'format=yuv420p',
    'loop=loop=-1:size=30',
    'settb=1/1000',
    'setpts=RTCTIME/1000',
    `drawbox=x=0:y=0:w=${CLOCK_BITS * 32}:h=32:color=black:t=fill`,
    ...boxes,
    'setpts=N*1000/30',
  ].join(',');
}

/**
 * WHIP from a plain page of a 640x360 canvas at 30 fps with the wall clock drawn as
 * `clockSource` draws it (one encoding, no audio): the browser side of a glass-to-glass run.
 */
export async function whipPublishClock(page, room, token) {
  return page.evaluate(
    async ({ room, token, bits }) => {
      const canvas = document.createElement('canvas');
      canvas.width = 640;
      canvas.height = 360;
      const ctx = canvas.getContext('2d');
      const draw = () => {
        const now = Date.now();
        ctx.fillStyle = `hsl(${(now / 20) % 360}, 60%, 40%)`;
        ctx.fillRect(0, 0, 640, 360);
        for (let i = 0; i < bits; i += 1) {
          ctx.fillStyle = Math.floor(now / 2 ** i) % 2 === 1 ? '#fff' : '#000';
          ctx.fillRect(i * 32, 0, 32, 32);
        }
      };
      draw();
      setInterval(draw, 1000 / 60);
      const stream = canvas.captureStream(30);
      const pc = new RTCPeerConnection();
      const video = pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly' });
      const params = video.sender.getParameters();
      params.degradationPreference = 'maintain-resolution';
      await video.sender.setParameters(params);
      await pc.setLocalDescription(await pc.createOffer());
      const response = await fetch(`/whip/${room}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      const answer = await response.text();
      if (response.status !== 201) return { status: response.status, body: answer };
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      window.whip = { pc, stream };
      return { status: response.status, location: response.headers.get('Location') };
    },
    { room, token, bits: CLOCK_BITS },
  );
}

/**
 * In the WHEP page, for `durationMs`: each presented frame's delay from its drawn capture
 * clock to its display time; returns {frames, p50, p95, max} in milliseconds (the clock is
 * this machine's, on both sides).
 */
export async function glassToGlass(page, durationMs) {
  const delays = await page.evaluate(
    ({ durationMs, bits }) => {
      const video = document.getElementById('whep-video');
      const span = 2 ** bits;
      const canvas = document.createElement('canvas');
      canvas.width = bits * 32;
      canvas.height = 32;
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      const out = [];
      return new Promise((resolve) => {
        const end = performance.now() + durationMs;
        const onFrame = (_now, meta) => {
          // The picture may arrive scaled down (the sender adapts to CPU): squares scale too.
          const scale = video.videoWidth / 640;
          ctx.drawImage(video, 0, 0, canvas.width * scale, 32 * scale, 0, 0, canvas.width, 32);
          const px = ctx.getImageData(0, 0, canvas.width, 32).data;
          let code = 0;
          for (let i = 0; i < bits; i += 1) if (px[(16 * canvas.width + i * 32 + 16) * 4] > 128) code += 2 ** i;
          const shown = Math.round(performance.timeOrigin + meta.expectedDisplayTime);
          // Signed: a frame shown a moment before the drawn clock (a canvas drawn between
          // captures) reads slightly negative rather than wrapping around.
          const delay = (((shown % span) - code) % span + span) % span;
          out.push(delay > span / 2 ? delay - span : delay);
          if (performance.now() < end) video.requestVideoFrameCallback(onFrame);
          else resolve(out);
        };
        video.requestVideoFrameCallback(onFrame);
      });
    },
    { durationMs, bits: CLOCK_BITS },
  );
  const sorted = [...delays].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { frames: sorted.length, p50: at(0.5), p95: at(0.95), max: sorted.at(-1) };
}
