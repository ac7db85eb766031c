// WHIP and WHEP with plain pages (fetch + RTCPeerConnection, no Sluice code): Chromium
// publishes its fake camera in simulcast (q/h/f) and microphone over WHIP; a plain WHEP page
// decodes the full layer with sound, a second WHEP page asking `?layer=q` decodes 320 px, and
// a page using @sluice/client sees the WHIP publication with its rids and decodes it. Then the
// refusals with their status codes, CORS by origin, DELETE freeing the session's peer
// connection and subscriptions (read from /metrics), the watch page's WHEP mode, and a WHEP
// publication session ending with the WHIP publication it played while room sessions stay
// (they follow the room). Last, ffmpeg's WHIP muxer (ffmpeg 9 from
// the PyPI package imageio-ffmpeg, which scripts/test.sh installs and names in
// SLUICE_WHIP_FFMPEG) publishes H.264 + Opus, which the SDK page and a plain WHEP page decode.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { closePage, launchBrowser, openPage, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';
import { RIDS, floorPublisherUplink, joinPage, subscribeAndDecode } from './probe.mjs';
import {
  clockSource,
  devToken as devTokenOf,
  glassToGlass,
  metric as metricOf,
  plainPage as plainPageOf,
  whepPlay,
  whepStats,
  whipPublish,
  whipPublishClock,
} from './whip.mjs';

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer('whip-whep');
  browser = await launchBrowser({ fps: 20 });
});

const plainPage = (label) => plainPageOf(browser, server, pages, label);
const devToken = (room, identity) => devTokenOf(server, room, identity);
const metric = (name) => metricOf(server, name);

after(async () => {
  for (const page of pages) await closePage(page).catch(() => {});
  await browser?.close();
  await server?.stop();
});

test('a plain WHIP page publishes simulcast; plain WHEP pages and the SDK decode it; DELETE frees', async () => {
  const room = uniqueRoom('whip');
  await withDiagnostics('whip-whep', server, () => pages, async () => {
    const publisher = await plainPage('whip');
    await floorPublisherUplink(publisher, 2_000);
    const published = await whipPublish(publisher, room, await devToken(room, 'whip-page'));
    assert.equal(published.status, 201, `WHIP POST: ${JSON.stringify(published)}`);
    assert.match(published.location, new RegExp(`^${server.url}/whip/${room}/session/[0-9a-f]+$`), 'an absolute Location');
    assert.ok(published.etag, 'an ETag');

    // The SDK page sees the publication with its three layers, and decodes it.
    const sdk = await joinPage(browser, server, room, 'sdk', { pages });
    const video = await waitFor(
      'the SDK page sees the WHIP video publication',
      () => sdk.evaluate(() => [...window.probe.state.room.publications.values()].find((p) => p.kind === 'video') ?? null),
      (p) => p !== null,
    );
    assert.deepEqual(video.rids, RIDS, 'simulcast rids from a=simulcast, lowest first');
    await subscribeAndDecode(sdk, video.publicationId, { minFrames: 20 });

    // A plain WHEP viewer (token-less: demo mode, loopback) gets the full layer with sound.
    const viewer = await plainPage('whep');
    const played = await whepPlay(viewer, `/whep/${room}`);
    assert.equal(played.status, 201, `WHEP POST: ${JSON.stringify(played)}`);
    const full = await waitFor(
      'the WHEP page decodes the full layer with sound',
      () => whepStats(viewer),
      (s) => s.video?.framesDecoded >= 30 && s.video.frameWidth === 1280 && s.audio?.totalAudioEnergy > 0,
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    console.log(`whep full layer: ${JSON.stringify(full)}`);

    // `?layer=q` caps a second viewer at the lowest layer.
    const capped = await plainPage('whep-q');
    assert.equal((await whepPlay(capped, `/whep/${room}/${video.publicationId}?layer=q`)).status, 201);
    const low = await waitFor(
      'the ?layer=q viewer decodes 320 px',
      () => whepStats(capped),
      (s) => s.video?.framesDecoded >= 20 && s.video.frameWidth === 320,
      { timeoutMs: 20_000, intervalMs: 250 },
    );
    console.log(`whep ?layer=q: ${JSON.stringify(low)}`);

    // DELETE frees the viewer's peer connection and its two subscriptions.
    const [peers, subscriptions] = [await metric('sluice_shard_peers'), await metric('sluice_subscriptions')];
    const status = await capped.evaluate(async () => (await fetch(window.whep.location, { method: 'DELETE' })).status);
    assert.equal(status, 200);
    await waitFor(
      'the deleted session freed its peer and subscriptions',
      async () => [await metric('sluice_shard_peers'), await metric('sluice_subscriptions')],
      ([p, s]) => p === peers - 1 && s === subscriptions - 2,
    );
    const again = await capped.evaluate(async () => (await fetch(window.whep.location, { method: 'DELETE' })).status);
    assert.equal(again, 404, 'a deleted session is gone');

    // The watch page plays the room over WHEP by default.
    const watchPage = await openPage(browser, `${server.url}/watch/${room}`, 'watch-whep');
    pages.push(watchPage);
    const watched = await waitFor(
      'the watch page (WHEP) decodes the full layer',
      () =>
        watchPage.evaluate(async () => {
          const whep = window.sluiceWatch.whep;
          if (whep === undefined) return null;
          const video = [...(await whep.pc.getStats()).values()].find((s) => s.type === 'inbound-rtp' && s.kind === 'video');
          return { framesDecoded: video?.framesDecoded ?? 0, frameWidth: video?.frameWidth ?? 0 };
        }),
      (s) => s?.framesDecoded >= 20 && s.frameWidth === 1280,
      { timeoutMs: 20_000, intervalMs: 250 },
    );
    console.log(`watch page over WHEP: ${JSON.stringify(watched)}`);

    // A WHEP session of the publication, to end with it.
    const byPublication = await plainPage('whep-publication');
    assert.equal((await whepPlay(byPublication, `/whep/${room}/${video.publicationId}`)).status, 201);
    const participants = await metric('sluice_participants');

    // The WHIP publisher DELETEs its session: its publications end, and with them the WHEP
    // session of the publication; the room sessions (the plain viewer, the watch page) stay,
    // waiting for the room's next publisher, until they are deleted. Then, with the SDK page
    // gone, nothing is left on the server.
    const whipDeleted = await publisher.evaluate(async (location) => (await fetch(location, { method: 'DELETE' })).status, published.location);
    assert.equal(whipDeleted, 200);
    await waitFor(
      'the publisher and the publication session left, the room sessions stay',
      () => metric('sluice_participants'),
      (n) => n === participants - 2,
      { timeoutMs: 10_000, intervalMs: 200 },
    );
    for (const page of [viewer, watchPage]) {
      const deleted = await page.evaluate(async () => {
        const session = window.whep ?? window.sluiceWatch?.whep;
        return (await fetch(session.location, { method: 'DELETE' })).status;
      });
      assert.equal(deleted, 200, `DELETE of ${page.label}'s room session`);
    }
    await closePage(sdk);
    await waitFor(
      'no participant, publication, subscription or peer connection left',
      async () => Promise.all(['sluice_participants', 'sluice_publications', 'sluice_subscriptions', 'sluice_shard_peers'].map(metric)),
      (values) => values.every((v) => v === 0),
      { timeoutMs: 10_000, intervalMs: 200 },
    );
    await closePage(watchPage);
  });
});

test('glass to glass, browser WHIP to browser WHEP', async () => {
  const room = uniqueRoom('whip-clock');
  await withDiagnostics('whip-clock', server, () => pages, async () => {
    const publisher = await plainPage('whip-clock');
    assert.equal((await whipPublishClock(publisher, room, await devToken(room, 'clock'))).status, 201);
    const viewer = await plainPage('whep-clock');
    assert.equal((await whepPlay(viewer, `/whep/${room}`)).status, 201);
    await waitFor('the WHEP page decodes the clock', () => whepStats(viewer), (s) => s.video?.framesDecoded >= 30, {
      timeoutMs: 20_000,
      intervalMs: 250,
    });
    const delay = await glassToGlass(viewer, 5_000);
    console.log(`browser/WHIP -> browser/WHEP glass to glass: ${JSON.stringify(delay)}`);
    assert.ok(delay.frames >= 60, `only ${delay.frames} frames presented in 5 s`);
    assert.ok(delay.p50 >= 0 && delay.p95 < 1_000, `glass to glass out of any sane range: ${JSON.stringify(delay)}`);
    await closePage(publisher);
    await closePage(viewer);
  });
});

test('refusals carry their status codes; CORS follows the allowed origins', async () => {
  const room = uniqueRoom('whip-errors');
  const token = await devToken(room, 'p');
  const post = (path, headers, body) => fetch(`${server.url}${path}`, { method: 'POST', headers, body });
  const sdp = { 'Content-Type': 'application/sdp' };
  const bearer = { ...sdp, Authorization: `Bearer ${token}` };
  assert.equal((await post(`/whip/${room}`, { 'Content-Type': 'text/plain', Authorization: `Bearer ${token}` }, 'v=0')).status, 415);
  assert.equal((await post(`/whip/${room}`, sdp, 'v=0')).status, 401);
  assert.equal((await post(`/whip/${room}`, { ...sdp, Authorization: 'Bearer nonsense' }, 'v=0')).status, 401);
  const malformed = await post(`/whip/${room}`, bearer, 'not sdp');
  assert.equal(malformed.status, 400);
  assert.match(await malformed.text(), /malformed SDP/);
  const av1 = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 45\r\na=mid:0\r\na=sendonly\r\na=rtpmap:45 AV1/90000\r\n';
  const refused = await post(`/whip/${room}`, bearer, av1);
  assert.equal(refused.status, 406);
  assert.match(await refused.text(), /AV1.*VP8/);
  const recvonly = av1.replace('a=sendonly', 'a=recvonly').replace('AV1', 'VP8');
  assert.equal((await post(`/whep/${room}-nobody/PU1`, sdp, recvonly)).status, 404, 'a publication of a room publishing nothing');
  assert.equal((await post(`/whip/${room}`, bearer, 'v=0\r\n'.padEnd(70_000, 'x'))).status, 413);

  // CORS: a loopback origin is allowed by default (no --allowed-origins), a foreign one not.
  const preflight = (origin) => fetch(`${server.url}/whip/${room}`, { method: 'OPTIONS', headers: { Origin: origin } });
  const allowed = await preflight('http://localhost:5173');
  assert.equal(allowed.status, 204);
  assert.equal(allowed.headers.get('access-control-allow-origin'), 'http://localhost:5173');
  assert.match(allowed.headers.get('access-control-allow-methods'), /POST/);
  const foreign = await preflight('https://elsewhere.example');
  assert.equal(foreign.headers.get('access-control-allow-origin'), null);
  assert.equal((await post(`/whip/${room}`, { ...bearer, Origin: 'https://elsewhere.example' }, av1)).status, 403);
});

test('ffmpeg publishes H.264 + Opus over WHIP; the SDK and a plain WHEP page decode it with sound', async (t) => {
  const ffmpeg = process.env.SLUICE_WHIP_FFMPEG;
  if (!ffmpeg) {
    t.skip('SLUICE_WHIP_FFMPEG is not set (scripts/test.sh installs imageio-ffmpeg and sets it)');
    return;
  }
  const room = uniqueRoom('whip-ffmpeg');
  const token = await devToken(room, 'ffmpeg');
  const args = [
    '-hide_banner', '-loglevel', 'warning', '-re',
    '-f', 'lavfi', '-i', clockSource('640x360'),
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-pix_fmt', 'yuv420p', '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency',
    '-profile:v', 'baseline', '-bf', '0', '-g', '30',
    '-c:a', 'libopus', '-ar', '48000', '-ac', '2',
    '-f', 'whip', '-authorization', token, `${server.url}/whip/${room}`,
  ];
  const encoder = spawn(ffmpeg, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const log = [];
  encoder.stderr.on('data', (chunk) => log.push(String(chunk)));
  const exited = new Promise((resolve) => encoder.once('exit', (code, signal) => resolve({ code, signal })));
  try {
    await withDiagnostics('whip-ffmpeg', server, () => pages, async () => {
      const sdk = await joinPage(browser, server, room, 'sdk-ffmpeg', { pages });
      const published = () => sdk.evaluate(() => [...window.probe.state.room.publications.values()].map((p) => ({ id: p.publicationId, kind: p.kind, codec: p.codec })));
      const both = await waitFor('the SDK page sees ffmpeg\'s two publications', published, (p) => p.length === 2, { timeoutMs: 15_000 });
      const video = both.find((p) => p.kind === 'video');
      assert.equal(video?.codec, 'video/H264');
      assert.equal(both.find((p) => p.kind === 'audio')?.codec, 'audio/opus');
      await subscribeAndDecode(sdk, video.id, { minFrames: 20 });

      const viewer = await plainPage('whep-ffmpeg');
      assert.equal((await whepPlay(viewer, `/whep/${room}`)).status, 201);
      const stats = await waitFor(
        'the WHEP page decodes ffmpeg\'s video with sound',
        () => whepStats(viewer),
        (s) => s.video?.framesDecoded >= 30 && s.video.frameWidth === 640 && s.audio?.totalAudioEnergy > 0,
        { timeoutMs: 20_000, intervalMs: 250 },
      );
      console.log(`ffmpeg over WHIP, WHEP viewer: ${JSON.stringify(stats)}`);
      // Glass to glass: the capture clock ffmpeg drew, read back at each frame's display.
      const delay = await glassToGlass(viewer, 5_000);
      console.log(`ffmpeg/WHIP -> Chromium/WHEP glass to glass: ${JSON.stringify(delay)}`);
      assert.ok(delay.frames >= 60, `only ${delay.frames} frames presented in 5 s`);
      assert.ok(delay.p50 >= 0 && delay.p95 < 1_000, `glass to glass out of any sane range: ${JSON.stringify(delay)}`);

      // ffmpeg stops (SIGINT: it sends DELETE): the publications leave the room.
      encoder.kill('SIGINT');
      await waitFor('ffmpeg\'s publications end', published, (p) => p.length === 0, { timeoutMs: 10_000 });
    });
  } catch (err) {
    console.error(`--- ffmpeg log\n${log.join('')}`);
    throw err;
  } finally {
    if (encoder.exitCode === null && encoder.signalCode === null) encoder.kill('SIGKILL');
    await exited;
  }
});
