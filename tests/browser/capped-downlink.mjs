// The capped-downlink rig shared by bandwidth.test.mjs (Chrome with transport-wide feedback) and
// remb.unstable.mjs (a client with REMB only): the subscriber's downlink goes through the UDP
// relay (udp-relay.mjs), is capped below what f needs for CAPPED_MS, then lifted. The rig
// reports switch times, frame gaps (rVFC in the page, and Chrome's freeze stats) and the
// server's decisions; each test asserts what its client must do.
import assert from 'node:assert/strict';
import { after, afterEach, before } from 'node:test';
import { launchBrowser, startServer, uniqueRoom } from './harness.mjs';
import {
  closePages,
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

export const CAP_BPS = 350_000;
const CAP_QUEUE_MS = 250;
const DOWN_LIMIT_MS = 5_000;
const UP_LIMIT_MS = 20_000;
export const FREEZE_LIMIT_MS = 500;
/** The rig's floor for the publisher's uplink estimate: all three layers fit above it. */
const PUBLISHER_MIN_KBPS = 2_000;
/** Before the cap, the downlink must carry well over the cap, or the cap tests nothing. */
const UNCAPPED_MIN_BPS = 1.5 * CAP_BPS;
/** How long the cap stays on: past the server's 8 s congestion hold (probing then). */
const CAPPED_MS = 16_000;
/** How long after a switch its freeze window lasts. */
const AFTER_SWITCH_MS = 1_000;

let server;
let browser;
let rateTimer;
const pages = [];
/** Per client: its relay, and [epoch ms, delivered bit/s over the last second] of its server →
 * browser direction. */
const paths = {};

/**
 * Sets up the rig for a test file: a server (its log named `name`), a 20 fps browser, and one
 * UDP relay per client label in `seeds` ({label: seed}). Returns what the file's tests need.
 */
export function cappedDownlinkRig(name, seeds) {
  before(async () => {
    // The core's allocation decisions (`bandwidth cap … bits_per_second=…`) are debug lines:
    // keep them to report the estimate at which each layer was chosen.
    const log = process.env.SLUICE_LOG ?? 'info,sluice_core::room=debug,sluice_core::downlink=debug,sluice_sfu::transport::peer=debug,sluice_sfu::transport::horizon=debug';
    server = await startServer(name, { env: { SLUICE_LOG: log } });
    // 20 fps, as in the simulcast test: at 30 fps the publishing Chromium's three encoders
    // starve on 2 cores (docs/decisions.md §19), which would show up here as freezes of the
    // publisher.
    browser = await launchBrowser({ fps: 20 });
    for (const [label, seed] of Object.entries(seeds)) {
      paths[label] = { relay: await startUdpRelay({ seed }), rates: [] };
    }
    rateTimer = setInterval(() => {
      for (const { relay, rates } of Object.values(paths)) {
        rates.push([Date.now(), relay.stats().down.rateBps]);
        if (rates.length > 2_000) rates.splice(0, 1_000);
      }
    }, 250);
  });

  afterEach(() => closePages(pages));

  after(async () => {
    clearInterval(rateTimer);
    for (const { relay } of Object.values(paths)) relay?.close();
    await browser?.close();
    await server?.stop();
  });

  return {
    server: () => server,
    pages: () => pages,
    /** The capped-downlink run for client `label` (see `cappedDownlink`). */
    run: (label, options) => cappedDownlink(label, paths[label], options),
  };
}

function rateAt(rates, at) {
  let best;
  for (const [t, bps] of rates) if (t <= at + 250) best = bps;
  return best === undefined ? null : `${Math.round(best / 1000)}kbps`;
}

export const kbps = (bps) => `${Math.round(bps / 1000)}kbps`;

/** How many server log lines matching `pattern` were logged in [from, to] (epoch ms). */
export function serverLines(pattern, from, to) {
  return server.log.filter((line) => {
    const at = /(\d{4}-\d\d-\d\dT[\d:.]+Z)/.exec(line);
    const t = at ? Date.parse(at[1]) : NaN;
    return pattern.test(line) && t >= from && t <= to;
  }).length;
}

/** How long after the restart's first packet a repair of an earlier one may still be in flight
 * (answered before the server heard of the restart, or that answer's repeat 15 ms later). */
const REPAIR_IN_FLIGHT_MS = 50;

/**
 * The first repair horizon the server set in [from, to] (its decoder restart at the step-down's
 * keyframe, `repair horizon set` in its log) and how many packets from before it the relay saw
 * sent again later: those the decoder could no longer show, on the path that was congested.
 */
function repairsBehindHorizon(relay, from, to) {
  const line = server.log.find((l) => {
    const at = /(\d{4}-\d\d-\d\dT[\d:.]+Z)/.exec(l);
    const t = at ? Date.parse(at[1]) : NaN;
    return /repair horizon set/.test(l) && t >= from && t <= to;
  });
  const parsed = line && /ssrc=(\d+) sequence_number=(\d+)/.exec(line);
  if (!parsed) return { horizon: null, sentAt: null, late: null, earlier: null };
  const ssrc = Number(parsed[1]);
  const horizon = Number(parsed[2]);
  const sentAt = relay.firstSentAt(ssrc, horizon) ?? null;
  if (sentAt === null) return { horizon, sentAt, late: null, earlier: null };
  const before = (seq) => {
    const distance = (horizon - seq) & 0xffff;
    return distance > 0 && distance < 0x8000;
  };
  const earlier = relay.resentPackets().filter((p) => p.ssrc === ssrc && before(p.seq));
  return {
    horizon,
    sentAt,
    late: earlier.filter((p) => p.at > sentAt + REPAIR_IN_FLIGHT_MS).length,
    earlier: earlier.length,
  };
}

/** Makes the page's Chrome answer our offers without transport-wide feedback, as a browser
 * without transport-cc would: it then estimates its downlink itself and sends REMB. */
async function withoutTransportCc(page) {
  await page.evaluate(() => {
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
}

/**
 * Publishes a camera, subscribes `label`'s page through `path`'s relay, caps its downlink for
 * CAPPED_MS and lifts the cap; reports what happened and returns what the tests assert on.
 */
async function cappedDownlink(label, path, { rembOnly = false } = {}) {
  const { relay, rates } = path;
  const room = uniqueRoom(label);
  const publisher = await joinPage(browser, server, room, `publisher-${label}`, { pages });
  await floorPublisherUplink(publisher, PUBLISHER_MIN_KBPS);
  const publication = await publishCamera(publisher, { codec: 'vp8' });
  const subscriber = await joinPage(browser, server, room, `subscriber-${label}`, { pages, relay });
  if (rembOnly) await withoutTransportCc(subscriber);
  const subscribedAt = Date.now();
  const subscriptionId = await subscribeAndDecode(subscriber, publication.publicationId);

  // Uncapped, the subscriber gets f once the server's estimate has grown.
  const initial = await waitWidth(subscriber, subscriptionId, { equals: 1280 }, { timeoutMs: 20_000 });
  // … and f has grown to well above the cap (Chrome ramps a resumed encoder up over a second).
  const flowing = await pollUntil(
    () => relay.stats().down.rateBps,
    (bps) => bps >= UNCAPPED_MIN_BPS,
    { timeoutMs: 10_000, intervalMs: 250 },
  );
  report(`${label} uncapped`, {
    reached1280: initial.ok,
    frameWidth: initial.stats?.frameWidth,
    downlink: kbps(relay.stats().down.rateBps),
    candidates: JSON.stringify((await pageState(subscriber)).relayCandidates),
  });
  assert.ok(initial.ok, `the subscriber never reached 1280 px without a cap: ${JSON.stringify(initial.stats)}`);
  assert.ok(flowing.ok, `uncapped, the downlink carried only ${kbps(flowing.value)}`);
  assert.ok(relay.stats().down.forwarded > 0 && relay.stats().up.forwarded > 0, 'media flows through the relay');
  if (rembOnly) {
    // libwebrtc's receiver estimator starts only after ~5 s of media (or at its first overuse):
    // before its first REMB it has told the server nothing, and its reports come once a
    // second. The cap meets an established client here; a cap in a REMB client's first
    // seconds is the startup case, measured in docs/decisions.md §30.
    const estimating = await pollUntil(
      () => serverLines(/REMB subscriber=/, subscribedAt, Date.now()),
      (n) => n > 0,
      { timeoutMs: 15_000, intervalMs: 250 },
    );
    report(`${label} first REMB`, { afterSubscribeMs: Date.now() - subscribedAt });
    assert.ok(estimating.ok, 'the REMB client never sent a REMB');
  }

  // Cap the downlink below what f needs.
  const beforeCap = await inbound(subscriber, subscriptionId);
  const capAt = Date.now();
  relay.configure('down', { rateBps: CAP_BPS, queueMs: CAP_QUEUE_MS });
  const down = await waitWidth(subscriber, subscriptionId, { below: 1280 }, { since: capAt, timeoutMs: DOWN_LIMIT_MS + 5_000 });
  const downAt = down.ok ? capAt + down.ms : Date.now();
  // Observe the capped state until a second after the switch (a condition on time, polled).
  await pollUntil(() => Date.now(), (now) => now >= downAt + AFTER_SWITCH_MS, { timeoutMs: 5_000, intervalMs: 100 });
  // Two windows: from the cap (the congestion before the server reacts, which no switch can
  // prevent and is only reported) and from the server's downgrade decision (the switch
  // itself, which must not freeze).
  const onsetGap = await maxFrameGap(subscriber, subscriptionId, capAt, downAt + AFTER_SWITCH_MS);
  const decided = (await pageState(subscriber)).layerEvents.find(
    (e) => e.subscriptionId === subscriptionId && e.at >= capAt && e.target.spatial < 2,
  );
  const downGap = await maxFrameGap(subscriber, subscriptionId, decided?.at ?? capAt, downAt + AFTER_SWITCH_MS);
  const afterDown = await inbound(subscriber, subscriptionId);
  const repairs = repairsBehindHorizon(relay, capAt, downAt + AFTER_SWITCH_MS);
  // Stay capped until CAPPED_MS after the cap: past the server's 8 s congestion hold, so
  // it tries an upgrade into the capped path, which its probe must refuse: the layer holds
  // below f, without another freeze.
  let widest = 0;
  await pollUntil(
    () => inbound(subscriber, subscriptionId),
    (s) => {
      widest = Math.max(widest, s.frameWidth ?? 0);
      return Date.now() >= capAt + CAPPED_MS;
    },
    { timeoutMs: CAPPED_MS + 5_000, intervalMs: 200 },
  );
  const cappedLayerWidth = widest;
  const cappedGap = await maxFrameGap(subscriber, subscriptionId, downAt + AFTER_SWITCH_MS, Date.now());
  const cappedRate = relay.stats().down;
  const cappedPublisherKbps = await outboundRates(publisher);

  // Lift the cap.
  const beforeLift = await inbound(subscriber, subscriptionId);
  const liftAt = Date.now();
  relay.configure('down', { rateBps: Infinity });
  const up = await waitWidth(subscriber, subscriptionId, { equals: 1280 }, { since: liftAt, timeoutMs: UP_LIMIT_MS + 5_000 });
  const upAt = up.ok ? liftAt + up.ms : Date.now();
  await pollUntil(() => Date.now(), (now) => now >= upAt + AFTER_SWITCH_MS, { timeoutMs: 5_000, intervalMs: 100 });
  const upGap = await maxFrameGap(subscriber, subscriptionId, upAt - 2_000, upAt + AFTER_SWITCH_MS);
  const end = await inbound(subscriber, subscriptionId);
  const endPublisherKbps = await outboundRates(publisher);

  const state = await pageState(subscriber);
  const events = state.layerEvents.filter((e) => e.subscriptionId === subscriptionId);
  const firstDown = events.find((e) => e.at >= capAt && e.target.spatial < 2);
  const firstUp = events.find((e) => e.at >= liftAt && e.target.spatial === 2);
  report(`${label} downgrade`, {
    DOWNGRADE_MS: down.ms,
    DISPLAY_MS: down.displayMs,
    toWidth: down.stats?.frameWidth,
    reason: firstDown?.reason ?? null,
    layersChangedAfterMs: firstDown ? firstDown.at - capAt : null,
    MAX_FRAME_GAP_MS: downGap.maxGapMs,
    CONGESTION_ONSET_MAX_GAP_MS: onsetGap.maxGapMs,
    freezeCountDelta: afterDown.freezeCount - beforeCap.freezeCount,
    freezesDurationDelta: +(afterDown.totalFreezesDuration - beforeCap.totalFreezesDuration).toFixed(3),
    framesDecodedWhileCapped: beforeLift.framesDecoded - beforeCap.framesDecoded,
    cappedSeconds: ((liftAt - capAt) / 1000).toFixed(1),
    cap: kbps(CAP_BPS),
    widestWhileCapped: cappedLayerWidth,
    CAPPED_MAX_FRAME_GAP_MS: cappedGap.maxGapMs,
    cappedGapAfterCapMs: cappedGap.at === null ? null : cappedGap.at - capAt,
    probesWhileCapped: serverLines(/probing before an upgrade/, capAt, liftAt),
    congestionSignalsWhileCapped: serverLines(/downlink congested/, capAt, liftAt),
    rembFallsWhileCapped: serverLines(/REMB below what is sent/, capAt, liftAt),
    roundTripQueuesWhileCapped: serverLines(/queue in the round trip/, capAt, liftAt),
    probesFailedWhileCapped: serverLines(/probe failed/, capAt, liftAt),
    cappedDownlink: kbps(cappedRate.rateBps),
    publisherKbps: cappedPublisherKbps,
    queueDrops: cappedRate.droppedQueue,
    repairHorizon: repairs.horizon,
    repairsOfEarlierPackets: repairs.earlier,
    REPAIRS_BEHIND_HORIZON: repairs.late,
  });
  report(`${label} upgrade`, {
    UPGRADE_MS: up.ms,
    DISPLAY_MS: up.displayMs,
    reason: firstUp?.reason ?? null,
    layersChangedAfterMs: firstUp ? firstUp.at - liftAt : null,
    MAX_FRAME_GAP_MS: upGap.maxGapMs,
    freezeCountDelta: end.freezeCount - beforeLift.freezeCount,
    freezesDurationDelta: +(end.totalFreezesDuration - beforeLift.totalFreezesDuration).toFixed(3),
    downlink: kbps(relay.stats().down.rateBps),
    publisherKbps: endPublisherKbps,
  });
  report(`${label} layers chosen`, {
    events: events
      .map(
        (e) =>
          `${e.at - capAt}ms:${e.reason}:${e.current?.spatial ?? '-'}→${e.target.spatial}.${e.target.temporal}@${rateAt(rates, e.at)}`,
      )
      .join(','),
  });
  // The server's own estimate at each allocation decision, when its log has them.
  const decisions = server.log
    .map((line) => /(\d{4}-\d\d-\d\dT[\d:.]+Z).*bandwidth cap .*bits_per_second=(\d+) from=(\d+) to=(\d+)/.exec(line))
    .filter(Boolean)
    .map(([, time, bps, from, to]) => `${Date.parse(time) - capAt}ms:${kbps(Number(bps))}:${from}→${to}`);
  report(`${label} server estimate`, { decisions: decisions.join(',') || 'not in the log' });
  report(`${label} end`, {
    FREEZE_COUNT: end.freezeCount,
    TOTAL_FREEZES_DURATION_S: end.totalFreezesDuration,
    framesDecoded: end.framesDecoded,
    framesDropped: end.framesDropped,
    nackCount: end.nackCount,
    pliCount: end.pliCount,
    relay: JSON.stringify(relay.stats()),
    retransmissions: JSON.stringify(relay.retransmissions()),
  });

  return {
    state,
    events,
    capAt,
    liftAt,
    down,
    downGap,
    repairs,
    cappedLayerWidth,
    cappedGap,
    up,
    upGap,
    freezesAfterLiftS: end.totalFreezesDuration - beforeLift.totalFreezesDuration,
  };
}

/** What every client must do: down within 5 s, back up within 20 s, neither switch frozen. */
export function assertSwitches(run) {
  assert.deepEqual(run.state.errors, [], 'subscriber errors');
  assert.ok(run.down.ok && run.down.ms <= DOWN_LIMIT_MS, `downgrade: frameWidth < 1280 after ${run.down.ms ?? 'never'} ms`);
  assert.ok(run.up.ok && run.up.ms <= UP_LIMIT_MS, `upgrade: frameWidth 1280 after ${run.up.ms ?? 'never'} ms`);
  assert.ok(run.downGap.maxGapMs <= FREEZE_LIMIT_MS, `downgrade: ${run.downGap.maxGapMs} ms without a frame`);
  // The step-down restarts the decoder at the lower layer's keyframe: packets from before it
  // can no longer be shown, and repairing them would only queue in front of that keyframe.
  assert.notEqual(run.repairs.horizon, null, `the step-down set no repair horizon: ${JSON.stringify(run.repairs)}`);
  assert.notEqual(run.repairs.sentAt, null, `the relay never saw the repair horizon's packet: ${JSON.stringify(run.repairs)}`);
  assert.equal(run.repairs.late, 0, `packets from before the step-down's keyframe repaired after it: ${JSON.stringify(run.repairs)}`);
  assert.ok(run.upGap.maxGapMs <= FREEZE_LIMIT_MS, `upgrade: ${run.upGap.maxGapMs} ms without a frame`);
  assert.ok(run.freezesAfterLiftS <= FREEZE_LIMIT_MS / 1000, 'upgrade: Chrome counted more than 0.5 s of freezes');
}

