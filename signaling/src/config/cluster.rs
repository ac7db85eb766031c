//! The cluster options: `redis` (the coordination server a node joins; none: a single node,
//! as without a cluster), `node_id` and `node_url`, their types and checks. What a cluster
//! does with them is in [`crate::cluster`].

use std::fmt;

/// Longest node id.
pub const MAX_NODE_ID_LEN: usize = 64;

/// A node's cluster options, after merging defaults, file, environment and flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis server of the cluster; `None`: this node is on its own.
    pub redis: Option<RedisUrl>,
    /// This node's id in the registry; `None`: a random one per start.
    pub node_id: Option<String>,
    /// The HTTP URL other nodes and applications reach this node at; `None`: derived from
    /// the listen address (see [`crate::cluster::NodeAddresses`]).
    pub node_url: Option<url::Url>,
}

impl ClusterConfig {
    /// Checks the node id's characters and length and the node URL's scheme.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = &self.node_id {
            check_node_id(id)?;
        }
        if let Some(url) = &self.node_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(format!("node_url: {url} is not an http(s) URL"));
        }
        if self.redis.is_none() && (self.node_id.is_some() || self.node_url.is_some()) {
            return Err("node_id and node_url need redis: they name this node in a cluster".into());
        }
        Ok(())
    }
}

/// 1 to [`MAX_NODE_ID_LEN`] ASCII letters, digits, `.`, `_` or `-`: it is part of Redis keys
/// and of URLs.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let valid = (1..=MAX_NODE_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "node_id {id:?} must be 1 to {MAX_NODE_ID_LEN} letters, digits, '.', '_' or '-'"
        ))
    }
}

/// A `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` URL. Printed (`Display`, `Debug`) with its
/// password hidden.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct RedisUrl(url::Url);

impl RedisUrl {
    /// The URL itself, password included, for the Redis client only.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(s.trim())
            .map_err(|err| format!("invalid redis URL: {err} (expected redis://HOST:PORT)"))?;
        match url.scheme() {
            "redis" => {}
            "rediss" => return Err("redis: TLS (rediss://) is not supported yet".into()),
            other => return Err(format!("redis: expected redis://HOST:PORT, got {other}://")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("redis: the URL has no host".into());
        }
        Ok(Self(url))
    }
}

impl TryFrom<String> for RedisUrl {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Cannot fail: the URL has a host (checked when parsed).
            let _ = shown.set_password(Some("***"));
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn redis_urls_parse_and_hide_their_password() {
        let url: RedisUrl = "redis://:hunter2@10.0.0.5:6379/2".parse().unwrap();
        assert_eq!(url.expose(), "redis://:hunter2@10.0.0.5:6379/2");
        assert_eq!(url.to_string(), "redis://:***@10.0.0.5:6379/2");
        assert!(!format!("{url:?}").contains("hunter2"));
        for (bad, why) in [
            ("http://127.0.0.1:6379", "expected redis://"),
            ("rediss://127.0.0.1:6379", "TLS"),
            ("127.0.0.1:6379", "expected redis://"),
            ("redis://", "no host"),
            ("not a url", "invalid redis URL"),
        ] {
            let err = bad.parse::<RedisUrl>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn node_ids_and_urls_are_checked() {
        let redis = Some("redis://127.0.0.1:6379".parse().unwrap());
        let with = |id: &str| ClusterConfig {
            redis: redis.clone(),
            node_id: Some(id.to_owned()),
            node_url: None,
        };
        assert!(with("eu-west-1.node_7").validate().is_ok());
        for bad in ["", "a b", "a:b", "a/b", "é", &"n".repeat(65)] {
            assert!(with(bad).validate().is_err(), "{bad:?}");
        }
        let ftp = ClusterConfig {
            redis,
            node_id: None,
            node_url: Some("ftp://x".parse().unwrap()),
        };
        assert!(ftp.validate().unwrap_err().contains("http(s)"));
        let alone = ClusterConfig {
            node_id: Some("a".into()),
            ..ClusterConfig::default()
        };
        assert!(alone.validate().unwrap_err().contains("need redis"));
    }
}
