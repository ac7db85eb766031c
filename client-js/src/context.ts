/**
 * What the parts of a `Room` (its publisher, subscriber and resume logic) use of the room: the
 * current signaling client, its state, its events and error reporting. Internal to the SDK.
 */
import { SluiceError } from './errors.js';
import type { RoomEvents, RoomState } from './events.js';
import type { Peer } from './peer.js';
import type { PeerRole } from './protocol.gen.js';
import type { SignalClient } from './signal.js';

export interface RoomContext {
  /** The signaling client of the current connection (a reconnect replaces it). */
  signal(): SignalClient;
  /** The room's state now (a call, so TypeScript does not narrow it across awaits). */
  state(): RoomState;
  emit<K extends keyof RoomEvents>(event: K, ...args: Parameters<RoomEvents[K]>): void;
  /** Reports a failure that belongs to no call (`error` event, or the console without listeners). */
  reportError(error: SluiceError): void;
  /** Throws `ConnectionError` (`invalidState`) unless the room is connected. */
  assertConnected(operation: string): void;
  /** A new publisher or subscriber connection whose local candidates go to the server. */
  newPeer(target: PeerRole): Peer;
}

export function asSluiceError(err: unknown): SluiceError {
  return err instanceof SluiceError ? err : new SluiceError(String(err), { cause: err });
}
