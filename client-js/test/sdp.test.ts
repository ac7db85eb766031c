import { describe, expect, it } from 'vitest';
import { msidTrackIdsByMid } from '../src/sdp.js';

const OFFER = [
  'v=0',
  'o=- 1 2 IN IP4 127.0.0.1',
  's=-',
  't=0 0',
  'a=group:BUNDLE 0 1 2',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111',
  'a=mid:0',
  'a=msid:PA2 SU7',
  'a=sendonly',
  'm=video 9 UDP/TLS/RTP/SAVPF 96',
  'a=mid:1',
  'a=msid:PA2 SU9',
  'a=sendonly',
  'm=video 0 UDP/TLS/RTP/SAVPF 96',
  'a=mid:2',
  'a=inactive',
  '',
].join('\r\n');

describe('msidTrackIdsByMid', () => {
  it('maps each media section with an msid to its track id', () => {
    expect([...msidTrackIdsByMid(OFFER)]).toEqual([
      ['0', 'SU7'],
      ['1', 'SU9'],
    ]);
  });

  it('accepts LF line ends and ignores sections without an msid track id', () => {
    const sdp = 'v=0\nm=audio 9 RTP/AVP 0\na=mid:a\na=msid:- \nm=video 9 RTP/AVP 96\na=mid:v\na=msid:s t\n';
    expect([...msidTrackIdsByMid(sdp)]).toEqual([['v', 't']]);
  });

  it('returns nothing for garbage', () => {
    expect(msidTrackIdsByMid('not sdp').size).toBe(0);
  });
});
