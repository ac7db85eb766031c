// The bundled demo page: two participants open `/?room=…&autojoin=1` and each sees the other,
// and a line typed into one's chat panel shows in the other's; the page and the server's SDK
// module (/sdk/v0/sluice-client.js) it imports.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openPage, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer('demo');
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** What the page shows: remote tiles, whether one plays video, and the error box. */
function inspect(page) {
  return page.evaluate(() => {
    const errorBox = document.getElementById('error');
    const remote = [...document.querySelectorAll('.tile.remote')].map((tile) => {
      const video = tile.querySelector('video');
      return {
        caption: tile.querySelector('figcaption')?.textContent ?? '',
        videoWidth: video?.videoWidth ?? 0,
        playing: video !== null && !video.paused && video.readyState >= 2,
      };
    });
    return {
      remote,
      local: document.querySelectorAll('.tile.local').length,
      error: errorBox && !errorBox.hidden ? errorBox.textContent : '',
    };
  });
}

test('two demo pages see each other', { timeout: 90_000 }, async () => {
  await withDiagnostics('demo', server, () => pages, async () => {
    const room = uniqueRoom('demo');
    const names = ['ann', 'ben'];
    for (const name of names) {
      const query = new URLSearchParams({ room, name, autojoin: '1' });
      pages.push(await openPage(browser, `${server.url}/?${query}`, name));
    }
    const views = await Promise.all(
      pages.map((page) =>
        waitFor(
          `${page.label}: a remote tile playing video`,
          () => inspect(page),
          (view) => {
            if (view.error !== '') throw new Error(`${page.label} shows an error: ${view.error}`);
            return view.remote.some((t) => t.playing && t.videoWidth > 0);
          },
          { timeoutMs: 30_000, intervalMs: 250 },
        ),
      ),
    );
    views.forEach((view, i) => {
      const other = names[1 - i];
      console.log(`${names[i]} sees ${JSON.stringify(view.remote)}`);
      assert.equal(view.error, '');
      assert.equal(view.local, 1, `${names[i]} shows its own preview`);
      assert.equal(view.remote.length, 1, `${names[i]} shows exactly one remote tile`);
      assert.equal(view.remote[0].caption, other);
    });
    // The page runs the SDK the server serves as a module, not a copy bundled into the page.
    const shared = await pages[0].evaluate(
      async () => (await import('/sdk/v0/sluice-client.js')).Room === window.Sluice.Room,
    );
    assert.ok(shared, 'window.Sluice is the module at /sdk/v0/sluice-client.js');

    // Chat: typed and sent on ann's page, shown on ben's with ann's name, and on ann's as hers.
    const [ann, ben] = pages;
    await ann.fill('#chat-input', 'hello from ann');
    await ann.click('#chat button[type=submit]');
    const chat = await waitFor(
      'ben: the chat line',
      () => ben.evaluate(() => [...document.querySelectorAll('#chat .chat-log li')].map((li) => li.textContent)),
      (lines) => lines.length > 0,
    );
    assert.deepEqual(chat, ['ann: hello from ann']);
    const own = await ann.evaluate(() => window.sluiceDemo.chat);
    assert.deepEqual(own, [{ from: 'you', text: 'hello from ann' }]);
  });
});

test('the server serves the SDK as an ES module at /sdk/v0/sluice-client.js', async () => {
  const response = await fetch(`${server.url}/sdk/v0/sluice-client.js`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.equal(response.headers.get('cache-control'), 'no-cache');
  assert.equal(response.headers.get('access-control-allow-origin'), '*');
  const sdk = await response.text();
  assert.match(sdk, /^export \{[^}]*\bRoom,/m, 'the module exports Room');
  for (const page of ['conference.js', 'watch.js']) {
    const script = await (await fetch(`${server.url}/assets/${page}`)).text();
    assert.match(script, /^import .* from "\/sdk\/v0\/sluice-client\.js";$/m, `${page} imports the SDK module`);
    assert.doesNotMatch(script, /\bSignalClient = class\b/, `${page} does not bundle the SDK`);
  }
});
