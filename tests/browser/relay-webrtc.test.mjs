// The relay test on the webrtc-rs transport (`--media-plane webrtc`), while that plane exists:
// the same publisher, three subscribers and assertions as on the default shard plane.
process.env.SLUICE_MEDIA_PLANE = 'webrtc';
await import('./relay.test.mjs');
