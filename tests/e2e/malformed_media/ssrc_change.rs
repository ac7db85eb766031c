//! SSRC changes mid-stream through the real input path. A webrtc-rs publisher's outgoing RTP
//! moves to another SSRC below its sender ([`SsrcSwitch`]) and is SRTP-protected with the
//! session's keys, as an encoder restarted behind the same connection sends it: new SSRC, own
//! sequence numbers and timestamps, no renegotiation. The server continues the publication:
//! its viewer goes on from the new stream's first keyframe on the same track, and again when
//! the publisher returns to its signaled SSRC. Three ways: without MID (a connection of one
//! media section), with the MID header extension, and a simulcast layer named by its rid. A
//! publisher cycling through a thousand SSRCs is bounded (datagrams of SSRCs past its
//! connection's allowance are dropped unread), harms no other room, and its stream comes back
//! on its signaled SSRC.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rtc::rtp;
use rtc::rtp::extension::HeaderExtension;
use sluice_e2e::peer::{ClientPeer, VP8, mid_extension, rid_extension};
use sluice_e2e::{SignalClient, TestServer, init_tracing, token};
use sluice_signaling::protocol::{ClientMessage, ServerMessage};

use super::ssrc_switch::{SsrcInterceptor, SsrcSwitch};
use super::{MAX_VICTIM_GAP, PACING, PANICS, Publisher, count_panics, view, window_figures};
use crate::synthetic::{KEYFRAME_EVERY, video_index, video_packet};

/// The SSRC the publisher signals ([`video_packet`]'s).
const SIGNALED: u32 = 0x1111;
const NEW_SSRC: u32 = 0x7e57_0001;
/// The simulcast track's layers: the low one signaled and silent, the high one sending.
const LAYERS: [(&str, u32); 2] = [("q", 0x1110), (RID, SIGNALED)];
const RID: &str = "f";
/// Above the NACK responder (`Slot::NackResponder`, 4_000), so its history holds what went
/// out: a restarted encoder has no retransmissions of its old stream's packets.
const SWITCH_SLOT: usize = 4_500;
/// A switch is set for the packet this many after the next one to be written (packets
/// written before it may not have gone through the client's chain yet).
const SWITCH_LEAD: u32 = 3;
/// How many packets the publisher sends on the new SSRC, then on its signaled one again (at
/// [`PACING`]: 2.5 s and 1.5 s).
const ON_NEW_SSRC: u32 = 250;
const BACK_ON_SIGNALED: u32 = 150;
/// The viewer's longest silence allowed across a switch: the new stream is forwarded from its
/// first keyframe, at most 300 ms away at 100 packets/s; the rest is scheduling.
const MAX_SWITCH_GAP: Duration = Duration::from_millis(800);
/// Of the packets sent from that keyframe on, the share the viewer must get (per cent).
const MIN_DELIVERED_PERCENT: usize = 90;
const CYCLED_SSRCS: u32 = 1000;
const PACKETS_PER_SSRC: u16 = 2;
/// SSRCs the other connections may first send RTCP from while the attacker cycles: a
/// webrtc-rs client reports, NACKs and asks for keyframes from a sender SSRC each.
const OTHER_NEW_SENDERS: u32 = 8;

/// How the publisher names its stream besides the SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// No MID or RID on the packets: the connection has one media section.
    Nothing,
    /// The MID header extension on every packet.
    Mid,
    /// The high layer of a simulcast track: MID and RID on every packet.
    MidAndRid,
}

struct SwitchingPublisher {
    publisher: Publisher,
    naming: Naming,
    switch: Arc<SsrcSwitch>,
}

impl SwitchingPublisher {
    fn extensions(&self) -> Vec<HeaderExtension> {
        let mid = &self.publisher.mid;
        match self.naming {
            Naming::Nothing => Vec::new(),
            Naming::Mid => vec![mid_extension(mid)],
            Naming::MidAndRid => vec![mid_extension(mid), rid_extension(RID)],
        }
    }

    async fn write(&self, index: u32) -> Result<()> {
        self.publisher
            .track
            .write_rtp_with_extensions(video_packet(index, 0, 0), &self.extensions())
            .await?;
        Ok(())
    }
}

/// The SSRCs a connection of one media section may use: six, and the server's allowance.
fn one_section_allowance() -> u32 {
    let allowance = sluice_sfu::shard::ShardConfig::default().ssrc_allowance;
    6 + u32::try_from(allowance).unwrap_or(u32::MAX)
}

/// Joins `room` as `identity` and publishes one VP8 track on [`SIGNALED`] (with
/// [`Naming::MidAndRid`] as the high layer of a simulcast track) through a peer whose RTP can
/// be switched to other SSRCs.
async fn publish_switching(
    server: &TestServer,
    room: &str,
    identity: &str,
    naming: Naming,
) -> Result<SwitchingPublisher> {
    let switch = SsrcSwitch::new(SIGNALED);
    // webrtc-rs negotiates the MID and RID header extensions by default: `naming` decides
    // what the packets carry.
    let peer = ClientPeer::with_interceptor(
        rtc::interceptor::Slot::Custom(SWITCH_SLOT),
        Box::new(SsrcInterceptor::new(Arc::clone(&switch))),
    )
    .await?;
    let (track, rids) = match naming {
        Naming::MidAndRid => (
            peer.add_simulcast_track(VP8, &LAYERS).await?,
            Some(LAYERS.iter().map(|(rid, _)| (*rid).to_owned()).collect()),
        ),
        Naming::Nothing | Naming::Mid => (peer.add_send_track(VP8, SIGNALED).await?, None),
    };
    let (publisher, _) =
        super::publish_track(server, room, identity, (peer, track), rids, false).await?;
    Ok(SwitchingPublisher {
        publisher,
        naming,
        switch,
    })
}

/// Sends the synthetic video stream at [`PACING`] until `stop`; `next` is the index of the
/// next packet (the test reads it at a switch).
fn send(
    encoder: Arc<SwitchingPublisher>,
    next: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            encoder.write(next.fetch_add(1, Ordering::SeqCst)).await?;
            tokio::time::sleep(PACING).await;
        }
        Ok(())
    })
}

/// Waits until `count` of the viewer's packets satisfy `wanted`.
async fn received(
    log: &Mutex<Vec<(Instant, rtp::Packet)>>,
    count: usize,
    wanted: impl Fn(&rtp::Packet) -> bool,
    what: &str,
) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(5);
    while log
        .lock()
        .expect("log")
        .iter()
        .filter(|(_, p)| wanted(p))
        .count()
        < count
    {
        ensure!(Instant::now() < until, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Waits until the sender has written packet `index` (its counter passed it), within twice
/// the time it takes at [`PACING`] and at least 5 s.
async fn sent_up_to(next: &AtomicU32, index: u32) -> Result<()> {
    let ahead = index.saturating_sub(next.load(Ordering::SeqCst));
    let until = Instant::now() + (PACING * ahead * 2).max(Duration::from_secs(5));
    while next.load(Ordering::SeqCst) <= index {
        ensure!(
            Instant::now() < until,
            "the sender stalled before packet {index}"
        );
        tokio::time::sleep(PACING).await;
    }
    Ok(())
}

/// Of the packets `from..to` sent, those from the first keyframe on: (sent, received).
fn delivered(log: &[(Instant, rtp::Packet)], from: u32, to: u32) -> (usize, usize) {
    let keyframe = from.next_multiple_of(KEYFRAME_EVERY);
    let sent = to.saturating_sub(keyframe) as usize;
    let got = log
        .iter()
        .filter_map(|(_, p)| video_index(&p.payload))
        .filter(|index| (keyframe..to).contains(index))
        .count();
    (sent, got)
}

/// The publisher restarts its encoder on a new SSRC mid-stream, then returns to its signaled
/// one; its viewer must go on each time, on one track with contiguous numbering.
async fn an_encoder_restart_continues_the_publication(naming: Naming) -> Result<()> {
    init_tracing();
    count_panics();
    let server = TestServer::start().await?;
    let encoder = Arc::new(publish_switching(&server, "restart", "encoder", naming).await?);
    let (next, stop) = (
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let sender = send(Arc::clone(&encoder), Arc::clone(&next), Arc::clone(&stop));
    let viewer = view(
        &server,
        "restart",
        "viewer",
        &encoder.publisher.publication_id,
    )
    .await?;
    received(
        &viewer.log,
        50,
        |_| true,
        "the stream never reached its viewer",
    )
    .await?;

    let switched = Instant::now();
    let switched_at = next.load(Ordering::SeqCst) + SWITCH_LEAD;
    encoder.switch.switch_at(switched_at, Some(NEW_SSRC));
    sent_up_to(&next, switched_at + ON_NEW_SSRC).await?;
    let back = Instant::now();
    let back_at = next.load(Ordering::SeqCst) + SWITCH_LEAD;
    encoder.switch.switch_at(back_at, None);
    sent_up_to(&next, back_at + BACK_ON_SIGNALED).await?;
    stop.store(true, Ordering::Relaxed);
    sender.await.context("sender")??;
    let ended = Instant::now();
    let end_at = next.load(Ordering::SeqCst);
    // The last packet on its way (its loss shows in the counts below).
    let last = end_at - 1;
    let _ = received(
        &viewer.log,
        1,
        |p| video_index(&p.payload) == Some(last),
        "the last packet did not arrive",
    )
    .await;

    let log = viewer.log.lock().expect("log").clone();
    let (on_new, new_gap) = window_figures(&log, switched, back);
    let (on_signaled, back_gap) = window_figures(&log, back, ended);
    let (new_sent, new_got) = delivered(&log, switched_at, back_at);
    let (back_sent, back_got) = delivered(&log, back_at, end_at);
    let ssrcs: std::collections::BTreeSet<u32> = log.iter().map(|(_, p)| p.header.ssrc).collect();
    let indices: Vec<u32> = log
        .iter()
        .filter_map(|(_, p)| video_index(&p.payload))
        .collect();
    let sequence_steps: std::collections::BTreeSet<u16> = log
        .windows(2)
        .map(|w| {
            w[1].1
                .header
                .sequence_number
                .wrapping_sub(w[0].1.header.sequence_number)
        })
        .collect();
    eprintln!(
        "SSRC change ({naming:?}): {} packets sent on the new SSRC; viewer after the switch: \
         {on_new} packets in {:?}, longest gap {new_gap:?}, {new_got} of the {new_sent} sent \
         from its first keyframe; back on the signaled SSRC: {on_signaled} packets, longest \
         gap {back_gap:?}, {back_got} of {back_sent}; SSRCs seen by the viewer {ssrcs:x?}, \
         sequence steps {sequence_steps:?}; panics: {}",
        encoder.switch.rewritten(),
        back - switched,
        PANICS.load(Ordering::SeqCst)
    );
    ensure!(PANICS.load(Ordering::SeqCst) == 0, "the server panicked");
    ensure!(
        encoder.switch.rewritten() >= 200,
        "too few packets on the new SSRC"
    );
    ensure!(
        new_got * 100 >= new_sent * MIN_DELIVERED_PERCENT,
        "after the switch the viewer got {new_got} of {new_sent} packets"
    );
    ensure!(
        new_gap <= MAX_SWITCH_GAP,
        "the viewer went {new_gap:?} without a packet after the switch"
    );
    ensure!(
        back_got * 100 >= back_sent * MIN_DELIVERED_PERCENT,
        "back on the signaled SSRC the viewer got {back_got} of {back_sent} packets"
    );
    ensure!(
        back_gap <= MAX_SWITCH_GAP,
        "the viewer went {back_gap:?} without a packet after the return"
    );
    ensure!(ssrcs.len() == 1, "the viewer saw SSRCs {ssrcs:x?}");
    ensure!(
        sequence_steps.iter().all(|step| *step == 1),
        "the viewer's sequence numbers are not contiguous: steps {sequence_steps:?}"
    );
    ensure!(
        indices.windows(2).all(|w| w[0] < w[1]),
        "the viewer got packets out of order or twice"
    );
    ensure!(
        log.windows(2).all(|w| {
            let step = w[1]
                .1
                .header
                .timestamp
                .wrapping_sub(w[0].1.header.timestamp);
            step < u32::MAX / 2
        }),
        "the viewer's timestamps went backwards"
    );
    encoder.publisher.peer.close().await;
    viewer.peer.close().await;
    drop(viewer.signal);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssrc_change_without_mid_continues_the_publication() -> Result<()> {
    an_encoder_restart_continues_the_publication(Naming::Nothing).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssrc_change_with_mid_continues_the_publication() -> Result<()> {
    an_encoder_restart_continues_the_publication(Naming::Mid).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssrc_change_of_a_rid_layer_continues_the_publication() -> Result<()> {
    an_encoder_restart_continues_the_publication(Naming::MidAndRid).await
}

/// This process's resident set, in KiB (the server and every client in it).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrcs_cycled_by_a_publisher_are_bounded_and_harm_no_other_room() -> Result<()> {
    init_tracing();
    count_panics();
    let server = TestServer::start().await?;
    let (victim, _) = super::publish(&server, "victim", "camera", false).await?;
    let stop_victim = Arc::new(AtomicBool::new(false));
    let victim_sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let victim_sender = super::stream(
        Arc::clone(&victim.track),
        0,
        Arc::clone(&stop_victim),
        Arc::clone(&victim_sent),
    );
    let victim_viewer = view(&server, "victim", "viewer", &victim.publication_id).await?;

    // With MID on every packet: each new SSRC names the publication's section, so each one
    // the gate lets through is taken up as the publication's stream.
    let attacker = Arc::new(publish_switching(&server, "cycle", "attacker", Naming::Mid).await?);
    let (next, stop) = (
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let sender = send(Arc::clone(&attacker), Arc::clone(&next), Arc::clone(&stop));
    let watcher = view(
        &server,
        "cycle",
        "watcher",
        &attacker.publisher.publication_id,
    )
    .await?;
    received(
        &watcher.log,
        50,
        |_| true,
        "the stream never reached its watcher",
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    sender.await.context("sender")??;

    let before = server.sfu.shard_stats().await?;
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut index = next.load(Ordering::SeqCst);
    attacker
        .switch
        .cycle_at(index, 0x5000_0000, CYCLED_SSRCS, PACKETS_PER_SSRC);
    for i in 0..CYCLED_SSRCS * u32::from(PACKETS_PER_SSRC) {
        attacker.write(index).await?;
        index += 1;
        // Paced a little, so that the server's receive buffer takes the burst.
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let cycled = Instant::now();

    // Back on its signaled SSRC (the cycle ended), from the next keyframe.
    let resume_at = index.next_multiple_of(KEYFRAME_EVERY);
    next.store(resume_at, Ordering::SeqCst);
    stop.store(false, Ordering::Relaxed);
    let sender = send(Arc::clone(&attacker), Arc::clone(&next), Arc::clone(&stop));
    let resumed = received(
        &watcher.log,
        50,
        |p| video_index(&p.payload).is_some_and(|i| i >= resume_at),
        "the stream did not come back on its signaled SSRC",
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    sender.await.context("sender")??;
    let after = server.sfu.shard_stats().await?;
    let rss_after = rss_kib();

    // The server still answers signaling.
    let mut late = SignalClient::connect(&server.ws_url()).await?;
    let joined = late.join(token("after", "late")).await?;
    ensure!(
        matches!(joined, ServerMessage::Joined { .. }),
        "join after the cycling: {joined:?}"
    );
    let request_id = late.next_id();
    late.request(ClientMessage::Ping { request_id }).await?;
    let ended = Instant::now();

    stop_victim.store(true, Ordering::Relaxed);
    victim_sender.await.context("victim sender")??;
    let (victim_packets, victim_gap) =
        window_figures(&victim_viewer.log.lock().expect("log"), started, ended);
    let victim_sent = victim_sent
        .lock()
        .expect("sent")
        .iter()
        .filter(|at| (started..ended).contains(*at))
        .count();
    let refused = after.ssrcs_refused - before.ssrcs_refused;
    let admitted = after.ssrcs_admitted - before.ssrcs_admitted;
    let datagrams = after.datagrams_in - before.datagrams_in;
    let allowance = one_section_allowance();
    eprintln!(
        "SSRC cycling: {CYCLED_SSRCS} SSRCs, {PACKETS_PER_SSRC} packets each, in {:?}; datagrams refused unread \
         {refused} of {datagrams} read, SSRCs let in {admitted}; process RSS {rss_before:?} -> {rss_after:?} KiB; victim viewer over {:?}: \
         {victim_packets} packets of {victim_sent} sent, longest gap {victim_gap:?}; the \
         attacker's stream back on its signaled SSRC: {}; panics: {}",
        cycled - started,
        ended - started,
        resumed.is_ok(),
        PANICS.load(Ordering::SeqCst)
    );
    ensure!(PANICS.load(Ordering::SeqCst) == 0, "the server panicked");
    // The attacker's signaled SSRC was let in before: what comes in now is its new ones, up
    // to its connection's allowance, and the other connections' first RTCP senders.
    ensure!(
        admitted < u64::from(allowance + OTHER_NEW_SENDERS),
        "{admitted} new SSRCs let in: more than the attacker's connection's allowance"
    );
    // Every datagram of the SSRCs left out is refused (one of each may be lost on the way).
    ensure!(
        refused >= u64::from(CYCLED_SSRCS - allowance),
        "only {refused} datagrams refused"
    );
    ensure!(
        victim_gap <= MAX_VICTIM_GAP,
        "the victim viewer went {victim_gap:?} without a packet"
    );
    ensure!(
        victim_packets * 100 >= victim_sent * 95,
        "the victim viewer got {victim_packets} of {victim_sent} packets"
    );
    resumed?;
    let mut attacker = Arc::into_inner(attacker)
        .context("the publisher is still shared")?
        .publisher;
    let request_id = attacker.signal.next_id();
    attacker
        .signal
        .request(ClientMessage::Ping { request_id })
        .await?;
    for peer in [
        &victim.peer,
        &victim_viewer.peer,
        &attacker.peer,
        &watcher.peer,
    ] {
        peer.close().await;
    }
    drop((victim.signal, victim_viewer.signal, watcher.signal, late));
    server.stop().await;
    Ok(())
}
