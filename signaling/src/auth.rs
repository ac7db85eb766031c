//! Room tokens: HS256-signed JWTs that grant one identity access to one room.
//!
//! The algorithm is pinned: a token is accepted only if its header says
//! `"alg":"HS256"` *and* its HMAC-SHA256 signature verifies under the server
//! secret. Tokens whose header names any other algorithm (`none`, `HS384`,
//! `RS256`, ...) are rejected with [`AuthError::WrongAlgorithm`] before any
//! signature work is done, and over-long inputs are rejected before parsing.
//!
//! Payload claims (camelCase, shared with the TypeScript client):
//!
//! ```json
//! { "sub": "alice", "room": "lobby", "identity": "alice",
//!   "canPublish": true, "canSubscribe": true, "iat": 1700000000, "exp": 1700003600 }
//! ```
//!
//! A token minted elsewhere may also carry `nbf` (not before, seconds since the epoch): it is
//! refused with [`AuthError::NotValidYet`] until then; and `name` (a display name, at most
//! [`MAX_NAME_CHARS`] characters) and `metadata` (application data, at most
//! [`MAX_METADATA_BYTES`]), which the room sees in `participantJoined`.
//!
//! An **admin token** (`{"sub": "backend", "admin": true, "iat": …, "exp": …}`, same secret
//! and algorithm) authorises the server API ([`TokenAuthority::verify_admin`]); it carries no
//! room and cannot join one, and a room token is never an admin token.
//!
//! [`TokenAuthority::revoke`] refuses, from then on, every token of one identity in one room
//! issued (`iat`) at or before that second: the server API's removal of a participant.
//!
//! ```
//! use std::time::Duration;
//! use sluice_signaling::auth::{Grants, TokenAuthority};
//!
//! let authority = TokenAuthority::new(b"a-secret-of-at-least-16-bytes");
//! let grants = Grants {
//!     room: "lobby".into(),
//!     identity: "alice".into(),
//!     can_publish: true,
//!     can_subscribe: true,
//!     ..Grants::default()
//! };
//! let token = authority.mint(&grants, Duration::from_secs(3600))?;
//! assert_eq!(authority.verify(&token)?, grants);
//! # Ok::<(), sluice_signaling::auth::AuthError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Longest token [`TokenAuthority::verify`] will look at, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest room name or identity, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Clock skew tolerated when checking `exp`, in seconds.
pub const EXP_LEEWAY_SECS: u64 = 5;
/// Clock skew tolerated when checking `nbf` (a token used slightly before its start), in seconds.
pub const NBF_LEEWAY_SECS: u64 = 5;
/// Longest participant `metadata`, in bytes (in a token, or set through the server API).
pub const MAX_METADATA_BYTES: usize = 2048;
/// How long a revocation ([`TokenAuthority::revoke`]) holds, in seconds: tokens issued before
/// a removal and living longer than this become usable again after it.
pub const REVOCATION_SECS: u64 = 24 * 3600;
/// Revocations kept at most; past it the oldest is forgotten first.
pub const MAX_REVOCATIONS: usize = 100_000;

/// What a token allows its bearer to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// The room the bearer may join.
    pub room: String,
    /// The participant identity the bearer joins as.
    pub identity: String,
    /// Whether the bearer may publish tracks.
    pub can_publish: bool,
    /// Whether the bearer may subscribe to others' tracks.
    pub can_subscribe: bool,
    /// Display name the room sees.
    pub name: Option<String>,
    /// Application data the room sees, opaque to Sluice.
    pub metadata: Option<String>,
}

/// A verified room token: its grants and when it was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub grants: Grants,
    /// `iat`, seconds since the epoch.
    pub issued_at: u64,
}

/// Why a token could not be minted or was rejected.
///
/// Messages never contain the token or the secret.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not a well-formed token: bad encoding, missing or invalid claims.
    #[error("malformed token")]
    Malformed,
    /// The signature does not verify under the server secret.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotValidYet,
    /// The header names an algorithm other than HS256.
    #[error("token algorithm not allowed")]
    WrongAlgorithm,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("token too long")]
    TooLong,
    /// Its identity was removed from the room (server API) after it was issued.
    #[error("token revoked")]
    Revoked,
    /// A valid token, but not an admin token.
    #[error("not an admin token")]
    NotAdmin,
    /// The token could not be created.
    #[error("cannot mint token: {0}")]
    Mint(String),
}

/// Wire form of the token payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claims {
    sub: String,
    room: String,
    identity: String,
    can_publish: bool,
    can_subscribe: bool,
    iat: u64,
    /// Optional start of validity, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<String>,
}

/// Wire form of an admin token's payload.
#[derive(Debug, Serialize, Deserialize)]
struct AdminClaims {
    sub: String,
    admin: bool,
    iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    exp: u64,
}

/// Identities removed from rooms: (room, identity) → the second of the removal.
type Revocations = HashMap<(String, String), u64>;

/// Mints and verifies room tokens with one shared secret.
#[derive(Clone)]
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    revoked: Arc<Mutex<Revocations>>,
}

impl fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are deliberately not printed.
        f.debug_struct("TokenAuthority").finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// An authority signing and verifying with `secret` (HMAC-SHA256).
    ///
    /// The secret's strength is the caller's concern; `Config::validate`
    /// requires at least 16 bytes.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        // `exp` must be present; it and `nbf` (optional) are checked against our own clock in
        // `verify_at`, so tests can set the time.
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = EXP_LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            revoked: Arc::default(),
        }
    }

    /// A fresh random secret (32 bytes from the OS-seeded CSPRNG, as 64 hex
    /// characters) for running without a configured secret.
    pub fn generate_secret() -> Secret {
        let mut bytes = [0u8; 32];
        rand::rng().fill(&mut bytes);
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into()
    }

    /// Mints a token for `grants`, valid for `ttl` from now.
    pub fn mint(&self, grants: &Grants, ttl: Duration) -> Result<String, AuthError> {
        self.mint_at(grants, unix_now(), ttl)
    }

    /// Mints a token as if the clock read `now_unix` (seconds since the epoch).
    pub fn mint_at(
        &self,
        grants: &Grants,
        now_unix: u64,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        check_name("room", &grants.room).map_err(AuthError::Mint)?;
        check_name("identity", &grants.identity).map_err(AuthError::Mint)?;
        check_profile(grants.name.as_deref(), grants.metadata.as_deref())
            .map_err(AuthError::Mint)?;
        if ttl.as_secs() == 0 {
            return Err(AuthError::Mint("ttl must be at least one second".into()));
        }
        let exp = now_unix
            .checked_add(ttl.as_secs())
            .ok_or_else(|| AuthError::Mint("ttl too large".into()))?;
        let claims = Claims {
            sub: grants.identity.clone(),
            room: grants.room.clone(),
            identity: grants.identity.clone(),
            can_publish: grants.can_publish,
            can_subscribe: grants.can_subscribe,
            iat: now_unix,
            nbf: None,
            exp,
            name: grants.name.clone(),
            metadata: grants.metadata.clone(),
        };
        self.sign(&claims)
    }

    /// Mints an admin token (the server API's credential) for `subject`, valid for `ttl`.
    pub fn mint_admin(&self, subject: &str, ttl: Duration) -> Result<String, AuthError> {
        self.mint_admin_at(subject, unix_now(), ttl)
    }

    /// Mints an admin token as if the clock read `now_unix`.
    pub fn mint_admin_at(
        &self,
        subject: &str,
        now_unix: u64,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        check_name("subject", subject).map_err(AuthError::Mint)?;
        if ttl.as_secs() == 0 {
            return Err(AuthError::Mint("ttl must be at least one second".into()));
        }
        let exp = now_unix
            .checked_add(ttl.as_secs())
            .ok_or_else(|| AuthError::Mint("ttl too large".into()))?;
        self.sign(&AdminClaims {
            sub: subject.to_owned(),
            admin: true,
            iat: now_unix,
            nbf: None,
            exp,
        })
    }

    fn sign(&self, claims: &impl Serialize) -> Result<String, AuthError> {
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| AuthError::Mint(format!("signing failed: {:?}", e.kind())))?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Mint(
                "token would exceed the maximum length".into(),
            ));
        }
        Ok(token)
    }

    /// Verifies `token` against the current time and returns its grants.
    pub fn verify(&self, token: &str) -> Result<Grants, AuthError> {
        self.verify_at(token, unix_now())
            .map(|verified| verified.grants)
    }

    /// Verifies an admin token against the current time; returns its subject.
    pub fn verify_admin(&self, token: &str) -> Result<String, AuthError> {
        self.verify_admin_at(token, unix_now())
    }

    /// Verifies an admin token as if the clock read `now_unix`.
    pub fn verify_admin_at(&self, token: &str, now_unix: u64) -> Result<String, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong);
        }
        check_header_alg(token)?;
        let claims = jsonwebtoken::decode::<AdminClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match map_jwt_error(e.kind()) {
                // A well-signed token of another shape (a room token) is not an admin one.
                AuthError::Malformed => AuthError::NotAdmin,
                other => other,
            })?
            .claims;
        check_validity(now_unix, claims.exp, claims.nbf)?;
        if !claims.admin {
            return Err(AuthError::NotAdmin);
        }
        Ok(claims.sub)
    }

    /// From now on, refuses every token of `identity` in `room` issued at or before
    /// `now_unix` (for [`REVOCATION_SECS`]).
    pub fn revoke(&self, room: &str, identity: &str, now_unix: u64) {
        let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        revoked.retain(|_, at| now_unix.saturating_sub(*at) < REVOCATION_SECS);
        if revoked.len() >= MAX_REVOCATIONS {
            let oldest = revoked
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                revoked.remove(&oldest);
            }
        }
        revoked.insert((room.to_owned(), identity.to_owned()), now_unix);
    }

    fn is_revoked(&self, grants: &Grants, issued_at: u64, now_unix: u64) -> bool {
        let revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        revoked
            .get(&(grants.room.clone(), grants.identity.clone()))
            .is_some_and(|at| issued_at <= *at && now_unix.saturating_sub(*at) < REVOCATION_SECS)
    }

    /// Verifies `token` as if the clock read `now_unix` (seconds since the epoch).
    ///
    /// Checks, in order: length, shape, header algorithm (HS256 only),
    /// signature, claims, expiry (with [`EXP_LEEWAY_SECS`] of leeway), start of
    /// validity when the token has an `nbf` (with [`NBF_LEEWAY_SECS`] of leeway), and that
    /// its identity was not removed from the room after it was issued.
    pub fn verify_at(&self, token: &str, now_unix: u64) -> Result<VerifiedToken, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong);
        }
        check_header_alg(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let claims = data.claims;
        check_validity(now_unix, claims.exp, claims.nbf)?;
        if claims.sub != claims.identity
            || check_name("room", &claims.room).is_err()
            || check_name("identity", &claims.identity).is_err()
            || check_profile(claims.name.as_deref(), claims.metadata.as_deref()).is_err()
        {
            return Err(AuthError::Malformed);
        }
        let grants = Grants {
            room: claims.room,
            identity: claims.identity,
            can_publish: claims.can_publish,
            can_subscribe: claims.can_subscribe,
            name: claims.name,
            metadata: claims.metadata,
        };
        if self.is_revoked(&grants, claims.iat, now_unix) {
            return Err(AuthError::Revoked);
        }
        Ok(VerifiedToken {
            grants,
            issued_at: claims.iat,
        })
    }
}

/// `exp` (with [`EXP_LEEWAY_SECS`]) and `nbf` (with [`NBF_LEEWAY_SECS`]) against `now_unix`.
fn check_validity(now_unix: u64, exp: u64, nbf: Option<u64>) -> Result<(), AuthError> {
    if now_unix > exp.saturating_add(EXP_LEEWAY_SECS) {
        return Err(AuthError::Expired);
    }
    if nbf.is_some_and(|nbf| now_unix.saturating_add(NBF_LEEWAY_SECS) < nbf) {
        return Err(AuthError::NotValidYet);
    }
    Ok(())
}

/// Checks a display name (as [`check_name`]) and metadata (at most [`MAX_METADATA_BYTES`]).
pub fn check_profile(name: Option<&str>, metadata: Option<&str>) -> Result<(), String> {
    if let Some(name) = name {
        check_name("name", name)?;
    }
    if metadata.is_some_and(|m| m.len() > MAX_METADATA_BYTES) {
        return Err(format!(
            "metadata must be at most {MAX_METADATA_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Checks a room name or identity: 1..=[`MAX_NAME_CHARS`] characters, no
/// control characters. `what` names the field in the error message.
pub fn check_name(what: &str, value: &str) -> Result<(), String> {
    let chars = value.chars().count();
    if chars == 0 {
        return Err(format!("{what} must not be empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "{what} must be at most {MAX_NAME_CHARS} characters"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}

/// Seconds since the Unix epoch now (0 on a clock before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Rejects anything but a three-part token whose header says `"alg":"HS256"`.
fn check_header_alg(token: &str) -> Result<(), AuthError> {
    #[derive(Deserialize)]
    struct AlgOnly {
        alg: String,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let json = b64url_decode(header).ok_or(AuthError::Malformed)?;
    let header: AlgOnly = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if header.alg != "HS256" {
        return Err(AuthError::WrongAlgorithm);
    }
    Ok(())
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm,
        _ => AuthError::Malformed,
    }
}

/// Decodes unpadded base64url (RFC 4648 §5), as used by JWS compact form.
fn b64url_decode(input: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let bytes = input.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | value(c)?;
        }
        // Left-align the chunk's bits in 24 bits, then emit the whole bytes.
        acc <<= 6 * (4 - chunk.len() as u32);
        let n = chunk.len() * 6 / 8;
        out.extend_from_slice(&acc.to_be_bytes()[1..=n]);
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
