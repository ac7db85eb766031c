/**
 * The golden protocol fixtures (tests/fixtures/protocol, shared with the Rust tests) against the
 * SDK: client fixtures look like what the SDK sends, server fixtures go through its dispatcher.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import type { ClientMessage, ServerMessage } from '../src/protocol.gen.js';
import { FakeStream, FakeTrack, type Harness, type Reply, createHarness, flush, until } from './fakes.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '../../tests/fixtures/protocol');
const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.json'));
const load = (file: string): unknown => JSON.parse(readFileSync(join(FIXTURES, file), 'utf8'));
const clientFiles = files.filter((f) => f.startsWith('client.'));
const serverFiles = files.filter((f) => f.startsWith('server.'));

const CLIENT_TYPES: ClientMessage['type'][] = [
  'join', 'publish', 'unpublish', 'subscribe', 'unsubscribe', 'answer', 'trickle', 'setPreferredLayer',
  'setSubscriptionPaused', 'leave', 'resume', 'restartIce', 'ping', 'setMuted',
];
const SERVER_TYPES: ServerMessage['type'][] = [
  'joined', 'published', 'subscribed', 'ok', 'error', 'offer', 'trickle',
  'participantJoined', 'participantUpdated', 'participantLeft', 'publicationAdded', 'publicationRemoved', 'layersChanged',
  'publisherLayers', 'resumed', 'activeSpeakers', 'publicationStalled', 'publicationResumed',
  'publicationMuted', 'publicationUnmuted', 'dataRejected', 'subscriptionEnded',
];

/** Drives a session that makes the SDK send every kind of client message; returns them by type. */
async function messagesTheSdkSends(): Promise<Map<string, ClientMessage>> {
  const h = createHarness({ room: { heartbeatIntervalMs: 20 } });
  await h.room.connect('ws://sfu.test/ws', 'token', { room: 'demo' });
  const stream = new FakeStream('cam', [new FakeTrack('audio'), new FakeTrack('video')]);
  const [pub] = await h.room.publish(stream as unknown as MediaStream, { name: 'Front camera' });
  h.pcs[0]?.emitCandidate('candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host');
  const sub = await h.room.subscribe('PU4');
  h.socket().receive({ type: 'offer', sdp: 'v=0' });
  await until(() => h.socket().sentOfType('answer').length === 1);
  await sub.setPreferredLayer(1, 2);
  await until(() => h.socket().sentOfType('ping').length > 0);
  await sub.setPaused(true);
  await pub?.mute();
  // A drop: the SDK resumes on a new socket and restarts ICE.
  h.socket().serverClose(1006);
  await until(() => h.sockets.length === 2 && h.socket().sentOfType('restartIce').length === 1);
  await until(() => h.room.state === 'connected');
  await h.room.unsubscribe(sub.subscriptionId);
  await h.room.unpublish(pub?.publicationId ?? '');
  await h.room.disconnect();
  return new Map(h.sockets.flatMap((socket) => socket.sent).map((m) => [m.type, m]));
}

/**
 * Waits until the room finished handling a server event, so a failure it reports afterwards
 * (`error`, console) is seen. The other events are handled synchronously on receipt.
 */
async function settled(type: ServerMessage['type'], h: Harness): Promise<void> {
  switch (type) {
    case 'offer':
      // The answer goes out after the subscriber connection applied the offer; flush lets the
      // server's `ok` to it (a queued microtask) be taken.
      await until(() => h.socket().sentOfType('answer').length === 1);
      await flush();
      break;
    case 'publisherLayers':
      // Dynacast runs on the publisher's serial negotiation queue: a publish queued after it
      // resolves only once it is done.
      await h.room.publish(new FakeStream('late', [new FakeTrack('audio')]) as unknown as MediaStream);
      break;
    default:
      break;
  }
}

describe('golden fixtures', () => {
  it('cover every message type', () => {
    const types = (prefix: string) =>
      new Set(files.filter((f) => f.startsWith(prefix)).map((f) => (load(f) as { type: string }).type));
    expect([...types('client.')].sort()).toEqual([...CLIENT_TYPES].sort());
    expect([...types('server.')].sort()).toEqual([...SERVER_TYPES].sort());
    for (const file of files) {
      expect(file).toContain(`.${(load(file) as { type: string }).type}.`);
    }
  });

  it.each(clientFiles)('%s is a message the SDK produces', async (file) => {
    const fixture = load(file) as Record<string, unknown>;
    expect(typeof fixture.type).toBe('string');
    expect(Number.isInteger(fixture.requestId)).toBe(true);
    const sent = (await messagesTheSdkSends()).get(fixture.type as string) as Record<string, unknown> | undefined;
    expect(sent, `the SDK never sends ${String(fixture.type)}`).toBeDefined();
    expect(Object.keys(sent ?? {}).sort()).toEqual(Object.keys(fixture).sort());
    for (const [key, value] of Object.entries(fixture)) {
      expect(typeof sent?.[key], key).toBe(typeof value);
    }
  });

  it.each(serverFiles)('%s is handled by the dispatcher', async (file) => {
    const fixture = load(file) as ServerMessage;
    const { requestId: _id, ...reply } = fixture as ServerMessage & { requestId?: number };
    const isResponse = 'requestId' in fixture;
    // A response fixture answers the request of its kind; an event fixture arrives unprompted.
    const answers: Partial<Record<ServerMessage['type'], ClientMessage['type']>> = {
      joined: 'join',
      published: 'publish',
      subscribed: 'subscribe',
      ok: 'unpublish',
      error: 'subscribe',
      resumed: 'resume',
    };
    const h = createHarness({
      responder: (msg) => (isResponse && answers[fixture.type] === msg.type ? (reply as Reply) : undefined),
    });
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const onError = vi.fn();
    h.room.on('error', onError);
    const info = await h.room.connect('ws://sfu.test/ws', 'token');
    const stream = new FakeStream('cam', [new FakeTrack('audio'), new FakeTrack('video')]);
    switch (fixture.type) {
      case 'joined':
        expect({ type: 'joined', ...info }).toEqual(reply);
        break;
      case 'published': {
        const pubs = await h.room.publish(stream as unknown as MediaStream);
        expect(pubs.map((p) => p.publicationId)).toEqual(fixture.publications.map((p) => p.publicationId));
        break;
      }
      case 'subscribed': {
        const sub = await h.room.subscribe(fixture.publicationId);
        expect(sub.subscriptionId).toBe(fixture.subscriptionId);
        break;
      }
      case 'ok':
        await expect(h.room.unpublish('PU3')).resolves.toBeUndefined();
        break;
      case 'resumed': {
        const reconnected = new Promise((resolve) => h.room.once('reconnected', resolve));
        h.socket().serverClose(1006);
        expect(await reconnected).toMatchObject({ resumed: true });
        expect(h.room.localParticipant).toEqual(fixture.participant);
        expect([...h.room.participants.keys()]).toEqual(fixture.participants.map((p) => p.participantId));
        break;
      }
      case 'error':
        if (isResponse) {
          await expect(h.room.subscribe('PU99')).rejects.toMatchObject({ code: fixture.code });
        } else {
          h.socket().receive(fixture);
          expect(onError).toHaveBeenCalledWith(expect.objectContaining({ code: fixture.code }));
        }
        break;
      default:
        // Events: give the room a publisher connection so publisher-side trickle has a target.
        await h.room.publish(stream as unknown as MediaStream);
        expect(() => h.socket().receive(fixture)).not.toThrow();
        await settled(fixture.type, h);
    }
    expect(error).not.toHaveBeenCalled();
    expect(warn).not.toHaveBeenCalled();
    if (fixture.type !== 'error' || isResponse) expect(onError).not.toHaveBeenCalled();
    expect(h.room.state).toBe('connected');
  });
});
