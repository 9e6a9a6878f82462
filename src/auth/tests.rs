//! Table tests of token verification and claim mapping (`src/auth.rs`).

use super::*;
use crate::model::{AppConfig, JwtConfig};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use rsa::pkcs1::{pem, DecodeRsaPublicKey, EncodeRsaPublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};

const RSA_PRIVATE: &str = include_str!("../../tests/keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/keys/rsa_public.pem");
const RSA_PUBLIC_PKCS1: &str = include_str!("../../tests/keys/rsa_public_pkcs1.pem");
// Real keys from openssl at the edges of what is accepted.
const RSA_1024_PUBLIC: &str = include_str!("../../tests/keys/rsa_1024_public.pem");
const RSA_1024_PUBLIC_PKCS1: &str = include_str!("../../tests/keys/rsa_1024_public_pkcs1.pem");
const RSA_2047_PUBLIC: &str = include_str!("../../tests/keys/rsa_2047_public.pem");
const RSA_4096_PUBLIC: &str = include_str!("../../tests/keys/rsa_4096_public.pem");
const RSA_4098_PUBLIC: &str = include_str!("../../tests/keys/rsa_4098_public.pem");
const RSA_E3_PUBLIC: &str = include_str!("../../tests/keys/rsa_e3_public.pem");
const EC_PRIVATE: &str = include_str!("../../tests/keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("../../tests/keys/ec_public.pem");
/// A valid key on the wrong curve for ES256.
const EC_P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEMPv799/h0TCxNLKJBePHYKwxZzEixuJ+
eOd2cALR1UudD04ONvjegtyX/X3rwHMmjvygT4dx4ThCWw1Wt1lXWMb3sfL980jF
bxwyd+dYVpBDfI1SM2Qfu9dQEuNo+sFh
-----END PUBLIC KEY-----";

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const OTHER_SECRET: &str = "fedcba9876543210fedcba9876543210";

fn app(algorithm: &str, secret: Option<&str>, pem: Option<&str>) -> AppConfig {
    AppConfig {
        name: "test".into(),
        hash: "test".into(),
        api_key: "test-api-key".into(),
        invalid_token: Default::default(),
        expired_token: Default::default(),
        roles_claim: "roles".into(),
        jwt: JwtConfig {
            algorithm: algorithm.into(),
            secret: secret.map(Into::into),
            public_key_pem: pem.map(Into::into),
            ..JwtConfig::default()
        },
        channels: vec![],
        allowed_origins: vec![],
        channels_dir: None,
        xano_export: None,
        webhook_url: None,
        webhook_timeout_ms: 5000,
        webhook_batch_max: 100,
        webhook_retry_s: 900,
    }
}

fn verifier(algorithm: &str) -> TokenVerifier {
    let cfg = match algorithm {
        "RS256" => app(algorithm, None, Some(RSA_PUBLIC)),
        "ES256" => app(algorithm, None, Some(EC_PUBLIC)),
        _ => app(algorithm, Some(SECRET), None),
    };
    TokenVerifier::from_config(&cfg).unwrap()
}

fn sign(alg: Algorithm, claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        _ => EncodingKey::from_secret(SECRET.as_bytes()),
    };
    encode(&Header::new(alg), claims, &key).unwrap()
}

fn sign_hs(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A token with any header and signature, for attacks the library won't build.
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        signature
    )
}

/// Replace the payload, keep header and signature.
fn tamper(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}

fn now() -> i64 {
    get_current_timestamp() as i64
}

#[test]
fn verify_table() {
    let user = json!({ "sub": 42, "exp": now() + 600 });
    let hs256 = verifier("HS256");
    let hs384 = verifier("HS384");
    let hs512 = verifier("HS512");
    let rs256 = verifier("RS256");
    let es256 = verifier("ES256");
    let rs_pkcs1 = TokenVerifier::from_config(&app("RS256", None, Some(RSA_PUBLIC_PKCS1))).unwrap();
    let mut uid_cfg = app("HS256", Some(SECRET), None);
    uid_cfg.jwt.row_id_claim = "uid".into();
    let uid = TokenVerifier::from_config(&uid_cfg).unwrap();

    let ok = |row_id: Value| -> Result<Value, AuthError> { Ok(row_id) };
    let cases: Vec<(&str, &TokenVerifier, String, Result<Value, AuthError>)> = vec![
        (
            "HS256 valid",
            &hs256,
            sign(Algorithm::HS256, &user),
            ok(json!(42)),
        ),
        (
            "HS384 valid",
            &hs384,
            sign(Algorithm::HS384, &user),
            ok(json!(42)),
        ),
        (
            "HS512 valid",
            &hs512,
            sign(Algorithm::HS512, &user),
            ok(json!(42)),
        ),
        (
            "RS256 valid",
            &rs256,
            sign(Algorithm::RS256, &user),
            ok(json!(42)),
        ),
        (
            "RS256 valid, PKCS#1 key",
            &rs_pkcs1,
            sign(Algorithm::RS256, &user),
            ok(json!(42)),
        ),
        (
            "ES256 valid",
            &es256,
            sign(Algorithm::ES256, &user),
            ok(json!(42)),
        ),
        (
            "no exp is accepted",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": 1 })),
            ok(json!(1)),
        ),
        (
            "string sub",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": "user-7" })),
            ok(json!("user-7")),
        ),
        (
            "expired",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": 1, "exp": now() - 60 })),
            Err(AuthError::Expired),
        ),
        (
            "expired within leeway",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": 1, "exp": now() - 2 })),
            ok(json!(1)),
        ),
        (
            "nbf in the future",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": 1, "nbf": now() + 60 })),
            Err(AuthError::NotYetValid),
        ),
        (
            "nbf within leeway",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": 1, "nbf": now() + 2 })),
            ok(json!(1)),
        ),
        (
            "exp not a number",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": 1, "exp": "tomorrow" })),
            Err(AuthError::InvalidClaim("exp".into())),
        ),
        (
            "aud is ignored",
            &hs256,
            sign(
                Algorithm::HS256,
                &json!({ "sub": 1, "aud": "authenticated" }),
            ),
            ok(json!(1)),
        ),
        (
            "HS wrong key",
            &hs256,
            sign_hs(Algorithm::HS256, OTHER_SECRET.as_bytes(), &user),
            Err(AuthError::InvalidSignature),
        ),
        (
            "RS tampered payload",
            &rs256,
            tamper(&sign(Algorithm::RS256, &user), &json!({ "sub": 1 })),
            Err(AuthError::InvalidSignature),
        ),
        (
            "ES tampered payload",
            &es256,
            tamper(&sign(Algorithm::ES256, &user), &json!({ "sub": 1 })),
            Err(AuthError::InvalidSignature),
        ),
        (
            "HS tampered payload",
            &hs256,
            tamper(&sign(Algorithm::HS256, &user), &json!({ "sub": 1 })),
            Err(AuthError::InvalidSignature),
        ),
        (
            "alg none, no signature",
            &hs256,
            raw_token(&json!({ "alg": "none", "typ": "JWT" }), &user, ""),
            Err(AuthError::AlgorithmNotAllowed),
        ),
        (
            "alg nOnE with a signature, RS app",
            &rs256,
            raw_token(&json!({ "alg": "nOnE" }), &user, "AAAA"),
            Err(AuthError::AlgorithmNotAllowed),
        ),
        (
            "key confusion: HS256 signed with the RSA public PEM",
            &rs256,
            sign_hs(Algorithm::HS256, RSA_PUBLIC.as_bytes(), &user),
            Err(AuthError::AlgorithmNotAllowed),
        ),
        (
            "key confusion: HS256 signed with the EC public PEM",
            &es256,
            sign_hs(Algorithm::HS256, EC_PUBLIC.as_bytes(), &user),
            Err(AuthError::AlgorithmNotAllowed),
        ),
        (
            "RS token against an HS app",
            &hs256,
            sign(Algorithm::RS256, &user),
            Err(AuthError::AlgorithmNotAllowed),
        ),
        (
            "ES token against an RS app",
            &rs256,
            sign(Algorithm::ES256, &user),
            Err(AuthError::AlgorithmNotAllowed),
        ),
        (
            "HS384 token against an HS256 app",
            &hs256,
            sign(Algorithm::HS384, &user),
            Err(AuthError::AlgorithmNotAllowed),
        ),
        (
            "header without alg",
            &hs256,
            raw_token(&json!({ "typ": "JWT" }), &user, "AAAA"),
            Err(AuthError::Malformed),
        ),
        (
            "garbage",
            &hs256,
            "not a token".into(),
            Err(AuthError::Malformed),
        ),
        (
            "garbage in three parts",
            &hs256,
            "a.b.c".into(),
            Err(AuthError::Malformed),
        ),
        (
            "four parts",
            &hs256,
            format!("{}.x", sign(Algorithm::HS256, &user)),
            Err(AuthError::Malformed),
        ),
        (
            "empty string",
            &hs256,
            String::new(),
            Err(AuthError::Malformed),
        ),
        (
            "9 KiB token",
            &hs256,
            sign(
                Algorithm::HS256,
                &json!({ "sub": 1, "pad": "x".repeat(9 * 1024) }),
            ),
            Err(AuthError::TooLarge),
        ),
        (
            "8 KiB + 1 garbage",
            &hs256,
            "a".repeat(MAX_TOKEN_BYTES + 1),
            Err(AuthError::TooLarge),
        ),
        (
            "8 KiB garbage is parsed",
            &hs256,
            "a".repeat(MAX_TOKEN_BYTES),
            Err(AuthError::Malformed),
        ),
        (
            "claims not an object",
            &hs256,
            sign(Algorithm::HS256, &json!([1, 2])),
            Err(AuthError::Malformed),
        ),
        (
            "missing sub",
            &hs256,
            sign(Algorithm::HS256, &json!({ "exp": now() + 600 })),
            Err(AuthError::MissingClaim("sub".into())),
        ),
        (
            "null sub",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": null })),
            Err(AuthError::MissingClaim("sub".into())),
        ),
        (
            "float sub",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": 4.5 })),
            Err(AuthError::InvalidClaim("sub".into())),
        ),
        (
            "bool sub",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": true })),
            Err(AuthError::InvalidClaim("sub".into())),
        ),
        (
            // The library's own claim check trips over a structured `sub`.
            "object sub",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": { "id": 1 } })),
            Err(AuthError::Malformed),
        ),
        (
            "object row_id in another claim",
            &uid,
            sign(Algorithm::HS256, &json!({ "uid": { "id": 1 } })),
            Err(AuthError::InvalidClaim("uid".into())),
        ),
        (
            "empty string sub",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": "" })),
            Err(AuthError::InvalidClaim("sub".into())),
        ),
        (
            "non-numeric dbo_id",
            &hs256,
            sign(Algorithm::HS256, &json!({ "sub": 1, "dbo_id": "users" })),
            Err(AuthError::InvalidClaim("dbo_id".into())),
        ),
    ];

    let mut failures = Vec::new();
    for (name, verifier, token, expected) in cases {
        let got = verifier
            .verify(&token, "sock".into())
            .map(|id| id.row_id.clone());
        if got != expected {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn claims_are_mapped() {
    let v = verifier("HS256");
    let token = sign(
        Algorithm::HS256,
        &json!({
            "sub": "99",
            "dbo_id": 7,
            "extras": { "name": "Ada", "plan": "pro" },
            "roles": ["admin", 3, "staff"],
        }),
    );
    let id = v.verify(&token, "s1".into()).unwrap();
    assert_eq!(
        id,
        Identity {
            socket_id: "s1".into(),
            authenticated: true,
            dbo_id: 7,
            row_id: json!("99"),
            extras: json!({ "name": "Ada", "plan": "pro" }),
            roles: vec!["admin".into(), "staff".into()],
        }
    );
    assert_eq!(id.row_id_key(), "99");
}

#[test]
fn claim_mapping_table() {
    // (claims, dbo_id, extras, roles)
    let cases: Vec<(Value, i64, Value, Vec<&str>)> = vec![
        (json!({ "sub": 1 }), 0, json!({}), vec![]),
        (json!({ "sub": 1, "dbo_id": "12" }), 12, json!({}), vec![]),
        (json!({ "sub": 1, "dbo_id": null }), 0, json!({}), vec![]),
        (json!({ "sub": 1, "extras": "nope" }), 0, json!({}), vec![]),
        (json!({ "sub": 1, "extras": [1] }), 0, json!({}), vec![]),
        (
            json!({ "sub": 1, "roles": "admin" }),
            0,
            json!({}),
            vec!["admin"],
        ),
        (
            json!({ "sub": 1, "roles": { "a": 1 } }),
            0,
            json!({}),
            vec![],
        ),
    ];
    let v = verifier("HS256");
    for (claims, dbo_id, extras, roles) in cases {
        let id = v
            .verify(&sign(Algorithm::HS256, &claims), "s".into())
            .unwrap();
        assert_eq!(id.dbo_id, dbo_id, "{claims}");
        assert_eq!(id.extras, extras, "{claims}");
        assert_eq!(id.roles, roles, "{claims}");
    }
}

#[test]
fn configured_claim_names_and_default_dbo_id() {
    let mut cfg = app("HS256", Some(SECRET), None);
    cfg.roles_claim = "https://example.com/roles".into();
    cfg.jwt.row_id_claim = "user_id".into();
    cfg.jwt.dbo_id_claim = "table".into();
    cfg.jwt.extras_claim = "profile".into();
    cfg.jwt.default_dbo_id = 5;
    let v = TokenVerifier::from_config(&cfg).unwrap();

    let token = sign(
        Algorithm::HS256,
        &json!({
            "sub": "ignored",
            "user_id": 8,
            "profile": { "a": 1 },
            "extras": { "b": 2 },
            "https://example.com/roles": ["editor"],
        }),
    );
    let id = v.verify(&token, "s".into()).unwrap();
    assert_eq!(id.row_id, json!(8));
    assert_eq!(id.dbo_id, 5, "falls back to default_dbo_id");
    assert_eq!(id.extras, json!({ "a": 1 }));
    assert_eq!(id.roles, vec!["editor".to_string()]);

    let token = sign(Algorithm::HS256, &json!({ "sub": 1, "table": 9 }));
    assert_eq!(
        v.verify(&token, "s".into()),
        Err(AuthError::MissingClaim("user_id".into()))
    );
    assert_eq!(
        AuthError::MissingClaim("user_id".into()).to_string(),
        "missing claim user_id"
    );
}

#[test]
fn anonymous_identity_and_client_json() {
    let anon = Identity::anonymous("abc".into());
    assert!(!anon.authenticated);
    assert_eq!(anon.row_id_key(), "0");
    assert!(anon.roles.is_empty());
    assert_eq!(
        anon.client_json(),
        json!({ "socketId": "abc", "extras": {}, "permissions": { "dbo_id": 0, "row_id": 0 } })
    );

    let v = verifier("HS256");
    let token = sign(
        Algorithm::HS256,
        &json!({ "sub": 42, "dbo_id": 3, "extras": { "n": "x" }, "roles": ["r"] }),
    );
    let json = v.verify(&token, "xyz".into()).unwrap().client_json();
    assert_eq!(
        json,
        json!({ "socketId": "xyz", "extras": { "n": "x" }, "permissions": { "dbo_id": 3, "row_id": 42 } })
    );
    // Exactly these keys: roles and the authenticated flag stay server-side.
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3);
    assert_eq!(json["permissions"].as_object().unwrap().len(), 2);
}

#[test]
fn row_id_key_unifies_numbers_and_strings() {
    let mut id = Identity::anonymous("s".into());
    for (row_id, key) in [
        (json!(42), "42"),
        (json!("42"), "42"),
        (json!(-1), "-1"),
        (json!(u64::MAX), "18446744073709551615"),
        (json!("a:b"), "a:b"),
    ] {
        id.row_id = row_id;
        assert_eq!(id.row_id_key(), key);
    }
}

#[test]
fn config_errors() {
    let short = "x".repeat(MIN_HS_SECRET_BYTES - 1);
    let cases: Vec<(AppConfig, &str)> = vec![
        (
            app("PS256", Some(SECRET), None),
            "unsupported algorithm PS256",
        ),
        (
            app("none", Some(SECRET), None),
            "unsupported algorithm none",
        ),
        (
            app("HS256", None, None),
            "HS256 needs jwt.secret (at least 32 bytes)",
        ),
        (
            app("HS512", Some(&short), None),
            "HS512 needs jwt.secret (at least 32 bytes)",
        ),
        (
            app("RS256", Some(SECRET), None),
            "RS256 needs jwt.public_key_pem",
        ),
        (
            app("ES256", None, Some("  ")),
            "ES256 needs jwt.public_key_pem",
        ),
        (
            app("RS256", None, Some("garbage")),
            "invalid public_key_pem: expected an RSA",
        ),
        (
            app("RS256", None, Some(EC_PUBLIC)),
            "invalid public_key_pem: expected an RSA",
        ),
        (
            app("ES256", None, Some(RSA_PUBLIC)),
            "invalid public_key_pem: expected an EC",
        ),
        (
            app("RS256", None, Some(RSA_PRIVATE)),
            "invalid public_key_pem: this is a private key",
        ),
        (
            app("ES256", None, Some(EC_PRIVATE)),
            "invalid public_key_pem: this is a private key",
        ),
        (
            app("ES256", None, Some(EC_P384_PUBLIC)),
            "invalid public_key_pem: unusable for ES256",
        ),
    ];
    for (cfg, expected) in cases {
        let err = TokenVerifier::from_config(&cfg).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{}: {err}", cfg.jwt.algorithm);
    }
    let exact = "x".repeat(MIN_HS_SECRET_BYTES);
    assert!(TokenVerifier::from_config(&app("hs256", Some(&exact), None)).is_ok());
}

#[test]
fn pem_with_escaped_newlines_from_env() {
    let escaped = EC_PUBLIC.trim().replace('\n', "\\n");
    let v = TokenVerifier::from_config(&app("ES256", None, Some(&escaped))).unwrap();
    let token = sign(Algorithm::ES256, &json!({ "sub": 1 }));
    assert!(v.verify(&token, "s".into()).is_ok());
}

/// The DER inside a PEM, to cut up or relabel.
fn der_of(text: &str) -> Vec<u8> {
    pem::decode_vec(text.as_bytes()).unwrap().1
}

/// Any DER under any label, for structures no tool writes.
fn pem(label: &str, der: &[u8]) -> String {
    pem::encode_string(label, LineEnding::LF, der).unwrap()
}

/// The 2048-bit test key with another modulus or exponent, as PKCS#1 PEM.
fn rsa_pem(n: impl FnOnce(&BigUint) -> BigUint, e: BigUint) -> String {
    let good = RsaPublicKey::from_pkcs1_pem(RSA_PUBLIC_PKCS1).unwrap();
    RsaPublicKey::new_unchecked(n(good.n()), e)
        .to_pkcs1_pem(LineEnding::LF)
        .unwrap()
}

fn exponent(e: u128) -> String {
    rsa_pem(Clone::clone, BigUint::from(e))
}

#[test]
fn rsa_key_table() {
    const SHORT: &str = "invalid public_key_pem: RSA key shorter than 2048 bits";
    const LONG: &str = "invalid public_key_pem: RSA key longer than 4096 bits";
    const EXPONENT: &str = "invalid public_key_pem: invalid RSA public exponent";
    const NOT_RSA: &str = "invalid public_key_pem: not an RSA public key";
    const NOT_PEM: &str =
        r#"invalid public_key_pem: expected an RSA "PUBLIC KEY" or "RSA PUBLIC KEY" PEM"#;

    let spki = der_of(RSA_PUBLIC);
    let pkcs1 = der_of(RSA_PUBLIC_PKCS1);
    let modulus = RsaPublicKey::from_pkcs1_der(&pkcs1)
        .unwrap()
        .n()
        .to_bytes_be();
    assert!(
        modulus[0] >= 0x80,
        "the negative-modulus row needs the top bit set"
    );
    // SEQUENCE { INTEGER n without its 0x00 sign byte, so negative; INTEGER 65537 }
    let mut negative = vec![0x30, 0x82, 0x01, 0x09, 0x02, 0x82, 0x01, 0x00];
    negative.extend(&modulus);
    negative.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
    // SEQUENCE { INTEGER n }: well-formed DER, but the exponent is gone.
    let mut modulus_only = vec![0x30, 0x82, 0x01, 0x05, 0x02, 0x82, 0x01, 0x01, 0x00];
    modulus_only.extend(&modulus);

    let body = STANDARD.encode(&spki).into_bytes();
    let lines: Vec<&str> = body
        .chunks(76)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    let wide_crlf = format!(
        "-----BEGIN PUBLIC KEY-----\r\n{}\r\n-----END PUBLIC KEY-----\r\n",
        lines.join("\r\n")
    );

    let cases: Vec<(&str, String, Result<(), &str>)> = vec![
        ("2048 bits, SPKI", RSA_PUBLIC.into(), Ok(())),
        ("2048 bits, PKCS#1", RSA_PUBLIC_PKCS1.into(), Ok(())),
        // Other tools wrap at 76 columns and Windows adds CRs; a strict RFC 7468
        // parser (as in `rsa`'s own `from_public_key_pem`) refuses this.
        ("76 columns, CRLF", wide_crlf, Ok(())),
        ("4096 bits, the largest", RSA_4096_PUBLIC.into(), Ok(())),
        ("e = 3, the smallest", RSA_E3_PUBLIC.into(), Ok(())),
        ("e = 2^33 - 1, the largest", exponent((1 << 33) - 1), Ok(())),
        ("1024 bits, SPKI", RSA_1024_PUBLIC.into(), Err(SHORT)),
        (
            "1024 bits, PKCS#1",
            RSA_1024_PUBLIC_PKCS1.into(),
            Err(SHORT),
        ),
        ("2047 bits", RSA_2047_PUBLIC.into(), Err(SHORT)),
        ("4098 bits", RSA_4098_PUBLIC.into(), Err(LONG)),
        ("e = 0", exponent(0), Err(EXPONENT)),
        ("e = 1", exponent(1), Err(EXPONENT)),
        ("e = 2", exponent(2), Err(EXPONENT)),
        ("e = 65536, even", exponent(65536), Err(EXPONENT)),
        ("e = 2^33 + 1", exponent((1 << 33) + 1), Err(EXPONENT)),
        (
            "e wider than 64 bits",
            exponent((1 << 64) + 1),
            Err(EXPONENT),
        ),
        // Verification would fail on every token, looking like bad signatures.
        (
            "even modulus",
            rsa_pem(|n| n + BigUint::from(1u8), BigUint::from(65537u32)),
            Err(NOT_RSA),
        ),
        ("EC key", EC_PUBLIC.into(), Err(NOT_PEM)),
        (
            "EC key labelled RSA",
            pem("RSA PUBLIC KEY", &der_of(EC_PUBLIC)),
            Err(NOT_RSA),
        ),
        (
            "SPKI labelled PKCS#1",
            pem("RSA PUBLIC KEY", &spki),
            Err(NOT_RSA),
        ),
        ("garbage", "garbage".into(), Err(NOT_PEM)),
        (
            "garbage PEM body",
            "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----".into(),
            Err(NOT_PEM),
        ),
        (
            "unknown label",
            pem("CERTIFICATE REQUEST", &spki),
            Err(NOT_PEM),
        ),
        (
            "truncated SPKI",
            pem("PUBLIC KEY", &spki[..spki.len() - 10]),
            Err(NOT_PEM),
        ),
        (
            "truncated PKCS#1",
            pem("RSA PUBLIC KEY", &pkcs1[..pkcs1.len() - 10]),
            Err(NOT_PEM),
        ),
        (
            "PKCS#1 without the exponent",
            pem("RSA PUBLIC KEY", &modulus_only),
            Err(NOT_RSA),
        ),
        (
            "PKCS#1 with trailing bytes",
            pem("RSA PUBLIC KEY", &[&pkcs1[..], &[0x05, 0x00]].concat()),
            Err(NOT_RSA),
        ),
        (
            "negative modulus",
            pem("RSA PUBLIC KEY", &negative),
            Err(NOT_RSA),
        ),
        ("empty body", pem("RSA PUBLIC KEY", &[]), Err(NOT_PEM)),
    ];

    let mut failures = Vec::new();
    for (name, key, expected) in cases {
        let got = TokenVerifier::from_config(&app("RS256", None, Some(&key)))
            .map(|_| ())
            .map_err(|e| e.to_string());
        if got != expected.map_err(String::from) {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn socket_ids_are_url_safe_and_distinct() {
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_socket_id()).collect();
    assert_eq!(ids.len(), 1000);
    for id in &ids {
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}

#[test]
fn socket_ids_decode_to_16_bytes() {
    let bytes = URL_SAFE_NO_PAD.decode(new_socket_id()).unwrap();
    assert_eq!(bytes.len(), 16);
}

/// The `alg` pre-check decodes the header as the library does: base64url, no
/// padding, no stray bits. Anything else is malformed, whatever its `alg`.
#[test]
fn header_encoding_table() {
    // The kid puts `-` (`+` in standard base64) into the encoding.
    let header = |alg: &str| json!({ "alg": alg, "kid": "~~~?>" }).to_string();
    let url_safe = URL_SAFE_NO_PAD.encode(header("HS256"));
    assert!(url_safe.contains('-'), "{url_safe}");
    // The last character carries two unused bits, zero from any encoder.
    let stray_bits = |alg: &str| {
        let text = URL_SAFE_NO_PAD.encode(header(alg));
        assert!(text.ends_with('0') && text.len() % 4 == 3, "{text}");
        format!("{}1", &text[..text.len() - 1])
    };
    let too_long = format!("{url_safe}AA");
    assert_eq!(
        too_long.len() % 4,
        1,
        "no byte count encodes to this length"
    );

    let cases: Vec<(&str, String, AuthError)> = vec![
        ("url-safe", url_safe, AuthError::InvalidSignature),
        (
            "standard alphabet",
            STANDARD_NO_PAD.encode(header("HS256")),
            AuthError::Malformed,
        ),
        (
            "padded",
            URL_SAFE.encode(header("HS256")),
            AuthError::Malformed,
        ),
        ("stray bits", stray_bits("HS256"), AuthError::Malformed),
        (
            "stray bits, other alg",
            stray_bits("HS384"),
            AuthError::Malformed,
        ),
        ("impossible length", too_long, AuthError::Malformed),
    ];
    let v = verifier("HS256");
    let payload = URL_SAFE_NO_PAD.encode(json!({ "sub": 1 }).to_string());
    for (name, header, expected) in cases {
        let token = format!("{header}.{payload}.AAAA");
        assert_eq!(v.verify(&token, "s".into()), Err(expected), "{name}");
    }
}

#[test]
fn verifier_is_send_sync_and_debug_hides_the_secret() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TokenVerifier>();
    let text = format!("{:?}", verifier("HS256"));
    assert!(!text.contains(SECRET), "{text}");
}
