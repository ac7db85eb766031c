/** A subscription the server ends on its own (`subscriptionEnded`: the application revoked `canSubscribe`). */
import { describe, expect, it } from 'vitest';
import { createHarness } from './fakes.js';

describe('subscriptionEnded', () => {
  it('ends the subscription the server ended, with trackUnsubscribed once its track had come', async () => {
    const h = createHarness();
    await h.connect();
    const sub = await h.room.subscribe('PU4');
    expect(h.room.subscriptions.has(sub.subscriptionId)).toBe(true);
    h.socket().receive({ type: 'subscriptionEnded', subscriptionId: sub.subscriptionId, reason: 'permissionRevoked' });
    expect(h.room.subscriptions.has(sub.subscriptionId)).toBe(false);
    await expect(sub.waitForTrack()).rejects.toThrow(/ended/);
  });
});
