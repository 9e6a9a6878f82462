//! Live reload (SIGHUP or `POST /admin/reload`): read the configuration and its
//! channel files again and apply the new rules without dropping a socket. A
//! configuration that does not validate is refused whole and the running rules stay.

use crate::config::Config;
use crate::state::{AppSettings, ServerState};
use std::sync::Arc;

/// What a reload did.
#[derive(Debug, serde::Serialize)]
pub struct Reloaded {
    pub apps: usize,
    pub rules: usize,
    /// Settings that only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

pub fn reload(state: &Arc<ServerState>) -> Result<Reloaded, String> {
    let result = try_reload(state);
    match &result {
        Ok(r) => {
            crate::metrics::reload("ok");
            tracing::info!(apps = r.apps, rules = r.rules, "configuration reloaded");
            if !r.needs_restart.is_empty() {
                tracing::warn!(settings = ?r.needs_restart, "changed settings need a restart");
            }
        }
        Err(why) => {
            crate::metrics::reload("refused");
            tracing::error!(reason = %why, "reload refused; the running configuration stays");
        }
    }
    result
}

fn try_reload(state: &Arc<ServerState>) -> Result<Reloaded, String> {
    let config = Config::load(state.config_path.as_deref()).map_err(|e| e.to_string())?;
    let settings = config
        .apps
        .iter()
        .map(AppSettings::build)
        .collect::<Result<Vec<_>, _>>()?;
    let mut needs_restart = Vec::new();
    if config.limits.max_connections != state.limits.max_connections
        || config.limits.send_queue_bytes != state.limits.send_queue_bytes
        || config.limits.max_frame_bytes != state.limits.max_frame_bytes
    {
        needs_restart.push("limits");
    }
    let rules = settings.iter().map(|s| s.config.channels.len()).sum();
    let apps = settings.len();
    state.install_apps(settings);
    Ok(Reloaded {
        apps,
        rules,
        needs_restart,
    })
}
