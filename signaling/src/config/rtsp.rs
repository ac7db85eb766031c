//! `[[rtsp_sources]]`: the RTSP sources of the TOML file, checked and resolved into the
//! ingest's [`RtspSource`]s (credentials read from the environment variables they name), and
//! [`Config::rtsp_sources`](super::Config::rtsp_sources).

use sluice_sfu::ingest::{RtspCredentials, RtspSource, RtspTransport, StreamTarget};

use super::ConfigError;
use crate::auth::check_name;

/// One `[[rtsp_sources]]` entry: a source Sluice pulls, and the room and identity it publishes
/// as. Credentials are not in the file: it names the environment variables holding them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspSourceEntry {
    /// `rtsp://host[:port]/path`, without user or password.
    pub url: String,
    pub room: String,
    pub identity: String,
    /// The environment variable holding the username (with `password_env`).
    pub username_env: Option<String>,
    /// The environment variable holding the password (with `username_env`).
    pub password_env: Option<String>,
    /// "tcp" (RTP interleaved in the RTSP connection) or "udp" [default: tcp].
    pub transport: Option<String>,
}

/// The checked parts of a source, whatever names its credentials: room and identity, an
/// `rtsp://` URL without credentials, and its transport. `name` prefixes the messages.
pub(crate) fn check_source(
    name: &str,
    url: &str,
    room: &str,
    identity: &str,
    transport: Option<&str>,
) -> Result<(url::Url, RtspTransport), String> {
    check_name("rtsp_sources room", room)?;
    check_name("rtsp_sources identity", identity)?;
    let parsed: url::Url = url
        .parse()
        .map_err(|e| format!("{name}: url {url:?}: {e}"))?;
    if parsed.scheme() != "rtsp" {
        return Err(format!("{name}: url must start with rtsp://"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{name}: put no credentials in the url; pass them separately"
        ));
    }
    let transport = match transport {
        None => RtspTransport::default(),
        Some(text) => text.parse().map_err(|e| format!("{name}: {e}"))?,
    };
    Ok((parsed, transport))
}

impl RtspSourceEntry {
    /// The source this entry describes, its credentials read with `env` (a variable's value,
    /// `None` when unset).
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<RtspSource, String> {
        let name = format!("rtsp_sources entry for {}/{}", self.room, self.identity);
        let (url, transport) = check_source(
            &name,
            &self.url,
            &self.room,
            &self.identity,
            self.transport.as_deref(),
        )
        .map_err(|err| {
            if err.ends_with("pass them separately") {
                format!(
                    "{name}: put no credentials in the url; name their environment variables \
                     in username_env and password_env"
                )
            } else {
                err
            }
        })?;
        let env = |var: &str| {
            env(var).ok_or_else(|| format!("{name}: environment variable {var} is not set"))
        };
        let credentials = match (&self.username_env, &self.password_env) {
            (None, None) => None,
            (Some(user), Some(password)) => Some(RtspCredentials {
                username: env(user)?,
                password: env(password)?,
            }),
            _ => {
                return Err(format!(
                    "{name}: set both username_env and password_env, or neither"
                ));
            }
        };
        Ok(RtspSource {
            url,
            target: StreamTarget {
                room: self.room.clone(),
                identity: self.identity.clone(),
            },
            credentials,
            transport,
        })
    }
}

impl super::Config {
    /// The RTSP sources to pull, credentials read from the environment variables they name.
    /// Two sources cannot publish as the same room and identity.
    pub fn rtsp_sources(&self) -> Result<Vec<RtspSource>, ConfigError> {
        self.rtsp_sources_with_env(&|var| std::env::var(var).ok())
    }

    /// [`Config::rtsp_sources`] with the environment read through `env`.
    pub fn rtsp_sources_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<RtspSource>, ConfigError> {
        let mut sources: Vec<RtspSource> = Vec::with_capacity(self.rtsp_sources.len());
        for entry in &self.rtsp_sources {
            let source = entry.resolve(env).map_err(ConfigError::Invalid)?;
            if sources.iter().any(|other| other.target == source.target) {
                return Err(ConfigError::Invalid(format!(
                    "rtsp_sources: two sources publish as {}/{}",
                    entry.room, entry.identity
                )));
            }
            sources.push(source);
        }
        Ok(sources)
    }
}
