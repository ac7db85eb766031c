/**
 * The publisher side of a room: publishing local tracks through the publisher connection (the
 * client offers), the local publications, dynacast (`publisherLayers`), and the codec choice.
 */
import { type RoomContext, asSluiceError } from './context.js';
import { ConnectionError, ConnectionErrorReason, NegotiationError, SluiceError } from './errors.js';
import type { Peer } from './peer.js';
import type {
  IceCandidate,
  LayerActivity,
  MediaKind,
  PublicationInfo,
  ServerMessage,
  TrackInfo,
  TrackSource,
} from './protocol.gen.js';
import { RoomState } from './events.js';
import type { SignalClient } from './signal.js';

/** A video codec the publisher can prefer. */
export type VideoCodec = 'vp8' | 'h264';

/** Options of `room.publish`. */
export interface PublishOptions {
  /** Source announced for audio tracks. Default: `microphone`. */
  audioSource?: TrackSource;
  /** Source announced for video tracks. Default: `camera`. */
  videoSource?: TrackSource;
  /** A human-readable name announced for every track of this call. */
  name?: string;
  /**
   * Send video as three simulcast encodings (`SIMULCAST_ENCODINGS`: rids `q`, `h`, `f` at ¼, ½
   * and full resolution), so the server can give each subscriber the layer it wants and its
   * downlink allows. Default: `true` when the video source is `camera`, `false` otherwise.
   */
  simulcast?: boolean;
  /**
   * The video codec to offer first (`setCodecPreferences`); for H.264 the packetization-mode=1
   * constrained-baseline profile (42e01f) is preferred. Default: the browser's order.
   * Rejects with `NegotiationError` when the browser cannot send it.
   */
  codec?: VideoCodec;
}

/**
 * The encodings of a simulcast video track, lowest resolution first: the spatial layer index
 * the server reports (`Layer.spatial`) is the index in this list.
 */
export const SIMULCAST_ENCODINGS: readonly Readonly<
  RTCRtpEncodingParameters & {
    /** The encoding's RTP stream id, as the publication's `rids` list it. */
    rid: string;
  }
>[] = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', maxBitrate: 1_500_000 },
];


/** A local track being published, as returned by `publish`. */
export interface LocalPublication extends PublicationInfo {
  /** The track being sent (the latest one given to `replaceTrack`). */
  readonly track: MediaStreamTrack;
  /** Whether the track is muted: it then sends silence or black frames. */
  readonly muted: boolean;
  /**
   * Mutes the track (`enabled = false`) at once and tells the room (`publicationMuted`): the
   * publication stays, the server forwards nothing of it. Resolves once the server has it
   * (at once when not connected).
   */
  mute(): Promise<void>;
  /** Unmutes the track and tells the room (`publicationUnmuted`). */
  unmute(): Promise<void>;
  /** Sends another track of the same kind instead (a camera switch) without renegotiating. */
  replaceTrack(track: MediaStreamTrack): Promise<void>;
  /** Stops publishing it (as `room.unpublish`). */
  unpublish(): Promise<void>;
}

/** What `publish` was called with, kept to publish the tracks again after a rejoin. */
export interface PublishCall {
  stream: MediaStream;
  options: PublishOptions;
}

type OwnPublication = LocalPublication & { sender: RTCRtpSender; call: PublishCall; sending: MediaStreamTrack };

/**
 * The publisher connection and the local publications. Every offer/answer and every change of
 * a sender's encodings runs on the connection's negotiation queue.
 */
export class Publisher {
  private peer: Peer | undefined;
  /** The local participant's publications, by publication id. */
  readonly publications = new Map<string, OwnPublication>();
  /** Dynacast: the encodings' `active` flags last applied per local publication. */
  private readonly appliedLayers = new Map<string, LayerActivity[]>();
  /** Dynacast: `publisherLayers` not applied yet, merged per publication (rid → active). */
  private readonly pendingLayers = new Map<string, Map<string, boolean>>();

  constructor(private readonly room: RoomContext) {}

  /** The publisher RTCPeerConnection, once created. */
  get pc(): RTCPeerConnection | undefined {
    return this.peer?.pc;
  }

  /**
   * Publishes `tracks` of `stream` (one sendonly transceiver each, one offer for all) and
   * resolves with the publications the server created.
   */
  async publish(stream: MediaStream, tracks: MediaStreamTrack[], options: PublishOptions): Promise<LocalPublication[]> {
    if (tracks.length === 0) return [];
    const peer = this.ensurePeer();
    return peer.negotiate(async () => {
      this.room.assertConnected('publish');
      const added = tracks.map((track) => {
        const simulcast = track.kind === 'video' && (options.simulcast ?? videoSource(options) === 'camera');
        const init: RTCRtpTransceiverInit = { direction: 'sendonly', streams: [stream] };
        if (simulcast) init.sendEncodings = SIMULCAST_ENCODINGS.map((encoding) => ({ ...encoding }));
        const transceiver = peer.pc.addTransceiver(track, init);
        return { track, transceiver, rids: simulcast ? SIMULCAST_ENCODINGS.map((e) => e.rid) : undefined };
      });
      const rollback = async (): Promise<void> => {
        for (const { transceiver } of added) {
          try {
            peer.pc.removeTrack(transceiver.sender);
          } catch {
            // The connection may already be closed: nothing left to undo.
          }
        }
        if (peer.pc.signalingState === 'have-local-offer') {
          await peer.pc.setLocalDescription({ type: 'rollback' }).catch(() => undefined);
        }
      };
      let infos: TrackInfo[];
      let sdp: string;
      try {
        if (options.codec !== undefined) {
          for (const { track, transceiver } of added) {
            if (track.kind === 'video') preferCodec(transceiver, options.codec);
          }
        }
        const offer = await peer.pc.createOffer();
        await peer.pc.setLocalDescription(offer);
        sdp = peer.pc.localDescription?.sdp ?? offer.sdp ?? '';
        infos = added.map(({ track, transceiver, rids }) => {
          if (transceiver.mid === null) throw new NegotiationError('publisher: transceiver has no mid after the offer');
          return trackInfo(transceiver.mid, track, options, rids);
        });
      } catch (err) {
        await rollback();
        throw err instanceof SluiceError ? err : new NegotiationError('publisher: cannot create the offer', { cause: err });
      }
      const request = this.room.signal().request({ type: 'publish', sdp, tracks: infos });
      peer.localDescriptionSent();
      let published: Extract<ServerMessage, { type: 'published' }>;
      try {
        published = await request;
      } catch (err) {
        await rollback();
        throw err;
      }
      try {
        await peer.setRemoteDescription({ type: 'answer', sdp: published.sdp });
      } catch (err) {
        throw new NegotiationError('publisher: the server answer was rejected', { cause: err });
      }
      return this.claimPublications(published.publications, added, infos, { stream, options });
    });
  }

  /** Stops publishing one of the local publications. */
  async unpublish(publicationId: string): Promise<void> {
    this.room.assertConnected('unpublish');
    await this.room.signal().request({ type: 'unpublish', publicationId });
    const own = this.publications.get(publicationId);
    if (own === undefined) return;
    this.publications.delete(publicationId);
    this.appliedLayers.delete(publicationId);
    await own.sender.replaceTrack(null).catch(() => undefined);
  }

  /** Mutes or unmutes a local publication: its track at once, then the server. */
  async setMuted(publicationId: string, muted: boolean): Promise<void> {
    const own = this.publications.get(publicationId);
    if (own === undefined) {
      throw new ConnectionError(ConnectionErrorReason.InvalidState, `mute of ended publication ${publicationId}`);
    }
    own.sending.enabled = !muted;
    if (this.room.state() !== RoomState.Connected) return;
    await this.room.signal().request({ type: 'setMuted', publicationId, muted });
  }

  /** The server muted or unmuted a local publication (the application did): the track follows. */
  applyMuted(publicationId: string, muted: boolean): void {
    const own = this.publications.get(publicationId);
    if (own !== undefined) own.sending.enabled = !muted;
  }

  /** Forgets a local publication the server ended. */
  forget(publicationId: string): void {
    this.publications.delete(publicationId);
    this.appliedLayers.delete(publicationId);
  }

  /** Dynacast: the `active` flags last applied to a publication's encodings. */
  layers(publicationId: string): readonly LayerActivity[] | undefined {
    return this.appliedLayers.get(publicationId);
  }

  /**
   * Dynacast: sets `active` on the encodings of a local publication's sender by rid. Runs on the
   * publisher's negotiation queue, so it never interleaves with an offer/answer (and a
   * `publisherLayers` for a publication still being published waits until it is known).
   * Messages that arrive while an earlier one still waits in the queue are merged into it (the
   * later flag wins), so a burst costs one `setParameters`.
   */
  handlePublisherLayers(publicationId: string, layers: LayerActivity[]): void {
    const peer = this.peer;
    if (peer === undefined) return;
    const pending = this.pendingLayers.get(publicationId);
    if (pending !== undefined) {
      for (const { rid, active } of layers) pending.set(rid, active);
      return;
    }
    this.pendingLayers.set(publicationId, new Map(layers.map((l) => [l.rid, l.active])));
    peer
      .negotiate(async () => {
        const wanted = this.pendingLayers.get(publicationId);
        this.pendingLayers.delete(publicationId);
        const own = this.publications.get(publicationId);
        if (wanted === undefined || own === undefined || this.room.state() !== RoomState.Connected) return;
        const params = own.sender.getParameters();
        let changed = false;
        for (const encoding of params.encodings) {
          const active = encoding.rid === undefined ? undefined : wanted.get(encoding.rid);
          if (active !== undefined && encoding.active !== active) {
            encoding.active = active;
            changed = true;
          }
        }
        if (changed) {
          try {
            await own.sender.setParameters(params);
          } catch (err) {
            throw new NegotiationError(`publisher: cannot set the active layers of ${publicationId}`, { cause: err });
          }
        }
        const applied = own.sender
          .getParameters()
          .encodings.filter((e): e is RTCRtpEncodingParameters & { rid: string } => e.rid !== undefined)
          .map((e) => ({ rid: e.rid, active: e.active !== false }));
        if (!this.publications.has(publicationId)) return;
        this.appliedLayers.set(publicationId, applied);
        this.room.emit('publisherLayersApplied', { publicationId, layers: applied });
      })
      .catch((err: unknown) => {
        if (this.room.state() === RoomState.Connected) this.room.reportError(asSluiceError(err));
      });
  }

  /** A candidate from the server for the publisher connection. */
  addRemoteCandidate(candidate: IceCandidate): void {
    if (this.peer === undefined) {
      console.warn('sluice: ignoring a publisher candidate before any publish');
      return;
    }
    this.peer.addRemoteCandidate(candidate);
  }

  /**
   * After a resume: an ICE restart offer (`publish` without tracks) on `signal`, once the
   * connection has negotiated; undefined when there is nothing to restart.
   */
  restartIce(signal: SignalClient): Promise<void> | undefined {
    const publisher = this.peer;
    if (publisher === undefined || publisher.pc.localDescription === null) return undefined;
    return publisher.negotiate(() => this.offerWithoutTracks(publisher, signal, true));
  }

  /**
   * Adds data channels to the connection (`create` makes them on it) and negotiates them with
   * an offer without tracks; resolves with what `create` returned once the server answered.
   */
  negotiateData<T>(create: (pc: RTCPeerConnection) => T): Promise<T> {
    const peer = this.ensurePeer();
    return peer.negotiate(async () => {
      this.room.assertConnected('publishData');
      const created = create(peer.pc);
      await this.offerWithoutTracks(peer, this.room.signal(), false);
      return created;
    });
  }

  private async offerWithoutTracks(peer: Peer, signal: SignalClient, iceRestart: boolean): Promise<void> {
    if (peer.pc.signalingState === 'have-local-offer') {
      await peer.pc.setLocalDescription({ type: 'rollback' });
    }
    let sdp: string;
    try {
      const offer = await peer.pc.createOffer({ iceRestart });
      await peer.pc.setLocalDescription(offer);
      sdp = peer.pc.localDescription?.sdp ?? offer.sdp ?? '';
    } catch (err) {
      throw new NegotiationError('publisher: cannot create the offer', { cause: err });
    }
    const request = signal.request({ type: 'publish', sdp, tracks: [] });
    peer.localDescriptionSent();
    const published = await request;
    try {
      await peer.setRemoteDescription({ type: 'answer', sdp: published.sdp });
    } catch (err) {
      throw new NegotiationError('publisher: the server answer was rejected', { cause: err });
    }
  }

  /** The tracks of each `publish` call still published, to publish them again after a rejoin. */
  publishCalls(): Map<PublishCall, MediaStreamTrack[]> {
    const calls = new Map<PublishCall, MediaStreamTrack[]>();
    for (const own of this.publications.values()) {
      const tracks = calls.get(own.call) ?? [];
      tracks.push(own.track);
      calls.set(own.call, tracks);
    }
    return calls;
  }

  /** Closes the connection (the session ended); the publications stay readable. */
  close(): void {
    this.peer?.close();
    this.pendingLayers.clear();
  }

  /** Drops the connection and everything negotiated on it (before a rejoin). */
  reset(): void {
    this.peer?.close();
    this.peer = undefined;
    this.publications.clear();
    this.appliedLayers.clear();
    this.pendingLayers.clear();
  }

  private ensurePeer(): Peer {
    this.peer ??= this.room.newPeer('publisher');
    return this.peer;
  }

  private localPublication(
    publication: PublicationInfo,
    track: MediaStreamTrack,
    sender: RTCRtpSender,
    call: PublishCall,
  ): OwnPublication {
    const id = publication.publicationId;
    return {
      ...publication,
      sender,
      call,
      sending: track,
      get track(): MediaStreamTrack {
        return this.sending;
      },
      get muted(): boolean {
        return !this.sending.enabled;
      },
      mute: () => this.setMuted(id, true),
      unmute: () => this.setMuted(id, false),
      replaceTrack: async (next: MediaStreamTrack): Promise<void> => {
        const own = this.publications.get(id);
        if (own === undefined) {
          throw new ConnectionError(ConnectionErrorReason.InvalidState, `replaceTrack() on ended publication ${id}`);
        }
        if (next.kind !== own.kind) throw new TypeError(`replaceTrack(): a ${next.kind} track for ${own.kind} publication ${id}`);
        await own.sender.replaceTrack(next);
        own.sending = next;
      },
      unpublish: () => this.unpublish(id),
    };
  }

  private claimPublications(
    publications: PublicationInfo[],
    added: { track: MediaStreamTrack; transceiver: RTCRtpTransceiver }[],
    infos: TrackInfo[],
    call: PublishCall,
  ): LocalPublication[] {
    const unclaimed = publications.filter((p) => !this.publications.has(p.publicationId));
    const result: LocalPublication[] = [];
    added.forEach(({ track, transceiver }, i) => {
      const info = infos[i];
      const index = unclaimed.findIndex((p) => p.kind === info?.kind && p.source === info.source);
      if (index < 0) return;
      const [publication] = unclaimed.splice(index, 1);
      if (publication === undefined) return;
      const local = this.localPublication(publication, track, transceiver.sender, call);
      this.publications.set(publication.publicationId, local);
      result.push(local);
    });
    return result;
  }
}

function videoSource(options: PublishOptions): TrackSource {
  return options.videoSource ?? 'camera';
}

function trackInfo(mid: string, track: MediaStreamTrack, options: PublishOptions, rids: string[] | undefined): TrackInfo {
  const kind: MediaKind = track.kind === 'audio' ? 'audio' : 'video';
  const source = kind === 'audio' ? (options.audioSource ?? 'microphone') : videoSource(options);
  const info: TrackInfo = { mid, kind, source };
  if (options.name !== undefined) info.name = options.name;
  if (rids !== undefined) info.rids = rids;
  return info;
}

const CODEC_MIME: Record<VideoCodec, string> = { vp8: 'video/vp8', h264: 'video/h264' };

/**
 * Lower is better: for H.264, packetization-mode=1 with constrained baseline 42e01f first, then
 * other packetization-mode=1 baseline profiles, then the rest.
 */
function codecRank(codec: RTCRtpCodec, wanted: VideoCodec): number {
  if (codec.mimeType.toLowerCase() !== CODEC_MIME[wanted]) return Number.POSITIVE_INFINITY;
  if (wanted !== 'h264') return 0;
  const fmtp = new Map(
    (codec.sdpFmtpLine ?? '').split(';').map((kv) => {
      const [key = '', value = ''] = kv.trim().split('=');
      return [key.toLowerCase(), value.toLowerCase()] as const;
    }),
  );
  const mode1 = fmtp.get('packetization-mode') === '1';
  const profile = fmtp.get('profile-level-id') ?? '';
  if (mode1 && profile === '42e01f') return 0;
  if (mode1 && profile.startsWith('42')) return 1;
  if (mode1) return 2;
  return 3;
}

/** The codec list with `wanted` first (best variant first), the others in their original order. */
export function orderCodecs(codecs: RTCRtpCodec[], wanted: VideoCodec): RTCRtpCodec[] {
  const ranked = codecs.map((codec, index) => ({ codec, index, rank: codecRank(codec, wanted) }));
  if (!ranked.some((c) => Number.isFinite(c.rank))) return [];
  ranked.sort((a, b) => (a.rank === b.rank ? a.index - b.index : a.rank < b.rank ? -1 : 1));
  return ranked.map((c) => c.codec);
}

/** Puts `wanted` first in the transceiver's codec preferences; throws NegotiationError if unsupported. */
function preferCodec(transceiver: RTCRtpTransceiver, wanted: VideoCodec): void {
  const capabilities = (kind: 'sender' | 'receiver'): RTCRtpCodec[] => {
    const api = kind === 'sender' ? globalThis.RTCRtpSender : globalThis.RTCRtpReceiver;
    return api?.getCapabilities?.('video')?.codecs ?? [];
  };
  if (typeof transceiver.setCodecPreferences !== 'function') {
    throw new NegotiationError('publisher: this browser cannot choose a codec (no setCodecPreferences)');
  }
  let lastError: unknown;
  // The spec checks sendonly preferences against the sender's capabilities; older browsers
  // checked against the receiver's.
  for (const kind of ['sender', 'receiver'] as const) {
    const ordered = orderCodecs(capabilities(kind), wanted);
    if (ordered.length === 0) continue;
    try {
      transceiver.setCodecPreferences(ordered);
      return;
    } catch (err) {
      lastError = err;
    }
  }
  throw new NegotiationError(`publisher: this browser cannot send ${wanted}`, { cause: lastError });
}
