use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use switchboard::config::{refuse_public_secrets, Config, DEMO_SECRET};
use switchboard::Server;

// jemalloc rather than glibc's malloc. Measured with `switchboard-bench many-channels`
// (5,000 channels x 4 subscribers, four more join/leave rounds): with glibc, RSS after
// everyone left was +17 % and grew 4.4 MB with every further round although the live
// heap did not (fragmentation); with jemalloc it is +7 % and flat, and it falls back
// to ~20 MB when the sockets close. Fan-out CPU per delivery is the same within noise.
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: a background thread hands freed pages
/// back within about a second, so memory is returned even while the server is idle.
#[cfg(all(unix, not(target_env = "musl")))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Realtime broker speaking the Xano Realtime V1 protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "pretty")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default). Without --config: config/default.toml if present, else the embedded default.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serve even with the demo app's public secrets on a public address.
        #[arg(long)]
        demo: bool,
    },
    /// Validate a configuration file (with environment overrides) and exit.
    CheckConfig { file: PathBuf },
    /// Print Xano channel rules as TOML `[[apps.channels]]` tables: from a XanoScript file,
    /// a directory of `*.xs` files, or a Metadata API realtime export (`.json`).
    Import { source: PathBuf },
    /// Print each app's channel rules of a configuration file as XanoScript `realtime_channel` blocks.
    ExportXs { config: PathBuf },
    /// Mint a token an app accepts, or explain one (--explain TOKEN): which app accepts
    /// it and as whom, or the exact reason a socket would be given.
    Token(TokenArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The configuration (default: config/default.toml if present, else the embedded default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The app's hash (required to mint; with --explain, only that app).
    #[arg(long)]
    app: Option<String>,
    /// The user id (`row_id`): a number, or a string.
    #[arg(long, required_unless_present = "explain")]
    sub: Option<String>,
    /// The auth table id (`dbo_id`); the app's default when left out.
    #[arg(long)]
    dbo_id: Option<i64>,
    /// Extras, a JSON object: '{"name":"Ann"}'.
    #[arg(long)]
    extras: Option<String>,
    /// Roles, comma-separated.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// How long the token lasts: 30s, 15m, 1h, 2d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    /// PEM private key for RS256 / ES256 apps (never read from the configuration).
    #[arg(long)]
    private_key: Option<PathBuf>,
    /// Explain this token instead of minting one.
    #[arg(long, conflicts_with_all = ["sub", "extras", "roles", "private_key", "dbo_id"])]
    explain: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file or collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `switchboard token`: mint (stdout: the token) or explain (exit 0 when an app accepts it).
fn token(args: TokenArgs) -> std::process::ExitCode {
    use switchboard::auth::token_tool;
    let fail = |message: String| {
        eprintln!("{message}");
        std::process::ExitCode::FAILURE
    };
    let path = args.config.or_else(|| {
        let default = PathBuf::from("config/default.toml");
        default.exists().then_some(default)
    });
    let config = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(format!("configuration: {e}")),
    };
    if let Some(token) = args.explain {
        return match token_tool::explain(&config, token.trim(), args.app.as_deref()) {
            Ok(verdicts) => {
                print!("{}", token_tool::render(token.trim(), &verdicts));
                if verdicts.iter().any(|v| v.result.is_ok()) {
                    std::process::ExitCode::SUCCESS
                } else {
                    std::process::ExitCode::FAILURE
                }
            }
            Err(e) => fail(e.to_string()),
        };
    }
    let Some(app) = args.app else {
        return fail("--app HASH is required to mint a token".into());
    };
    let extras = match args.extras.as_deref().map(serde_json::from_str) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => return fail(format!("--extras is not JSON: {e}")),
    };
    let private_key_pem = match &args.private_key {
        None => None,
        Some(file) => match std::fs::read_to_string(file) {
            Ok(pem) => Some(pem),
            Err(e) => return fail(format!("--private-key {}: {e}", file.display())),
        },
    };
    let mint = token_tool::Mint {
        app,
        sub: args.sub.unwrap_or_default(),
        dbo_id: args.dbo_id,
        extras,
        roles: args.roles,
        ttl: args.ttl,
        private_key_pem,
    };
    match token_tool::mint(&config, &mint) {
        Ok(token) => {
            println!("{token}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let config_path = match cli.command {
        Some(Command::CheckConfig { file }) => {
            return match Config::load(Some(&file)) {
                Ok(c) => {
                    eprintln!("{}: ok ({} apps)", file.display(), c.apps.len());
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::Import { source }) => {
            return match switchboard::xano::import(&source) {
                Ok(toml) => {
                    print!("{toml}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::ExportXs { config }) => {
            return match Config::load(Some(&config)) {
                Ok(c) => {
                    let (xs, notes) = switchboard::xano::config_to_xs(&c);
                    print!("{xs}");
                    for note in notes {
                        eprintln!("note: {note}");
                    }
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::Token(args)) => return token(args),
        Some(Command::Serve { config, demo }) => (config, demo),
        None => (None, false),
    };
    let (config_path, demo) = config_path;
    let config_path = config_path.or_else(|| {
        let default = PathBuf::from("config/default.toml");
        default.exists().then_some(default)
    });
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("configuration: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(refused) = refuse_public_secrets(&config, demo) {
        tracing::error!("configuration: {refused}");
        return std::process::ExitCode::FAILURE;
    }
    for app in &config.apps {
        if app.jwt.secret.as_deref() == Some(DEMO_SECRET) {
            tracing::warn!(
                app = %app.hash,
                "!!! app {:?} uses the PUBLIC DEMO JWT SECRET: anyone can mint tokens for it. \
                 Set apps.jwt.secret (SWITCHBOARD__APPS__N__JWT__SECRET) before going live !!!",
                app.hash
            );
        }
    }
    let result = actix_rt::System::new().block_on(async move {
        let server = Server::bind_with_path(&config, config_path.clone())?;
        tracing::info!(addr = %server.addr, apps = config.apps.len(), "listening");
        let handle = server.handle();
        let state = server.state.clone();
        actix_rt::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = switchboard::reload::reload(&state);
            }
        });
        actix_rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal: draining");
            handle.shutdown().await;
        });
        server.run().await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
