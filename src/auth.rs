//! Socket identities and JWT verification (PROTOCOL.md sections 1-2).
//!
//! Each app verifies tokens with exactly one configured algorithm and key. The
//! `alg` header is checked against it before any cryptography runs, so `none`,
//! HS-for-RS key confusion and every other algorithm swap are refused.

use crate::config::AppConfig;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Map, Value};

/// Tokens arrive in a header (`Sec-WebSocket-Protocol` or `Authorization`);
/// anything longer is refused before we spend time decoding it.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A shorter HMAC secret is guessable offline from any token it signed.
pub const MIN_HS_SECRET_BYTES: usize = 32;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_S: u64 = 5;

/// Who a socket is: the `client` object of PROTOCOL.md plus the roles used by ACLs.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub socket_id: String,
    pub authenticated: bool,
    /// 0 when anonymous.
    pub dbo_id: i64,
    /// A JSON number or string from the token; `0` when anonymous.
    pub row_id: Value,
    /// A JSON object from the token's extras claim; `{}` when anonymous or absent.
    pub extras: Value,
    /// From the app's `roles_claim`; empty when anonymous.
    pub roles: Vec<String>,
}

impl Identity {
    pub fn anonymous(socket_id: String) -> Self {
        Self {
            socket_id,
            authenticated: false,
            dbo_id: 0,
            row_id: Value::from(0),
            extras: Value::Object(Map::new()),
            roles: Vec::new(),
        }
    }

    /// `row_id` as a comparable string: 42 and "42" both give "42"; anonymous gives "0".
    pub fn row_id_key(&self) -> String {
        match &self.row_id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// PROTOCOL.md's client object:
    /// `{"socketId":..,"extras":{..},"permissions":{"dbo_id":..,"row_id":..}}`.
    pub fn client_json(&self) -> Value {
        json!({
            "socketId": self.socket_id,
            "extras": self.extras,
            "permissions": { "dbo_id": self.dbo_id, "row_id": self.row_id },
        })
    }
}

/// A random URL-safe socket id: 16 bytes from the thread-local CSPRNG, base64url
/// without padding (22 characters). 128 bits make reuse and guessing impractical.
pub fn new_socket_id() -> String {
    let bytes: [u8; 16] = rand::random();
    b64url_encode(&bytes)
}

/// Why a token or a JWT configuration was refused. Token reasons are shown to
/// clients as `Auth token rejected: <reason>`, so they stay short and leak nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token too large")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("missing claim {0}")]
    MissingClaim(String),
    #[error("invalid claim {0}")]
    InvalidClaim(String),
    /// A verification failure with no more specific reason.
    #[error("token rejected")]
    Rejected,

    // Configuration problems, reported by `from_config`.
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("{0} needs jwt.secret (at least 32 bytes)")]
    WeakSecret(String),
    #[error("{0} needs jwt.public_key_pem")]
    MissingPublicKey(String),
    #[error("invalid public_key_pem: {0}")]
    InvalidPublicKey(String),
}

/// One app's token verifier: its single algorithm, key and claim names.
/// Immutable after construction, so it is shared by reference across threads.
#[derive(Clone)]
pub struct TokenVerifier {
    /// The exact `alg` header value accepted.
    alg_name: &'static str,
    key: DecodingKey,
    validation: Validation,
    row_id_claim: String,
    dbo_id_claim: String,
    default_dbo_id: i64,
    extras_claim: String,
    roles_claim: String,
}

// Hand-written so that logging a config never prints the secret.
impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithm", &self.alg_name)
            .field("row_id_claim", &self.row_id_claim)
            .field("dbo_id_claim", &self.dbo_id_claim)
            .field("default_dbo_id", &self.default_dbo_id)
            .field("extras_claim", &self.extras_claim)
            .field("roles_claim", &self.roles_claim)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// Built once per app at start; config errors come out here (config validation calls it).
    pub fn from_config(app: &AppConfig) -> Result<TokenVerifier, AuthError> {
        let jwt = &app.jwt;
        let (algorithm, alg_name) = match jwt.algorithm.to_ascii_uppercase().as_str() {
            "HS256" => (Algorithm::HS256, "HS256"),
            "HS384" => (Algorithm::HS384, "HS384"),
            "HS512" => (Algorithm::HS512, "HS512"),
            "RS256" => (Algorithm::RS256, "RS256"),
            "ES256" => (Algorithm::ES256, "ES256"),
            _ => return Err(AuthError::UnsupportedAlgorithm(jwt.algorithm.clone())),
        };

        let key = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                // The secret is used as raw bytes, as Xano and most backends do.
                match jwt.secret.as_deref() {
                    Some(s) if s.len() >= MIN_HS_SECRET_BYTES => {
                        DecodingKey::from_secret(s.as_bytes())
                    }
                    _ => return Err(AuthError::WeakSecret(alg_name.into())),
                }
            }
            _ => {
                let pem = match jwt.public_key_pem.as_deref().map(str::trim) {
                    Some(p) if !p.is_empty() => p,
                    _ => return Err(AuthError::MissingPublicKey(alg_name.into())),
                };
                public_key(algorithm, pem)?
            }
        };

        let mut validation = Validation::new(algorithm);
        // `exp` is checked when present but not required: Xano-style tokens may
        // carry none, and refusing them would lock such apps out entirely.
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_S;
        // No audience is configurable, and identity providers commonly set `aud`
        // (e.g. "authenticated"); the key already pins who issued the token.
        validation.validate_aud = false;

        let verifier = TokenVerifier {
            alg_name,
            key,
            validation,
            row_id_claim: jwt.row_id_claim.clone(),
            dbo_id_claim: jwt.dbo_id_claim.clone(),
            default_dbo_id: jwt.default_dbo_id,
            extras_claim: jwt.extras_claim.clone(),
            roles_claim: app.roles_claim.clone(),
        };
        verifier.probe_key()?;
        Ok(verifier)
    }

    /// Verify a token; on success an authenticated Identity with that socket_id.
    pub fn verify(&self, token: &str, socket_id: String) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        self.check_alg_header(token)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(map_jwt_error)?;
        self.identity(&data.claims, socket_id)
    }

    /// Refuse any `alg` but ours before the library sees the token: `none` is
    /// not even a variant there and would come out as "malformed", and an exact
    /// string match leaves no room for key-confusion tricks.
    fn check_alg_header(&self, token: &str) -> Result<(), AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let bytes = b64url_decode(header).ok_or(AuthError::Malformed)?;
        let header: Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
        match header.get("alg") {
            Some(Value::String(alg)) if alg == self.alg_name => Ok(()),
            Some(Value::String(_)) => Err(AuthError::AlgorithmNotAllowed),
            _ => Err(AuthError::Malformed),
        }
    }

    fn identity(
        &self,
        claims: &Map<String, Value>,
        socket_id: String,
    ) -> Result<Identity, AuthError> {
        let row_id = match claims.get(&self.row_id_claim) {
            None | Some(Value::Null) => {
                return Err(AuthError::MissingClaim(self.row_id_claim.clone()))
            }
            // Integers only: 42.0 would print as "42.0" and never match "42".
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n.clone()),
            Some(Value::String(s)) if !s.is_empty() => Value::String(s.clone()),
            Some(_) => return Err(AuthError::InvalidClaim(self.row_id_claim.clone())),
        };

        // A present but unreadable dbo_id is refused rather than defaulted, so a
        // token is never taken for a user of another auth table.
        let dbo_id = match claims.get(&self.dbo_id_claim) {
            None | Some(Value::Null) => self.default_dbo_id,
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| AuthError::InvalidClaim(self.dbo_id_claim.clone()))?,
            Some(Value::String(s)) => s
                .parse::<i64>()
                .map_err(|_| AuthError::InvalidClaim(self.dbo_id_claim.clone()))?,
            Some(_) => return Err(AuthError::InvalidClaim(self.dbo_id_claim.clone())),
        };

        let extras = match claims.get(&self.extras_claim) {
            Some(Value::Object(m)) => Value::Object(m.clone()),
            _ => Value::Object(Map::new()),
        };

        // Roles only grant access, so anything unreadable is dropped, not fatal.
        let roles = match claims.get(&self.roles_claim) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };

        Ok(Identity {
            socket_id,
            authenticated: true,
            dbo_id,
            row_id,
            extras,
            roles,
        })
    }

    /// Run a dummy token through the library once, so a key it cannot use
    /// (e.g. a P-384 key for ES256) fails at start, not on every connection.
    fn probe_key(&self) -> Result<(), AuthError> {
        let header = b64url_encode(format!(r#"{{"alg":"{}"}}"#, self.alg_name).as_bytes());
        let token = format!("{header}.e30.AAAA");
        match jsonwebtoken::decode::<Map<String, Value>>(&token, &self.key, &self.validation) {
            Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => Ok(()),
            Ok(_) => Err(AuthError::InvalidPublicKey(
                "key accepts forged tokens".into(),
            )),
            Err(e) => Err(AuthError::InvalidPublicKey(format!(
                "unusable for {}: {e}",
                self.alg_name
            ))),
        }
    }
}

/// Parse the configured public key for RS256 or ES256.
fn public_key(algorithm: Algorithm, pem: &str) -> Result<DecodingKey, AuthError> {
    let bad = |why: &str| AuthError::InvalidPublicKey(why.into());
    if pem.contains("PRIVATE KEY-----") {
        return Err(bad("this is a private key; configure the public key"));
    }
    // A PEM passed through an environment variable often has its newlines
    // written as `\n`; base64 never contains a backslash, so this is safe.
    let pem = pem.replace("\\n", "\n");
    if algorithm == Algorithm::RS256 {
        let key = DecodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|_| bad("expected an RSA \"PUBLIC KEY\" or \"RSA PUBLIC KEY\" PEM"))?;
        // The library parses RSA keys only when verifying, where a bad key would
        // look like a bad signature; check the PKCS#1 structure and size now.
        let der = key
            .try_get_as_bytes()
            .map_err(|_| bad("not an RSA public key"))?;
        check_rsa_public_key(der).map_err(bad)?;
        Ok(key)
    } else {
        DecodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|_| bad("expected an EC P-256 \"PUBLIC KEY\" PEM"))
    }
}

/// Check a PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`
/// against the limits of the `rsa` crate (at most 4096 bits), plus our own
/// floor of 2048 bits, below which RSA is no longer considered safe.
fn check_rsa_public_key(der: &[u8]) -> Result<(), &'static str> {
    const NOT_RSA: &str = "not an RSA public key";
    let (seq, rest) = der_take(der, 0x30).ok_or(NOT_RSA)?;
    let (n, seq) = der_take(seq, 0x02).ok_or(NOT_RSA)?;
    let (e, seq) = der_take(seq, 0x02).ok_or(NOT_RSA)?;
    if !rest.is_empty() || !seq.is_empty() {
        return Err(NOT_RSA);
    }
    let n = der_unsigned(n).ok_or(NOT_RSA)?;
    let e = der_unsigned(e).ok_or(NOT_RSA)?;
    let bits = match n.first() {
        Some(first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    };
    if bits < 2048 {
        return Err("RSA key shorter than 2048 bits");
    }
    if bits > 4096 {
        return Err("RSA key longer than 4096 bits");
    }
    let e = if e.len() <= 8 {
        e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    } else {
        u64::MAX
    };
    if e < 3 || e % 2 == 0 || e > (1 << 33) - 1 {
        return Err("invalid RSA public exponent");
    }
    Ok(())
}

/// Split one DER element with the given tag off the front: (contents, rest).
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, input) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (len_bytes, rest) = input.split_at(count);
        input = rest;
        len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if input.len() < len {
        return None;
    }
    Some(input.split_at(len))
}

/// A DER INTEGER's magnitude without leading zeros; None when negative or empty.
fn der_unsigned(int: &[u8]) -> Option<&[u8]> {
    if int.first()? & 0x80 != 0 {
        return None;
    }
    let start = int.iter().position(|&b| b != 0).unwrap_or(int.len());
    Some(&int[start..])
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.into_kind() {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed,
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c),
        ErrorKind::InvalidClaimFormat(c) => AuthError::InvalidClaim(c),
        _ => AuthError::Rejected,
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (RFC 4648 section 5), as JWTs use.
fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Decode unpadded base64url; None on any other character or an impossible length.
fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppConfig, JwtConfig};
    use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};

    const RSA_PRIVATE: &str = include_str!("../tests/keys/rsa_private.pem");
    const RSA_PUBLIC: &str = include_str!("../tests/keys/rsa_public.pem");
    const RSA_PUBLIC_PKCS1: &str = include_str!("../tests/keys/rsa_public_pkcs1.pem");
    const EC_PRIVATE: &str = include_str!("../tests/keys/ec_private.pem");
    const EC_PUBLIC: &str = include_str!("../tests/keys/ec_public.pem");
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
            b64url_encode(header.to_string().as_bytes()),
            b64url_encode(claims.to_string().as_bytes()),
            signature
        )
    }

    /// Replace the payload, keep header and signature.
    fn tamper(token: &str, claims: &Value) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64url_encode(claims.to_string().as_bytes()),
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
        let rs_pkcs1 =
            TokenVerifier::from_config(&app("RS256", None, Some(RSA_PUBLIC_PKCS1))).unwrap();
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

    #[test]
    fn rsa_key_structure_is_checked() {
        // SEQUENCE { INTEGER n (1024 bits), INTEGER 65537 }
        let mut small = vec![0x30, 0x81, 0x89, 0x02, 0x81, 0x81, 0x00];
        small.extend(std::iter::repeat_n(0xff, 128));
        small.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        assert_eq!(
            check_rsa_public_key(&small),
            Err("RSA key shorter than 2048 bits")
        );
        assert_eq!(
            check_rsa_public_key(&[0x30, 0x00]),
            Err("not an RSA public key")
        );
        assert_eq!(check_rsa_public_key(&[]), Err("not an RSA public key"));
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
    fn base64url_round_trip() {
        for len in 0..20 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            assert_eq!(b64url_decode(&b64url_encode(&bytes)).unwrap(), bytes);
        }
        assert_eq!(b64url_encode(b"{}"), "e30");
        assert_eq!(b64url_decode("a+b/"), None);
        assert_eq!(b64url_decode("abcde"), None);
    }

    #[test]
    fn verifier_is_send_sync_and_debug_hides_the_secret() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TokenVerifier>();
        let text = format!("{:?}", verifier("HS256"));
        assert!(!text.contains(SECRET), "{text}");
    }

    #[test]
    fn embedded_default_config_builds_a_verifier() {
        let config = crate::config::Config::from_toml(crate::config::EMBEDDED_DEFAULT).unwrap();
        let v = TokenVerifier::from_config(&config.apps[0]).unwrap();
        let token = encode(
            &Header::new(Algorithm::HS256),
            &json!({ "sub": 1 }),
            &EncodingKey::from_secret(crate::config::DEMO_SECRET.as_bytes()),
        )
        .unwrap();
        assert!(v.verify(&token, "s".into()).unwrap().authenticated);
    }
}
