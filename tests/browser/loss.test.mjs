// Loss recovery: 5 % seeded random loss on the subscriber's downlink (udp-relay.mjs) for
// ~10 s. At least 99 % of the frames must still be decoded (NACK → retransmission), without
// freezes, and the relay — which sees the cleartext RTP header of every server → browser
// packet — measures how long after a drop its retransmission (same SSRC + seq) came by: the
// first within 100 ms. Chrome, receiving only, never learns the round-trip time and asks
// again for a lost retransmission only 100 ms later; the server therefore repeats every
// retransmission once, 15 ms after the first (docs/decisions.md §24), and the relay counts the
// repeats and the repairs it lost (REPEATS, LOST_REPAIRS).
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { launchBrowser, startServer, uniqueRoom, withDiagnostics } from './harness.mjs';
import {
  closePages,
  floorPublisherUplink,
  inbound,
  joinPage,
  maxFrameGap,
  outboundSamples,
  RIDS,
  pageState,
  pollUntil,
  publishCamera,
  report,
  subscribeAndDecode,
  summarizeOutbound,
  waitWidth,
} from './probe.mjs';
import { startUdpRelay } from './udp-relay.mjs';

const LOSS = 0.05;
const LOSS_SECONDS = 10;
const DECODED_MIN = 0.99;
const FIRST_NACK_LIMIT_MS = 100;
const FREEZE_LIMIT_MS = 500;

let server;
let browser;
let relay;
let uplinkRelay;
const pages = [];

before(async () => {
  // A 100 ms minimum playout delay (RTP playout-delay extension) gives a retransmitted packet
  // time to make its frame's deadline: on loopback Chrome's own buffer is ~10 ms, shorter than
  // the time it takes to notice that a frame's last packet is missing.
  // The RTX unwrapping logs each stream it binds and its repair count (read by the uplink test).
  server = await startServer('loss', {
    env: { SLUICE_PLAYOUT_DELAY_MS: '100', SLUICE_LOG: process.env.SLUICE_LOG ?? 'info,sluice_sfu::transport::rtx=debug' },
  });
  browser = await launchBrowser();
  relay = await startUdpRelay({ seed: 5 });
  uplinkRelay = await startUdpRelay({ seed: 6 });
});

afterEach(() => closePages(pages));

after(async () => {
  relay?.close();
  uplinkRelay?.close();
  await browser?.close();
  await server?.stop();
});

test('5 % downlink loss: frames still decoded, NACKs answered quickly', { timeout: 90_000 }, async () => {
  await withDiagnostics('loss', server, () => pages, async () => {
    const room = uniqueRoom('loss');
    const publisher = await joinPage(browser, server, room, 'publisher', { pages });
    const publication = await publishCamera(publisher, { codec: 'vp8' });
    const subscriber = await joinPage(browser, server, room, 'subscriber', { pages, relay });
    const subscriptionId = await subscribeAndDecode(subscriber, publication.publicationId);
    // Start from the steady state: the subscriber on f (the server's estimate has grown), then a
    // 3 s baseline without loss for comparison.
    const onF = await waitWidth(subscriber, subscriptionId, { equals: 1280 }, { timeoutMs: 20_000 });
    assert.ok(onF.ok, `the subscriber never reached 1280 px: ${JSON.stringify(onF.stats)}`);
    const baseline = await inbound(subscriber, subscriptionId);
    await pollUntil(() => Date.now(), (now) => now >= baseline.at + 3_000, { timeoutMs: 5_000, intervalMs: 100 });

    const before = await inbound(subscriber, subscriptionId);
    const baseDecoded = before.framesDecoded - baseline.framesDecoded;
    const baseDropped = before.framesDropped - baseline.framesDropped;
    report('baseline', {
      SECONDS: ((before.at - baseline.at) / 1000).toFixed(1),
      DECODED_RATIO: (baseDecoded / (baseDecoded + baseDropped)).toFixed(4),
      framesDecoded: baseDecoded,
      framesDropped: baseDropped,
      freezeCountDelta: before.freezeCount - baseline.freezeCount,
    });
    relay.resetRetransmissions();
    const lossAt = Date.now();
    relay.configure('down', { loss: LOSS });
    // The loss window, sampled every 500 ms (frames must keep coming all along).
    const timeline = [];
    await pollUntil(
      async () => {
        const s = await inbound(subscriber, subscriptionId);
        timeline.push([s.at - lossAt, s.framesDecoded, s.frameWidth]);
        return s.at;
      },
      (at) => at >= lossAt + LOSS_SECONDS * 1_000,
      { timeoutMs: LOSS_SECONDS * 1_000 + 5_000, intervalMs: 500 },
    );
    const lossEnd = Date.now();
    relay.configure('down', { loss: 0 });
    // Let the last retransmissions and frames of the window arrive.
    await pollUntil(() => Date.now(), (now) => now >= lossEnd + 1_000, { timeoutMs: 3_000, intervalMs: 100 });
    const end = await inbound(subscriber, subscriptionId);
    const gap = await maxFrameGap(subscriber, subscriptionId, lossAt, lossEnd);
    const rtx = relay.retransmissions();
    const relayStats = relay.stats();

    const decoded = end.framesDecoded - before.framesDecoded;
    const dropped = end.framesDropped - before.framesDropped;
    const ratio = decoded / (decoded + dropped);
    // What the publisher encoded on the forwarded layer meanwhile (the SFU's input).
    const rid = { 320: 'q', 640: 'h', 1280: 'f' }[end.frameWidth];
    const samples = await outboundSamples(publisher, lossAt - 300);
    const window = samples.filter((s) => s.at <= lossEnd + 1_000);
    const encoded = rid && window.length > 1
      ? (window[window.length - 1].byRid[rid]?.framesEncoded ?? 0) - (window[0].byRid[rid]?.framesEncoded ?? 0)
      : null;
    report('loss', {
      LOSS_PCT: LOSS * 100,
      SECONDS: ((lossEnd - lossAt) / 1000).toFixed(1),
      DECODED_RATIO: ratio.toFixed(4),
      framesDecoded: decoded,
      framesDropped: dropped,
      framesEncodedOnLayer: encoded === null ? null : `${encoded}(${rid})`,
      DECODED_VS_ENCODED: encoded ? (decoded / encoded).toFixed(3) : null,
      FREEZE_COUNT_DELTA: end.freezeCount - before.freezeCount,
      FREEZES_DURATION_DELTA_S: +(end.totalFreezesDuration - before.totalFreezesDuration).toFixed(3),
      MAX_FRAME_GAP_MS: gap.maxGapMs,
      nackCountDelta: end.nackCount - before.nackCount,
      pliCountDelta: end.pliCount - before.pliCount,
      jitterBufferMs: Math.round(
        (1000 * (end.jitterBufferDelay - before.jitterBufferDelay)) / (end.jitterBufferEmittedCount - before.jitterBufferEmittedCount),
      ),
      packetsLostDelta: end.packetsLost - before.packetsLost,
      frameWidth: end.frameWidth,
    });
    report('nack', {
      RELAY_DROPPED_RTP: rtx.dropped,
      RETRANSMITTED: rtx.answered,
      FIRST_NACK_ANSWERED_MS: rtx.firstMs,
      RTX_P50_MS: rtx.p50Ms,
      RTX_P95_MS: rtx.p95Ms,
      RTX_MAX_MS: rtx.maxMs,
      duplicates: rtx.duplicates,
      REPEATS: rtx.repeats,
      LOST_REPAIRS: rtx.lostRepairs,
      droppedFrameEnds: rtx.droppedFrameEnds,
      frameEndP50Ms: rtx.frameEndP50Ms,
      ssrcs: rtx.ssrcs,
      lostRandom: relayStats.down.lostRandom,
    });
    report('timeline', { samples: timeline.map(([t, f, w]) => `${t}:${f}@${w}`).join(',') });
    report('publisher', summarizeOutbound(window));

    assert.deepEqual((await pageState(subscriber)).errors, [], 'subscriber errors');
    assert.ok(rtx.dropped > 20, `the relay dropped only ${rtx.dropped} RTP packets`);
    assert.ok(end.nackCount - before.nackCount > 0, 'the subscriber sent no NACK');
    assert.ok(ratio >= DECODED_MIN, `only ${(ratio * 100).toFixed(2)} % of the frames were decoded`);
    assert.ok(
      rtx.firstAnswered,
      `the first dropped packet was never retransmitted in-stream (retransmissions seen: ${rtx.answered}; RTX SSRCs would not match: ${JSON.stringify(rtx.ssrcs)})`,
    );
    assert.ok(rtx.firstMs < FIRST_NACK_LIMIT_MS, `first NACK answered after ${rtx.firstMs} ms`);
    assert.ok(gap.maxGapMs <= FREEZE_LIMIT_MS, `${gap.maxGapMs} ms without a frame under loss`);
    assert.equal(end.freezeCount - before.freezeCount, 0, `freezes under loss (${end.totalFreezesDuration - before.totalFreezesDuration} s)`);
  });
});

// The publisher's uplink loses 5 % at random: Chrome retransmits on an RTX stream per simulcast
// layer, named only by repaired-rid, which the server must turn back into the packets repaired
// (transport::rtx; webrtc-rs alone would drop them as unknown SSRCs and re-NACK every 100 ms).
// The subscriber, on a clean downlink, must still decode ≥ 99 % of the frames without freezes.
test('5 % publisher uplink loss: RTX repairs by repaired-rid, frames still decoded', { timeout: 90_000 }, async () => {
  await withDiagnostics('loss', server, () => pages, async () => {
    const room = uniqueRoom('uplink-loss');
    const startedAt = Date.now();
    const publisher = await joinPage(browser, server, room, 'publisher', { pages, relay: uplinkRelay });
    // As in the simulcast test: the publisher's own uplink estimation is not what this checks.
    await floorPublisherUplink(publisher, 2_000);
    const publication = await publishCamera(publisher, { codec: 'vp8' });
    const subscriber = await joinPage(browser, server, room, 'subscriber', { pages });
    const subscriptionId = await subscribeAndDecode(subscriber, publication.publicationId);
    const onF = await waitWidth(subscriber, subscriptionId, { equals: 1280 }, { timeoutMs: 20_000 });
    assert.ok(onF.ok, `the subscriber never reached 1280 px: ${JSON.stringify(onF.stats)}`);
    assert.ok(uplinkRelay.stats().up.forwarded > 0, "the publisher's media flows through the relay");

    const before = await inbound(subscriber, subscriptionId);
    const lossAt = Date.now();
    uplinkRelay.configure('up', { loss: LOSS });
    await pollUntil(() => Date.now(), (now) => now >= lossAt + LOSS_SECONDS * 1_000, {
      timeoutMs: LOSS_SECONDS * 1_000 + 5_000,
      intervalMs: 200,
    });
    const lossEnd = Date.now();
    uplinkRelay.configure('up', { loss: 0 });
    await pollUntil(() => Date.now(), (now) => now >= lossEnd + 1_000, { timeoutMs: 3_000, intervalMs: 100 });
    const end = await inbound(subscriber, subscriptionId);
    const gap = await maxFrameGap(subscriber, subscriptionId, lossAt, lossEnd);
    const samples = (await outboundSamples(publisher, lossAt - 300)).filter((s) => s.at <= lossEnd + 1_000);
    const first = samples[0]?.byRid ?? {};
    const last = samples[samples.length - 1]?.byRid ?? {};
    const retransmitted = Object.fromEntries(
      RIDS.map((rid) => [rid, (last[rid]?.retransmittedPacketsSent ?? 0) - (first[rid]?.retransmittedPacketsSent ?? 0)]),
    );
    const repairs = serverRepairs(startedAt, lossAt, lossEnd + 1_000);
    const decoded = end.framesDecoded - before.framesDecoded;
    const dropped = end.framesDropped - before.framesDropped;
    const ratio = decoded / (decoded + dropped);
    report('uplink loss', {
      LOSS_PCT: LOSS * 100,
      SECONDS: ((lossEnd - lossAt) / 1000).toFixed(1),
      DECODED_RATIO: ratio.toFixed(4),
      framesDecoded: decoded,
      framesDropped: dropped,
      FREEZE_COUNT_DELTA: end.freezeCount - before.freezeCount,
      MAX_FRAME_GAP_MS: gap.maxGapMs,
      PUBLISHER_RETRANSMITTED: JSON.stringify(retransmitted),
      rtxSsrcs: JSON.stringify(Object.fromEntries(RIDS.map((rid) => [rid, last[rid]?.rtxSsrc ?? null]))),
      SERVER_RTX_STREAMS: repairs.streams,
      SERVER_REPAIRED_AT_LEAST: repairs.repaired,
      relayUp: JSON.stringify(uplinkRelay.stats().up),
      frameWidth: end.frameWidth,
    });

    assert.deepEqual((await pageState(subscriber)).errors, [], 'subscriber errors');
    assert.ok(uplinkRelay.stats().up.lostRandom > 20, `the relay dropped only ${uplinkRelay.stats().up.lostRandom} packets`);
    assert.ok(retransmitted.f > 0, `the publisher retransmitted nothing on f: ${JSON.stringify(retransmitted)}`);
    assert.ok(last.f?.rtxSsrc, 'f has an RTX stream');
    assert.ok(repairs.streams >= 1, 'the server bound no RTX stream by repaired-rid');
    // The server logs its repair count every 16 repairs; Chrome retransmitted ~90 packets.
    assert.ok(repairs.repaired >= 32, `the server repaired only ${repairs.repaired} packets`);
    assert.ok(ratio >= DECODED_MIN, `only ${(ratio * 100).toFixed(2)} % of the frames were decoded`);
    assert.ok(gap.maxGapMs <= FREEZE_LIMIT_MS, `${gap.maxGapMs} ms without a frame under uplink loss`);
    assert.equal(end.freezeCount - before.freezeCount, 0, 'freezes under uplink loss');
  });
});

/**
 * RTX streams the server bound by repaired-rid since `since`, and the packets it repaired in
 * [from, to] (epoch ms), from its debug log: a line per 16 repairs of one publisher connection.
 * The count is per connection, and the first test's publisher logged its own (it is closed after
 * that test), so the lines are counted, not their numbers compared.
 */
function serverRepairs(since, from, to) {
  let streams = 0;
  let repaired = 0;
  for (const line of server.log) {
    const at = /(\d{4}-\d\d-\d\dT[\d:.]+Z)/.exec(line);
    const t = at ? Date.parse(at[1]) : NaN;
    if (line.includes('RTX stream bound by repaired-rid') && t >= since) streams += 1;
    if (line.includes('RTX packets repaired') && t >= from && t <= to) repaired += 16;
  }
  return { streams, repaired };
}
