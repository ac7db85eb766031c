// Injected into the test pages (after the demo page has loaded `window.Sluice`) by
// `installProbe` in harness.mjs: drives the SDK and measures what a viewer would notice.
// Times are epoch milliseconds (Date.now() scale), so Node and the page can compare them.
// Plain browser JavaScript: no imports, no build step.
(() => {
  if (window.probe !== undefined) return;

  const MAX_FRAMES = 30_000;
  const epoch = (highRes) => performance.timeOrigin + highRes;

  const state = {
    room: undefined,
    errors: [],
    /** `layersChanged` events: {at, subscriptionId, current, target, reason}. */
    layerEvents: [],
    /** `publisherLayersApplied` events: {at, publicationId, layers}. */
    appliedEvents: [],
    /** Subscriptions by id: {sub, video, frames: [[epochMs, width]]}. */
    subs: new Map(),
    /** Samples of the publisher's outbound video stats: {at, byRid}. */
    outboundSamples: [],
    relayCandidates: { remote: [], local: [] },
  };

  /** Rewrites ICE candidates so every packet of this connection goes through the test's UDP relay. */
  function relayPeerConnectionFactory({ frontPort, backPort }) {
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> …
    const parse = (text) => {
      const body = text.replace(/^a=/, '');
      const parts = body.split(' ');
      if (parts.length < 8 || !parts[0].startsWith('candidate:')) return undefined;
      return { parts, component: parts[1], transport: parts[2].toLowerCase(), address: parts[4], port: Number(parts[5]), type: parts[7] };
    };
    /** The candidate pointing at `port` on 127.0.0.1, or null to drop it (only UDP loopback host candidates survive). */
    const rewrite = (text, port, side) => {
      const c = parse(text);
      if (c === undefined) return text;
      if (c.transport !== 'udp' || c.address !== '127.0.0.1' || c.type !== 'host' || c.component !== '1') {
        state.relayCandidates[side].push({ dropped: text });
        return null;
      }
      state.relayCandidates[side].push({ original: `${c.address}:${c.port}` });
      const parts = [...c.parts];
      parts[5] = String(port);
      return (text.startsWith('a=') ? 'a=' : '') + parts.join(' ');
    };
    const rewriteSdp = (sdp, port, side) =>
      sdp
        .split('\r\n')
        .map((line) => (line.startsWith('a=candidate:') ? rewrite(line, port, side) : line))
        .filter((line) => line !== null)
        .join('\r\n');
    const learnRemote = async (sdpOrCandidate) => {
      for (const line of sdpOrCandidate.split('\r\n')) {
        const c = parse(line);
        if (c && c.transport === 'udp' && c.address === '127.0.0.1' && c.type === 'host') {
          await window.relayLearn({ server: { host: c.address, port: c.port } });
        }
      }
    };
    const learnLocal = (text) => {
      const c = parse(text);
      if (c && c.transport === 'udp' && c.address === '127.0.0.1' && c.type === 'host') {
        void window.relayLearn({ browser: { host: c.address, port: c.port } });
      }
    };

    class RelayedPeerConnection extends RTCPeerConnection {
      async setRemoteDescription(description) {
        if (description && description.sdp) {
          await learnRemote(description.sdp);
          description = { type: description.type, sdp: rewriteSdp(description.sdp, frontPort, 'remote') };
        }
        return super.setRemoteDescription(description);
      }

      async addIceCandidate(candidate) {
        if (candidate && candidate.candidate) {
          await learnRemote(candidate.candidate);
          const rewritten = rewrite(candidate.candidate, frontPort, 'remote');
          if (rewritten === null) return undefined;
          candidate = { ...candidate, candidate: rewritten };
        }
        return super.addIceCandidate(candidate);
      }

      get localDescription() {
        const description = super.localDescription;
        if (description === null) return null;
        for (const line of description.sdp.split('\r\n')) if (line.startsWith('a=candidate:')) learnLocal(line);
        const sdp = rewriteSdp(description.sdp, backPort, 'local');
        return { type: description.type, sdp, toJSON: () => ({ type: description.type, sdp }) };
      }

      addEventListener(type, listener, options) {
        if (type !== 'icecandidate') return super.addEventListener(type, listener, options);
        const wrapped = (event) => {
          const candidate = event.candidate;
          if (candidate === null || !candidate.candidate) return listener.call(this, event);
          learnLocal(candidate.candidate);
          const rewritten = rewrite(candidate.candidate, backPort, 'local');
          if (rewritten === null) return undefined;
          const replaced = new RTCIceCandidate({
            candidate: rewritten,
            sdpMid: candidate.sdpMid,
            sdpMLineIndex: candidate.sdpMLineIndex,
            usernameFragment: candidate.usernameFragment,
          });
          return listener.call(this, { type: 'icecandidate', candidate: replaced, target: this });
        };
        return super.addEventListener(type, wrapped, options);
      }
    }
    return (config) => new RelayedPeerConnection(config);
  }

  /**
   * Joins `roomName` with `token`, or a demo token fetched from the server; `relay` =
   * {frontPort, backPort} routes media through the relay; `data` opens the data channels at
   * join.
   */
  async function connect(roomName, identity, { relay, data, token: given } = {}) {
    let token = given;
    if (token === undefined) {
      const query = new URLSearchParams({ room: roomName, identity });
      const response = await fetch(`/dev/token?${query}`);
      if (!response.ok) throw new Error(`/dev/token: ${response.status}`);
      ({ token } = await response.json());
    }
    const options = relay === undefined ? {} : { peerConnectionFactory: relayPeerConnectionFactory(relay) };
    const room = new window.Sluice.Room(options);
    state.room = room;
    room.on('error', (err) => state.errors.push(String(err)));
    room.on('layersChanged', (e) =>
      state.layerEvents.push({
        at: Date.now(),
        subscriptionId: e.subscriptionId,
        current: e.current ?? null,
        target: e.target,
        reason: e.reason,
      }),
    );
    room.on('publisherLayersApplied', (e) =>
      state.appliedEvents.push({ at: Date.now(), publicationId: e.publicationId, layers: e.layers }),
    );
    const joined = await room.connect(`ws://${location.host}/ws`, token, data === true ? { data } : {});
    return joined.participant.participantId;
  }

  /** Publishes the fake camera (video only unless `audio`); returns the publications. */
  async function publishCamera({ codec, simulcast, audio = false, maintainResolution = true } = {}) {
    const stream = await navigator.mediaDevices.getUserMedia({ audio, video: { width: 1280, height: 720, frameRate: 30 } });
    const options = {};
    if (codec !== undefined) options.codec = codec;
    if (simulcast !== undefined) options.simulcast = simulcast;
    const pubs = await state.room.publish(stream, options);
    if (maintainResolution) {
      // The test machine's CPU is shared: keep Chrome from scaling layers down for CPU reasons,
      // so frameWidth tells which layer is forwarded (it lowers the frame rate instead).
      for (const sender of state.room.peerConnection('publisher').getSenders()) {
        if (sender.track?.kind !== 'video') continue;
        const params = sender.getParameters();
        params.degradationPreference = 'maintain-resolution';
        await sender.setParameters(params).catch((err) => state.errors.push(`degradationPreference: ${err}`));
      }
    }
    return pubs.map((p) => ({ publicationId: p.publicationId, kind: p.kind, codec: p.codec, rids: p.rids ?? null }));
  }

  /** Subscribes to a video publication and renders it, recording every presented frame. */
  async function subscribeVideo(publicationId) {
    const sub = await state.room.subscribe(publicationId);
    const video = document.createElement('video');
    video.autoplay = true;
    video.muted = true;
    video.playsInline = true;
    video.width = 320;
    document.body.append(video);
    const entry = { sub, video, frames: [] };
    state.subs.set(sub.subscriptionId, entry);
    const onFrame = (now, meta) => {
      if (entry.frames.length >= MAX_FRAMES) entry.frames.splice(0, MAX_FRAMES / 2);
      entry.frames.push([epoch(now), meta.width]);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    sub.waitForTrack().then(({ stream }) => {
      video.srcObject = stream;
      video.play().catch((err) => state.errors.push(`play: ${err}`));
    });
    return sub.subscriptionId;
  }

  const pick = (s, keys) => Object.fromEntries(keys.map((k) => [k, s[k] ?? null]));
  const INBOUND_KEYS = [
    'frameWidth', 'frameHeight', 'framesDecoded', 'framesDropped', 'framesReceived', 'framesPerSecond',
    'freezeCount', 'totalFreezesDuration', 'pauseCount', 'totalPausesDuration', 'nackCount', 'pliCount',
    'firCount', 'packetsLost', 'packetsReceived', 'bytesReceived', 'keyFramesDecoded', 'jitterBufferDelay',
    'jitterBufferEmittedCount',
  ];

  /** The subscription's inbound-rtp video stats (plus the codec's mimeType), or null. */
  async function inbound(subscriptionId) {
    const entry = state.subs.get(subscriptionId);
    const report = await entry?.sub.getStats();
    if (!report) return null;
    let out = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out = { at: Date.now(), ...pick(s, INBOUND_KEYS), codec: report.get(s.codecId)?.mimeType ?? null };
      }
    });
    return out;
  }

  /**
   * The publisher's outbound-rtp video stats by rid (`-` for a single encoding), and `bwe`:
   * the uplink estimate (availableOutgoingBitrate) of the selected candidate pair.
   */
  async function outbound() {
    const pc = state.room.peerConnection('publisher');
    const byRid = {};
    if (pc === undefined) return byRid;
    const report = await pc.getStats();
    report.forEach((s) => {
      // The publisher's uplink estimate (Chrome's send-side BWE) on the selected pair.
      if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate !== undefined) {
        byRid.bwe = s.availableOutgoingBitrate;
      }
      if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
      byRid[s.rid ?? '-'] = {
        ...pick(s, ['active', 'frameWidth', 'frameHeight', 'framesEncoded', 'framesSent', 'bytesSent', 'framesPerSecond', 'qualityLimitationReason', 'targetBitrate', 'nackCount', 'pliCount', 'keyFramesEncoded', 'retransmittedPacketsSent', 'rtxSsrc']),
        codec: report.get(s.codecId)?.mimeType ?? null,
      };
    });
    return byRid;
  }

  let sampling;
  /** Samples `outbound()` every `intervalMs` into state.outboundSamples. */
  function sampleOutbound(intervalMs = 250) {
    clearInterval(sampling);
    sampling = setInterval(async () => {
      state.outboundSamples.push({ at: Date.now(), byRid: await outbound() });
      if (state.outboundSamples.length > 4_000) state.outboundSamples.splice(0, 2_000);
    }, intervalMs);
  }

  /**
   * Polls the inbound stats every 20 ms until `frameWidth` satisfies the condition
   * ({equals} or {below}) or `timeoutMs` passes. Returns the elapsed time from `since` (epoch
   * ms) to the first such sample, the first presented frame with that width (from
   * requestVideoFrameCallback), and the stats.
   */
  async function waitWidth(subscriptionId, { equals, below }, { since = Date.now(), timeoutMs = 2_000 } = {}) {
    const ok = (w) => w !== null && w !== undefined && (equals !== undefined ? w === equals : w < below);
    const deadline = since + timeoutMs;
    let stats = null;
    for (;;) {
      stats = await inbound(subscriptionId);
      if (stats !== null && ok(stats.frameWidth)) break;
      if (Date.now() >= deadline) return { ok: false, ms: null, displayMs: null, stats };
      await new Promise((r) => setTimeout(r, 20));
    }
    // The decoded frame is presented a moment later: wait up to 500 ms for it.
    const frames = state.subs.get(subscriptionId).frames;
    const presentDeadline = Date.now() + 500;
    let frame;
    while ((frame = frames.find(([t, w]) => t >= since && ok(w))) === undefined && Date.now() < presentDeadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    return { ok: true, ms: stats.at - since, displayMs: frame ? Math.round(frame[0] - since) : null, stats };
  }

  /**
   * The longest time without a presented frame in [from, to] (epoch ms), counting a freeze
   * still going on at `to`.
   */
  function maxFrameGap(subscriptionId, from, to = Date.now()) {
    const frames = state.subs.get(subscriptionId)?.frames ?? [];
    let previous = null;
    let max = 0;
    let at = null;
    let count = 0;
    for (const [t] of frames) {
      if (t < from) {
        previous = t;
        continue;
      }
      if (t > to) break;
      count += 1;
      if (previous !== null && t - previous > max) {
        max = t - previous;
        at = previous;
      }
      previous = t;
    }
    if (previous !== null && to - previous > max) {
      max = to - previous;
      at = previous;
    }
    return { maxGapMs: Math.round(max), at: at === null ? null : Math.round(at), frames: count };
  }

  async function setPreferredLayer(subscriptionId, spatial, temporal) {
    const at = Date.now();
    await state.subs.get(subscriptionId).sub.setPreferredLayer(spatial, temporal);
    return { at, acked: Date.now() };
  }

  function publisherLayers(publicationId) {
    return state.room.publisherLayers(publicationId) ?? null;
  }

  function subscriptionLayers(subscriptionId) {
    const sub = state.subs.get(subscriptionId)?.sub;
    return sub ? { current: sub.currentLayer ?? null, target: sub.targetLayer ?? null, reason: sub.layerChangeReason ?? null } : null;
  }

  window.probe = {
    state,
    connect,
    publishCamera,
    subscribeVideo,
    inbound,
    outbound,
    sampleOutbound,
    waitWidth,
    maxFrameGap,
    setPreferredLayer,
    publisherLayers,
    subscriptionLayers,
  };
})();
