// NOT in `npm test` (run it with `npm run test:unstable`): a client with REMB only (its page
// takes transport-cc out of our offer, so its Chrome estimates its downlink itself and sends
// REMB), on the capped-downlink rig of bandwidth.test.mjs (capped-downlink.mjs). It asserts what
// the transport-wide client must do, except that f at half its frame rate, which straddles the
// cap (250–354 kbit/s as the picture changes) and whose probe a REMB cannot always refuse, is
// allowed while capped (4 of session 8's 63 runs with stronger REMB probes took it). It failed
// 1 of 22 runs of session 8's final code (docs/decisions.md §29). The server decided 0.5 s after
// the cap, when the relay's queue had long overflowed, and the lower layer's keyframe waited
// behind it: a 517 ms switch gap (117–467 ms in the others). The climb back to f took
// 5.3–16.6 s.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withDiagnostics } from './harness.mjs';
import { assertSwitches, CAP_BPS, cappedDownlinkRig, kbps, serverLines } from './capped-downlink.mjs';

const rig = cappedDownlinkRig('remb', { remb: 8 });

test('a client with REMB only is moved down under a cap and back up', { timeout: 150_000 }, async () => {
  await withDiagnostics('remb', rig.server(), rig.pages, async () => {
    const run = await rig.run('remb', { rembOnly: true });
    assertSwitches(run);
    const fullF = run.events.filter(
      (e) => e.at >= run.capAt && e.at < run.liftAt && e.target.spatial === 2 && e.target.temporal >= 2,
    );
    assert.deepEqual(fullF, [], `f at its full rate while still capped at ${kbps(CAP_BPS)}`);
    assert.equal(
      serverLines(/downlink congested/, run.capAt, Date.now()),
      0,
      'no transport-wide feedback, so no queue signal: the REMB moved it',
    );
  });
});
