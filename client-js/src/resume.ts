/**
 * Reconnection: after the signaling connection drops, retry with backoff until the server
 * resumes the session (or, when it forgot it, the SDK joined again, republished and
 * resubscribed), then bring the room's view in line with the server's.
 */
import { type RoomContext, asSluiceError } from './context.js';
import { ServerError } from './errors.js';
import { DisconnectCause, type DisconnectedEvent, RoomState } from './events.js';
import type { ParticipantInfo, PublicationInfo, ServerMessage } from './protocol.gen.js';
import type { Publisher } from './publisher.js';
import { reconnectDelayMs } from './reconnect.js';
import type { ConnectOptions } from './room.js';
import type { CloseInfo, SignalClient } from './signal.js';
import type { Subscriber } from './subscriber.js';

/** Where and how the session was joined, to reconnect. */
export interface Session {
  url: string;
  token: string;
  options: ConnectOptions;
  resumeToken: string;
  /** In a cluster: the other nodes' signaling URLs, in the order to try them (from the server). */
  fallbackUrls: string[];
}

/**
 * Where reconnection attempt `attempt` (1 = the first) goes, in order: always the session's
 * own node first, so a client whose network failed for a while resumes there; from the second
 * attempt on, when that fails, the next fallback node in turn. A node that died refuses at
 * once, so its clients reach a fallback one backoff step after the drop.
 */
export function reconnectTargets(session: Session, attempt: number): string[] {
  const fallbacks = session.fallbackUrls.filter((url) => url !== session.url);
  if (attempt < 2 || fallbacks.length === 0) return [session.url];
  const next = fallbacks[(Math.floor(attempt) - 2) % fallbacks.length];
  return next === undefined ? [session.url] : [session.url, next];
}

/** How long the own node may take to accept before a fallback is tried in the same attempt. */
export const OWN_NODE_CONNECT_MS = 1_500;

/** What reconnecting uses of the room beyond its context. */
export interface ResumeHost extends RoomContext {
  readonly publisher: Publisher;
  readonly subscriber: Subscriber;
  /** The other participants, by participant id. */
  readonly participants: Map<string, ParticipantInfo>;
  /** The other participants' publications, by publication id. */
  readonly publications: Map<string, PublicationInfo>;
  /** The local participant, once joined. */
  local(): ParticipantInfo | undefined;
  setState(state: RoomState): void;
  /** Opens a new signaling client and makes it the room's current one. */
  replaceSignal(): SignalClient;
  /** Takes the room name and the local participant of a `joined` response. */
  joined(room: string, participant: ParticipantInfo): void;
  /** A publication ended: forget it, end its subscriptions, emit `publicationRemoved`. */
  removePublication(publicationId: string, participantId: string): void;
  /** Ends the session. */
  teardown(event: DisconnectedEvent): void;
}

/** Reconnects one room's session; `session` is set once the room joined. */
export class Resumer {
  session: Session | undefined;
  /** A resume happened: later membership events may repeat what its room state showed. */
  resumedOnce = false;
  /** Cancels the wait before the next reconnection attempt. */
  private cancelWait: (() => void) | undefined;

  constructor(
    private readonly room: ResumeHost,
    private readonly timeoutMs: number,
    private readonly jitter: number,
  ) {}

  /** Ends the wait before the next attempt (the session ended meanwhile). */
  cancel(): void {
    this.cancelWait?.();
    this.cancelWait = undefined;
  }

  /**
   * After an unexpected close: retries with backoff until the session is resumed (or rejoined)
   * or `timeoutMs` has passed. Media keeps flowing on the peer connections meanwhile when only
   * the WebSocket dropped.
   */
  async reconnect(dropped: CloseInfo): Promise<void> {
    const { room, session } = this;
    if (session === undefined) return;
    const startedAt = Date.now();
    room.setState(RoomState.Reconnecting);
    room.emit('reconnecting', { code: dropped.code, reason: dropped.reason });
    let attempts = 0;
    let lastError: unknown;
    while (room.state() === RoomState.Reconnecting) {
      const delay = reconnectDelayMs(attempts, this.jitter);
      if (Date.now() - startedAt + delay > this.timeoutMs) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.cancelWait = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.cancelWait = undefined;
      if (room.state() !== RoomState.Reconnecting) return;
      attempts += 1;
      const targets = reconnectTargets(session, attempts);
      let open: { signal: SignalClient; url: string } | undefined;
      for (const url of targets) {
        const signal = room.replaceSignal();
        try {
          await signal.connect(url, targets.length > 1 && url === session.url ? OWN_NODE_CONNECT_MS : undefined);
          open = { signal, url };
          break;
        } catch (err) {
          lastError = err;
          if (room.signal() === signal) signal.close();
          if (room.state() !== RoomState.Reconnecting) return;
        }
      }
      if (open === undefined) continue;
      const { signal, url } = open;
      const elsewhere = url !== session.url;
      try {
        const resumed = await this.resumeOrRejoin(signal, session, elsewhere);
        if (room.signal() !== signal || room.state() !== RoomState.Connected) return;
        // Later drops go first to the node that took the session.
        if (this.session !== undefined) this.session = { ...this.session, url };
        room.emit('reconnected', { resumed, attempts, durationMs: Date.now() - startedAt, url });
        return;
      } catch (err) {
        lastError = err;
        if (room.signal() === signal) signal.close();
        if (room.state() === RoomState.Disconnected) return;
        if (room.state() === RoomState.Connected) {
          // It broke again after it was back: the new close starts a new round.
          return;
        }
        // The own node refusing the token ends it; another node may only be unreachable for it.
        const refused = err instanceof ServerError && (err.code === 'unauthorized' || err.code === 'permissionDenied');
        if (refused && !elsewhere) break;
      }
    }
    if (room.state() !== RoomState.Reconnecting) return;
    const why = lastError instanceof Error ? `: ${lastError.message}` : '';
    room.teardown({
      clientInitiated: false,
      code: dropped.code,
      reason: `reconnect gave up after ${attempts} attempts in ${Date.now() - startedAt} ms${why}`,
      cause: DisconnectCause.ReconnectFailed,
    });
  }

  /**
   * One attempt on an open socket: `resume`, or a full rejoin when the server refuses it.
   * `elsewhere`: the socket is to another node than the session's.
   */
  private async resumeOrRejoin(signal: SignalClient, session: Session, elsewhere: boolean): Promise<boolean> {
    const participantId = this.room.local()?.participantId;
    let resumed: Extract<ServerMessage, { type: 'resumed' }> | undefined;
    if (participantId !== undefined) {
      try {
        resumed = await signal.request({ type: 'resume', participantId, resumeToken: session.resumeToken });
      } catch (err) {
        if (!(err instanceof ServerError && err.code === 'resumeFailed')) throw err;
      }
    }
    if (resumed !== undefined) {
      this.resumedOnce = true;
      this.session = { ...session, fallbackUrls: resumed.fallbackUrls ?? session.fallbackUrls };
      this.reconcile(resumed.participants, resumed.publications, resumed.subscriptions);
      this.room.setState(RoomState.Connected);
      await this.restartIce(signal);
      return true;
    }
    await this.rejoin(signal, session, elsewhere);
    return false;
  }

  /**
   * Brings the room's view in line with the server's after time away, emitting the events the
   * missed ones would have caused.
   */
  private reconcile(
    participants: ParticipantInfo[],
    publications: PublicationInfo[],
    subscriptions: { subscriptionId: string; publicationId: string }[] | undefined,
  ): void {
    const { room } = this;
    const self = room.local()?.participantId;
    const present = new Set(publications.map((p) => p.publicationId));
    for (const [id, publication] of [...room.publications, ...room.publisher.publications]) {
      if (!present.has(id)) room.removePublication(id, publication.participantId);
    }
    const here = new Map(participants.filter((p) => p.participantId !== self).map((p) => [p.participantId, p]));
    for (const [id, participant] of [...room.participants]) {
      if (here.has(id)) continue;
      room.participants.delete(id);
      room.emit('participantLeft', { participantId: id, participant });
    }
    for (const [id, participant] of here) {
      if (room.participants.has(id)) continue;
      room.participants.set(id, participant);
      room.emit('participantJoined', participant);
    }
    for (const publication of publications) {
      if (publication.participantId === self || room.publications.has(publication.publicationId)) continue;
      room.publications.set(publication.publicationId, publication);
      room.emit('publicationAdded', publication);
    }
    if (subscriptions !== undefined) room.subscriber.keepOnly(new Set(subscriptions.map((s) => s.subscriptionId)));
  }

  /**
   * ICE-restarts both connections after a resume, so they recover if the network under them
   * changed too: the publisher with an `iceRestart` offer (`publish` without tracks), the
   * subscriber by asking the server (`restartIce`; its new offer arrives as an event).
   */
  private async restartIce(signal: SignalClient): Promise<void> {
    const steps: Promise<unknown>[] = [];
    const publisher = this.room.publisher.restartIce(signal);
    if (publisher !== undefined) steps.push(publisher);
    if (this.room.subscriber.negotiated) steps.push(signal.request({ type: 'restartIce' }));
    const results = await Promise.allSettled(steps);
    for (const result of results) {
      if (result.status === 'rejected' && this.room.signal() === signal) {
        this.room.reportError(asSluiceError(result.reason));
      }
    }
  }

  /**
   * The server forgot the session: join again with the same token, publish the local tracks
   * again and subscribe again to what is still published. Both peer connections start afresh.
   * On another node (`elsewhere`) the ids name other things (each node numbers its own), so
   * the room's view starts empty: everyone there is announced anew and nothing is resubscribed
   * by id; the application subscribes to the `publicationAdded` it gets, as on a first join.
   */
  private async rejoin(signal: SignalClient, session: Session, elsewhere: boolean): Promise<void> {
    const { room } = this;
    const calls = room.publisher.publishCalls();
    const wanted = elsewhere ? [] : [...room.subscriber.subscriptions.values()].map((s) => s.publicationId);
    const joined = await signal.request(
      session.options.room === undefined
        ? { type: 'join', token: session.token }
        : { type: 'join', token: session.token, room: session.options.room },
    );
    room.subscriber.reset();
    room.publisher.reset();
    this.session = {
      ...session,
      resumeToken: joined.resumeToken,
      fallbackUrls: joined.fallbackUrls ?? session.fallbackUrls,
    };
    if (elsewhere) this.reconcile([], [], undefined);
    room.joined(joined.room, joined.participant);
    this.reconcile(joined.participants, joined.publications, undefined);
    room.setState(RoomState.Connected);
    for (const [call, tracks] of calls) {
      try {
        await room.publisher.publish(call.stream, tracks, call.options);
      } catch (err) {
        if (room.signal() !== signal) throw err;
        room.reportError(asSluiceError(err));
      }
    }
    for (const publicationId of wanted) {
      if (!room.publications.has(publicationId)) continue;
      try {
        await room.subscriber.subscribe(publicationId, {});
      } catch (err) {
        if (room.signal() !== signal) throw err;
        room.reportError(asSluiceError(err));
      }
    }
  }
}
