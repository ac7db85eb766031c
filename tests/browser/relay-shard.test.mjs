// The relay test on the shard media plane (`--media-plane shard`): the same publisher, three
// subscribers and assertions, plus every connection of every page on the server's one UDP port
// and every server description ICE-lite.
process.env.SLUICE_MEDIA_PLANE = 'shard';
await import('./relay.test.mjs');
