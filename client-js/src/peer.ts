import { NegotiationError } from './errors.js';
import type { IceCandidate, PeerRole } from './protocol.gen.js';
import { SerialQueue } from './queue.js';

/**
 * One of the session's two RTCPeerConnections with its negotiation queue and ICE candidate
 * buffering:
 * - every offer/answer exchange runs through `negotiate`, one at a time;
 * - remote candidates wait until a remote description is set;
 * - local candidates wait until the first local description has been sent to the server
 *   (`localDescriptionSent`), so the server never gets a candidate for a connection it does
 *   not know yet.
 */
export class Peer {
  private readonly queue = new SerialQueue();
  private remoteCandidates: RTCIceCandidateInit[] = [];
  private localCandidates: IceCandidate[] | undefined = [];
  private closed = false;

  constructor(
    readonly target: PeerRole,
    readonly pc: RTCPeerConnection,
    private readonly sendCandidate: (candidate: IceCandidate) => void,
    private readonly reportError: (error: Error) => void,
  ) {
    pc.addEventListener('icecandidate', (ev: RTCPeerConnectionIceEvent) => {
      if (ev.candidate === null || ev.candidate.candidate === '') return;
      const candidate = toWireCandidate(ev.candidate.toJSON());
      if (this.localCandidates !== undefined) this.localCandidates.push(candidate);
      else this.sendCandidate(candidate);
    });
  }

  /** Runs one negotiation step after all earlier ones have finished. */
  negotiate<T>(task: () => Promise<T>): Promise<T> {
    return this.queue.run(task);
  }

  /** Call right after the message carrying this connection's local description was sent. */
  localDescriptionSent(): void {
    const buffered = this.localCandidates;
    if (buffered === undefined) return;
    this.localCandidates = undefined;
    for (const candidate of buffered) this.sendCandidate(candidate);
  }

  /** Sets the remote description, then applies the candidates that arrived before it. */
  async setRemoteDescription(description: RTCSessionDescriptionInit): Promise<void> {
    await this.pc.setRemoteDescription(description);
    const buffered = this.remoteCandidates;
    this.remoteCandidates = [];
    for (const candidate of buffered) await this.applyCandidate(candidate);
  }

  /** Adds a candidate from the server, or keeps it until the remote description is set. */
  addRemoteCandidate(candidate: IceCandidate): void {
    if (this.closed) return;
    const init = fromWireCandidate(candidate);
    if (this.pc.remoteDescription === null) {
      this.remoteCandidates.push(init);
      return;
    }
    void this.applyCandidate(init);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.remoteCandidates = [];
    this.pc.close();
  }

  private async applyCandidate(candidate: RTCIceCandidateInit): Promise<void> {
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (err) {
      if (!this.closed) {
        this.reportError(new NegotiationError(`${this.target}: remote ICE candidate rejected`, { cause: err }));
      }
    }
  }
}

function toWireCandidate(init: RTCIceCandidateInit): IceCandidate {
  const candidate: IceCandidate = { candidate: init.candidate ?? '' };
  if (init.sdpMid !== undefined && init.sdpMid !== null) candidate.sdpMid = init.sdpMid;
  if (init.sdpMLineIndex !== undefined && init.sdpMLineIndex !== null) candidate.sdpMLineIndex = init.sdpMLineIndex;
  if (init.usernameFragment !== undefined && init.usernameFragment !== null) {
    candidate.usernameFragment = init.usernameFragment;
  }
  return candidate;
}

function fromWireCandidate(candidate: IceCandidate): RTCIceCandidateInit {
  const init: RTCIceCandidateInit = { candidate: candidate.candidate };
  if (candidate.sdpMid !== undefined) init.sdpMid = candidate.sdpMid;
  if (candidate.sdpMLineIndex !== undefined) init.sdpMLineIndex = candidate.sdpMLineIndex;
  if (candidate.usernameFragment !== undefined) init.usernameFragment = candidate.usernameFragment;
  // Without mid or index the browser cannot place the candidate; with one m-section bundle, 0 is right.
  if (init.sdpMid === undefined && init.sdpMLineIndex === undefined) init.sdpMLineIndex = 0;
  return init;
}
