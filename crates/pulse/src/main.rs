//! `pulse`: standalone Pulse. `cargo run --release` at the repository root.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pulse::{Settings, Standalone};

/// Pulse in one process: HTTP API, WebSocket/SSE gateway, heartbeat checker
/// and the dashboard on one port, with a demo fleet of simulated agents.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Settings file (TOML, or JSON/YAML by extension); also `PULSE_CONFIG`.
    #[arg(long, short)]
    config: Option<PathBuf>,
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
    /// Dashboard directory served at `/` (`gateway.static_dir`).
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = Settings::load(args.config.as_deref())?;
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
    let app = Standalone::build(settings).await.context("cannot start pulse")?;
    let s = app.settings();
    tracing::info!(port = app.port(), bus = ?s.bus, demo = s.demo.enabled, "pulse listening");
    println!();
    println!("  Pulse is running: open {}", app.dashboard_url());
    if app.static_dir().is_none() {
        println!("  (no dashboard directory found: set gateway.static_dir or --static-dir)");
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
