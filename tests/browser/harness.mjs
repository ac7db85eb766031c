// Shared helpers for the browser end-to-end tests: a `sluice` server on an ephemeral port and
// headless Chromium pages (launched as /work/shared/TESTING.md prescribes). Every wait is a
// condition polled against a deadline.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ARTIFACTS = join(REPO, 'tests/browser/artifacts');

export const CHROMIUM_PATH = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream=fps=30',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
];

const READY = /listening on (http:\/\/127\.0\.0\.1:\d+)/;

/**
 * Starts `sluice --listen 127.0.0.1:0 --public-ip 127.0.0.1 --rtmp 127.0.0.1:0` (demo mode: no secret, so
 * `/dev/token` works) and resolves once it prints its address. `stop()` ends it (by its PID)
 * and keeps its output in tests/browser/artifacts/<name>.server.log.
 * @returns {Promise<{url: string, log: string[], stop: () => Promise<void>, saveLog: () => string}>}
 */
/** User + system CPU time of a process, from /proc (Linux), in seconds. */
export function processCpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticksPerSecond = 100; // USER_HZ on Linux
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

export async function startServer(name, { timeoutMs = 20_000, env = {}, wrap = [] } = {}) {
  const bin = process.env.SLUICE_BIN ?? join(REPO, 'target/debug/sluice');
  if (!existsSync(bin)) {
    throw new Error(`sluice binary not found at ${bin}: run \`cargo build -p sluice-signaling --bin sluice\` or set SLUICE_BIN`);
  }
  // RTMP on an ephemeral port too: the default 1935 collides with any other server running.
  // `wrap` runs the server through a command that execs it (e.g. `ip netns exec NS`).
  const command = [...wrap, bin, '--listen', '127.0.0.1:0', '--public-ip', '127.0.0.1', '--rtmp', '127.0.0.1:0'];
  const child = spawn(command[0], command.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1', ...env },
  });
  const log = [];
  const exited = new Promise((resolveExit) => child.once('exit', (code, signal) => resolveExit({ code, signal })));
  let onLine = () => {};
  for (const [tag, stream] of [['out', child.stdout], ['err', child.stderr]]) {
    createInterface({ input: stream }).on('line', (line) => {
      log.push(`[${tag}] ${line}`);
      onLine(line);
    });
  }
  const saveLog = () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const path = join(ARTIFACTS, `${name}.server.log`);
    writeFileSync(path, `${log.join('\n')}\n`);
    return path;
  };
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    saveLog();
  };
  let timer;
  try {
    const url = await new Promise((resolveUrl, reject) => {
      timer = setTimeout(() => reject(new Error(`sluice did not report its address within ${timeoutMs} ms`)), timeoutMs);
      onLine = (line) => {
        const match = READY.exec(line);
        if (match) resolveUrl(match[1]);
      };
      child.once('error', reject);
      void exited.then(({ code, signal }) => reject(new Error(`sluice exited early (code ${code}, signal ${signal})`)));
    });
    onLine = () => {};
    // `kill`: the process dies at once (SIGKILL), as a crashed node would; `stop` still saves the log.
    const kill = () => child.kill('SIGKILL');
    return { url, log, stop, kill, saveLog, cpuSeconds: () => processCpuSeconds(child.pid) };
  } catch (err) {
    await stop();
    throw new Error(`${err.message}\n--- server output ---\n${log.join('\n')}`);
  } finally {
    clearTimeout(timer);
  }
}

/** `fps`: the fake camera's frame rate (30 unless a test needs its encoder to cost less). */
export function launchBrowser({ fps = 30, executablePath = CHROMIUM_PATH } = {}) {
  const args = CHROMIUM_ARGS.map((arg) => (arg.startsWith('--use-fake-device-for-media-stream') ? `--use-fake-device-for-media-stream=fps=${fps}` : arg));
  return chromium.launch({ executablePath, headless: true, args });
}

/**
 * Opens `url` in a fresh browser context (one per participant) and waits for the SDK to load.
 * Console output and page errors are collected in `page.logs`.
 */
export async function openPage(browser, url, label) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.logs = [];
  page.label = label;
  page.on('console', (msg) => page.logs.push(`[${label} ${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => page.logs.push(`[${label} pageerror] ${err.message}`));
  if (process.env.SLUICE_SDK_FROM_DISK === '1') {
    // Development aid: serve the demo page's script and the SDK module it imports from
    // signaling/assets/ on disk instead of the copies embedded in the server binary, to try SDK
    // changes without rebuilding the server.
    for (const [path, file] of [
      ['/assets/conference.js', 'conference.js'],
      ['/sdk/v0/sluice-client.js', 'sluice-client.js'],
    ]) {
      const body = readFileSync(join(REPO, 'signaling/assets', file), 'utf8');
      await page.route((u) => u.pathname === path, (route) =>
        route.fulfill({ status: 200, contentType: 'text/javascript; charset=utf-8', body }),
      );
    }
  }
  await page.goto(url);
  await page.waitForFunction(() => typeof window.Sluice?.Room === 'function', null, { timeout: 10_000 });
  return page;
}

/**
 * Injects page-probe.js (window.probe: drive the SDK, read stats, frame timing) into `page`.
 * With `relay` (a UdpRelay), the page can route its peer connections through it
 * (`probe.connect(room, identity, {relay: {frontPort, backPort}})`).
 */
export async function installProbe(page, { relay } = {}) {
  if (relay !== undefined) await page.exposeFunction('relayLearn', (info) => relay.learn(info));
  await page.addScriptTag({ path: join(REPO, 'tests/browser/page-probe.js') });
  await page.waitForFunction(() => window.probe !== undefined, null, { timeout: 5_000 });
}

/** Closes a page and its context. */
export async function closePage(page) {
  await page.context().close();
}

/**
 * Polls `probe` until `done(value)` holds, at most `timeoutMs`; returns the last value.
 * Throws with `what` and the last value when the deadline passes.
 */
export async function waitFor(what, probe, done = Boolean, { timeoutMs = 10_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let value;
  for (;;) {
    value = await probe();
    if (done(value)) return value;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(value)}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A room name no other test uses. */
export function uniqueRoom(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Runs `body`; on failure prints the server log tail and the pages' console, then rethrows. */
export async function withDiagnostics(name, server, pages, body) {
  try {
    return await body();
  } catch (err) {
    const path = server.saveLog();
    console.error(`--- ${name} failed; full server log: ${path}`);
    console.error(server.log.slice(-80).join('\n'));
    for (const page of pages()) console.error(page.logs.slice(-40).join('\n'));
    throw err;
  }
}
