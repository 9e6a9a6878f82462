//! Support for tests/dashboard.rs: which metrics (and which labels) a PromQL
//! expression reads, and what a Prometheus scrape exports.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------------------
// PromQL: which metrics an expression reads

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(String),
    /// A number or a duration (`0.99`, `1e3`, `0x1f`, `5m`, `1h30m`).
    Num,
    /// A Grafana variable: `$app`, `${app:regex}`, `[[app]]`.
    Var,
    Punct(char),
}

pub fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

pub fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

pub fn lex(expr: &str) -> Vec<Tok> {
    let chars: Vec<char> = expr.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            // A comment, to the end of the line.
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' && i + 1 < chars.len() {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            toks.push(Tok::Str(s));
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
            }
            toks.push(Tok::Var);
        } else if c == '[' && chars.get(i + 1) == Some(&'[') {
            while i < chars.len() && !(chars[i] == ']' && chars.get(i + 1) == Some(&']')) {
                i += 1;
            }
            i += 2;
            toks.push(Tok::Var);
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let hex = c == '0' && matches!(chars.get(i + 1), Some('x' | 'X'));
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                let exponent_sign =
                    !hex && matches!(d, '+' | '-') && matches!(chars[i - 1], 'e' | 'E');
                if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            toks.push(Tok::Num);
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            toks.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            toks.push(Tok::Punct(c));
            i += 1;
        }
    }
    toks
}

/// Followed by a list of label names in parentheses.
pub const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Binary operators, modifiers and number literals spelled as words.
pub const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "atan2", "bool", "offset", "inf", "nan",
];

/// Aggregation operators: `sum by (le) (…)` puts the clause before the parentheses.
pub const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// A metric an expression reads, with the label names its matchers use.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub name: String,
    pub labels: BTreeSet<String>,
}

/// Index of the token that closes the bracket opened at `open`.
pub fn closing(toks: &[Tok], open: usize, (l, r): (char, char)) -> usize {
    let mut depth = 0;
    for (j, t) in toks.iter().enumerate().skip(open) {
        if *t == Tok::Punct(l) {
            depth += 1;
        } else if *t == Tok::Punct(r) {
            depth -= 1;
            if depth == 0 {
                return j;
            }
        }
    }
    toks.len()
}

/// Every vector selector of a PromQL expression: identifiers that are not function or
/// aggregation names (followed by `(` or `by`/`without`), keywords, label names (in
/// `{…}` or `by (…)` / `on (…)` lists), strings, numbers, durations, range and
/// subquery brackets or Grafana variables. `{__name__="x"}` names `x`.
pub fn selectors(expr: &str) -> Vec<Selector> {
    let toks = lex(expr);
    let mut out: Vec<Selector> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') => {
                let end = closing(&toks, i, ('{', '}'));
                let mut labels = BTreeSet::new();
                let mut named = None;
                for j in i + 1..end.min(toks.len()) {
                    if let Tok::Ident(label) = &toks[j] {
                        labels.insert(label.clone());
                        let eq = toks.get(j + 1) == Some(&Tok::Punct('='))
                            && toks.get(j + 2) != Some(&Tok::Punct('~'));
                        if label == "__name__" && eq {
                            if let Some(Tok::Str(s)) = toks.get(j + 2) {
                                named = Some(s.clone());
                            }
                        }
                    }
                }
                labels.remove("__name__");
                let follows_name = i > 0 && matches!(toks[i - 1], Tok::Ident(_));
                match (follows_name, out.last_mut(), named) {
                    (true, Some(last), _) => last.labels.extend(labels),
                    (_, _, Some(name)) => out.push(Selector { name, labels }),
                    _ => {}
                }
                i = end + 1;
            }
            Tok::Punct('[') => i = closing(&toks, i, ('[', ']')) + 1,
            Tok::Ident(word) => {
                let lower = word.to_ascii_lowercase();
                let next = toks.get(i + 1);
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    i = if next == Some(&Tok::Punct('(')) {
                        closing(&toks, i + 1, ('(', ')')) + 1
                    } else {
                        i + 1 // group_left without labels
                    };
                    continue;
                }
                let clause_follows = matches!(next, Some(Tok::Ident(w))
                    if w.eq_ignore_ascii_case("by") || w.eq_ignore_ascii_case("without"));
                let is_function = next == Some(&Tok::Punct('('));
                let is_aggregation = AGGREGATIONS.contains(&lower.as_str()) && clause_follows;
                if !is_function && !is_aggregation && !KEYWORDS.contains(&lower.as_str()) {
                    out.push(Selector {
                        name: word.clone(),
                        labels: BTreeSet::new(),
                    });
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

pub fn metric_names(expr: &str) -> BTreeSet<String> {
    selectors(expr).into_iter().map(|s| s.name).collect()
}

// ---------------------------------------------------------------------------
// The scrape: families with their types, series with their label names

#[derive(Default, Debug)]
pub struct Scrape {
    /// `# TYPE` lines: family -> counter, gauge, histogram, summary, untyped.
    pub types: BTreeMap<String, String>,
    /// Sample names (`x_bucket`, `x_sum`, …) -> every label name seen on them.
    pub series: BTreeMap<String, BTreeSet<String>>,
}

pub fn parse_scrape(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                scrape.types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = scrape
            .series
            .entry(line[..name_end].to_string())
            .or_default();
        if line[name_end..].starts_with('{') {
            // name="value" pairs; values may hold escaped quotes, commas and braces.
            let mut chars = line[name_end + 1..].chars();
            let mut label = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '}' => break,
                    ',' | ' ' => {}
                    '=' => {
                        labels.insert(std::mem::take(&mut label));
                        chars.next(); // the opening quote
                        while let Some(v) = chars.next() {
                            match v {
                                '\\' => {
                                    chars.next();
                                }
                                '"' => break,
                                _ => {}
                            }
                        }
                    }
                    c => label.push(c),
                }
            }
        }
    }
    scrape
}

impl Scrape {
    /// Why `selector` has no data in this scrape, or None when it has.
    pub fn problem(&self, selector: &Selector) -> Option<String> {
        let name = &selector.name;
        let Some(labels) = self.series.get(name) else {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix));
            return Some(match base.and_then(|b| Some((b, self.types.get(b)?))) {
                Some((base, kind)) => format!("{name}: not exported ({base} is a {kind})"),
                None => format!("{name}: not exported"),
            });
        };
        // `x_bucket` must be the buckets of a histogram (histogram_quantile needs them).
        if let Some(base) = name.strip_suffix("_bucket") {
            if self.types.get(base).map(String::as_str) != Some("histogram") {
                return Some(format!("{name}: {base} is not a histogram"));
            }
        }
        let missing: Vec<&str> = selector
            .labels
            .iter()
            .filter(|l| !labels.contains(*l))
            .map(String::as_str)
            .collect();
        (!missing.is_empty()).then(|| format!("{name}: has no label {}", missing.join(", ")))
    }
}
