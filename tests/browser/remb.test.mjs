// A client with REMB only (its page takes transport-cc out of our offer, so its Chrome estimates
// its downlink itself and sends REMB), on the capped-downlink rig of bandwidth.test.mjs
// (capped-downlink.mjs), once its estimator runs (its first REMB). It asserts what the
// transport-wide client must do, except that f at half its frame rate, which straddles the cap
// (250–354 kbit/s as the picture changes), is allowed while capped. The server sees the cap's
// queue in the round trips of the client's receiver reports (docs/decisions.md §30), and must
// do so without the transport-wide feedback the other test's client sends.
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
    assert.ok(
      serverLines(/queue in the round trip/, run.capAt, run.liftAt) > 0,
      'the round trip of its receiver reports never showed the queue of the capped path',
    );
    assert.equal(
      serverLines(/downlink congested/, run.capAt, Date.now()),
      0,
      'no transport-wide feedback, so no transport-wide queue signal: the REMB or the round trip moved it',
    );
  });
});
