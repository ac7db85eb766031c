//! The options of `sluice` (serve), each declared once: its flag, `SLUICE_*` environment
//! variable and help text (clap) and its TOML key (serde: the field name). See the parent
//! module for how the layers merge.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::{IceServer, IceTcpPort, MediaPlane, RedisUrl, RtmpKey, RtmpListen, RtspSourceEntry};
use super::{Secret, UdpPortRange};

/// The server options, each declared once: flag, environment variable and help text (clap),
/// TOML key (serde: the field name). Every field is optional so that one layer fills the gaps
/// of the next; see [`Config::load`].
#[derive(clap::Args, serde::Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ServeArgs {
    /// TOML config file; flags and environment variables override its values.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "PATH")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address for HTTP and WebSocket signaling [default: 127.0.0.1:8080].
    #[arg(long, env = "SLUICE_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Refused: media uses one UDP port for every connection (see --udp-port).
    #[arg(long, env = "SLUICE_UDP_PORTS", value_name = "LO-HI", hide = true)]
    pub udp_ports: Option<UdpPortRange>,
    /// IP advertised in ICE candidates [default: bind 127.0.0.1 and advertise it].
    #[arg(long, env = "SLUICE_PUBLIC_IP", value_name = "IP")]
    pub public_ip: Option<IpAddr>,
    /// Media plane: "shard", the only one (media threads sharing one UDP port, ICE-lite; see
    /// --udp-port) [default: shard].
    #[arg(long, env = "SLUICE_MEDIA_PLANE", value_name = "shard")]
    pub media_plane: Option<MediaPlane>,
    /// The one UDP port of all media [default: 0 = OS-assigned, logged at start].
    #[arg(long, env = "SLUICE_UDP_PORT", value_name = "PORT")]
    pub udp_port: Option<u16>,
    /// The ICE-TCP port (RFC 6544 passive candidates, for clients whose network blocks UDP),
    /// or `off` [default: the UDP port's number].
    #[arg(long, env = "SLUICE_TCP_PORT", value_name = "PORT|off")]
    pub tcp_port: Option<IceTcpPort>,
    /// Media threads, each a shard on the one UDP port; rooms are placed whole on one
    /// [default: the machine's cores].
    #[arg(long, env = "SLUICE_MEDIA_THREADS", value_name = "N")]
    pub media_threads: Option<usize>,
    /// Token signing secret, at least 16 bytes [default: random per start (demo mode)].
    #[arg(long, env = "SLUICE_SECRET", hide_env_values = true)]
    pub secret: Option<Secret>,
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
    /// Rooms open at once on this server; the join that would open one more is refused
    /// (`limitExceeded`) [default: 1024].
    #[arg(long, env = "SLUICE_MAX_ROOMS", value_name = "N")]
    pub max_rooms: Option<usize>,
    /// Participants in one room; a join beyond is refused (`limitExceeded`) [default: 100].
    #[arg(long, env = "SLUICE_MAX_PARTICIPANTS_PER_ROOM", value_name = "N")]
    pub max_participants_per_room: Option<usize>,
    /// Publications (tracks) one participant may hold [default: 8].
    #[arg(
        long,
        env = "SLUICE_MAX_PUBLICATIONS_PER_PARTICIPANT",
        value_name = "N"
    )]
    pub max_publications_per_participant: Option<usize>,
    /// Subscriptions one participant may hold [default: 200].
    #[arg(
        long,
        env = "SLUICE_MAX_SUBSCRIPTIONS_PER_PARTICIPANT",
        value_name = "N"
    )]
    pub max_subscriptions_per_participant: Option<usize>,
    /// HTTP and WebSocket connections served at once; more are answered 503 [default: 1024].
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// HTTP and WebSocket connections at once from one address (IPv6: one /64) [default: 64].
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// Time a client may take to send an HTTP request's headers, in ms [default: 10000].
    #[arg(long, env = "SLUICE_HEADER_READ_TIMEOUT_MS", value_name = "MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Time a write to a connection may make no progress (the client does not read) before
    /// the connection is reset, in ms [default: 10000].
    #[arg(long, env = "SLUICE_WRITE_TIMEOUT_MS", value_name = "MS")]
    pub write_timeout_ms: Option<u64>,
    /// Time from an HTTP request's headers to the start of its response (a body never
    /// finished is answered 408), in ms [default: 30000].
    #[arg(long, env = "SLUICE_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// A publication that sends no media for this long is announced stalled
    /// (`publicationStalled`), in ms, 500 to 60000 [default: 1500].
    #[arg(long, env = "SLUICE_PUBLICATION_STALL_TIMEOUT_MS", value_name = "MS")]
    pub publication_stall_timeout_ms: Option<u64>,
    /// Largest data message a participant may send, envelope included, in bytes, 64 to
    /// 65536; larger ones are refused (`dataRejected`) [default: 15360].
    #[arg(long, env = "SLUICE_MAX_DATA_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_data_message_bytes: Option<usize>,
    /// Data messages one participant may send per second (with a burst of one second's
    /// worth), 1 to 10000; more are refused (`dataRejected`) [default: 100].
    #[arg(long, env = "SLUICE_DATA_MESSAGES_PER_SECOND", value_name = "N")]
    pub data_messages_per_second: Option<u32>,
    /// RTP media that waited longer than this in the server's receive queues (a media thread
    /// that cannot keep up) is discarded and its video asked for a keyframe, in ms, 50 to
    /// 10000; 0 delivers media however late [default: 250].
    #[arg(long, env = "SLUICE_MAX_INGRESS_AGE_MS", value_name = "MS")]
    pub max_ingress_age_ms: Option<u64>,
    /// Subscriber connections (participants that receive media, SDK and WHEP) across the
    /// server; a new one beyond is refused (`serverFull`, WHEP 503) while those admitted and
    /// publishers are unaffected; 0 = no limit [default: 0].
    #[arg(long, env = "SLUICE_MAX_SUBSCRIBERS", value_name = "N")]
    pub max_subscribers: Option<usize>,
    /// Refuse new subscriber connections (`serverFull`, WHEP 503) while the media thread of
    /// their room spent more than this percentage of its last ~2 s working rather than
    /// waiting for packets, 1 to 99; 0 = off [default: 0].
    #[arg(long, env = "SLUICE_ADMISSION_CPU_PERCENT", value_name = "P")]
    pub admission_cpu_percent: Option<u8>,
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
    /// Largest signaling message accepted, in bytes (TOML file only) [default: 65536].
    #[arg(skip)]
    pub max_message_bytes: Option<usize>,
    /// Log filter in tracing EnvFilter syntax, e.g. "info,sluice_sfu=debug" [default: info].
    #[arg(long, env = "SLUICE_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Serve Prometheus metrics at `/metrics` on the listen address: "on" or "off"
    /// [default: on].
    #[arg(
        long,
        env = "SLUICE_METRICS",
        value_name = "on|off",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub metrics: Option<bool>,
    /// On SIGTERM or Ctrl-C, how long the server drains (stops accepting, tells clients to
    /// reconnect elsewhere, closes) before it exits anyway, in seconds [default: 10].
    #[arg(long, env = "SLUICE_DRAIN_TIMEOUT", value_name = "SECONDS")]
    pub drain_timeout: Option<u64>,
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
    /// RTSP sources (cameras) Sluice pulls and publishes, each `[[rtsp_sources]]` with url,
    /// room, identity, optional username_env/password_env and transport (TOML file only: an
    /// array of tables has no flag form).
    #[arg(skip)]
    pub rtsp_sources: Option<Vec<RtspSourceEntry>>,
    /// Where to POST the application's events (webhooks: rooms, participants, publications,
    /// ingest), signed with the secret; repeat or comma-separate [default: none].
    #[arg(
        long = "webhook-url",
        env = "SLUICE_WEBHOOK_URLS",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub webhook_urls: Option<Vec<url::Url>>,
    /// A STUN/TURN server advertised to WHIP and WHEP clients (`Link` headers),
    /// `URL[;username=U;credential=C]`; repeat or comma-separate [default: none].
    #[arg(
        long = "ice-server",
        env = "SLUICE_ICE_SERVERS",
        hide_env_values = true,
        value_name = "URL",
        value_delimiter = ','
    )]
    pub ice_servers: Option<Vec<IceServer>>,
    /// The Redis server of the cluster this node joins, redis://HOST:PORT (node registry
    /// and room placement; docs/cluster.md) [default: none = a single node].
    #[arg(long, env = "SLUICE_REDIS", hide_env_values = true, value_name = "URL")]
    pub redis: Option<RedisUrl>,
    /// This node's id in the cluster: letters, digits, '.', '_', '-' [default: random].
    #[arg(long, env = "SLUICE_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// The HTTP URL the cluster lists this node at [default: http:// and the listen address,
    /// the public IP in place of an unspecified one].
    #[arg(long, env = "SLUICE_NODE_URL", value_name = "URL")]
    pub node_url: Option<url::Url>,
}
