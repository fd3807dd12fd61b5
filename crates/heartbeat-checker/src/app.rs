//! The `pulse-heartbeat-checker` service: the checker against Redis, with
//! `/healthz`, `/readyz` and `/metrics` on its HTTP port.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer};
use anyhow::Context;
use pulse_runtime::{Health, HttpSettings, RedisSettings, SettingsError, SettingsLoader, Shutdown, TelemetrySettings};
use pulse_store::{Store, StoreSettings};
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::{Checker, CheckerSettings};

/// The built-in defaults (`src/defaults.toml`).
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// Everything the service reads at start.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub redis: RedisSettings,
    #[serde(default)]
    pub checker: CheckerSettings,
    /// `[store]`: the same block as ingest's (the checker reads and writes
    /// agent state with it).
    #[serde(default)]
    pub store: StoreSettings,
}

impl Settings {
    /// Defaults, then `file` (or `PULSE_CONFIG`), then `PULSE__…`
    /// environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::loader().file(file).load()
    }

    /// The loader, for callers that set the environment explicitly (tests).
    pub fn loader() -> SettingsLoader {
        SettingsLoader::new("heartbeat-checker", DEFAULTS)
    }
}

/// The running service: the HTTP server is bound (so port 0 works and
/// [`port`](Self::port) tells the real port) and the checker task started.
pub struct Application {
    port: u16,
    server: Server,
    worker: JoinHandle<()>,
    health: Health,
    shutdown: Shutdown,
}

/// The store, once connected. Readiness reads it; the worker sets it.
type SharedStore = Arc<OnceLock<Arc<dyn Store>>>;

/// How long a graceful HTTP shutdown may take: the ops endpoints answer in
/// milliseconds, so this only bounds a stuck scrape.
const HTTP_SHUTDOWN_SECS: u64 = 5;

impl Application {
    /// Binds the HTTP port and starts the checker. Redis need not be up:
    /// the worker connects with backoff, and `/readyz` says not ready until
    /// it has.
    pub async fn build(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        let metrics = pulse_runtime::install_metrics()?;
        let health = Health::new();
        let store: SharedStore = Arc::default();
        let readiness_store = store.clone();
        health.register("redis", move || {
            let store = readiness_store.get().cloned();
            async move {
                match store {
                    Some(store) => store.check().await.map_err(|e| pulse_bus::error_chain(&e)),
                    None => Err("not connected to redis yet".to_owned()),
                }
            }
        });

        let listener = pulse_runtime::listen(settings.http.bind_addr())
            .with_context(|| format!("binding {}:{}", settings.http.host, settings.http.port))?;
        let port = listener.local_addr()?.port();
        let ops = pulse_runtime::configure_ops(health.clone(), metrics);
        let server = HttpServer::new(move || App::new().configure(ops.clone()))
            .listen(listener)?
            .workers(settings.http.workers.map_or(1, std::num::NonZeroUsize::get))
            // Shutdown is ours (the `Shutdown` token), not actix's.
            .disable_signals()
            .shutdown_timeout(HTTP_SHUTDOWN_SECS)
            .run();
        let worker = tokio::spawn(work(settings, store, shutdown.clone()));
        Ok(Self { port, server, worker, health, shutdown })
    }

    /// The port the HTTP server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the shutdown token is triggered (or the HTTP server
    /// fails), then stops the checker and the server
    /// ([`pulse_runtime::run_until`]).
    ///
    /// # Errors
    ///
    /// The HTTP server failed, or the checker task panicked.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let worker = self.worker;
        let (done, finished) = tokio::sync::oneshot::channel();
        // The drain: the worker sees the same token and stops after its
        // current batch.
        let drain = async move {
            let _ = done.send(worker.await);
        };
        pulse_runtime::run_until(self.server, self.health, self.shutdown, Duration::ZERO, drain)
            .await
            .context("the HTTP server failed")?;
        match finished.await {
            Ok(joined) => joined.context("the checker task failed"),
            // The drain ran out of time: the task is still stopping.
            Err(_) => Ok(()),
        }
    }
}

/// Connects to Redis (retrying with backoff until it answers or shutdown)
/// and runs the checker.
async fn work(settings: Settings, shared: SharedStore, shutdown: Shutdown) {
    let max_backoff = settings.checker.max_backoff;
    let Some(backend) = pulse_runtime::connect_retrying(&settings.redis, &settings.store, max_backoff, &shutdown).await
    else {
        return;
    };
    let store = backend.store;
    // Set once, here; nothing else writes it.
    let _ = shared.set(store.clone());
    tracing::info!(
        timeout = ?settings.checker.timeout,
        scan_interval = ?settings.checker.scan_interval,
        batch = settings.checker.batch,
        "heartbeat checker running"
    );
    Checker::new(store, settings.checker).run(shutdown).await;
}
