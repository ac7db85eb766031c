//! Tests of the configuration: defaults, the TOML file, precedence, validation.

#![allow(clippy::unwrap_used)]

use std::error::Error as _;
use std::path::PathBuf;

use clap::Parser;
use sluice_sfu::ingest::StreamTarget;

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
    let config = Config::from_toml_str(include_str!("../../../config.example.toml")).unwrap();
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

mod limits;
mod sources;
