//! Results: one human row and one JSON line each, and the suite's summary table.

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub target: String,
    /// Short human description of the setup, e.g. `S=1000 B=100 flat 10s`.
    pub setup: String,
    pub fields: Map<String, Value>,
}

impl Row {
    pub fn new(scenario: &str, target: &str, setup: String) -> Row {
        Row {
            scenario: scenario.into(),
            target: target.into(),
            setup,
            fields: Map::new(),
        }
    }

    pub fn set(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        self.fields.insert(key.into(), v.into());
        self
    }

    pub fn num(&self, key: &str) -> Option<f64> {
        self.fields.get(key).and_then(|v| v.as_f64())
    }

    pub fn latency(&self, key: &str, q: &str) -> Option<f64> {
        self.fields.get(key)?.get(q)?.as_f64()
    }

    pub fn json(&self) -> String {
        let mut m = Map::new();
        m.insert("scenario".into(), self.scenario.clone().into());
        m.insert("target".into(), self.target.clone().into());
        m.insert("setup".into(), self.setup.clone().into());
        for (k, v) in &self.fields {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m).to_string()
    }

    /// Whether this result shows a loss or an error (the regression check fails on it).
    pub fn failed(&self) -> Option<String> {
        let missing = self.num("missing").unwrap_or(0.0);
        let errors = self.num("errors").unwrap_or(0.0);
        let dups = self.num("duplicates").unwrap_or(0.0);
        if missing > 0.0 || errors > 0.0 || dups > 0.0 {
            Some(format!(
                "{} {} {}: missing {missing}, errors {errors}, duplicates {dups}",
                self.scenario, self.target, self.setup
            ))
        } else {
            None
        }
    }

    /// The one-line human summary.
    pub fn human(&self) -> String {
        let mut parts = vec![format!(
            "{:<13} {:<11} {:<30}",
            self.scenario, self.target, self.setup
        )];
        if self.fields.get("skipped").and_then(|v| v.as_bool()) == Some(true) {
            parts.push(format!(
                "skipped: {}",
                self.fields
                    .get("reason")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
            ));
            return parts.join(" ");
        }
        if let Some(d) = self.num("deliveries_per_s") {
            parts.push(format!("{:>10} deliv/s", thousands(d)));
        }
        if let Some(c) = self.num("connections_per_s") {
            parts.push(format!("{:>8} conn/s", thousands(c)));
        }
        if self.fields.contains_key("latency_us") {
            parts.push(format!(
                "p50 {} p90 {} p99 {} max {}",
                ms(self.latency("latency_us", "p50")),
                ms(self.latency("latency_us", "p90")),
                ms(self.latency("latency_us", "p99")),
                ms(self.latency("latency_us", "max")),
            ));
        }
        if self.fields.contains_key("cross_node_latency_us") {
            parts.push(format!(
                "cross-node p99 {}",
                ms(self.latency("cross_node_latency_us", "p99"))
            ));
        }
        if let Some(k) = self.num("rss_per_conn_kib") {
            parts.push(format!("{k:.2} KiB/conn"));
        }
        if let (Some(c), Some(l)) = (
            self.num("rss_connected_kib"),
            self.num("rss_after_leave_kib"),
        ) {
            parts.push(format!(
                "RSS connected {} -> after leave {} KiB",
                thousands(c),
                thousands(l)
            ));
        }
        if self
            .fields
            .get("load_generator_saturated")
            .and_then(|v| v.as_bool())
            == Some(true)
        {
            parts.push("client core full".to_string());
        }
        if let Some(c) = self.num("server_cpu_pct") {
            parts.push(format!("srv cpu {c:.0}%"));
        }
        if let Some(c) = self.num("server_cpu_us_per_delivery") {
            parts.push(format!("{c:.2} cpu-us/deliv"));
        }
        if let Some(r) = self
            .fields
            .get("vs_ceiling")
            .and_then(|v| {
                v.get("deliveries_per_s")
                    .or(v.get("connections_per_s"))
                    .or(v.get("rss_per_conn"))
            })
            .and_then(|v| v.as_f64())
        {
            parts.push(format!("{r:.2}x ceiling"));
        }
        if let Some(r) = self.num("vs_single_node") {
            parts.push(format!("{r:.2}x single node"));
        }
        parts.push(format!(
            "missing {}",
            self.num("missing")
                .map_or("-".into(), |m| format!("{m:.0}"))
        ));
        if let Some(e) = self.num("errors").filter(|e| *e > 0.0) {
            parts.push(format!("errors {e:.0}"));
        }
        parts.join(" | ")
    }
}

pub fn emit(row: &Row) {
    println!("{}", row.human());
    println!("{}", row.json());
}

pub fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

fn ms(us: Option<f64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 10_000.0 => format!("{:.2}ms", us / 1000.0),
        Some(us) => format!("{:.0}ms", us / 1000.0),
    }
}

pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
