//! Configuration tests: RTSP sources, webhook receivers, the ICE servers advertised and the
//! cluster options.

use clap::Parser;
use sluice_sfu::ingest::RtspTransport;

use super::super::*;
use crate::cli::Cli;

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

#[test]
fn ice_servers_from_toml_flags_and_environment_in_that_order() {
    let file = super::TempFile::new(
        "ice-servers",
        r#"
        [[ice_servers]]
        urls = "stun:stun.example.com"
        [[ice_servers]]
        urls = ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349"]
        username = "alice"
        credential = "file-secret"
        "#,
    );
    let path = file.0.to_str().unwrap();
    let from_file = Config::load(
        &Cli::try_parse_from(["sluice", "--config", path])
            .unwrap()
            .serve,
    )
    .unwrap();
    assert_eq!(from_file.ice_servers.len(), 2);
    assert_eq!(from_file.ice_servers[1].urls.len(), 2);
    assert_eq!(from_file.ice_servers[1].username.as_deref(), Some("alice"));
    // Flags replace the file's list (repeatable and comma-separated alike).
    let cli = Cli::try_parse_from([
        "sluice",
        "--config",
        path,
        "--ice-server",
        "stun:a.example,turn:b.example;username=bob;credential=flag-secret",
        "--ice-server",
        "stun:c.example",
    ])
    .unwrap();
    let from_flags = Config::load(&cli.serve).unwrap();
    let urls: Vec<&str> = from_flags
        .ice_servers
        .iter()
        .map(|s| s.urls[0].as_str())
        .collect();
    assert_eq!(urls, ["stun:a.example", "turn:b.example", "stun:c.example"]);
    assert_eq!(
        from_flags.ice_servers[1]
            .credential
            .as_ref()
            .map(Secret::expose),
        Some("flag-secret")
    );
    // The environment variable is the same option (clap: flags over environment), and its
    // values stay out of --help.
    let command = <Cli as clap::CommandFactory>::command();
    let serve = command
        .get_arguments()
        .find(|a| a.get_id() == "ice_servers")
        .expect("the --ice-server option");
    assert_eq!(
        serve.get_env().and_then(|e| e.to_str()),
        Some("SLUICE_ICE_SERVERS")
    );
    assert!(serve.is_hide_env_values_set());
    // Debug output never shows a credential.
    assert!(!format!("{from_flags:?}").contains("flag-secret"));
    // Refused: TURN without credentials, another scheme.
    let cli = Cli::try_parse_from(["sluice", "--ice-server", "turn:b.example"]).unwrap();
    let err = Config::load(&cli.serve).unwrap_err().to_string();
    assert!(err.contains("needs a username and a credential"), "{err}");
    let err = Config::from_toml_str("[[ice_servers]]\nurls = [\"https://x\"]\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("stun:"), "{err}");
    assert!(
        Config::from_toml_str("[[ice_servers]]\nurls = \"stun:x\"\npassword = \"p\"\n").is_err()
    );
}

#[test]
fn cluster_options_from_toml_and_flags_and_none_by_default() {
    assert_eq!(Config::default().cluster, ClusterConfig::default());
    assert!(
        Config::default().cluster.redis.is_none(),
        "a single node by default"
    );
    let file = super::TempFile::new(
        "cluster",
        "redis = \"redis://:file-password@10.0.0.5:6379\"\nnode_id = \"sfu-1\"\n",
    );
    let path = file.0.to_str().unwrap();
    let from_file = Config::load(
        &Cli::try_parse_from(["sluice", "--config", path])
            .unwrap()
            .serve,
    )
    .unwrap();
    let redis = from_file.cluster.redis.as_ref().unwrap();
    assert_eq!(redis.expose(), "redis://:file-password@10.0.0.5:6379");
    assert_eq!(from_file.cluster.node_id.as_deref(), Some("sfu-1"));
    assert!(!format!("{from_file:?}").contains("file-password"));
    let cli = Cli::try_parse_from([
        "sluice",
        "--config",
        path,
        "--redis",
        "redis://127.0.0.1:7000",
        "--node-url",
        "https://sfu-1.example.com",
    ])
    .unwrap();
    let from_flags = Config::load(&cli.serve).unwrap();
    assert_eq!(
        from_flags.cluster.redis.as_ref().map(RedisUrl::expose),
        Some("redis://127.0.0.1:7000")
    );
    assert_eq!(from_flags.cluster.node_id.as_deref(), Some("sfu-1"));
    assert_eq!(
        from_flags.cluster.node_url.as_ref().map(url::Url::as_str),
        Some("https://sfu-1.example.com/")
    );
    let command = <Cli as clap::CommandFactory>::command();
    let env = |id: &str| {
        command
            .get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_env())
            .and_then(|e| e.to_str().map(str::to_owned))
    };
    assert_eq!(env("redis").as_deref(), Some("SLUICE_REDIS"));
    assert_eq!(env("node_id").as_deref(), Some("SLUICE_NODE_ID"));
    assert_eq!(env("node_url").as_deref(), Some("SLUICE_NODE_URL"));
    assert!(Cli::try_parse_from(["sluice", "--redis", "http://127.0.0.1:6379"]).is_err());
    let cli = Cli::try_parse_from(["sluice", "--node-id", "sfu-1"]).unwrap();
    let err = Config::load(&cli.serve).unwrap_err().to_string();
    assert!(err.contains("need redis"), "{err}");
}
