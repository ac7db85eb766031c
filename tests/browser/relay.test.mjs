// One publisher, three subscribers, one room: real Chromium peers through a real `sluice`.
// Asserts what a user would notice: decoded video frames and audible audio on every
// subscriber, and that the publications disappear promptly when the publisher goes away.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { closePage, launchBrowser, openPage, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';

const NAME = 'relay';
const SUBSCRIBERS = 3;
const MEDIA_DEADLINE_MS = 30_000;
const REMOVAL_LIMIT_MS = 2_000;

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer(NAME);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** In the page: fetch a demo token, connect a Room, keep test state on `window.relay`. */
async function connectInPage(page, room, identity) {
  return page.evaluate(
    async ({ room, identity }) => {
      const query = new URLSearchParams({ room, identity });
      const response = await fetch(`/dev/token?${query}`);
      if (!response.ok) throw new Error(`/dev/token: ${response.status}`);
      const { token } = await response.json();
      const sfu = new window.Sluice.Room();
      const state = { room: sfu, removed: {}, subs: [], errors: [], ttffMs: undefined };
      window.relay = state;
      sfu.on('publicationRemoved', (e) => {
        state.removed[e.publicationId] = Date.now();
      });
      sfu.on('error', (err) => state.errors.push(String(err)));
      const joined = await sfu.connect(`ws://${location.host}/ws`, token);
      return joined.participant.participantId;
    },
    { room, identity },
  );
}

test('a publisher reaches three subscribers with video and audio', { timeout: 120_000 }, async () => {
  await withDiagnostics(NAME, server, () => pages, async () => {
    const room = uniqueRoom('relay');

    const publisher = await openPage(browser, server.url, 'publisher');
    pages.push(publisher);
    await connectInPage(publisher, room, 'publisher');
    const publications = await publisher.evaluate(async () => {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      const pubs = await window.relay.room.publish(stream);
      return pubs.map((p) => ({ publicationId: p.publicationId, kind: p.kind, source: p.source }));
    });
    assert.deepEqual(publications.map((p) => `${p.kind}/${p.source}`).sort(), ['audio/microphone', 'video/camera']);

    const subscribers = await Promise.all(
      Array.from({ length: SUBSCRIBERS }, async (_, i) => {
        const page = await openPage(browser, server.url, `subscriber-${i + 1}`);
        pages.push(page);
        await connectInPage(page, room, `subscriber-${i + 1}`);
        return page;
      }),
    );

    // Subscribe everywhere at once; each page records its own time to first decoded frame.
    const cpuBefore = server.cpuSeconds();
    const wallBefore = Date.now();
    await Promise.all(
      subscribers.map((page) =>
        page.evaluate(
          async ({ publications, deadlineMs }) => {
            const state = window.relay;
            for (const publication of publications) {
              const element = document.createElement(publication.kind === 'video' ? 'video' : 'audio');
              element.autoplay = true;
              element.muted = false; // totalAudioEnergy grows only while audio is played out
              if (publication.kind === 'video') element.playsInline = true;
              document.body.append(element);
              const startedAt = performance.now();
              const sub = await state.room.subscribe(publication.publicationId);
              state.subs.push({ kind: publication.kind, sub, startedAt });
              sub.waitForTrack().then(({ stream }) => {
                element.srcObject = stream;
                element.play().catch((err) => state.errors.push(`play: ${err}`));
              });
            }
            const video = state.subs.find((s) => s.kind === 'video');
            const until = performance.now() + deadlineMs;
            (async () => {
              while (performance.now() < until) {
                const report = await video.sub.getStats();
                let decoded = 0;
                report?.forEach((s) => {
                  if (s.type === 'inbound-rtp') decoded = s.framesDecoded ?? 0;
                });
                if (decoded > 0) {
                  state.ttffMs = Math.round(performance.now() - video.startedAt);
                  return;
                }
                await new Promise((r) => setTimeout(r, 20));
              }
            })();
          },
          { publications, deadlineMs: MEDIA_DEADLINE_MS },
        ),
      ),
    );

    const readStats = (page) =>
      page.evaluate(async () => {
        const out = { framesDecoded: 0, totalAudioEnergy: 0, frameWidth: 0, audioPackets: 0, ttffMs: window.relay.ttffMs };
        for (const { kind, sub } of window.relay.subs) {
          const report = await sub.getStats();
          report?.forEach((s) => {
            if (s.type !== 'inbound-rtp') return;
            if (kind === 'video') {
              out.framesDecoded = s.framesDecoded ?? 0;
              out.frameWidth = s.frameWidth ?? 0;
            } else {
              out.totalAudioEnergy = s.totalAudioEnergy ?? 0;
              out.audioPackets = s.packetsReceived ?? 0;
            }
          });
        }
        out.errors = window.relay.errors;
        return out;
      });

    const results = await Promise.all(
      subscribers.map((page) =>
        waitFor(
          `${page.label}: framesDecoded >= 60 and totalAudioEnergy > 0`,
          () => readStats(page),
          (s) => s.framesDecoded >= 60 && s.totalAudioEnergy > 0 && s.ttffMs !== undefined,
          { timeoutMs: MEDIA_DEADLINE_MS, intervalMs: 250 },
        ),
      ),
    );
    results.forEach((s, i) => {
      console.log(
        `subscriber-${i + 1}: TTFF_MS=${s.ttffMs} framesDecoded=${s.framesDecoded} frameWidth=${s.frameWidth} ` +
          `totalAudioEnergy=${s.totalAudioEnergy.toFixed(4)} audioPackets=${s.audioPackets}`,
      );
      assert.deepEqual(s.errors, [], `subscriber-${i + 1} reported errors`);
    });

    const cpuSeconds = server.cpuSeconds() - cpuBefore;
    const wallSeconds = (Date.now() - wallBefore) / 1000;
    console.log(`SERVER_CPU_PCT=${((100 * cpuSeconds) / wallSeconds).toFixed(1)} (${cpuSeconds.toFixed(2)} s CPU over ${wallSeconds.toFixed(1)} s, debug build)`);

    // Every new subscriber made the server ask the real publisher for a keyframe (PLI), so
    // video starts at once instead of at the next periodic keyframe.
    const pliCount = await publisher.evaluate(async () => {
      const pc = window.relay.room.peerConnection('publisher');
      let plis = 0;
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') plis += s.pliCount ?? 0;
      });
      return plis;
    });
    console.log(`PUBLISHER_PLI_COUNT=${pliCount}`);
    assert.ok(pliCount >= 1, 'the publisher never received a keyframe request');

    // The server's side of every connection of every page: the port its media flows from, and
    // whether its description says ICE-lite.
    const legs = (
      await Promise.all(
        [publisher, ...subscribers].map((page) =>
          page.evaluate(async () => {
            const out = [];
            for (const role of ['publisher', 'subscriber']) {
              const pc = window.relay.room.peerConnection(role);
              if (!pc || pc.connectionState !== 'connected') continue;
              const stats = await pc.getStats();
              let pairId;
              stats.forEach((s) => {
                if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
              });
              const pair = pairId && stats.get(pairId);
              const remote = pair && stats.get(pair.remoteCandidateId);
              out.push({ role, port: remote?.port, iceLite: /^a=ice-lite/m.test(pc.remoteDescription?.sdp ?? '') });
            }
            return out;
          }),
        ),
      )
    ).flat();
    const ports = [...new Set(legs.map((l) => l.port))];
    console.log(`CONNECTIONS=${legs.length} SERVER_PORTS=${ports.join(',')} ICE_LITE=${legs.every((l) => l.iceLite)}`);
    assert.ok(legs.length >= 1 + SUBSCRIBERS, `only ${legs.length} connected legs`);
    assert.equal(ports.length, 1, `the server serves every connection on one port, saw ${ports}`);
    assert.ok(legs.every((l) => l.iceLite), 'every server description says a=ice-lite');

    // The publisher goes away: every subscriber must hear about both publications within 2 s.
    const closedAt = Date.now();
    await closePage(publisher);
    const ids = publications.map((p) => p.publicationId);
    const removals = await Promise.all(
      subscribers.map((page) =>
        waitFor(
          `${page.label}: publicationRemoved for ${ids.join(', ')}`,
          () => page.evaluate(() => window.relay.removed),
          (removed) => ids.every((id) => removed[id] !== undefined),
          { timeoutMs: REMOVAL_LIMIT_MS + 3_000, intervalMs: 50 },
        ),
      ),
    );
    removals.forEach((removed, i) => {
      const delay = Math.max(...ids.map((id) => removed[id] - closedAt));
      console.log(`subscriber-${i + 1}: REMOVAL_MS=${delay}`);
      assert.ok(delay <= REMOVAL_LIMIT_MS, `subscriber-${i + 1} saw publicationRemoved after ${delay} ms`);
    });
  });
});
