// A seeded UDP impairment relay for the browser tests: it sits between a browser peer
// connection and the SFU on loopback and can drop, rate-limit and delay what passes, changed
// at run time. No root, no netem: just two UDP sockets.
//
//   browser ──▶ front (127.0.0.1:frontPort) ──relay──▶ back (127.0.0.1:backPort) ──▶ server
//   browser ◀── front ◀──relay── back ◀── server
//
// The page rewrites the server's ICE candidates to point at `front` and its own candidates to
// point at `back` (see relayPeerConnectionFactory in page-probe.js), and reports the original
// addresses with `learn()`. Every path between the two ICE agents then crosses the relay:
// STUN requests from the browser are answered back to the socket that sent them (by
// transaction id), everything else from the server goes to the browser address that last
// sent media (or its announced loopback candidate).
//
// Directions: `down` = server → browser, `up` = browser → server. Impairments (per direction):
//   loss       probability of dropping an RTP/RTCP datagram (STUN and DTLS are never dropped
//              at random, so ICE and the handshake stay up), decided by a seeded PRNG
//   rateBps    token-bucket rate cap for everything in that direction; a bounded queue
//              (queueMs of data at that rate) absorbs bursts, the tail is dropped
//   delayMs    extra one-way delay
//
// RTP headers are not encrypted by SRTP (only the payload), so the relay reads SSRC and
// sequence number of every server → browser RTP packet: it knows which ones it dropped and
// when a retransmission with the same SSRC + seq passed (NACK answered). Retransmissions sent
// as RTX (own SSRC, original seq inside the encrypted payload) cannot be matched; they are
// counted by SSRC.
import { createSocket } from 'node:dgram';

/** mulberry32: a small seeded PRNG returning floats in [0, 1). */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** RFC 7983 demultiplexing by the first byte. */
function classify(buf) {
  if (buf.length === 0) return 'other';
  const b = buf[0];
  if (b <= 3) return 'stun';
  if (b >= 20 && b <= 63) return 'dtls';
  if (b >= 128 && b <= 191 && buf.length >= 12) {
    const pt = buf[1] & 0x7f;
    return pt >= 64 && pt <= 95 ? 'rtcp' : 'rtp';
  }
  return 'other';
}

const STUN_MAGIC = 0x2112a442;

/** STUN class and transaction id, or undefined. */
function stunInfo(buf) {
  if (buf.length < 20 || buf.readUInt32BE(4) !== STUN_MAGIC) return undefined;
  const type = buf.readUInt16BE(0);
  const cls = ((type & 0x0100) >> 7) | ((type & 0x0010) >> 4); // 0 request, 1 indication, 2 success, 3 error
  return { cls, txid: buf.subarray(8, 20).toString('hex') };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const DEFAULTS = { loss: 0, rateBps: Infinity, queueMs: 200, delayMs: 0 };

class Direction {
  constructor(name, seed, send) {
    this.name = name;
    this.random = prng(seed);
    this.send = send;
    this.config = { ...DEFAULTS };
    this.queue = [];
    this.queueBytes = 0;
    this.tokens = 0;
    this.lastRefill = performance.now();
    this.timer = undefined;
    this.counters = { received: 0, forwarded: 0, lostRandom: 0, droppedQueue: 0, bytesForwarded: 0 };
    this.delivered = []; // [time ms, bytes], for the delivered rate
  }

  configure(patch) {
    this.config = { ...this.config, ...patch };
    if (!Number.isFinite(this.config.rateBps)) {
      // Cap lifted: flush what waits.
      clearTimeout(this.timer);
      this.timer = undefined;
      const waiting = this.queue;
      this.queue = [];
      this.queueBytes = 0;
      for (const item of waiting) this.emit(item);
    } else {
      this.refill();
      this.tokens = Math.min(this.tokens, this.burstBytes());
    }
  }

  burstBytes() {
    // 10 ms of data, at least two full-size packets.
    return Math.max(2_500, (this.config.rateBps / 8) * 0.01);
  }

  queueLimitBytes() {
    return Math.max(3_000, (this.config.rateBps / 8) * (this.config.queueMs / 1000));
  }

  refill() {
    const now = performance.now();
    this.tokens = Math.min(this.burstBytes(), this.tokens + ((now - this.lastRefill) * this.config.rateBps) / 8000);
    this.lastRefill = now;
  }

  /** Returns the fate of the datagram: 'lost', 'queueDrop' or 'passed'. */
  push(item) {
    this.counters.received += 1;
    if ((item.kind === 'rtp' || item.kind === 'rtcp') && this.config.loss > 0 && this.random() < this.config.loss) {
      this.counters.lostRandom += 1;
      return 'lost';
    }
    if (!Number.isFinite(this.config.rateBps)) {
      this.emit(item);
      return 'passed';
    }
    if (this.queueBytes + item.buf.length > this.queueLimitBytes()) {
      this.counters.droppedQueue += 1;
      return 'queueDrop';
    }
    this.queue.push(item);
    this.queueBytes += item.buf.length;
    this.drain();
    return 'passed';
  }

  drain() {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.refill();
    while (this.queue.length > 0 && this.tokens >= this.queue[0].buf.length) {
      const item = this.queue.shift();
      this.queueBytes -= item.buf.length;
      this.tokens -= item.buf.length;
      this.emit(item);
    }
    if (this.queue.length > 0 && Number.isFinite(this.config.rateBps)) {
      const missing = this.queue[0].buf.length - this.tokens;
      const waitMs = Math.max(1, Math.ceil((missing * 8000) / this.config.rateBps));
      this.timer = setTimeout(() => this.drain(), waitMs);
    }
  }

  emit(item) {
    const out = () => {
      this.counters.forwarded += 1;
      this.counters.bytesForwarded += item.buf.length;
      this.delivered.push([performance.now(), item.buf.length]);
      if (this.delivered.length > 20_000) this.delivered.splice(0, 10_000);
      this.send(item);
    };
    if (this.config.delayMs > 0) setTimeout(out, this.config.delayMs);
    else out();
  }

  /** Delivered bit rate over the last `windowMs`. */
  rateBps(windowMs = 1_000) {
    const since = performance.now() - windowMs;
    let bytes = 0;
    for (let i = this.delivered.length - 1; i >= 0 && this.delivered[i][0] >= since; i--) bytes += this.delivered[i][1];
    return Math.round((bytes * 8 * 1000) / windowMs);
  }

  close() {
    clearTimeout(this.timer);
    this.queue = [];
  }
}

export class UdpRelay {
  constructor(front, back, seed) {
    this.front = front;
    this.back = back;
    this.frontPort = front.address().port;
    this.backPort = back.address().port;
    this.server = undefined; // {host, port}
    this.browserCandidate = undefined; // {host, port}
    this.browserMedia = undefined; // the browser address that last sent non-STUN traffic
    this.lastBrowserSource = undefined;
    this.transactions = new Map(); // STUN txid (browser requests) → browser address
    this.unroutable = { up: 0, down: 0 };
    this.retransmit = { drops: new Map(), queueDrops: new Map(), queueDropLatencies: [], latencies: [], markerLatencies: [], firstDropAt: undefined, firstLatencyMs: undefined, duplicates: 0, repeats: 0, lostRepairs: 0, ssrcs: new Map() };
    this.up = new Direction('up', seed ^ 0x5bd1e995, (item) => {
      if (this.server !== undefined) this.back.send(item.buf, this.server.port, this.server.host);
    });
    this.down = new Direction('down', seed ^ 0x1b873593, (item) => this.front.send(item.buf, item.to.port, item.to.address));
    front.on('message', (buf, rinfo) => this.fromBrowser(buf, rinfo));
    back.on('message', (buf, rinfo) => this.fromServer(buf, rinfo));
  }

  /** What the page learned from the candidates: `{server}` and/or `{browser}` addresses. */
  learn({ server, browser }) {
    if (server !== undefined) this.server = { host: server.host, port: server.port };
    if (browser !== undefined) this.browserCandidate = { address: browser.host, port: browser.port };
  }

  /** Changes the impairments of one direction ('up' or 'down'): {loss, rateBps, queueMs, delayMs}. */
  configure(direction, patch) {
    (direction === 'up' ? this.up : this.down).configure(patch);
  }

  fromBrowser(buf, rinfo) {
    const kind = classify(buf);
    const source = { address: rinfo.address, port: rinfo.port };
    this.lastBrowserSource = source;
    if (kind === 'stun') {
      const stun = stunInfo(buf);
      if (stun !== undefined && stun.cls === 0) {
        this.transactions.set(stun.txid, source);
        if (this.transactions.size > 2_000) this.transactions.delete(this.transactions.keys().next().value);
      }
    } else {
      this.browserMedia = source;
    }
    if (this.server === undefined) {
      this.unroutable.up += 1;
      return;
    }
    this.up.push({ buf, kind });
  }

  fromServer(buf, rinfo) {
    const kind = classify(buf);
    let to;
    if (kind === 'stun') {
      const stun = stunInfo(buf);
      if (stun !== undefined && stun.cls >= 2) to = this.transactions.get(stun.txid);
      to ??= this.browserCandidate ?? this.browserMedia ?? this.lastBrowserSource;
    } else {
      to = this.browserMedia ?? this.browserCandidate ?? this.lastBrowserSource;
    }
    if (to === undefined) {
      this.unroutable.down += 1;
      return;
    }
    const item = { buf, kind, to };
    if (kind !== 'rtp') {
      this.down.push(item);
      return;
    }
    const now = performance.now();
    const ssrc = buf.readUInt32BE(8);
    const seq = buf.readUInt16BE(2);
    const padding = (buf[0] & 0x20) !== 0;
    const marker = (buf[1] & 0x80) !== 0;
    const key = `${ssrc}:${seq}`;
    const perSsrc = this.retransmit.ssrcs.get(ssrc) ?? { packets: 0, pt: buf[1] & 0x7f };
    perSsrc.packets += 1;
    this.retransmit.ssrcs.set(ssrc, perSsrc);
    const queueDropped = this.retransmit.queueDrops.get(key);
    if (queueDropped !== undefined && queueDropped.answeredAt === undefined) {
      queueDropped.answeredAt = now;
      this.retransmit.queueDropLatencies.push(now - queueDropped.at);
    }
    const dropped = this.retransmit.drops.get(key);
    if (dropped !== undefined) {
      if (dropped.answeredAt === undefined) {
        dropped.answeredAt = now;
        const latency = now - dropped.at;
        this.retransmit.latencies.push(latency);
        if (dropped.marker) this.retransmit.markerLatencies.push(latency);
        if (dropped.first) this.retransmit.firstLatencyMs = latency;
      } else {
        // A further copy of a dropped packet (the server repeats each retransmission).
        this.retransmit.repeats += 1;
      }
    } else if (this.recentlyForwarded(key)) {
      this.retransmit.duplicates += 1;
    }
    if (this.arrived?.has(key)) {
      this.resent ??= [];
      this.resent.push({ ssrc, seq, at: Date.now() });
      if (this.resent.length > 20_000) this.resent.splice(0, 10_000);
    }
    this.rememberArrival(key);
    const fate = this.down.push(item);
    // A retransmission or its repeat lost as well: without another copy its frame waits for
    // the browser's next NACK, 100 ms later.
    if (fate === 'lost' && dropped !== undefined) this.retransmit.lostRepairs += 1;
    if (fate === 'lost' && dropped === undefined && !padding) {
      const first = this.retransmit.firstDropAt === undefined;
      if (first) this.retransmit.firstDropAt = now;
      this.retransmit.drops.set(key, { at: now, first, marker });
      if (this.retransmit.drops.size > 50_000) this.retransmit.drops.clear();
    } else if (fate === 'queueDrop' && dropped === undefined && !padding && !this.retransmit.queueDrops.has(key)) {
      // Tail drops of the rate cap: tracked apart, they are not the random-loss measurement.
      const q = this.retransmit.queueDrops;
      q.set(key, { at: now, marker });
      if (q.size > 50_000) q.clear();
    } else if (fate === 'passed') {
      this.rememberForwarded(key);
    }
  }

  rememberForwarded(key) {
    this.forwarded ??= new Set();
    this.forwardedOrder ??= [];
    if (this.forwarded.has(key)) return;
    this.forwarded.add(key);
    this.forwardedOrder.push(key);
    if (this.forwardedOrder.length > 5_000) this.forwarded.delete(this.forwardedOrder.shift());
  }

  rememberArrival(key) {
    this.arrived ??= new Map();
    this.arrivedOrder ??= [];
    if (this.arrived.has(key)) return;
    this.arrived.set(key, Date.now());
    this.arrivedOrder.push(key);
    if (this.arrivedOrder.length > 5_000) this.arrived.delete(this.arrivedOrder.shift());
  }

  /** When (epoch ms) the server first sent the packet `seq` of `ssrc` towards the browser
   * (whatever the relay then did with it), if recently. */
  firstSentAt(ssrc, seq) {
    return this.arrived?.get(`${ssrc}:${seq}`);
  }

  /** Packets sent towards the browser again (retransmissions, repeats): {ssrc, seq, at}. */
  resentPackets() {
    return [...(this.resent ?? [])];
  }

  recentlyForwarded(key) {
    return this.forwarded?.has(key) ?? false;
  }

  /** Clears the retransmission bookkeeping (call when a measurement window starts). */
  resetRetransmissions() {
    this.retransmit = { drops: new Map(), queueDrops: new Map(), queueDropLatencies: [], latencies: [], markerLatencies: [], firstDropAt: undefined, firstLatencyMs: undefined, duplicates: 0, repeats: 0, lostRepairs: 0, ssrcs: new Map() };
  }

  /**
   * NACK/retransmission figures since the last reset: drops of RTP packets, how many were
   * retransmitted (same SSRC + seq) and how long after the drop (ms).
   */
  retransmissions() {
    const r = this.retransmit;
    const sorted = [...r.latencies].sort((a, b) => a - b);
    const round = (v) => (v === null || v === undefined ? null : Math.round(v * 10) / 10);
    return {
      dropped: r.drops.size,
      answered: sorted.length,
      firstMs: round(r.firstLatencyMs),
      firstAnswered: r.firstLatencyMs !== undefined,
      p50Ms: round(percentile(sorted, 50)),
      p95Ms: round(percentile(sorted, 95)),
      maxMs: round(sorted.length ? sorted[sorted.length - 1] : null),
      duplicates: r.duplicates,
      repeats: r.repeats,
      lostRepairs: r.lostRepairs,
      // Drops of the last packet of a frame (RTP marker bit): the receiver notices them only
      // when the next frame starts, so their frame completes about one frame interval late.
      droppedFrameEnds: [...r.drops.values()].filter((d) => d.marker).length,
      // Rate-cap tail drops and how many of them were retransmitted later (after how long).
      queueDropped: r.queueDrops.size,
      queueDropsRetransmitted: r.queueDropLatencies.length,
      queueDropRetransmitP50Ms: round(percentile([...r.queueDropLatencies].sort((a, b) => a - b), 50)),
      frameEndP50Ms: round(percentile([...r.markerLatencies].sort((a, b) => a - b), 50)),
      ssrcs: Object.fromEntries([...r.ssrcs].map(([ssrc, v]) => [ssrc, v])),
    };
  }

  stats() {
    return {
      up: { ...this.up.counters, rateBps: this.up.rateBps() },
      down: { ...this.down.counters, rateBps: this.down.rateBps(), queueBytes: this.down.queueBytes },
      unroutable: { ...this.unroutable },
      server: this.server,
      browser: this.browserMedia ?? this.browserCandidate,
    };
  }

  close() {
    this.up.close();
    this.down.close();
    this.front.close();
    this.back.close();
  }
}

/** Binds the relay's two sockets on 127.0.0.1 (ephemeral ports). */
export async function startUdpRelay({ seed = 1 } = {}) {
  const bind = () =>
    new Promise((resolve, reject) => {
      const socket = createSocket('udp4');
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', () => {
        socket.off('error', reject);
        // A full socket buffer must not kill the test; the datagram is simply lost.
        socket.on('error', () => {});
        resolve(socket);
      });
    });
  const front = await bind();
  const back = await bind();
  return new UdpRelay(front, back, seed);
}
