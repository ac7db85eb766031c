// Bundle-size budget: bundles the SDK (src/index.ts) as an app would ship it — minified ESM,
// every export kept — gzips it and fails when it exceeds BUDGET_BYTES. Prints the figures.
//   node scripts/size.mjs            (npm run size; also part of npm test)
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { ROOT } from './build.mjs';

/**
 * The budget for the minified + gzipped SDK: measured at 12,264 B with data messages (11,264 B
 * before them; 9,366 B with reconnection and session resume, 7,665 B before it, 6,577 B before
 * adaptive stream), plus ~7 % headroom. Raise it deliberately (and say why in the commit),
 * never just to make a change fit.
 */
export const BUDGET_BYTES = 13 * 1024;

const result = await build({
  absWorkingDir: ROOT,
  entryPoints: ['src/index.ts'],
  bundle: true,
  format: 'esm',
  target: 'es2020',
  platform: 'browser',
  minify: true,
  legalComments: 'none',
  write: false,
  logLevel: 'warning',
});
const [output] = result.outputFiles;
const minified = output.contents.byteLength;
const gzipped = gzipSync(output.contents, { level: 9 }).byteLength;
const kib = (bytes) => `${(bytes / 1024).toFixed(2)} KiB`;
console.log(
  `SDK bundle: ${minified} B minified, ${gzipped} B gzip (${kib(gzipped)}); budget ${BUDGET_BYTES} B (${kib(BUDGET_BYTES)}), ` +
    `${((100 * gzipped) / BUDGET_BYTES).toFixed(0)} % used`,
);
if (gzipped > BUDGET_BYTES) {
  console.error(`the SDK bundle is over budget by ${gzipped - BUDGET_BYTES} B: shrink it or raise BUDGET_BYTES in scripts/size.mjs deliberately`);
  process.exitCode = 1;
}
