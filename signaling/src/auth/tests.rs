//! Unit tests of `auth.rs`.

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
        ..Grants::default()
    }
}

fn b64url_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
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
    assert_eq!(auth.verify_at(&token, NOW + 10).unwrap().grants, grants());
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
    assert_eq!(auth.verify_at(&later, NOW + 60).unwrap().grants, grants());
    assert_eq!(
        auth.verify_at(&later, NOW + 60 - NBF_LEEWAY_SECS)
            .unwrap()
            .grants,
        grants()
    );
    assert!(matches!(
        auth.verify_at(&later, NOW + 60 - NBF_LEEWAY_SECS - 1),
        Err(AuthError::NotValidYet)
    ));
    assert_eq!(
        auth.verify_at(&with_nbf(NOW.into()), NOW).unwrap().grants,
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
        name: None,
        metadata: None,
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
    assert_eq!(auth.verify_at(&token, NOW).unwrap().grants, ok);
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
    assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
    assert_ne!(a, b);
}

#[test]
fn name_and_metadata_round_trip_and_are_bounded() {
    let auth = TokenAuthority::new(SECRET);
    let named = Grants {
        name: Some("Alice A.".into()),
        metadata: Some(r#"{"role":"host"}"#.into()),
        ..grants()
    };
    let token = auth.mint_at(&named, NOW, Duration::from_secs(60)).unwrap();
    assert_eq!(auth.verify_at(&token, NOW).unwrap().grants, named);
    let too_much = Grants {
        metadata: Some("x".repeat(MAX_METADATA_BYTES + 1)),
        ..grants()
    };
    assert!(matches!(
        auth.mint_at(&too_much, NOW, Duration::from_secs(60)),
        Err(AuthError::Mint(_))
    ));
    let control = Grants {
        name: Some("a\u{7}b".into()),
        ..grants()
    };
    assert!(
        auth.mint_at(&control, NOW, Duration::from_secs(60))
            .is_err()
    );
}

#[test]
fn admin_tokens_are_distinct_from_room_tokens() {
    let auth = TokenAuthority::new(SECRET);
    let admin = auth
        .mint_admin_at("backend", NOW, Duration::from_secs(60))
        .unwrap();
    assert_eq!(auth.verify_admin_at(&admin, NOW).unwrap(), "backend");
    // An admin token joins no room, and a room token administers nothing.
    assert!(matches!(
        auth.verify_at(&admin, NOW),
        Err(AuthError::Malformed)
    ));
    let room = auth
        .mint_at(&grants(), NOW, Duration::from_secs(60))
        .unwrap();
    assert!(matches!(
        auth.verify_admin_at(&room, NOW),
        Err(AuthError::NotAdmin)
    ));
    assert!(matches!(
        auth.verify_admin_at(&admin, NOW + 3600),
        Err(AuthError::Expired)
    ));
    let other = TokenAuthority::new(b"another-secret-0123456789");
    assert!(matches!(
        other.verify_admin_at(&admin, NOW),
        Err(AuthError::BadSignature)
    ));
    // `"admin": false` is not an admin token.
    let not_admin = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "x", "admin": false, "iat": NOW, "exp": NOW + 60}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    assert!(matches!(
        auth.verify_admin_at(&not_admin, NOW),
        Err(AuthError::NotAdmin)
    ));
}

#[test]
fn a_revocation_refuses_tokens_issued_until_then_for_that_identity_only() {
    let auth = TokenAuthority::new(SECRET);
    let old = auth
        .mint_at(&grants(), NOW - 10, Duration::from_secs(3600))
        .unwrap();
    let same_second = auth
        .mint_at(&grants(), NOW, Duration::from_secs(3600))
        .unwrap();
    let newer = auth
        .mint_at(&grants(), NOW + 1, Duration::from_secs(3600))
        .unwrap();
    let bob = Grants {
        identity: "bob".into(),
        ..grants()
    };
    let other_identity = auth
        .mint_at(&bob, NOW - 10, Duration::from_secs(3600))
        .unwrap();
    let elsewhere = Grants {
        room: "other".into(),
        ..grants()
    };
    let other_room = auth
        .mint_at(&elsewhere, NOW - 10, Duration::from_secs(3600))
        .unwrap();
    auth.revoke("lobby", "alice", NOW);
    assert!(matches!(
        auth.verify_at(&old, NOW + 1),
        Err(AuthError::Revoked)
    ));
    assert!(matches!(
        auth.verify_at(&same_second, NOW + 1),
        Err(AuthError::Revoked)
    ));
    assert!(auth.verify_at(&newer, NOW + 1).is_ok());
    assert!(auth.verify_at(&other_identity, NOW + 1).is_ok());
    assert!(auth.verify_at(&other_room, NOW + 1).is_ok());
    // Clones share the revocations (the server hands its authority to every handler).
    assert!(matches!(
        auth.clone().verify_at(&old, NOW + 1),
        Err(AuthError::Revoked)
    ));
    // The revocation ends after REVOCATION_SECS.
    let long = auth
        .mint_at(
            &grants(),
            NOW - 10,
            Duration::from_secs(REVOCATION_SECS * 2),
        )
        .unwrap();
    assert!(auth.verify_at(&long, NOW + REVOCATION_SECS + 1).is_ok());
}
