//! The server configuration: every option of `sluice` (serve), its default, the TOML file and
//! [`Config::validate`].
//!
//! Each option is declared once, as a field of [`ServeArgs`]: its flag, its `SLUICE_*`
//! environment variable, its help text and its TOML key (the field name). Flags and
//! environment parse into one `ServeArgs` (clap), the TOML file into another (serde), and
//! [`Config::load`] lays them over the defaults. Precedence, lowest first:
//! [`Config::default`] < the TOML file named by `--config` / `SLUICE_CONFIG` < environment
//! variables < command-line flags (clap merges the last two). See
//! `signaling/config.example.toml`.
//!
//! ```no_run
//! use clap::Parser;
//! use sluice_signaling::cli::Cli;
//! use sluice_signaling::config::Config;
//!
//! let cli = Cli::parse();
//! let config = Config::load(&cli.serve)?; // merged and validated
//! # Ok::<(), sluice_signaling::config::ConfigError>(())
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use sluice_sfu::runtime::SfuConfig;

use crate::auth::check_name;
use crate::origin;
pub use crate::secret::Secret;
pub use args::ServeArgs;
pub use cluster::{ClusterConfig, RedisUrl};
pub use error::ConfigError;
use error::parse_toml;
pub use ice_servers::IceServer;
pub use limits::Limits;
pub use rtsp::RtspSourceEntry;
pub use values::{IceTcpPort, MediaPlane, RtmpKey, RtmpListen, UdpPortRange};

/// Sluice at info; the WebRTC stack only when something is wrong (its DTLS and ICE layers log
/// routine retransmissions as warnings).
pub const DEFAULT_LOG: &str =
    "info,rtc=error,rtc_dtls=error,rtc_ice=error,rtc_sctp=error,rtc_interceptor=error,webrtc=error";

/// Minimum secret length accepted for signing tokens, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// Longest playout delay that may be asked of subscribers.
const MAX_PLAYOUT_DELAY: Duration = Duration::from_millis(1000);

/// Longest resume grace period.
const MAX_RESUME_GRACE: Duration = Duration::from_secs(300);

/// Most media threads (shards) one server runs.
const MAX_MEDIA_THREADS: usize = 256;

/// Longest drain deadline.
const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);

/// The server configuration after merging defaults, file, environment and flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address for HTTP and WebSocket signaling.
    pub listen: SocketAddr,
    /// IP advertised in ICE candidates; `None` binds and advertises 127.0.0.1.
    pub public_ip: Option<IpAddr>,
    /// The one UDP port of all media; `None` lets the OS pick one.
    pub udp_port: Option<u16>,
    /// The ICE-TCP port.
    pub tcp_port: IceTcpPort,
    /// Media threads (shards).
    pub media_threads: usize,
    /// Token signing secret; `None` means generate a random one at start.
    pub secret: Option<Secret>,
    /// Origin allowlist for /ws; see [`Config::origin_allowed`].
    pub allowed_origins: Vec<String>,
    /// Signaling messages per second per connection (burst: twice that).
    pub max_message_rate: u32,
    /// Minimum playout delay asked of subscribing browsers (zero: not asked).
    pub playout_delay: Duration,
    /// How long a dropped participant waits for its client to resume (zero: no resume).
    pub resume_grace: Duration,
    /// What one room, participant and connection may hold; see [`Limits`].
    pub limits: Limits,
    /// Serve the loopback-only test hooks (`/debug/drop-socket`). Tests only.
    pub test_hooks: bool,
    /// Largest signaling message accepted, in bytes (file only).
    pub max_message_bytes: usize,
    /// tracing EnvFilter directive string.
    pub log: String,
    /// Serve Prometheus metrics at `/metrics`.
    pub metrics: bool,
    /// How long a drain (SIGTERM, Ctrl-C) may take before the server exits anyway.
    pub drain_timeout: Duration,
    /// RTMP ingest listener (`"off"` or `"addr:port"`).
    pub rtmp: RtmpListen,
    /// Configured RTMP stream keys (signed keys need only `secret`).
    pub rtmp_keys: Vec<RtmpKey>,
    /// RTSP sources to pull (file only); see [`Config::rtsp_sources`].
    pub rtsp_sources: Vec<RtspSourceEntry>,
    /// Webhook receivers (`crate::webhooks`).
    pub webhook_urls: Vec<url::Url>,
    /// STUN/TURN servers advertised to WHIP and WHEP clients.
    pub ice_servers: Vec<IceServer>,
    /// The cluster this node joins (none without `redis`).
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            public_ip: None,
            udp_port: None,
            tcp_port: IceTcpPort::default(),
            media_threads: std::thread::available_parallelism().map_or(1, usize::from),
            secret: None,
            allowed_origins: Vec::new(),
            max_message_rate: 50,
            playout_delay: Duration::ZERO,
            resume_grace: Duration::from_secs(15),
            limits: Limits::default(),
            test_hooks: false,
            max_message_bytes: 64 * 1024,
            log: DEFAULT_LOG.into(),
            metrics: true,
            drain_timeout: Duration::from_secs(10),
            rtmp: RtmpListen::On(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1935)),
            rtmp_keys: Vec::new(),
            rtsp_sources: Vec::new(),
            webhook_urls: Vec::new(),
            ice_servers: Vec::new(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Config {
    /// Merges defaults < the TOML file in `args.config` (if any) < `args`
    /// (environment and flags), then [`validate`](Self::validate)s the result.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = &args.config {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            config.apply(parse_toml(&text, Some(path))?);
        }
        let mut flags = args.clone();
        // A comma-separated list may carry spaces and empty entries ("a, b,").
        if let Some(origins) = &mut flags.allowed_origins {
            *origins = origins
                .iter()
                .map(|o| o.trim())
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
        }
        config.apply(flags);
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document; missing keys take their defaults. Does not validate.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.apply(parse_toml(s, None)?);
        Ok(config)
    }

    /// Overrides fields with the values present in `layer`.
    fn apply(&mut self, layer: ServeArgs) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        // Destructured, so an option added to `ServeArgs` cannot be forgotten here.
        let ServeArgs {
            config: _,
            listen,
            // Both refuse every value when parsed: only `None` reaches here.
            udp_ports: _,
            public_ip,
            media_plane: _,
            udp_port,
            tcp_port,
            media_threads,
            secret,
            allowed_origins,
            max_message_rate,
            playout_delay_ms,
            resume_grace_ms,
            max_rooms,
            max_participants_per_room,
            max_publications_per_participant,
            max_subscriptions_per_participant,
            max_connections,
            max_connections_per_address,
            header_read_timeout_ms,
            write_timeout_ms,
            request_timeout_ms,
            publication_stall_timeout_ms,
            max_data_message_bytes,
            data_messages_per_second,
            max_ingress_age_ms,
            max_subscribers,
            admission_cpu_percent,
            test_hooks,
            max_message_bytes,
            log,
            metrics,
            drain_timeout,
            rtmp,
            rtmp_keys,
            rtsp_sources,
            webhook_urls,
            ice_servers,
            redis,
            node_id,
            node_url,
        } = layer;
        set(&mut self.listen, listen);
        set(&mut self.public_ip, public_ip.map(Some));
        set(&mut self.udp_port, udp_port.map(Some));
        set(&mut self.tcp_port, tcp_port);
        set(&mut self.media_threads, media_threads);
        set(&mut self.secret, secret.map(Some));
        set(&mut self.allowed_origins, allowed_origins);
        set(&mut self.max_message_rate, max_message_rate);
        set(
            &mut self.playout_delay,
            playout_delay_ms.map(|ms| Duration::from_millis(ms.into())),
        );
        set(
            &mut self.resume_grace,
            resume_grace_ms.map(Duration::from_millis),
        );
        let ms = |ms: Option<u64>| ms.map(Duration::from_millis);
        let limits = &mut self.limits;
        set(&mut limits.max_rooms, max_rooms);
        set(
            &mut limits.max_participants_per_room,
            max_participants_per_room,
        );
        set(
            &mut limits.max_publications_per_participant,
            max_publications_per_participant,
        );
        set(
            &mut limits.max_subscriptions_per_participant,
            max_subscriptions_per_participant,
        );
        set(&mut limits.max_connections, max_connections);
        set(
            &mut limits.max_connections_per_address,
            max_connections_per_address,
        );
        set(&mut limits.header_read_timeout, ms(header_read_timeout_ms));
        set(&mut limits.write_timeout, ms(write_timeout_ms));
        set(&mut limits.request_timeout, ms(request_timeout_ms));
        set(
            &mut limits.publication_stall_timeout,
            ms(publication_stall_timeout_ms),
        );
        set(&mut limits.max_data_message_bytes, max_data_message_bytes);
        set(
            &mut limits.data_messages_per_second,
            data_messages_per_second,
        );
        set(&mut limits.max_ingress_age, ms(max_ingress_age_ms));
        set(&mut limits.max_subscribers, max_subscribers);
        set(&mut limits.admission_cpu_percent, admission_cpu_percent);
        set(&mut self.test_hooks, test_hooks);
        set(&mut self.max_message_bytes, max_message_bytes);
        set(&mut self.log, log);
        set(&mut self.metrics, metrics);
        set(
            &mut self.drain_timeout,
            drain_timeout.map(Duration::from_secs),
        );
        set(&mut self.rtmp, rtmp);
        set(&mut self.rtmp_keys, rtmp_keys);
        set(&mut self.rtsp_sources, rtsp_sources);
        set(&mut self.webhook_urls, webhook_urls);
        set(&mut self.ice_servers, ice_servers);
        set(&mut self.cluster.redis, redis.map(Some));
        set(&mut self.cluster.node_id, node_id.map(Some));
        set(&mut self.cluster.node_url, node_url.map(Some));
    }

    /// Checks value ranges: secret (if set) ≥ 16 bytes, `max_message_rate` ≥ 1,
    /// `max_message_bytes` in 1 KiB..=1 MiB, an advertisable
    /// public IP, well-formed origins and RTMP stream keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if let Some(secret) = &self.secret
            && secret.len() < MIN_SECRET_BYTES
        {
            return invalid(format!("secret must be at least {MIN_SECRET_BYTES} bytes"));
        }
        if self.max_message_rate == 0 {
            return invalid("max_message_rate must be at least 1".into());
        }
        if !self.webhook_urls.is_empty() && self.secret.is_none() {
            return invalid("webhook_urls needs a secret: webhooks are signed with it".into());
        }
        if let Some(url) = self
            .webhook_urls
            .iter()
            .find(|url| !matches!(url.scheme(), "http" | "https"))
        {
            return invalid(format!("webhook_urls: {url} is not an http(s) URL"));
        }
        if !(1..=MAX_MEDIA_THREADS).contains(&self.media_threads) {
            return invalid(format!(
                "media_threads must be between 1 and {MAX_MEDIA_THREADS}"
            ));
        }
        if self.playout_delay > MAX_PLAYOUT_DELAY {
            return invalid("playout_delay_ms must be at most 1000".into());
        }
        if self.resume_grace > MAX_RESUME_GRACE {
            return invalid("resume_grace_ms must be at most 300000 (5 minutes)".into());
        }
        self.limits.validate().map_err(ConfigError::Invalid)?;
        if self.drain_timeout > MAX_DRAIN_TIMEOUT {
            return invalid("drain_timeout must be at most 3600 (seconds)".into());
        }
        if !(1024..=1024 * 1024).contains(&self.max_message_bytes) {
            return invalid(format!(
                "max_message_bytes must be between 1024 and 1048576, got {}",
                self.max_message_bytes
            ));
        }
        if let Some(ip) = self.public_ip
            && (ip.is_unspecified() || ip.is_multicast())
        {
            return invalid(format!("public_ip {ip} cannot be advertised to peers"));
        }
        for entry in &self.rtmp_keys {
            check_name("rtmp_keys room", &entry.room).map_err(ConfigError::Invalid)?;
            check_name("rtmp_keys identity", &entry.identity).map_err(ConfigError::Invalid)?;
        }
        ice_servers::validate(&self.ice_servers).map_err(ConfigError::Invalid)?;
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        self.stream_keys()?;
        self.rtsp_sources()?;
        for entry in &self.allowed_origins {
            if !origin::valid_entry(entry) {
                return invalid(format!(
                    "allowed_origins entry {entry:?} is not \"*\" or scheme://host[:port] (http or https)"
                ));
            }
        }
        Ok(())
    }

    /// The minimum playout delay asked of subscribers, in ms (0: not asked).
    pub fn playout_delay_ms(&self) -> u16 {
        // `validate` keeps the delay within 1000 ms.
        u16::try_from(self.playout_delay.as_millis()).unwrap_or(u16::MAX)
    }

    /// The media server's configuration from the limits: the runtime's limits and every
    /// room's routing core (the shards' sockets come from [`crate::media_plane::start_sfu`]).
    pub fn sfu_config(&self) -> SfuConfig {
        SfuConfig {
            shard: sluice_sfu::shard::ShardConfig {
                room: self.limits.room(),
                data: self.limits.data(),
                max_ingress_age: self.limits.ingress_age(),
                ..sluice_sfu::shard::ShardConfig::default()
            },
            limits: self.limits.sfu(),
            admission: self.limits.admission(),
            ..SfuConfig::default()
        }
    }

    /// Maximum burst of signaling messages per connection (twice the rate).
    pub fn max_message_burst(&self) -> u32 {
        self.max_message_rate.saturating_mul(2)
    }

    /// Whether a WebSocket upgrade with this `Origin` header may proceed; see
    /// [`origin::allowed`] for the rule.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        origin::allowed(
            &self.allowed_origins,
            self.listen.ip(),
            self.public_ip,
            origin,
        )
    }
}

mod args;
mod cluster;
mod error;
mod ice_servers;
mod limits;
mod rtsp;
pub(crate) use rtsp::check_source;
#[cfg(test)]
mod tests;
mod values;
