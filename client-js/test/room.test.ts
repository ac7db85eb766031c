import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  ConnectionError,
  ConnectionErrorReason,
  Room,
  RoomEvent,
  RoomState,
  ServerError,
  SubscriptionEndedError,
} from '../src/index.js';
import { FakeStream, FakeTrack, FakeWebSocket, createHarness, flush, gate, offerSdp, until } from './fakes.js';

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

function camera(): MediaStream {
  return new FakeStream('cam', [new FakeTrack('audio'), new FakeTrack('video')]) as unknown as MediaStream;
}

describe('connect', () => {
  it('sends join with the token and resolves with the joined info', async () => {
    const h = createHarness();
    const info = await h.room.connect('ws://sfu.test/ws', 'tok');
    expect(h.socket().url).toBe('ws://sfu.test/ws');
    expect(h.socket().sent).toEqual([{ type: 'join', requestId: 1, token: 'tok' }]);
    expect(info.room).toBe('demo');
    expect(info.participant.participantId).toBe('PA2');
    expect(h.room.state).toBe(RoomState.Connected);
    expect([...h.room.participants.keys()]).toEqual(['PA1']);
    expect([...h.room.publications.keys()]).toEqual(['PU1', 'PU4']);
  });

  it('names the expected room when asked to', async () => {
    const h = createHarness();
    await h.room.connect('ws://sfu.test/ws', 'tok', { room: 'demo' });
    expect(h.socket().sent).toEqual([{ type: 'join', requestId: 1, token: 'tok', room: 'demo' }]);
  });

  it('rejects with a ServerError carrying the code', async () => {
    const h = createHarness({
      responder: (msg) =>
        msg.type === 'join' ? { type: 'error', code: 'unauthorized', message: 'token expired' } : undefined,
    });
    const err = await h.room.connect('ws://sfu.test/ws', 'old').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServerError);
    expect((err as ServerError).code).toBe('unauthorized');
    expect((err as ServerError).requestId).toBe(1);
    expect(h.room.state).toBe(RoomState.Disconnected);
    expect(h.socket().readyState).toBe(3);
  });

  it('rejects when the socket closes before opening', async () => {
    const room = new Room({
      webSocketFactory: (url) => {
        const socket = new FakeWebSocket(url);
        queueMicrotask(() => socket.serverClose(1006));
        return socket as unknown as WebSocket;
      },
    });
    const err = await room.connect('ws://nowhere/ws', 't').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectionError);
    expect((err as ConnectionError).reason).toBe(ConnectionErrorReason.ConnectFailed);
    expect(room.state).toBe(RoomState.Disconnected);
  });

  it('rejects when the socket does not open in time', async () => {
    vi.useFakeTimers();
    const room = new Room({
      requestTimeoutMs: 1_000,
      webSocketFactory: (url) => new FakeWebSocket(url) as unknown as WebSocket,
    });
    const pending = room.connect('ws://slow/ws', 't').catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await pending).toMatchObject({ reason: ConnectionErrorReason.ConnectFailed });
  });

  it('refuses calls before connect', async () => {
    const h = createHarness();
    await expect(h.room.subscribe('PU1')).rejects.toMatchObject({ reason: ConnectionErrorReason.InvalidState });
  });
});

describe('requests', () => {
  it('correlates responses by requestId even when answered out of order', async () => {
    const held: { requestId: number; publicationId: string }[] = [];
    const h = createHarness({
      responder: (msg) => {
        if (msg.type !== 'subscribe') return undefined;
        held.push({ requestId: msg.requestId, publicationId: msg.publicationId });
        return null;
      },
    });
    await h.connect();
    const first = h.room.subscribe('PU1');
    const second = h.room.subscribe('PU4');
    await until(() => held.length === 2);
    expect(held.map((m) => m.requestId)).toEqual([2, 3]);
    // Answer the second request first.
    h.socket().receive({ type: 'subscribed', requestId: 3, subscriptionId: 'SU9', publicationId: 'PU4' });
    h.socket().receive({ type: 'subscribed', requestId: 2, subscriptionId: 'SU8', publicationId: 'PU1' });
    const [a, b] = await Promise.all([first, second]);
    expect([a.subscriptionId, a.publicationId]).toEqual(['SU8', 'PU1']);
    expect([b.subscriptionId, b.publicationId]).toEqual(['SU9', 'PU4']);
  });

  it('turns an error response into a ServerError with its code', async () => {
    const h = createHarness({
      responder: (msg) =>
        msg.type === 'subscribe' ? { type: 'error', code: 'notFound', message: 'no such publication' } : undefined,
    });
    await h.connect();
    const err = await h.room.subscribe('PU99').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServerError);
    expect(err).toMatchObject({ code: 'notFound', requestId: 2, message: 'notFound: no such publication' });
  });

  it('rejects an unanswered request after requestTimeoutMs and ignores the late response', async () => {
    const h = createHarness({ responder: (msg) => (msg.type === 'subscribe' ? null : undefined) });
    await h.connect();
    vi.useFakeTimers();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const pending = h.room.subscribe('PU1').catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(4_999);
    let settled = false;
    void pending.then(() => (settled = true));
    await Promise.resolve();
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const err = await pending;
    expect(err).toBeInstanceOf(ConnectionError);
    expect((err as ConnectionError).reason).toBe(ConnectionErrorReason.Timeout);
    h.socket().receive({ type: 'subscribed', requestId: 2, subscriptionId: 'SU1', publicationId: 'PU1' });
    expect(warn).toHaveBeenCalledOnce();
    expect(h.room.subscriptions.size).toBe(0);
  });

  it('rejects a response of the wrong type', async () => {
    const h = createHarness({ responder: (msg) => (msg.type === 'subscribe' ? { type: 'ok' } : undefined) });
    await h.connect();
    await expect(h.room.subscribe('PU1')).rejects.toMatchObject({ reason: ConnectionErrorReason.UnexpectedResponse });
  });

  it('rejects pending requests and emits disconnected when the socket drops (reconnect off)', async () => {
    const h = createHarness({
      responder: (msg) => (msg.type === 'subscribe' ? null : undefined),
      room: { reconnect: false },
    });
    await h.connect();
    const disconnected = vi.fn();
    h.room.on(RoomEvent.Disconnected, disconnected);
    const pending = h.room.subscribe('PU1');
    await flush();
    h.socket().serverClose(1011, 'server error');
    await expect(pending).rejects.toMatchObject({ reason: ConnectionErrorReason.Closed });
    expect(disconnected).toHaveBeenCalledWith({
      clientInitiated: false,
      code: 1011,
      reason: 'server error',
      cause: 'serverClosed',
    });
    expect(h.room.state).toBe(RoomState.Disconnected);
  });

  it('ignores malformed frames without throwing', async () => {
    const h = createHarness();
    await h.connect();
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    expect(() => h.socket().receive('not json')).not.toThrow();
    expect(() => h.socket().receive('[1,2]')).not.toThrow();
    expect(() => h.socket().receive({ type: 'fromTheFuture' })).not.toThrow();
    expect(error).toHaveBeenCalledTimes(2);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(h.room.state).toBe(RoomState.Connected);
  });

  it('reports an error without requestId through the error event', async () => {
    const h = createHarness();
    await h.connect();
    const onError = vi.fn();
    h.room.on(RoomEvent.Error, onError);
    h.socket().receive({ type: 'error', code: 'rateLimited', message: 'slow down' });
    expect(onError).toHaveBeenCalledOnce();
    expect(onError.mock.calls[0]?.[0]).toMatchObject({ code: 'rateLimited', requestId: undefined });
  });
});

describe('events', () => {
  it('emits room events from server messages and keeps the maps current', async () => {
    const h = createHarness();
    await h.connect();
    const seen: string[] = [];
    h.room.on(RoomEvent.ParticipantJoined, (p) => seen.push(`joined:${p.participantId}:${p.identity}`));
    h.room.on(RoomEvent.ParticipantLeft, (e) => seen.push(`left:${e.participantId}:${e.participant?.identity}`));
    h.room.on(RoomEvent.PublicationAdded, (p) => seen.push(`added:${p.publicationId}:${p.source}`));
    h.room.on(RoomEvent.PublicationRemoved, (e) => seen.push(`removed:${e.publicationId}:${e.publication?.kind}`));
    const s = h.socket();
    s.receive({ type: 'participantJoined', participant: { participantId: 'PA3', identity: 'carol' } });
    s.receive({
      type: 'publicationAdded',
      publication: { publicationId: 'PU8', participantId: 'PA3', kind: 'video', source: 'screen', codec: 'video/VP8' },
    });
    s.receive({ type: 'publicationRemoved', publicationId: 'PU8', participantId: 'PA3' });
    s.receive({ type: 'participantLeft', participantId: 'PA3' });
    expect(seen).toEqual(['joined:PA3:carol', 'added:PU8:screen', 'removed:PU8:video', 'left:PA3:carol']);
    expect(h.room.participants.has('PA3')).toBe(false);
    expect(h.room.publications.has('PU8')).toBe(false);
  });

  it('mutes a local publication on the server and follows mutes of any publication', async () => {
    const h = createHarness();
    await h.connect();
    const stream = new FakeStream('cam', [new FakeTrack('video')]);
    const [pub] = await h.room.publish(stream as unknown as MediaStream);
    expect(pub).toBeDefined();
    await pub!.mute();
    expect(pub!.muted).toBe(true);
    expect(h.socket().sentOfType('setMuted')).toEqual([
      expect.objectContaining({ publicationId: pub!.publicationId, muted: true }),
    ]);
    await pub!.unmute();
    expect(pub!.muted).toBe(false);
    const seen: string[] = [];
    h.room.on(RoomEvent.PublicationMuted, (e) => seen.push(`muted:${e.publicationId}:${e.publication?.muted}`));
    h.room.on(RoomEvent.PublicationUnmuted, (e) => seen.push(`unmuted:${e.publicationId}:${e.publication?.muted}`));
    const s = h.socket();
    s.receive({
      type: 'publicationAdded',
      publication: { publicationId: 'PU8', participantId: 'PA3', kind: 'audio', source: 'microphone', codec: 'audio/opus' },
    });
    s.receive({ type: 'publicationMuted', publicationId: 'PU8', participantId: 'PA3' });
    s.receive({ type: 'publicationMuted', publicationId: 'PU8', participantId: 'PA3' });
    expect(h.room.publications.get('PU8')?.muted).toBe(true);
    s.receive({ type: 'publicationUnmuted', publicationId: 'PU8', participantId: 'PA3' });
    // The application mutes the local publication: its track follows.
    s.receive({ type: 'publicationMuted', publicationId: pub!.publicationId, participantId: 'PA1' });
    expect(pub!.muted).toBe(true);
    expect(seen).toEqual(['muted:PU8:true', 'unmuted:PU8:undefined', `muted:${pub!.publicationId}:true`]);
  });

  it('applies participant updates to the local and remote participants', async () => {
    const h = createHarness();
    await h.connect();
    const updated: string[] = [];
    h.room.on(RoomEvent.ParticipantUpdated, (p) => updated.push(`${p.participantId}:${p.name}:${p.metadata}`));
    const s = h.socket();
    s.receive({ type: 'participantJoined', participant: { participantId: 'PA3', identity: 'carol' } });
    s.receive({ type: 'participantUpdated', participant: { participantId: 'PA3', identity: 'carol', name: 'Carol', metadata: 'm' } });
    const local = h.room.localParticipant;
    expect(local).toBeDefined();
    s.receive({ type: 'participantUpdated', participant: { ...local!, name: 'Me' } });
    // Someone the SDK does not know (already left) is ignored.
    s.receive({ type: 'participantUpdated', participant: { participantId: 'PA9', identity: 'gone', name: 'X' } });
    expect(updated).toEqual(['PA3:Carol:m', `${local!.participantId}:Me:undefined`]);
    expect(h.room.participants.get('PA3')?.name).toBe('Carol');
    expect(h.room.localParticipant?.name).toBe('Me');
  });

  it('does not announce its own publications as added', async () => {
    const h = createHarness();
    await h.connect();
    const added = vi.fn();
    h.room.on(RoomEvent.PublicationAdded, added);
    h.socket().receive({
      type: 'publicationAdded',
      publication: { publicationId: 'PU10', participantId: 'PA2', kind: 'audio', source: 'microphone', codec: 'audio/opus' },
    });
    expect(added).not.toHaveBeenCalled();
  });

  it('isolates a throwing listener and supports off()', async () => {
    const h = createHarness();
    await h.connect();
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const after = vi.fn();
    const removed = vi.fn();
    h.room.on(RoomEvent.ParticipantJoined, () => {
      throw new Error('listener bug');
    });
    h.room.on(RoomEvent.ParticipantJoined, after);
    h.room.on(RoomEvent.ParticipantJoined, removed);
    h.room.off(RoomEvent.ParticipantJoined, removed);
    expect(() =>
      h.socket().receive({ type: 'participantJoined', participant: { participantId: 'PA3', identity: 'c' } }),
    ).not.toThrow();
    expect(after).toHaveBeenCalledOnce();
    expect(removed).not.toHaveBeenCalled();
    expect(error).toHaveBeenCalledOnce();
  });
});

describe('publish', () => {
  it('sends one offer with a sendonly transceiver per track and applies the answer', async () => {
    const h = createHarness();
    await h.connect();
    const pubs = await h.room.publish(camera(), { name: 'cam' });
    const pc = h.pcs[0];
    expect(pc?.transceivers.map((t) => t.direction)).toEqual(['sendonly', 'sendonly']);
    const [publish] = h.socket().sentOfType('publish');
    expect(publish).toEqual({
      type: 'publish',
      requestId: 2,
      sdp: 'v=0 fake-offer-1',
      tracks: [
        { mid: '0', kind: 'audio', source: 'microphone', name: 'cam' },
        { mid: '1', kind: 'video', source: 'camera', name: 'cam', rids: ['q', 'h', 'f'] },
      ],
    });
    expect(pc?.remoteDescription).toEqual({ type: 'answer', sdp: 'v=0 fake-answer' });
    expect(pubs.map((p) => [p.publicationId, p.kind, p.source])).toEqual([
      ['PU10', 'audio', 'microphone'],
      ['PU11', 'video', 'camera'],
    ]);
    expect([...h.room.localPublications.keys()]).toEqual(['PU10', 'PU11']);
  });

  it('unpublish stops sending the track', async () => {
    const h = createHarness();
    await h.connect();
    const [audio] = await h.room.publish(camera());
    await h.room.unpublish(audio?.publicationId ?? '');
    expect(h.socket().sentOfType('unpublish')).toEqual([{ type: 'unpublish', requestId: 3, publicationId: 'PU10' }]);
    expect(h.pcs[0]?.transceivers[0]?.sender.track).toBeNull();
    expect(h.room.localPublications.has('PU10')).toBe(false);
  });

  it('rolls back and rejects when the server refuses', async () => {
    const h = createHarness({
      responder: (msg) =>
        msg.type === 'publish' ? { type: 'error', code: 'permissionDenied', message: 'no publish grant' } : undefined,
    });
    await h.connect();
    await expect(h.room.publish(camera())).rejects.toMatchObject({ code: 'permissionDenied' });
    expect(h.log).toContain('sld:rollback');
  });
});

describe('subscribe and negotiation', () => {
  it('answers a server offer and delivers the track whose msid track id is the subscription id', async () => {
    const h = createHarness();
    await h.connect();
    const onTrack = vi.fn();
    h.room.on(RoomEvent.TrackSubscribed, onTrack);
    const sub = await h.room.subscribe('PU4');
    expect(sub.publication?.kind).toBe('video');
    const pc = h.pcs[0];
    const offer = offerSdp([{ mid: '0', trackId: sub.subscriptionId }]);
    h.socket().receive({ type: 'offer', sdp: offer });
    await until(() => h.socket().sentOfType('answer').length === 1);
    expect(h.socket().sentOfType('answer')[0]?.sdp).toBe(`v=0 fake-answer-for-${offer}`);
    // Another mid's track (not this subscription's) is not delivered to it.
    pc?.emitTrack('7', 'video');
    const track = pc?.emitTrack('0', 'video');
    const remote = await sub.waitForTrack();
    expect(remote.track).toBe(track);
    // A stream of its own, not the publisher's msid stream (that would carry its audio too).
    expect(remote.stream.id).not.toBe('PA1');
    expect(remote.stream.getTracks()).toEqual([track]);
    expect(sub.track).toBe(track);
    expect(onTrack).toHaveBeenCalledWith({ subscription: sub, track, stream: remote.stream });
  });

  it('matches a track that arrives before the subscribed response', async () => {
    const h = createHarness({ responder: (msg) => (msg.type === 'subscribe' ? null : undefined) });
    await h.connect();
    const pending = h.room.subscribe('PU4');
    await flush();
    h.socket().receive({ type: 'offer', sdp: offerSdp([{ mid: '0', trackId: 'SU5' }]) });
    await until(() => h.socket().sentOfType('answer').length === 1);
    h.pcs[0]?.emitTrack('0', 'video');
    h.socket().receive({ type: 'subscribed', requestId: 2, subscriptionId: 'SU5', publicationId: 'PU4' });
    const sub = await pending;
    expect(sub.track?.kind).toBe('video');
  });

  it('handles offers one at a time, in order', async () => {
    const h = createHarness({ responder: (msg) => (msg.type === 'answer' ? null : undefined) });
    await h.connect();
    await h.room.subscribe('PU4');
    const pc = h.pcs[0];
    if (pc === undefined) throw new Error('no subscriber pc');
    const slow = gate();
    pc.remoteDescriptionGate = slow.promise;
    h.socket().receive({ type: 'offer', sdp: 'o1' });
    h.socket().receive({ type: 'offer', sdp: 'o2' });
    await flush();
    // The first offer is still being applied: the second must not have started.
    expect(h.log.filter((l) => l.startsWith('srd:'))).toEqual(['srd:offer:o1']);
    slow.open();
    await until(() => h.socket().sentOfType('answer').length === 1);
    await flush();
    // The first answer is not acknowledged yet: still no second setRemoteDescription.
    expect(h.log.filter((l) => l.startsWith('srd:'))).toEqual(['srd:offer:o1']);
    const [first] = h.socket().sentOfType('answer');
    h.socket().receive({ type: 'ok', requestId: first?.requestId });
    await until(() => h.socket().sentOfType('answer').length === 2);
    const answers = h.socket().sentOfType('answer');
    h.socket().receive({ type: 'ok', requestId: answers[1]?.requestId });
    const negotiation = h.log.filter((l) => /^(srd|srd-done|createAnswer|sld|send:answer)/.test(l));
    expect(negotiation).toEqual([
      'srd:offer:o1',
      'srd-done:offer',
      'createAnswer',
      'sld:answer',
      'send:answer',
      'srd:offer:o2',
      'srd-done:offer',
      'createAnswer',
      'sld:answer',
      'send:answer',
    ]);
  });

  it('ends subscriptions of a removed publication', async () => {
    const h = createHarness();
    await h.connect();
    const sub = await h.room.subscribe('PU4');
    h.socket().receive({ type: 'publicationRemoved', publicationId: 'PU4', participantId: 'PA1' });
    expect(sub.ended).toBe(true);
    expect(h.room.subscriptions.size).toBe(0);
    await expect(sub.waitForTrack()).rejects.toBeInstanceOf(SubscriptionEndedError);
  });

  it('unsubscribe ends the subscription', async () => {
    const h = createHarness();
    await h.connect();
    const sub = await h.room.subscribe('PU4');
    await h.room.unsubscribe(sub.subscriptionId);
    expect(h.socket().sentOfType('unsubscribe')).toEqual([
      { type: 'unsubscribe', requestId: 3, subscriptionId: sub.subscriptionId },
    ]);
    expect(sub.ended).toBe(true);
  });
});

describe('trickle', () => {
  it('queues remote candidates until the remote description is set', async () => {
    const h = createHarness();
    await h.connect();
    await h.room.subscribe('PU4');
    const pc = h.pcs[0];
    h.socket().receive({
      type: 'trickle',
      target: 'subscriber',
      candidate: { candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host', sdpMid: '0' },
    });
    await flush();
    expect(pc?.addedCandidates).toEqual([]);
    h.socket().receive({ type: 'offer', sdp: 'o1' });
    await until(() => (pc?.addedCandidates.length ?? 0) === 1);
    expect(pc?.addedCandidates[0]).toEqual({ candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host', sdpMid: '0' });
    const applied = h.log.indexOf('addIceCandidate:candidate:1 1 udp 1 127.0.0.1 5000 typ host');
    expect(applied).toBeGreaterThan(h.log.indexOf('srd-done:offer'));
    // Once a description is set, candidates apply at once.
    h.socket().receive({ type: 'trickle', target: 'subscriber', candidate: { candidate: 'candidate:2', sdpMLineIndex: 0 } });
    await until(() => (pc?.addedCandidates.length ?? 0) === 2);
  });

  it('sends local candidates with their target after the description went out', async () => {
    const h = createHarness({ responder: (msg) => (msg.type === 'publish' ? null : undefined) });
    await h.connect();
    const publishing = h.room.publish(camera()).catch(() => undefined);
    const pc = h.pcs[0];
    await until(() => h.socket().sentOfType('publish').length === 1);
    pc?.emitCandidate('candidate:9 1 udp 2122260223 127.0.0.1 54321 typ host');
    expect(h.socket().sentOfType('trickle')).toEqual([
      {
        type: 'trickle',
        requestId: 3,
        target: 'publisher',
        candidate: {
          candidate: 'candidate:9 1 udp 2122260223 127.0.0.1 54321 typ host',
          sdpMid: '0',
          sdpMLineIndex: 0,
          usernameFragment: 'uf1',
        },
      },
    ]);
    void publishing;
  });

  it('holds local candidates gathered before the description was sent', async () => {
    const h = createHarness();
    await h.connect();
    await h.room.subscribe('PU4');
    const pc = h.pcs[0];
    pc?.emitCandidate('candidate:early');
    expect(h.socket().sentOfType('trickle')).toEqual([]);
    h.socket().receive({ type: 'offer', sdp: 'o1' });
    await until(() => h.socket().sentOfType('trickle').length === 1);
    const order = h.socket().sent.map((m) => m.type);
    expect(order.indexOf('answer')).toBeLessThan(order.indexOf('trickle'));
    expect(h.socket().sentOfType('trickle')[0]?.target).toBe('subscriber');
  });
});

describe('disconnect', () => {
  it('sends leave, closes both peer connections and the socket, emits disconnected once', async () => {
    const h = createHarness();
    await h.connect();
    await h.room.publish(camera());
    const sub = await h.room.subscribe('PU4');
    const disconnected = vi.fn();
    h.room.on(RoomEvent.Disconnected, disconnected);
    await h.room.disconnect();
    expect(h.socket().sent.at(-1)).toMatchObject({ type: 'leave' });
    expect(h.pcs.every((pc) => pc.closed)).toBe(true);
    expect(h.socket().readyState).toBe(3);
    expect(sub.ended).toBe(true);
    expect(disconnected).toHaveBeenCalledOnce();
    expect(disconnected).toHaveBeenCalledWith({ clientInitiated: true, code: 1000, reason: 'client left', cause: 'clientLeft' });
    await h.room.disconnect();
    expect(disconnected).toHaveBeenCalledOnce();
  });

  it('treats the server closing the socket after leave as client-initiated', async () => {
    const h = createHarness({ responder: (msg) => (msg.type === 'leave' ? null : undefined) });
    await h.connect();
    const disconnected = vi.fn();
    h.room.on(RoomEvent.Disconnected, disconnected);
    const leaving = h.room.disconnect();
    await flush();
    const leave = h.socket().sentOfType('leave')[0];
    h.socket().receive({ type: 'ok', requestId: leave?.requestId });
    h.socket().serverClose(1000, 'bye');
    await leaving;
    expect(disconnected).toHaveBeenCalledOnce();
    expect(disconnected.mock.calls[0]?.[0]).toMatchObject({ clientInitiated: true });
  });
});

describe('API conveniences', () => {
  it('subscribe with a preferred layer asks for it at once', async () => {
    const h = createHarness();
    await h.connect();
    const sub = await h.room.subscribe('PU4', { preferredLayer: 1 });
    expect(h.socket().sentOfType('setPreferredLayer').map((m) => [m.subscriptionId, m.spatial])).toEqual([[sub.subscriptionId, 1]]);
    expect(sub.preferredLayer).toEqual({ spatial: 1 });
  });

  it('emits trackUnsubscribed for a subscription whose track had arrived', async () => {
    const h = createHarness();
    await h.connect();
    const onGone = vi.fn();
    h.room.on(RoomEvent.TrackUnsubscribed, onGone);
    const sub = await h.room.subscribe('PU4');
    h.socket().receive({ type: 'offer', sdp: offerSdp([{ mid: '0', trackId: sub.subscriptionId }]) });
    await until(() => h.socket().sentOfType('answer').length === 1);
    const track = h.pcs[0]?.emitTrack('0', 'video');
    await sub.waitForTrack();
    await h.room.unsubscribe(sub.subscriptionId);
    expect(onGone).toHaveBeenCalledWith({ subscription: sub, track });
  });

  it('a local publication mutes, unmutes, replaces its track and unpublishes', async () => {
    const h = createHarness();
    await h.connect();
    const [audio, video] = await h.room.publish(camera());
    if (audio === undefined || video === undefined) throw new Error('two publications expected');
    expect(video.muted).toBe(false);
    video.mute();
    expect(video.muted).toBe(true);
    expect((video.track as unknown as FakeTrack).enabled).toBe(false);
    video.unmute();
    expect(video.muted).toBe(false);
    const next = new FakeTrack('video');
    await video.replaceTrack(next as unknown as MediaStreamTrack);
    expect(video.track).toBe(next);
    await expect(video.replaceTrack(new FakeTrack('audio') as unknown as MediaStreamTrack)).rejects.toThrow(TypeError);
    await video.unpublish();
    expect(h.socket().sentOfType('unpublish').map((m) => m.publicationId)).toEqual([video.publicationId]);
    expect(h.room.localPublications.has(video.publicationId)).toBe(false);
  });
});
