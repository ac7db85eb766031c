/**
 * A plain WHEP client for the watch page (`/watch/<room>?whep`): one recvonly offer for audio
 * and video, `POST /whep/<room>`, the answer applied, `DELETE` of the session resource on
 * close. No Sluice signaling: it is what any WHEP player does against the same URL.
 */

/** A playing WHEP session. */
export interface WhepSession {
  pc: RTCPeerConnection;
  /** The session resource (absolute URL), for PATCH and DELETE. */
  location: string;
  /** Ends playback and frees the session on the server. */
  close(): Promise<void>;
}

/** Why a WHEP POST failed: the HTTP status and the server's reason. */
export class WhepError extends Error {
  constructor(
    readonly status: number,
    reason: string,
  ) {
    super(`WHEP ${status}: ${reason}`);
    this.name = 'WhepError';
  }
}

/**
 * Plays `endpoint` (`/whep/<room>[/<publication>][?layer=q|h|f]`); `onTrack` gets each track
 * with its stream. `token`: a room token with canSubscribe (none in demo mode on loopback).
 */
export async function playWhep(
  endpoint: string,
  token: string | undefined,
  onTrack: (track: MediaStreamTrack, stream: MediaStream) => void,
): Promise<WhepSession> {
  const pc = new RTCPeerConnection();
  try {
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    const stream = new MediaStream();
    pc.addEventListener('track', (event) => {
      stream.addTrack(event.track);
      onTrack(event.track, stream);
    });
    await pc.setLocalDescription(await pc.createOffer());
    const headers: Record<string, string> = { 'Content-Type': 'application/sdp' };
    if (token !== undefined) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(endpoint, { method: 'POST', headers, body: pc.localDescription?.sdp ?? '' });
    const body = await response.text();
    if (response.status !== 201) throw new WhepError(response.status, body);
    const location = new URL(response.headers.get('Location') ?? '', new URL(endpoint, window.location.href)).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    return {
      pc,
      location,
      async close() {
        pc.close();
        await fetch(location, { method: 'DELETE', keepalive: true }).catch(() => undefined);
      },
    };
  } catch (err) {
    pc.close();
    throw err;
  }
}
