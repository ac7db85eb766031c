// API docs: typedoc renders docs-api/ from the TSDoc comments of everything src/index.ts exports.
//   node scripts/docs.mjs           write docs-api/ (npm run docs)
//   node scripts/docs.mjs --check   validate only, write nothing (npm run check:docs, part of npm test)
// Every typedoc warning fails, as with --treatWarningsAsErrors, with one ratchet: exported
// symbols listed in scripts/docs-undocumented.txt may lack a doc comment for now (they live in
// files this script's owners do not edit: the generated protocol types, room.ts, events.ts,
// publisher.ts, errors.ts, emitter.ts). A new undocumented export fails, and so does a listed
// one that got documented (delete its line), so the list only shrinks.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './build.mjs';

const ALLOWED_FILE = join(ROOT, 'scripts/docs-undocumented.txt');
const UNDOCUMENTED = /^(.+) \((\w+)\), defined in @sluice\/client\/(\S+), does not have any documentation$/;
const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g');

const check = process.argv.includes('--check');
const typedoc = join(ROOT, 'node_modules/typedoc/bin/typedoc');
const args = ['--options', 'typedoc.json', '--treatWarningsAsErrors', 'false'];
if (check) args.push('--emit', 'none');
const started = Date.now();
const run = spawnSync(process.execPath, [typedoc, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
const output = `${run.stdout ?? ''}${run.stderr ?? ''}`.replace(ANSI, '');

const allowed = new Set(
  readFileSync(ALLOWED_FILE, 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#')),
);
const undocumented = new Set();
const problems = [];
for (const line of output.split('\n')) {
  const match = /^\[(warning|error)\] (.*)$/.exec(line.trim());
  if (match === null) continue;
  const [, level, message] = match;
  if (/^Found \d+ errors and \d+ warnings$/.test(message)) continue;
  const gap = UNDOCUMENTED.exec(message);
  if (gap === null) {
    problems.push(`${level}: ${message}`);
    continue;
  }
  const key = `${gap[3]}: ${gap[1]} (${gap[2]})`;
  undocumented.add(key);
  if (!allowed.has(key)) problems.push(`not documented: ${key}`);
}
for (const key of allowed) {
  if (!undocumented.has(key)) problems.push(`documented now, delete its line from scripts/docs-undocumented.txt: ${key}`);
}
if (run.status !== 0 && problems.length === 0) problems.push(`typedoc exited with ${run.status ?? run.signal}:\n${output}`);

const seconds = ((Date.now() - started) / 1000).toFixed(1);
if (problems.length > 0) {
  console.error(problems.join('\n'));
  console.error(`typedoc: ${problems.length} problem(s) in ${seconds} s`);
  process.exitCode = 1;
} else {
  console.log(
    `typedoc: no warnings (${allowed.size} known undocumented exports in files of others) in ${seconds} s` +
      (check ? '' : '; docs in docs-api/index.html'),
  );
}
