//! [`Secret`]: a string that never prints — token secrets and RTMP stream keys.

use std::fmt;

/// A secret string. `Debug` and `Display` print `<redacted>`, so a secret inside a config,
/// an argument struct or a log line never shows; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the code that signs or compares with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret's bytes (an HMAC key).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Self(secret.to_owned())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(s.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;
    use crate::config::{Config, ServeArgs};

    const SECRET: &str = "0123456789abcdef-top-secret";
    const KEY: &str = "0123456789abcdef-stream-key";

    #[test]
    fn a_secret_never_prints() {
        let secret = Secret::from(SECRET);
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret:#?}"), "<redacted>");
        assert_eq!(secret.expose(), SECRET);

        // Nor anywhere it is held: flags, the TOML file, the merged config, errors.
        let cli = Cli::try_parse_from([
            "sluice",
            "--secret",
            SECRET,
            "--rtmp-key",
            &format!("{KEY}=stage/obs"),
        ])
        .unwrap();
        let config = Config::load(&cli.serve).unwrap();
        let from_toml = Config::from_toml_str(&format!(
            "secret = {SECRET:?}\n[[rtmp_keys]]\nkey = {KEY:?}\nroom = \"r\"\nidentity = \"i\"\n"
        ))
        .unwrap();
        let token = Cli::try_parse_from([
            "sluice",
            "token",
            "--secret",
            SECRET,
            "--room",
            "r",
            "--identity",
            "i",
        ])
        .unwrap();
        let stream_key = Cli::try_parse_from([
            "sluice",
            "stream-key",
            "--secret",
            SECRET,
            "--room",
            "r",
            "--identity",
            "i",
        ])
        .unwrap();
        let short = Config::load(&ServeArgs {
            secret: Some("short-secret".into()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        let printed = format!(
            "{cli:?} {config:?} {config:#?} {from_toml:?} {token:?} {stream_key:?} {short} {short:?}"
        );
        for hidden in [SECRET, KEY, "short-secret"] {
            assert!(!printed.contains(hidden), "{hidden} printed in {printed}");
        }
    }
}
