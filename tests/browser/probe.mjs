// Node-side wrappers around window.probe (page-probe.js) for the simulcast, dynacast,
// bandwidth and loss tests: publisher/subscriber pages, stats and layer checks.
import { installProbe, openPage, waitFor } from './harness.mjs';

/** Expected frame width per spatial layer for the 1280x720 fake camera. */
export const LAYER_WIDTH = [320, 640, 1280];
export const RIDS = ['q', 'h', 'f'];

/** Closes the pages a test opened (and forgets them): the next test's publisher must not share
 * the 2 cores with this one's encoders, nor this one's connections log into its window. */
export async function closePages(pages) {
  for (const page of pages.splice(0)) await page.close().catch(() => {});
}

/** Opens a page, injects the probe and joins `room`. */
export async function joinPage(browser, server, room, label, { relay, pages, data, token } = {}) {
  const page = await openPage(browser, server.url, label);
  pages?.push(page);
  await installProbe(page, { relay });
  if (relay !== undefined) {
    // Media permission makes Chrome expose its real loopback candidate instead of an mDNS name.
    await page.evaluate(async () => {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      for (const track of stream.getTracks()) track.stop();
    });
  }
  await page.evaluate(
    ({ room, label, relay, data, token }) => window.probe.connect(room, label, relay === undefined ? { data, token } : { relay, data, token }),
    { room, label, relay: relay === undefined ? undefined : { frontPort: relay.frontPort, backPort: relay.backPort }, data, token },
  );
  return page;
}

/**
 * Test rig: the publishing Chrome's uplink estimate may not fall below `minKbps` (added to the
 * `x-google-start-bitrate` the server's answer carries). On this loopback it sometimes collapsed
 * (to 30–70 kbit/s) or crawled up from a cut at 8 %/s, and f then came 16–25 s late or never;
 * that is the publisher's uplink estimation (issue 3, docs/decisions.md §22), not what the
 * tests using this floor are about. Call before publishing.
 */
export async function floorPublisherUplink(page, minKbps) {
  await page.evaluate((minKbps) => {
    const apply = RTCPeerConnection.prototype.setRemoteDescription;
    RTCPeerConnection.prototype.setRemoteDescription = function (description) {
      if (description?.type === 'answer' && description.sdp) {
        const sdp = description.sdp.replace(/(x-google-start-bitrate=\d+)/g, `$1;x-google-min-bitrate=${minKbps}`);
        return apply.call(this, { type: 'answer', sdp });
      }
      return apply.call(this, description);
    };
  }, minKbps);
}

/** Publishes the fake camera's video (simulcast by default); returns the video publication. */
export async function publishCamera(page, options = {}) {
  const pubs = await page.evaluate((options) => window.probe.publishCamera(options), options);
  const video = pubs.find((p) => p.kind === 'video');
  if (video === undefined) throw new Error(`no video publication in ${JSON.stringify(pubs)}`);
  await page.evaluate(() => window.probe.sampleOutbound(250));
  return video;
}

/** Subscribes to a publication and waits until `minFrames` frames were decoded. */
export async function subscribeAndDecode(page, publicationId, { minFrames = 10, timeoutMs = 20_000 } = {}) {
  const subscriptionId = await page.evaluate((id) => window.probe.subscribeVideo(id), publicationId);
  await waitFor(
    `${page.label}: ${minFrames} frames decoded`,
    () => inbound(page, subscriptionId),
    (s) => (s?.framesDecoded ?? 0) >= minFrames,
    { timeoutMs, intervalMs: 100 },
  );
  return subscriptionId;
}

export function inbound(page, subscriptionId) {
  return page.evaluate((id) => window.probe.inbound(id), subscriptionId);
}

export function outbound(page) {
  return page.evaluate(() => window.probe.outbound());
}

export function setPreferredLayer(page, subscriptionId, spatial, temporal) {
  return page.evaluate(({ id, spatial, temporal }) => window.probe.setPreferredLayer(id, spatial, temporal), {
    id: subscriptionId,
    spatial,
    temporal,
  });
}

/** Polls frameWidth in the page (every 20 ms) until the condition holds; see probe.waitWidth. */
export function waitWidth(page, subscriptionId, condition, options) {
  return page.evaluate(({ id, condition, options }) => window.probe.waitWidth(id, condition, options), {
    id: subscriptionId,
    condition,
    options,
  });
}

export function maxFrameGap(page, subscriptionId, from, to) {
  return page.evaluate(({ id, from, to }) => window.probe.maxFrameGap(id, from, to), { id: subscriptionId, from, to });
}

export function pageState(page) {
  return page.evaluate(() => ({
    errors: window.probe.state.errors,
    layerEvents: window.probe.state.layerEvents,
    appliedEvents: window.probe.state.appliedEvents,
    relayCandidates: window.probe.state.relayCandidates,
  }));
}

/** The publisher's outbound samples since `since` (epoch ms). */
export function outboundSamples(page, since = 0) {
  return page.evaluate((since) => window.probe.state.outboundSamples.filter((s) => s.at >= since), since);
}

/**
 * Per rid over the samples: the largest frameWidth/height seen, framesEncoded, whether bytes
 * were sent in between, and the `active` flag last seen.
 */
export function summarizeOutbound(samples) {
  const out = {};
  for (const rid of RIDS) {
    const series = samples.map((s) => s.byRid[rid]).filter((v) => v !== undefined);
    if (series.length === 0) {
      out[rid] = null;
      continue;
    }
    const first = series[0];
    const last = series[series.length - 1];
    out[rid] = {
      maxWidth: Math.max(...series.map((v) => v.frameWidth ?? 0)),
      maxHeight: Math.max(...series.map((v) => v.frameHeight ?? 0)),
      framesEncoded: last.framesEncoded ?? 0,
      bytesSentDelta: (last.bytesSent ?? 0) - (first.bytesSent ?? 0),
      active: last.active,
      codec: last.codec,
      qualityLimitationReason: last.qualityLimitationReason,
      targetBitrate: last.targetBitrate,
    };
  }
  const bwe = samples.map((s) => s.byRid.bwe).filter((v) => typeof v === 'number');
  out.uplinkBwe = bwe.length ? { min: Math.min(...bwe), last: bwe[bwe.length - 1] } : null;
  return out;
}

/**
 * An encoding's state over the last `windowMs` of outbound samples:
 * - `sending`: the latest sample is active (when Chrome reports `active`) and bytesSent grew
 *   since the previous sample;
 * - `pausedThroughout`: every sample of the window is inactive (or, without `active`, no
 *   frame was encoded) and framesEncoded did not move;
 * - `sendingThroughout`: every sample is active and bytes grew over the window;
 * - `pausedSince`: the start (epoch ms) of the current run of inactive samples.
 */
export async function encodingState(page, rid, windowMs = 1_000) {
  const samples = (await outboundSamples(page, Date.now() - Math.max(windowMs, 10_000))).filter(
    (s) => s.byRid[rid] !== undefined,
  );
  const recent = samples.filter((s) => s.at >= Date.now() - windowMs);
  if (recent.length < 2) return { known: false };
  const series = recent.map((s) => s.byRid[rid]);
  const first = series[0];
  const last = series[series.length - 1];
  const previous = series[series.length - 2];
  const bytesDelta = (last.bytesSent ?? 0) - (first.bytesSent ?? 0);
  const framesDelta = (last.framesEncoded ?? 0) - (first.framesEncoded ?? 0);
  const inactive = (v) => v.active === false || (v.active === null && framesDelta === 0);
  let pausedSince = null;
  for (let i = samples.length - 1; i >= 0 && inactive(samples[i].byRid[rid]); i--) pausedSince = samples[i].at;
  return {
    known: true,
    active: last.active,
    bytesDelta,
    framesDelta,
    frameWidth: last.frameWidth,
    sending: last.active !== false && (last.bytesSent ?? 0) > (previous.bytesSent ?? 0),
    pausedThroughout: series.every(inactive) && framesDelta === 0,
    sendingThroughout: series.every((v) => v.active !== false) && bytesDelta > 0 && framesDelta > 0,
    pausedSince,
  };
}

/** The publisher's sending rate per rid over the last `windowMs` of samples, in kbit/s. */
export async function outboundRates(page, windowMs = 2_000) {
  const samples = await outboundSamples(page, Date.now() - windowMs);
  const out = {};
  if (samples.length < 2) return out;
  const first = samples[0];
  const last = samples[samples.length - 1];
  const seconds = (last.at - first.at) / 1000;
  for (const rid of RIDS) {
    const a = first.byRid[rid];
    const b = last.byRid[rid];
    if (a === undefined || b === undefined) continue;
    out[rid] = Math.round(((b.bytesSent - a.bytesSent) * 8) / seconds / 1000);
  }
  return out;
}

/** Prints one line of figures, `KEY=value` pairs, prefixed by a label. */
export function report(label, figures) {
  const parts = Object.entries(figures).map(([k, v]) => `${k}=${typeof v === 'object' && v !== null ? JSON.stringify(v) : v}`);
  console.log(`${label}: ${parts.join(' ')}`);
}

/**
 * Like harness.waitFor, but never throws: polls `probe` until `done(value)` or the deadline and
 * returns {ok, value, ms} (ms counted from `since`, default now), so a test can report every
 * figure before asserting.
 */
export async function pollUntil(probe, done, { timeoutMs = 5_000, intervalMs = 50, since = Date.now() } = {}) {
  const start = since;
  const deadline = start + timeoutMs;
  for (;;) {
    const value = await probe();
    if (done(value)) return { ok: true, value, ms: Date.now() - start };
    if (Date.now() >= deadline) return { ok: false, value, ms: null };
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
