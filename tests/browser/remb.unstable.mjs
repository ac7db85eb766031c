// NOT in `npm test` (run it with `npm run test:unstable`): a client with REMB only (no
// transport-wide feedback) is moved down under the cap and back up after it in most runs, but
// in 2 of 5 runs it went back to f while capped or froze 550 ms at the upgrade, and the
// step-down froze 317–1067 ms (its REMB reacts in 0.9–1.9 s, the queue signal in ~0.3 s);
// docs/decisions.md §27. Shares the bandwidth test's setup:
// Bandwidth-driven layer selection: the subscriber's downlink goes through the UDP relay
// (udp-relay.mjs). Capped below what f needs, the subscriber must drop to a lower layer within
// 5 s; with the cap lifted it must be back at 1280 px within 20 s; no freeze longer than 0.5 s
// at either switch (rVFC frame gaps in the page, and Chrome's freeze stats). The server sees
// the cap as a standing queue in the subscriber's transport-wide feedback and allocates from
// the rate the path delivered (docs/decisions.md §23); the cap (350 kbit/s) is below what f
// needs even at half its frame rate, so the subscriber must change resolution.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, startServer, uniqueRoom, withDiagnostics } from './harness.mjs';
import {
  floorPublisherUplink,
  inbound,
  joinPage,
  maxFrameGap,
  outboundRates,
  pageState,
  pollUntil,
  publishCamera,
  report,
  subscribeAndDecode,
  waitWidth,
} from './probe.mjs';
import { startUdpRelay } from './udp-relay.mjs';

const CAP_BPS = 350_000;
const CAP_QUEUE_MS = 250;
const DOWN_LIMIT_MS = 5_000;
const UP_LIMIT_MS = 20_000;
const FREEZE_LIMIT_MS = 500;
/** The rig's floor for the publisher's uplink estimate: all three layers fit above it. */
const PUBLISHER_MIN_KBPS = 2_000;
/** Before the cap, the downlink must carry well over the cap, or the cap tests nothing. */
const UNCAPPED_MIN_BPS = 1.5 * CAP_BPS;
/** How long the cap stays on: past the server's 12 s congestion hold (probing then). */
const CAPPED_MS = 16_000;
/** How long after a switch its freeze window lasts. */
const AFTER_SWITCH_MS = 1_000;

let server;
let browser;
let rembRelay;
let rateTimer;
const pages = [];
/** [epoch ms, delivered bit/s over the last second] of the relay's server → browser direction. */
const rates = [];

before(async () => {
  // The core's allocation decisions (`bandwidth cap … bits_per_second=…`) are debug lines: keep
  // them to report the estimate at which each layer was chosen.
  const log = process.env.SLUICE_LOG ?? 'info,sluice_sfu::core::room=debug,sluice_sfu::transport::peer=debug';
  server = await startServer('remb', { env: { SLUICE_LOG: log } });
  // 20 fps, as in the simulcast test: at 30 fps the publishing Chromium's three encoders starve
  // on 2 cores (docs/decisions.md §19), which would show up here as freezes of the publisher.
  browser = await launchBrowser({ fps: 20 });
  rembRelay = await startUdpRelay({ seed: 8 });
  rateTimer = setInterval(() => {
    rates.push([Date.now(), rembRelay.stats().down.rateBps]);
    if (rates.length > 2_000) rates.splice(0, 1_000);
  }, 250);
});

after(async () => {
  clearInterval(rateTimer);
  rembRelay?.close();
  await browser?.close();
  await server?.stop();
});

function rateAt(at) {
  let best;
  for (const [t, bps] of rates) if (t <= at + 250) best = bps;
  return best === undefined ? null : `${Math.round(best / 1000)}kbps`;
}

const kbps = (bps) => `${Math.round(bps / 1000)}kbps`;

/** How many server log lines matching `pattern` were logged in [from, to] (epoch ms). */
function serverLines(pattern, from, to) {
  return server.log.filter((line) => {
    const at = /(\d{4}-\d\d-\d\dT[\d:.]+Z)/.exec(line);
    const t = at ? Date.parse(at[1]) : NaN;
    return pattern.test(line) && t >= from && t <= to;
  }).length;
}

// A client that estimates its downlink itself: the subscriber's page takes transport-wide
// feedback out of the server's offer, so its Chrome answers without it and sends REMB instead
// (as a browser without transport-cc would). The server has no queue signal for it then; its
// REMB, falling far below what it is sent, must move it down, and a probe before the upgrade
// (whose queue lowers the REMB again while the cap holds) must not strand it below f after.
test('a client with REMB only is moved down under a cap and back up', { timeout: 120_000 }, async () => {
  await withDiagnostics('remb', server, () => pages, async () => {
    const room = uniqueRoom('remb');
    const publisher = await joinPage(browser, server, room, 'publisher-remb', { pages });
    await floorPublisherUplink(publisher, PUBLISHER_MIN_KBPS);
    const publication = await publishCamera(publisher, { codec: 'vp8' });
    const subscriber = await joinPage(browser, server, room, 'subscriber-remb', { pages, relay: rembRelay });
    await subscriber.evaluate(() => {
      const apply = RTCPeerConnection.prototype.setRemoteDescription;
      RTCPeerConnection.prototype.setRemoteDescription = function (description) {
        if (description?.type === 'offer' && description.sdp) {
          const sdp = description.sdp
            .split('\r\n')
            .filter((line) => !/^a=rtcp-fb:\S+ transport-cc/.test(line) && !/^a=extmap:\S+ .*transport-wide-cc/.test(line))
            .join('\r\n');
          return apply.call(this, { type: 'offer', sdp });
        }
        return apply.call(this, description);
      };
    });
    const subscriptionId = await subscribeAndDecode(subscriber, publication.publicationId);
    const initial = await waitWidth(subscriber, subscriptionId, { equals: 1280 }, { timeoutMs: 20_000 });
    assert.ok(initial.ok, `the subscriber never reached 1280 px without a cap: ${JSON.stringify(initial.stats)}`);
    await pollUntil(() => rembRelay.stats().down.rateBps, (bps) => bps >= UNCAPPED_MIN_BPS, { timeoutMs: 10_000, intervalMs: 250 });

    const beforeCap = await inbound(subscriber, subscriptionId);
    const capAt = Date.now();
    rembRelay.configure('down', { rateBps: CAP_BPS, queueMs: CAP_QUEUE_MS });
    const down = await waitWidth(subscriber, subscriptionId, { below: 1280 }, { since: capAt, timeoutMs: DOWN_LIMIT_MS + 5_000 });
    const downAt = down.ok ? capAt + down.ms : Date.now();
    await pollUntil(() => Date.now(), (now) => now >= downAt + AFTER_SWITCH_MS, { timeoutMs: 5_000, intervalMs: 100 });
    const downGap = await maxFrameGap(subscriber, subscriptionId, capAt, downAt + AFTER_SWITCH_MS);
    let widest = 0;
    await pollUntil(
      () => inbound(subscriber, subscriptionId),
      (s) => {
        widest = Math.max(widest, s.frameWidth ?? 0);
        return Date.now() >= capAt + CAPPED_MS;
      },
      { timeoutMs: CAPPED_MS + 5_000, intervalMs: 200 },
    );
    const afterCap = await inbound(subscriber, subscriptionId);
    const liftAt = Date.now();
    rembRelay.configure('down', { rateBps: Infinity });
    const up = await waitWidth(subscriber, subscriptionId, { equals: 1280 }, { since: liftAt, timeoutMs: UP_LIMIT_MS + 5_000 });
    const upAt = up.ok ? liftAt + up.ms : Date.now();
    await pollUntil(() => Date.now(), (now) => now >= upAt + AFTER_SWITCH_MS, { timeoutMs: 5_000, intervalMs: 100 });
    const upGap = await maxFrameGap(subscriber, subscriptionId, upAt - 2_000, upAt + AFTER_SWITCH_MS);
    const end = await inbound(subscriber, subscriptionId);
    report('remb', {
      DOWNGRADE_MS: down.ms,
      toWidth: down.stats?.frameWidth,
      MAX_FRAME_GAP_AT_DOWNGRADE_MS: downGap.maxGapMs,
      widestWhileCapped: widest,
      UPGRADE_MS: up.ms,
      MAX_FRAME_GAP_AT_UPGRADE_MS: upGap.maxGapMs,
      freezesWhileCapped: afterCap.freezeCount - beforeCap.freezeCount,
      freezesAfter: end.freezeCount - afterCap.freezeCount,
      rembsBelowSent: serverLines(/REMB below what is sent/, capAt, Date.now()),
      probesFailed: serverLines(/probe failed/, capAt, Date.now()),
      queueSignals: serverLines(/downlink congested/, capAt, Date.now()),
    });
    assert.ok(down.ok && down.ms <= DOWN_LIMIT_MS, `downgrade: frameWidth < 1280 after ${down.ms ?? 'never'} ms`);
    assert.ok(widest < 1280, `went back to 1280 px while still capped at ${kbps(CAP_BPS)}`);
    assert.ok(up.ok && up.ms <= UP_LIMIT_MS, `upgrade: frameWidth 1280 after ${up.ms ?? 'never'} ms`);
    assert.equal(serverLines(/downlink congested/, capAt, Date.now()), 0, 'no transport-wide feedback, so no queue signal');
    assert.ok(upGap.maxGapMs <= FREEZE_LIMIT_MS, `upgrade: ${upGap.maxGapMs} ms without a frame`);
  });
});
