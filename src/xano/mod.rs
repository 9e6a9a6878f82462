//! Moving from Xano: XanoScript `realtime_channel` files (`channels_dir`) and the Metadata
//! API's realtime export (`xano_export`) as an app's rules, and the conversions behind
//! `switchboard import` (→ TOML) and `switchboard export-xs` (→ XanoScript).

pub mod export;
pub mod xs;

use crate::model::{AppConfig, ChannelRule, Config};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why an app's `channels_dir` or `xano_export` could not become rules: the configuration
/// key at fault and the reason. `config` reports it as its own `` `key`: why `` error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{key}`: {why}")]
pub struct ResolveError {
    pub key: String,
    pub why: String,
}

fn invalid(key: String, why: impl Into<String>) -> ResolveError {
    ResolveError {
        key,
        why: why.into(),
    }
}

fn resolve_path(base: Option<&Path>, p: &Path) -> PathBuf {
    match base {
        Some(base) if p.is_relative() => base.join(p),
        _ => p.to_path_buf(),
    }
}

/// Pattern → where it was first defined; refuses a second definition naming both places.
/// Duplicates among the TOML rules themselves are left to `Config::validate`, which names them.
struct Origins(HashMap<String, String>);

impl Origins {
    fn of_app(i: usize, app: &AppConfig) -> Self {
        let mut map = HashMap::new();
        for (j, rule) in app.channels.iter().enumerate() {
            map.entry(rule.pattern.clone())
                .or_insert_with(|| format!("apps[{i}].channels[{j}]"));
        }
        Origins(map)
    }

    fn add(&mut self, pattern: &str, origin: String) -> Result<(), String> {
        match self.0.get(pattern) {
            Some(first) => Err(format!(
                "pattern {pattern:?} is defined twice: at {first} and at {origin}"
            )),
            None => {
                self.0.insert(pattern.to_string(), origin);
                Ok(())
            }
        }
    }
}

/// Read every app's `channels_dir` and `xano_export` (relative paths against `base`, the
/// config file's directory; the current directory when None), append their rules to the
/// app's `channels`, take the export's hash when the app sets none, and switch every rule
/// of an app off when its export says `enabled: false`. The paths are left resolved.
pub(crate) fn resolve(config: &mut Config, base: Option<&Path>) -> Result<(), ResolveError> {
    for (i, app) in config.apps.iter_mut().enumerate() {
        let mut origins = Origins::of_app(i, app);
        if let Some(dir) = app.channels_dir.take() {
            let key = format!("apps[{i}].channels_dir");
            let dir = resolve_path(base, &dir);
            for r in xs::parse_dir(&dir).map_err(|why| invalid(key.clone(), why))? {
                origins
                    .add(&r.rule.pattern, r.origin())
                    .map_err(|why| invalid(key.clone(), why))?;
                app.channels.push(r.rule);
            }
            app.channels_dir = Some(dir);
        }
        let mut app_enabled = true;
        if let Some(file) = app.xano_export.take() {
            let key = format!("apps[{i}].xano_export");
            let file = resolve_path(base, &file);
            let export = export::read_export(&file).map_err(|why| invalid(key.clone(), why))?;
            let name = file.display().to_string();
            for (k, rule) in export.rules.into_iter().enumerate() {
                origins
                    .add(&rule.pattern, export::origin(&name, k))
                    .map_err(|why| invalid(key.clone(), why))?;
                app.channels.push(rule);
            }
            if app.hash.is_empty() {
                app.hash = export.hash.unwrap_or_default();
            }
            app_enabled = export.enabled;
            app.xano_export = Some(file);
        }
        if app.hash.is_empty() {
            return Err(invalid(
                format!("apps[{i}].hash"),
                "must be set (in the app, or by the `hash` of its xano_export)",
            ));
        }
        if !app_enabled {
            for rule in &mut app.channels {
                rule.active = false;
            }
        }
    }
    Ok(())
}

fn toml_value(v: impl Into<toml::Value>) -> String {
    v.into().to_string()
}

/// Rules as TOML `[[apps.channels]]` tables: every XanoScript field written out, Switchboard
/// extensions only when they differ from their defaults.
pub fn to_toml(rules: &[ChannelRule]) -> String {
    let default = ChannelRule::new("x");
    let mut out = String::new();
    for (n, r) in rules.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let s = &r.settings;
        let _ = writeln!(out, "[[apps.channels]]");
        let _ = writeln!(out, "pattern = {}", toml_value(r.pattern.as_str()));
        if !r.description.is_empty() {
            let _ = writeln!(out, "description = {}", toml_value(r.description.as_str()));
        }
        let _ = writeln!(out, "active = {}", r.active);
        for (key, f) in [
            ("public_messaging", &r.public_messaging),
            ("private_messaging", &r.private_messaging),
        ] {
            let _ = writeln!(
                out,
                "{key} = {{ active = {}, auth = {} }}",
                f.active, f.auth
            );
        }
        let _ = writeln!(
            out,
            "settings = {{ anonymous_clients = {}, nested_channels = {}, message_history = {}, auth_channel = {}, presence = {} }}",
            s.anonymous_clients, s.nested_channels, s.message_history, s.auth_channel, s.presence
        );
        if let Some(url) = &r.trigger_url {
            let _ = writeln!(out, "trigger_url = {}", toml_value(url.as_str()));
        }
        if r.trigger_timeout_ms != default.trigger_timeout_ms {
            let _ = writeln!(out, "trigger_timeout_ms = {}", r.trigger_timeout_ms);
        }
        if r.history_events {
            let _ = writeln!(out, "history_events = true");
        }
        for (key, roles) in [
            ("join_roles", &r.join_roles),
            ("publish_roles", &r.publish_roles),
        ] {
            if !roles.is_empty() {
                let _ = writeln!(out, "{key} = {}", toml_value(roles.clone()));
            }
        }
        if r.owner_segment {
            let _ = writeln!(out, "owner_segment = true");
        }
        if let Some(table) = r.owner_table {
            let _ = writeln!(out, "owner_table = {table}");
        }
    }
    out
}

/// `switchboard import`: a `.xs` file, a directory of them, or an export `.json`, as TOML
/// `[[apps.channels]]` tables with a header comment saying where they came from.
pub fn import(path: &Path) -> Result<String, String> {
    let name = path.display().to_string();
    let mut origins = Origins(HashMap::new());
    let mut header = String::new();
    let rules: Vec<ChannelRule> = if path.is_dir() {
        let files = xs::xs_files(path)?;
        if files.is_empty() {
            return Err(format!("{name}: no *.xs files"));
        }
        let mut rules = Vec::new();
        for f in &files {
            for r in xs::parse_file(f)? {
                origins.add(&r.rule.pattern, r.origin())?;
                rules.push(r.rule);
            }
        }
        let _ = writeln!(
            header,
            "# {} rules from {} XanoScript file{} in {name}",
            rules.len(),
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        );
        rules
    } else if path.extension().is_some_and(|x| x == "json") {
        let export = export::read_export(path)?;
        let mut rules = Vec::new();
        for (k, rule) in export.rules.into_iter().enumerate() {
            origins.add(&rule.pattern, export::origin(&name, k))?;
            rules.push(rule);
        }
        let _ = writeln!(
            header,
            "# {} rules from the Xano export {name}",
            rules.len()
        );
        match &export.hash {
            Some(h) => {
                let _ = writeln!(
                    header,
                    "# The app's connection hash: hash = {}",
                    toml_value(h.as_str())
                );
            }
            None => {
                let _ = writeln!(header, "# The export names no hash: set the app's `hash`.");
            }
        }
        if !export.enabled {
            let _ = writeln!(
                header,
                "# Realtime is switched off in this export (enabled: false): every rule is inactive."
            );
            for rule in &mut rules {
                rule.active = false;
            }
        }
        rules
    } else {
        let rules = xs::parse_file(path)?;
        for r in &rules {
            origins.add(&r.rule.pattern, r.origin())?;
        }
        let _ = writeln!(header, "# {} rules from {name}", rules.len());
        rules.into_iter().map(|r| r.rule).collect()
    };
    let _ = writeln!(header, "# Paste under your [[apps]] table.\n");
    Ok(header + &to_toml(&rules))
}

/// `switchboard export-xs`: every app's rules as XanoScript, each app under a comment line.
/// Returns the text and the notes about what XanoScript could not express.
pub fn config_to_xs(config: &Config) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut notes = Vec::new();
    for (n, app) in config.apps.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "// app {} (hash {}): {} rules\n",
            xs::quote(&app.name),
            xs::quote(&app.hash),
            app.channels.len()
        );
        let (text, app_notes) = xs::write_xs(&app.channels);
        out.push_str(&text);
        notes.extend(
            app_notes
                .into_iter()
                .map(|note| format!("app {:?}: {note}", app.hash)),
        );
    }
    (out, notes)
}

#[cfg(test)]
mod tests;
