//! `pulse-heartbeat-checker`: see the library for what it does.

use anyhow::Context;
use pulse_heartbeat_checker::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = pulse_runtime::Cli::parse_for(
        "pulse-heartbeat-checker",
        "Marks Pulse agents that stopped reporting offline, exactly once.",
    );
    let settings = Settings::load(cli.config.as_deref()).context("loading settings")?;
    let _telemetry = pulse_runtime::init_telemetry("pulse-heartbeat-checker", &settings.telemetry)?;
    let shutdown = pulse_runtime::Shutdown::new();
    shutdown.trigger_on_signal();
    let app = Application::build(settings, shutdown).await?;
    tracing::info!(port = app.port(), "pulse-heartbeat-checker listening");
    app.run_until_stopped().await
}
