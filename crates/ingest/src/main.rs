//! `pulse-ingest`: the HTTP API for Probe agents, publishers and dashboards.

use anyhow::Context;
use pulse_ingest::{Application, Settings};

/// Every request allocates and frees many small buffers on several threads
/// (JSON, event drafts, Redis commands); glibc's allocator spent about a
/// quarter of ingest's CPU on them under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = pulse_runtime::Cli::parse_for(
        "pulse-ingest",
        "Pulse ingest: reports, heartbeats, decisions, publishing and the read API.",
    );
    let settings = Settings::load(cli.config.as_deref())?;
    let _telemetry = pulse_runtime::init_telemetry("pulse-ingest", &settings.telemetry)?;
    pulse_runtime::raise_open_file_limit();
    let app = Application::build(settings).await.context("cannot start pulse-ingest")?;
    tracing::info!(port = app.port(), "pulse-ingest listening");
    app.run_until_stopped().await?;
    Ok(())
}
