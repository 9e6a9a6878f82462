//! Socket identities and JWT verification (docs/protocol.md sections 1-2).
//!
//! Each app verifies tokens with exactly one configured algorithm and key. The
//! `alg` header is checked against it before any cryptography runs, so `none`,
//! HS-for-RS key confusion and every other algorithm swap are refused.

use crate::model::AppConfig;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs1::der::Decode;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{json, Map, Value};

/// Tokens arrive in a header (`Sec-WebSocket-Protocol` or `Authorization`);
/// anything longer is refused before we spend time decoding it.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A shorter HMAC secret is guessable offline from any token it signed.
pub const MIN_HS_SECRET_BYTES: usize = 32;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_S: u64 = 5;

/// Who a socket is: the `client` object of docs/protocol.md plus the roles used by ACLs.
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

    /// docs/protocol.md's client object:
    /// `{"socketId":..,"extras":{..},"permissions":{"dbo_id":..,"row_id":..}}`.
    pub fn client_json(&self) -> Value {
        json!({
            "socketId": self.socket_id,
            "extras": self.extras,
            "permissions": { "dbo_id": self.dbo_id, "row_id": self.row_id },
        })
    }
}

/// An authenticated identity and when its token expires (`exp`, Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub identity: Identity,
    pub expires_at: Option<u64>,
}

impl Session {
    /// How long until the token is no longer accepted (its `exp` plus the leeway a
    /// connect gets); None without `exp`.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        let deadline = self.expires_at?.saturating_add(LEEWAY_S);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Some(std::time::Duration::from_secs_f64(
            (deadline as f64 - now).max(0.0),
        ))
    }
}

/// A random URL-safe socket id: 16 bytes from the thread-local CSPRNG, base64url
/// without padding (22 characters). 128 bits make reuse and guessing impractical.
pub fn new_socket_id() -> String {
    let bytes: [u8; 16] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
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
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
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
        // `exp` is checked when present but only required with `jwt.require_exp`:
        // Xano-style tokens may carry none, and refusing them by default would lock
        // such apps out entirely.
        validation.required_spec_claims.clear();
        if jwt.require_exp {
            validation.set_required_spec_claims(&["exp"]);
        }
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_S;
        if let Some(issuer) = &jwt.issuer {
            validation.set_issuer(&[issuer]);
        }
        // Without `jwt.audience`, `aud` is not checked: identity providers commonly
        // set one (e.g. "authenticated") and the key already pins the issuer.
        match &jwt.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }

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
        self.verify_session(token, socket_id)
            .map(|session| session.identity)
    }

    /// Verify a token, and say until when the session it opens lasts.
    pub fn verify_session(&self, token: &str, socket_id: String) -> Result<Session, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        self.check_alg_header(token)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(map_jwt_error)?;
        let expires_at = data.claims.get("exp").and_then(Value::as_u64);
        Ok(Session {
            identity: self.identity(&data.claims, socket_id)?,
            expires_at,
        })
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
        // The library's own decoding, so what it would refuse is refused here too.
        let bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthError::Malformed)?;
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
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{}"}}"#, self.alg_name));
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

/// Check a PKCS#1 `RSAPublicKey` as the `rsa` crate, which verification uses,
/// will take it: its limits (at most 4096 bits, an odd exponent from 3 to
/// 2^33 - 1) plus our floor of 2048 bits, below which RSA is no longer safe.
fn check_rsa_public_key(der: &[u8]) -> Result<(), &'static str> {
    const NOT_RSA: &str = "not an RSA public key";
    // Structure, then values: `from_pkcs1_der` would fold every problem into
    // one error, and the config error should say which it is.
    let parts = rsa::pkcs1::RsaPublicKey::from_der(der).map_err(|_| NOT_RSA)?;
    let n = BigUint::from_bytes_be(parts.modulus.as_bytes());
    if n.bits() < 2048 {
        return Err("RSA key shorter than 2048 bits");
    }
    let e = BigUint::from_bytes_be(parts.public_exponent.as_bytes());
    match RsaPublicKey::new(n, e) {
        Ok(_) => Ok(()),
        Err(rsa::Error::ModulusTooLarge) => Err("RSA key longer than 4096 bits"),
        Err(
            rsa::Error::InvalidExponent
            | rsa::Error::PublicExponentTooSmall
            | rsa::Error::PublicExponentTooLarge,
        ) => Err("invalid RSA public exponent"),
        // An even modulus (or an exponent not below it): not an RSA key at all.
        Err(_) => Err(NOT_RSA),
    }
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
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        _ => AuthError::Rejected,
    }
}

pub mod token_tool;

#[cfg(test)]
mod tests;
