//! [`Standalone`]: ingest, gateway and heartbeat checker on one port.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::App;
use actix_web::dev::Server;
use anyhow::Context;
use pulse_bus::Bus;
use pulse_ingest::IngestState;
use pulse_ingest::settings::BusKind;
use pulse_probe::{Fleet, FleetConfig, FleetStats};
use pulse_runtime::{Health, Shutdown};
use pulse_store::Store;
use pulse_websocket_gateway::{Gateway, StoreSnapshots};

use crate::redis_io::RedisIo;
use crate::settings::Settings;

/// Standalone Pulse, bound and ready to run.
pub struct Standalone {
    port: u16,
    server: Server,
    settings: Settings,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    health: Health,
    gateway: Gateway,
    /// The gateway's drain token: triggered on shutdown, it turns `/readyz`
    /// not ready and closes browsers with 1012 over the drain window.
    drain: Shutdown,
    /// Stops the checker and the demo fleet.
    halt: Shutdown,
    fleet: Option<Fleet>,
    static_dir: Option<PathBuf>,
}

impl Standalone {
    /// Connects to the bus and store the settings name (memory by default),
    /// starts the gateway's hub and binds the listener, so that port 0 works
    /// and [`port`](Self::port) is the real one. Nothing is served, checked
    /// or simulated until [`run_until`](Self::run_until).
    /// On Redis, the bus and store run on a [`RedisIo`] runtime of their
    /// own, so that fan-out on the HTTP workers never delays their I/O.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let ingest = settings.ingest_settings();
        let (bus, store) = match ingest.bus {
            BusKind::Redis => RedisIo::start()?.connect(ingest).await?,
            BusKind::Memory => pulse_ingest::connect(&ingest).await?,
        };
        Self::build_with(settings, bus, store)
    }

    /// Like [`build`](Self::build), on a bus and store that already exist.
    /// Must be called within a Tokio runtime.
    pub fn build_with(settings: Settings, bus: Arc<dyn Bus>, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let metrics = pulse_runtime::install_metrics()?;
        let health = Health::new();
        let ingest = settings.ingest_settings();
        let state = IngestState::new(bus.clone(), store.clone(), ingest.ingest, &ingest.auth)
            .context("invalid ingest settings")?;
        // Bus and store checks, registered once for the whole process.
        state.register_readiness(&health);

        let (host, port) = settings.http.bind_addr();
        let listener =
            pulse_runtime::listen((host, port)).with_context(|| format!("cannot listen on {host}:{port}"))?;
        let port = listener.local_addr()?.port();

        let gateway_settings = settings.gateway_settings();
        let static_dir = gateway_settings.gateway.static_dir.clone();
        if let (Some(wanted), None) = (&settings.gateway.static_dir, &static_dir) {
            tracing::warn!(dir = %wanted.display(), "gateway.static_dir not found: serving the built-in dashboard");
        }
        let max_connections = gateway_settings.gateway.max_connections;
        let workers = settings.http.worker_threads();
        let drain = Shutdown::new();
        let snapshots = Arc::new(StoreSnapshots(store.clone()));
        let gateway = Gateway::start(gateway_settings, bus.clone(), snapshots, health.clone(), drain.clone())?;

        let server = {
            let health = health.clone();
            let app_gateway = gateway.clone();
            let static_dir = static_dir.clone();
            let app = move || {
                App::new()
                    .configure(pulse_runtime::configure_ops(health.clone(), metrics.clone()))
                    .configure(|cfg| pulse_ingest::configure(cfg, state.clone()))
                    .configure(pulse_websocket_gateway::configure(app_gateway.clone()))
                    // Last: it answers every path.
                    .configure(crate::dashboard::configure(static_dir.clone()))
            };
            pulse_websocket_gateway::serve(
                listener,
                gateway.clone(),
                app,
                max_connections.saturating_add(1024),
                workers,
            )?
        };

        let fleet = if settings.demo.enabled {
            let demo = &settings.demo;
            Some(Fleet::new(FleetConfig {
                base_url: base_url(host, port),
                api_key: demo.api_key.clone(),
                agents: demo.agents,
                interval: demo.interval,
                l3_failure_rate: demo.l3_failure_rate,
                silent_agents: demo.silent_agents,
                silent_after: demo.silent_after,
                publisher_key: Some(demo.publisher_key.clone()).filter(|k| !k.is_empty()),
                seed: demo.seed,
                ..FleetConfig::default()
            })?)
        } else {
            None
        };

        Ok(Self {
            port,
            server,
            settings,
            bus,
            store,
            health,
            gateway,
            drain,
            halt: Shutdown::new(),
            fleet,
            static_dir,
        })
    }

    /// The port everything listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address to open in a browser, such as `http://127.0.0.1:8080/`.
    pub fn dashboard_url(&self) -> String {
        format!("{}/", base_url(&self.settings.http.host, self.port))
    }

    /// The dashboard directory served at `/` instead of the embedded
    /// dashboard, if one is configured and found.
    pub fn static_dir(&self) -> Option<&std::path::Path> {
        self.static_dir.as_deref()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Readiness checks and the draining flag behind `/readyz`.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The gateway (connection stats, drain).
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The demo fleet's counters, when the demo is on.
    pub fn fleet_stats(&self) -> Option<Arc<FleetStats>> {
        self.fleet.as_ref().map(Fleet::stats)
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signal();
        self.run_until(shutdown).await
    }

    /// Serves, checks heartbeats and runs the demo fleet until `shutdown` is
    /// triggered. Then the fleet and the checker stop, `/readyz` turns not
    /// ready, browsers are closed with 1012 over `gateway.drain_window` (so
    /// they resume elsewhere or after a restart), requests in flight finish,
    /// and it returns.
    pub async fn run_until(self, shutdown: Shutdown) -> std::io::Result<()> {
        let Self { server, store, gateway, drain, halt, fleet, settings, health, .. } = self;
        let checker = tokio::spawn(pulse_heartbeat_checker::run(store, settings.checker.clone(), halt.clone()));
        let fleet = fleet.map(|fleet| {
            tokio::spawn(log_fleet_summary(fleet.stats(), halt.clone()));
            tokio::spawn(fleet.run(halt.clone()))
        });

        let window = gateway.settings().gateway.drain_window;
        let drain_browsers = {
            let gateway = gateway.clone();
            let halt = halt.clone();
            async move {
                tracing::info!(?window, "shutting down: draining browsers, finishing requests in flight");
                halt.trigger();
                drain.trigger();
                gateway.wait_drained(window + pulse_runtime::DRAIN_GRACE).await;
            }
        };
        let result = pulse_runtime::run_until(server, health, shutdown, window, drain_browsers).await;
        halt.trigger();
        gateway.stop();
        let _ = checker.await;
        if let Some(fleet) = fleet {
            let _ = fleet.await;
        }
        tracing::info!("pulse stopped");
        result
    }
}

/// How often the demo fleet's totals are logged.
const FLEET_SUMMARY_EVERY: Duration = Duration::from_secs(30);

async fn log_fleet_summary(stats: Arc<FleetStats>, halt: Shutdown) {
    let mut ticker = tokio::time::interval(FLEET_SUMMARY_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = halt.cancelled() => return,
            _ = ticker.tick() => tracing::info!(summary = %stats.snapshot(), "demo fleet"),
        }
    }
}

/// `http://host:port` for a client on this machine: an unspecified bind
/// address (`0.0.0.0`, `::`) is reached on loopback.
fn base_url(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => format!("http://127.0.0.1:{port}"),
        Ok(IpAddr::V6(ip)) => format!("http://[{ip}]:{port}"),
        _ => format!("http://{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::base_url;

    #[test]
    fn base_url_reaches_unspecified_addresses_on_loopback() {
        assert_eq!(base_url("0.0.0.0", 8080), "http://127.0.0.1:8080");
        assert_eq!(base_url("::", 1), "http://127.0.0.1:1");
        assert_eq!(base_url("::1", 1), "http://[::1]:1");
        assert_eq!(base_url("localhost", 2), "http://localhost:2");
    }
}
