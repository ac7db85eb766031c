/**
 * Simulcast in the SDK: publishing three encodings by rid, codec preference, asking for a layer
 * (`setPreferredLayer`), the `layersChanged` event and dynacast (`publisherLayers` → encodings'
 * `active` flags through the publisher's negotiation queue).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  ConnectionError,
  NegotiationError,
  RoomEvent,
  SIMULCAST_ENCODINGS,
  ServerError,
  type LayersChangedEvent,
} from '../src/index.js';
import { orderCodecs } from '../src/publisher.js';
import { FakeStream, FakeTrack, createHarness, flush, gate, until, type Harness } from './fakes.js';

afterEach(() => {
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

function camera(): MediaStream {
  return new FakeStream('cam', [new FakeTrack('audio'), new FakeTrack('video')]) as unknown as MediaStream;
}

function videoOnly(): MediaStream {
  return new FakeStream('cam', [new FakeTrack('video')]) as unknown as MediaStream;
}

/** Chrome-like video sender capabilities (abridged). */
const VIDEO_CODECS: RTCRtpCodec[] = [
  { mimeType: 'video/VP8', clockRate: 90000 },
  { mimeType: 'video/rtx', clockRate: 90000 },
  { mimeType: 'video/VP9', clockRate: 90000, sdpFmtpLine: 'profile-id=0' },
  { mimeType: 'video/H264', clockRate: 90000, sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f' },
  { mimeType: 'video/H264', clockRate: 90000, sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f' },
  { mimeType: 'video/H264', clockRate: 90000, sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640034' },
  { mimeType: 'video/H264', clockRate: 90000, sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f' },
  { mimeType: 'video/red', clockRate: 90000 },
  { mimeType: 'video/ulpfec', clockRate: 90000 },
];

function stubCapabilities(codecs: RTCRtpCodec[]): void {
  const getCapabilities = (kind: string) => (kind === 'video' ? { codecs, headerExtensions: [] } : null);
  vi.stubGlobal('RTCRtpSender', { getCapabilities });
  vi.stubGlobal('RTCRtpReceiver', { getCapabilities });
}

describe('simulcast publish', () => {
  it('sends camera video as three encodings q/h/f and announces their rids', async () => {
    const h = createHarness();
    await h.connect();
    await h.room.publish(camera());
    const [audio, video] = h.pcs[0]?.transceivers ?? [];
    expect(audio?.init.sendEncodings).toBeUndefined();
    expect(video?.init.sendEncodings).toEqual([
      { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
      { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
      { rid: 'f', maxBitrate: 1_500_000 },
    ]);
    expect(video?.init.direction).toBe('sendonly');
    const [publish] = h.socket().sentOfType('publish');
    expect(publish?.tracks).toEqual([
      { mid: '0', kind: 'audio', source: 'microphone' },
      { mid: '1', kind: 'video', source: 'camera', rids: ['q', 'h', 'f'] },
    ]);
    expect(SIMULCAST_ENCODINGS.map((e) => e.rid)).toEqual(['q', 'h', 'f']);
  });

  it('sends one encoding when simulcast is off, and for screens unless asked', async () => {
    const h = createHarness();
    await h.connect();
    await h.room.publish(videoOnly(), { simulcast: false });
    await h.room.publish(videoOnly(), { videoSource: 'screen' });
    await h.room.publish(videoOnly(), { videoSource: 'screen', simulcast: true });
    const tracks = h.socket().sentOfType('publish').map((m) => m.tracks[0]);
    expect(tracks.map((t) => t?.rids)).toEqual([undefined, undefined, ['q', 'h', 'f']]);
    expect(h.pcs[0]?.transceivers.map((t) => t.init.sendEncodings?.length)).toEqual([undefined, undefined, 3]);
  });

  it('does not share the encoding objects between publications', async () => {
    const h = createHarness();
    await h.connect();
    await h.room.publish(videoOnly());
    const encodings = h.pcs[0]?.transceivers[0]?.init.sendEncodings;
    expect(encodings).not.toBe(SIMULCAST_ENCODINGS);
    expect(encodings?.[0]).not.toBe(SIMULCAST_ENCODINGS[0]);
  });
});

describe('codec preference', () => {
  it('puts H.264 first, packetization-mode=1 42e01f before the other profiles, and keeps the rest', async () => {
    stubCapabilities(VIDEO_CODECS);
    const h = createHarness();
    await h.connect();
    await h.room.publish(camera(), { codec: 'h264' });
    const [audio, video] = h.pcs[0]?.transceivers ?? [];
    expect(audio?.codecPreferences).toBeUndefined();
    const order = video?.codecPreferences?.map((c) => `${c.mimeType} ${c.sdpFmtpLine ?? ''}`.trim());
    expect(order).toEqual([
      'video/H264 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f',
      'video/H264 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f',
      'video/H264 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640034',
      'video/H264 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f',
      'video/VP8',
      'video/rtx',
      'video/VP9 profile-id=0',
      'video/red',
      'video/ulpfec',
    ]);
    // Preferences are set before the offer is created.
    expect(h.log.indexOf('createOffer')).toBeGreaterThan(h.log.indexOf('addTransceiver:video:sendonly'));
  });

  it('puts VP8 first', () => {
    expect(orderCodecs(VIDEO_CODECS, 'vp8').map((c) => c.mimeType).slice(0, 3)).toEqual([
      'video/VP8',
      'video/rtx',
      'video/VP9',
    ]);
  });

  it('rejects with NegotiationError and rolls back when the browser cannot send the codec', async () => {
    stubCapabilities(VIDEO_CODECS.filter((c) => c.mimeType !== 'video/H264'));
    const h = createHarness();
    await h.connect();
    const err = await h.room.publish(camera(), { codec: 'h264' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NegotiationError);
    expect(h.socket().sentOfType('publish')).toEqual([]);
    expect(h.room.localPublications.size).toBe(0);
  });
});

async function subscribed(h: Harness, publicationId = 'PU4') {
  await h.connect();
  return h.room.subscribe(publicationId);
}

describe('setPreferredLayer', () => {
  it('sends the request and resolves on ok', async () => {
    const h = createHarness();
    const sub = await subscribed(h);
    await sub.setPreferredLayer(2);
    await sub.setPreferredLayer(0, 1);
    expect(h.socket().sentOfType('setPreferredLayer')).toEqual([
      { type: 'setPreferredLayer', requestId: 3, subscriptionId: sub.subscriptionId, spatial: 2 },
      { type: 'setPreferredLayer', requestId: 4, subscriptionId: sub.subscriptionId, spatial: 0, temporal: 1 },
    ]);
    expect(sub.preferredLayer).toEqual({ spatial: 0, temporal: 1 });
  });

  it('is also available on the room by subscription id', async () => {
    const h = createHarness();
    const sub = await subscribed(h);
    await h.room.setPreferredLayer(sub.subscriptionId, 1);
    expect(h.socket().sentOfType('setPreferredLayer')[0]).toMatchObject({ subscriptionId: sub.subscriptionId, spatial: 1 });
    expect(sub.preferredLayer).toEqual({ spatial: 1 });
  });

  it('rejects with the server error and keeps the previous preference', async () => {
    let refuse = false;
    const h = createHarness({
      responder: (msg) =>
        msg.type === 'setPreferredLayer' && refuse
          ? { type: 'error', code: 'notFound', message: 'subscription SU1 does not exist' }
          : undefined,
    });
    const sub = await subscribed(h);
    await sub.setPreferredLayer(1);
    refuse = true;
    const err = await sub.setPreferredLayer(2).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServerError);
    expect(err).toMatchObject({ code: 'notFound' });
    expect(sub.preferredLayer).toEqual({ spatial: 1 });
  });

  it('refuses invalid indexes and ended subscriptions without sending', async () => {
    const h = createHarness();
    const sub = await subscribed(h);
    await expect(sub.setPreferredLayer(-1)).rejects.toBeInstanceOf(RangeError);
    await expect(sub.setPreferredLayer(1.5)).rejects.toBeInstanceOf(RangeError);
    await expect(sub.setPreferredLayer(1, 256)).rejects.toBeInstanceOf(RangeError);
    await h.room.unsubscribe(sub.subscriptionId);
    await expect(sub.setPreferredLayer(0)).rejects.toBeInstanceOf(ConnectionError);
    expect(h.socket().sentOfType('setPreferredLayer')).toEqual([]);
  });
});

describe('layersChanged', () => {
  it('updates the subscription and emits a room event', async () => {
    const h = createHarness();
    const sub = await subscribed(h);
    const events: LayersChangedEvent[] = [];
    h.room.on(RoomEvent.LayersChanged, (e) => events.push(e));
    h.socket().receive({
      type: 'layersChanged',
      subscriptionId: sub.subscriptionId,
      target: { spatial: 2, temporal: 2 },
      reason: 'requested',
    });
    expect(sub.currentLayer).toBeUndefined();
    expect(sub.targetLayer).toEqual({ spatial: 2, temporal: 2 });
    h.socket().receive({
      type: 'layersChanged',
      subscriptionId: sub.subscriptionId,
      current: { spatial: 2, temporal: 2 },
      target: { spatial: 2, temporal: 2 },
      reason: 'switched',
    });
    expect(sub.currentLayer).toEqual({ spatial: 2, temporal: 2 });
    expect(sub.layerChangeReason).toBe('switched');
    expect(events).toEqual([
      { subscription: sub, subscriptionId: sub.subscriptionId, current: undefined, target: { spatial: 2, temporal: 2 }, reason: 'requested' },
      {
        subscription: sub,
        subscriptionId: sub.subscriptionId,
        current: { spatial: 2, temporal: 2 },
        target: { spatial: 2, temporal: 2 },
        reason: 'switched',
      },
    ]);
  });

  it('keeps an event that overtakes the subscribed response until the subscription is known', async () => {
    const h = createHarness({
      responder: (msg) => {
        if (msg.type !== 'subscribe') return undefined;
        // The server reports the layers before answering.
        queueMicrotask(() =>
          h.socket().receive({
            type: 'layersChanged',
            subscriptionId: 'SU77',
            current: { spatial: 0, temporal: 2 },
            target: { spatial: 1, temporal: 2 },
            reason: 'bandwidth',
          }),
        );
        return { type: 'subscribed', subscriptionId: 'SU77', publicationId: msg.publicationId };
      },
    });
    await h.connect();
    const onLayers = vi.fn();
    h.room.on(RoomEvent.LayersChanged, onLayers);
    const sub = await h.room.subscribe('PU4');
    expect(sub.currentLayer).toEqual({ spatial: 0, temporal: 2 });
    expect(sub.targetLayer).toEqual({ spatial: 1, temporal: 2 });
    expect(onLayers).toHaveBeenCalledOnce();
    expect(onLayers.mock.calls[0]?.[0]).toMatchObject({ subscription: sub, reason: 'bandwidth' });
  });

  it('isolates a throwing listener', async () => {
    const h = createHarness();
    const sub = await subscribed(h);
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const after = vi.fn();
    h.room.on(RoomEvent.LayersChanged, () => {
      throw new Error('listener bug');
    });
    h.room.on(RoomEvent.LayersChanged, after);
    expect(() =>
      h.socket().receive({ type: 'layersChanged', subscriptionId: sub.subscriptionId, target: { spatial: 0, temporal: 0 }, reason: 'bandwidth' }),
    ).not.toThrow();
    expect(after).toHaveBeenCalledOnce();
    expect(error).toHaveBeenCalledOnce();
    expect(sub.targetLayer).toEqual({ spatial: 0, temporal: 0 });
    expect(h.room.state).toBe('connected');
  });
});

describe('publisherLayers (dynacast)', () => {
  async function publishedCamera(h: Harness) {
    await h.connect();
    const pubs = await h.room.publish(camera());
    const video = pubs.find((p) => p.kind === 'video');
    const sender = h.pcs[0]?.transceivers[1]?.sender;
    if (video === undefined || sender === undefined) throw new Error('no video publication');
    return { publicationId: video.publicationId, sender };
  }

  it('sets active on the encodings by rid and records what was applied', async () => {
    const h = createHarness();
    const { publicationId, sender } = await publishedCamera(h);
    const applied = vi.fn();
    h.room.on(RoomEvent.PublisherLayersApplied, applied);
    h.socket().receive({
      type: 'publisherLayers',
      publicationId,
      layers: [
        { rid: 'q', active: true },
        { rid: 'h', active: false },
        { rid: 'f', active: false },
      ],
    });
    await until(() => applied.mock.calls.length === 1);
    expect(sender.setParametersCalls.map((encs) => encs.map((e) => [e.rid, e.active]))).toEqual([
      [
        ['q', true],
        ['h', false],
        ['f', false],
      ],
    ]);
    // Other encoding parameters are kept.
    expect(sender.encodings[0]).toMatchObject({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 });
    const expected = [
      { rid: 'q', active: true },
      { rid: 'h', active: false },
      { rid: 'f', active: false },
    ];
    expect(h.room.publisherLayers(publicationId)).toEqual(expected);
    expect(applied).toHaveBeenCalledWith({ publicationId, layers: expected });

    // f is needed again; a rid the sender does not have is ignored.
    h.socket().receive({
      type: 'publisherLayers',
      publicationId,
      layers: [
        { rid: 'f', active: true },
        { rid: 'x', active: false },
      ],
    });
    await until(() => applied.mock.calls.length === 2);
    expect(h.room.publisherLayers(publicationId)).toEqual([
      { rid: 'q', active: true },
      { rid: 'h', active: false },
      { rid: 'f', active: true },
    ]);
    expect(sender.setParametersCalls).toHaveLength(2);
  });

  it('does not call setParameters when nothing changes', async () => {
    const h = createHarness();
    const { publicationId, sender } = await publishedCamera(h);
    const applied = vi.fn();
    h.room.on(RoomEvent.PublisherLayersApplied, applied);
    h.socket().receive({ type: 'publisherLayers', publicationId, layers: [{ rid: 'q', active: true }] });
    await until(() => applied.mock.calls.length === 1);
    expect(sender.setParametersCalls).toEqual([]);
    expect(h.room.publisherLayers(publicationId)?.every((l) => l.active)).toBe(true);
  });

  it('applies the changes one at a time, in order, on the negotiation queue', async () => {
    const h = createHarness();
    const { publicationId, sender } = await publishedCamera(h);
    const held = gate();
    sender.setParametersGate = held.promise;
    // A publish starts while the first change is held: its offer must wait for it.
    h.socket().receive({ type: 'publisherLayers', publicationId, layers: [{ rid: 'f', active: false }] });
    await flush();
    const publishing = h.room.publish(videoOnly(), { simulcast: false });
    h.socket().receive({ type: 'publisherLayers', publicationId, layers: [{ rid: 'f', active: true }, { rid: 'h', active: false }] });
    await flush();
    const offersBefore = h.log.filter((l) => l === 'createOffer').length;
    expect(offersBefore).toBe(1);
    held.open();
    await publishing;
    await until(() => sender.setParametersCalls.length === 2);
    expect(sender.setParametersCalls.map((encs) => encs.map((e) => e.active))).toEqual([
      [true, true, false],
      [true, false, true],
    ]);
    expect(h.room.publisherLayers(publicationId)?.map((l) => l.active)).toEqual([true, false, true]);
  });

  it('merges changes that wait in the queue into one setParameters', async () => {
    const h = createHarness();
    const { publicationId, sender } = await publishedCamera(h);
    const applied = vi.fn();
    h.room.on(RoomEvent.PublisherLayersApplied, applied);
    // Hold the queue with a publish whose answer is not applied yet.
    const answer = gate();
    const pc = h.pcs[0];
    if (pc === undefined) throw new Error('no publisher');
    pc.remoteDescriptionGate = answer.promise;
    const publishing = h.room.publish(videoOnly(), { simulcast: false });
    await until(() => h.socket().sentOfType('publish').length === 2);
    for (const active of [false, true, false]) {
      h.socket().receive({ type: 'publisherLayers', publicationId, layers: [{ rid: 'f', active }] });
    }
    h.socket().receive({ type: 'publisherLayers', publicationId, layers: [{ rid: 'h', active: false }] });
    answer.open();
    await publishing;
    await until(() => applied.mock.calls.length === 1);
    await flush();
    expect(sender.setParametersCalls.map((encs) => encs.map((e) => e.active))).toEqual([[true, false, false]]);
    expect(applied).toHaveBeenCalledOnce();
  });

  it('waits for a publication that is still being published', async () => {
    const answer = gate();
    const h = createHarness();
    await h.connect();
    const publishing = h.room.publish(camera());
    // The publisher connection exists synchronously: hold the answer before it can be applied.
    const pc = h.pcs[0];
    if (pc === undefined) throw new Error('no publisher');
    pc.remoteDescriptionGate = answer.promise;
    await until(() => h.socket().sentOfType('publish').length === 1);
    // PU11 is the video publication the default reply creates.
    h.socket().receive({ type: 'publisherLayers', publicationId: 'PU11', layers: [{ rid: 'h', active: false }] });
    await flush();
    expect(pc.transceivers[1]?.sender.setParametersCalls).toEqual([]);
    answer.open();
    await publishing;
    await until(() => h.room.publisherLayers('PU11') !== undefined);
    expect(h.room.publisherLayers('PU11')?.map((l) => l.active)).toEqual([true, false, true]);
  });

  it('reports a failed setParameters through the error event', async () => {
    const h = createHarness();
    const { publicationId, sender } = await publishedCamera(h);
    sender.setParameters = async () => {
      throw new Error('InvalidStateError');
    };
    const onError = vi.fn();
    h.room.on(RoomEvent.Error, onError);
    h.socket().receive({ type: 'publisherLayers', publicationId, layers: [{ rid: 'q', active: false }] });
    await until(() => onError.mock.calls.length === 1);
    expect(onError.mock.calls[0]?.[0]).toBeInstanceOf(NegotiationError);
    expect(h.room.publisherLayers(publicationId)).toBeUndefined();
    expect(h.room.state).toBe('connected');
  });

  it('ignores publications that are not its own', async () => {
    const h = createHarness();
    await publishedCamera(h);
    const warn = vi.spyOn(console, 'warn');
    const error = vi.spyOn(console, 'error');
    h.socket().receive({ type: 'publisherLayers', publicationId: 'PU4', layers: [{ rid: 'q', active: false }] });
    await flush();
    expect(h.room.publisherLayers('PU4')).toBeUndefined();
    expect(warn).not.toHaveBeenCalled();
    expect(error).not.toHaveBeenCalled();
  });
});
