// Data messages between Chromium pages (`room.publishData` / `dataReceived`, SCTP data channels
// on each page's publisher connection): three pages in one room and one in another. A burst of
// reliable messages reaches the two others in order with its sender and topic; a message named
// to one identity reaches only it; lossy messages arrive on the lossy channel; the other room
// hears nothing. Against a server started with small limits, an oversized message and a burst
// over the rate reach nobody and the sender gets `dataRejected`; a message over the SDK's own
// limit is refused before sending (`DataError`).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';
import { joinPage, report } from './probe.mjs';

let server;
let browser;
const pages = [];

const MAX_BYTES = 2048;
const PER_SECOND = 50;

before(async () => {
  server = await startServer('data', {
    env: { SLUICE_MAX_DATA_MESSAGE_BYTES: String(MAX_BYTES), SLUICE_DATA_MESSAGES_PER_SECOND: String(PER_SECOND) },
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Joins, waits until the data channels are open, records every `dataReceived` and `dataRejected`. */
async function dataPage(room, label) {
  const page = await joinPage(browser, server, room, label, { pages, data: true });
  await page.evaluate(async () => {
    await window.probe.state.room.openData();
    window.dataIn = [];
    window.rejections = [];
    const room = window.probe.state.room;
    room.on('dataReceived', (e) =>
      window.dataIn.push({
        data: typeof e.data === 'string' ? e.data : Array.from(e.data),
        identity: e.identity,
        participantId: e.participantId,
        known: e.participant?.identity ?? null,
        topic: e.topic ?? null,
        reliable: e.reliable,
        at: performance.now(),
      }),
    );
    room.on('dataRejected', (e) => window.rejections.push(e));
  });
  return page;
}

const received = (page) => page.evaluate(() => window.dataIn);

test('data messages reach the room in order, the named identity only, and no other room', { timeout: 90_000 }, async () => {
  await withDiagnostics('data', server, () => pages, async () => {
    const room = uniqueRoom('data');
    const alice = await dataPage(room, 'alice');
    const bob = await dataPage(room, 'bob');
    const carol = await dataPage(room, 'carol');
    const dave = await dataPage(uniqueRoom('data-other'), 'dave');
    const aliceId = await alice.evaluate(() => window.probe.state.room.localParticipant.participantId);

    const COUNT = 40;
    const sentAt = await alice.evaluate(async (count) => {
      const room = window.probe.state.room;
      const started = performance.now();
      for (let i = 0; i < count; i++) await room.publishData(`msg-${i}`, { topic: 'chat' });
      await room.publishData('psst', { destinationIdentities: ['carol'] });
      await room.publishData(new Uint8Array([1, 2, 3]), { topic: 'bytes' });
      return started;
    }, COUNT);
    for (const [page, name, extra] of [[bob, 'bob', 0], [carol, 'carol', 1]]) {
      const messages = await waitFor(`${name}: ${COUNT + 1 + extra} messages`, () => received(page), (m) => m.length >= COUNT + 1 + extra);
      const chat = messages.filter((m) => m.topic === 'chat');
      assert.deepEqual(chat.map((m) => m.data), Array.from({ length: COUNT }, (_, i) => `msg-${i}`), `${name}: in order`);
      for (const m of messages) {
        assert.equal(m.identity, 'alice');
        assert.equal(m.participantId, aliceId);
        assert.equal(m.known, 'alice', 'the sender is a known participant');
        assert.equal(m.reliable, true);
      }
      assert.deepEqual(messages.at(-1), { ...messages.at(-1), data: [1, 2, 3], topic: 'bytes' }, `${name}: bytes arrive as bytes`);
      const privates = messages.filter((m) => m.data === 'psst');
      assert.equal(privates.length, extra, `${name}: the message named to carol`);
      if (name === 'bob') report('data', { messages: messages.length, lastMs: Math.round(messages.at(-1).at - sentAt) });
    }

    await alice.evaluate(async () => {
      for (let i = 0; i < 5; i++) await window.probe.state.room.publishData(`cursor-${i}`, { reliable: false, topic: 'cursor' });
    });
    const lossy = await waitFor('bob: lossy messages', () => received(bob), (m) => m.filter((x) => x.topic === 'cursor').length >= 5);
    assert.ok(lossy.filter((m) => m.topic === 'cursor').every((m) => m.reliable === false), 'on the lossy channel');

    // Everything reached bob and carol within milliseconds; the other room had as long and more.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.deepEqual(await received(dave), [], 'nothing crosses rooms');
    assert.deepEqual(await alice.evaluate(() => window.rejections), [], 'nothing was refused');
    assert.deepEqual(await alice.evaluate(() => window.probe.state.errors), []);
  });
});

test('oversized and over-rate messages reach nobody and the sender hears why', { timeout: 90_000 }, async () => {
  await withDiagnostics('data-limits', server, () => pages, async () => {
    const room = uniqueRoom('data-limits');
    const alice = await dataPage(room, 'alice');
    const bob = await dataPage(room, 'bob');

    // Over the SDK's own limit: refused before sending.
    const local = await alice.evaluate(async () => {
      try {
        await window.probe.state.room.publishData(new Uint8Array(20_000));
        return 'sent';
      } catch (err) {
        return err.name;
      }
    });
    assert.equal(local, 'DataError');

    // Over the server's: sent, refused there.
    await alice.evaluate((size) => window.probe.state.room.publishData(new Uint8Array(size)), MAX_BYTES + 100);
    const tooLarge = await waitFor('alice: dataRejected tooLarge', () => alice.evaluate(() => window.rejections), (r) => r.length >= 1);
    assert.deepEqual(tooLarge[0], { reason: 'tooLarge', dropped: 1 });

    // A burst of three seconds' worth at once: one second's worth gets through.
    const BURST = PER_SECOND * 3;
    await alice.evaluate(async (burst) => {
      for (let i = 0; i < burst; i++) await window.probe.state.room.publishData(`b-${i}`, { topic: 'burst' });
    }, BURST);
    const rejections = await waitFor(
      'alice: dataRejected rateLimited',
      () => alice.evaluate(() => window.rejections),
      (r) => r.some((x) => x.reason === 'rateLimited') && r.slice(1).reduce((n, x) => n + x.dropped, 0) + PER_SECOND + 5 >= BURST,
      { timeoutMs: 10_000 },
    );
    const refused = rejections.slice(1).reduce((n, x) => n + x.dropped, 0);
    const burst = await waitFor('bob: the burst', () => received(bob), (m) => m.filter((x) => x.topic === 'burst').length >= BURST - refused);
    const got = burst.filter((m) => m.topic === 'burst');
    report('data-limits', { burst: BURST, delivered: got.length, refused });
    assert.equal(got.length + refused, BURST, 'each message was delivered or refused');
    assert.ok(got.length >= PER_SECOND && got.length < BURST, `about one second's worth delivered: ${got.length}`);
    assert.ok(!burst.some((m) => Array.isArray(m.data) && m.data.length > MAX_BYTES), 'the oversized message reached nobody');
  });
});
