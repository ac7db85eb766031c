// Active speakers, end to end: two Chromium publishers in one room — one publishes a loud tone,
// the other silence (both WebAudio tracks, so no microphone processing makes them differ from
// run to run) — and a third page that only listens to room events. The listener must be told
// the loud publisher speaks (and never the silent one), and that nobody does once it is muted.
// Chrome puts the RFC 6464 audio level of every packet in the `ssrc-audio-level` header
// extension the server negotiates; nothing here decodes audio. The server forwards that level to
// subscribers in their own negotiation of the extension, so a subscribing page reads each
// publisher's level from `getSynchronizationSources()`.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { closePage, launchBrowser, startServer, uniqueRoom, waitFor, withDiagnostics } from './harness.mjs';
import { joinPage, report } from './probe.mjs';

/** From the first loud packet to the first announcement: one or two 300 ms intervals, plus slack. */
const FIRST_SPEAKER_LIMIT_MS = 2_000;
/** From muting to the empty list: the server's 900 ms hangover plus an interval, plus slack. */
const EMPTY_LIMIT_MS = 2_000;

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer('speakers');
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/**
 * In the page: publish one WebAudio track — a full-scale 440 Hz tone when `loud`, else the
 * silence of a destination nothing is connected to. Returns the epoch time publishing finished.
 */
function publishTone(page, loud) {
  return page.evaluate(async (loud) => {
    const context = new AudioContext();
    await context.resume();
    const destination = context.createMediaStreamDestination();
    if (loud) {
      const oscillator = context.createOscillator();
      oscillator.frequency.value = 440;
      oscillator.connect(destination);
      oscillator.start();
    }
    window.speakerTrack = destination.stream.getAudioTracks()[0];
    await window.probe.state.room.publish(destination.stream);
    return Date.now();
  }, loud);
}

/** In the page: record every `activeSpeakersChanged` with its epoch time. */
function recordSpeakers(page) {
  return page.evaluate(() => {
    window.speakerEvents = [];
    window.probe.state.room.on('activeSpeakersChanged', ({ speakers }) =>
      window.speakerEvents.push({ at: Date.now(), speakers }),
    );
  });
}

const speakerEvents = (page) => page.evaluate(() => window.speakerEvents);

test('the loud publisher is the active speaker, the silent one never', { timeout: 90_000 }, async () => {
  await withDiagnostics('speakers', server, () => pages, async () => {
    const room = uniqueRoom('speakers');
    const listener = await joinPage(browser, server, room, 'listener', { pages });
    await recordSpeakers(listener);
    const loud = await joinPage(browser, server, room, 'loud', { pages });
    await recordSpeakers(loud);
    const silent = await joinPage(browser, server, room, 'silent', { pages });
    const participantId = (page) => page.evaluate(() => window.probe.state.room.localParticipant.participantId);
    const loudId = await participantId(loud);
    const silentId = await participantId(silent);

    await publishTone(silent, false);
    const loudPublishedAt = await publishTone(loud, true);

    // The first packet that can carry a level leaves once ICE and DTLS are up: measure from it.
    const firstPacketAt = await waitFor(
      'loud: first audio packet sent',
      () =>
        loud.evaluate(async () => {
          const report = await window.probe.state.room.peerConnection('publisher').getStats();
          let sent = 0;
          report.forEach((s) => {
            if (s.type === 'outbound-rtp' && s.kind === 'audio') sent = s.packetsSent ?? 0;
          });
          return sent > 0 ? Date.now() : null;
        }),
      (at) => at !== null,
      { timeoutMs: 15_000, intervalMs: 20 },
    );

    const named = await waitFor(
      'listener: activeSpeakersChanged naming the loud publisher',
      () => speakerEvents(listener),
      (events) => events.some((e) => e.speakers.some((s) => s.participantId === loudId)),
      { timeoutMs: 15_000, intervalMs: 50 },
    );
    const first = named.find((e) => e.speakers.some((s) => s.participantId === loudId));
    const toFirstSpeakerMs = first.at - firstPacketAt;

    // Let it run: while the tone plays the list must stay as it is (no flapping).
    await new Promise((r) => setTimeout(r, 3_000));
    const steady = await speakerEvents(listener);
    const currentSpeakers = await listener.evaluate(() => window.probe.state.room.activeSpeakers);

    // The listener subscribes to both tones and plays them: the level of each forwarded packet
    // reaches its browser (`getSynchronizationSources().audioLevel`, which Chrome fills as it
    // plays audio out). The silence may show no source at all (Chrome's DTX sends next to
    // nothing), but never a loud level.
    await listener.evaluate(async () => {
      const room = window.probe.state.room;
      window.levelTracks = {};
      for (const publication of room.publications.values()) {
        if (publication.kind !== 'audio') continue;
        const subscription = await room.subscribe(publication.publicationId);
        const { track, stream } = await subscription.waitForTrack();
        window.levelTracks[publication.participantId] = track.id;
        // Chrome reads a received packet's level when it plays the audio out.
        const audio = document.body.appendChild(document.createElement('audio'));
        audio.srcObject = stream;
        await audio.play();
      }
    });
    const levels = await waitFor(
      'listener: the publishers\' levels on the received audio',
      () =>
        listener.evaluate(() => {
          const levels = {};
          for (const receiver of window.probe.state.room.peerConnection('subscriber').getReceivers()) {
            const entry = Object.entries(window.levelTracks).find(([, id]) => id === receiver.track.id);
            const level = receiver.getSynchronizationSources()[0]?.audioLevel;
            if (entry !== undefined && level !== undefined) levels[entry[0]] = level;
          }
          return levels;
        }),
      (levels) => levels[loudId] > 0.1,
      { timeoutMs: 10_000, intervalMs: 100 },
    );

    // Someone joining now is told at once, though the list does not change.
    const lateJoinStarted = Date.now();
    const late = await joinPage(browser, server, room, 'late', { pages });
    const lateSpeakers = await waitFor(
      'late joiner: room.activeSpeakers naming the loud publisher',
      () => late.evaluate(() => window.probe.state.room.activeSpeakers),
      (speakers) => speakers.some((s) => s.participantId === loudId),
      { timeoutMs: 5_000, intervalMs: 20 },
    );
    const lateJoinMs = Date.now() - lateJoinStarted;

    const mutedAt = await loud.evaluate(() => {
      window.speakerTrack.enabled = false; // Chrome then sends digital silence (level 127)
      return Date.now();
    });
    const all = await waitFor(
      'listener: activeSpeakersChanged with an empty list after muting',
      () => speakerEvents(listener),
      (events) => events.some((e) => e.at >= mutedAt && e.speakers.length === 0),
      { timeoutMs: 10_000, intervalMs: 50 },
    );
    const emptied = all.find((e) => e.at >= mutedAt && e.speakers.length === 0);
    const toEmptyMs = emptied.at - mutedAt;
    const loudSaw = await speakerEvents(loud);

    report('speakers', {
      FIRST_SPEAKER_MS: toFirstSpeakerMs,
      FROM_PUBLISH_MS: first.at - loudPublishedAt,
      EMPTY_AFTER_MUTE_MS: toEmptyMs,
      LATE_JOIN_MS: lateJoinMs,
      LEVEL: first.speakers.find((s) => s.participantId === loudId).level,
      FORWARDED_LEVELS: `${levels[loudId]} / ${levels[silentId] ?? 'none'}`,
      EVENTS: all.length,
    });
    console.log(`speakers: events ${JSON.stringify(all.map((e) => e.speakers.map((s) => `${s.participantId}@${s.level}`)))}`);

    assert.ok(all.every((e) => e.speakers.every((s) => s.participantId !== silentId)), 'the silent publisher was named');
    assert.deepEqual(first.speakers.map((s) => s.participantId), [loudId]);
    assert.ok(first.speakers[0].level > 0.1, `a full-scale tone reads as ${first.speakers[0].level}`);
    assert.equal(steady.length, named.length, 'the list changed while the tone played steadily');
    assert.deepEqual(currentSpeakers.map((s) => s.participantId), [loudId], 'room.activeSpeakers');
    assert.ok(levels[loudId] > 0.1, `the loud tone's forwarded level reads ${levels[loudId]}`);
    assert.ok(
      levels[silentId] === undefined || levels[silentId] < 0.01,
      `the silence's forwarded level reads ${levels[silentId]}`,
    );
    assert.deepEqual(lateSpeakers.map((s) => s.participantId), [loudId], 'the late joiner');
    assert.ok(toFirstSpeakerMs <= FIRST_SPEAKER_LIMIT_MS, `first announcement after ${toFirstSpeakerMs} ms`);
    assert.ok(toEmptyMs <= EMPTY_LIMIT_MS, `list emptied ${toEmptyMs} ms after muting`);
    assert.deepEqual(all.at(-1).speakers, [], 'the last list is empty');
    // Everyone in the room is told, the speaker included.
    assert.ok(loudSaw.some((e) => e.speakers.some((s) => s.participantId === loudId)), 'the speaker was not told');
    assert.deepEqual(await listener.evaluate(() => window.probe.state.errors), []);

    for (const page of [loud, silent, listener, late]) await closePage(page);
  });
});
