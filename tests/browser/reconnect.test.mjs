// Reconnection and session resume with real Chromium peers through a real `sluice`: the server
// closes a participant's WebSocket (the subscriber's, then the publisher's) through its
// loopback-only test hook (`SLUICE_TEST_HOOKS=1`), as a network drop would. Asserts what a user
// would notice: the SDK says `reconnecting` then `reconnected`, the session is the same
// (participant, publication ids), and decoded frames keep increasing within 5 s of the drop.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';
import { joinPage, publishCamera, subscribeAndDecode } from './probe.mjs';

const RECOVERY_LIMIT_MS = 5_000;
/** Frames that must be decoded after `reconnected` to call the media resumed (~0.5 s at 30 fps). */
const RESUMED_FRAMES = 15;

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer('reconnect', { env: { SLUICE_TEST_HOOKS: '1', ...(process.env.SLUICE_LOG ? {} : {}) } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** In the page: records the room's connection events and samples framesDecoded every 50 ms. */
function instrument(page, subscriptionId) {
  return page.evaluate((subscriptionId) => {
    const state = window.probe.state;
    const room = state.room;
    state.connectionEvents = [];
    for (const name of ['reconnecting', 'reconnected', 'disconnected', 'participantLeft', 'publicationRemoved']) {
      room.on(name, (e) =>
        state.connectionEvents.push({ name, at: Date.now(), resumed: e?.resumed, id: e?.publicationId ?? e?.participantId }),
      );
    }
    state.frames = [];
    if (subscriptionId !== null) {
      const sample = async () => {
        const stats = await window.probe.inbound(subscriptionId).catch(() => null);
        if (stats !== null) state.frames.push({ at: Date.now(), decoded: stats.framesDecoded ?? 0 });
        if (state.frames.length < 20 * 120) setTimeout(sample, 50);
      };
      void sample();
    }
  }, subscriptionId);
}

function connectionEvents(page) {
  return page.evaluate(() => window.probe.state.connectionEvents);
}

/** The server closes `participantId`'s socket (test hook). */
async function dropSocket(participantId) {
  const requestedAt = Date.now();
  const response = await fetch(`${server.url}/debug/drop-socket?participant=${participantId}`, { method: 'POST' });
  assert.equal(response.status, 204, `drop-socket ${participantId}: ${response.status} ${await response.text()}`);
  // The server closes the socket before it answers: the drop happened after the request left.
  return requestedAt;
}

/**
 * Waits for reconnecting then reconnected (resumed) on `page`, then for RESUMED_FRAMES more
 * decoded frames on the subscriber; returns the measured times from the drop.
 */
async function expectRecovery(label, page, subscriber, droppedAt) {
  const events = await waitFor(
    `${label}: reconnected`,
    () => connectionEvents(page),
    (evs) => evs.some((e) => e.name === 'reconnected' || e.name === 'disconnected'),
    { timeoutMs: RECOVERY_LIMIT_MS + 5_000, intervalMs: 50 },
  );
  const names = events.map((e) => e.name);
  assert.deepEqual(names, ['reconnecting', 'reconnected'], `${label}: connection events`);
  const reconnected = events[1];
  assert.equal(reconnected.resumed, true, `${label}: the session was resumed, not rejoined`);
  const reconnectMs = reconnected.at - droppedAt;

  const frames = await waitFor(
    `${label}: ${RESUMED_FRAMES} frames decoded after reconnected`,
    () => subscriber.evaluate(() => window.probe.state.frames),
    (fs) => {
      const base = fs.filter((f) => f.at <= reconnected.at).at(-1)?.decoded ?? 0;
      return fs.some((f) => f.at > reconnected.at && f.decoded >= base + RESUMED_FRAMES);
    },
    { timeoutMs: RECOVERY_LIMIT_MS + 5_000, intervalMs: 50 },
  );
  const base = frames.filter((f) => f.at <= reconnected.at).at(-1)?.decoded ?? 0;
  const resumedAt = frames.find((f) => f.at > reconnected.at && f.decoded >= base + RESUMED_FRAMES).at;
  const mediaResumeMs = resumedAt - droppedAt;
  // The longest time without a new decoded frame from 1 s before the drop to the resume.
  let stallMs = 0;
  let lastChange;
  let lastDecoded;
  for (const f of frames.filter((f) => f.at >= droppedAt - 1_000 && f.at <= resumedAt)) {
    if (lastDecoded === undefined || f.decoded > lastDecoded) {
      if (lastChange !== undefined) stallMs = Math.max(stallMs, f.at - lastChange);
      lastChange = f.at;
      lastDecoded = f.decoded;
    }
  }
  console.log(`${label}: RECONNECT_MS=${reconnectMs} MEDIA_RESUME_MS=${mediaResumeMs} LONGEST_FRAME_STALL_MS=${stallMs}`);
  assert.ok(reconnectMs <= RECOVERY_LIMIT_MS, `${label}: reconnected ${reconnectMs} ms after the drop`);
  assert.ok(mediaResumeMs <= RECOVERY_LIMIT_MS, `${label}: frames resumed ${mediaResumeMs} ms after the drop`);
  return { reconnectMs, mediaResumeMs, stallMs };
}

test('the server drops the subscriber\'s, then the publisher\'s socket: both resume and frames keep coming', { timeout: 120_000 }, async () => {
  await withDiagnostics('reconnect', server, () => pages, async () => {
    const room = uniqueRoom('reconnect');
    const publisher = await joinPage(browser, server, room, 'publisher', { pages });
    const subscriber = await joinPage(browser, server, room, 'subscriber', { pages });
    const video = await publishCamera(publisher, { simulcast: false });
    const subscriptionId = await subscribeAndDecode(subscriber, video.publicationId, { minFrames: 30 });
    await instrument(publisher, null);
    await instrument(subscriber, subscriptionId);

    const ids = (page) =>
      page.evaluate(() => {
        const room = window.probe.state.room;
        return {
          participant: room.localParticipant.participantId,
          local: [...room.localPublications.keys()].sort(),
          remote: [...room.publications.keys()].sort(),
          subscriptions: [...room.subscriptions.keys()].sort(),
        };
      });
    const publisherBefore = await ids(publisher);
    const subscriberBefore = await ids(subscriber);
    assert.deepEqual(subscriberBefore.remote, publisherBefore.local);

    // 1. The subscriber's socket.
    const subscriberDrop = await dropSocket(subscriberBefore.participant);
    await expectRecovery('subscriber', subscriber, subscriber, subscriberDrop);
    assert.deepEqual(await ids(subscriber), subscriberBefore, 'subscriber: same participant, publications, subscriptions');
    assert.deepEqual(await connectionEvents(publisher), [], 'the publisher saw nothing');

    // 2. The publisher's socket.
    const publisherDrop = await dropSocket(publisherBefore.participant);
    await expectRecovery('publisher', publisher, subscriber, publisherDrop);
    assert.deepEqual(await ids(publisher), publisherBefore, 'publisher: same participant and publications');
    // The subscriber saw no participantLeft / publicationRemoved during the publisher's outage.
    const subscriberEvents = (await connectionEvents(subscriber)).map((e) => e.name);
    assert.deepEqual(subscriberEvents, ['reconnecting', 'reconnected'], 'subscriber: no departure seen');

    const errors = await Promise.all([publisher, subscriber].map((p) => p.evaluate(() => window.probe.state.errors)));
    assert.deepEqual(errors, [[], []], 'no SDK errors');
  });
});

/** framesDecoded of the page's current subscription to `publicationId` (whatever its id). */
function decodedNow(page, publicationId) {
  return page.evaluate(async (publicationId) => {
    const sub = [...window.probe.state.room.subscriptions.values()].find((s) => s.publicationId === publicationId);
    if (sub === undefined) return { subscriptionId: null, decoded: 0 };
    let decoded = 0;
    (await sub.getStats())?.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') decoded = s.framesDecoded ?? 0;
    });
    return { subscriptionId: sub.subscriptionId, decoded };
  }, publicationId);
}

/** Renders every track the room subscribes from now on (a rejoin's new subscriptions too). */
function renderNewTracks(page) {
  return page.evaluate(() => {
    window.probe.state.room.on('trackSubscribed', ({ stream }) => {
      const element = document.createElement('video');
      element.autoplay = true;
      element.muted = true;
      element.playsInline = true;
      element.srcObject = stream;
      document.body.append(element);
      element.play().catch(() => undefined);
    });
  });
}

test('when the server refuses the resume, the SDK rejoins, republishes and resubscribes', { timeout: 120_000 }, async () => {
  // Resume off: a dropped participant is removed at once, so every resume is refused.
  const strict = await startServer('reconnect-rejoin', { env: { SLUICE_TEST_HOOKS: '1', SLUICE_RESUME_GRACE_MS: '0' } });
  const strictPages = [];
  try {
    await withDiagnostics('reconnect-rejoin', strict, () => strictPages, async () => {
      const room = uniqueRoom('rejoin');
      const publisher = await joinPage(browser, strict, room, 'publisher', { pages: strictPages });
      const subscriber = await joinPage(browser, strict, room, 'subscriber', { pages: strictPages });
      const video = await publishCamera(publisher, { simulcast: false });
      await subscribeAndDecode(subscriber, video.publicationId, { minFrames: 30 });
      await instrument(publisher, null);
      await instrument(subscriber, null);
      await renderNewTracks(subscriber);
      const participantOf = (page) => page.evaluate(() => window.probe.state.room.localParticipant.participantId);

      // 1. The subscriber: a new participant, subscribed again to the same publication.
      const before = await decodedNow(subscriber, video.publicationId);
      const oldSubscriber = await participantOf(subscriber);
      const requestedAt = Date.now();
      const response = await fetch(`${strict.url}/debug/drop-socket?participant=${oldSubscriber}`, { method: 'POST' });
      assert.equal(response.status, 204);
      const events = await waitFor(
        'subscriber: reconnected',
        () => connectionEvents(subscriber),
        (evs) => evs.some((e) => e.name === 'reconnected' || e.name === 'disconnected'),
        { timeoutMs: RECOVERY_LIMIT_MS + 5_000, intervalMs: 50 },
      );
      assert.deepEqual(events.map((e) => e.name).slice(0, 1), ['reconnecting']);
      const reconnected = events.find((e) => e.name === 'reconnected');
      assert.ok(reconnected !== undefined, `subscriber events: ${JSON.stringify(events)}`);
      assert.equal(reconnected.resumed, false, 'the resume was refused: a rejoin');
      assert.notEqual(await participantOf(subscriber), oldSubscriber, 'a new participant');
      const after = await waitFor(
        'subscriber: frames on the renewed subscription',
        () => decodedNow(subscriber, video.publicationId),
        (s) => s.subscriptionId !== null && s.subscriptionId !== before.subscriptionId && s.decoded >= RESUMED_FRAMES,
        { timeoutMs: RECOVERY_LIMIT_MS + 5_000, intervalMs: 50 },
      );
      const mediaMs = Date.now() - requestedAt;
      console.log(`rejoin subscriber: RECONNECT_MS=${reconnected.at - requestedAt} MEDIA_RESUME_MS<=${mediaMs} (${after.decoded} frames on ${after.subscriptionId})`);
      assert.ok(mediaMs <= RECOVERY_LIMIT_MS + 1_000, `frames after ${mediaMs} ms`);

      // 2. The publisher: its track is published again under a new id, which the subscriber
      // sees as a new publication.
      const oldPublisher = await participantOf(publisher);
      const publisherDrop = Date.now();
      await fetch(`${strict.url}/debug/drop-socket?participant=${oldPublisher}`, { method: 'POST' });
      const publisherEvents = await waitFor(
        'publisher: reconnected',
        () => connectionEvents(publisher),
        (evs) => evs.some((e) => e.name === 'reconnected' || e.name === 'disconnected'),
        { timeoutMs: RECOVERY_LIMIT_MS + 5_000, intervalMs: 50 },
      );
      const republished = publisherEvents.find((e) => e.name === 'reconnected');
      assert.equal(republished?.resumed, false);
      const local = await publisher.evaluate(() => [...window.probe.state.room.localPublications.values()].map((p) => ({ id: p.publicationId, kind: p.kind })));
      assert.equal(local.length, 1, 'the camera is published again');
      assert.notEqual(local[0].id, video.publicationId);
      const seen = await waitFor(
        'subscriber: the new publication',
        () => subscriber.evaluate(() => [...window.probe.state.room.publications.keys()]),
        (ids) => ids.includes(local[0].id) && !ids.includes(video.publicationId),
        { timeoutMs: 5_000, intervalMs: 50 },
      );
      await subscriber.evaluate((id) => window.probe.state.room.subscribe(id), local[0].id);
      const frames = await waitFor(
        'subscriber: frames of the republished camera',
        () => decodedNow(subscriber, local[0].id),
        (s) => s.decoded >= RESUMED_FRAMES,
        { timeoutMs: RECOVERY_LIMIT_MS + 5_000, intervalMs: 50 },
      );
      const errors = await Promise.all([publisher, subscriber].map((p) => p.evaluate(() => window.probe.state.errors)));
      assert.deepEqual(errors, [[], []], 'no SDK errors');
      console.log(`rejoin publisher: RECONNECT_MS=${republished.at - publisherDrop} REPUBLISHED_FRAMES_AFTER_MS=${Date.now() - publisherDrop} (${frames.decoded} frames; publications ${seen.join(',')})`);
    });
  } finally {
    for (const page of strictPages) await page.context().close().catch(() => undefined);
    await strict.stop();
  }
});
