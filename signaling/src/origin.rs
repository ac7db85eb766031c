//! The Origin allowlist for `/ws`: which browser pages may open a signaling WebSocket.

use std::net::IpAddr;

/// Whether a WebSocket upgrade with this `Origin` header may proceed.
///
/// * No `Origin` header (non-browser clients): allowed.
/// * `allowlist` contains `"*"`: any Origin allowed.
/// * `allowlist` non-empty: scheme, host and port must equal one entry
///   (default ports are implied: `https://a.com` == `https://a.com:443`).
/// * `allowlist` empty: an http(s) Origin whose host is `localhost`, a
///   loopback IP, the `listen` IP (unless unspecified) or `public_ip`, on any port.
pub fn allowed(
    allowlist: &[String],
    listen: IpAddr,
    public_ip: Option<IpAddr>,
    origin: Option<&str>,
) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowlist.iter().any(|o| o == "*") {
        return true;
    }
    let Some(origin) = SchemeHostPort::parse(origin) else {
        return false;
    };
    if !allowlist.is_empty() {
        return allowlist
            .iter()
            .filter_map(|o| SchemeHostPort::parse(o))
            .any(|allowed| allowed == origin);
    }
    if origin.host == "localhost" {
        return true;
    }
    match origin.ip() {
        Some(ip) => {
            ip.is_loopback() || (!listen.is_unspecified() && ip == listen) || public_ip == Some(ip)
        }
        None => false,
    }
}

/// Whether `entry` may stand in an allowlist: `"*"` or `scheme://host[:port]` (http or https).
pub fn valid_entry(entry: &str) -> bool {
    entry == "*" || SchemeHostPort::parse(entry).is_some()
}

/// A normalised web origin: lowercase scheme and host, explicit port.
#[derive(Debug, PartialEq, Eq)]
struct SchemeHostPort {
    scheme: String,
    /// Lowercase hostname, or an IP literal (IPv6 without brackets).
    host: String,
    port: u16,
}

impl SchemeHostPort {
    /// Parses `scheme://host[:port]` (optionally with one trailing `/`);
    /// only http and https, no userinfo, path, query or fragment.
    fn parse(s: &str) -> Option<Self> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty()
            || rest.chars().any(|c| {
                matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_whitespace() || c.is_control()
            })
        {
            return None;
        }
        let port_of = |p: Option<&str>| match p {
            None => Some(default_port),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u16>().ok()
            }
            Some(_) => None,
        };
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (ip, after) = bracketed.split_once(']')?;
            let ip: std::net::Ipv6Addr = ip.parse().ok()?;
            let port = match after {
                "" => port_of(None)?,
                _ => port_of(Some(after.strip_prefix(':')?))?,
            };
            (ip.to_string(), port)
        } else {
            let (host, port) = match rest.split_once(':') {
                Some((host, port)) => (host, port_of(Some(port))?),
                None => (rest, port_of(None)?),
            };
            if host.is_empty() {
                return None;
            }
            (host.to_ascii_lowercase(), port)
        };
        Some(Self { scheme, host, port })
    }

    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::Config;

    #[test]
    fn origin_allowed_default_rule() {
        let config = Config::default();
        assert!(config.origin_allowed(None));
        for ok in [
            "http://localhost:5173",
            "http://LOCALHOST",
            "https://127.0.0.1:8443",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
        ] {
            assert!(config.origin_allowed(Some(ok)), "{ok}");
        }
        for bad in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://192.168.1.5:8080",
            "null",
            "file://",
            "ws://localhost",
            "http://user@localhost",
            "",
        ] {
            assert!(!config.origin_allowed(Some(bad)), "{bad}");
        }
        let lan = Config {
            listen: "192.168.1.5:8080".parse().unwrap(),
            ..Config::default()
        };
        assert!(lan.origin_allowed(Some("http://192.168.1.5:8080")));
        assert!(!lan.origin_allowed(Some("http://192.168.1.6:8080")));
        let public = Config {
            listen: "0.0.0.0:8080".parse().unwrap(),
            public_ip: Some("203.0.113.7".parse().unwrap()),
            ..Config::default()
        };
        assert!(public.origin_allowed(Some("http://203.0.113.7:8080")));
        assert!(!public.origin_allowed(Some("http://0.0.0.0:8080")));
    }

    #[test]
    fn origin_allowed_allowlist() {
        let config = Config {
            allowed_origins: vec![
                "https://example.com".into(),
                "http://app.example.com:3000/".into(),
            ],
            ..Config::default()
        };
        config.validate().unwrap();
        assert!(config.origin_allowed(None));
        assert!(config.origin_allowed(Some("https://example.com")));
        assert!(config.origin_allowed(Some("https://EXAMPLE.com:443")));
        assert!(config.origin_allowed(Some("http://app.example.com:3000")));
        for bad in [
            "http://example.com",
            "https://example.com:8443",
            "https://sub.example.com",
            "https://example.com.evil.net",
            "http://app.example.com",
            "http://localhost:8080",
            "null",
        ] {
            assert!(!config.origin_allowed(Some(bad)), "{bad}");
        }
        let any = Config {
            allowed_origins: vec!["*".into()],
            ..Config::default()
        };
        assert!(any.origin_allowed(Some("https://anything.example")));
        assert!(any.origin_allowed(Some("null")));
    }
}
