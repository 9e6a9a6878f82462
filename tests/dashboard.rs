//! The Grafana dashboard (k8s/grafana-dashboard.json) queries only metrics the
//! server exports: a real node (with Redis, a trigger and lifecycle webhooks, so
//! every kind of metric is recorded) is scraped after traffic over real sockets, and
//! every metric name in every panel's PromQL (and in the template variables' queries)
//! must be in the scrape, with the labels its selectors filter on.

mod cluster_support;
mod common;
mod dashboard_support;
mod webhook_support;

use cluster_support::*;
use common::http_get;
use serde_json::{json, Value};

use dashboard_support::*;
use webhook_support::{Answer, Receiver};

// ---------------------------------------------------------------------------
// The dashboard

fn dashboard() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read k8s/grafana-dashboard.json");
    serde_json::from_str(&text).expect("k8s/grafana-dashboard.json is JSON")
}

/// Every panel, rows' nested panels included.
fn all_panels(panels: &Value, out: &mut Vec<Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p.clone());
        all_panels(&p["panels"], out);
    }
}

/// (where, PromQL) for every panel target and every query variable. Panics on a panel
/// that is not a row and has no PromQL target, or one not on the `${datasource}` variable.
fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    let mut panels = Vec::new();
    all_panels(&d["panels"], &mut panels);
    let mut out = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "panel {title:?}: a target without expr: {t}"
            );
            let ds = if t["datasource"].is_object() {
                &t["datasource"]
            } else {
                &panel["datasource"]
            };
            assert_eq!(
                ds["uid"], "${datasource}",
                "panel {title:?} should query the ${{datasource}} variable"
            );
            out.push((format!("panel {title:?}"), expr.to_string()));
        }
    }
    for var in d["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap_or_default();
        // label_values(selector, label): the selector, and the label it reads on it.
        if let Some(args) = q.trim().strip_prefix("label_values(") {
            let args = args.trim_end().trim_end_matches(')');
            if let Some((selector, label)) = args.rsplit_once(',') {
                let label = label.trim();
                let expr = if selector.contains('}') {
                    selector.replacen('}', &format!(",{label}=~\".+\"}}"), 1)
                } else {
                    format!("{selector}{{{label}=~\".+\"}}")
                };
                out.push((format!("variable {}", var["name"]), expr));
            }
        }
    }
    out
}

#[test]
fn the_dashboard_is_importable() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion"
    );
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    let ds = var("datasource").expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let app = var("app").expect("an app variable");
    assert_eq!(app["type"], "query");
    // Every target is checked below; and the `app` variable is used somewhere.
    let exprs = dashboard_exprs(&d);
    assert!(
        exprs.iter().any(|(_, e)| e.contains("$app")),
        "$app is unused"
    );
}

#[test]
fn the_extractor_finds_metrics_and_nothing_else() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"histogram_quantile(0.99, sum by (le, app) (rate(switchboard_trigger_seconds_bucket{app=~"$app", x="a } b"}[$__rate_interval])))"#,
            &["switchboard_trigger_seconds_bucket"],
        ),
        (
            "sum(process_resident_memory_bytes and on (instance) switchboard_connections) / clamp_min(sum(switchboard_connections), 1)",
            &["process_resident_memory_bytes", "switchboard_connections"],
        ),
        (
            "sum by (instance) (a_total) / on (instance) group_left (app) b offset 5m > bool 0",
            &["a_total", "b"],
        ),
        // Clauses after the parentheses, an empty list, keywords in any case.
        (
            "sum(rate(x_total[5m])) without (pod) + count by () (y) OR Inf * -NaN unless z",
            &["x_total", "y", "z"],
        ),
        // Strings with parentheses and `$1`, subqueries, `@`, numbers of every form.
        (
            r#"label_replace(max_over_time(m:rule:rate5m[1h:30s] @ end()), "dst", "$1", 'src', "(.*)") * 1e-3 + 0x1F + .5"#,
            &["m:rule:rate5m"],
        ),
        (
            "topk(5, count_values(\"v\", build_info)) # a comment naming not_a_metric\n + ${factor} * [[other]]",
            &["build_info"],
        ),
        // A bare selector naming its metric, and group_left without labels.
        (
            r#"{__name__="named_total", job="x"} * on (job) group_left info_metric"#,
            &["info_metric", "named_total"],
        ),
        // A metric whose name is an aggregation's, when nothing makes it one.
        ("count + sum_total", &["count", "sum_total"]),
    ];
    for (expr, want) in cases {
        let got: Vec<String> = metric_names(expr).into_iter().collect();
        assert_eq!(got, *want, "in {expr}");
    }
    // Labels of matchers go with their metric.
    let s = selectors(r#"rate(a_total{app=~"$app", reason!="x"}[5m]) / b{__name__="b"}"#);
    assert_eq!(s[0].name, "a_total");
    assert_eq!(
        s[0].labels.iter().map(String::as_str).collect::<Vec<_>>(),
        ["app", "reason"]
    );
    assert_eq!(s[1].name, "b");
    assert!(s[1].labels.is_empty(), "{s:?}");
}

#[test]
fn the_scrape_check_knows_histograms_from_summaries() {
    let scrape = parse_scrape(
        r#"# TYPE h_seconds histogram
h_seconds_bucket{le="0.5"} 1
h_seconds_bucket{le="+Inf"} 1
h_seconds_sum 0.1
h_seconds_count 1
# TYPE q_seconds summary
q_seconds{quantile="0.5"} 0.1
q_seconds_sum 0.1
q_seconds_count 1
# TYPE c_total counter
c_total{app="a,b}",reason="say \"hi\""} 3
"#,
    );
    let check = |expr: &str| -> Vec<String> {
        selectors(expr)
            .iter()
            .filter_map(|s| scrape.problem(s))
            .collect()
    };
    assert!(check("histogram_quantile(0.9, sum by (le) (rate(h_seconds_bucket[5m])))").is_empty());
    assert!(check("rate(h_seconds_sum[5m]) / rate(q_seconds_count[5m])").is_empty());
    assert!(check(r#"sum by (reason) (c_total{app=~"$app", reason!=""})"#).is_empty());
    assert_eq!(
        check("rate(q_seconds_bucket[5m])"),
        ["q_seconds_bucket: not exported (q_seconds is a summary)"]
    );
    assert_eq!(check("nope_total"), ["nope_total: not exported"]);
    assert_eq!(
        check(r#"c_total{status="200"}"#),
        ["c_total: has no label status"]
    );
}

// ---------------------------------------------------------------------------
// A live node

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let redis = Redis::start().await;
    let mut hooks = Receiver::start(Answer::Ok);
    let trigger = Receiver::start(Answer::Ok);
    let opts = Opts {
        extra_app: format!("webhook_url = \"{}\"", hooks.url()),
        extra_rules: format!(
            "[[apps.channels]]\npattern = \"hooked/*\"\ntrigger_url = \"{}\"\npublic_messaging = {{ active = true }}\nsettings = {{ anonymous_clients = true }}\n",
            trigger.url()
        ),
        ..Opts::default()
    };
    let node = Node::start("a", &redis, &opts).await;

    // Connects, joins (one through the trigger, which records its latency before the
    // ack), a message and its echo, an event, an error frame.
    let mut a = node.client().await;
    let mut b = node.client().await;
    a.join("chat/dash", false, true).await;
    a.expect("presence_full").await;
    b.join("hooked/room", false, false).await;
    a.message("chat/dash", json!("hello")).await;
    a.expect("message").await;
    assert_eq!(
        node.publish(&json!({"channel": "chat/dash", "data": 1}))
            .await
            .0,
        202
    );
    a.expect("event").await;
    // The channel answers a history request once the earlier publishes' Redis round
    // trips are done (and recorded), and after counting their deliveries.
    a.drain_until_barrier("chat/dash").await;
    a.send(json!({"action": "nope"})).await;
    a.expect("error").await;
    let (bad, _) = common::http_post(
        node.addr,
        &format!("/api/apps/{APP}/events"),
        Some("wrong-key"),
        &json!({"channel": "chat/dash", "data": 2}).to_string(),
    )
    .await;
    assert_eq!(bad, 401);

    // The first webhook batch has arrived (b's connect at least); the sender POSTs one
    // batch at a time and records its latency before the next. b's disconnect is counted
    // before its `disconnect` event is queued, so that event (in a later batch) arriving
    // means both the disconnect and the first POST's latency are in the metrics.
    hooks.events_until(common::WAIT, |e| !e.is_empty()).await;
    b.close().await;
    hooks
        .events_until(common::WAIT, |e| {
            e.iter().any(|e| e["name"] == "disconnect")
        })
        .await;

    let (status, text) = http_get(node.addr, "/metrics").await;
    assert_eq!(status, 200);
    let scrape = parse_scrape(&text);
    let mut problems = Vec::new();
    for (place, expr) in dashboard_exprs(&dashboard()) {
        let found = selectors(&expr);
        if found.is_empty() {
            problems.push(format!("{place}: no metric in {expr:?}"));
        }
        for s in found {
            if let Some(why) = scrape.problem(&s) {
                problems.push(format!("{place}: {why}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the dashboard queries what the server does not export:\n{}\n\nscrape:\n{text}",
        problems.join("\n")
    );
}
