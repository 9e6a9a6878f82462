//! Tests of configuration loading and environment overrides (`src/config.rs`).

use super::*;

#[test]
fn embedded_default_is_valid() {
    let c = Config::from_toml(EMBEDDED_DEFAULT).unwrap();
    assert_eq!(c.apps[0].hash, "demo");
    // Loopback: the demo app's secrets are public (config::public_secrets).
    assert_eq!(c.server.listen, "127.0.0.1:8080");
}

/// The demo app of the embedded default verifies tokens signed with [`DEMO_SECRET`].
#[test]
fn embedded_default_config_builds_a_verifier() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let config = Config::from_toml(EMBEDDED_DEFAULT).unwrap();
    let v = crate::auth::TokenVerifier::from_config(&config.apps[0]).unwrap();
    let token = encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({ "sub": 1 }),
        &EncodingKey::from_secret(DEMO_SECRET.as_bytes()),
    )
    .unwrap();
    assert!(v.verify(&token, "s".into()).unwrap().authenticated);
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml("[limits]\nmax_conections = 3\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("limits.max_conections"), "{text}");
}

#[test]
fn env_overrides_scalars_and_array_entries() {
    let vars = vec![
        (
            "SWITCHBOARD__LIMITS__MAX_CONNECTIONS".to_string(),
            "7".to_string(),
        ),
        (
            "SWITCHBOARD__SERVER__LISTEN".to_string(),
            "127.0.0.1:9".to_string(),
        ),
        (
            "SWITCHBOARD__APPS__0__API_KEY".to_string(),
            "from-env-key".to_string(),
        ),
        ("OTHER".to_string(), "x".to_string()),
    ];
    let c = Config::from_toml_with_env(EMBEDDED_DEFAULT, vars).unwrap();
    assert_eq!(c.limits.max_connections, 7);
    assert_eq!(c.server.listen, "127.0.0.1:9");
    assert_eq!(c.apps[0].api_key, "from-env-key");
}

#[test]
fn env_override_of_wrong_type_names_the_key() {
    let vars = vec![(
        "SWITCHBOARD__LIMITS__MAX_CONNECTIONS".to_string(),
        "many".to_string(),
    )];
    let err = Config::from_toml_with_env(EMBEDDED_DEFAULT, vars).unwrap_err();
    assert!(err.to_string().contains("limits.max_connections"), "{err}");
}

#[test]
fn history_over_1000_is_refused() {
    let text = r#"
[[apps]]
name = "a"
hash = "a"
api_key = "0123456789"
jwt = { secret = "0123456789abcdef0123456789abcdef" }
[[apps.channels]]
pattern = "x"
settings = { message_history = 1001 }
"#;
    let err = Config::from_toml(text).unwrap_err().to_string();
    assert!(
        err.contains("apps[0].channels[0].settings.message_history"),
        "{err}"
    );
}

/// Issue 12, item 7: app hashes are URL path segments and parts of Redis keys; `:`
/// made app `a` channel `b:ch:c` and app `a:ch:b` channel `c` share keys.
#[test]
fn app_hashes_are_letters_digits_underscore_and_dash() {
    let with_hash = |hash: &str| {
        format!(
            r#"
[[apps]]
name = "a"
hash = "{hash}"
api_key = "0123456789"
jwt = {{ secret = "0123456789abcdef0123456789abcdef" }}
"#
        )
    };
    for good in ["demo", "My_App-2", "x"] {
        Config::from_toml(&with_hash(good)).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in ["a:ch:b", "a/b", "a b", "é", "a.b"] {
        let err = Config::from_toml(&with_hash(bad)).unwrap_err().to_string();
        assert!(
            err.contains("apps[0].hash") && err.contains("A-Z, a-z, 0-9"),
            "{bad:?}: {err}"
        );
    }
}

/// docs/protocol.md section 11: one Redis or a list of shards, each a Redis URL,
/// none twice; refused with the key named.
#[test]
fn redis_topology_is_one_url_or_distinct_shards() {
    let with = |cluster: &str| {
        let text = EMBEDDED_DEFAULT.replace(
            "redis_url = \"\"          # empty: one node, everything in memory",
            cluster,
        );
        assert_ne!(text, EMBEDDED_DEFAULT, "config/default.toml changed");
        Config::from_toml(&text)
    };
    let shards = with(r#"redis_shards = ["redis://a:6379", "rediss://u:p@b:6380"]"#).unwrap();
    assert_eq!(
        shards.cluster.redis_urls(),
        ["redis://a:6379", "rediss://u:p@b:6380"]
    );
    for (cluster, names) in [
        (
            r#"redis_url = "redis://a"
redis_shards = ["redis://b"]"#,
            "set one of",
        ),
        (
            r#"redis_cluster = ["redis://a"]
redis_shards = ["redis://b"]"#,
            "set one of",
        ),
        (r#"redis_cluster = ["tcp://a"]"#, "cluster.redis_cluster"),
        (
            r#"redis_cluster = ["redis://a"]
redis_cluster_partitions = 0"#,
            "cluster.redis_cluster_partitions",
        ),
        (
            r#"redis_shards = ["redis://a", "redis://a"]"#,
            "listed twice",
        ),
        (r#"redis_shards = ["http://a"]"#, "cluster.redis_shards"),
        (r#"redis_url = "a:6379""#, "cluster.redis_url"),
    ] {
        let err = with(cluster).unwrap_err().to_string();
        assert!(err.contains(names), "{cluster}: {err}");
    }
    // The environment sets the list as TOML.
    let vars = vec![(
        "SWITCHBOARD__CLUSTER__REDIS_SHARDS".to_string(),
        r#"["redis://x:1", "redis://y:2"]"#.to_string(),
    )];
    let c = Config::from_toml_with_env(EMBEDDED_DEFAULT, vars).unwrap();
    assert_eq!(c.cluster.redis_urls(), ["redis://x:1", "redis://y:2"]);
    let seeds = with(r#"redis_cluster = ["redis://c1:7000", "redis://c2:7000"]"#).unwrap();
    assert_eq!(
        seeds.cluster.redis_urls(),
        ["redis://c1:7000", "redis://c2:7000"]
    );
    assert_eq!(seeds.cluster.redis_cluster_partitions, 12);
    // The prefix may not bring a hash tag of its own into the cluster's keys.
    let braced = EMBEDDED_DEFAULT
        .replace(
            "redis_url = \"\"          # empty: one node, everything in memory",
            r#"redis_cluster = ["redis://a"]"#,
        )
        .replace("prefix = \"switchboard:\"", "prefix = \"sb{x}:\"");
    let err = Config::from_toml(&braced).unwrap_err().to_string();
    assert!(err.contains("cluster.prefix"), "{err}");
}
