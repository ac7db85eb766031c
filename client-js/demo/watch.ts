/**
 * The viewer page served by `sluice` at `/watch/<room>`: plays a room's streams (RTMP ingest or
 * browser publishers) with sound, and shows how far behind live the picture is.
 *
 * By default it is a plain WHEP player (`POST /whep/<room>`, see whep.ts), so players and the
 * docs can point at the same room URL: `?token=…` with canSubscribe (demo mode plays without one
 * from this machine), `&layer=q|h|f` caps the video. The server's room session follows the room
 * (the next publisher plays on the same tracks), so the page asks again only when its session
 * fails. A stream that sends nothing for a while shows as stalled (read from the receiver's
 * counters). `?sdk` makes it an @sluice/client page instead (`?token=…`, else demo mode's
 * `/dev/token`): it subscribes to each publication and also shows the server's B-frame warning
 * and stall events. (`?whep`, the default, is still accepted.)
 * For tests and the console, the SDK is `window.Sluice` and the page's state `window.sluiceWatch`.
 */
import * as Sluice from '../src/index.js';
import { type PublicationInfo, Room, RoomEvent, type Subscription } from '../src/index.js';
import { WhepError, type WhepSession, playWhep } from './whep.js';

/** Seconds between the NTP epoch (1900) and the Unix epoch (1970). */
const NTP_UNIX_OFFSET_MS = 2_208_988_800_000;
const STATS_INTERVAL_MS = 1000;
/** How soon the WHEP player asks again after its session failed or was refused. */
const WHEP_RETRY_MS = 2000;
/** A WHEP stream that received no packet for this long shows as stalled. */
const WHEP_STALL_MS = 1500;

interface Playing {
  publication: PublicationInfo;
  subscription: Subscription;
}

interface WatchHandle {
  room: Room | undefined;
  /** Subscriptions by publication id. */
  playing: Map<string, Playing>;
  /** The latest estimate, in milliseconds, once there is one. */
  delayMs: number | undefined;
  errors: string[];
  /** A warning shown about the stream (e.g. B-frames), if any. */
  warning: string | undefined;
  /** The WHEP session (the default mode), while one plays. */
  whep: WhepSession | undefined;
  /** WHEP: the packets received so far and when that count last grew (stall detection). */
  whepPackets: { count: number; at: number } | undefined;
}

declare global {
  interface Window {
    Sluice: typeof Sluice;
    sluiceWatch: WatchHandle;
  }
}

function element<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`watch page is missing #${id}`);
  return el as T;
}

const video = element<HTMLVideoElement>('video');
const audio = element<HTMLAudioElement>('audio');
const statusText = element<HTMLSpanElement>('status');
const delayText = element<HTMLSpanElement>('delay');
const errorBox = element<HTMLDivElement>('error');
const warningBox = element<HTMLDivElement>('warning');
const soundButton = element<HTMLButtonElement>('sound');

const watch: WatchHandle = {
  room: undefined,
  playing: new Map(),
  delayMs: undefined,
  errors: [],
  warning: undefined,
  whep: undefined,
  whepPackets: undefined,
};
window.Sluice = Sluice;
window.sluiceWatch = watch;

function showError(context: string, err: unknown): void {
  const text = `${context}: ${err instanceof Error ? err.message : String(err)}`;
  console.error(text, err);
  watch.errors.push(text);
  errorBox.textContent = watch.errors.slice(-3).join('\n');
  errorBox.hidden = false;
}

function roomFromPath(): string {
  const match = /^\/watch\/(.+)$/.exec(location.pathname);
  return match?.[1] !== undefined ? decodeURIComponent(match[1]) : 'demo';
}

async function fetchToken(room: string, identity: string): Promise<string> {
  const fromUrl = new URLSearchParams(location.search).get('token');
  if (fromUrl !== null && fromUrl !== '') return fromUrl;
  const response = await fetch(`/dev/token?${new URLSearchParams({ room, identity }).toString()}`);
  if (!response.ok) {
    throw new Error(`no token: /dev/token answered ${response.status} (it exists only in demo mode; add ?token=)`);
  }
  const body = (await response.json()) as { token?: unknown };
  if (typeof body.token !== 'string') throw new Error('no token in the /dev/token response');
  return body.token;
}

function play(media: HTMLMediaElement): void {
  media.play().catch((err: unknown) => {
    if (err instanceof DOMException && err.name === 'NotAllowedError') {
      // Autoplay with sound was blocked: one click turns it on.
      soundButton.hidden = false;
    } else if (!(err instanceof DOMException && err.name === 'AbortError')) {
      showError('playback', err);
    }
  });
}

soundButton.addEventListener('click', () => {
  soundButton.hidden = true;
  play(audio);
  play(video);
});

function showWarning(publication: PublicationInfo): void {
  // The server names the video publication after what it saw in the stream.
  if (publication.kind !== 'video' || publication.name?.includes('B-frames') !== true) return;
  watch.warning =
    'This stream uses B-frames, which browsers may play with stutter. ' +
    'Publisher: set B-frames to 0 (OBS: x264 options "bframes=0"; ffmpeg: -bf 0).';
  warningBox.textContent = watch.warning;
  warningBox.hidden = false;
}

async function subscribe(room: Room, publication: PublicationInfo): Promise<void> {
  if (watch.playing.has(publication.publicationId)) return;
  showWarning(publication);
  let subscription: Subscription;
  try {
    subscription = await room.subscribe(publication.publicationId);
  } catch (err) {
    if (room.state === 'connected') showError(`subscribing to ${publication.kind}`, err);
    return;
  }
  watch.playing.set(publication.publicationId, { publication, subscription });
  try {
    const { stream } = await subscription.waitForTrack();
    const media = publication.kind === 'video' ? video : audio;
    media.srcObject = stream;
    play(media);
    statusText.textContent = `Watching "${room.name ?? ''}"`;
  } catch {
    // Ended before its media arrived (publication removed, room left).
  }
}

/** Marks the player stalled while a publication it plays sends no media (the source is away). */
function showStalled(room: Room): void {
  const stalled = [...watch.playing.keys()].some((id) => room.stalledPublications.has(id));
  video.parentElement?.classList.toggle('stalled', stalled);
  if (stalled) {
    statusText.textContent = 'Stalled: the stream sends nothing (waiting for it to come back)…';
  } else if (watch.playing.size > 0) {
    statusText.textContent = `Watching "${room.name ?? ''}"`;
  }
}

function unsubscribe(publicationId: string): void {
  const playing = watch.playing.get(publicationId);
  if (playing === undefined) return;
  watch.playing.delete(publicationId);
  const media = playing.publication.kind === 'video' ? video : audio;
  if (media.srcObject instanceof MediaStream && media.srcObject.id === playing.subscription.subscriptionId) {
    media.srcObject = null;
  }
  if (![...watch.playing.values()].some((p) => p.publication.kind === 'video')) {
    statusText.textContent = 'Waiting for a stream…';
  }
}

/**
 * How far behind live the picture is: `estimatedPlayoutTimestamp` is the sender's wall clock
 * (from its RTCP sender reports) of the frame on screen, so now minus it is server → screen
 * (clocks assumed in sync). Without it, the receiver's own buffering is all we can show.
 */
async function updateDelay(): Promise<void> {
  const playingVideo = [...watch.playing.values()].find((p) => p.publication.kind === 'video');
  const report = watch.whep !== undefined ? await watch.whep.pc.getStats() : await playingVideo?.subscription.getStats();
  let text = '';
  if (watch.whep !== undefined && report !== undefined) showWhepStalled(report);
  report?.forEach((s: RTCInboundRtpStreamStats & { estimatedPlayoutTimestamp?: number }) => {
    if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
    const buffered =
      s.jitterBufferEmittedCount !== undefined && s.jitterBufferEmittedCount > 0
        ? ((s.jitterBufferDelay ?? 0) / s.jitterBufferEmittedCount) * 1000
        : undefined;
    if (s.estimatedPlayoutTimestamp !== undefined && s.estimatedPlayoutTimestamp > 0) {
      watch.delayMs = Math.max(0, Date.now() - (s.estimatedPlayoutTimestamp - NTP_UNIX_OFFSET_MS));
      text = `≈ ${Math.round(watch.delayMs)} ms behind the server`;
    } else if (buffered !== undefined) {
      watch.delayMs = buffered;
      text = `≈ ${Math.round(buffered)} ms buffered`;
    }
    if (s.frameWidth !== undefined) text += ` · ${s.frameWidth}×${s.frameHeight ?? 0}`;
    if (s.framesPerSecond !== undefined) text += ` · ${Math.round(s.framesPerSecond)} fps`;
  });
  delayText.textContent = text;
}

/**
 * WHEP: marks the player stalled while no packet arrives (between two publishers, or a source
 * that is away), and back when packets flow again.
 */
function showWhepStalled(report: RTCStatsReport): void {
  let count = 0;
  report.forEach((s: RTCInboundRtpStreamStats) => {
    if (s.type === 'inbound-rtp') count += s.packetsReceived ?? 0;
  });
  const now = Date.now();
  const last = watch.whepPackets;
  if (last === undefined || count !== last.count) watch.whepPackets = { count, at: now };
  const stalled = count > 0 && now - (watch.whepPackets?.at ?? now) >= WHEP_STALL_MS;
  video.parentElement?.classList.toggle('stalled', stalled);
  if (stalled) {
    statusText.textContent = 'Stalled: the stream sends nothing (waiting for it or the next one)…';
  } else if (count > 0) {
    statusText.textContent = `Watching "${roomFromPath()}" (WHEP)`;
  }
}

/** The default mode: plays the room with WHEP, asking again after a failure or refusal. */
async function startWhep(roomName: string): Promise<void> {
  const params = new URLSearchParams(location.search);
  const token = params.get('token') ?? undefined;
  const layer = params.get('layer');
  const endpoint = `/whep/${encodeURIComponent(roomName)}${layer !== null ? `?layer=${encodeURIComponent(layer)}` : ''}`;
  const again = (): void => void setTimeout(() => void startWhep(roomName), WHEP_RETRY_MS);
  try {
    const session = await playWhep(endpoint, token, (track, stream) => {
      const media = track.kind === 'video' ? video : audio;
      media.srcObject = stream;
      play(media);
    });
    watch.whep = session;
    watch.whepPackets = undefined;
    statusText.textContent = 'Waiting for a stream…';
    session.pc.addEventListener('connectionstatechange', () => {
      if (session.pc.connectionState !== 'failed' && session.pc.connectionState !== 'closed') return;
      if (watch.whep !== session) return;
      watch.whep = undefined;
      statusText.textContent = 'Waiting for a stream…';
      void session.close();
      again();
    });
    window.addEventListener('pagehide', () => void session.close());
  } catch (err) {
    if (err instanceof WhepError && err.status === 404) {
      statusText.textContent = 'Waiting for a stream…';
      again();
    } else {
      showError('WHEP', err);
    }
  }
}

async function start(): Promise<void> {
  const roomName = roomFromPath();
  document.title = `Sluice · ${roomName}`;
  statusText.textContent = 'Connecting…';
  if (!new URLSearchParams(location.search).has('sdk')) {
    await startWhep(roomName);
    setInterval(() => void updateDelay().catch(() => undefined), STATS_INTERVAL_MS);
    return;
  }
  const room = new Room();
  watch.room = room;
  room.on(RoomEvent.PublicationAdded, (p) => void subscribe(room, p));
  room.on(RoomEvent.PublicationRemoved, (e) => unsubscribe(e.publicationId));
  room.on(RoomEvent.PublicationStalled, () => showStalled(room));
  room.on(RoomEvent.PublicationResumed, () => showStalled(room));
  room.on(RoomEvent.Error, (err) => showError('room', err));
  const connectedText = { value: '' };
  room.on(RoomEvent.Reconnecting, () => {
    connectedText.value = statusText.textContent ?? '';
    statusText.textContent = 'Connection lost: reconnecting…';
  });
  room.on(RoomEvent.Reconnected, () => {
    statusText.textContent = connectedText.value;
  });
  room.on(RoomEvent.Disconnected, (e) => {
    statusText.textContent = 'Disconnected';
    if (!e.clientInitiated) showError('disconnected', new Error(`connection closed (code ${e.code}) ${e.reason}`));
  });
  try {
    const identity = `viewer-${Math.random().toString(36).slice(2, 8)}`;
    const token = await fetchToken(roomName, identity);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    await room.connect(`${scheme}://${location.host}/ws`, token, { room: roomName });
    statusText.textContent = 'Waiting for a stream…';
    for (const publication of room.publications.values()) void subscribe(room, publication);
  } catch (err) {
    showError('join', err);
    return;
  }
  setInterval(() => void updateDelay().catch(() => undefined), STATS_INTERVAL_MS);
}

void start();
