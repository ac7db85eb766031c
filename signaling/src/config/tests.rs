//! Tests of the configuration: defaults, the TOML file, precedence, validation.

#![allow(clippy::unwrap_used)]

use std::error::Error as _;

use clap::Parser;
use sluice_sfu::ingest::{RtspTransport, StreamTarget};

use super::*;
use crate::cli::Cli;

/// A config file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("sluice-config-{}-{name}.toml", std::process::id()));
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
    let config = Config::from_toml_str(include_str!("../../config.example.toml")).unwrap();
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
    assert_eq!(config.udp_port, None);
    assert_eq!(config.secret, None);
}

#[test]
fn resume_grace_and_test_hooks_flags() {
    let cli = Cli::try_parse_from(["sluice", "--resume-grace-ms", "2500", "--test-hooks"]).unwrap();
    let config = Config::load(&cli.serve).unwrap();
    assert_eq!(config.resume_grace, Duration::from_millis(2500));
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
    assert_eq!(config.resume_grace, Duration::from_secs(15));
}

#[test]
fn metrics_and_drain_timeout() {
    let cli = Cli::try_parse_from(["sluice", "--metrics", "off", "--drain-timeout", "30"]).unwrap();
    let config = Config::load(&cli.serve).unwrap();
    assert!(!config.metrics);
    assert_eq!(config.drain_timeout, Duration::from_secs(30));
    let cli = Cli::try_parse_from(["sluice", "--metrics=on"]).unwrap();
    assert!(Config::load(&cli.serve).unwrap().metrics);
    // Defaults: metrics served, a 10 s drain.
    let config = Config::load(&Cli::try_parse_from(["sluice"]).unwrap().serve).unwrap();
    assert!(config.metrics);
    assert_eq!(config.drain_timeout, Duration::from_secs(10));
    // The TOML keys.
    let config = Config::from_toml_str("metrics = false\ndrain_timeout = 3\n").unwrap();
    assert!(!config.metrics);
    assert_eq!(config.drain_timeout, Duration::from_secs(3));
    let too_long = Config {
        drain_timeout: Duration::from_secs(3601),
        ..Config::default()
    };
    assert!(too_long.validate().is_err());
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
        "--udp-port",
        "40000",
    ])
    .unwrap();
    assert!(cli.command.is_none());
    let config = Config::load(&cli.serve).unwrap();
    assert_eq!(config.log, "trace");
    assert_eq!(config.max_message_rate, 7);
    assert_eq!(config.udp_port, Some(40000));
}

#[test]
fn unknown_key_rejected_clearly() {
    let err = Config::from_toml_str("listen = \"127.0.0.1:1\"\nlisten_port = 80\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { path: None, .. }));
    let detail = err.source().unwrap().to_string();
    assert!(
        detail.contains("unknown field") && detail.contains("listen_port"),
        "{detail}"
    );
    // `--config` is a flag only: a file cannot name another file.
    let err = Config::from_toml_str("config = \"other.toml\"\n").unwrap_err();
    assert!(
        err.source().unwrap().to_string().contains("unknown field"),
        "{err}"
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

/// The text of a configuration error, its causes included (a TOML error names the key).
fn error_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[test]
fn a_udp_port_range_is_refused_with_the_reason() {
    let flag = Cli::try_parse_from(["sluice", "--udp-ports", "50000-50100"]).unwrap_err();
    let toml = Config::from_toml_str("udp_ports = \"50000-50100\"\n").unwrap_err();
    for text in [flag.to_string(), error_text(&toml)] {
        assert!(text.contains("--udp-port PORT"), "{text}");
        assert!(text.contains("replace --udp-ports"), "{text}");
    }
    // Not even a well-formed value or another type slips through.
    assert!(Config::from_toml_str("udp_ports = 5\n").is_err());
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
            playout_delay: Duration::from_millis(1001),
            ..ok.clone()
        },
        Config {
            resume_grace: Duration::from_millis(300_001),
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

#[test]
fn media_plane_and_udp_port_from_flags_and_toml() {
    let cli =
        Cli::try_parse_from(["sluice", "--media-plane", "shard", "--udp-port", "40000"]).unwrap();
    assert_eq!(cli.serve.media_plane, Some(MediaPlane::Shard));
    let config = Config::load(&cli.serve).unwrap();
    assert_eq!(config.udp_port, Some(40000));
    let toml = Config::from_toml_str("media_plane = \"shard\"\nudp_port = 40001\n").unwrap();
    assert_eq!(toml.udp_port, Some(40001));
    assert_eq!(Config::default().tcp_port, IceTcpPort::SameAsUdp);
    let tcp = Cli::try_parse_from(["sluice", "--tcp-port", "off"]).unwrap();
    assert_eq!(Config::load(&tcp.serve).unwrap().tcp_port, IceTcpPort::Off);
    let tcp = Config::from_toml_str("tcp_port = 40002\n").unwrap();
    assert_eq!(tcp.tcp_port, IceTcpPort::Port(40002));
    assert_eq!(
        Config::from_toml_str("tcp_port = \"off\"\n")
            .unwrap()
            .tcp_port,
        IceTcpPort::Off
    );
    assert!(Config::from_toml_str("tcp_port = \"often\"\n").is_err());
    assert_eq!(
        Config::default().media_threads,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let threads = Cli::try_parse_from(["sluice", "--media-threads", "2"]).unwrap();
    assert_eq!(Config::load(&threads.serve).unwrap().media_threads, 2);
    assert!(
        Config::from_toml_str("media_threads = 0\n")
            .unwrap()
            .validate()
            .is_err()
    );
    assert!(Cli::try_parse_from(["sluice", "--media-plane", "fast"]).is_err());
    assert!(Config::from_toml_str("media_plane = \"fast\"\n").is_err());
}

#[test]
fn the_webrtc_media_plane_is_refused_with_the_reason() {
    let flag = Cli::try_parse_from(["sluice", "--media-plane", "webrtc"]).unwrap_err();
    let toml = Config::from_toml_str("media_plane = \"webrtc\"\n").unwrap_err();
    for text in [flag.to_string(), error_text(&toml)] {
        assert!(
            text.contains("the webrtc media plane no longer exists"),
            "{text}"
        );
        assert!(text.contains("remove --media-plane"), "{text}");
    }
}

#[test]
fn rtsp_sources_come_from_the_file_with_credentials_from_the_environment() {
    let config = Config::from_toml_str(
        r#"
        [[rtsp_sources]]
        url = "rtsp://192.0.2.10:554/stream1"
        room = "lobby"
        identity = "door-camera"
        username_env = "CAM_USER"
        password_env = "CAM_PASSWORD"

        [[rtsp_sources]]
        url = "rtsp://192.0.2.11/live"
        room = "lobby"
        identity = "yard-camera"
        transport = "udp"
        "#,
    )
    .unwrap();
    let env = |var: &str| match var {
        "CAM_USER" => Some("admin".to_owned()),
        "CAM_PASSWORD" => Some("hunter2-camera".to_owned()),
        _ => None,
    };
    let sources = config.rtsp_sources_with_env(&env).unwrap();
    assert_eq!(sources.len(), 2);
    let credentials = sources[0].credentials.as_ref().unwrap();
    assert_eq!(credentials.username, "admin");
    assert_eq!(credentials.password, "hunter2-camera");
    assert!(!format!("{:?}", sources[0]).contains("hunter2"));
    assert_eq!(sources[0].transport, RtspTransport::Tcp);
    assert_eq!(sources[1].transport, RtspTransport::Udp);
    assert_eq!(sources[1].credentials, None);
    assert_eq!(sources[1].target.identity, "yard-camera");
}

#[test]
fn rtsp_sources_are_validated() {
    let invalid = |entry: &str| {
        let config = Config::from_toml_str(&format!("[[rtsp_sources]]\n{entry}")).unwrap();
        config.validate().unwrap_err().to_string()
    };
    let base = "room = \"r\"\nidentity = \"cam\"\n";
    assert!(invalid(&format!("url = \"http://x/\"\n{base}")).contains("rtsp://"));
    assert!(invalid(&format!("url = \"rtsp://u:p@x/\"\n{base}")).contains("no credentials"));
    assert!(
        invalid(&format!("url = \"rtsp://x/\"\n{base}transport = \"sctp\"")).contains("tcp or udp")
    );
    assert!(
        invalid(&format!("url = \"rtsp://x/\"\n{base}username_env = \"A\""))
            .contains("both username_env and password_env")
    );
    assert!(
        invalid(&format!(
            "url = \"rtsp://x/\"\n{base}username_env = \"SLUICE_TEST_UNSET_9d1\"\npassword_env = \"SLUICE_TEST_UNSET_9d1\""
        ))
        .contains("SLUICE_TEST_UNSET_9d1 is not set")
    );
    let twice = format!(
        "[[rtsp_sources]]\nurl = \"rtsp://x/\"\n{base}\n[[rtsp_sources]]\nurl = \"rtsp://y/\"\n{base}"
    );
    let config = Config::from_toml_str(&twice).unwrap();
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("two sources")
    );
    // Unknown keys are refused, as everywhere in the file.
    assert!(Config::from_toml_str("[[rtsp_sources]]\nurl = \"rtsp://x/\"\npassword = \"p\"\nroom = \"r\"\nidentity = \"c\"").is_err());
}

#[test]
fn webhook_urls_from_flags_and_toml_need_a_secret_and_http() {
    let from_toml = Config::from_toml_str(
        "secret = \"0123456789abcdef\"\nwebhook_urls = [\"https://app.example/hook\"]\n",
    )
    .unwrap();
    assert_eq!(from_toml.webhook_urls.len(), 1);
    assert!(from_toml.validate().is_ok());
    let cli = Cli::try_parse_from([
        "sluice",
        "--webhook-url",
        "http://127.0.0.1:9/a,http://127.0.0.1:9/b",
        "--secret",
        "0123456789abcdef",
    ])
    .unwrap();
    assert_eq!(Config::load(&cli.serve).unwrap().webhook_urls.len(), 2);
    let cli = Cli::try_parse_from(["sluice", "--webhook-url", "http://127.0.0.1:9/a"]).unwrap();
    let unsigned = Config::load(&cli.serve).unwrap_err().to_string();
    assert!(unsigned.contains("needs a secret"), "{unsigned}");
    let ftp =
        Config::from_toml_str("secret = \"0123456789abcdef\"\nwebhook_urls = [\"ftp://x/\"]\n")
            .unwrap();
    assert!(ftp.validate().unwrap_err().to_string().contains("http(s)"));
    assert!(Config::from_toml_str("webhook_urls = [\"not a url\"]\n").is_err());
}

/// Each limit has a TOML key, a flag and an environment variable of the same name.
const LIMIT_OPTIONS: [&str; 10] = [
    "max_rooms",
    "max_participants_per_room",
    "max_publications_per_participant",
    "max_subscriptions_per_participant",
    "max_connections",
    "max_connections_per_address",
    "header_read_timeout_ms",
    "write_timeout_ms",
    "request_timeout_ms",
    "publication_stall_timeout_ms",
];

#[test]
fn limits_are_options_of_the_file_flags_and_environment() {
    let config = Config::from_toml_str(
        "max_rooms = 2\nmax_participants_per_room = 3\nmax_publications_per_participant = 4\n\
         max_subscriptions_per_participant = 5\nmax_connections = 60\n\
         max_connections_per_address = 6\nheader_read_timeout_ms = 2000\n\
         write_timeout_ms = 3000\nrequest_timeout_ms = 4000\npublication_stall_timeout_ms = 900",
    )
    .unwrap();
    config.validate().unwrap();
    let limits = &config.limits;
    assert_eq!(
        (
            limits.max_rooms,
            limits.max_participants_per_room,
            limits.max_publications_per_participant,
            limits.max_subscriptions_per_participant,
            limits.max_connections,
            limits.max_connections_per_address,
        ),
        (2, 3, 4, 5, 60, 6)
    );
    let sfu = config.sfu_config();
    assert_eq!(
        (sfu.limits.max_rooms, sfu.limits.max_participants_per_room),
        (2, 3)
    );
    assert_eq!(
        sfu.shard.room.publication_stall_timeout,
        Some(Duration::from_millis(900))
    );
    let http = limits.connections();
    assert_eq!(http.header_read_timeout, Duration::from_secs(2));
    assert_eq!(http.write_timeout, Duration::from_secs(3));
    assert_eq!(http.request_timeout, Duration::from_secs(4));

    // Flags override the file; each has its environment variable.
    let cli = Cli::try_parse_from([
        "sluice",
        "--max-rooms",
        "7",
        "--max-participants-per-room",
        "2",
        "--publication-stall-timeout-ms",
        "2500",
    ])
    .unwrap();
    let config = Config::load(&cli.serve).unwrap();
    assert_eq!(config.limits.max_rooms, 7);
    assert_eq!(config.limits.max_participants_per_room, 2);
    assert_eq!(
        config.limits.publication_stall_timeout,
        Duration::from_millis(2500)
    );
    let command = <Cli as clap::CommandFactory>::command();
    let serve_args: Vec<&clap::Arg> = command.get_arguments().collect();
    for key in LIMIT_OPTIONS {
        let flag = key.replace('_', "-");
        let arg = serve_args
            .iter()
            .find(|a| a.get_long() == Some(flag.as_str()))
            .unwrap_or_else(|| panic!("no --{flag}"));
        let env = format!("SLUICE_{}", key.to_uppercase());
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some(env.as_str()),
            "--{flag}"
        );
    }
}

#[test]
fn limits_are_validated() {
    let invalid = |toml: &str| {
        Config::from_toml_str(toml)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    };
    assert!(invalid("max_rooms = 0").contains("max_rooms must be between 1 and 1000000"));
    assert!(invalid("max_participants_per_room = 0").contains("max_participants_per_room"));
    assert!(
        invalid("max_publications_per_participant = 65")
            .contains("max_publications_per_participant must be between 1 and 64")
    );
    assert!(invalid("max_subscriptions_per_participant = 0").contains("max_subscriptions"));
    assert!(
        invalid("max_connections = 10\nmax_connections_per_address = 11")
            .contains("max_connections_per_address must be between 1 and 10")
    );
    assert!(invalid("header_read_timeout_ms = 999").contains("header_read_timeout_ms"));
    assert!(invalid("write_timeout_ms = 600001").contains("write_timeout_ms"));
    assert!(invalid("request_timeout_ms = 0").contains("request_timeout_ms"));
    assert!(invalid("publication_stall_timeout_ms = 100").contains("publication_stall_timeout_ms"));
    // Ill-typed values are refused when parsed.
    assert!(Config::from_toml_str("max_rooms = -1").is_err());
    assert!(Cli::try_parse_from(["sluice", "--max-rooms", "many"]).is_err());
}
