//! The Grafana dashboard (k8s/grafana-dashboard.json) queries only metrics the
//! server exports: a real node (with Redis, a trigger and lifecycle webhooks, so
//! every kind of metric is recorded) is scraped after some traffic, and every
//! metric name in every panel's PromQL must be in the scrape.

mod cluster_support;
mod common;
mod webhook_support;

use cluster_support::*;
use common::http_get;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use webhook_support::{Answer, Receiver};

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
];

/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression reads: identifiers that are not functions
/// (followed by `(`), keywords, label names (inside `{}` or `by (…)`), strings,
/// durations or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::new();
    // Drop strings, label matchers and range selectors.
    let mut depth_brace = 0;
    let mut in_string = false;
    let mut in_range = false;
    for c in expr.chars() {
        match c {
            '"' if depth_brace == 0 => in_string = !in_string,
            _ if in_string => {}
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => in_range = true,
            ']' => in_range = false,
            _ if depth_brace > 0 || in_range => {}
            _ => cleaned.push(c),
        }
    }
    // Drop `by (…)` / `without (…)` label lists.
    let mut out = BTreeSet::new();
    let tokens: Vec<(String, char)> = {
        let mut tokens = Vec::new();
        let mut word = String::new();
        let mut rest = cleaned.chars().peekable();
        while let Some(c) = rest.next() {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$' {
                word.push(c);
                continue;
            }
            if !word.is_empty() {
                tokens.push((std::mem::take(&mut word), c));
            }
            if c == ' ' {
                // Keep the next non-space character as what follows the word.
                while rest.peek() == Some(&' ') {
                    rest.next();
                }
                if let Some((_, next)) = tokens.last_mut() {
                    if *next == ' ' {
                        *next = rest.peek().copied().unwrap_or(' ');
                    }
                }
            }
        }
        if !word.is_empty() {
            tokens.push((word, ' '));
        }
        tokens
    };
    let mut skip_list = false;
    for (word, next) in tokens {
        if skip_list {
            if next == ')' {
                skip_list = false;
            }
            continue;
        }
        if LABEL_LISTS.contains(&word.as_str()) {
            skip_list = next == '(';
            continue;
        }
        let is_number = word.chars().next().is_some_and(|c| c.is_ascii_digit());
        if next == '(' || is_number || word.starts_with('$') || KEYWORDS.contains(&word.as_str()) {
            continue;
        }
        out.insert(word);
    }
    out
}

#[test]
fn the_extractor_finds_metrics_and_nothing_else() {
    let expr = r#"histogram_quantile(0.99, sum by (le, app) (rate(switchboard_trigger_seconds_bucket{app=~"$app", x="a b"}[$__rate_interval]))) / clamp_min(sum(switchboard_connections), 1) + on (app) group_left process_resident_memory_bytes offset 5m"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(
        names,
        vec![
            "process_resident_memory_bytes",
            "switchboard_connections",
            "switchboard_trigger_seconds_bucket"
        ]
    );
}

/// Every metric name in the scrape (histogram series included: `_bucket`, `_sum`, `_count`).
fn scraped(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

fn dashboard_exprs() -> Vec<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/grafana-dashboard.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for var in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            // label_values(metric, label): the metric.
            let inner = q.trim_start_matches("label_values(");
            let metric = inner.split([',', ')']).next().unwrap_or_default();
            out.push((format!("variable {}", var["name"]), metric.to_string()));
        }
    }
    out
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let redis = Redis::start().await;
    let mut receiver = Receiver::start(Answer::Ok);
    let opts = Opts {
        extra_app: format!("webhook_url = \"{}\"", receiver.url()),
        extra_rules: format!(
            "[[apps.channels]]\npattern = \"hooked/*\"\ntrigger_url = \"{}\"\npublic_messaging = {{ active = true }}\nsettings = {{ anonymous_clients = true }}\n",
            receiver.url()
        ),
        ..Opts::default()
    };
    let node = Node::start("a", &redis, &opts).await;
    let mut a = node.client().await;
    let mut b = node.client().await;
    a.join("chat/dash", false, true).await;
    a.expect("presence_full").await;
    b.join("hooked/room", false, false).await; // asks the trigger
    a.message("chat/dash", json!("hello")).await;
    a.expect("message").await;
    a.send(json!({"action": "nope"})).await; // an error frame
    a.expect("error").await;
    assert_eq!(
        node.publish(&json!({"channel": "chat/dash", "data": 1}))
            .await
            .0,
        202
    );
    let (bad, _) = common::http_post(node.addr, "/api/apps/demo/events", Some("wrong"), "{}").await;
    assert_eq!(bad, 401);
    b.close().await;
    node.sighup();
    // The webhook batches (connect, member_added…) were sent: its metrics exist.
    receiver.events_until(common::WAIT, |e| !e.is_empty()).await;
    let scrape = loop {
        let (_, text) = http_get(node.addr, "/metrics").await;
        // The reload and the disconnect are counted asynchronously: wait for both.
        if text.contains("switchboard_reloads_total")
            && text.contains("switchboard_disconnects_total")
        {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let have = scraped(&scrape);
    let mut missing = Vec::new();
    for (panel, expr) in dashboard_exprs() {
        for name in metric_names(&expr) {
            if !have.contains(&name) {
                missing.push(format!("{panel}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queried but not exported:\n{}\n\nscrape:\n{scrape}",
        missing.join("\n")
    );
}
