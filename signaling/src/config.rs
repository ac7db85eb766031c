//! Command line, environment and TOML configuration of the `sluice` server.
//!
//! Precedence, lowest first: [`Config::default`] < the TOML file named by
//! `--config` / `SLUICE_CONFIG` < environment variables < command-line flags
//! (clap merges the last two into [`ServeArgs`]). The TOML keys are the
//! snake_case field names of [`Config`]; see `signaling/config.example.toml`.
//!
//! ```no_run
//! use clap::Parser;
//! use sluice_signaling::config::{Cli, Config};
//!
//! let cli = Cli::parse();
//! let config = Config::load(&cli.serve)?; // merged and validated
//! # Ok::<(), sluice_signaling::config::ConfigError>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_sfu::ingest::{StreamKeys, StreamTarget};

use crate::auth::{Grants, check_name};

/// Sluice at info; the WebRTC stack only when something is wrong (its DTLS and ICE layers log
/// routine retransmissions as warnings).
pub const DEFAULT_LOG: &str =
    "info,rtc=error,rtc_dtls=error,rtc_ice=error,rtc_sctp=error,rtc_interceptor=error,webrtc=error";

/// Minimum secret length accepted for signing tokens, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The `sluice` command line.
#[derive(clap::Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: ultra-low-latency WebRTC SFU"
)]
pub struct Cli {
    /// What to do instead of serving (serve when absent).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options (used when no subcommand is given).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands of `sluice`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print a room token signed with the server secret.
    Token(TokenArgs),
    /// Print an RTMP stream key signed with the server secret, for rtmp://host/live/<key>.
    StreamKey(StreamKeyArgs),
}

/// Arguments of `sluice stream-key`.
#[derive(clap::Args)]
pub struct StreamKeyArgs {
    /// Server secret the key is signed with (the server's --secret, at least 16 bytes).
    #[arg(long, env = "SLUICE_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: String,
    /// Room the stream is published in.
    #[arg(long, value_parser = parse_room)]
    pub room: String,
    /// Participant identity the stream publishes as.
    #[arg(long, value_parser = parse_identity)]
    pub identity: String,
}

impl fmt::Debug for StreamKeyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamKeyArgs")
            .field("secret", &"<redacted>")
            .field("room", &self.room)
            .field("identity", &self.identity)
            .finish()
    }
}

/// Arguments of `sluice token`.
#[derive(clap::Args)]
pub struct TokenArgs {
    /// Server secret used to sign the token (at least 16 bytes).
    #[arg(long, env = "SLUICE_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: String,
    /// Room the token grants access to.
    #[arg(long, value_parser = parse_room)]
    pub room: String,
    /// Participant identity the token is issued to.
    #[arg(long, value_parser = parse_identity)]
    pub identity: String,
    /// Do not allow the bearer to publish tracks.
    #[arg(long)]
    pub no_publish: bool,
    /// Do not allow the bearer to subscribe to tracks.
    #[arg(long)]
    pub no_subscribe: bool,
    /// Token lifetime: seconds, or a number with unit s, m, h or d (e.g. 90, 30m, 2d).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

impl fmt::Debug for TokenArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenArgs")
            .field("secret", &"<redacted>")
            .field("room", &self.room)
            .field("identity", &self.identity)
            .field("no_publish", &self.no_publish)
            .field("no_subscribe", &self.no_subscribe)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TokenArgs {
    /// The grants the token should carry.
    pub fn grants(&self) -> Grants {
        Grants {
            room: self.room.clone(),
            identity: self.identity.clone(),
            can_publish: !self.no_publish,
            can_subscribe: !self.no_subscribe,
        }
    }

    /// The token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Server options from flags and environment. Every field is optional so that
/// values from the config file fill the gaps; see [`Config::load`].
#[derive(clap::Args, Default)]
pub struct ServeArgs {
    /// TOML config file; flags and environment variables override its values.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address for HTTP and WebSocket signaling [default: 127.0.0.1:8080].
    #[arg(long, env = "SLUICE_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// UDP port range for media, e.g. 50000-50100 [default: OS-assigned ephemeral ports].
    #[arg(long, env = "SLUICE_UDP_PORTS", value_name = "LO-HI")]
    pub udp_ports: Option<PortRange>,
    /// IP advertised in ICE candidates [default: bind 127.0.0.1 and advertise it].
    #[arg(long, env = "SLUICE_PUBLIC_IP", value_name = "IP")]
    pub public_ip: Option<IpAddr>,
    /// Media plane: "webrtc" (one webrtc-rs connection and UDP port per peer connection) or
    /// "shard" (one thread and one UDP port for all media, ICE-lite; see --udp-port)
    /// [default: webrtc].
    #[arg(long, env = "SLUICE_MEDIA_PLANE", value_name = "webrtc|shard")]
    pub media_plane: Option<MediaPlane>,
    /// The one UDP port of the shard media plane [default: 0 = OS-assigned, logged at start].
    #[arg(long, env = "SLUICE_UDP_PORT", value_name = "PORT")]
    pub udp_port: Option<u16>,
    /// Token signing secret, at least 16 bytes [default: random per start (demo mode)].
    #[arg(long, env = "SLUICE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Comma-separated Origin allowlist for /ws, e.g. https://app.example.com; "*" allows any
    /// [default: no Origin, or an Origin on the listen/public host or localhost].
    #[arg(
        long,
        env = "SLUICE_ALLOWED_ORIGINS",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Signaling messages per second per connection; bursts of twice that are allowed [default: 50].
    #[arg(long, env = "SLUICE_MAX_MESSAGE_RATE", value_name = "N")]
    pub max_message_rate: Option<u32>,
    /// Minimum playout delay asked of subscribing browsers (RTP playout-delay extension), in
    /// ms, so a retransmitted packet still makes its frame's deadline on lossy links
    /// [default: 0 = the browser decides].
    #[arg(long, env = "SLUICE_PLAYOUT_DELAY_MS", value_name = "MS")]
    pub playout_delay_ms: Option<u16>,
    /// How long a participant whose WebSocket dropped (without `leave`) is kept for its client
    /// to `resume`, in ms; 0 removes it at once [default: 15000].
    #[arg(long, env = "SLUICE_RESUME_GRACE_MS", value_name = "MS")]
    pub resume_grace_ms: Option<u64>,
    /// TESTS ONLY: serve `POST /debug/drop-socket?participant=ID` (loopback clients only), which
    /// makes the server close that participant's WebSocket as a network drop would. Never
    /// enable in production [default: off].
    #[arg(
        long,
        env = "SLUICE_TEST_HOOKS",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub test_hooks: Option<bool>,
    /// Log filter in tracing EnvFilter syntax, e.g. "info,sluice_sfu=debug" [default: info].
    #[arg(long, env = "SLUICE_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// RTMP ingest address, or "off" [default: 127.0.0.1:1935].
    #[arg(long, env = "SLUICE_RTMP", value_name = "ADDR:PORT|off")]
    pub rtmp: Option<RtmpListen>,
    /// An RTMP stream key and where it publishes, KEY=ROOM/IDENTITY (key ≥ 16 characters; the
    /// room cannot contain '/' here — use the TOML file for that). Repeat or comma-separate.
    #[arg(
        long = "rtmp-key",
        env = "SLUICE_RTMP_KEYS",
        hide_env_values = true,
        value_name = "KEY=ROOM/IDENTITY",
        value_delimiter = ','
    )]
    pub rtmp_keys: Option<Vec<RtmpKey>>,
}

impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeArgs")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("udp_ports", &self.udp_ports)
            .field("public_ip", &self.public_ip)
            .field("media_plane", &self.media_plane)
            .field("udp_port", &self.udp_port)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("allowed_origins", &self.allowed_origins)
            .field("max_message_rate", &self.max_message_rate)
            .field("playout_delay_ms", &self.playout_delay_ms)
            .field("resume_grace_ms", &self.resume_grace_ms)
            .field("test_hooks", &self.test_hooks)
            .field("log", &self.log)
            .field("rtmp", &self.rtmp)
            .field("rtmp_keys", &self.rtmp_keys)
            .finish()
    }
}

/// Where the RTMP ingest listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtmpListen {
    Off,
    On(SocketAddr),
}

impl std::str::FromStr for RtmpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(Self::Off),
            addr => addr
                .parse()
                .map(Self::On)
                .map_err(|_| format!("invalid RTMP address {addr:?}: expected ADDR:PORT or off")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for RtmpListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which media plane carries the participants' connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MediaPlane {
    /// One webrtc-rs peer connection, task set and UDP port per connection.
    #[default]
    Webrtc,
    /// One shard thread owning one UDP port for all connections (ICE-lite).
    Shard,
}

impl std::str::FromStr for MediaPlane {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "webrtc" => Ok(Self::Webrtc),
            "shard" => Ok(Self::Shard),
            other => Err(format!(
                "invalid media plane {other:?}: expected webrtc or shard"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for MediaPlane {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One configured RTMP stream key and the room and identity it publishes as.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpKey {
    pub key: String,
    pub room: String,
    pub identity: String,
}

impl fmt::Debug for RtmpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtmpKey")
            .field("key", &"<redacted>")
            .field("room", &self.room)
            .field("identity", &self.identity)
            .finish()
    }
}

impl std::str::FromStr for RtmpKey {
    type Err = String;

    /// `KEY=ROOM/IDENTITY`. Errors never repeat the key.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected KEY=ROOM/IDENTITY";
        let (key, target) = s.trim().split_once('=').ok_or(usage)?;
        let (room, identity) = target.split_once('/').ok_or(usage)?;
        Ok(Self {
            key: key.to_owned(),
            room: room.to_owned(),
            identity: identity.to_owned(),
        })
    }
}

/// The media port range type is the transport's own (`lo-hi`, e.g. `50000-50100`).
pub use sluice_sfu::transport::PortRange;

fn deserialize_port_range<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PortRange>, D::Error> {
    let text: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    text.map(|t| t.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// The server configuration after merging defaults, file, environment and flags.
#[derive(Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", default)]
pub struct Config {
    /// Address for HTTP and WebSocket signaling.
    pub listen: SocketAddr,
    /// UDP ports for media; `None` lets the OS pick ephemeral ports.
    #[serde(deserialize_with = "deserialize_port_range")]
    pub udp_ports: Option<PortRange>,
    /// IP advertised in ICE candidates; `None` binds and advertises 127.0.0.1.
    pub public_ip: Option<IpAddr>,
    /// The media plane (`"webrtc"` or `"shard"`).
    pub media_plane: MediaPlane,
    /// The shard media plane's one UDP port; `None` lets the OS pick one.
    pub udp_port: Option<u16>,
    /// Token signing secret; `None` means generate a random one at start.
    pub secret: Option<String>,
    /// Origin allowlist for /ws; see [`Config::origin_allowed`].
    pub allowed_origins: Vec<String>,
    /// Signaling messages per second per connection (burst: twice that).
    pub max_message_rate: u32,
    /// Minimum playout delay asked of subscribing browsers, in ms (0: not asked).
    pub playout_delay_ms: u16,
    /// How long a dropped participant waits for its client to resume, in ms (0: no resume).
    pub resume_grace_ms: u64,
    /// Serve the loopback-only test hooks (`/debug/drop-socket`). Tests only.
    pub test_hooks: bool,
    /// Largest signaling message accepted, in bytes (file only).
    pub max_message_bytes: usize,
    /// tracing EnvFilter directive string.
    pub log: String,
    /// RTMP ingest listener (`"off"` or `"addr:port"`).
    pub rtmp: RtmpListen,
    /// Configured RTMP stream keys (signed keys need only `secret`).
    pub rtmp_keys: Vec<RtmpKey>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            udp_ports: None,
            public_ip: None,
            media_plane: MediaPlane::Webrtc,
            udp_port: None,
            secret: None,
            allowed_origins: Vec::new(),
            max_message_rate: 50,
            playout_delay_ms: 0,
            resume_grace_ms: 15_000,
            test_hooks: false,
            max_message_bytes: 64 * 1024,
            log: DEFAULT_LOG.into(),
            rtmp: RtmpListen::On(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1935)),
            rtmp_keys: Vec::new(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("udp_ports", &self.udp_ports)
            .field("public_ip", &self.public_ip)
            .field("media_plane", &self.media_plane)
            .field("udp_port", &self.udp_port)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("allowed_origins", &self.allowed_origins)
            .field("max_message_rate", &self.max_message_rate)
            .field("playout_delay_ms", &self.playout_delay_ms)
            .field("resume_grace_ms", &self.resume_grace_ms)
            .field("test_hooks", &self.test_hooks)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("log", &self.log)
            .field("rtmp", &self.rtmp)
            .field("rtmp_keys", &self.rtmp_keys)
            .finish()
    }
}

/// Why the configuration could not be loaded.
///
/// `Read` and `Parse` carry the underlying error as their `source()`; print
/// with `{:#}` (anyhow) or walk the chain to see it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown/ill-typed keys.
    #[error("invalid config{}", path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when parsed from one.
        path: Option<PathBuf>,
        /// The TOML error, with line, column and the offending key.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Merges defaults < the TOML file in `args.config` (if any) < `args`
    /// (environment and flags), then [`validate`](Self::validate)s the result.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        config.apply(args);
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document; missing keys take their defaults. Does not validate.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        toml::from_str(s).map_err(|source| ConfigError::Parse { path: None, source })
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: Some(path.to_owned()),
            source,
        })
    }

    /// Overrides fields with the values present in `args`.
    fn apply(&mut self, args: &ServeArgs) {
        if let Some(listen) = args.listen {
            self.listen = listen;
        }
        if let Some(range) = args.udp_ports {
            self.udp_ports = Some(range);
        }
        if let Some(ip) = args.public_ip {
            self.public_ip = Some(ip);
        }
        if let Some(plane) = args.media_plane {
            self.media_plane = plane;
        }
        if let Some(port) = args.udp_port {
            self.udp_port = Some(port);
        }
        if let Some(secret) = &args.secret {
            self.secret = Some(secret.clone());
        }
        if let Some(origins) = &args.allowed_origins {
            self.allowed_origins = origins
                .iter()
                .map(|o| o.trim())
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(rate) = args.max_message_rate {
            self.max_message_rate = rate;
        }
        if let Some(delay) = args.playout_delay_ms {
            self.playout_delay_ms = delay;
        }
        if let Some(grace) = args.resume_grace_ms {
            self.resume_grace_ms = grace;
        }
        if let Some(hooks) = args.test_hooks {
            self.test_hooks = hooks;
        }
        if let Some(log) = &args.log {
            self.log = log.clone();
        }
        if let Some(rtmp) = args.rtmp {
            self.rtmp = rtmp;
        }
        if let Some(keys) = &args.rtmp_keys {
            self.rtmp_keys = keys.clone();
        }
    }

    /// Checks value ranges: secret (if set) ≥ 16 bytes, `max_message_rate` ≥ 1,
    /// `max_message_bytes` in 1 KiB..=1 MiB, a sane UDP range, an advertisable
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
        if self.playout_delay_ms > 1000 {
            return invalid("playout_delay_ms must be at most 1000".into());
        }
        if self.resume_grace_ms > 300_000 {
            return invalid("resume_grace_ms must be at most 300000 (5 minutes)".into());
        }
        if !(1024..=1024 * 1024).contains(&self.max_message_bytes) {
            return invalid(format!(
                "max_message_bytes must be between 1024 and 1048576, got {}",
                self.max_message_bytes
            ));
        }
        if let Some(range) = self.udp_ports
            && let Err(e) = PortRange::new(range.lo, range.hi)
        {
            return invalid(format!("udp_ports: {e}"));
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
        self.stream_keys()?;
        for origin in &self.allowed_origins {
            if origin != "*" && SchemeHostPort::parse(origin).is_none() {
                return invalid(format!(
                    "allowed_origins entry {origin:?} is not \"*\" or scheme://host[:port] (http or https)"
                ));
            }
        }
        Ok(())
    }

    /// The RTMP stream keys this configuration accepts: the configured ones, and keys signed
    /// with the secret when one is configured.
    pub fn stream_keys(&self) -> Result<StreamKeys, ConfigError> {
        let mut keys = match &self.secret {
            Some(secret) => StreamKeys::new().with_secret(secret.as_bytes()),
            None => StreamKeys::new(),
        };
        for entry in &self.rtmp_keys {
            let target = StreamTarget {
                room: entry.room.clone(),
                identity: entry.identity.clone(),
            };
            // The error never contains the key: it names the entry by its target.
            keys.add(&entry.key, target).map_err(|e| {
                ConfigError::Invalid(format!(
                    "rtmp_keys entry for {}/{}: {e}",
                    entry.room, entry.identity
                ))
            })?;
        }
        Ok(keys)
    }

    /// Maximum burst of signaling messages per connection (twice the rate).
    pub fn max_message_burst(&self) -> u32 {
        self.max_message_rate.saturating_mul(2)
    }

    /// Whether a WebSocket upgrade with this `Origin` header may proceed.
    ///
    /// * No `Origin` header (non-browser clients): allowed.
    /// * `allowed_origins` contains `"*"`: any Origin allowed.
    /// * `allowed_origins` non-empty: scheme, host and port must equal one entry
    ///   (default ports are implied: `https://a.com` == `https://a.com:443`).
    /// * `allowed_origins` empty: an http(s) Origin whose host is `localhost`, a
    ///   loopback IP, the listen IP or the public IP, on any port.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.allowed_origins.iter().any(|o| o == "*") {
            return true;
        }
        let Some(origin) = SchemeHostPort::parse(origin) else {
            return false;
        };
        if !self.allowed_origins.is_empty() {
            return self
                .allowed_origins
                .iter()
                .filter_map(|o| SchemeHostPort::parse(o))
                .any(|allowed| allowed == origin);
        }
        if origin.host == "localhost" {
            return true;
        }
        match origin.ip() {
            Some(ip) => {
                ip.is_loopback()
                    || (!self.listen.ip().is_unspecified() && ip == self.listen.ip())
                    || self.public_ip == Some(ip)
            }
            None => false,
        }
    }
}

/// A normalised web origin: lowercase scheme and host, explicit port.
#[derive(Debug, PartialEq, Eq)]
struct SchemeHostPort {
    scheme: String,
    /// Lowercase hostname, or an IP literal (IPv6 without brackets).
    host: String,
    port: u16,
}

impl SchemeHostPort {
    /// Parses `scheme://host[:port]` (optionally with one trailing `/`);
    /// only http and https, no userinfo, path, query or fragment.
    fn parse(s: &str) -> Option<Self> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty()
            || rest.chars().any(|c| {
                matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_whitespace() || c.is_control()
            })
        {
            return None;
        }
        let port_of = |p: Option<&str>| match p {
            None => Some(default_port),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u16>().ok()
            }
            Some(_) => None,
        };
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (ip, after) = bracketed.split_once(']')?;
            let ip: std::net::Ipv6Addr = ip.parse().ok()?;
            let port = match after {
                "" => port_of(None)?,
                _ => port_of(Some(after.strip_prefix(':')?))?,
            };
            (ip.to_string(), port)
        } else {
            let (host, port) = match rest.split_once(':') {
                Some((host, port)) => (host, port_of(Some(port))?),
                None => (rest, port_of(None)?),
            };
            if host.is_empty() {
                return None;
            }
            (host.to_ascii_lowercase(), port)
        };
        Some(Self { scheme, host, port })
    }

    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// Parses a duration: bare seconds (`90`) or a number with a unit suffix
/// `s`, `m`, `h` or `d` (`90s`, `30m`, `1h`, `2d`). Zero is rejected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "invalid duration {s:?}: expected e.g. 90, 90s, 30m, 1h, 2d"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration {s:?}: unit must be s, m, h or d")),
    };
    let secs = n
        .checked_mul(scale)
        .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
    if secs == 0 {
        return Err("duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

fn parse_secret(s: &str) -> Result<String, String> {
    if s.len() < MIN_SECRET_BYTES {
        return Err(format!("secret must be at least {MIN_SECRET_BYTES} bytes"));
    }
    Ok(s.to_owned())
}

fn parse_room(s: &str) -> Result<String, String> {
    check_name("room", s).map(|()| s.to_owned())
}

fn parse_identity(s: &str) -> Result<String, String> {
    check_name("identity", s).map(|()| s.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::error::Error as _;

    use clap::{CommandFactory, Parser};

    use super::*;

    /// A config file in the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("sluice-config-{}-{name}.toml", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn example_file_parses_and_matches_defaults() {
        let config = Config::from_toml_str(include_str!("../config.example.toml")).unwrap();
        config.validate().unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        assert_eq!(
            Config::load(&ServeArgs::default()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn full_file_parses() {
        let config = Config::from_toml_str(
            r#"
            listen = "0.0.0.0:9000"
            udp_ports = "50000-50100"
            public_ip = "203.0.113.7"
            secret = "0123456789abcdef"
            allowed_origins = ["https://app.example.com", "http://localhost:5173"]
            max_message_rate = 10
            max_message_bytes = 2048
            log = "debug"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(
            config.udp_ports,
            Some(PortRange {
                lo: 50000,
                hi: 50100
            })
        );
        assert_eq!(
            config.public_ip,
            Some("203.0.113.7".parse::<IpAddr>().unwrap())
        );
        assert_eq!(config.allowed_origins.len(), 2);
        assert_eq!(config.max_message_burst(), 20);
        assert_eq!(config.max_message_bytes, 2048);
        assert_eq!(config.log, "debug");
    }

    #[test]
    fn precedence_flags_over_file_over_defaults() {
        let file = TempFile::new(
            "precedence",
            r#"
            listen = "127.0.0.1:9000"
            max_message_rate = 10
            log = "debug"
            allowed_origins = ["https://file.example"]
            max_message_bytes = 4096
            "#,
        );
        let args = ServeArgs {
            config: Some(file.0.clone()),
            listen: Some("127.0.0.1:9999".parse().unwrap()),
            allowed_origins: Some(vec!["https://flag.example".into(), " ".into()]),
            ..ServeArgs::default()
        };
        let config = Config::load(&args).unwrap();
        // Flags win.
        assert_eq!(
            config.listen,
            "127.0.0.1:9999".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.allowed_origins, ["https://flag.example"]);
        // The file fills what flags leave unset.
        assert_eq!(config.max_message_rate, 10);
        assert_eq!(config.log, "debug");
        assert_eq!(config.max_message_bytes, 4096);
        // Defaults fill the rest.
        assert_eq!(config.udp_ports, None);
        assert_eq!(config.secret, None);
    }

    #[test]
    fn resume_grace_and_test_hooks_flags() {
        let cli =
            Cli::try_parse_from(["sluice", "--resume-grace-ms", "2500", "--test-hooks"]).unwrap();
        let config = Config::load(&cli.serve).unwrap();
        assert_eq!(config.resume_grace_ms, 2500);
        assert!(config.test_hooks);
        // Env-style values: 1/0, true/false.
        for (value, expected) in [("1", true), ("0", false), ("true", true), ("false", false)] {
            let cli = Cli::try_parse_from(["sluice", &format!("--test-hooks={value}")]).unwrap();
            assert_eq!(
                Config::load(&cli.serve).unwrap().test_hooks,
                expected,
                "{value}"
            );
        }
        // Off unless asked for.
        let cli = Cli::try_parse_from(["sluice"]).unwrap();
        let config = Config::load(&cli.serve).unwrap();
        assert!(!config.test_hooks);
        assert_eq!(config.resume_grace_ms, 15_000);
    }

    #[test]
    fn precedence_through_clap() {
        let file = TempFile::new("clap", "max_message_rate = 7\nlog = \"warn\"\n");
        let path = file.0.to_str().unwrap();
        let cli = Cli::try_parse_from([
            "sluice",
            "--config",
            path,
            "--log",
            "trace",
            "--udp-ports",
            "40000-40010",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let config = Config::load(&cli.serve).unwrap();
        assert_eq!(config.log, "trace");
        assert_eq!(config.max_message_rate, 7);
        assert_eq!(
            config.udp_ports,
            Some(PortRange {
                lo: 40000,
                hi: 40010
            })
        );
    }

    #[test]
    fn unknown_key_rejected_clearly() {
        let err =
            Config::from_toml_str("listen = \"127.0.0.1:1\"\nlisten_port = 80\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { path: None, .. }));
        let detail = err.source().unwrap().to_string();
        assert!(
            detail.contains("unknown field") && detail.contains("listen_port"),
            "{detail}"
        );

        let file = TempFile::new("unknown", "bogus = true\n");
        let err = Config::load(&ServeArgs {
            config: Some(file.0.clone()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains(&*file.0.to_string_lossy()),
            "{err}"
        );
        assert!(err.source().unwrap().to_string().contains("bogus"));
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let path = std::env::temp_dir().join("sluice-config-does-not-exist.toml");
        let err = Config::load(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    }

    #[test]
    fn bad_port_range() {
        for bad in [
            "", "5", "0-10", "10-5", "1-70000", "a-b", "1-", "-1", "1-2-3",
        ] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?}");
        }
        let range: PortRange = "50000-50100".parse().unwrap();
        assert_eq!(
            range,
            PortRange {
                lo: 50000,
                hi: 50100
            }
        );
        assert_eq!(range.to_string(), "50000-50100");
        assert_eq!(range.len(), 101);
        assert_eq!("7-7".parse::<PortRange>().unwrap().len(), 1);
        assert!(Config::from_toml_str("udp_ports = \"9-1\"").is_err());
        assert!(Cli::try_parse_from(["sluice", "--udp-ports", "0-100"]).is_err());
        let invalid = Config {
            udp_ports: Some(PortRange { lo: 10, hi: 5 }),
            ..Config::default()
        };
        assert!(matches!(invalid.validate(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn bad_listen_address() {
        for bad in ["localhost", "127.0.0.1", "127.0.0.1:99999", ":8080"] {
            assert!(
                Config::from_toml_str(&format!("listen = {bad:?}")).is_err(),
                "{bad}"
            );
            assert!(
                Cli::try_parse_from(["sluice", "--listen", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(Config::from_toml_str("listen = 8080").is_err());
        assert!(Config::from_toml_str("listen = \"[::1]:8080\"").is_ok());
    }

    #[test]
    fn validate_ranges() {
        let ok = Config::default();
        let cases = [
            Config {
                secret: Some("short".into()),
                ..ok.clone()
            },
            Config {
                max_message_rate: 0,
                ..ok.clone()
            },
            Config {
                resume_grace_ms: 300_001,
                ..ok.clone()
            },
            Config {
                max_message_bytes: 1023,
                ..ok.clone()
            },
            Config {
                max_message_bytes: 1024 * 1024 + 1,
                ..ok.clone()
            },
            Config {
                public_ip: Some("0.0.0.0".parse().unwrap()),
                ..ok.clone()
            },
            Config {
                allowed_origins: vec!["example.com".into()],
                ..ok.clone()
            },
            Config {
                allowed_origins: vec!["https://example.com/path".into()],
                ..ok.clone()
            },
        ];
        for config in cases {
            assert!(
                matches!(config.validate(), Err(ConfigError::Invalid(_))),
                "{config:?}"
            );
        }
        Config {
            secret: Some("0123456789abcdef".into()),
            max_message_bytes: 1024,
            ..ok.clone()
        }
        .validate()
        .unwrap();
        // Load validates too.
        let err = Config::load(&ServeArgs {
            secret: Some("short".into()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(!err.to_string().contains("short"), "secret leaked: {err}");
    }

    #[test]
    fn parse_duration_cases() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("2d"), Ok(172_800));
        assert_eq!(secs(" 5m "), Ok(300));
        for bad in [
            "",
            "0",
            "0s",
            "h",
            "1x",
            "1.5h",
            "-1",
            "1 h",
            "1hh",
            "99999999999999999999",
            "999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origin_allowed_default_rule() {
        let config = Config::default();
        assert!(config.origin_allowed(None));
        for ok in [
            "http://localhost:5173",
            "http://LOCALHOST",
            "https://127.0.0.1:8443",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
        ] {
            assert!(config.origin_allowed(Some(ok)), "{ok}");
        }
        for bad in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://192.168.1.5:8080",
            "null",
            "file://",
            "ws://localhost",
            "http://user@localhost",
            "",
        ] {
            assert!(!config.origin_allowed(Some(bad)), "{bad}");
        }
        let lan = Config {
            listen: "192.168.1.5:8080".parse().unwrap(),
            ..Config::default()
        };
        assert!(lan.origin_allowed(Some("http://192.168.1.5:8080")));
        assert!(!lan.origin_allowed(Some("http://192.168.1.6:8080")));
        let public = Config {
            listen: "0.0.0.0:8080".parse().unwrap(),
            public_ip: Some("203.0.113.7".parse().unwrap()),
            ..Config::default()
        };
        assert!(public.origin_allowed(Some("http://203.0.113.7:8080")));
        assert!(!public.origin_allowed(Some("http://0.0.0.0:8080")));
    }

    #[test]
    fn origin_allowed_allowlist() {
        let config = Config {
            allowed_origins: vec![
                "https://example.com".into(),
                "http://app.example.com:3000/".into(),
            ],
            ..Config::default()
        };
        config.validate().unwrap();
        assert!(config.origin_allowed(None));
        assert!(config.origin_allowed(Some("https://example.com")));
        assert!(config.origin_allowed(Some("https://EXAMPLE.com:443")));
        assert!(config.origin_allowed(Some("http://app.example.com:3000")));
        for bad in [
            "http://example.com",
            "https://example.com:8443",
            "https://sub.example.com",
            "https://example.com.evil.net",
            "http://app.example.com",
            "http://localhost:8080",
            "null",
        ] {
            assert!(!config.origin_allowed(Some(bad)), "{bad}");
        }
        let any = Config {
            allowed_origins: vec!["*".into()],
            ..Config::default()
        };
        assert!(any.origin_allowed(Some("https://anything.example")));
        assert!(any.origin_allowed(Some("null")));
    }

    #[test]
    fn token_subcommand_parses() {
        let cli = Cli::try_parse_from([
            "sluice",
            "token",
            "--secret",
            "0123456789abcdef0123",
            "--room",
            "r",
            "--identity",
            "i",
            "--no-publish",
            "--ttl",
            "30m",
        ])
        .unwrap();
        let Some(Command::Token(args)) = cli.command else {
            panic!("expected token subcommand, got {:?}", cli.command);
        };
        assert_eq!(
            args.grants(),
            Grants {
                room: "r".into(),
                identity: "i".into(),
                can_publish: false,
                can_subscribe: true,
            }
        );
        assert_eq!(args.ttl(), Duration::from_secs(1800));
        assert!(!format!("{args:?}").contains("0123456789abcdef0123"));
    }

    #[test]
    fn token_subcommand_rejects_bad_input() {
        let base = ["sluice", "token", "--room", "r", "--identity", "i"];
        let with = |extra: &[&'static str]| {
            let mut argv = base.to_vec();
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        assert!(with(&["--secret", "short"]).is_err());
        assert!(with(&["--secret", "0123456789abcdef", "--ttl", "0"]).is_err());
        assert!(with(&["--secret", "0123456789abcdef", "--ttl", "1y"]).is_err());
        assert!(with(&["--secret", "0123456789abcdef", "--room", ""]).is_err());
        let args = match with(&["--secret", "0123456789abcdef"]).unwrap().command {
            Some(Command::Token(args)) => args,
            other => panic!("{other:?}"),
        };
        assert_eq!(args.ttl(), Duration::from_secs(3600));
        assert!(args.grants().can_publish && args.grants().can_subscribe);
    }

    #[test]
    fn rtmp_defaults_flags_and_off() {
        assert_eq!(
            Config::default().rtmp,
            RtmpListen::On("127.0.0.1:1935".parse().unwrap())
        );
        let cli = Cli::try_parse_from(["sluice", "--rtmp", "off"]).unwrap();
        assert_eq!(Config::load(&cli.serve).unwrap().rtmp, RtmpListen::Off);
        let cli = Cli::try_parse_from(["sluice", "--rtmp", "0.0.0.0:1936"]).unwrap();
        assert_eq!(
            Config::load(&cli.serve).unwrap().rtmp,
            RtmpListen::On("0.0.0.0:1936".parse().unwrap())
        );
        assert!(Cli::try_parse_from(["sluice", "--rtmp", "1935"]).is_err());
        assert_eq!(
            Config::from_toml_str("rtmp = \"off\"").unwrap().rtmp,
            RtmpListen::Off
        );
        assert!(Config::from_toml_str("rtmp = \"nowhere\"").is_err());
    }

    #[test]
    fn rtmp_keys_from_flags_and_toml() {
        let cli = Cli::try_parse_from([
            "sluice",
            "--rtmp-key",
            "0123456789abcdef-key=stage/obs,fedcba9876543210-key=lobby/cam/2",
        ])
        .unwrap();
        let config = Config::load(&cli.serve).unwrap();
        assert_eq!(config.rtmp_keys.len(), 2);
        assert_eq!(config.rtmp_keys[1].room, "lobby");
        assert_eq!(config.rtmp_keys[1].identity, "cam/2");
        let keys = config.stream_keys().unwrap();
        assert_eq!(
            keys.authorize("0123456789abcdef-key").unwrap(),
            StreamTarget {
                room: "stage".into(),
                identity: "obs".into()
            }
        );
        let toml = Config::from_toml_str(
            "[[rtmp_keys]]\nkey = \"0123456789abcdef-key\"\nroom = \"a/b\"\nidentity = \"obs\"\n",
        )
        .unwrap();
        assert_eq!(toml.rtmp_keys[0].room, "a/b");
        toml.validate().unwrap();
        // Keys never show in Debug output or errors.
        assert!(!format!("{config:?} {:?}", cli.serve).contains("0123456789abcdef-key"));
        let short = Cli::try_parse_from(["sluice", "--rtmp-key", "short=room/id"]).unwrap();
        let err = Config::load(&short.serve).unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
        assert!(!err.to_string().contains("short="), "{err}");
        assert!(Cli::try_parse_from(["sluice", "--rtmp-key", "no-target-here"]).is_err());
    }

    #[test]
    fn media_plane_and_udp_port_from_flags_and_toml() {
        let cli = Cli::try_parse_from(["sluice", "--media-plane", "shard", "--udp-port", "40000"])
            .unwrap();
        let config = Config::load(&cli.serve).unwrap();
        assert_eq!(config.media_plane, MediaPlane::Shard);
        assert_eq!(config.udp_port, Some(40000));
        let toml = Config::from_toml_str("media_plane = \"shard\"\nudp_port = 40001\n").unwrap();
        assert_eq!(toml.media_plane, MediaPlane::Shard);
        assert_eq!(toml.udp_port, Some(40001));
        assert_eq!(Config::default().media_plane, MediaPlane::Webrtc);
        assert!(Cli::try_parse_from(["sluice", "--media-plane", "fast"]).is_err());
        assert!(Config::from_toml_str("media_plane = \"fast\"\n").is_err());
    }

    #[test]
    fn signed_stream_keys_need_the_secret() {
        let cli = Cli::try_parse_from([
            "sluice",
            "stream-key",
            "--secret",
            "0123456789abcdef0123",
            "--room",
            "stage",
            "--identity",
            "obs",
        ])
        .unwrap();
        let Some(Command::StreamKey(args)) = cli.command else {
            panic!("expected stream-key, got {:?}", cli.command);
        };
        let target = StreamTarget {
            room: args.room.clone(),
            identity: args.identity.clone(),
        };
        let key = StreamKeys::sign(args.secret.as_bytes(), &target);
        let with_secret = Config {
            secret: Some("0123456789abcdef0123".into()),
            ..Config::default()
        };
        assert_eq!(
            with_secret.stream_keys().unwrap().authorize(&key),
            Ok(target)
        );
        assert!(
            Config::default()
                .stream_keys()
                .unwrap()
                .authorize(&key)
                .is_err()
        );
        assert!(!format!("{args:?}").contains("0123456789abcdef0123"));
        assert!(
            Cli::try_parse_from([
                "sluice",
                "stream-key",
                "--secret",
                "short",
                "--room",
                "r",
                "--identity",
                "i"
            ])
            .is_err()
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::try_parse_from([
            "sluice",
            "--listen",
            "0.0.0.0:9000",
            "--public-ip",
            "127.0.0.1",
            "--allowed-origins",
            "https://a.example,https://b.example",
            "--max-message-rate",
            "20",
            "--secret",
            "0123456789abcdef",
        ])
        .unwrap();
        let config = Config::load(&cli.serve).unwrap();
        assert_eq!(
            config.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(config.max_message_rate, 20);
        assert_eq!(config.public_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!format!("{config:?} {:?}", cli.serve).contains("0123456789abcdef"));
    }
}
