//! No import cycles between the modules of `src/`.
//!
//! Nodes are the top-level modules of `src/` (`auth`, `config`, `xano`, …), except that each
//! direct child of `actors`, `cluster` and `http` is a node of its own (`actors::channel`,
//! `cluster::redis`, `http::ws`, …; `cluster` is then its `mod.rs` alone). Every file, and
//! every inline module in it, belongs to the node of the module it is in:
//! `src/actors/channel/messages.rs` is `actors::channel`, `src/auth/tests.rs` is `auth`.
//! `lib.rs` and `main.rs` are not nodes.
//!
//! A file of node A depends on node B when its code (comments and string literals left
//! out; `#[cfg(test)]` code included) names a path into B: `crate::…` (also grouped, as in
//! `use crate::{a, b::c}`), `super::…`, `self::…`, a child module by its bare name
//! (`pub use memory::MemoryEngine;`), or a module brought in by a `use` (`use crate::actors;`
//! then `actors::registry::…`). `mod x;` declarations are not dependencies.
//!
//! `MODULE_GRAPH=1 cargo test --test module_cycles -- --nocapture` prints every edge with
//! the first places that make it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

/// Top-level modules whose direct children are nodes of their own.
const SPLIT: &[&str] = &["actors", "cluster", "http"];

/// At most this many cycles are listed (a large strongly connected component has many).
const MAX_CYCLES: usize = 500;

/// One `.rs` file: its path under `src/` (with `/`) and its text.
struct SourceFile {
    path: String,
    text: String,
}

/// Where an edge comes from: `src/file.rs:line` and the path written there.
#[derive(Clone, Debug)]
struct Site {
    file: String,
    line: usize,
    path: String,
}

#[derive(Default, Debug)]
struct Graph {
    nodes: BTreeSet<String>,
    edges: BTreeMap<(String, String), Vec<Site>>,
}

impl Graph {
    fn edge_list(&self) -> Vec<(String, String)> {
        self.edges.keys().cloned().collect()
    }
}

/// The module of a file: `actors/channel/messages.rs` -> `[actors, channel, messages]`,
/// `cluster/mod.rs` -> `[cluster]`, `lib.rs` -> `[]`; None for `main.rs` and binaries.
fn module_of_file(path: &str) -> Option<Vec<String>> {
    let stem = path.strip_suffix(".rs")?;
    let mut segs: Vec<String> = stem.split('/').map(str::to_string).collect();
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    match segs.first().map(String::as_str) {
        Some("main") if segs.len() == 1 => None,
        Some("bin") => None,
        Some("lib") if segs.len() == 1 => Some(vec![]),
        _ => Some(segs),
    }
}

/// The node a module belongs to (None for the crate root).
fn node_of(module: &[String]) -> Option<String> {
    let top = module.first()?;
    if module.len() >= 2 && SPLIT.contains(&top.as_str()) {
        Some(format!("{top}::{}", module[1]))
    } else {
        Some(top.clone())
    }
}

/// The text with comments and the contents of string and char literals replaced by
/// spaces (line breaks kept, so line numbers stay right).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        // Line comments, doc comments included.
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        // Block comments, which nest.
        if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            continue;
        }
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        // Raw strings: r"…", r#"…"#, br"…".
        if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && next == Some('r'))) {
            let mut j = if c[i] == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) == Some(&'"') {
                for _ in i..=j {
                    out.push(' ');
                }
                i = j + 1;
                while i < c.len() {
                    if c[i] == '"' && (1..=hashes).all(|h| c.get(i + h) == Some(&'#')) {
                        for _ in 0..=hashes {
                            out.push(' ');
                        }
                        i += hashes + 1;
                        break;
                    }
                    out.push(blank(c[i]));
                    i += 1;
                }
                continue;
            }
        }
        // Strings (and b"…").
        if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() {
                if c[i] == '\\' {
                    out.push(' ');
                    if let Some(&e) = c.get(i + 1) {
                        out.push(blank(e));
                    }
                    i += 2;
                    continue;
                }
                if c[i] == '"' {
                    out.push(' ');
                    i += 1;
                    break;
                }
                out.push(blank(c[i]));
                i += 1;
            }
            continue;
        }
        // Char literals ('x', '\n', '\'', '\u{1F600}'); a lifetime ('a) is left alone.
        if c[i] == '\'' {
            let end = if next == Some('\\') {
                (i + 3..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                for &ch in &c[i..=end] {
                    out.push(blank(ch));
                }
                i = end + 1;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// Identifiers (`r#x` as `x`), `::`, and every other character as its own token; numbers
/// become `0`. Each token with its line.
fn tokens(code: &str) -> Vec<(String, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == 'r'
            && c.get(i + 1) == Some(&'#')
            && c.get(i + 2).is_some_and(|x| x.is_alphabetic() || *x == '_')
        {
            i += 2;
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((c[start..i].iter().collect(), line));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(("0".to_string(), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(("::".to_string(), line));
            i += 2;
        } else {
            out.push((ch.to_string(), line));
            i += 1;
        }
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// One path as written: its segments (a glob's `*` and a group's braces left out), the name a
/// `use` binds it to, the module it is written in, and its line.
#[derive(Debug)]
struct Written {
    segs: Vec<String>,
    binds: Option<String>,
    module: Vec<String>,
    line: usize,
}

/// A path or use tree starting at `t[*k]` (an identifier), with `prefix` before it; every
/// leaf goes to `out`. `*k` ends after the tree.
fn parse_tree(
    t: &[(String, usize)],
    k: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix;
    loop {
        let Some((tok, _)) = t.get(*k) else {
            out.push((path, None));
            return;
        };
        if tok == "{" {
            *k += 1;
            while *k < t.len() && t[*k].0 != "}" {
                let before = *k;
                parse_tree(t, k, path.clone(), out);
                if t.get(*k).is_some_and(|(x, _)| x == ",") {
                    *k += 1;
                } else if *k == before {
                    *k += 1; // Not a use tree after all: step over it.
                }
            }
            *k += 1;
            return;
        }
        if tok == "*" {
            *k += 1;
            path.push("*".to_string());
            out.push((path, None));
            return;
        }
        if !is_ident(tok) {
            // `foo::<T>` and the like: the path ends at the `::`.
            out.push((path, None));
            return;
        }
        path.push(tok.clone());
        *k += 1;
        if t.get(*k).is_some_and(|(x, _)| x == "::") {
            *k += 1;
            continue;
        }
        let mut name = path.last().cloned();
        if t.get(*k).is_some_and(|(x, _)| x == "as") {
            name = t.get(*k + 1).map(|(x, _)| x.clone());
            *k += 2;
        }
        out.push((path, name));
        return;
    }
}

/// Every path of a file, and the inline modules it declares (`mod tests { … }`).
fn scan(file_module: &[String], text: &str) -> (Vec<Written>, Vec<Vec<String>>) {
    let t = tokens(&code_only(text));
    let mut written = Vec::new();
    let mut inline = Vec::new();
    // Inline modules open around here: (module, brace depth inside it).
    let mut stack: Vec<(Vec<String>, usize)> = vec![(file_module.to_vec(), 0)];
    let mut depth = 0;
    let mut k = 0;
    while k < t.len() {
        let tok = t[k].0.as_str();
        match tok {
            "{" => {
                depth += 1;
                k += 1;
                continue;
            }
            "}" => {
                if stack.len() > 1 && stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                }
                depth = depth.saturating_sub(1);
                k += 1;
                continue;
            }
            "mod" => {
                if let (Some((name, _)), Some((open, _))) = (t.get(k + 1), t.get(k + 2)) {
                    if is_ident(name) && open == "{" {
                        let mut m = stack.last().unwrap().0.clone();
                        m.push(name.clone());
                        inline.push(m.clone());
                        depth += 1;
                        stack.push((m, depth));
                        k += 3;
                        continue;
                    }
                }
                k += 1;
                continue;
            }
            _ => {}
        }
        let starts_path = is_ident(tok)
            && t.get(k + 1).is_some_and(|(x, _)| x == "::")
            && !(k > 0 && t[k - 1].0 == "::")
            // A method's turbofish (`x.f::<T>()`), not a range (`..crate::X::default()`).
            && !(k > 0 && t[k - 1].0 == "." && !(k > 1 && t[k - 2].0 == "."))
            // A visibility, `pub(in crate::a)`.
            && !(k > 1 && t[k - 1].0 == "in" && t[k - 2].0 == "(");
        if !starts_path {
            k += 1;
            continue;
        }
        let in_use = k > 0 && t[k - 1].0 == "use";
        let line = t[k].1;
        let mut leaves = Vec::new();
        parse_tree(&t, &mut k, vec![], &mut leaves);
        let module = stack.last().unwrap().0.clone();
        for (segs, name) in leaves {
            written.push(Written {
                segs,
                binds: if in_use { name } else { None },
                module: module.clone(),
                line,
            });
        }
    }
    (written, inline)
}

/// A path as the report shows it: `crate::a::{self, b}` gives `crate::a` and `crate::a::b`.
fn shown(segs: &[String]) -> String {
    let kept: Vec<&str> = segs
        .iter()
        .enumerate()
        .filter(|(i, s)| *i == 0 || *s != "self")
        .map(|(_, s)| s.as_str())
        .collect();
    kept.join("::")
}

/// The dependency graph of the files (paths under `src/`).
fn build_graph(files: &[SourceFile]) -> Graph {
    let mut known: HashSet<Vec<String>> = HashSet::new();
    let mut scanned = Vec::new();
    for f in files {
        let Some(module) = module_of_file(&f.path) else {
            continue;
        };
        for n in 1..=module.len() {
            known.insert(module[..n].to_vec());
        }
        let (written, inline) = scan(&module, &f.text);
        known.extend(inline);
        scanned.push((f, module, written));
    }
    // Absolute path of a path as written, without resolving `use` names.
    let absolute = |w: &Written, segs: &[String]| -> Option<Vec<String>> {
        let first = segs.first()?;
        let mut abs = match first.as_str() {
            "crate" => segs[1..].to_vec(),
            "self" => [&w.module[..], &segs[1..]].concat(),
            "super" => {
                let mut base = w.module.clone();
                let mut i = 0;
                while segs.get(i).is_some_and(|s| s == "super") {
                    base.pop()?;
                    i += 1;
                }
                [&base[..], &segs[i..]].concat()
            }
            _ => {
                let mut child = w.module.clone();
                child.push(first.clone());
                if !known.contains(&child) {
                    return None;
                }
                [&w.module[..], segs].concat()
            }
        };
        abs.retain(|s| s != "self" && s != "*");
        Some(abs)
    };
    // Names that `use` binds to modules (and the crate root's re-exports), per module.
    let mut bound: HashMap<(Vec<String>, String), Vec<String>> = HashMap::new();
    for (_, _, written) in &scanned {
        for w in written {
            if let (Some(name), Some(abs)) = (&w.binds, absolute(w, &w.segs)) {
                if known.contains(&abs) || w.module.is_empty() {
                    bound.insert((w.module.clone(), name.clone()), abs);
                }
            }
        }
    }
    let resolve = |w: &Written| -> Option<Vec<String>> {
        let mut abs = absolute(w, &w.segs).or_else(|| {
            let base = bound.get(&(w.module.clone(), w.segs[0].clone()))?;
            Some([&base[..], &w.segs[1..]].concat())
        })?;
        // `crate::Config`: a re-export of the crate root.
        if !abs.is_empty() && !known.contains(&abs[..1]) {
            let base = bound.get(&(vec![], abs[0].clone()))?;
            abs = [&base[..], &abs[1..]].concat();
        }
        (1..=abs.len())
            .rev()
            .map(|n| abs[..n].to_vec())
            .find(|p| known.contains(p))
    };
    let mut graph = Graph::default();
    for (f, module, written) in &scanned {
        let Some(from) = node_of(module) else {
            continue;
        };
        graph.nodes.insert(from.clone());
        for w in written {
            let Some(target) = resolve(w) else {
                continue;
            };
            let Some(to) = node_of(&target) else {
                continue;
            };
            if to != from {
                graph
                    .edges
                    .entry((from.clone(), to))
                    .or_default()
                    .push(Site {
                        file: format!("src/{}", f.path),
                        line: w.line,
                        path: shown(&w.segs),
                    });
            }
        }
    }
    for (_, to) in graph.edges.keys() {
        graph.nodes.insert(to.clone());
    }
    graph
}

/// Strongly connected components with more than one node (Tarjan), each sorted.
fn cyclic_components(nodes: &BTreeSet<String>, edges: &[(String, String)]) -> Vec<Vec<String>> {
    let names: Vec<&String> = nodes.iter().collect();
    let index: HashMap<&String, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut adj = vec![Vec::new(); names.len()];
    for (a, b) in edges {
        if let (Some(&a), Some(&b)) = (index.get(a), index.get(b)) {
            adj[a].push(b);
        }
    }
    struct Tarjan<'a> {
        adj: &'a [Vec<usize>],
        next: usize,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        found: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.adj[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                self.found.push(component);
            }
        }
    }
    let n = names.len();
    let mut t = Tarjan {
        adj: &adj,
        next: 0,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    let mut out: Vec<Vec<String>> = t
        .found
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut c: Vec<String> = c.into_iter().map(|i| names[i].clone()).collect();
            c.sort();
            c
        })
        .collect();
    out.sort();
    out
}

/// Every elementary cycle (up to [`MAX_CYCLES`]), as `a -> b -> a`, each starting at its
/// smallest node.
fn cycles(nodes: &BTreeSet<String>, edges: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for component in cyclic_components(nodes, edges) {
        let rank: HashMap<&String, usize> =
            component.iter().enumerate().map(|(i, n)| (n, i)).collect();
        let mut adj: Vec<Vec<usize>> = vec![Vec::new(); component.len()];
        for (a, b) in edges {
            if let (Some(&a), Some(&b)) = (rank.get(a), rank.get(b)) {
                adj[a].push(b);
            }
        }
        for list in &mut adj {
            list.sort();
        }
        fn walk(
            adj: &[Vec<usize>],
            start: usize,
            path: &mut Vec<usize>,
            found: &mut Vec<Vec<usize>>,
        ) {
            let v = *path.last().unwrap();
            for &w in &adj[v] {
                if found.len() >= MAX_CYCLES {
                    return;
                }
                if w == start {
                    found.push(path.clone());
                } else if w > start && !path.contains(&w) {
                    path.push(w);
                    walk(adj, start, path, found);
                    path.pop();
                }
            }
        }
        let mut found = Vec::new();
        for start in 0..component.len() {
            walk(&adj, start, &mut vec![start], &mut found);
        }
        for cycle in found {
            let mut names: Vec<&str> = cycle.iter().map(|&i| component[i].as_str()).collect();
            names.push(names[0]);
            out.push(names.join(" -> "));
        }
    }
    out.truncate(MAX_CYCLES);
    out
}

fn read_src(dir: &Path, under: &str, out: &mut Vec<SourceFile>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let rel = if under.is_empty() {
            name
        } else {
            format!("{under}/{name}")
        };
        if path.is_dir() {
            read_src(&path, &rel, out);
        } else if rel.ends_with(".rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            out.push(SourceFile { path: rel, text });
        }
    }
}

#[test]
fn no_import_cycles_between_modules_of_src() {
    let mut files = Vec::new();
    read_src(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut files,
    );
    let graph = build_graph(&files);
    // The scan saw the crate at all: a broken reader would find no cycle either.
    for node in [
        "config",
        "auth",
        "rules",
        "xano",
        "state",
        "actors::registry",
    ] {
        assert!(
            graph.nodes.contains(node),
            "no node {node} in {:?}",
            graph.nodes
        );
    }
    assert!(graph.edges.len() >= 10, "{:?}", graph.edge_list());

    if std::env::var("MODULE_GRAPH").is_ok_and(|v| v == "1") {
        println!("{} nodes, {} edges:", graph.nodes.len(), graph.edges.len());
        for ((a, b), sites) in &graph.edges {
            let at: Vec<String> = sites
                .iter()
                .take(3)
                .map(|s| format!("{}:{} {}", s.file, s.line, s.path))
                .collect();
            let more = if sites.len() > 3 {
                format!(" (+{})", sites.len() - 3)
            } else {
                String::new()
            };
            println!("  {a} -> {b}    {}{more}", at.join(", "));
        }
    }

    let edges = graph.edge_list();
    let found = cycles(&graph.nodes, &edges);
    if found.is_empty() {
        return;
    }
    let mut msg = format!("{} import cycle(s) between modules of src/:\n", found.len());
    for c in &found {
        let _ = writeln!(msg, "  {c}");
    }
    let _ = writeln!(
        msg,
        "The edges inside them, each with where it is first made:"
    );
    for component in cyclic_components(&graph.nodes, &edges) {
        for ((a, b), sites) in &graph.edges {
            if component.contains(a) && component.contains(b) {
                let s = &sites[0];
                let _ = writeln!(msg, "  {a} -> {b}    {}:{} {}", s.file, s.line, s.path);
            }
        }
    }
    panic!("{msg}");
}

// The detector itself, on small made-up crates.

fn graph_of(files: &[(&str, &str)]) -> Graph {
    let files: Vec<SourceFile> = files
        .iter()
        .map(|(path, text)| SourceFile {
            path: path.to_string(),
            text: text.to_string(),
        })
        .collect();
    build_graph(&files)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn detector_finds_a_two_module_cycle() {
    let g = graph_of(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        ("main.rs", "use switchboard::a::X;\n"),
        ("a.rs", "use crate::{b::{self, Thing}, c};\npub fn g() {}\n"),
        (
            "b.rs",
            "pub struct Thing;\nfn f() {\n    super::a::g();\n}\n",
        ),
        ("c.rs", ""),
    ]);
    assert_eq!(g.edge_list(), pairs(&[("a", "b"), ("a", "c"), ("b", "a")]));
    assert_eq!(cycles(&g.nodes, &g.edge_list()), ["a -> b -> a"]);
    let site = &g.edges[&("b".to_string(), "a".to_string())][0];
    assert_eq!((site.file.as_str(), site.line), ("src/b.rs", 3));
}

#[test]
fn detector_finds_no_cycle_in_an_acyclic_crate() {
    let g = graph_of(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod model;\npub use model::M;\n"),
        (
            "a.rs",
            "// use crate::b::Y;\n/// [`crate::b`]\n/* crate::b::Y /* nested */ crate::b */\n\
             fn q<'a>(s: &'a str) -> char { let _ = \"crate::b::Y\"; let _ = r#\"crate::b\"#; '\"' }\n\
             use crate::c::X;\nmod b {}\nfn h() { b::z(); let _ = crate::M; }\n",
        ),
        ("b.rs", "use crate::a::Z;\nmod tests {\n    use super::*;\n}\n"),
        ("c.rs", "mod inner {\n    use super::super::model::M;\n}\n"),
        ("model.rs", "pub struct M;\n"),
    ]);
    assert_eq!(
        g.edge_list(),
        pairs(&[("a", "c"), ("a", "model"), ("b", "a"), ("c", "model")])
    );
    assert!(cycles(&g.nodes, &g.edge_list()).is_empty());
}

#[test]
fn detector_splits_actors_into_their_children() {
    let g = graph_of(&[
        ("lib.rs", "pub mod actors;\npub mod state;\n"),
        (
            "actors/mod.rs",
            "pub mod channel;\npub mod registry;\npub use registry::Registry;\n",
        ),
        (
            "actors/channel.rs",
            "mod messages;\nuse super::registry::Registry;\n",
        ),
        (
            "actors/channel/messages.rs",
            "use super::super::registry::X;\nuse crate::state::S;\nuse super::Channel;\n",
        ),
        (
            "actors/registry.rs",
            "use crate::actors::channel::Channel;\n",
        ),
        (
            "state.rs",
            "use crate::actors;\nfn f() { actors::registry::Registry::new(); }\n",
        ),
    ]);
    assert_eq!(
        g.edge_list(),
        pairs(&[
            ("actors", "actors::registry"),
            ("actors::channel", "actors::registry"),
            ("actors::channel", "state"),
            ("actors::registry", "actors::channel"),
            ("state", "actors"),
            ("state", "actors::registry"),
        ])
    );
    assert_eq!(
        cycles(&g.nodes, &g.edge_list()),
        [
            "actors -> actors::registry -> actors::channel -> state -> actors",
            "actors::channel -> actors::registry -> actors::channel",
            "actors::channel -> state -> actors::registry -> actors::channel",
        ]
    );
}
