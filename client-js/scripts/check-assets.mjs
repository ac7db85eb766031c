// Fails when signaling/assets/ differs from a fresh demo build: the server embeds those files,
// so a stale bundle would ship old code. Fix with `npm run build:demo`.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ASSETS_DIR, DEMO_FILES, buildDemo } from './build.mjs';

const dir = await mkdtemp(join(tmpdir(), 'sluice-assets-'));
try {
  await buildDemo(dir);
  const stale = [];
  for (const file of DEMO_FILES) {
    const fresh = await readFile(join(dir, file));
    const committed = await readFile(join(ASSETS_DIR, file)).catch(() => null);
    if (committed === null || !fresh.equals(committed)) stale.push(file);
  }
  if (stale.length > 0) {
    console.error(`signaling/assets is stale (${stale.join(', ')}): run \`npm run build:demo\` in client-js/`);
    process.exitCode = 1;
  } else {
    console.log(`signaling/assets is up to date (${DEMO_FILES.join(', ')})`);
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
