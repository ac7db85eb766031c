/** Data messages: the envelope, the channels on the publisher connection, `dataReceived` / `dataRejected`. */
import { describe, expect, it } from 'vitest';
import { DATA_MESSAGE_MAX_BYTES, DataError, type DataReceivedEvent, type DataRejectedEvent, RoomEvent } from '../src/index.js';
import { readEnvelope } from '../src/data.js';
import { createHarness, type FakeDataChannel, until } from './fakes.js';

/** What the server sends a recipient: version 1, header length, JSON header, payload. */
function delivered(header: object, payload: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  return new Uint8Array([1, json.length >> 8, json.length & 0xff, ...json, ...payload]);
}

function sentHeader(bytes: Uint8Array | undefined): { header: Record<string, unknown>; payload: Uint8Array } {
  if (bytes === undefined) throw new Error('nothing sent');
  const length = ((bytes[1] ?? 0) << 8) | (bytes[2] ?? 0);
  return {
    header: JSON.parse(new TextDecoder().decode(bytes.subarray(3, 3 + length))) as Record<string, unknown>,
    payload: bytes.subarray(3 + length),
  };
}

describe('data messages', () => {
  it('opens both channels with one offer without tracks, then sends the envelope', async () => {
    const h = createHarness();
    await h.connect();
    const sending = h.room.publishData('hello', { topic: 'chat', destinationIdentities: ['bob'] });
    await until(() => h.socket().sentOfType('publish').length === 1);
    const [publish] = h.socket().sentOfType('publish');
    expect(publish?.tracks).toEqual([]);
    const pc = h.pcs[0];
    const [reliable, lossy] = (pc?.dataChannels ?? []) as FakeDataChannel[];
    expect(reliable?.label).toBe('sluice-reliable');
    expect(lossy?.label).toBe('sluice-lossy');
    expect(lossy?.init).toEqual({ ordered: false, maxRetransmits: 0 });
    await until(() => pc?.remoteDescription !== null);
    reliable?.open();
    await sending;
    const { header, payload } = sentHeader(reliable?.sent[0]);
    expect(header).toEqual({ topic: 'chat', to: ['bob'], text: true });
    expect(new TextDecoder().decode(payload)).toBe('hello');

    // Later messages reuse the channels; bytes go as they are, lossy on the lossy channel.
    lossy?.open();
    await h.room.publishData(new Uint8Array([7, 8]), { reliable: false });
    expect(h.socket().sentOfType('publish')).toHaveLength(1);
    const second = sentHeader(lossy?.sent[0]);
    expect(second.header).toEqual({});
    expect([...second.payload]).toEqual([7, 8]);
  });

  it('refuses a message over the limit before sending anything', async () => {
    const h = createHarness();
    await h.connect();
    await expect(h.room.publishData(new Uint8Array(DATA_MESSAGE_MAX_BYTES))).rejects.toBeInstanceOf(DataError);
    expect(h.socket().sentOfType('publish')).toHaveLength(0);
  });

  it('emits dataReceived with the sender, topic and text or bytes, and dataRejected', async () => {
    const h = createHarness();
    await h.room.connect('ws://sfu.test/ws', 'token', { data: true });
    await until(() => (h.pcs[0]?.dataChannels.length ?? 0) === 2);
    const [reliable, lossy] = (h.pcs[0]?.dataChannels ?? []) as FakeDataChannel[];
    const received: DataReceivedEvent[] = [];
    const rejected: DataRejectedEvent[] = [];
    h.room.on(RoomEvent.DataReceived, (e) => received.push(e));
    h.room.on(RoomEvent.DataRejected, (e) => rejected.push(e));
    reliable?.receive(delivered({ from: 'PA1', identity: 'bob', topic: 'chat', text: true }, new TextEncoder().encode('hi')));
    lossy?.receive(delivered({ from: 'PA9', identity: 'zoe' }, new Uint8Array([1, 2])));
    reliable?.receive(new Uint8Array([2, 0, 0]));
    expect(received).toHaveLength(2);
    expect(received[0]).toMatchObject({ data: 'hi', participantId: 'PA1', identity: 'bob', topic: 'chat', reliable: true });
    expect(received[0]?.participant?.identity).toBe('bob');
    expect(received[1]).toMatchObject({ participantId: 'PA9', identity: 'zoe', topic: undefined, reliable: false });
    expect([...(received[1]?.data as Uint8Array)]).toEqual([1, 2]);
    expect(received[1]?.participant).toBeUndefined();
    h.socket().receive({ type: 'dataRejected', reason: 'rateLimited', dropped: 3 });
    expect(rejected).toEqual([{ reason: 'rateLimited', dropped: 3 }]);
  });

  it('reads only well-formed envelopes', () => {
    expect(readEnvelope(new Uint8Array([]))).toBeUndefined();
    expect(readEnvelope(new Uint8Array([1, 0, 5, 123]))).toBeUndefined();
    expect(readEnvelope(delivered({ identity: 'x' }, new Uint8Array()))).toBeUndefined();
    expect(readEnvelope(new Uint8Array([1, 0, 2, 123, 125]))).toBeUndefined();
    expect(readEnvelope(delivered({ from: 'PA1', identity: 'a' }, new Uint8Array([5])))?.payload).toEqual(new Uint8Array([5]));
  });
});
