//! The `pulse-heartbeat-checker` service: the checker against Redis, with
//! `/healthz`, `/readyz` and `/metrics` on its HTTP port.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer};
use anyhow::Context;
use pulse_bus::RedisBus;
use pulse_runtime::{Health, HttpSettings, RedisSettings, SettingsError, SettingsLoader, Shutdown, TelemetrySettings};
use pulse_store::{RedisStore, Store, StoreSettings};
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
    handle: ServerHandle,
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
                    Some(store) => store.check().await.map_err(|e| e.to_string()),
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
            .workers(1)
            // Shutdown is ours (the `Shutdown` token), not actix's.
            .disable_signals()
            .shutdown_timeout(HTTP_SHUTDOWN_SECS)
            .run();
        let handle = server.handle();

        let worker = tokio::spawn(work(settings, store, shutdown.clone()));
        Ok(Self { port, server, handle, worker, health, shutdown })
    }

    /// The port the HTTP server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the shutdown token is triggered (or the HTTP server
    /// fails), then stops the checker and the server.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let mut server = tokio::spawn(self.server);
        let early = tokio::select! {
            result = &mut server => Some(result),
            () = self.shutdown.cancelled() => None,
        };
        self.health.set_draining();
        self.shutdown.trigger();
        self.worker.await.context("the checker task failed")?;
        match early {
            Some(result) => result.context("the HTTP server task failed")?.context("the HTTP server failed"),
            None => {
                self.handle.stop(true).await;
                server.await.context("the HTTP server task failed")?.context("the HTTP server failed")
            }
        }
    }
}

/// Connects to Redis (retrying with backoff until it answers or shutdown)
/// and runs the checker.
async fn work(settings: Settings, shared: SharedStore, shutdown: Shutdown) {
    let config = settings.redis.bus_config();
    let mut retry = Duration::from_millis(100);
    let mut warned = false;
    let bus = loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return,
            attempt = RedisBus::connect(config.clone()) => attempt,
        };
        match attempt {
            Ok(bus) => break bus,
            Err(error) => {
                if !warned {
                    tracing::warn!(%error, redis = ?settings.redis, "cannot connect to redis; retrying with backoff");
                    warned = true;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(settings.checker.max_backoff.max(Duration::from_millis(100)));
            }
        }
    };
    if warned {
        tracing::info!("connected to redis");
    }
    let store: Arc<dyn Store> = Arc::new(RedisStore::new(bus, StoreSettings::default()));
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
