/**
 * The demo conference page served by `sluice` at `/`: join a room, publish camera and
 * microphone, and show everyone else. Each remote tile has a layer picker (auto = adaptive
 * stream: the SDK picks the layer from the tile's size; or q/h/f) and a stats overlay
 * (resolution, frame rate, bitrate, layer); the mic and camera can be muted; a chat panel
 * sends and shows the room's `chat` data messages. URL parameters:
 * `room`, `name`, `token` (skip `/dev/token`), `autojoin=1` (join without clicking).
 *
 * For tests and the console, the SDK is exposed as `window.Sluice` and the page's state as
 * `window.sluiceDemo`.
 */
import * as Sluice from '../src/index.js';
import { type PublicationInfo, Room, RoomEvent, type Subscription } from '../src/index.js';

interface DemoHandle {
  /** The current room, while joined. */
  room: Room | undefined;
  /** The local camera and microphone, once captured. */
  localStream: MediaStream | undefined;
  /** Every error shown on the page, oldest first. */
  errors: string[];
  /** The chat as shown, oldest first: who wrote (`you` for the local participant) and what. */
  chat: { from: string; text: string }[];
  join(room: string, name: string): Promise<void>;
  leave(): Promise<void>;
}

declare global {
  interface Window {
    Sluice: typeof Sluice;
    sluiceDemo: DemoHandle;
  }
}

function element<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`demo page is missing #${id}`);
  return el as T;
}

const form = element<HTMLFormElement>('join-form');
const roomInput = element<HTMLInputElement>('room');
const nameInput = element<HTMLInputElement>('name');
const joinButton = element<HTMLButtonElement>('join');
const leaveButton = element<HTMLButtonElement>('leave');
const statusText = element<HTMLSpanElement>('status');
const errorBox = element<HTMLDivElement>('error');
const tiles = element<HTMLElement>('tiles');

/**
 * The mic and camera buttons, shown while joined. Built here rather than in index.html so
 * that the page keeps working when only conference.js is swapped (SLUICE_SDK_FROM_DISK=1).
 */
const micButton = controlButton('mic', 'Mute mic');
const cameraButton = controlButton('camera', 'Stop camera');
const shareButton = controlButton('share', 'Share screen');
leaveButton.before(micButton, cameraButton, shareButton);
/** The chat panel: the room's messages on the `chat` topic, and a line to send one. */
const chatPanel = document.createElement('aside');
chatPanel.id = 'chat';
chatPanel.className = 'chat';
chatPanel.hidden = true;
const chatLog = document.createElement('ol');
chatLog.className = 'chat-log';
chatLog.setAttribute('aria-live', 'polite');
const chatForm = document.createElement('form');
const chatInput = document.createElement('input');
chatInput.id = 'chat-input';
chatInput.placeholder = 'Message everyone';
chatInput.maxLength = 1000;
chatInput.autocomplete = 'off';
const chatSend = document.createElement('button');
chatSend.type = 'submit';
chatSend.textContent = 'Send';
chatForm.append(chatInput, chatSend);
chatPanel.append(chatLog, chatForm);
tiles.after(chatPanel);
/** The screen share's publications while sharing. */
let screenShare: string[] = [];

function controlButton(id: string, label: string): HTMLButtonElement {
  const button = document.createElement('button');
  button.type = 'button';
  button.id = id;
  button.className = 'control';
  button.textContent = label;
  button.hidden = true;
  return button;
}

/**
 * Turns the local tracks of a kind on or off: published ones through `mute()`/`unmute()`, so
 * the room is told and the server stops forwarding them; others (not yet published) directly.
 */
function setLocalEnabled(kind: 'audio' | 'video', enabled: boolean): void {
  for (const track of demo.localStream?.getTracks() ?? []) if (track.kind === kind) track.enabled = enabled;
  for (const publication of demo.room?.localPublications.values() ?? []) {
    if (publication.kind !== kind) continue;
    (enabled ? publication.unmute() : publication.mute()).catch((err: unknown) => demo.errors.push(String(err)));
  }
  const button = kind === 'audio' ? micButton : cameraButton;
  button.textContent = kind === 'audio' ? (enabled ? 'Mute mic' : 'Unmute mic') : enabled ? 'Stop camera' : 'Start camera';
  button.setAttribute('aria-pressed', String(!enabled));
  button.classList.toggle('off', !enabled);
}

function localEnabled(kind: 'audio' | 'video'): boolean {
  return demo.localStream?.getTracks().some((t) => t.kind === kind && t.enabled) ?? false;
}

const demo: DemoHandle = { room: undefined, localStream: undefined, errors: [], chat: [], join, leave };
window.Sluice = Sluice;
window.sluiceDemo = demo;

function showError(context: string, err: unknown): void {
  const text = `${context}: ${err instanceof Error ? err.message : String(err)}`;
  console.error(text, err);
  demo.errors.push(text);
  errorBox.textContent = demo.errors.slice(-3).join('\n');
  errorBox.hidden = false;
}

function clearErrors(): void {
  demo.errors = [];
  errorBox.textContent = '';
  errorBox.hidden = true;
}

function setStatus(text: string): void {
  statusText.textContent = text;
}

/** A participant's tile: a video, an audio element, a caption, a stats overlay and (remote) a layer picker. */
interface Tile {
  root: HTMLElement;
  video: HTMLVideoElement;
  audio: HTMLAudioElement;
  stats: HTMLElement;
  /** The layer picker: `auto` (adaptive stream) or a spatial layer index. */
  layerPicker: HTMLSelectElement | undefined;
  /** Subscription ids shown in this tile, by publication id. */
  publications: Map<string, string>;
  /** The subscription shown in `video`, if any. */
  videoSubscription: Subscription | undefined;
  /** The previous inbound sample, for the bitrate. */
  lastBytes: { bytes: number; at: number } | undefined;
  /** Packet counts at the previous overlay update, for the loss since then. */
  lastLoss: { lost: number; received: number } | undefined;
}

const LAYER_NAMES = ['q', 'h', 'f'];
const STATS_INTERVAL_MS = 1000;
let statsTimer: ReturnType<typeof setInterval> | undefined;

const remoteTiles = new Map<string, Tile>();

function createTile(kind: 'local' | 'remote', participantId: string, caption: string): Tile {
  const root = document.createElement('figure');
  root.className = `tile ${kind}`;
  root.dataset.participantId = participantId;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  // Video elements stay muted so autoplay is always allowed; sound plays through <audio>.
  video.muted = true;
  const audio = document.createElement('audio');
  audio.autoplay = true;
  const label = document.createElement('figcaption');
  label.textContent = caption;
  const stats = document.createElement('div');
  stats.className = 'stats';
  root.append(video, audio, label, stats);
  const tile: Tile = {
    root,
    video,
    audio,
    stats,
    layerPicker: undefined,
    publications: new Map(),
    videoSubscription: undefined,
    lastBytes: undefined,
    lastLoss: undefined,
  };
  if (kind === 'remote') {
    tile.layerPicker = createLayerPicker(tile);
    root.append(tile.layerPicker);
  }
  if (kind === 'local') tiles.prepend(root);
  else tiles.append(root);
  return tile;
}

function createLayerPicker(tile: Tile): HTMLSelectElement {
  const picker = document.createElement('select');
  picker.className = 'layer-picker';
  picker.title = 'Simulcast layer: auto follows the tile size';
  picker.setAttribute('aria-label', 'Video layer');
  for (const [value, text] of [['auto', 'auto'], ...LAYER_NAMES.map((name, i) => [String(i), name])]) {
    picker.append(new Option(text, value));
  }
  picker.addEventListener('change', () => {
    const subscription = tile.videoSubscription;
    if (subscription === undefined || subscription.ended) return;
    if (picker.value === 'auto') {
      subscription.enableAdaptiveStream();
    } else {
      subscription.setPreferredLayer(Number(picker.value)).catch((err: unknown) => showError('layer', err));
    }
  });
  return picker;
}

/** Updates every tile's overlay: what is decoded (remote) or captured (local), and the layer. */
async function updateStats(): Promise<void> {
  for (const tile of remoteTiles.values()) {
    const subscription = tile.videoSubscription;
    if (subscription === undefined || subscription.ended) {
      tile.stats.textContent = '';
      continue;
    }
    const report = await subscription.getStats().catch(() => undefined);
    let inbound: RTCInboundRtpStreamStats | undefined;
    let rttSeconds: number | undefined;
    report?.forEach((s: RTCStats) => {
      if (s.type === 'inbound-rtp' && (s as RTCInboundRtpStreamStats).kind === 'video') inbound = s as RTCInboundRtpStreamStats;
      const pair = s as RTCIceCandidatePairStats;
      if (s.type === 'candidate-pair' && pair.nominated === true && pair.currentRoundTripTime !== undefined) {
        rttSeconds = pair.currentRoundTripTime;
      }
    });
    const parts: string[] = [];
    if (inbound?.frameWidth !== undefined && inbound.frameHeight !== undefined) {
      parts.push(`${inbound.frameWidth}×${inbound.frameHeight}`);
    }
    if (inbound?.framesPerSecond !== undefined) parts.push(`${Math.round(inbound.framesPerSecond)} fps`);
    const bytes = inbound?.bytesReceived;
    if (bytes !== undefined && inbound !== undefined) {
      const last = tile.lastBytes;
      if (last !== undefined && inbound.timestamp > last.at) {
        parts.push(`${Math.round(((bytes - last.bytes) * 8) / (inbound.timestamp - last.at))} kb/s`);
      }
      tile.lastBytes = { bytes, at: inbound.timestamp };
    }
    if (rttSeconds !== undefined) parts.push(`${Math.round(rttSeconds * 1000)} ms RTT`);
    if (inbound !== undefined) {
      // Loss since the previous update, of the packets that were due.
      const lost = inbound.packetsLost ?? 0;
      const received = inbound.packetsReceived ?? 0;
      const last = tile.lastLoss;
      if (last !== undefined) {
        const due = received - last.received + (lost - last.lost);
        parts.push(`${due > 0 ? ((100 * (lost - last.lost)) / due).toFixed(1) : '0.0'} % loss`);
      }
      tile.lastLoss = { lost, received };
    }
    // The layer forwarded now; the picker beside it says whether adaptive stream chose it.
    const layer = subscription.currentLayer;
    parts.push(`layer ${layer === undefined ? '–' : (LAYER_NAMES[layer.spatial] ?? layer.spatial)}`);
    tile.stats.textContent = parts.join(' · ');
    if (tile.layerPicker !== undefined && subscription.adaptiveStreamEnabled) tile.layerPicker.value = 'auto';
  }
  const local = tiles.querySelector<HTMLElement>('.tile.local .stats');
  const camera = demo.localStream?.getVideoTracks()[0];
  if (local !== null && camera !== undefined) {
    const { width, height, frameRate } = camera.getSettings();
    local.textContent = camera.enabled
      ? `${width ?? '?'}×${height ?? '?'} · ${Math.round(frameRate ?? 0)} fps captured`
      : 'camera off';
  }
}

function remoteTile(participantId: string): Tile {
  let tile = remoteTiles.get(participantId);
  if (tile === undefined) {
    const identity = demo.room?.participants.get(participantId)?.identity ?? participantId;
    tile = createTile('remote', participantId, identity);
    remoteTiles.set(participantId, tile);
  }
  return tile;
}

function removeRemoteTile(participantId: string): void {
  const tile = remoteTiles.get(participantId);
  if (tile === undefined) return;
  tile.videoSubscription?.unobserveElement(tile.video);
  tile.video.srcObject = null;
  tile.audio.srcObject = null;
  tile.root.remove();
  remoteTiles.delete(participantId);
}

function play(media: HTMLMediaElement): void {
  media.play().catch((err: unknown) => {
    if (err instanceof DOMException && err.name === 'NotAllowedError') {
      // Autoplay with sound was blocked: retry on the next click anywhere.
      setStatus('Click anywhere to enable sound');
      document.addEventListener('click', () => void media.play().catch(() => undefined), { once: true });
    } else if (!(err instanceof DOMException && err.name === 'AbortError')) {
      showError('playback', err);
    }
  });
}

async function subscribeTo(room: Room, publication: PublicationInfo): Promise<void> {
  if (publication.participantId === room.localParticipant?.participantId) return;
  let subscription: Subscription;
  try {
    subscription = await room.subscribe(publication.publicationId);
  } catch (err) {
    if (room.state === 'connected') showError(`subscribing to ${publication.kind}`, err);
    return;
  }
  const tile = remoteTile(publication.participantId);
  tile.publications.set(publication.publicationId, subscription.subscriptionId);
  if (publication.kind === 'video') {
    tile.videoSubscription = subscription;
    tile.lastBytes = undefined;
    if (tile.layerPicker !== undefined) tile.layerPicker.value = 'auto';
    // Adaptive stream: the layer follows the tile's size and visibility.
    subscription.observeElement(tile.video);
  }
  try {
    const { stream } = await subscription.waitForTrack();
    const media = publication.kind === 'video' ? tile.video : tile.audio;
    media.srcObject = stream;
    play(media);
  } catch {
    // The subscription ended before its media arrived (publication removed, room left).
  }
}

/** Marks a remote tile stalled while any of its participant's publications sends no media. */
function showStalled(room: Room, participantId: string): void {
  const tile = remoteTiles.get(participantId);
  if (tile === undefined) return;
  const stalled = [...room.stalledPublications].some(
    (id) => room.publications.get(id)?.participantId === participantId,
  );
  tile.root.classList.toggle('stalled', stalled);
}

/** Shows on a remote tile which of its participant's publications are muted. */
function showMuted(room: Room, participantId: string): void {
  const tile = remoteTiles.get(participantId);
  if (tile === undefined) return;
  const theirs = [...room.publications.values()].filter((p) => p.participantId === participantId);
  tile.root.classList.toggle('mic-muted', theirs.some((p) => p.kind === 'audio' && p.muted === true));
  tile.root.classList.toggle('camera-muted', theirs.some((p) => p.kind === 'video' && p.muted === true));
}

function onPublicationRemoved(publicationId: string, participantId: string): void {
  const tile = remoteTiles.get(participantId);
  if (tile === undefined) return;
  const subscriptionId = tile.publications.get(publicationId);
  tile.publications.delete(publicationId);
  const shown = tile.videoSubscription;
  if (shown !== undefined && shown.subscriptionId === subscriptionId) {
    shown.unobserveElement(tile.video);
    tile.videoSubscription = undefined;
  }
  for (const media of [tile.video, tile.audio]) {
    if (media.srcObject instanceof MediaStream && media.srcObject.id === subscriptionId) media.srcObject = null;
  }
}

function showChat(from: string, text: string): void {
  demo.chat.push({ from, text });
  const line = document.createElement('li');
  const who = document.createElement('b');
  who.textContent = `${from}: `;
  line.append(who, text);
  chatLog.append(line);
  line.scrollIntoView({ block: 'end' });
}

/** Sends the chat line to everyone in the room (a reliable data message on the `chat` topic). */
async function sendChat(): Promise<void> {
  const room = demo.room;
  const text = chatInput.value.trim();
  if (room === undefined || text === '') return;
  chatInput.value = '';
  try {
    await room.publishData(text, { topic: 'chat' });
    showChat('you', text);
  } catch (err) {
    showError('chat', err);
  }
}

async function fetchToken(room: string, identity: string): Promise<string> {
  const fromUrl = new URLSearchParams(location.search).get('token');
  if (fromUrl !== null && fromUrl !== '') return fromUrl;
  const query = new URLSearchParams({ room, identity });
  const response = await fetch(`/dev/token?${query.toString()}`);
  if (!response.ok) {
    throw new Error(`no token: /dev/token answered ${response.status} (it exists only in demo mode; pass ?token=)`);
  }
  const body = (await response.json()) as { token?: unknown };
  if (typeof body.token !== 'string') throw new Error('no token in the /dev/token response');
  return body.token;
}

async function join(roomName: string, name: string): Promise<void> {
  if (demo.room !== undefined) await leave();
  clearErrors();
  joinButton.disabled = true;
  setStatus('Connecting…');
  const room = new Room();
  demo.room = room;
  room.on(RoomEvent.ParticipantJoined, (p) => remoteTile(p.participantId));
  room.on(RoomEvent.ParticipantLeft, (e) => removeRemoteTile(e.participantId));
  room.on(RoomEvent.PublicationAdded, (p) => void subscribeTo(room, p));
  room.on(RoomEvent.PublicationRemoved, (e) => onPublicationRemoved(e.publicationId, e.participantId));
  room.on(RoomEvent.PublicationStalled, (e) => showStalled(room, e.participantId));
  room.on(RoomEvent.PublicationMuted, (e) => showMuted(room, e.participantId));
  room.on(RoomEvent.PublicationUnmuted, (e) => showMuted(room, e.participantId));
  room.on(RoomEvent.PublicationResumed, (e) => showStalled(room, e.participantId));
  room.on(RoomEvent.DataReceived, (e) => {
    if (e.topic !== 'chat' || typeof e.data !== 'string') return;
    showChat(e.participant?.name ?? e.identity, e.data);
  });
  room.on(RoomEvent.DataRejected, (e) => showError('chat', new Error(`${e.dropped} message(s) not delivered: ${e.reason}`)));
  room.on(RoomEvent.Error, (err) => showError('room', err));
  room.on(RoomEvent.Reconnecting, () => setStatus('Connection lost: reconnecting…'));
  room.on(RoomEvent.Reconnected, () => setStatus(`In room "${room.name ?? roomName}" as ${room.localParticipant?.identity ?? name}`));
  room.on(RoomEvent.Disconnected, (e) => {
    if (demo.room === room) resetPage();
    if (!e.clientInitiated) showError('disconnected', new Error(`connection closed (code ${e.code}) ${e.reason}`));
  });
  try {
    const token = await fetchToken(roomName, name);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const info = await room.connect(`${scheme}://${location.host}/ws`, token, { room: roomName, data: true });
    setStatus(`In room "${info.room}" as ${info.participant.identity}`);
    leaveButton.hidden = false;
    joinButton.hidden = true;
    document.body.classList.add('joined');
    chatPanel.hidden = false;
    clearInterval(statsTimer);
    statsTimer = setInterval(() => void updateStats(), STATS_INTERVAL_MS);
    for (const participant of room.participants.values()) remoteTile(participant.participantId);
    for (const publication of room.publications.values()) void subscribeTo(room, publication);
  } catch (err) {
    showError('join', err);
    await room.disconnect();
    if (demo.room === room) resetPage();
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    demo.localStream = stream;
    const local = createTile('local', room.localParticipant?.participantId ?? 'local', `${name} (you)`);
    local.video.srcObject = stream;
    play(local.video);
    micButton.hidden = false;
    cameraButton.hidden = false;
    shareButton.hidden = false;
    setLocalEnabled('audio', true);
    setLocalEnabled('video', true);
    await room.publish(stream);
  } catch (err) {
    showError('camera/microphone', err);
  }
}

function resetPage(): void {
  demo.room = undefined;
  demo.localStream?.getTracks().forEach((t) => t.stop());
  demo.localStream = undefined;
  for (const id of [...remoteTiles.keys()]) removeRemoteTile(id);
  tiles.replaceChildren();
  joinButton.hidden = false;
  joinButton.disabled = false;
  leaveButton.hidden = true;
  micButton.hidden = true;
  cameraButton.hidden = true;
  shareButton.hidden = true;
  chatPanel.hidden = true;
  chatLog.replaceChildren();
  demo.chat = [];
  screenShare = [];
  shareButton.textContent = 'Share screen';
  document.body.classList.remove('joined');
  clearInterval(statsTimer);
  statsTimer = undefined;
  setStatus('Not connected');
}

async function leave(): Promise<void> {
  const room = demo.room;
  resetPage();
  await room?.disconnect();
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  void join(roomInput.value.trim(), nameInput.value.trim());
});
leaveButton.addEventListener('click', () => void leave());
micButton.addEventListener('click', () => setLocalEnabled('audio', !localEnabled('audio')));
cameraButton.addEventListener('click', () => setLocalEnabled('video', !localEnabled('video')));
shareButton.addEventListener('click', () => void toggleScreenShare());
chatForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  void sendChat();
});

/** Starts sharing the screen (`room.publishScreen()`), or stops it. */
async function toggleScreenShare(): Promise<void> {
  const room = demo.room;
  if (room === undefined) return;
  const stopped = (): void => {
    screenShare = [];
    shareButton.textContent = 'Share screen';
  };
  if (screenShare.length > 0) {
    const sharing = screenShare;
    stopped();
    for (const id of sharing) await room.unpublish(id).catch((err: unknown) => showError('screen share', err));
    return;
  }
  try {
    const publications = await room.publishScreen();
    screenShare = publications.map((p) => p.publicationId);
    shareButton.textContent = 'Stop sharing';
    // Stopped from the browser's own "stop sharing" bar: the SDK unpublishes it.
    publications[0]?.track.addEventListener('ended', stopped);
  } catch (err) {
    showError('screen share', err);
  }
}

const params = new URLSearchParams(location.search);
roomInput.value = params.get('room') ?? 'demo';
nameInput.value = params.get('name') ?? `guest-${Math.random().toString(36).slice(2, 6)}`;
if (params.get('autojoin') === '1') void join(roomInput.value, nameInput.value);
