import { ConnectionError, ConnectionErrorReason, ServerError } from './errors.js';
import { CloseCode, type ClientMessage, type RequestId, type ServerMessage } from './protocol.gen.js';

type ClientType = ClientMessage['type'];

/** Removes `K` from each member of a union separately. */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** A request as the caller writes it; the signal client fills in `requestId`. */
export type OutgoingRequest = DistributiveOmit<ClientMessage, 'requestId'>;
type OutgoingOf<T extends ClientType> = Extract<OutgoingRequest, { type: T }>;

const RESPONSE_TYPE = {
  join: 'joined',
  publish: 'published',
  subscribe: 'subscribed',
  unpublish: 'ok',
  setMuted: 'ok',
  unsubscribe: 'ok',
  answer: 'ok',
  trickle: 'ok',
  setPreferredLayer: 'ok',
  setSubscriptionPaused: 'ok',
  ping: 'ok',
  leave: 'ok',
  resume: 'resumed',
  restartIce: 'ok',
} as const satisfies Record<ClientType, ServerMessage['type']>;

/** The success response the server sends for a request of type `T`. */
export type ResponseOf<T extends ClientType> = Extract<ServerMessage, { type: (typeof RESPONSE_TYPE)[T] }>;

const EVENT_TYPES = [
  'offer',
  'trickle',
  'participantJoined',
  'participantUpdated',
  'participantLeft',
  'publicationAdded',
  'publicationRemoved',
  'publicationMuted',
  'publicationUnmuted',
  'layersChanged',
  'publisherLayers',
  'activeSpeakers',
  'publicationStalled',
  'publicationResumed',
  'dataRejected',
  'subscriptionEnded',
] as const;

/** A server message that is not a response to a request. */
export type ServerEvent = Extract<ServerMessage, { type: (typeof EVENT_TYPES)[number] }>;

export interface CloseInfo {
  code: number;
  reason: string;
  clientInitiated: boolean;
}

export interface SignalHandlers {
  /** An event (a server message without `requestId`). */
  onEvent(event: ServerEvent): void;
  /** An `error` the server sent without a `requestId`: it belongs to no request. */
  onUnsolicitedError(error: ServerError): void;
  /** The socket closed after it had opened; called once. */
  onClose(info: CloseInfo): void;
}

interface Pending {
  expected: ServerMessage['type'];
  resolve: (msg: ServerMessage) => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

const WS_OPEN = 1;

/**
 * The WebSocket half of a room session: opens the socket, correlates requests with their
 * responses by `requestId` (each with its own timeout) and hands events to the room.
 */
export class SignalClient {
  private socket: WebSocket | undefined;
  private readonly pending = new Map<RequestId, Pending>();
  private nextRequestId: RequestId = 1;
  private closing = false;
  private closed = false;
  private heartbeat: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly webSocketFactory: (url: string) => WebSocket,
    private readonly timeoutMs: number,
    private readonly handlers: SignalHandlers,
  ) {}

  /** Opens the socket; resolves once it is open, or fails after `timeoutMs`. */
  connect(url: string, timeoutMs: number = this.timeoutMs): Promise<void> {
    if (this.socket !== undefined) {
      return Promise.reject(new ConnectionError(ConnectionErrorReason.InvalidState, 'already connected'));
    }
    return new Promise<void>((resolve, reject) => {
      let opened = false;
      let socket: WebSocket;
      try {
        socket = this.webSocketFactory(url);
      } catch (err) {
        reject(new ConnectionError(ConnectionErrorReason.ConnectFailed, `cannot open ${url}`, { cause: err }));
        return;
      }
      this.socket = socket;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const fail = (message: string): void => {
        clearTimeout(timer);
        this.closed = true;
        reject(new ConnectionError(ConnectionErrorReason.ConnectFailed, message));
      };
      timer = setTimeout(() => {
        fail(`no connection to ${url} within ${timeoutMs} ms`);
        socket.close();
      }, timeoutMs);
      socket.addEventListener('open', () => {
        if (this.closed) return;
        opened = true;
        clearTimeout(timer);
        resolve();
      });
      socket.addEventListener('error', () => {
        if (!opened && !this.closed) fail(`WebSocket error on ${url}`);
      });
      socket.addEventListener('close', (ev: CloseEvent) => {
        if (!opened) {
          if (!this.closed) fail(`WebSocket closed before opening (code ${ev.code})`);
          return;
        }
        this.onSocketClosed(ev.code, ev.reason);
      });
      socket.addEventListener('message', (ev: MessageEvent) => this.handleFrame(ev.data));
    });
  }

  /**
   * Sends `ping` every `intervalMs` and drops the connection (a close the client did not
   * choose, so the room reconnects) when one gets no answer within `intervalMs`: a network
   * failure closes nothing, and the browser would otherwise notice only when TCP gives up.
   */
  startHeartbeat(intervalMs: number): void {
    if (!(intervalMs > 0) || this.closed) return;
    clearTimeout(this.heartbeat);
    this.heartbeat = setTimeout(() => {
      this.request({ type: 'ping' }, intervalMs).then(
        () => this.startHeartbeat(intervalMs),
        (err: unknown) => {
          if (err instanceof ConnectionError && err.reason === ConnectionErrorReason.Timeout) {
            this.drop(CloseCode.HeartbeatTimeout, 'heartbeat: no answer to ping');
          } else if (!this.closed) {
            this.startHeartbeat(intervalMs);
          }
        },
      );
    }, intervalMs);
  }

  /** Gives the socket up as dead: like a close the server or the network caused. */
  private drop(code: number, reason: string): void {
    if (this.closing || this.closed) return;
    try {
      this.socket?.close(code, reason);
    } finally {
      this.onSocketClosed(code, reason);
    }
  }

  /** Sends a request and resolves with its success response; rejects with `ServerError` on `error`. */
  request<T extends ClientType>(request: OutgoingOf<T>, timeoutMs = this.timeoutMs): Promise<ResponseOf<T>> {
    const socket = this.socket;
    if (socket === undefined || this.closed || this.closing || socket.readyState !== WS_OPEN) {
      return Promise.reject(new ConnectionError(ConnectionErrorReason.Closed, `cannot send ${request.type}: not connected`));
    }
    const requestId = this.takeRequestId();
    const message = { ...request, requestId } as ClientMessage;
    return new Promise<ResponseOf<T>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(
          new ConnectionError(
            ConnectionErrorReason.Timeout,
            `no response to ${request.type} (requestId ${requestId}) within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      this.pending.set(requestId, {
        expected: RESPONSE_TYPE[request.type as T],
        resolve: resolve as (msg: ServerMessage) => void,
        reject,
        timer,
      });
      try {
        socket.send(JSON.stringify(message));
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(requestId);
        reject(new ConnectionError(ConnectionErrorReason.Closed, `cannot send ${request.type}`, { cause: err }));
      }
    });
  }

  /** Closes the socket; pending requests reject with `ConnectionError(Closed)`. */
  close(code: number = CloseCode.Normal, reason = ''): void {
    if (this.closing || this.closed) return;
    this.closing = true;
    const socket = this.socket;
    try {
      socket?.close(code, reason);
    } finally {
      // Do not wait for the close handshake: the session is over for the caller now.
      this.onSocketClosed(code, reason);
    }
  }

  /** Parses and dispatches one incoming frame. Never throws. */
  handleFrame(data: unknown): void {
    let msg: ServerMessage;
    try {
      if (typeof data !== 'string') throw new Error('binary frame');
      const parsed: unknown = JSON.parse(data);
      if (typeof parsed !== 'object' || parsed === null || typeof (parsed as { type?: unknown }).type !== 'string') {
        throw new Error('not a typed JSON object');
      }
      msg = parsed as ServerMessage;
    } catch (err) {
      console.error('sluice: ignoring malformed server frame', err);
      return;
    }
    if ('requestId' in msg && typeof msg.requestId === 'number') {
      this.handleResponse(msg.requestId, msg);
    } else if (msg.type === 'error') {
      this.handlers.onUnsolicitedError(new ServerError(msg.code, msg.message));
    } else if ((EVENT_TYPES as readonly string[]).includes(msg.type)) {
      this.handlers.onEvent(msg as ServerEvent);
    } else {
      console.warn(`sluice: ignoring unknown server message "${msg.type}"`);
    }
  }

  private handleResponse(requestId: RequestId, msg: ServerMessage): void {
    const pending = this.pending.get(requestId);
    if (pending === undefined) {
      console.warn(`sluice: ignoring ${msg.type} for unknown or expired requestId ${requestId}`);
      return;
    }
    this.pending.delete(requestId);
    clearTimeout(pending.timer);
    if (msg.type === 'error') {
      pending.reject(new ServerError(msg.code, msg.message, requestId));
    } else if (msg.type !== pending.expected) {
      pending.reject(
        new ConnectionError(
          ConnectionErrorReason.UnexpectedResponse,
          `expected ${pending.expected} for requestId ${requestId}, got ${msg.type}`,
        ),
      );
    } else {
      pending.resolve(msg);
    }
  }

  private onSocketClosed(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.heartbeat);
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(new ConnectionError(ConnectionErrorReason.Closed, `connection closed before requestId ${id} was answered`));
    }
    this.pending.clear();
    this.handlers.onClose({ code, reason, clientInitiated: this.closing });
  }

  private takeRequestId(): RequestId {
    const id = this.nextRequestId;
    this.nextRequestId = id >= 0xffff_ffff ? 1 : id + 1;
    return id;
  }
}
