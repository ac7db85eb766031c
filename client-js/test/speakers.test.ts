/** Active speakers: the `activeSpeakers` server event → `activeSpeakersChanged` and `room.activeSpeakers`. */
import { describe, expect, it, vi } from 'vitest';
import { type ActiveSpeakersChangedEvent, RoomEvent } from '../src/index.js';
import { createHarness } from './fakes.js';

describe('activeSpeakers', () => {
  it('is empty until the server names someone', async () => {
    const h = createHarness();
    await h.connect();
    expect(h.room.activeSpeakers).toEqual([]);
  });

  it('emits each list in order and keeps the latest', async () => {
    const h = createHarness();
    await h.connect();
    const seen: ActiveSpeakersChangedEvent[] = [];
    h.room.on(RoomEvent.ActiveSpeakersChanged, (event) => seen.push(event));

    const both = [
      { participantId: 'PA1', level: 0.3162 },
      { participantId: 'PA2', level: 0.05 },
    ];
    h.socket().receive({ type: 'activeSpeakers', speakers: both });
    expect(h.room.activeSpeakers).toEqual(both);

    h.socket().receive({ type: 'activeSpeakers', speakers: [] });
    expect(seen).toEqual([{ speakers: both }, { speakers: [] }]);
    expect(h.room.activeSpeakers).toEqual([]);
  });

  it('forgets the speakers when the session ends', async () => {
    const h = createHarness();
    await h.connect();
    h.socket().receive({ type: 'activeSpeakers', speakers: [{ participantId: 'PA1', level: 0.1 }] });
    await h.room.disconnect();
    expect(h.room.activeSpeakers).toEqual([]);
    const late = vi.fn();
    h.room.on(RoomEvent.ActiveSpeakersChanged, late);
    h.socket().receive({ type: 'activeSpeakers', speakers: [{ participantId: 'PA1', level: 0.1 }] });
    expect(late).not.toHaveBeenCalled();
  });
});
