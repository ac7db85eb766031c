import { CloseCode } from './protocol.gen.js';

/**
 * When to try again after the signaling connection dropped: 0, 1, 2, 4, 8, 16, then every 30
 * seconds, each (but the immediate first) spread by ±`jitter` so that the clients of a server
 * that restarted do not all come back in the same instant.
 */
export const RECONNECT_SCHEDULE_MS: readonly number[] = [0, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000];

/** The longest wait between two attempts, jitter included. */
export const MAX_RECONNECT_DELAY_MS = 30_000;

/** Default spread of each delay: ±20 %. */
export const DEFAULT_RECONNECT_JITTER = 0.2;

/**
 * The wait before reconnection attempt `attempt` (0 = the first, right after the drop).
 * `random` returns a number in [0, 1), like `Math.random`.
 */
export function reconnectDelayMs(
  attempt: number,
  jitter: number = DEFAULT_RECONNECT_JITTER,
  random: () => number = Math.random,
): number {
  const step = Number.isFinite(attempt) ? Math.max(0, Math.floor(attempt)) : 0;
  const index = Math.min(step, RECONNECT_SCHEDULE_MS.length - 1);
  const base = RECONNECT_SCHEDULE_MS[index] ?? MAX_RECONNECT_DELAY_MS;
  if (base === 0) return 0;
  const spread = Math.min(Math.max(jitter, 0), 1);
  const factor = 1 + spread * (2 * random() - 1);
  return Math.min(MAX_RECONNECT_DELAY_MS, Math.max(0, Math.round(base * factor)));
}

/** WebSocket close codes after which reconnecting cannot help. */
export const NO_RECONNECT_CLOSE_CODES: ReadonlySet<number> = new Set<number>([
  CloseCode.Policy, // join timeout, message flood
  CloseCode.TooBig, // a message over the size limit
  CloseCode.Replaced, // another connection resumed this session
  CloseCode.Removed, // the application removed the participant or closed the room
]);
