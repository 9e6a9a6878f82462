//! `switchboard token`: mint a token that an app of a configuration accepts, and
//! explain what the server makes of a token (which app accepts it, the identity,
//! when it expires, or the exact reason a socket would be given). Explaining uses
//! the server's own verifier, so it cannot disagree with what a socket meets.

use super::{AuthError, Session, TokenVerifier};
use crate::model::{AppConfig, Config};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum TokenToolError {
    #[error("no app with hash {0:?} in this configuration")]
    UnknownApp(String),
    #[error("app {0:?} signs with {1}: give its private key with --private-key FILE (never taken from the config)")]
    NeedsPrivateKey(String, String),
    #[error("the private key cannot sign {0}: {1}")]
    BadPrivateKey(String, String),
    #[error("--extras must be a JSON object")]
    BadExtras,
    #[error("app {0:?}: {1}")]
    App(String, AuthError),
    #[error("the token could not be signed: {0}")]
    Sign(String),
}

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct Mint {
    pub app: String,
    /// The user id: a number when it parses as one, else a string.
    pub sub: String,
    pub dbo_id: Option<i64>,
    pub extras: Option<Value>,
    pub roles: Vec<String>,
    pub ttl: Duration,
    /// PEM of the private key, for RS256 / ES256 apps.
    pub private_key_pem: Option<String>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn find_app<'a>(config: &'a Config, hash: &str) -> Result<&'a AppConfig, TokenToolError> {
    config
        .apps
        .iter()
        .find(|a| a.hash == hash)
        .ok_or_else(|| TokenToolError::UnknownApp(hash.to_string()))
}

/// A token the app accepts, with the claims its `jwt` settings name.
pub fn mint(config: &Config, m: &Mint) -> Result<String, TokenToolError> {
    let app = find_app(config, &m.app)?;
    let jwt = &app.jwt;
    let algorithm = match jwt.algorithm.to_ascii_uppercase().as_str() {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => {
            return Err(TokenToolError::App(
                app.hash.clone(),
                AuthError::UnsupportedAlgorithm(other.to_string()),
            ))
        }
    };
    let key = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(jwt.secret.as_deref().unwrap_or("").as_bytes())
        }
        _ => {
            let alg = jwt.algorithm.to_ascii_uppercase();
            let pem = m
                .private_key_pem
                .as_deref()
                .ok_or_else(|| TokenToolError::NeedsPrivateKey(app.hash.clone(), alg.clone()))?;
            let key = if algorithm == Algorithm::RS256 {
                EncodingKey::from_rsa_pem(pem.as_bytes())
            } else {
                EncodingKey::from_ec_pem(pem.as_bytes())
            };
            key.map_err(|e| TokenToolError::BadPrivateKey(alg, e.to_string()))?
        }
    };
    let mut claims = Map::new();
    let sub = match m.sub.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(m.sub.clone()),
    };
    claims.insert(jwt.row_id_claim.clone(), sub);
    if let Some(dbo) = m.dbo_id {
        claims.insert(jwt.dbo_id_claim.clone(), Value::from(dbo));
    }
    match &m.extras {
        Some(Value::Object(extras)) => {
            claims.insert(jwt.extras_claim.clone(), Value::Object(extras.clone()));
        }
        Some(_) => return Err(TokenToolError::BadExtras),
        None => {}
    }
    if !m.roles.is_empty() {
        claims.insert(app.roles_claim.clone(), Value::from(m.roles.clone()));
    }
    let now = now_s();
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + m.ttl.as_secs()));
    if let Some(iss) = &jwt.issuer {
        claims.insert("iss".into(), Value::from(iss.clone()));
    }
    if let Some(aud) = &jwt.audience {
        claims.insert("aud".into(), Value::from(aud.clone()));
    }
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)
        .map_err(|e| TokenToolError::Sign(e.to_string()))
}

/// What one app makes of a token.
#[derive(Debug)]
pub struct Verdict {
    pub app: String,
    pub result: Result<Session, AuthError>,
}

/// Every app's verdict (or only `only_app`'s), in the configuration's order.
pub fn explain(
    config: &Config,
    token: &str,
    only_app: Option<&str>,
) -> Result<Vec<Verdict>, TokenToolError> {
    if let Some(hash) = only_app {
        find_app(config, hash)?;
    }
    let mut verdicts = Vec::new();
    for app in &config.apps {
        if only_app.is_some_and(|h| h != app.hash) {
            continue;
        }
        let verifier = TokenVerifier::from_config(app)
            .map_err(|e| TokenToolError::App(app.hash.clone(), e))?;
        verdicts.push(Verdict {
            app: app.hash.clone(),
            result: verifier.verify_session(token, "explain".into()),
        });
    }
    Ok(verdicts)
}

/// The token's claims as written, not verified (to show why a token is refused).
pub fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The verdicts as the CLI prints them.
pub fn render(token: &str, verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    if let Some(claims) = unverified_claims(token) {
        out.push_str(&format!("claims (as written, unverified): {claims}\n"));
    }
    for v in verdicts {
        match &v.result {
            Ok(session) => {
                let id = &session.identity;
                out.push_str(&format!("app {}: accepted\n", v.app));
                out.push_str(&format!(
                    "  dbo_id: {}\n  row_id: {}\n",
                    id.dbo_id, id.row_id
                ));
                out.push_str(&format!(
                    "  extras: {}\n  roles: {:?}\n",
                    id.extras, id.roles
                ));
                out.push_str(&format!("  expires: {}\n", expiry(session.expires_at)));
            }
            Err(e) => out.push_str(&format!("app {}: Auth token rejected: {e}\n", v.app)),
        }
    }
    out
}

fn expiry(exp: Option<u64>) -> String {
    let Some(exp) = exp else {
        return "never (no exp claim)".into();
    };
    let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(exp));
    let now = now_s();
    if exp >= now {
        let left = humantime::format_duration(Duration::from_secs(exp - now));
        format!("{at} (in {left})")
    } else {
        let ago = humantime::format_duration(Duration::from_secs(now - exp));
        format!("{at} ({ago} ago)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "tool-test-secret-0123456789abcdef0123";

    fn config(jwt_extra: &str) -> Config {
        Config::from_toml(&format!(
            r#"
[[apps]]
name = "A"
hash = "app-a"
api_key = "key-key-key"
[apps.jwt]
algorithm = "HS256"
secret = "{SECRET}"
{jwt_extra}

[[apps]]
name = "B"
hash = "app-b"
api_key = "key-key-key"
[apps.jwt]
algorithm = "HS256"
secret = "another-secret-0123456789abcdef012345"
"#
        ))
        .unwrap()
    }

    fn sign(alg: Algorithm, secret: &str, claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn mint_for(config: &Config, app: &str) -> String {
        mint(
            config,
            &Mint {
                app: app.into(),
                sub: "42".into(),
                dbo_id: Some(7),
                extras: Some(json!({"name": "Ann"})),
                roles: vec!["a".into(), "b".into()],
                ttl: Duration::from_secs(3600),
                private_key_pem: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn a_minted_token_is_accepted_by_its_app_alone_with_that_identity() {
        let c = config("issuer = \"me\"\naudience = \"us\"\nrequire_exp = true");
        let token = mint_for(&c, "app-a");
        let verdicts = explain(&c, &token, None).unwrap();
        let a = verdicts[0].result.as_ref().expect("app-a accepts");
        assert_eq!(a.identity.dbo_id, 7);
        assert_eq!(a.identity.row_id, json!(42));
        assert_eq!(a.identity.extras, json!({"name": "Ann"}));
        assert_eq!(a.identity.roles, vec!["a".to_string(), "b".to_string()]);
        let left = a.expires_at.unwrap() - now_s();
        assert!((3590..=3600).contains(&left), "{left}");
        assert_eq!(
            verdicts[1].result.as_ref().unwrap_err().to_string(),
            "invalid signature"
        );
        let text = render(&token, &verdicts);
        assert!(text.contains("app app-a: accepted"), "{text}");
        assert!(
            text.contains("app app-b: Auth token rejected: invalid signature"),
            "{text}"
        );
    }

    #[test]
    fn every_rejection_gives_the_text_a_socket_gets() {
        let c = config("issuer = \"me\"\naudience = \"us\"\nrequire_exp = true");
        let now = now_s() as i64;
        let ok = |extra: Value| {
            let mut claims = json!({"sub": 1, "iss": "me", "aud": "us", "exp": now + 600});
            for (k, v) in extra.as_object().unwrap() {
                claims[k] = v.clone();
            }
            claims
        };
        let cases: Vec<(String, &str)> = vec![
            (
                sign(Algorithm::HS256, SECRET, ok(json!({"exp": now - 60}))),
                "token expired",
            ),
            (
                sign(Algorithm::HS256, SECRET, ok(json!({"nbf": now + 600}))),
                "token not yet valid",
            ),
            (
                sign(
                    Algorithm::HS256,
                    "wrong-secret-0123456789abcdef0123456",
                    ok(json!({})),
                ),
                "invalid signature",
            ),
            (
                sign(Algorithm::HS384, SECRET, ok(json!({}))),
                "algorithm not allowed",
            ),
            ("not-a-token".into(), "malformed token"),
            ("a".repeat(9000), "token too large"),
            (
                sign(
                    Algorithm::HS256,
                    SECRET,
                    json!({"sub": 1, "iss": "me", "aud": "us"}),
                ),
                "missing claim exp",
            ),
            (
                sign(Algorithm::HS256, SECRET, ok(json!({"iss": "them"}))),
                "wrong issuer",
            ),
            (
                sign(Algorithm::HS256, SECRET, ok(json!({"aud": "them"}))),
                "wrong audience",
            ),
            (
                sign(Algorithm::HS256, SECRET, ok(json!({"sub": null}))),
                "missing claim sub",
            ),
            (
                sign(Algorithm::HS256, SECRET, ok(json!({"sub": 4.5}))),
                "invalid claim sub",
            ),
            (
                sign(Algorithm::HS256, SECRET, ok(json!({"dbo_id": "x"}))),
                "invalid claim dbo_id",
            ),
        ];
        for (token, reason) in cases {
            let verdicts = explain(&c, &token, Some("app-a")).unwrap();
            assert_eq!(verdicts.len(), 1);
            let text = render(&token, &verdicts);
            let expected = format!("app app-a: Auth token rejected: {reason}\n");
            assert!(text.ends_with(&expected), "{reason}: {text}");
        }
    }

    #[test]
    fn an_rs256_app_needs_the_private_key_from_the_command_line() {
        let public = include_str!("../../tests/keys/rsa_public.pem");
        let private = include_str!("../../tests/keys/rsa_private.pem");
        let c = Config::from_toml(&format!(
            "[[apps]]\nname = \"R\"\nhash = \"rs\"\napi_key = \"key-key-key\"\n[apps.jwt]\nalgorithm = \"RS256\"\npublic_key_pem = '''\n{public}'''\n"
        ))
        .unwrap();
        let mut m = Mint {
            app: "rs".into(),
            sub: "u-1".into(),
            dbo_id: None,
            extras: None,
            roles: vec![],
            ttl: Duration::from_secs(60),
            private_key_pem: None,
        };
        let refused = mint(&c, &m).unwrap_err().to_string();
        assert!(refused.contains("--private-key"), "{refused}");
        m.private_key_pem = Some(private.into());
        let token = mint(&c, &m).unwrap();
        let verdicts = explain(&c, &token, None).unwrap();
        let session = verdicts[0].result.as_ref().expect("accepted");
        assert_eq!(session.identity.row_id, json!("u-1"));
    }

    #[test]
    fn unknown_apps_and_bad_extras_are_refused() {
        let c = config("");
        assert!(matches!(
            explain(&c, "x", Some("nope")),
            Err(TokenToolError::UnknownApp(_))
        ));
        let m = Mint {
            app: "app-a".into(),
            sub: "1".into(),
            dbo_id: None,
            extras: Some(json!([1])),
            roles: vec![],
            ttl: Duration::from_secs(60),
            private_key_pem: None,
        };
        assert!(matches!(mint(&c, &m), Err(TokenToolError::BadExtras)));
    }
}
