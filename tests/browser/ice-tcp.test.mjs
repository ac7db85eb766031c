// ICE-TCP: a client whose network blocks UDP still gets media. The server and Chromium run in a
// network namespace of their own whose firewall (nftables) drops every UDP datagram, so the only
// path is the server's passive TCP candidate (RFC 6544) on its one media TCP port.
// The server runs two shards (media threads) and the media room is placed on the second, so a
// connection's frames cross from the shard holding the TCP listener to the one owning the peer.
// Needs root (ip netns, nft); scripts/test.sh installs nftables.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CHROMIUM_PATH, launchBrowser, openPage, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';

const NAME = 'ice-tcp';
const NAMESPACE = `sluice-tcp-${process.pid}`;
const FRAMES_WANTED = 30;

let server;
let browser;
let scratch;
const pages = [];

function inNamespace(...command) {
  return execFileSync('ip', ['netns', 'exec', NAMESPACE, ...command], { encoding: 'utf8' });
}

/** UDP datagrams the namespace's firewall dropped so far. */
function udpDropped() {
  const ruleset = inNamespace('nft', 'list', 'table', 'inet', 'sluice_no_udp');
  const match = /meta l4proto udp counter packets (\d+)/.exec(ruleset);
  return match ? Number(match[1]) : NaN;
}

before(async () => {
  execFileSync('ip', ['netns', 'add', NAMESPACE]);
  inNamespace('ip', 'link', 'set', 'lo', 'up');
  inNamespace('nft', 'add', 'table', 'inet', 'sluice_no_udp');
  inNamespace('nft', 'add', 'chain', 'inet', 'sluice_no_udp', 'out', '{ type filter hook output priority 0; }');
  inNamespace('nft', 'add', 'rule', 'inet', 'sluice_no_udp', 'out', 'meta', 'l4proto', 'udp', 'counter', 'drop');
  server = await startServer(NAME, {
    wrap: ['ip', 'netns', 'exec', NAMESPACE],
    env: { SLUICE_MEDIA_THREADS: '2', SLUICE_LOG: 'info,sluice_sfu::shard=debug' },
  });
  // Playwright starts the browser through this script, which execs Chromium in the namespace.
  scratch = mkdtempSync(join(tmpdir(), 'sluice-ice-tcp-'));
  const chromium = join(scratch, 'chromium');
  writeFileSync(chromium, `#!/bin/sh\nexec ip netns exec ${NAMESPACE} ${CHROMIUM_PATH} "$@"\n`);
  chmodSync(chromium, 0o755);
  browser = await launchBrowser({ executablePath: chromium });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  try {
    execFileSync('ip', ['netns', 'delete', NAMESPACE]);
  } catch {
    // Never created.
  }
});

/** A page's GET of `path` on the server (which is reachable only inside the namespace). */
function fetchInNamespace(page, path) {
  return page.evaluate(async (path) => (await fetch(path)).text(), path);
}

/** In the page: a demo token, a connected Room on `window.tcp`. */
async function connect(page, room, identity) {
  await page.evaluate(
    async ({ room, identity }) => {
      const response = await fetch(`/dev/token?${new URLSearchParams({ room, identity })}`);
      if (!response.ok) throw new Error(`/dev/token: ${response.status}`);
      const { token } = await response.json();
      const sfu = new window.Sluice.Room();
      window.tcp = { room: sfu, errors: [] };
      sfu.on('error', (err) => window.tcp.errors.push(String(err)));
      await sfu.connect(`ws://${location.host}/ws`, token);
    },
    { room, identity },
  );
}

/** The selected candidate pair of one of the page's connections: protocols and ports. */
function selectedPair(page, role) {
  return page.evaluate(async (role) => {
    const pc = window.tcp.room.peerConnection(role);
    const report = await pc.getStats();
    let pair;
    report.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
    if (!pair) return null;
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    return {
      localProtocol: local?.protocol,
      remoteProtocol: remote?.protocol,
      remotePort: remote?.port,
      remoteTcpType: remote?.tcpType,
      iceLite: /^a=ice-lite/m.test(pc.remoteDescription?.sdp ?? ''),
    };
  }, role);
}

test('with UDP blocked, media flows over the ICE-TCP candidate', { timeout: 120_000 }, async () => {
  await withDiagnostics(NAME, server, () => pages, async () => {
    const room = uniqueRoom('tcp');
    // A first room takes the first shard, which holds the ICE-TCP listener.
    const placeholder = await openPage(browser, server.url, 'placeholder');
    pages.push(placeholder);
    await connect(placeholder, `${room}-first`, 'placeholder');
    const publisher = await openPage(browser, server.url, 'publisher');
    pages.push(publisher);
    await connect(publisher, room, 'publisher');
    const publications = await publisher.evaluate(async () => {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      const pubs = await window.tcp.room.publish(stream);
      return pubs.map((p) => ({ publicationId: p.publicationId, kind: p.kind }));
    });

    const viewer = await openPage(browser, server.url, 'viewer');
    pages.push(viewer);
    await connect(viewer, room, 'viewer');
    await viewer.evaluate(async (publications) => {
      window.tcp.subs = [];
      for (const publication of publications) {
        const element = document.createElement(publication.kind === 'video' ? 'video' : 'audio');
        element.autoplay = true;
        element.muted = false;
        document.body.append(element);
        const sub = await window.tcp.room.subscribe(publication.publicationId);
        window.tcp.subs.push({ kind: publication.kind, sub });
        sub.waitForTrack().then(({ stream }) => {
          element.srcObject = stream;
          element.play().catch((err) => window.tcp.errors.push(`play: ${err}`));
        });
      }
    }, publications);

    const inbound = () =>
      viewer.evaluate(async () => {
        const out = { framesDecoded: 0, audioEnergy: 0, frameWidth: 0 };
        for (const { kind, sub } of window.tcp.subs) {
          const report = await sub.getStats();
          report?.forEach((s) => {
            if (s.type !== 'inbound-rtp') return;
            if (kind === 'video') {
              out.framesDecoded = s.framesDecoded ?? 0;
              out.frameWidth = s.frameWidth ?? 0;
            } else {
              out.audioEnergy = s.totalAudioEnergy ?? 0;
            }
          });
        }
        return out;
      });
    const media = await waitFor(
      `viewer: ${FRAMES_WANTED} frames decoded and audio heard over TCP`,
      inbound,
      (s) => s.framesDecoded >= FRAMES_WANTED && s.audioEnergy > 0,
      { timeoutMs: 40_000, intervalMs: 250 },
    );

    const pairs = {
      publisher: await selectedPair(publisher, 'publisher'),
      viewer: await selectedPair(viewer, 'subscriber'),
    };
    const dropped = udpDropped();
    console.log(`ICE_TCP media=${JSON.stringify(media)} pairs=${JSON.stringify(pairs)} UDP_DROPPED=${dropped}`);
    for (const [who, pair] of Object.entries(pairs)) {
      assert.ok(pair, `${who}: no selected candidate pair`);
      assert.equal(pair.localProtocol, 'tcp', `${who}: the selected pair is not TCP`);
      assert.equal(pair.remoteProtocol, 'tcp', `${who}: the server's candidate is not TCP`);
      assert.equal(pair.remoteTcpType, 'passive', `${who}: the server's TCP candidate is not passive`);
      assert.ok(pair.iceLite, `${who}: the server's description is not ICE-lite`);
    }
    assert.equal(pairs.publisher.remotePort, pairs.viewer.remotePort, 'both connections use the one TCP port');
    // Proof that the UDP path was tried and refused by the firewall, not merely unused.
    assert.ok(dropped > 0, `the firewall dropped no UDP (${dropped}): the test would prove nothing`);
    // The media room is on the second shard: its TCP frames were handed over by the first.
    const stats = await fetchInNamespace(viewer, '/metrics');
    const handedOff = Number(/^sluice_shard_handed_off_total (\d+)/m.exec(stats)?.[1] ?? NaN);
    console.log(`SHARD_HANDED_OFF=${handedOff}`);
    assert.ok(handedOff > 0, `no datagram crossed between the shards (${handedOff})`);
  });
});
