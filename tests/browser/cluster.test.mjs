// Failover between cluster nodes: two `sluice` nodes share a `redis-server` of the test's own
// and a secret. A Chromium publisher and a viewer, both with @sluice/client, join a room on
// node A; the viewer decodes the publisher's camera. Node A is killed (SIGKILL, as a crash).
// Both SDKs reconnect to node B, which the server named in `joined.fallbackUrls`: they join
// anew there, the publisher republishes, and the viewer decodes the new publication within 5 s
// of the kill (the goal).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { after, before, test } from 'node:test';
import { REPO, closePage, launchBrowser, openPage, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';
import { inbound, joinPage, report, subscribeAndDecode } from './probe.mjs';
import { join } from 'node:path';

const SECRET = `cluster-browser-test-${Math.random().toString(36).slice(2)}-secret`;
/** From the kill of node A to the viewer decoding the publisher again through node B. */
const FAILOVER_GOAL_MS = 5_000;
const BIN = process.env.SLUICE_BIN ?? join(REPO, 'target/debug/sluice');

let redis;
let nodeA;
let nodeB;
let browser;
const pages = [];

/** A TCP port that was free a moment ago. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function token(args) {
  return execFileSync(BIN, ['token', '--secret', SECRET, ...args], { encoding: 'utf8' }).trim();
}

async function nodeIds(node) {
  const response = await fetch(`${node.url}/api/nodes`, { headers: { Authorization: `Bearer ${token(['--admin'])}` } });
  if (!response.ok) return [];
  return (await response.json()).nodes.map((n) => n.id).sort();
}

/** In a page: joins over a plain WebSocket, reads `joined.fallbackUrls`, leaves. */
function fallbackUrlsOfAJoin({ url, token }) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onopen = () => ws.send(JSON.stringify({ type: 'join', requestId: 1, token }));
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.requestId !== 1) return;
      ws.send(JSON.stringify({ type: 'leave', requestId: 2 }));
      ws.close();
      resolve(message.fallbackUrls ?? []);
    };
    ws.onerror = () => reject(new Error(`websocket to ${url} failed`));
  });
}

before(async () => {
  const port = await freePort();
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const env = (id) => ({ SLUICE_SECRET: SECRET, SLUICE_REDIS: `redis://127.0.0.1:${port}`, SLUICE_NODE_ID: id });
  nodeA = await startServer('cluster-a', { env: env('node-a') });
  nodeB = await startServer('cluster-b', { env: env('node-b') });
  browser = await launchBrowser({ fps: 20 });
});

after(async () => {
  for (const page of pages) await closePage(page).catch(() => {});
  await browser?.close();
  await nodeA?.stop();
  await nodeB?.stop();
  redis?.kill('SIGKILL');
});

test('a node dies: its SDK clients reconnect to another node and play again within 5 s', { timeout: 120_000 }, async () => {
  const room = uniqueRoom('cluster');
  await withDiagnostics('cluster', nodeA, () => pages, async () => {
    await waitFor('both nodes registered', () => nodeIds(nodeA), (ids) => ids.join() === 'node-a,node-b', { timeoutMs: 15_000, intervalMs: 200 });
    // A lists the other nodes from its heartbeat (every second): a join on A names B once it has.
    const prober = await openPage(browser, nodeA.url, 'fallback-probe');
    const nodeBws = `${nodeB.url.replace(/^http/, 'ws')}/ws`;
    await waitFor(
      'a join on A names B as its fallback',
      () => prober.evaluate(fallbackUrlsOfAJoin, { url: `${nodeA.url.replace(/^http/, 'ws')}/ws`, token: token(['--room', room, '--identity', 'probe']) }),
      (urls) => urls.includes(nodeBws),
      { timeoutMs: 10_000, intervalMs: 200 },
    );
    await closePage(prober);

    const publisher = await joinPage(browser, nodeA, room, 'pub', { pages, token: token(['--room', room, '--identity', 'pub']) });
    const viewer = await joinPage(browser, nodeA, room, 'viewer', { pages, token: token(['--room', room, '--identity', 'viewer']) });
    const [video] = await publisher.evaluate(() => window.probe.publishCamera({ simulcast: false }));
    await subscribeAndDecode(viewer, video.publicationId, { minFrames: 20 });

    const reconnected = (page) =>
      page.evaluate(
        () =>
          new Promise((resolve) => {
            window.probe.state.room.once('reconnected', (e) => resolve({ resumed: e.resumed, attempts: e.attempts, url: e.url, durationMs: e.durationMs }));
          }),
      );
    const viewerBack = reconnected(viewer);
    const publisherBack = reconnected(publisher);
    const killedAt = Date.now();
    nodeA.kill();

    // Each SDK finds A gone, goes to B and joins anew; its view of the room starts afresh there
    // (ids are each node's own), and the publisher's camera is published again.
    const viewerEvent = await viewerBack;
    const republished = await waitFor(
      'the viewer sees the publisher\'s camera again, on node B',
      () =>
        viewer.evaluate(
          () => [...window.probe.state.room.publications.values()].filter((p) => p.kind === 'video').map((p) => p.publicationId)[0] ?? null,
        ),
      (id) => id !== null,
      { timeoutMs: 15_000, intervalMs: 50 },
    );
    const subscription = await subscribeAndDecode(viewer, republished, { minFrames: 1, timeoutMs: 15_000 });
    const playingAfterMs = Date.now() - killedAt;
    const publisherEvent = await publisherBack;
    report('failover', { playingAfterMs, viewer: viewerEvent, publisher: publisherEvent });
    for (const event of [viewerEvent, publisherEvent]) {
      assert.equal(event.resumed, false, 'joined anew on the other node');
      assert.equal(event.url, nodeBws, 'reconnected to node B');
    }
    assert.ok(playingAfterMs < FAILOVER_GOAL_MS, `the viewer played again ${playingAfterMs} ms after node A died (goal < ${FAILOVER_GOAL_MS} ms)`);
    // And it keeps playing on B.
    await waitFor('the viewer keeps decoding on node B', () => inbound(viewer, subscription), (st) => (st?.framesDecoded ?? 0) >= 20, {
      timeoutMs: 15_000,
      intervalMs: 100,
    });
  });
});
