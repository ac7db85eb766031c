import type { ErrorCode, RequestId } from './protocol.gen.js';

/** Base class of every error the SDK throws or reports. */
export class SluiceError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The server answered a request with `error`; `code` is the stable machine-readable reason. */
export class ServerError extends SluiceError {
  readonly code: ErrorCode;
  readonly requestId: RequestId | undefined;

  constructor(code: ErrorCode, message: string, requestId?: RequestId) {
    super(`${code}: ${message}`);
    this.code = code;
    this.requestId = requestId;
  }
}

export const ConnectionErrorReason = {
  /** The WebSocket could not be opened. */
  ConnectFailed: 'connectFailed',
  /** A request got no response within `requestTimeoutMs`. */
  Timeout: 'timeout',
  /** The connection closed before the request was answered, or was not open. */
  Closed: 'closed',
  /** The call is not valid in the room's current state (e.g. `publish` before `connect`). */
  InvalidState: 'invalidState',
  /** The server answered with a message that does not fit the request. */
  UnexpectedResponse: 'unexpectedResponse',
} as const;
export type ConnectionErrorReason = (typeof ConnectionErrorReason)[keyof typeof ConnectionErrorReason];

/** The signaling connection failed, closed or misbehaved. */
export class ConnectionError extends SluiceError {
  readonly reason: ConnectionErrorReason;

  constructor(reason: ConnectionErrorReason, message?: string, options?: { cause?: unknown }) {
    super(message === undefined ? reason : `${reason}: ${message}`, options);
    this.reason = reason;
  }
}

/** A local WebRTC operation (offer, answer, description, candidate) failed. */
export class NegotiationError extends SluiceError {}

/** A subscription ended (unsubscribed, publication removed, room left) before its track arrived. */
export class SubscriptionEndedError extends SluiceError {
  constructor(readonly subscriptionId: string) {
    super(`subscription ${subscriptionId} ended before its track arrived`);
  }
}
