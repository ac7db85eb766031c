/** Publisher liveness: `publicationStalled` / `publicationResumed` → events and `room.stalledPublications`. */
import { describe, expect, it } from 'vitest';
import { type PublicationLivenessEvent, RoomEvent } from '../src/index.js';
import { createHarness } from './fakes.js';

const VIDEO = { publicationId: 'PU8', participantId: 'PA3', kind: 'video', source: 'camera', codec: 'video/VP8' } as const;

describe('publication liveness', () => {
  it('emits stalled then resumed once each, with the publication', async () => {
    const h = createHarness();
    await h.connect();
    const seen: string[] = [];
    const record = (name: string) => (e: PublicationLivenessEvent) =>
      seen.push(`${name}:${e.publicationId}:${e.participantId}:${e.publication?.kind}`);
    h.room.on(RoomEvent.PublicationStalled, record('stalled'));
    h.room.on(RoomEvent.PublicationResumed, record('resumed'));
    const s = h.socket();
    s.receive({ type: 'publicationAdded', publication: VIDEO });
    s.receive({ type: 'publicationStalled', publicationId: 'PU8', participantId: 'PA3' });
    expect([...h.room.stalledPublications]).toEqual(['PU8']);
    // A repeat (e.g. after a resume) changes nothing.
    s.receive({ type: 'publicationStalled', publicationId: 'PU8', participantId: 'PA3' });
    s.receive({ type: 'publicationResumed', publicationId: 'PU8', participantId: 'PA3' });
    expect(h.room.stalledPublications.size).toBe(0);
    expect(seen).toEqual(['stalled:PU8:PA3:video', 'resumed:PU8:PA3:video']);
  });

  it('forgets a stalled publication when it is removed and when the session ends', async () => {
    const h = createHarness();
    await h.connect();
    const s = h.socket();
    s.receive({ type: 'publicationAdded', publication: VIDEO });
    s.receive({ type: 'publicationStalled', publicationId: 'PU8', participantId: 'PA3' });
    s.receive({ type: 'publicationRemoved', publicationId: 'PU8', participantId: 'PA3' });
    expect(h.room.stalledPublications.size).toBe(0);
    s.receive({ type: 'publicationStalled', publicationId: 'PU9', participantId: 'PA3' });
    expect(h.room.stalledPublications.has('PU9')).toBe(true);
    await h.room.disconnect();
    expect(h.room.stalledPublications.size).toBe(0);
  });
});
