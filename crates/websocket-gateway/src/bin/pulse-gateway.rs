//! `pulse-gateway`: the gateway as its own service, on the Redis bus.

use std::sync::Arc;

use anyhow::Context;
use pulse_runtime::BusKind;
use pulse_websocket_gateway::{Application, Settings, StoreSnapshots};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = pulse_runtime::Cli::parse_for("pulse-gateway", "Pushes Pulse events to browsers over WebSocket and SSE.");
    let mut settings = Settings::load(cli.config.as_deref())?;
    let _telemetry = pulse_runtime::init_telemetry("pulse-gateway", &settings.telemetry)?;
    let metrics = pulse_runtime::install_metrics()?;
    settings.gateway.max_connections = pulse_runtime::fit_connections_to_file_limit(settings.gateway.max_connections);
    let backend = pulse_runtime::connect(BusKind::Redis, &settings.redis, &settings.store)
        .await
        .context("connecting to Redis")?;
    // The store answers `refresh` of agents and alerts.
    let snapshots = Arc::new(StoreSnapshots(backend.store));
    let app = Application::build(settings, backend.bus, snapshots, metrics).await?;
    app.shutdown().trigger_on_signal();
    app.run_until_stopped().await?;
    Ok(())
}
