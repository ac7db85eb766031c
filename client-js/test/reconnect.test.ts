import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  ConnectionError,
  ConnectionErrorReason,
  DisconnectCause,
  type DisconnectedEvent,
  type ReconnectedEvent,
  RoomEvent,
  RoomState,
} from '../src/index.js';
import { MAX_RECONNECT_DELAY_MS, RECONNECT_SCHEDULE_MS, reconnectDelayMs } from '../src/reconnect.js';
import { CloseCode, type ServerMessage } from '../src/protocol.gen.js';
import { FakeStream, FakeTrack, JOINED, type Reply, createHarness, flush, offerSdp, until } from './fakes.js';

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

function camera(): MediaStream {
  return new FakeStream('cam', [new FakeTrack('audio'), new FakeTrack('video')]) as unknown as MediaStream;
}

describe('reconnectDelayMs (the backoff schedule)', () => {
  it('is 0, 1, 2, 4, 8, 16, then 30 s without jitter', () => {
    const delays = Array.from({ length: 10 }, (_, attempt) => reconnectDelayMs(attempt, 0));
    expect(delays).toEqual([0, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000]);
    expect(RECONNECT_SCHEDULE_MS[0]).toBe(0);
  });

  it('spreads each delay by ±jitter but retries at once first and never waits over 30 s', () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      const base = reconnectDelayMs(attempt, 0);
      const low = reconnectDelayMs(attempt, 0.2, () => 0);
      const high = reconnectDelayMs(attempt, 0.2, () => 0.999_999);
      const mid = reconnectDelayMs(attempt, 0.2, () => 0.5);
      expect(low).toBe(Math.round(base * 0.8));
      expect(high).toBe(Math.min(MAX_RECONNECT_DELAY_MS, Math.round(base * 1.2)));
      expect(mid).toBe(base);
      expect(high).toBeLessThanOrEqual(MAX_RECONNECT_DELAY_MS);
    }
    expect(reconnectDelayMs(0, 0.2, () => 0.99)).toBe(0);
  });

  it('stays within the bounds for any random value and odd attempts', () => {
    for (let i = 0; i < 200; i++) {
      const attempt = i % 9;
      const d = reconnectDelayMs(attempt, 0.2);
      const base = reconnectDelayMs(attempt, 0);
      expect(d).toBeGreaterThanOrEqual(Math.floor(base * 0.8));
      expect(d).toBeLessThanOrEqual(Math.min(30_000, Math.ceil(base * 1.2)));
    }
    expect(reconnectDelayMs(-3, 0)).toBe(0);
    expect(reconnectDelayMs(1e9, 0)).toBe(30_000);
    expect(reconnectDelayMs(Number.NaN, 0)).toBe(0);
  });
});

/** A room that published a camera, subscribed to PU4 and answered the server's offer. */
async function establishedSession(h: ReturnType<typeof createHarness>) {
  await h.connect();
  const publications = await h.room.publish(camera());
  const subscription = await h.room.subscribe('PU4');
  h.socket().receive({ type: 'offer', sdp: offerSdp([{ mid: '0', trackId: subscription.subscriptionId }]) });
  await until(() => h.socket().sentOfType('answer').length === 1);
  return { publications, subscription };
}

function record(h: ReturnType<typeof createHarness>): string[] {
  const events: string[] = [];
  h.room.on('reconnecting', (e) => events.push(`reconnecting:${e.code}`));
  h.room.on('reconnected', (e) => events.push(`reconnected:${e.resumed ? 'resumed' : 'rejoined'}`));
  h.room.on('connectionStateChanged', (state) => events.push(`state:${state}`));
  h.room.on('disconnected', (e) => events.push(`disconnected:${e.cause}`));
  h.room.on('participantJoined', (p) => events.push(`participantJoined:${p.participantId}`));
  h.room.on('participantLeft', (p) => events.push(`participantLeft:${p.participantId}`));
  h.room.on('publicationAdded', (p) => events.push(`publicationAdded:${p.publicationId}`));
  h.room.on('publicationRemoved', (p) => events.push(`publicationRemoved:${p.publicationId}`));
  return events;
}

describe('reconnect', () => {
  it('resumes the session, reconciles the room and ICE-restarts both connections', async () => {
    let resumed: Reply | undefined;
    const h = createHarness({ responder: (msg) => (msg.type === 'resume' ? resumed : undefined) });
    const { publications, subscription } = await establishedSession(h);
    const events = record(h);
    // While away: PU1 ended, carol joined and published PU8.
    resumed = {
      type: 'resumed',
      room: 'demo',
      participant: JOINED.type === 'joined' ? JOINED.participant : { participantId: 'PA2', identity: 'alice' },
      participants: [
        { participantId: 'PA1', identity: 'bob' },
        { participantId: 'PA3', identity: 'carol' },
      ],
      publications: [
        { publicationId: 'PU4', participantId: 'PA1', kind: 'video', source: 'camera', codec: 'video/VP8' },
        { publicationId: 'PU8', participantId: 'PA3', kind: 'video', source: 'screen', codec: 'video/VP8' },
        ...publications.map(({ track: _t, ...p }) => p),
      ],
      subscriptions: [{ subscriptionId: subscription.subscriptionId, publicationId: 'PU4' }],
    };
    const first = h.socket();
    first.serverClose(1006);
    await until(() => events.includes('reconnected:resumed'));

    expect(h.sockets).toHaveLength(2);
    expect(h.socket().sent[0]).toEqual({
      type: 'resume',
      requestId: 1,
      participantId: 'PA2',
      resumeToken: '00112233445566778899aabbccddeeff',
    });
    expect(events).toEqual([
      'state:reconnecting',
      'reconnecting:1006',
      'publicationRemoved:PU1',
      'participantJoined:PA3',
      'publicationAdded:PU8',
      'state:connected',
      'reconnected:resumed',
    ]);
    // Same participant, publications and subscription objects.
    expect(h.room.state).toBe(RoomState.Connected);
    expect(h.room.localParticipant?.participantId).toBe('PA2');
    expect([...h.room.localPublications.keys()]).toEqual(publications.map((p) => p.publicationId));
    expect(h.room.subscriptions.get(subscription.subscriptionId)).toBe(subscription);
    expect(subscription.ended).toBe(false);
    // ICE restarts: the publisher offers with iceRestart through publish (no new tracks), the
    // subscriber is asked for through restartIce; no new peer connection.
    expect(h.pcs).toHaveLength(2);
    expect(h.log).toContain('createOffer:iceRestart');
    const republish = h.socket().sentOfType('publish');
    expect(republish).toHaveLength(1);
    expect(republish[0]?.tracks).toEqual([]);
    expect(h.socket().sentOfType('restartIce')).toHaveLength(1);
    // The server's ICE restart offer is answered on the new socket.
    h.socket().receive({ type: 'offer', sdp: offerSdp([{ mid: '0', trackId: subscription.subscriptionId }], 'restart') });
    await until(() => h.socket().sentOfType('answer').length === 1);
    // A late duplicate of what the resume showed changes nothing.
    h.socket().receive({ type: 'publicationAdded', publication: resumed.publications[1] });
    h.socket().receive({ type: 'publicationRemoved', publicationId: 'PU1', participantId: 'PA1' });
    await flush();
    expect(events.filter((e) => e.includes('PU8') || e.includes('PU1'))).toHaveLength(2);
  });

  it('falls back to a full rejoin when the resume is refused', async () => {
    const h = createHarness({
      responder: (msg) =>
        msg.type === 'resume' ? { type: 'error', code: 'resumeFailed', message: 'grace period over' } : undefined,
    });
    const { subscription } = await establishedSession(h);
    const events = record(h);
    let reconnected: ReconnectedEvent | undefined;
    h.room.on('reconnected', (e) => {
      reconnected = e;
    });
    h.socket().serverClose(1011);
    await until(() => reconnected !== undefined);

    const sent = h.socket().sent.map((m) => m.type);
    expect(sent.slice(0, 2)).toEqual(['resume', 'join']);
    expect(h.socket().sentOfType('join')[0]?.token).toBe('token-1');
    // The tracks are published again on a new publisher connection, the subscription renewed.
    const publish = h.socket().sentOfType('publish');
    expect(publish).toHaveLength(1);
    expect(publish[0]?.tracks.map((t) => t.kind)).toEqual(['audio', 'video']);
    expect(h.socket().sentOfType('subscribe').map((m) => m.publicationId)).toEqual(['PU4']);
    expect(h.pcs.length).toBeGreaterThanOrEqual(3);
    expect(h.pcs[0]?.closed).toBe(true);
    expect(h.pcs[1]?.closed).toBe(true);
    expect(reconnected).toMatchObject({ resumed: false, attempts: 1 });
    expect(subscription.ended).toBe(true);
    expect([...h.room.subscriptions.values()].map((s) => s.publicationId)).toEqual(['PU4']);
    expect(h.room.localPublications.size).toBe(2);
    expect(events).toContain('reconnected:rejoined');
    expect(h.room.state).toBe(RoomState.Connected);
  });

  it('retries on the backoff schedule, then gives up with disconnected', async () => {
    vi.useFakeTimers();
    const h = createHarness({
      room: { reconnectTimeoutMs: 10_000, reconnectJitter: 0, requestTimeoutMs: 500 },
      refuseSocket: (n) => n >= 1,
    });
    await h.connect();
    const disconnected: DisconnectedEvent[] = [];
    h.room.on('disconnected', (e) => disconnected.push(e));
    const opened: number[] = [];
    const start = Date.now();
    const count = () => {
      while (opened.length < h.sockets.length - 1) opened.push(Date.now() - start);
    };
    h.socket().serverClose(1006);
    for (let t = 0; t < 12_000; t += 100) {
      await vi.advanceTimersByTimeAsync(100);
      count();
    }
    // Attempts at 0, 1, 1+2, 1+2+4 s; the next (after 8 s more) would pass the 10 s budget.
    expect(opened).toHaveLength(4);
    expect(opened[0]).toBeLessThanOrEqual(100);
    expect(opened[1]).toBeGreaterThanOrEqual(1_000);
    expect(opened[1]).toBeLessThanOrEqual(1_200);
    expect(opened[2]).toBeGreaterThanOrEqual(3_000);
    expect(opened[3]).toBeGreaterThanOrEqual(7_000);
    expect(opened[3]).toBeLessThanOrEqual(7_300);
    expect(disconnected).toHaveLength(1);
    expect(disconnected[0]).toMatchObject({ clientInitiated: false, code: 1006, cause: DisconnectCause.ReconnectFailed });
    expect(h.room.state).toBe(RoomState.Disconnected);
  });

  it('rejects requests pending at the drop, and calls made meanwhile, with ConnectionError', async () => {
    let hold = true;
    const h = createHarness({
      responder: (msg) => (msg.type === 'subscribe' && hold ? null : msg.type === 'resume' ? null : undefined),
    });
    await h.connect();
    const pending = h.room.subscribe('PU4').catch((e: unknown) => e);
    await flush();
    h.socket().serverClose(1006);
    const err = await pending;
    expect(err).toBeInstanceOf(ConnectionError);
    expect((err as ConnectionError).reason).toBe(ConnectionErrorReason.Closed);
    expect(h.room.state).toBe(RoomState.Reconnecting);
    const during = await h.room.subscribe('PU1').catch((e: unknown) => e);
    expect(during).toBeInstanceOf(ConnectionError);
    expect((during as ConnectionError).reason).toBe(ConnectionErrorReason.InvalidState);
    hold = false;
    await h.room.disconnect();
  });

  it('does not reconnect when the application removed the participant (4003)', async () => {
    const h = createHarness();
    await h.connect();
    const events = record(h);
    h.socket().serverClose(4003, 'removed by the application');
    await flush();
    expect(events).toEqual(['state:disconnected', 'disconnected:removed']);
    expect(h.sockets).toHaveLength(1);
  });

  it('does not reconnect when replaced by another connection (4001) or after disconnect()', async () => {
    const h = createHarness();
    await h.connect();
    const events = record(h);
    h.socket().serverClose(4001, 'resumed on another connection');
    await flush();
    expect(events).toEqual(['state:disconnected', 'disconnected:replaced']);
    expect(h.sockets).toHaveLength(1);

    const h2 = createHarness({ responder: (msg) => (msg.type === 'resume' ? null : undefined) });
    await h2.connect();
    const events2 = record(h2);
    h2.socket().serverClose(1006);
    await until(() => h2.sockets.length === 2);
    await h2.room.disconnect();
    await flush();
    expect(events2).toEqual(['state:reconnecting', 'reconnecting:1006', 'state:disconnected', 'disconnected:clientLeft']);
    expect(h2.sockets).toHaveLength(2);
  });

  it('reconnects after a server drain (1001 going away) and rejoins where the session is unknown', async () => {
    // The server that drained forgot the session; the one now behind the URL refuses the resume.
    const h = createHarness({
      responder: (msg) =>
        msg.type === 'resume' ? { type: 'error', code: 'resumeFailed', message: 'no such participant' } : undefined,
    });
    await establishedSession(h);
    const events = record(h);
    h.socket().serverClose(CloseCode.GoingAway, 'server shutting down');
    await until(() => events.includes('reconnected:rejoined'));
    expect(events.slice(0, 2)).toEqual(['state:reconnecting', `reconnecting:${CloseCode.GoingAway}`]);
    expect(h.socket().sent.map((m) => m.type).slice(0, 2)).toEqual(['resume', 'join']);
    expect(h.room.state).toBe(RoomState.Connected);
  });

  it('moves to the next node of the cluster when its own refuses, starts its view afresh there, and stays', async () => {
    // Node A dies: its URL refuses every socket after the first. Node B never had the session,
    // so the SDK joins anew there; B numbers its own ids, so nothing is resubscribed by id.
    const home = 'ws://sfu.test/ws';
    const h = createHarness({
      room: { reconnectJitter: 0 },
      responder: (msg) => {
        if (msg.type === 'join') return { ...JOINED, fallbackUrls: ['ws://b.test/ws', 'ws://c.test/ws'] };
        if (msg.type === 'resume') return { type: 'error', code: 'resumeFailed', message: 'no such participant' };
        return undefined;
      },
      refuseSocket: (n, url) => n >= 1 && url === home,
    });
    await establishedSession(h);
    vi.useFakeTimers();
    const events = record(h);
    const reconnected: ReconnectedEvent[] = [];
    h.room.on('reconnected', (e) => reconnected.push(e));
    h.socket().serverClose(1006);
    await vi.advanceTimersByTimeAsync(1_500);
    // Attempt 1: A; attempt 2: A again, then B.
    expect(h.sockets.map((s) => s.url)).toEqual([home, home, home, 'ws://b.test/ws']);
    expect(reconnected).toEqual([expect.objectContaining({ resumed: false, attempts: 2, url: 'ws://b.test/ws' })]);
    expect(h.socket().sentOfType('join')).toHaveLength(1);
    expect(h.socket().sentOfType('publish')).toHaveLength(1);
    expect(h.socket().sentOfType('subscribe')).toHaveLength(0);
    // The room's view from A is gone, and B's is announced as new.
    expect(events).toEqual(
      expect.arrayContaining(['participantLeft:PA1', 'publicationRemoved:PU4', 'participantJoined:PA1', 'publicationAdded:PU4']),
    );
    expect(events.indexOf('publicationRemoved:PU4')).toBeLessThan(events.indexOf('publicationAdded:PU4'));
    expect(h.room.state).toBe(RoomState.Connected);
    // The next drop goes to B first: it holds the session now.
    h.socket().serverClose(1006);
    await vi.advanceTimersByTimeAsync(100);
    expect(h.sockets.at(-1)?.url).toBe('ws://b.test/ws');
  });

  it('stays on its own node when that one accepts again: a network blip does not move the session', async () => {
    vi.useFakeTimers();
    const home = 'ws://sfu.test/ws';
    const h = createHarness({
      room: { reconnectJitter: 0 },
      responder: (msg) => (msg.type === 'join' ? { ...JOINED, fallbackUrls: ['ws://b.test/ws'] } : undefined),
      // The client's network is down for the first attempt only.
      refuseSocket: (n) => n === 1,
    });
    await h.connect();
    const reconnected: ReconnectedEvent[] = [];
    h.room.on('reconnected', (e) => reconnected.push(e));
    h.socket().serverClose(1006);
    await vi.advanceTimersByTimeAsync(1_500);
    expect(h.sockets.map((s) => s.url)).toEqual([home, home, home]);
    expect(reconnected).toEqual([expect.objectContaining({ resumed: true, attempts: 2, url: home })]);
  });

  it('ends the session on a drop when reconnect is off', async () => {
    const h = createHarness({ room: { reconnect: false } });
    await h.connect();
    const events = record(h);
    h.socket().serverClose(1006);
    await flush();
    expect(events).toEqual(['state:disconnected', 'disconnected:serverClosed']);
  });
});

// Keeps the import used for the type of `resumed` replies.
export type _Resumed = Extract<ServerMessage, { type: 'resumed' }>;

describe('heartbeat', () => {
  it('pings while connected and reconnects when a ping goes unanswered', async () => {
    let silent = false;
    const h = createHarness({
      room: { heartbeatIntervalMs: 30, reconnectJitter: 0 },
      responder: (msg) => (msg.type === 'ping' && silent ? null : undefined),
    });
    const events: string[] = [];
    h.room.on(RoomEvent.Reconnecting, () => events.push('reconnecting'));
    h.room.on(RoomEvent.Reconnected, () => events.push('reconnected'));
    await h.connect();
    await until(() => h.socket().sentOfType('ping').length >= 2);
    expect(events).toEqual([]);
    // The network dies: the socket stays "open", pings go unanswered.
    silent = true;
    await until(() => events.includes('reconnecting'), 2_000);
    silent = false;
    await until(() => events.includes('reconnected'), 2_000);
    expect(events).toEqual(['reconnecting', 'reconnected']);
    expect(h.sockets.length).toBe(2);
    expect(h.sockets[0]?.closeCalls.map((c) => c.code)).toEqual([4000]);
    await h.room.disconnect();
  });
});
