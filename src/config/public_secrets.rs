//! Secrets everyone knows: the demo app's JWT secret and API key in
//! `config/default.toml`, and the placeholders of `k8s/secret.yaml`. With one of
//! them anyone can mint tokens or publish. `cargo run` on a developer's machine
//! keeps working (the default listens on loopback); anything that serves beyond
//! the machine refuses to start until the operator sets real ones, or says `--demo`.

use super::{Config, DEMO_SECRET};
use std::net::SocketAddr;
use thiserror::Error;

/// The API key of the demo app in `config/default.toml`.
pub const DEMO_API_KEY: &str = "demo-api-key-change-me";

const PUBLIC_JWT_SECRETS: &[&str] = &[
    DEMO_SECRET,
    "REPLACE-ME-with-a-random-secret-of-at-least-32-bytes",
];
const PUBLIC_API_KEYS: &[&str] = &[DEMO_API_KEY, "REPLACE-ME-api-key"];

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "`apps[{index}].{key}` of app {app:?} is a public demo value, and the server would listen \
     on {listen}: set {env} to a secret of your own (or listen on a loopback address, or pass \
     --demo to serve the demo anyway)"
)]
pub struct PublicSecret {
    pub index: usize,
    pub app: String,
    pub key: &'static str,
    pub env: String,
    pub listen: String,
}

/// Whether `listen` is reachable only from this machine.
fn loopback(listen: &str) -> bool {
    listen
        .parse::<SocketAddr>()
        .is_ok_and(|addr| addr.ip().is_loopback())
}

/// The first app holding a public secret, when the server would serve beyond this
/// machine and the operator did not ask for the demo.
pub fn refuse_public_secrets(config: &Config, demo: bool) -> Result<(), PublicSecret> {
    if demo || loopback(&config.server.listen) {
        return Ok(());
    }
    for (index, app) in config.apps.iter().enumerate() {
        let found = if app
            .jwt
            .secret
            .as_deref()
            .is_some_and(|s| PUBLIC_JWT_SECRETS.contains(&s))
        {
            Some((
                "jwt.secret",
                format!("SWITCHBOARD__APPS__{index}__JWT__SECRET"),
            ))
        } else if PUBLIC_API_KEYS.contains(&app.api_key.as_str()) {
            Some(("api_key", format!("SWITCHBOARD__APPS__{index}__API_KEY")))
        } else {
            None
        };
        if let Some((key, env)) = found {
            return Err(PublicSecret {
                index,
                app: app.hash.clone(),
                key,
                env,
                listen: config.server.listen.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EMBEDDED_DEFAULT;

    fn default_with(vars: &[(&str, &str)]) -> Config {
        let vars = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>();
        Config::from_toml_with_env(EMBEDDED_DEFAULT, vars).unwrap()
    }

    #[test]
    fn the_default_serves_on_loopback_only() {
        let config = default_with(&[]);
        assert!(loopback(&config.server.listen), "{}", config.server.listen);
        assert_eq!(refuse_public_secrets(&config, false), Ok(()));
    }

    #[test]
    fn a_public_address_with_demo_values_is_refused_naming_the_variable() {
        let public = [("SWITCHBOARD__SERVER__LISTEN", "0.0.0.0:8080")];
        let err = refuse_public_secrets(&default_with(&public), false).unwrap_err();
        assert_eq!(err.env, "SWITCHBOARD__APPS__0__JWT__SECRET");
        assert!(err.to_string().contains("--demo"), "{err}");
        assert_eq!(refuse_public_secrets(&default_with(&public), true), Ok(()));

        let secret = (
            "SWITCHBOARD__APPS__0__JWT__SECRET",
            "a-real-secret-of-more-than-32-bytes!!",
        );
        let err = refuse_public_secrets(&default_with(&[public[0], secret]), false).unwrap_err();
        assert_eq!(err.env, "SWITCHBOARD__APPS__0__API_KEY");
        let key = ("SWITCHBOARD__APPS__0__API_KEY", "a-real-api-key");
        assert_eq!(
            refuse_public_secrets(&default_with(&[public[0], secret, key]), false),
            Ok(())
        );
        // The k8s placeholders count as public too.
        let placeholder = ("SWITCHBOARD__APPS__0__API_KEY", "REPLACE-ME-api-key");
        let err = refuse_public_secrets(&default_with(&[public[0], secret, placeholder]), false)
            .unwrap_err();
        assert_eq!(err.key, "api_key");
    }
}
