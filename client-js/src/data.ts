/**
 * Data messages (chat, reactions, cursors): Sluice's two data channels on the publisher
 * connection, the envelope the server reads and writes (docs/protocol.md, "Data messages"),
 * and the `dataReceived` / `dataRejected` events.
 */
import { SluiceError } from './errors.js';
import type { DataRejection, ParticipantInfo } from './protocol.gen.js';
import type { RoomContext } from './context.js';
import type { Publisher } from './publisher.js';

/** Options of `room.publishData`. */
export interface DataPublishOptions {
  /**
   * `true` (the default): ordered and retransmitted until delivered. `false`: unordered and
   * never retransmitted — for state that the next message replaces (cursors, levels).
   */
  reliable?: boolean;
  /** A label the receivers get with the message (at most 128 bytes of UTF-8). */
  topic?: string;
  /** Only these identities receive the message (at most 64); everyone else in the room by default. */
  destinationIdentities?: string[];
}

/** `dataReceived`: a data message from another participant. */
export interface DataReceivedEvent {
  /** The payload: a string when it was published as one, bytes otherwise. */
  data: string | Uint8Array;
  /** The sender's participant id. */
  participantId: string;
  /** The sender's identity (from its token). */
  identity: string;
  /** The sender as the room knows it, if it does. */
  participant: ParticipantInfo | undefined;
  /** The topic the sender gave. */
  topic: string | undefined;
  /** Whether it came on the reliable channel. */
  reliable: boolean;
}

/** `dataRejected`: the server delivered some of the local participant's data messages to nobody. */
export interface DataRejectedEvent {
  /** Why (the latest refusal's reason). */
  reason: DataRejection;
  /** Messages refused since the previous `dataRejected`. */
  dropped: number;
}

/** Largest data message the server accepts by default (its `max_data_message_bytes`), envelope included. */
export const DATA_MESSAGE_MAX_BYTES = 15 * 1024;

/** A data message that cannot be sent: too large, or the room has data messages turned off. */
export class DataError extends SluiceError {}

const RELIABLE = 'sluice-reliable';
const LOSSY = 'sluice-lossy';
const VERSION = 1;

/** The version byte, the header's length (big-endian u16), the JSON header, the payload. */
function envelope(header: object, payload: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(3 + json.length + payload.length);
  out[0] = VERSION;
  out[1] = json.length >> 8;
  out[2] = json.length & 0xff;
  out.set(json, 3);
  out.set(payload, 3 + json.length);
  return out;
}

interface RecipientHeader {
  from: string;
  identity: string;
  topic?: string;
  text?: boolean;
}

/** Reads a recipient's envelope; undefined for anything else. */
export function readEnvelope(bytes: Uint8Array): { header: RecipientHeader; payload: Uint8Array } | undefined {
  if (bytes.length < 3 || bytes[0] !== VERSION) return undefined;
  const length = ((bytes[1] ?? 0) << 8) | (bytes[2] ?? 0);
  if (bytes.length < 3 + length) return undefined;
  try {
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(3, 3 + length))) as RecipientHeader;
    if (typeof header.from !== 'string' || typeof header.identity !== 'string') return undefined;
    return { header, payload: bytes.subarray(3 + length) };
  } catch {
    return undefined;
  }
}

/** Resolves once `channel` is open; rejects if it closes first. */
function opened(channel: RTCDataChannel): Promise<unknown> | undefined {
  if (channel.readyState !== 'connecting') return undefined;
  return new Promise((resolve, reject) => {
    channel.addEventListener('open', resolve, { once: true });
    channel.addEventListener('close', () => reject(new DataError('the data channel closed before it opened')), {
      once: true,
    });
  });
}

interface Channels {
  reliable: RTCDataChannel;
  lossy: RTCDataChannel;
}

/** The publisher connection's data channels: opened once per connection, used by `publishData`. */
export class DataChannels {
  private channels: Promise<Channels> | undefined;

  constructor(
    private readonly room: RoomContext,
    private readonly publisher: Publisher,
    private readonly participant: (id: string) => ParticipantInfo | undefined,
  ) {}

  /** Opens the channels (renegotiating the publisher connection) unless they are open or opening. */
  open(): Promise<Channels> {
    if (this.channels !== undefined) return this.channels;
    const opening = this.publisher.negotiateData((pc) => ({
      reliable: this.channel(pc, RELIABLE, {}),
      lossy: this.channel(pc, LOSSY, { ordered: false, maxRetransmits: 0 }),
    }));
    this.channels = opening;
    // A failed negotiation is tried again by the next call.
    opening.catch(() => {
      if (this.channels === opening) this.channels = undefined;
    });
    return opening;
  }

  /** Sends a message to the room (or the named identities); resolves once the browser has queued it. */
  async publish(data: string | Uint8Array, options: DataPublishOptions): Promise<void> {
    const text = typeof data === 'string';
    const header: { topic?: string; to?: string[]; text?: true } = {};
    if (options.topic !== undefined) header.topic = options.topic;
    if (options.destinationIdentities !== undefined) header.to = options.destinationIdentities;
    if (text) header.text = true;
    const message = envelope(header, text ? new TextEncoder().encode(data) : data);
    if (message.length > DATA_MESSAGE_MAX_BYTES) {
      throw new DataError(`data message of ${message.length} B is over the ${DATA_MESSAGE_MAX_BYTES} B limit`);
    }
    const channels = await this.open();
    const channel = channels[options.reliable === false ? 'lossy' : 'reliable'];
    await opened(channel);
    channel.send(message as Uint8Array<ArrayBuffer>);
  }

  /** Opens the channels and resolves once both are open. */
  async ready(): Promise<void> {
    const { reliable, lossy } = await this.open();
    await Promise.all([opened(reliable), opened(lossy)]);
  }

  /** Forgets the channels (their connection was replaced after a rejoin). */
  reset(): void {
    this.channels = undefined;
  }

  private channel(pc: RTCPeerConnection, label: string, init: RTCDataChannelInit): RTCDataChannel {
    const channel = pc.createDataChannel(label, init);
    channel.binaryType = 'arraybuffer';
    channel.addEventListener('message', (event: MessageEvent) => {
      if (!(event.data instanceof ArrayBuffer)) return;
      const read = readEnvelope(new Uint8Array(event.data));
      if (read === undefined) return;
      const { header, payload } = read;
      this.room.emit('dataReceived', {
        data: header.text === true ? new TextDecoder().decode(payload) : payload,
        participantId: header.from,
        identity: header.identity,
        participant: this.participant(header.from),
        topic: header.topic,
        reliable: label === RELIABLE,
      });
    });
    return channel;
  }
}
