//! The `sluice` command line (clap): serving (the options are [`ServeArgs`]), the `token` and
//! `stream-key` subcommands, and the server API's (`rooms`, `room`, `kick`, `update`, `mute`,
//! `unmute`, `close-room`; see [`crate::admin`]).

use std::time::Duration;

use crate::auth::{Grants, check_name};
use crate::config::{MIN_SECRET_BYTES, ServeArgs};
use crate::secret::Secret;

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
    /// List the open rooms (server API).
    Rooms(AdminArgs),
    /// Show a room's participants and publications (server API).
    Room(RoomArgs),
    /// Remove a participant from a room; its tokens issued until now stop working (server API).
    Kick(ParticipantArgs),
    /// Change a participant's display name or metadata (server API).
    Update(UpdateArgs),
    /// Close a room: every participant is removed (server API).
    CloseRoom(RoomArgs),
    /// Mute a publication: nothing of it is forwarded until unmuted (server API).
    Mute(PublicationArgs),
    /// Unmute a publication (server API).
    Unmute(PublicationArgs),
}

/// Arguments of `sluice mute` and `sluice unmute`.
#[derive(clap::Args, Debug)]
pub struct PublicationArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The room.
    #[arg(value_parser = parse_room)]
    pub room: String,
    /// The publication's id (as `sluice room` lists it).
    pub publication: String,
}

/// How the admin subcommands reach the server API.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// The server's HTTP address.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: url::Url,
    /// Server secret the admin token is signed with (the server's --secret).
    #[arg(long, env = "SLUICE_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: Secret,
}

/// Arguments of `sluice room` and `sluice close-room`.
#[derive(clap::Args, Debug)]
pub struct RoomArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The room.
    #[arg(value_parser = parse_room)]
    pub room: String,
}

/// Arguments of `sluice kick`.
#[derive(clap::Args, Debug)]
pub struct ParticipantArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The room.
    #[arg(value_parser = parse_room)]
    pub room: String,
    /// The participant's identity.
    #[arg(value_parser = parse_identity)]
    pub identity: String,
}

/// Arguments of `sluice update`.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub participant: ParticipantArgs,
    /// New display name.
    #[arg(long)]
    pub name: Option<String>,
    /// New metadata (application data, any string).
    #[arg(long)]
    pub metadata: Option<String>,
    /// Allow (true) or forbid (false) publishing from now on; forbidding ends its publications.
    #[arg(long, value_name = "BOOL")]
    pub can_publish: Option<bool>,
    /// Allow (true) or forbid (false) subscribing from now on; forbidding ends its
    /// subscriptions.
    #[arg(long, value_name = "BOOL")]
    pub can_subscribe: Option<bool>,
}

/// Arguments of `sluice stream-key`.
#[derive(clap::Args, Debug)]
pub struct StreamKeyArgs {
    /// Server secret the key is signed with (the server's --secret, at least 16 bytes).
    #[arg(long, env = "SLUICE_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: Secret,
    /// Room the stream is published in.
    #[arg(long, value_parser = parse_room)]
    pub room: String,
    /// Participant identity the stream publishes as.
    #[arg(long, value_parser = parse_identity)]
    pub identity: String,
}

/// Arguments of `sluice token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// Server secret used to sign the token (at least 16 bytes).
    #[arg(long, env = "SLUICE_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: Secret,
    /// Print an admin token for the server API instead of a room token.
    #[arg(long, conflicts_with_all = ["room", "identity", "no_publish", "no_subscribe", "name", "metadata"])]
    pub admin: bool,
    /// Room the token grants access to.
    #[arg(long, value_parser = parse_room, required_unless_present = "admin")]
    pub room: Option<String>,
    /// Participant identity the token is issued to.
    #[arg(long, value_parser = parse_identity, required_unless_present = "admin")]
    pub identity: Option<String>,
    /// Display name the room sees.
    #[arg(long)]
    pub name: Option<String>,
    /// Application data the room sees (any string).
    #[arg(long)]
    pub metadata: Option<String>,
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

impl TokenArgs {
    /// The grants the token should carry.
    pub fn grants(&self) -> Grants {
        Grants {
            room: self.room.clone().unwrap_or_default(),
            identity: self.identity.clone().unwrap_or_default(),
            can_publish: !self.no_publish,
            can_subscribe: !self.no_subscribe,
            name: self.name.clone(),
            metadata: self.metadata.clone(),
        }
    }

    /// The token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
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

fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.len() < MIN_SECRET_BYTES {
        return Err(format!("secret must be at least {MIN_SECRET_BYTES} bytes"));
    }
    Ok(s.into())
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
    use clap::{CommandFactory, Parser};
    use sluice_sfu::ingest::{StreamKeys, StreamTarget};

    use super::*;
    use crate::config::Config;

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
                ..Grants::default()
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
}
