//! `pulse`: standalone Pulse. `cargo run --release` at the repository root;
//! `pulse token …` mints a development token.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pulse::{Settings, Standalone};
use pulse_protocol::ChannelPattern;

/// Pulse in one process: HTTP API, WebSocket/SSE gateway, heartbeat checker
/// and the dashboard on one port, with a demo fleet of simulated agents.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints a development token (HS256 JWT) for the given channels,
    /// signed with the configured `auth.secret` (settings file or
    /// PULSE__AUTH__SECRET), that this Pulse accepts.
    Token(TokenArgs),
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The settings file to read `[auth]` from.
    #[command(flatten)]
    service: pulse_runtime::Cli,
    /// A channel the token may read; a pattern such as `agent:*` or `*`
    /// works. Repeat for several.
    #[arg(long = "channel", value_name = "PATTERN", required = true)]
    channels: Vec<ChannelPattern>,
    /// The token's subject, shown in presence and logs.
    #[arg(long, default_value = "developer")]
    sub: String,
    /// Lifetime, such as `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
}

/// A token lifetime: a duration as in settings (`30m`, `1h`, `7d`) of at
/// least one second.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = pulse_runtime::duration::parse(text).map_err(|e| e.to_string())?;
    if ttl < Duration::from_secs(1) {
        return Err(format!("{text:?} is too short: a token must live at least 1s"));
    }
    Ok(ttl)
}

#[derive(Debug, clap::Args)]
struct Args {
    /// The settings file, as for every Pulse service.
    #[command(flatten)]
    service: pulse_runtime::Cli,
    /// Port of everything (`http.port`, default 8080; 0 picks a free one).
    #[arg(long, short)]
    port: Option<u16>,
    /// Address to listen on (`http.host`, default 127.0.0.1).
    #[arg(long)]
    host: Option<String>,
    /// Run on Redis at this URL instead of in memory (`bus = "redis"`, `redis.url`).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Run the demo fleet of simulated agents (the default; `demo.enabled`).
    #[arg(long, overrides_with = "no_demo")]
    demo: bool,
    /// Do not run the demo fleet.
    #[arg(long)]
    no_demo: bool,
    /// Agents in the demo fleet (`demo.agents`, default 30).
    #[arg(long)]
    agents: Option<usize>,
    /// Serve the dashboard from this directory instead of the copy built
    /// into the binary (`gateway.static_dir`).
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => token(args),
        None => run(cli.run).await,
    }
}

/// `pulse token`: prints the token alone on stdout, so that
/// `TOKEN=$(pulse token --channel alerts)` works.
fn token(args: TokenArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.service.config.as_deref())?;
    let claims = pulse_auth::Claims::new(args.sub, args.channels, args.ttl);
    let token = claims.sign_for(&settings.auth).context(
        "cannot mint a token: set auth.secret in the settings file (--config) or PULSE__AUTH__SECRET, \
         the same secret the running Pulse uses",
    )?;
    println!("{token}");
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut settings = Settings::load(args.service.config.as_deref())?;
    if let Some(port) = args.port {
        settings.http.port = port;
    }
    if let Some(host) = args.host {
        settings.http.host = host;
    }
    if let Some(url) = &args.redis {
        settings.use_redis(url);
    }
    if args.demo || args.no_demo {
        settings.demo.enabled = args.demo;
    }
    if let Some(agents) = args.agents {
        settings.demo.agents = agents;
    }
    if let Some(dir) = args.static_dir {
        settings.gateway.static_dir = Some(dir);
    }
    let _telemetry = pulse_runtime::init_telemetry("pulse", &settings.telemetry)?;
    settings.gateway.max_connections = pulse_runtime::fit_connections_to_file_limit(settings.gateway.max_connections);
    let app = Standalone::build(settings).await.context("cannot start pulse")?;
    let s = app.settings();
    tracing::info!(port = app.port(), bus = ?s.bus, demo = s.demo.enabled, "pulse listening");
    println!();
    println!("  Pulse is running: open {}", app.dashboard_url());
    if let Some(dir) = app.static_dir() {
        println!("  (dashboard files from {})", dir.display());
    }
    if s.demo.enabled {
        println!(
            "  Demo: {} simulated agents reporting with key {:?}; --no-demo turns it off.",
            s.demo.agents, s.demo.api_key
        );
    }
    println!("  Stop with Ctrl-C.");
    println!();
    app.run_until_stopped().await?;
    Ok(())
}
