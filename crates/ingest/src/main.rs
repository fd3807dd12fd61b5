//! `pulse-ingest`: the HTTP API for Probe agents, publishers and dashboards.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pulse_ingest::{Application, Settings};

/// Every request allocates and frees many small buffers on several threads
/// (JSON, event drafts, Redis commands); glibc's allocator spent about a
/// quarter of ingest's CPU on them under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Pulse ingest: reports, heartbeats, decisions, publishing and the read API.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Settings file (TOML, or by extension JSON/YAML); defaults to $PULSE_CONFIG.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(args.config.as_deref())?;
    let _telemetry = pulse_runtime::init_telemetry("pulse-ingest", &settings.telemetry)?;
    pulse_runtime::raise_open_file_limit();
    let app = Application::build(settings).await.context("cannot start pulse-ingest")?;
    tracing::info!(port = app.port(), "pulse-ingest listening");
    app.run_until_stopped().await?;
    Ok(())
}
