//! Stream keys: which RTMP publisher may enter which room, as whom.
//!
//! Two kinds of keys are accepted:
//! - **configured keys**, each naming its room and identity (`--rtmp-key`, TOML `rtmp_keys`);
//! - **signed keys** `s1.<room>.<identity>.<mac>` (base64url parts), made by
//!   `sluice stream-key` from the server secret, so a backend can hand out keys without
//!   touching the server's configuration.
//!
//! Keys are secrets: they are compared in constant time and never logged or shown in errors;
//! logs name the room and identity a key maps to instead.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Shortest configured key accepted: a key is a password.
pub const MIN_KEY_LEN: usize = 16;
/// Longest key looked at: room and identity are at most 128 characters each.
const MAX_KEY_LEN: usize = 2048;
const SIGNED_PREFIX: &str = "s1";
/// Derives the signing key from the server secret, so a stream-key MAC can never be mistaken
/// for (or made from) a room token signed with the same secret.
const SIGNING_CONTEXT: &[u8] = b"sluice rtmp stream key v1";

/// Where a stream goes: the room, and the participant identity it publishes as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamTarget {
    pub room: String,
    pub identity: String,
}

impl std::fmt::Display for StreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.room, self.identity)
    }
}

#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unknown stream key")]
    Unknown,
    #[error("a configured stream key must be at least {MIN_KEY_LEN} characters")]
    TooShort,
    #[error("a stream key must not contain '/', '?', whitespace or control characters")]
    BadCharacter,
}

struct ConfiguredKey {
    /// SHA-256 of the key: every comparison then runs over 32 bytes whatever the key lengths.
    digest: [u8; 32],
    target: StreamTarget,
}

/// The keys a server accepts.
#[derive(Default)]
pub struct StreamKeys {
    configured: Vec<ConfiguredKey>,
    signing_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for StreamKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamKeys")
            .field("configured", &self.configured.len())
            .field("signed_keys", &self.signing_key.is_some())
            .finish()
    }
}

impl StreamKeys {
    /// Accepts no key until keys are added or a secret is set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also accepts keys signed with `secret` (see [`StreamKeys::sign`]).
    pub fn with_secret(mut self, secret: &[u8]) -> Self {
        self.signing_key = Some(signing_key(secret));
        self
    }

    /// Accepts `key` for `target`.
    pub fn add(&mut self, key: &str, target: StreamTarget) -> Result<(), KeyError> {
        check_key_text(key)?;
        if key.chars().count() < MIN_KEY_LEN {
            return Err(KeyError::TooShort);
        }
        self.configured.push(ConfiguredKey {
            digest: Sha256::digest(key.as_bytes()).into(),
            target,
        });
        Ok(())
    }

    /// Whether any key could be accepted.
    pub fn is_empty(&self) -> bool {
        self.configured.is_empty() && self.signing_key.is_none()
    }

    /// A key for `target`, valid for as long as `secret` is the server's secret.
    pub fn sign(secret: &[u8], target: &StreamTarget) -> String {
        let body = format!(
            "{SIGNED_PREFIX}.{}.{}",
            URL_SAFE_NO_PAD.encode(&target.room),
            URL_SAFE_NO_PAD.encode(&target.identity)
        );
        let mac = mac(&signing_key(secret), &body).finalize().into_bytes();
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// The target `key` grants, checked in constant time against every configured key.
    pub fn authorize(&self, key: &str) -> Result<StreamTarget, KeyError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(KeyError::Unknown);
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Look at every entry so the time taken does not say which one matched.
        let mut found = None;
        for entry in &self.configured {
            if bool::from(entry.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(entry.target.clone());
            }
        }
        if let Some(target) = found {
            return Ok(target);
        }
        self.verify_signed(key).ok_or(KeyError::Unknown)
    }

    fn verify_signed(&self, key: &str) -> Option<StreamTarget> {
        let signing_key = self.signing_key.as_ref()?;
        let (body, tag) = key.rsplit_once('.')?;
        let mut parts = body.split('.');
        let (prefix, room, identity) = (parts.next()?, parts.next()?, parts.next()?);
        if prefix != SIGNED_PREFIX || parts.next().is_some() {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // `verify_slice` compares in constant time.
        mac(signing_key, body).verify_slice(&tag).ok()?;
        let decode = |part: &str| {
            String::from_utf8(URL_SAFE_NO_PAD.decode(part).ok()?)
                .ok()
                .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
        };
        Some(StreamTarget {
            room: decode(room)?,
            identity: decode(identity)?,
        })
    }
}

/// A key travels in the RTMP URL's last path segment: it cannot hold what would split it.
fn check_key_text(key: &str) -> Result<(), KeyError> {
    if key
        .chars()
        .any(|c| c == '/' || c == '?' || c.is_whitespace() || c.is_control())
    {
        return Err(KeyError::BadCharacter);
    }
    Ok(())
}

fn signing_key(secret: &[u8]) -> [u8; 32] {
    let mut derive =
        HmacSha256::new_from_slice(secret).expect("invariant: HMAC accepts keys of any length");
    derive.update(SIGNING_CONTEXT);
    derive.finalize().into_bytes().into()
}

fn mac(key: &[u8; 32], body: &str) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(key).expect("invariant: HMAC accepts keys of any length");
    mac.update(body.as_bytes());
    mac
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target(room: &str, identity: &str) -> StreamTarget {
        StreamTarget {
            room: room.into(),
            identity: identity.into(),
        }
    }

    #[test]
    fn configured_keys_map_to_their_target() {
        let mut keys = StreamKeys::new();
        keys.add("0123456789abcdef", target("lobby", "obs"))
            .unwrap();
        keys.add("fedcba9876543210xyz", target("stage", "cam 2"))
            .unwrap();
        assert_eq!(
            keys.authorize("0123456789abcdef"),
            Ok(target("lobby", "obs"))
        );
        assert_eq!(
            keys.authorize("fedcba9876543210xyz"),
            Ok(target("stage", "cam 2"))
        );
        for wrong in [
            "",
            "0123456789abcdeF",
            "0123456789abcde",
            "x".repeat(5000).as_str(),
        ] {
            assert_eq!(keys.authorize(wrong), Err(KeyError::Unknown));
        }
    }

    #[test]
    fn configured_keys_must_be_long_and_url_safe() {
        let mut keys = StreamKeys::new();
        assert_eq!(keys.add("short", target("r", "i")), Err(KeyError::TooShort));
        assert_eq!(
            keys.add("has/a/slash/in/it!", target("r", "i")),
            Err(KeyError::BadCharacter)
        );
        assert_eq!(
            keys.add("query?string=longer", target("r", "i")),
            Err(KeyError::BadCharacter)
        );
        assert!(keys.is_empty());
    }

    #[test]
    fn signed_keys_round_trip_and_resist_tampering() {
        let secret = b"a-secret-of-at-least-16-bytes";
        let keys = StreamKeys::new().with_secret(secret);
        let wanted = target("weird/room.name ✓", "obs.studio");
        let key = StreamKeys::sign(secret, &wanted);
        assert!(key.starts_with("s1."));
        assert!(check_key_text(&key).is_ok(), "usable in a URL: {key}");
        assert_eq!(keys.authorize(&key), Ok(wanted.clone()));
        // Another secret, a changed room, a changed tag: all refused.
        let other = StreamKeys::new().with_secret(b"another-secret-of-16-bytes");
        assert_eq!(other.authorize(&key), Err(KeyError::Unknown));
        let forged = key.replacen(
            &URL_SAFE_NO_PAD.encode(&wanted.room),
            &URL_SAFE_NO_PAD.encode("admin"),
            1,
        );
        assert_eq!(keys.authorize(&forged), Err(KeyError::Unknown));
        let mut flipped = key.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            keys.authorize(std::str::from_utf8(&flipped).unwrap()),
            Err(KeyError::Unknown)
        );
        // Without a secret, signed keys are not accepted.
        assert_eq!(StreamKeys::new().authorize(&key), Err(KeyError::Unknown));
    }

    #[test]
    fn errors_never_contain_the_key() {
        let keys = StreamKeys::new();
        let err = keys.authorize("super-secret-key-123").unwrap_err();
        assert!(!err.to_string().contains("super-secret"));
        assert!(!format!("{keys:?}").contains("super-secret"));
    }

    proptest! {
        #[test]
        fn arbitrary_keys_never_panic(key in ".{0,300}") {
            let keys = StreamKeys::new().with_secret(b"0123456789abcdef");
            let _ = keys.authorize(&key);
        }
    }
}
