//! What a node tells the cluster about itself: its [`NodeRecord`] (id, addresses, load), the
//! addresses it derives from the configuration ([`NodeAddresses`]) and the CPU share it
//! measures between two heartbeats ([`CpuMeter`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sluice_sfu::runtime::SfuStats;

use crate::config::Config;
use crate::metrics::ProcessStats;

/// One node as the registry holds it (the JSON value of its key, and one entry of
/// `GET /api/nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The node's id (`--node-id`, or random per start).
    pub id: String,
    /// The HTTP URL applications and other nodes reach it at (`/ws`, `/whip`, `/whep`, `/api`).
    pub url: String,
    /// The IP its media is advertised at (ICE candidates).
    pub media_ip: IpAddr,
    /// Its one UDP media port.
    pub udp_port: u16,
    /// Rooms open on it.
    pub rooms: usize,
    /// Participants in its rooms (RTMP, RTSP and WHIP publishers included).
    pub participants: usize,
    /// Publications in its rooms.
    pub publications: usize,
    /// Subscriptions its media threads serve.
    pub subscriptions: usize,
    /// Its process's CPU time per second of wall time since the previous heartbeat (1.0 = one
    /// core busy); `None` where it cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// When it wrote this record, milliseconds since the Unix epoch (its own clock).
    pub updated_at: u64,
}

/// Where a node is reached: its HTTP URL and its media address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddresses {
    pub url: url::Url,
    pub media: SocketAddr,
}

impl NodeAddresses {
    /// `--node-url`, or `http://` and the bound HTTP address (the public IP, else 127.0.0.1, in
    /// place of an unspecified one); the media IP as the media plane advertises it (the public
    /// IP, else 127.0.0.1) and the bound UDP port.
    pub fn of(config: &Config, http: SocketAddr, udp_port: u16) -> Self {
        let media_ip = config.public_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let url = config.cluster.node_url.clone().unwrap_or_else(|| {
            let host = if http.ip().is_unspecified() {
                media_ip
            } else {
                http.ip()
            };
            let address = SocketAddr::new(host, http.port());
            url::Url::parse(&format!("http://{address}"))
                .expect("invariant: http:// and a socket address form a URL")
        });
        Self {
            url,
            media: SocketAddr::new(media_ip, udp_port),
        }
    }
}

impl NodeRecord {
    /// The record of node `id` at `addresses` with the load `stats` and `cpu`, stamped now.
    pub fn new(id: &str, addresses: &NodeAddresses, stats: &SfuStats, cpu: Option<f64>) -> Self {
        Self {
            id: id.to_owned(),
            url: addresses.url.as_str().trim_end_matches('/').to_owned(),
            media_ip: addresses.media.ip(),
            udp_port: addresses.media.port(),
            rooms: stats.rooms,
            participants: stats.participants,
            publications: stats.publications,
            subscriptions: stats.subscriptions,
            cpu,
            updated_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// The process's CPU share between two readings.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: Option<(Instant, f64)>,
}

impl CpuMeter {
    /// CPU seconds per wall second since the previous call, rounded to 0.001; `None` on the
    /// first call and where `/proc` cannot be read.
    pub fn sample(&mut self) -> Option<f64> {
        let now = Instant::now();
        let cpu = ProcessStats::read()?.cpu_seconds;
        let share = self.last.and_then(|(then, before)| {
            let wall = now.duration_since(then).as_secs_f64();
            (wall > 0.0).then(|| ((cpu - before).max(0.0) / wall * 1000.0).round() / 1000.0)
        });
        self.last = Some((now, cpu));
        share
    }
}

/// A random node id: 16 hex digits.
pub fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn addresses_follow_the_listen_address_and_public_ip() {
        let mut config = Config::default();
        let http: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let local = NodeAddresses::of(&config, http, 5000);
        assert_eq!(local.url.as_str(), "http://127.0.0.1:7000/");
        assert_eq!(local.media, "127.0.0.1:5000".parse::<SocketAddr>().unwrap());
        config.public_ip = Some("203.0.113.7".parse().unwrap());
        let any = NodeAddresses::of(&config, "0.0.0.0:7000".parse().unwrap(), 5000);
        assert_eq!(any.url.as_str(), "http://203.0.113.7:7000/");
        assert_eq!(any.media, "203.0.113.7:5000".parse::<SocketAddr>().unwrap());
        config.cluster.node_url = Some("https://sfu-3.example.com".parse().unwrap());
        let named = NodeAddresses::of(&config, http, 5000);
        let record = NodeRecord::new("n3", &named, &SfuStats::default(), None);
        assert_eq!(record.url, "https://sfu-3.example.com");
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["mediaIp"], "203.0.113.7");
        assert_eq!(json["udpPort"], 5000);
        assert!(json.get("cpu").is_none());
        assert_eq!(
            serde_json::from_value::<NodeRecord>(json).unwrap(),
            record,
            "a record reads back as written"
        );
    }
}
