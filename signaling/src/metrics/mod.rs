//! Prometheus `/metrics`: the server's counters in the text exposition format, every name
//! prefixed `sluice_` (the list and meanings: docs/operations.md).
//!
//! Nothing is counted per packet for this: each scrape reads the counters the media server,
//! the sessions and the RTMP ingest keep anyway ([`Sfu::stats`], [`SessionCounters`],
//! [`RtmpStreams`]) and hands them to a `metrics` recorder of this server's own (not the
//! process-global one), which renders them. Counters go through `Counter::absolute`, which
//! keeps the highest value seen, so a reading that missed a busy room never goes backwards.

mod process;

use std::sync::OnceLock;

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use sluice_sfu::ingest::RtmpStreams;
use sluice_sfu::runtime::{Sfu, SfuStats};
use sluice_sfu::shard::ShardStats;

use crate::cluster::Cluster;
use crate::session::SessionCounters;
pub(crate) use process::ProcessStats;

/// One server's metrics: its recorder and what it reads at each scrape.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    rtmp: OnceLock<RtmpStreams>,
    cluster: OnceLock<Cluster>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe);
        Self {
            recorder,
            handle,
            rtmp: OnceLock::new(),
            cluster: OnceLock::new(),
        }
    }

    /// Counts the RTMP ingest's streams too (the RTMP server starts after the HTTP server).
    /// Only the first call counts.
    pub fn watch_rtmp(&self, streams: RtmpStreams) {
        let _ = self.rtmp.set(streams);
    }

    /// Reports this node's cluster membership too (`sluice_cluster_redis_up`); only the
    /// first call counts.
    pub fn watch_cluster(&self, cluster: Cluster) {
        let _ = self.cluster.set(cluster);
    }

    /// Reads every source and renders the text exposition.
    pub async fn render(&self, sfu: &Sfu, sessions: &SessionCounters, draining: bool) -> String {
        let stats = sfu.stats().await;
        // A shard's thread stopped: its counters are gone (`/readyz` says so).
        let shard = sfu.shard_stats().await.ok();
        metrics::with_local_recorder(&self.recorder, || {
            record_sfu(&stats);
            record_admission(sfu);
            if let Some(shard) = &shard {
                record_shard(shard);
            }
            gauge!("sluice_websocket_sessions").set(sessions.open() as f64);
            counter!("sluice_signaling_rate_limited_total").absolute(sessions.rate_limited());
            gauge!("sluice_draining").set(if draining { 1.0 } else { 0.0 });
            if let Some(cluster) = self.cluster.get() {
                gauge!("sluice_cluster_redis_up").set(if cluster.is_up() { 1.0 } else { 0.0 });
            }
            if let Some(rtmp) = self.rtmp.get() {
                let counts = rtmp.counts();
                gauge!("sluice_rtmp_streams", "state" => "live").set(counts.live as f64);
                gauge!("sluice_rtmp_streams", "state" => "parked").set(counts.parked as f64);
            }
        });
        let mut text = self.handle.render();
        if let Some(process) = ProcessStats::read() {
            process.render(&mut text);
        }
        text
    }
}

fn record_sfu(stats: &SfuStats) {
    gauge!("sluice_rooms").set(stats.rooms as f64);
    gauge!("sluice_participants").set(stats.participants as f64);
    gauge!("sluice_publications").set(stats.publications as f64);
    gauge!("sluice_subscriptions").set(stats.subscriptions as f64);
    gauge!("sluice_stats_rooms_unanswered").set(stats.rooms_unanswered as f64);
    gauge!("sluice_room_queue_depth_max").set(stats.deepest_room_queue as f64);
    let media = &stats.media;
    counter!("sluice_packets_in_total").absolute(media.packets_in);
    counter!("sluice_bytes_in_total").absolute(media.bytes_in);
    counter!("sluice_packets_out_total").absolute(media.packets_out);
    counter!("sluice_bytes_out_total").absolute(media.bytes_out);
    for (reason, count) in media.drops_by_reason() {
        counter!("sluice_packets_dropped_total", "reason" => reason.as_str()).absolute(count);
    }
    counter!("sluice_nack_packets_total").absolute(media.nacked_packets);
    counter!("sluice_keyframe_requests_received_total").absolute(media.keyframe_requests_received);
    counter!("sluice_keyframe_requests_sent_total").absolute(media.keyframe_requests_sent);
}

fn record_admission(sfu: &Sfu) {
    let admission = sfu.admission_counts();
    gauge!("sluice_admission_subscribers").set(admission.subscribers as f64);
    counter!("sluice_admission_refused_total", "reason" => "max_subscribers")
        .absolute(admission.refused_capacity);
    counter!("sluice_admission_refused_total", "reason" => "cpu").absolute(admission.refused_busy);
    gauge!("sluice_shard_busy_ratio_max").set(sfu.busiest_shard_percent() / 100.0);
}

fn record_shard(shard: &ShardStats) {
    gauge!("sluice_shard_peers").set(shard.peers as f64);
    counter!("sluice_shard_datagrams_in_total").absolute(shard.datagrams_in);
    counter!("sluice_shard_datagrams_out_total").absolute(shard.datagrams_out);
    counter!("sluice_shard_forwarded_total").absolute(shard.forwarded);
    counter!("sluice_shard_forward_rejected_total").absolute(shard.forward_rejected);
    counter!("sluice_shard_unrouted_total").absolute(shard.unrouted);
    counter!("sluice_shard_egress_refused_total").absolute(shard.egress_refused);
    counter!("sluice_shard_send_failed_total").absolute(shard.send_failed);
    counter!("sluice_shard_events_dropped_total").absolute(shard.events_dropped);
    counter!("sluice_shard_tcp_refused_total").absolute(shard.tcp_refused);
    counter!("sluice_shard_handed_off_total").absolute(shard.handed_off);
    counter!("sluice_shard_hand_off_dropped_total").absolute(shard.hand_off_dropped);
    counter!("sluice_shard_stale_dropped_total").absolute(shard.stale_dropped);
    counter!("sluice_shard_ssrcs_refused_total").absolute(shard.ssrcs_refused);
    counter!("sluice_shard_ssrcs_admitted_total").absolute(shard.ssrcs_admitted);
    gauge!("sluice_shard_ingress_age_max_seconds").set(shard.ingress_age_max_ms as f64 / 1000.0);
    counter!("sluice_data_messages_received_total").absolute(shard.data_received);
    counter!("sluice_data_messages_rejected_total").absolute(shard.data_rejected);
    counter!("sluice_data_messages_delivered_total").absolute(shard.data_delivered);
    counter!("sluice_data_messages_dropped_total").absolute(shard.data_dropped);
}

/// The `# HELP` lines.
fn describe() {
    describe_gauge!(
        "sluice_cluster_redis_up",
        "1 while this node is registered in its cluster's Redis, 0 while Redis is unreachable (with --redis only)."
    );
    describe_gauge!("sluice_rooms", "Rooms with at least one participant.");
    describe_gauge!(
        "sluice_participants",
        "Participants in all rooms (RTMP publishers included)."
    );
    describe_gauge!("sluice_publications", "Published tracks in all rooms.");
    describe_gauge!("sluice_subscriptions", "Subscriptions in all rooms.");
    describe_gauge!(
        "sluice_stats_rooms_unanswered",
        "Rooms too busy to answer this scrape in time; their counts are missing from it."
    );
    describe_gauge!(
        "sluice_room_queue_depth_max",
        "Control commands waiting in the fullest room queue; at its bound requests to the room wait."
    );
    describe_counter!(
        "sluice_packets_in_total",
        "RTP packets that reached a room's routing core."
    );
    describe_counter!(
        "sluice_bytes_in_total",
        Unit::Bytes,
        "Payload bytes of sluice_packets_in_total."
    );
    describe_counter!(
        "sluice_packets_out_total",
        "RTP packets forwarded to subscriptions, one per subscription."
    );
    describe_counter!(
        "sluice_bytes_out_total",
        Unit::Bytes,
        "Payload bytes of sluice_packets_out_total."
    );
    describe_counter!(
        "sluice_packets_dropped_total",
        "RTP packets not forwarded, by reason; a per-subscription reason counts once per subscription."
    );
    describe_counter!(
        "sluice_nack_packets_total",
        "Lost packets named in subscribers' NACKs."
    );
    describe_counter!(
        "sluice_keyframe_requests_received_total",
        "Keyframe requests (PLI/FIR) from subscribers."
    );
    describe_counter!(
        "sluice_keyframe_requests_sent_total",
        "Keyframe requests sent to publishers, after throttling."
    );
    describe_gauge!(
        "sluice_websocket_sessions",
        "Open signaling WebSocket connections, joined or not."
    );
    describe_counter!(
        "sluice_signaling_rate_limited_total",
        "Signaling messages refused by the per-connection rate limit."
    );
    describe_gauge!(
        "sluice_draining",
        "1 while the server drains before exiting, else 0."
    );
    describe_gauge!(
        "sluice_rtmp_streams",
        "RTMP ingest streams: live (an encoder publishes) or parked (waiting for it to reconnect)."
    );
    describe_gauge!(
        "sluice_admission_subscribers",
        "Subscriber connections (SDK participants that subscribe, WHEP viewers) admitted now."
    );
    describe_counter!(
        "sluice_admission_refused_total",
        "Requests for a new subscriber connection refused (serverFull, WHEP 503): at --max-subscribers \
         (reason max_subscribers) or with the room's media thread over --admission-cpu-percent \
         (reason cpu)."
    );
    describe_gauge!(
        "sluice_shard_busy_ratio_max",
        "Of the media threads, the largest share of wall time spent working rather than waiting \
         for packets, over the last ~2 s (0-1); what --admission-cpu-percent is compared with."
    );
    describe_gauge!("sluice_shard_peers", "Peer connections on the shards.");
    describe_counter!(
        "sluice_shard_datagrams_in_total",
        "UDP datagrams the shard received."
    );
    describe_counter!(
        "sluice_shard_datagrams_out_total",
        "UDP datagrams the shard sent."
    );
    describe_counter!(
        "sluice_shard_forwarded_total",
        "Packets the shard forwarded to subscribers."
    );
    describe_counter!(
        "sluice_shard_forward_rejected_total",
        "Packets the shard forwarded that a subscriber's sender refused."
    );
    describe_counter!(
        "sluice_shard_unrouted_total",
        "Datagrams from unvalidated addresses or naming no known ICE ufrag."
    );
    describe_counter!(
        "sluice_shard_egress_refused_total",
        "Outgoing datagrams refused by the ICE-lite gate (address never validated)."
    );
    describe_counter!(
        "sluice_shard_send_failed_total",
        "Outgoing datagrams the kernel did not take."
    );
    describe_counter!(
        "sluice_shard_events_dropped_total",
        "Shard events not delivered because a participant's event queue was full."
    );
    describe_counter!(
        "sluice_shard_tcp_refused_total",
        "ICE-TCP connections refused at the connection limit."
    );
    describe_counter!(
        "sluice_shard_handed_off_total",
        "Datagrams a shard read for another shard's connection and handed to it."
    );
    describe_counter!(
        "sluice_shard_hand_off_dropped_total",
        "Datagrams dropped at another shard's full hand-off queue."
    );
    describe_counter!(
        "sluice_shard_stale_dropped_total",
        "RTP media discarded because it waited past the freshness bound (250 ms) in the \
         socket or ingest queue, and retransmissions of it."
    );
    describe_counter!(
        "sluice_shard_ssrcs_refused_total",
        "Datagrams dropped unread because they named an SSRC past their connection's allowance \
         (six per media section and 32 more, RTP and RTCP apart)."
    );
    describe_counter!(
        "sluice_shard_ssrcs_admitted_total",
        "SSRCs connections were let send from, RTP and RTCP counted apart."
    );
    describe_gauge!(
        "sluice_shard_ingress_age_max_seconds",
        "The longest a datagram or ingest packet waited in a shard's queues before it was read, \
         over the last 0.5-1 s: the age of the media queues."
    );
    describe_counter!(
        "sluice_data_messages_received_total",
        "Data messages received on participants' data channels."
    );
    describe_counter!(
        "sluice_data_messages_rejected_total",
        "Data messages refused (too large, over the rate, malformed) and delivered to nobody."
    );
    describe_counter!(
        "sluice_data_messages_delivered_total",
        "Copies of data messages handed to recipients' data channels."
    );
    describe_counter!(
        "sluice_data_messages_dropped_total",
        "Copies of data messages not delivered: the recipient's backlog was full."
    );
}

#[cfg(test)]
mod tests {
    use sluice_sfu::runtime::SfuConfig;

    use super::*;

    #[tokio::test]
    async fn an_idle_server_renders_its_metrics() {
        let metrics = Metrics::new();
        let sfu = Sfu::start(SfuConfig::default()).expect("a shard on loopback");
        let text = metrics
            .render(&sfu, &SessionCounters::default(), false)
            .await;
        for line in [
            "# TYPE sluice_rooms gauge",
            "sluice_rooms 0",
            "sluice_participants 0",
            "sluice_room_queue_depth_max 0",
            "# TYPE sluice_packets_in_total counter",
            "sluice_packets_in_total 0",
            "sluice_packets_dropped_total{reason=\"waiting_for_keyframe\"} 0",
            "sluice_draining 0",
            "sluice_websocket_sessions 0",
            "sluice_admission_subscribers 0",
            "sluice_admission_refused_total{reason=\"max_subscribers\"} 0",
            "sluice_admission_refused_total{reason=\"cpu\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // Every sample is ours.
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            assert!(line.starts_with("sluice_"), "{line}");
        }
        // The shards' metrics always, RTMP's only with RTMP.
        assert!(text.lines().any(|l| l == "sluice_shard_peers 0"));
        assert!(!text.contains("sluice_rtmp_streams{"));
        let draining = metrics
            .render(&sfu, &SessionCounters::default(), true)
            .await;
        assert!(draining.lines().any(|l| l == "sluice_draining 1"));
    }
}
