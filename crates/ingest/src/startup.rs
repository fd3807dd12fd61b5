//! Building and running the ingest server.

use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpServer};
use anyhow::Context;
use pulse_bus::Bus;
use pulse_runtime::{Health, Shutdown};
use pulse_store::Store;

use crate::routes::configure;
use crate::settings::Settings;
use crate::state::IngestState;

/// The ops routes [`Application`] serves besides the API
/// ([`ROUTES`](crate::ROUTES)), from `pulse-runtime`.
pub const OPS_ROUTES: &[(&str, &str)] = &[("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")];

/// The ingest server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    state: IngestState,
    health: Health,
}

impl Application {
    /// Connects to the bus and store the settings name, binds the listener
    /// (so that port 0 works and [`port`](Self::port) is the real one), and
    /// builds the server. Nothing is served until
    /// [`run_until_stopped`](Self::run_until_stopped).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (bus, store) = connect(&settings).await?;
        Self::build_with(settings, bus, store)
    }

    /// Like [`build`](Self::build), on a bus and store that already exist.
    pub fn build_with(settings: Settings, bus: Arc<dyn Bus>, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let state =
            IngestState::new(bus, store, settings.ingest.clone(), &settings.auth).context("invalid ingest settings")?;
        let health = Health::new();
        state.register_readiness(&health);
        let metrics = pulse_runtime::install_metrics()?;

        let (host, port) = settings.http.bind_addr();
        let listener =
            pulse_runtime::listen((host, port)).with_context(|| format!("cannot listen on {host}:{port}"))?;
        let port = listener.local_addr()?.port();
        let server = {
            let state = state.clone();
            let health = health.clone();
            HttpServer::new(move || {
                App::new()
                    .configure(pulse_runtime::configure_ops(health.clone(), metrics.clone()))
                    .configure(|cfg| configure(cfg, state.clone()))
            })
            // Shutdown is driven by `run_until_stopped`, which marks the
            // service draining first.
            .disable_signals()
            .workers(settings.http.worker_threads())
            .listen(listener)?
            .run()
        };
        Ok(Self { port, server, state, health })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bus, store and settings the API works on.
    pub fn state(&self) -> &IngestState {
        &self.state
    }

    /// Readiness checks and the draining flag behind `/readyz`.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Serves until SIGINT or SIGTERM: then `/readyz` turns not ready, the
    /// requests in flight finish, and it returns.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signal();
        self.run_until(shutdown).await
    }

    /// Serves until `shutdown` is triggered, then stops gracefully (see
    /// [`pulse_runtime::run_until`]: not ready first, then the requests in
    /// flight finish).
    pub async fn run_until(self, shutdown: Shutdown) -> std::io::Result<()> {
        pulse_runtime::run_until(self.server, self.health, shutdown, std::time::Duration::ZERO, async {}).await
    }
}

/// The bus and store `settings` name: Redis (shared by every replica) or in
/// memory (this process only), through [`pulse_runtime::connect`].
pub async fn connect(settings: &Settings) -> anyhow::Result<(Arc<dyn Bus>, Arc<dyn Store>)> {
    let backend = pulse_runtime::connect(settings.bus, &settings.redis(), &settings.store)
        .await
        .context("cannot connect to Redis")?;
    Ok((backend.bus, backend.store))
}
