//! `pulse-heartbeat-checker`: see the library for what it does.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pulse_heartbeat_checker::{Application, Settings};

/// Marks Pulse agents that stopped reporting offline, exactly once.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Settings file (TOML unless the extension says otherwise); also
    /// `PULSE_CONFIG`. Environment variables `PULSE__SECTION__KEY` override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref()).context("loading settings")?;
    let _telemetry = pulse_runtime::init_telemetry("pulse-heartbeat-checker", &settings.telemetry)?;
    let shutdown = pulse_runtime::Shutdown::new();
    shutdown.trigger_on_signal();
    let app = Application::build(settings, shutdown).await?;
    tracing::info!(port = app.port(), "pulse-heartbeat-checker listening");
    app.run_until_stopped().await
}
