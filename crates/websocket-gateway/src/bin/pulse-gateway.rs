//! `pulse-gateway`: the gateway as its own service, on the Redis bus.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use pulse_bus::RedisBus;
use pulse_store::{RedisStore, StoreSettings};
use pulse_websocket_gateway::{Application, Settings, StoreSnapshots};

/// Pushes Pulse events to browsers over WebSocket and SSE.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Settings file (TOML); also `PULSE_CONFIG`. Environment variables
    /// `PULSE__SECTION__KEY` override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = Settings::load(cli.config.as_deref())?;
    let _telemetry = pulse_runtime::init_telemetry("pulse-gateway", &settings.telemetry)?;
    let metrics = pulse_runtime::install_metrics()?;
    settings.gateway.max_connections = pulse_runtime::fit_connections_to_file_limit(settings.gateway.max_connections);
    let redis = &settings.redis;
    let bus = RedisBus::connect(redis.bus_config()).await.context("connecting to Redis")?;
    // Only reads from the store (`refresh` of agents and alerts).
    let store = RedisStore::new(bus.clone(), StoreSettings::default());
    let snapshots = Arc::new(StoreSnapshots(Arc::new(store)));
    let app = Application::build(settings, Arc::new(bus), snapshots, metrics).await?;
    app.shutdown().trigger_on_signal();
    app.run_until_stopped().await?;
    Ok(())
}
