//! Configuration tests: the limits as file keys, flags and environment variables, and their
//! validation.

use clap::Parser;

use super::super::*;
use crate::cli::Cli;

/// Each limit has a TOML key, a flag and an environment variable of the same name.
const LIMIT_OPTIONS: [&str; 15] = [
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
    "max_data_message_bytes",
    "data_messages_per_second",
    "max_ingress_age_ms",
    "max_subscribers",
    "admission_cpu_percent",
];

#[test]
fn limits_are_options_of_the_file_flags_and_environment() {
    let config = Config::from_toml_str(
        "max_rooms = 2\nmax_participants_per_room = 3\nmax_publications_per_participant = 4\n\
         max_subscriptions_per_participant = 5\nmax_connections = 60\n\
         max_connections_per_address = 6\nheader_read_timeout_ms = 2000\n\
         write_timeout_ms = 3000\nrequest_timeout_ms = 4000\npublication_stall_timeout_ms = 900\n\
         max_data_message_bytes = 1024\ndata_messages_per_second = 5\nmax_ingress_age_ms = 400\n\
         max_subscribers = 250\nadmission_cpu_percent = 85",
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
    assert_eq!(sfu.shard.data.max_message_bytes, 1024);
    assert_eq!(sfu.shard.data.messages_per_second, 5);
    assert_eq!(sfu.shard.max_ingress_age, Duration::from_millis(400));
    assert_eq!(
        (sfu.admission.max_subscribers, sfu.admission.busy_percent),
        (250, 85)
    );
    // Admission is off unless configured.
    let admission = Config::default().sfu_config().admission;
    assert_eq!((admission.max_subscribers, admission.busy_percent), (0, 0));
    let unbounded = Config::from_toml_str("max_ingress_age_ms = 0").unwrap();
    unbounded.validate().unwrap();
    assert_eq!(unbounded.sfu_config().shard.max_ingress_age, Duration::MAX);
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
        "--max-subscribers",
        "2",
        "--admission-cpu-percent",
        "90",
    ])
    .unwrap();
    let config = Config::load(&cli.serve).unwrap();
    assert_eq!(config.limits.max_rooms, 7);
    assert_eq!(config.limits.max_participants_per_room, 2);
    assert_eq!(
        config.limits.publication_stall_timeout,
        Duration::from_millis(2500)
    );
    assert_eq!(
        (
            config.limits.max_subscribers,
            config.limits.admission_cpu_percent
        ),
        (2, 90)
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
    assert!(
        invalid("max_data_message_bytes = 63")
            .contains("max_data_message_bytes must be between 64 and 65536, got 63")
    );
    assert!(invalid("max_data_message_bytes = 65537").contains("max_data_message_bytes"));
    assert!(invalid("max_ingress_age_ms = 49").contains("max_ingress_age_ms must be 0 or"));
    assert!(invalid("max_ingress_age_ms = 10001").contains("max_ingress_age_ms"));
    assert!(
        invalid("data_messages_per_second = 0")
            .contains("data_messages_per_second must be between 1 and 10000")
    );
    assert!(invalid("max_subscribers = 1000001").contains("max_subscribers must be 0 (no limit)"));
    assert!(
        invalid("admission_cpu_percent = 100")
            .contains("admission_cpu_percent must be 0 (off) or between 1 and 99, got 100")
    );
    assert!(Config::from_toml_str("admission_cpu_percent = 300").is_err());
    // Ill-typed values are refused when parsed.
    assert!(Config::from_toml_str("max_rooms = -1").is_err());
    assert!(Cli::try_parse_from(["sluice", "--max-rooms", "many"]).is_err());
}
