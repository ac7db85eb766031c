/**
 * The msid track id of every media section of `sdp`, by mid. The server names each
 * subscriber track by its subscription id there, and groups tracks to play in sync (an RTMP
 * publisher's audio and video) under one msid stream id; the SDK finds a subscription's track
 * through its transceiver's mid.
 */
export function msidTrackIdsByMid(sdp: string): Map<string, string> {
  const result = new Map<string, string>();
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    let mid: string | undefined;
    let trackId: string | undefined;
    for (const line of section.split(/\r?\n/)) {
      if (line.startsWith('a=mid:')) mid = line.slice('a=mid:'.length).trim();
      else if (line.startsWith('a=msid:')) trackId = line.slice('a=msid:'.length).trim().split(/\s+/)[1];
    }
    if (mid !== undefined && trackId !== undefined && trackId !== '') result.set(mid, trackId);
  }
  return result;
}
