//! Unit tests of `protocol.rs`.

use super::*;
use std::path::PathBuf;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("invariant: signaling/ sits in the repo root")
        .to_path_buf()
}

#[test]
fn generated_typescript_is_fresh() {
    let path = repo_root().join("client-js/src/protocol.gen.ts");
    let expected = typescript_bindings();
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, &expected).expect("write protocol.gen.ts");
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual, expected,
        "client-js/src/protocol.gen.ts is stale: run `SLUICE_BLESS=1 cargo test -p sluice-signaling protocol`"
    );
}

/// Every golden fixture parses as the message its file name says, and re-serializes to the
/// same JSON value (so no field is silently dropped or renamed).
#[test]
fn golden_fixtures_round_trip() {
    let dir = repo_root().join("tests/fixtures/protocol");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures dir exists") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = std::fs::read_to_string(&path).expect("fixture readable");
        let value: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
        let reserialized = if name.starts_with("client.") {
            let msg: ClientMessage =
                serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            serde_json::to_value(&msg).expect("serialize")
        } else if name.starts_with("server.") {
            let msg: ServerMessage =
                serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            serde_json::to_value(&msg).expect("serialize")
        } else {
            continue;
        };
        assert_eq!(reserialized, value, "{name} does not round-trip");
        let tag = value["type"].as_str().expect("type tag");
        assert!(
            name.contains(&format!(".{tag}.")),
            "{name} holds a {tag} message"
        );
        seen += 1;
    }
    // 13 client messages + 15 server messages, one fixture each (error twice: with and without id).
    assert!(seen >= 29, "expected a fixture per message, found {seen}");
}

#[test]
fn error_code_names_match_serde() {
    for code in [
        ErrorCode::InvalidMessage,
        ErrorCode::Unauthorized,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::RateLimited,
        ErrorCode::NegotiationFailed,
        ErrorCode::LimitExceeded,
        ErrorCode::Internal,
        ErrorCode::ResumeFailed,
        ErrorCode::ServerFull,
    ] {
        assert_eq!(serde_json::to_value(code).expect("ser"), code.as_str());
    }
}
