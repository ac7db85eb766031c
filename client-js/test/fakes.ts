/**
 * In-memory stand-ins for WebSocket and RTCPeerConnection, plus a scripted server, so the SDK
 * runs under Node without a browser.
 */
import { Room, type RoomOptions } from '../src/index.js';
import type { ClientMessage, ServerMessage } from '../src/protocol.gen.js';

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
/** A response without its requestId: the fake server fills it in. */
export type Reply = DistributiveOmit<ServerMessage, 'requestId'>;

export class FakeWebSocket extends EventTarget {
  readyState = 0;
  readonly sent: ClientMessage[] = [];
  closeCalls: { code: number | undefined; reason: string | undefined }[] = [];
  onSend: ((msg: ClientMessage) => void) | undefined;

  constructor(readonly url: string) {
    super();
  }

  /** The server accepts the connection. */
  open(): void {
    this.readyState = 1;
    this.dispatchEvent(new Event('open'));
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    const msg = JSON.parse(data) as ClientMessage;
    this.sent.push(msg);
    this.onSend?.(msg);
  }

  close(code?: number, reason?: string): void {
    this.closeCalls.push({ code, reason });
    this.serverClose(code ?? 1005, reason ?? '');
  }

  /** The connection drops or the server closes it. */
  serverClose(code = 1006, reason = ''): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.dispatchEvent(Object.assign(new Event('close'), { code, reason }));
  }

  /** A frame from the server: an object is JSON-encoded, a string sent as is. */
  receive(msg: unknown): void {
    const data = typeof msg === 'string' ? msg : JSON.stringify(msg);
    this.dispatchEvent(Object.assign(new Event('message'), { data }));
  }

  sentOfType<T extends ClientMessage['type']>(type: T): Extract<ClientMessage, { type: T }>[] {
    return this.sent.filter((m): m is Extract<ClientMessage, { type: T }> => m.type === type);
  }
}

export class FakeTrack {
  readonly id: string;
  enabled = true;
  constructor(readonly kind: 'audio' | 'video') {
    this.id = `${kind}-${Math.random().toString(36).slice(2, 8)}`;
  }
}

/** A server offer whose media sections carry `a=mid` and `a=msid` (stream, track) lines. */
export function offerSdp(sections: { mid: string; trackId: string; streamId?: string }[], tag = 'offer'): string {
  const lines = ['v=0', `s=${tag}`];
  for (const { mid, trackId, streamId = 'PA1' } of sections) {
    lines.push('m=video 9 UDP/TLS/RTP/SAVPF 96', `a=mid:${mid}`, `a=msid:${streamId} ${trackId}`);
  }
  return `${lines.join('\r\n')}\r\n`;
}

export class FakeStream {
  constructor(
    readonly id: string,
    private readonly tracks: FakeTrack[] = [],
  ) {}
  getTracks(): FakeTrack[] {
    return this.tracks;
  }
}

/** `new MediaStream(tracks)` where the runtime has none (node). */
export class FakeMediaStream extends FakeStream {
  private static next = 0;
  constructor(tracks: FakeTrack[] = []) {
    super(`stream-${++FakeMediaStream.next}`, tracks);
  }
}
if (!('MediaStream' in globalThis)) Object.assign(globalThis, { MediaStream: FakeMediaStream });

export class FakeSender {
  track: FakeTrack | null;
  encodings: RTCRtpEncodingParameters[];
  /** Every setParameters call, with a copy of the encodings it set. */
  readonly setParametersCalls: RTCRtpEncodingParameters[][] = [];
  /** Set to hold the next setParameters until the gate opens. */
  setParametersGate: Promise<void> | undefined;
  private transaction = 0;
  constructor(track: FakeTrack, encodings: RTCRtpEncodingParameters[] = [{}]) {
    this.track = track;
    this.encodings = encodings.map((e) => ({ active: true, ...e }));
  }
  async replaceTrack(track: FakeTrack | null): Promise<void> {
    this.track = track;
  }
  getParameters(): RTCRtpSendParameters {
    this.transaction++;
    return {
      transactionId: String(this.transaction),
      encodings: this.encodings.map((e) => ({ ...e })),
      codecs: [],
      headerExtensions: [],
      rtcp: {},
    };
  }
  async setParameters(params: RTCRtpSendParameters): Promise<void> {
    if (params.transactionId !== String(this.transaction)) throw new Error('InvalidModificationError: stale transactionId');
    const held = this.setParametersGate;
    this.setParametersGate = undefined;
    if (held !== undefined) await held;
    this.setParametersCalls.push(params.encodings.map((e) => ({ ...e })));
    this.encodings = params.encodings.map((e) => ({ ...e }));
  }
}

export class FakeTransceiver {
  mid: string | null = null;
  readonly sender: FakeSender;
  codecPreferences: RTCRtpCodec[] | undefined;
  constructor(
    track: FakeTrack,
    readonly direction: string,
    readonly init: RTCRtpTransceiverInit = {},
  ) {
    this.sender = new FakeSender(track, init.sendEncodings);
  }
  setCodecPreferences(codecs: RTCRtpCodec[]): void {
    this.codecPreferences = codecs;
  }
}

export class FakeReceiver {
  async getStats(): Promise<Map<string, unknown>> {
    return new Map();
  }
}

/** A promise with its resolve function, to hold an operation until a test releases it. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

export class FakePeerConnection extends EventTarget {
  localDescription: RTCSessionDescriptionInit | null = null;
  remoteDescription: RTCSessionDescriptionInit | null = null;
  signalingState: RTCSignalingState = 'stable';
  closed = false;
  readonly transceivers: FakeTransceiver[] = [];
  readonly addedCandidates: RTCIceCandidateInit[] = [];
  /** Every operation in call order, e.g. `srd:offer:…`, `createAnswer`, `sld:answer`. */
  readonly log: string[];
  /** Set to hold the next setRemoteDescription until the gate opens. */
  remoteDescriptionGate: Promise<void> | undefined;
  private counter = 0;

  constructor(
    readonly config: RTCConfiguration,
    log: string[],
  ) {
    super();
    this.log = log;
  }

  addTransceiver(track: FakeTrack, init: RTCRtpTransceiverInit): FakeTransceiver {
    const transceiver = new FakeTransceiver(track, init.direction ?? 'sendrecv', init);
    this.transceivers.push(transceiver);
    this.log.push(`addTransceiver:${track.kind}:${transceiver.direction}`);
    return transceiver;
  }

  removeTrack(): void {}

  readonly dataChannels: FakeDataChannel[] = [];

  createDataChannel(label: string, init: RTCDataChannelInit): FakeDataChannel {
    const channel = new FakeDataChannel(label, init);
    this.dataChannels.push(channel);
    this.log.push(`createDataChannel:${label}`);
    return channel;
  }

  async createOffer(options?: RTCOfferOptions): Promise<RTCSessionDescriptionInit> {
    this.log.push(options?.iceRestart === true ? 'createOffer:iceRestart' : 'createOffer');
    return { type: 'offer', sdp: `v=0 fake-offer-${++this.counter}` };
  }

  async createAnswer(): Promise<RTCSessionDescriptionInit> {
    this.log.push('createAnswer');
    return { type: 'answer', sdp: `v=0 fake-answer-for-${this.remoteDescription?.sdp ?? ''}` };
  }

  async setLocalDescription(desc: RTCSessionDescriptionInit): Promise<void> {
    this.log.push(`sld:${desc.type}`);
    if (desc.type === 'rollback') {
      this.signalingState = 'stable';
      return;
    }
    this.localDescription = desc;
    this.transceivers.forEach((t, i) => {
      t.mid ??= String(i);
    });
    this.signalingState = desc.type === 'offer' ? 'have-local-offer' : 'stable';
  }

  async setRemoteDescription(desc: RTCSessionDescriptionInit): Promise<void> {
    this.log.push(`srd:${desc.type}:${desc.sdp ?? ''}`);
    const held = this.remoteDescriptionGate;
    this.remoteDescriptionGate = undefined;
    if (held !== undefined) await held;
    this.remoteDescription = desc;
    this.signalingState = desc.type === 'offer' ? 'have-remote-offer' : 'stable';
    this.log.push(`srd-done:${desc.type}`);
  }

  async addIceCandidate(candidate: RTCIceCandidateInit): Promise<void> {
    this.log.push(`addIceCandidate:${candidate.candidate ?? ''}`);
    this.addedCandidates.push(candidate);
  }

  close(): void {
    this.closed = true;
    this.signalingState = 'closed';
  }

  /** The browser gathered a local candidate. */
  emitCandidate(candidate: string, sdpMid = '0'): void {
    const init = { candidate, sdpMid, sdpMLineIndex: 0, usernameFragment: 'uf1' };
    this.dispatchEvent(Object.assign(new Event('icecandidate'), { candidate: { ...init, toJSON: () => init } }));
  }

  /** A remote track arrived on the transceiver `mid`, in the publisher's msid stream. */
  emitTrack(mid: string, kind: 'audio' | 'video', streamId = 'PA1'): FakeTrack {
    const track = new FakeTrack(kind);
    const stream = new FakeStream(streamId, [track]);
    this.dispatchEvent(
      Object.assign(new Event('track'), { track, streams: [stream], receiver: new FakeReceiver(), transceiver: { mid } }),
    );
    return track;
  }
}

/** An RTCDataChannel that records what is sent and opens when told. */
export class FakeDataChannel extends EventTarget {
  readyState: RTCDataChannelState = 'connecting';
  binaryType = 'blob';
  readonly sent: Uint8Array[] = [];

  constructor(
    readonly label: string,
    readonly init: RTCDataChannelInit,
  ) {
    super();
  }

  open(): void {
    this.readyState = 'open';
    this.dispatchEvent(new Event('open'));
  }

  send(data: Uint8Array): void {
    if (this.readyState !== 'open') throw new Error('InvalidStateError: not open');
    this.sent.push(data);
  }

  /** A message from the server. */
  receive(data: Uint8Array): void {
    const buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
    this.dispatchEvent(Object.assign(new Event('message'), { data: buffer }));
  }
}

/** Answers each request the default way unless `reply` returns something else (null: no answer). */
export type Responder = (msg: ClientMessage) => Reply | null | undefined;

export interface Harness {
  room: Room;
  /** The socket of the last `connect`. */
  socket: () => FakeWebSocket;
  /** Every socket opened, in order. */
  sockets: FakeWebSocket[];
  /** The peer connections in creation order. */
  pcs: FakePeerConnection[];
  /** The operations of all peer connections in call order. */
  log: string[];
  /** Connects and joins with a default `joined`. */
  connect: () => Promise<void>;
}

export const JOINED: Reply = {
  type: 'joined',
  room: 'demo',
  participant: { participantId: 'PA2', identity: 'alice' },
  participants: [{ participantId: 'PA1', identity: 'bob' }],
  publications: [
    { publicationId: 'PU1', participantId: 'PA1', kind: 'audio', source: 'microphone', codec: 'audio/opus' },
    { publicationId: 'PU4', participantId: 'PA1', kind: 'video', source: 'camera', codec: 'video/VP8' },
  ],
  resumeToken: '00112233445566778899aabbccddeeff',
};

let nextSubscription = 1;

export function defaultReply(msg: ClientMessage): Reply {
  switch (msg.type) {
    case 'join':
      return JOINED;
    case 'publish':
      return {
        type: 'published',
        sdp: 'v=0 fake-answer',
        publications: msg.tracks.map((t, i) => ({
          publicationId: `PU${10 + i}`,
          participantId: 'PA2',
          kind: t.kind,
          source: t.source,
          codec: t.kind === 'audio' ? 'audio/opus' : 'video/VP8',
        })),
      };
    case 'subscribe':
      return { type: 'subscribed', subscriptionId: `SU${nextSubscription++}`, publicationId: msg.publicationId };
    case 'resume': {
      const { resumeToken: _token, ...joined } = JOINED as Extract<Reply, { type: 'joined' }>;
      return { ...joined, type: 'resumed', subscriptions: [] };
    }
    default:
      return { type: 'ok' };
  }
}

export function createHarness(
  options: {
    responder?: Responder;
    room?: RoomOptions;
    /** Socket number `n` (0 = the first), to `url`, fails to open when this returns true. */
    refuseSocket?: (n: number, url: string) => boolean;
  } = {},
): Harness {
  let current: FakeWebSocket | undefined;
  const sockets: FakeWebSocket[] = [];
  const pcs: FakePeerConnection[] = [];
  const log: string[] = [];
  const room = new Room({
    requestTimeoutMs: 5_000,
    ...options.room,
    webSocketFactory: (url) => {
      const socket = new FakeWebSocket(url);
      socket.onSend = (msg) => {
        log.push(`send:${msg.type}`);
        const custom = options.responder?.(msg);
        if (custom === null) return;
        const reply = custom ?? defaultReply(msg);
        queueMicrotask(() => socket.receive({ ...reply, requestId: msg.requestId }));
      };
      if (options.refuseSocket?.(sockets.length, url) === true) {
        queueMicrotask(() => socket.serverClose(1006));
      } else {
        queueMicrotask(() => socket.open());
      }
      sockets.push(socket);
      current = socket;
      return socket as unknown as WebSocket;
    },
    peerConnectionFactory: (config) => {
      const pc = new FakePeerConnection(config, log);
      pcs.push(pc);
      return pc as unknown as RTCPeerConnection;
    },
  });
  return {
    room,
    pcs,
    log,
    sockets,
    socket: () => {
      if (current === undefined) throw new Error('no socket yet');
      return current;
    },
    connect: async () => {
      await room.connect('ws://sfu.test/ws', 'token-1');
    },
  };
}

/** Lets queued microtasks and already-due macrotasks run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Polls `condition` until it holds or `timeoutMs` passes. */
export async function until(condition: () => boolean, timeoutMs = 1_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
