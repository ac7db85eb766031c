// Bandwidth-driven layer selection: the subscriber's downlink goes through the UDP relay
// (udp-relay.mjs). Capped below what f needs, the subscriber must drop to a lower layer within
// 5 s; with the cap lifted it must be back at 1280 px within 20 s; no freeze longer than 0.5 s
// at either switch (rVFC frame gaps in the page, and Chrome's freeze stats). The server sees
// the cap as a standing queue in the subscriber's transport-wide feedback and allocates from
// the rate the path delivered (docs/decisions.md §23); the cap (350 kbit/s) is below what f
// needs even at half its frame rate, so the subscriber must change resolution. The rig is
// shared with remb.test.mjs (capped-downlink.mjs).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withDiagnostics } from './harness.mjs';
import { assertSwitches, CAP_BPS, cappedDownlinkRig, FREEZE_LIMIT_MS, kbps } from './capped-downlink.mjs';

const rig = cappedDownlinkRig('bandwidth', { twcc: 7 });

test('a capped downlink moves the subscriber down a layer and back up', { timeout: 150_000 }, async () => {
  await withDiagnostics('bandwidth', rig.server(), rig.pages, async () => {
    const run = await rig.run('twcc');
    assertSwitches(run);
    assert.ok(run.cappedLayerWidth < 1280, `went back to 1280 px while still capped at ${kbps(CAP_BPS)}`);
    assert.ok(run.cappedGap.maxGapMs <= FREEZE_LIMIT_MS, `while capped: ${run.cappedGap.maxGapMs} ms without a frame`);
  });
});
