//! The STUN/TURN servers advertised to WHIP and WHEP clients (`ice_servers`): how one parses
//! from a flag or environment variable and from the TOML file, its checks, and the `Link`
//! header value (RFC 9725 §4.6) it becomes.

use crate::secret::Secret;

/// Most servers one configuration may advertise.
pub const MAX_ICE_SERVERS: usize = 16;

/// Longest URL, username or credential accepted.
const MAX_FIELD_LEN: usize = 512;

/// A STUN or TURN server clients may use, as `RTCIceServer` names one: its URLs (`stun:`,
/// `stuns:`, `turn:`, `turns:`) and, for TURN, the long-term credentials.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub credential: Option<Secret>,
}

/// `urls = "turn:…"` or `urls = ["turn:…", …]`, as `RTCIceServer.urls` takes either.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Form {
        One(String),
        Many(Vec<String>),
    }
    Ok(match serde::Deserialize::deserialize(deserializer)? {
        Form::One(url) => vec![url],
        Form::Many(urls) => urls,
    })
}

impl std::str::FromStr for IceServer {
    type Err = String;

    /// `URL[;username=U;credential=C]`, e.g.
    /// `turn:turn.example.com:3478?transport=udp;username=alice;credential=secret`. Errors
    /// never repeat the credential.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split(';');
        let url = parts.next().unwrap_or_default().trim().to_owned();
        let mut server = Self {
            urls: vec![url],
            username: None,
            credential: None,
        };
        for part in parts {
            match part.split_once('=') {
                Some(("username", value)) => server.username = Some(value.to_owned()),
                Some(("credential", value)) => server.credential = Some(value.into()),
                _ => {
                    let name = part.split_once('=').map_or(part, |(name, _)| name);
                    return Err(format!(
                        "invalid ICE server parameter {name:?}: expected \
                         URL[;username=U;credential=C]"
                    ));
                }
            }
        }
        Ok(server)
    }
}

impl IceServer {
    /// Checks the URLs' schemes, that TURN comes with a username and credential (browsers
    /// refuse a TURN server without them), and that every value fits a `Link` header.
    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("ice_servers: an entry without urls".to_owned());
        }
        for url in &self.urls {
            let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
            let Some(scheme) =
                scheme.filter(|s| matches!(s.as_str(), "stun" | "stuns" | "turn" | "turns"))
            else {
                return Err(format!(
                    "ice_servers: {url:?} is not a stun:, stuns:, turn: or turns: URL"
                ));
            };
            if !header_safe(url) || url.contains(['<', '>', ' ', '"']) {
                return Err(format!(
                    "ice_servers: {url:?} has characters a URL cannot have"
                ));
            }
            if scheme.starts_with("turn") && (self.username.is_none() || self.credential.is_none())
            {
                return Err(format!(
                    "ice_servers: {url:?} needs a username and a credential"
                ));
            }
        }
        if let Some(username) = &self.username
            && !quotable(username)
        {
            return Err(format!(
                "ice_servers: the username of {:?} has a '\"', a control character or is too long",
                self.urls[0]
            ));
        }
        if let Some(credential) = &self.credential
            && !quotable(credential.expose())
        {
            return Err(format!(
                "ice_servers: the credential of {:?} has a '\"', a control character or is too long",
                self.urls[0]
            ));
        }
        Ok(())
    }

    /// One `Link` header value per URL (RFC 9725 §4.6); with `credentials` false, those of a
    /// server that has credentials are left out.
    pub fn links(&self, credentials: bool) -> Vec<String> {
        let secret = self.username.is_some() || self.credential.is_some();
        if secret && !credentials {
            return Vec::new();
        }
        self.urls
            .iter()
            .map(|url| {
                let mut link = format!("<{url}>; rel=\"ice-server\"");
                if let Some(username) = &self.username {
                    link.push_str(&format!("; username=\"{username}\""));
                }
                if let Some(credential) = &self.credential {
                    link.push_str(&format!(
                        "; credential=\"{}\"; credential-type=\"password\"",
                        credential.expose()
                    ));
                }
                link
            })
            .collect()
    }
}

/// Checks every server of a configuration, and their number.
pub(super) fn validate(servers: &[IceServer]) -> Result<(), String> {
    if servers.len() > MAX_ICE_SERVERS {
        return Err(format!("at most {MAX_ICE_SERVERS} ice_servers"));
    }
    servers.iter().try_for_each(IceServer::validate)
}

/// Fits a quoted-string of a header value: [`header_safe`] without `"`.
fn quotable(value: &str) -> bool {
    header_safe(value) && !value.contains('"')
}

/// Printable ASCII (a header value's safe subset), not empty and at most [`MAX_FIELD_LEN`].
fn header_safe(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_FIELD_LEN
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_flag_value_with_and_without_credentials() {
        let stun: IceServer = "stun:stun.example.com:3478".parse().unwrap();
        assert_eq!(stun.urls, ["stun:stun.example.com:3478"]);
        assert!(stun.validate().is_ok());
        assert_eq!(
            stun.links(false),
            ["<stun:stun.example.com:3478>; rel=\"ice-server\""]
        );
        let turn: IceServer =
            "turn:turn.example.com:3478?transport=udp;username=1700000000:alice;credential=s3cr=t"
                .parse()
                .unwrap();
        assert!(turn.validate().is_ok());
        assert_eq!(turn.username.as_deref(), Some("1700000000:alice"));
        assert_eq!(
            turn.links(true),
            [
                "<turn:turn.example.com:3478?transport=udp>; rel=\"ice-server\"; \
              username=\"1700000000:alice\"; credential=\"s3cr=t\"; credential-type=\"password\""
            ]
        );
        assert!(turn.links(false).is_empty(), "credentials only when asked");
        let unknown = "turn:x;password=p".parse::<IceServer>().unwrap_err();
        assert!(
            unknown.contains("\"password\"") && !unknown.contains("=p"),
            "{unknown}"
        );
    }

    #[test]
    fn what_cannot_be_advertised_is_refused() {
        for (value, why) in [
            ("http://turn.example.com", "is not a stun:"),
            ("turn:turn.example.com", "needs a username and a credential"),
            ("turn:t;username=a\"b;credential=c", "username"),
            ("turn:t;username=a;credential=c\u{7f}", "credential"),
            ("stun:a b", "characters"),
        ] {
            let server: IceServer = value.parse().unwrap();
            let err = server.validate().unwrap_err();
            assert!(err.contains(why), "{value}: {err}");
            assert!(!err.contains("c\u{7f}"), "the credential is never repeated");
        }
    }
}
