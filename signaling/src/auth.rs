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
//! refused with [`AuthError::NotValidYet`] until then.
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
//! };
//! let token = authority.mint(&grants, Duration::from_secs(3600))?;
//! assert_eq!(authority.verify(&token)?, grants);
//! # Ok::<(), sluice_signaling::auth::AuthError>(())
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Longest token [`TokenAuthority::verify`] will look at, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest room name or identity, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Clock skew tolerated when checking `exp`, in seconds.
pub const EXP_LEEWAY_SECS: u64 = 5;
/// Clock skew tolerated when checking `nbf` (a token used slightly before its start), in seconds.
pub const NBF_LEEWAY_SECS: u64 = 5;

/// What a token allows its bearer to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// The room the bearer may join.
    pub room: String,
    /// The participant identity the bearer joins as.
    pub identity: String,
    /// Whether the bearer may publish tracks.
    pub can_publish: bool,
    /// Whether the bearer may subscribe to others' tracks.
    pub can_subscribe: bool,
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
}

/// Mints and verifies room tokens with one shared secret.
#[derive(Clone)]
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
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
        }
    }

    /// A fresh random secret (32 bytes from the OS-seeded CSPRNG, as 64 hex
    /// characters) for running without a configured secret.
    pub fn generate_secret() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
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
    }

    /// Verifies `token` as if the clock read `now_unix` (seconds since the epoch).
    ///
    /// Checks, in order: length, shape, header algorithm (HS256 only),
    /// signature, claims, expiry (with [`EXP_LEEWAY_SECS`] of leeway), start of
    /// validity when the token has an `nbf` (with [`NBF_LEEWAY_SECS`] of leeway).
    pub fn verify_at(&self, token: &str, now_unix: u64) -> Result<Grants, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong);
        }
        check_header_alg(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let claims = data.claims;
        if now_unix > claims.exp.saturating_add(EXP_LEEWAY_SECS) {
            return Err(AuthError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now_unix.saturating_add(NBF_LEEWAY_SECS) < nbf)
        {
            return Err(AuthError::NotValidYet);
        }
        if claims.sub != claims.identity
            || check_name("room", &claims.room).is_err()
            || check_name("identity", &claims.identity).is_err()
        {
            return Err(AuthError::Malformed);
        }
        Ok(Grants {
            room: claims.room,
            identity: claims.identity,
            can_publish: claims.can_publish,
            can_subscribe: claims.can_subscribe,
        })
    }
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

fn unix_now() -> u64 {
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
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    fn grants() -> Grants {
        Grants {
            room: "lobby".into(),
            identity: "alice".into(),
            can_publish: true,
            can_subscribe: false,
        }
    }

    fn b64url_encode(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let mut buf = [0u8; 3];
            buf[..chunk.len()].copy_from_slice(chunk);
            let n = (u32::from(buf[0]) << 16) | (u32::from(buf[1]) << 8) | u32::from(buf[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn parts(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn b64url_round_trip() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(
                b64url_decode(&b64url_encode(&data)).unwrap(),
                data,
                "len {len}"
            );
        }
        assert!(b64url_decode("a").is_none());
        assert!(b64url_decode("ab+/").is_none());
        assert!(b64url_decode("ab=").is_none());
    }

    #[test]
    fn round_trip() {
        let auth = TokenAuthority::new(SECRET);
        let token = auth.mint(&grants(), HOUR).unwrap();
        assert_eq!(auth.verify(&token).unwrap(), grants());
        let token = auth.mint_at(&grants(), NOW, HOUR).unwrap();
        assert_eq!(auth.verify_at(&token, NOW + 10).unwrap(), grants());
    }

    #[test]
    fn claims_are_camel_case() {
        let auth = TokenAuthority::new(SECRET);
        let token = auth.mint_at(&grants(), NOW, HOUR).unwrap();
        let payload = b64url_decode(&parts(&token)[1]).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let obj = json.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "canPublish",
                "canSubscribe",
                "exp",
                "iat",
                "identity",
                "room",
                "sub"
            ]
        );
        assert_eq!(obj["sub"], "alice");
        assert_eq!(obj["iat"], NOW);
        assert_eq!(obj["exp"], NOW + 3600);
        let header = b64url_decode(&parts(&token)[0]).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["alg"], "HS256");
    }

    #[test]
    fn expired() {
        let auth = TokenAuthority::new(SECRET);
        let token = auth.mint_at(&grants(), NOW, HOUR).unwrap();
        // Within the leeway: still accepted.
        assert!(auth.verify_at(&token, NOW + 3600 + EXP_LEEWAY_SECS).is_ok());
        assert!(matches!(
            auth.verify_at(&token, NOW + 3600 + EXP_LEEWAY_SECS + 1),
            Err(AuthError::Expired)
        ));
        // Against the real clock, a token minted long ago is expired.
        assert!(matches!(auth.verify(&token), Err(AuthError::Expired)));
    }

    #[test]
    fn not_valid_yet() {
        let auth = TokenAuthority::new(SECRET);
        let key = EncodingKey::from_secret(SECRET);
        let with_nbf = |nbf: serde_json::Value| {
            let claims = serde_json::json!({"sub":"alice","room":"lobby","identity":"alice","canPublish":true,"canSubscribe":false,"iat":NOW,"nbf":nbf,"exp":NOW+3600});
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        let later = with_nbf((NOW + 60).into());
        let err = auth.verify_at(&later, NOW).unwrap_err();
        assert!(matches!(err, AuthError::NotValidYet), "{err:?}");
        assert_eq!(err.to_string(), "token not valid yet");
        // From its `nbf` on (and within the leeway before it), it is accepted.
        assert_eq!(auth.verify_at(&later, NOW + 60).unwrap(), grants());
        assert_eq!(
            auth.verify_at(&later, NOW + 60 - NBF_LEEWAY_SECS).unwrap(),
            grants()
        );
        assert!(matches!(
            auth.verify_at(&later, NOW + 60 - NBF_LEEWAY_SECS - 1),
            Err(AuthError::NotValidYet)
        ));
        assert_eq!(
            auth.verify_at(&with_nbf(NOW.into()), NOW).unwrap(),
            grants()
        );
        assert!(matches!(
            auth.verify_at(&with_nbf("soon".into()), NOW),
            Err(AuthError::Malformed)
        ));
    }

    #[test]
    fn tampered_payload() {
        let auth = TokenAuthority::new(SECRET);
        let token = auth.mint_at(&grants(), NOW, HOUR).unwrap();
        let p = parts(&token);
        let payload = String::from_utf8(b64url_decode(&p[1]).unwrap()).unwrap();
        let forged = payload.replace("\"canSubscribe\":false", "\"canSubscribe\":true");
        assert_ne!(payload, forged);
        let forged = format!("{}.{}.{}", p[0], b64url_encode(forged.as_bytes()), p[2]);
        assert!(matches!(
            auth.verify_at(&forged, NOW),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn wrong_secret() {
        let token = TokenAuthority::new(SECRET)
            .mint_at(&grants(), NOW, HOUR)
            .unwrap();
        let other = TokenAuthority::new(b"another-secret-entirely-0123456");
        assert!(matches!(
            other.verify_at(&token, NOW),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn alg_none_rejected() {
        let auth = TokenAuthority::new(SECRET);
        let token = auth.mint_at(&grants(), NOW, HOUR).unwrap();
        let payload = &parts(&token)[1];
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None"}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            let forged = format!("{}.{payload}.", b64url_encode(header.as_bytes()));
            let err = auth.verify_at(&forged, NOW).unwrap_err();
            assert!(
                matches!(err, AuthError::WrongAlgorithm | AuthError::Malformed),
                "{header}: {err:?}"
            );
        }
        let forged = format!("{}.{payload}.", b64url_encode(br#"{"alg":"none"}"#));
        assert!(matches!(
            auth.verify_at(&forged, NOW),
            Err(AuthError::WrongAlgorithm)
        ));
    }

    #[test]
    fn other_algorithms_rejected() {
        let auth = TokenAuthority::new(SECRET);
        let claims = Claims {
            sub: "alice".into(),
            room: "lobby".into(),
            identity: "alice".into(),
            can_publish: true,
            can_subscribe: true,
            iat: NOW,
            nbf: None,
            exp: NOW + 3600,
        };
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = jsonwebtoken::encode(
                &Header::new(alg),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap();
            assert!(
                matches!(auth.verify_at(&token, NOW), Err(AuthError::WrongAlgorithm)),
                "{alg:?}"
            );
        }
        // An RS256 header over an HMAC signature (key-confusion attempt).
        let good = auth.mint_at(&grants(), NOW, HOUR).unwrap();
        let p = parts(&good);
        let forged = format!(
            "{}.{}.{}",
            b64url_encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            p[1],
            p[2]
        );
        assert!(matches!(
            auth.verify_at(&forged, NOW),
            Err(AuthError::WrongAlgorithm)
        ));
    }

    #[test]
    fn too_long() {
        let auth = TokenAuthority::new(SECRET);
        let token = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(auth.verify(&token), Err(AuthError::TooLong)));
        // A valid token padded past the limit is rejected for length, not parsed.
        let good = auth.mint_at(&grants(), NOW, HOUR).unwrap();
        let padded = format!("{good}{}", "A".repeat(MAX_TOKEN_LEN));
        assert!(matches!(
            auth.verify_at(&padded, NOW),
            Err(AuthError::TooLong)
        ));
    }

    #[test]
    fn garbage_rejected() {
        let auth = TokenAuthority::new(SECRET);
        for junk in [
            "",
            ".",
            "..",
            "...",
            "a.b.c",
            "a.b.c.d",
            "not a token",
            "eyJhbGciOiJIUzI1NiJ9",
            "eyJhbGciOiJIUzI1NiJ9..",
            "eyJhbGciOiJIUzI1NiJ9.e30.",
            "eyJhbGciOiJIUzI1NiJ9.!!!.abc",
            "\u{0}\u{1}\u{2}",
            "ünïcödé.ünïcödé.ünïcödé",
        ] {
            let err = auth.verify_at(junk, NOW).unwrap_err();
            assert!(
                matches!(err, AuthError::Malformed | AuthError::BadSignature),
                "{junk:?}: {err:?}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Cheap deterministic fuzz: random strings and mutations of a valid token.
        let auth = TokenAuthority::new(SECRET);
        let good = auth.mint_at(&grants(), NOW, HOUR).unwrap();
        let mut rng = rand::rng();
        for _ in 0..2000 {
            let len = rng.random_range(0..200);
            let s: String = (0..len)
                .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
                .collect();
            assert!(auth.verify_at(&s, NOW).is_err());
            let mut bytes = good.clone().into_bytes();
            let i = rng.random_range(0..bytes.len());
            bytes[i] = rng.random_range(0x20u8..0x7f);
            if let Ok(mutated) = String::from_utf8(bytes)
                && mutated != good
            {
                let _ = auth.verify_at(&mutated, NOW);
            }
        }
    }

    #[test]
    fn missing_claims_and_bad_names_rejected() {
        let auth = TokenAuthority::new(SECRET);
        let key = EncodingKey::from_secret(SECRET);
        let header = Header::new(Algorithm::HS256);
        let cases = [
            serde_json::json!({"room":"r","identity":"i","canPublish":true,"canSubscribe":true,"iat":NOW,"exp":NOW+60}),
            serde_json::json!({"sub":"i","identity":"i","canPublish":true,"canSubscribe":true,"iat":NOW,"exp":NOW+60}),
            serde_json::json!({"sub":"i","room":"r","identity":"i","canSubscribe":true,"iat":NOW,"exp":NOW+60}),
            serde_json::json!({"sub":"i","room":"r","identity":"i","canPublish":true,"canSubscribe":true,"iat":NOW}),
            serde_json::json!({"sub":"i","room":"","identity":"i","canPublish":true,"canSubscribe":true,"iat":NOW,"exp":NOW+60}),
            serde_json::json!({"sub":"","room":"r","identity":"","canPublish":true,"canSubscribe":true,"iat":NOW,"exp":NOW+60}),
            serde_json::json!({"sub":"x","room":"r","identity":"i","canPublish":true,"canSubscribe":true,"iat":NOW,"exp":NOW+60}),
            serde_json::json!({"sub":"i","room":"a\nb","identity":"i","canPublish":true,"canSubscribe":true,"iat":NOW,"exp":NOW+60}),
            serde_json::json!({"sub":"i","room":"r","identity":"i","canPublish":"yes","canSubscribe":true,"iat":NOW,"exp":NOW+60}),
        ];
        for claims in cases {
            let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
            assert!(
                matches!(auth.verify_at(&token, NOW), Err(AuthError::Malformed)),
                "{claims}"
            );
        }
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        let claims = serde_json::json!({"sub":"i","room":long,"identity":"i","canPublish":true,"canSubscribe":true,"iat":NOW,"exp":NOW+60});
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert!(matches!(
            auth.verify_at(&token, NOW),
            Err(AuthError::Malformed)
        ));
    }

    #[test]
    fn mint_validates_grants() {
        let auth = TokenAuthority::new(SECRET);
        let bad = |room: &str, identity: &str| Grants {
            room: room.into(),
            identity: identity.into(),
            ..grants()
        };
        for g in [
            bad("", "alice"),
            bad("lobby", ""),
            bad(&"r".repeat(MAX_NAME_CHARS + 1), "alice"),
            bad("lobby", "al\u{7}ice"),
            bad("lob\tby", "alice"),
        ] {
            assert!(
                matches!(auth.mint_at(&g, NOW, HOUR), Err(AuthError::Mint(_))),
                "{g:?}"
            );
        }
        // Exactly the limit, counted in characters (not bytes), is fine.
        let ok = bad(&"é".repeat(MAX_NAME_CHARS), "🦀");
        let token = auth.mint_at(&ok, NOW, HOUR).unwrap();
        assert_eq!(auth.verify_at(&token, NOW).unwrap(), ok);
        assert!(matches!(
            auth.mint_at(&grants(), NOW, Duration::ZERO),
            Err(AuthError::Mint(_))
        ));
        assert!(matches!(
            auth.mint_at(&grants(), u64::MAX, HOUR),
            Err(AuthError::Mint(_))
        ));
    }

    #[test]
    fn errors_do_not_leak() {
        let auth = TokenAuthority::new(SECRET);
        let token = auth.mint_at(&grants(), NOW, HOUR).unwrap();
        let secret = std::str::from_utf8(SECRET).unwrap();
        for err in [
            auth.verify_at(&token, NOW + 10 * 3600).unwrap_err(),
            TokenAuthority::new(b"wrong-secret-wrong-secret")
                .verify_at(&token, NOW)
                .unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(!msg.contains(&token) && !msg.contains(secret), "{msg}");
            assert_eq!(msg, msg.to_lowercase());
        }
        assert!(!format!("{auth:?}").contains(secret));
    }

    #[test]
    fn generated_secrets_are_random_hex() {
        let a = TokenAuthority::generate_secret();
        let b = TokenAuthority::generate_secret();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
