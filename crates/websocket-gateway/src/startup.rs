//! [`Application`]: the gateway as a server of its own (`pulse-gateway`).

use std::sync::Arc;

use actix_web::App;
use actix_web::dev::Server;
use metrics_exporter_prometheus::PrometheusHandle;
use pulse_bus::Bus;
use pulse_runtime::{Health, Shutdown};

use crate::gateway::{Gateway, StartupError};
use crate::routes::{configure, configure_static};
use crate::server::serve;
use crate::settings::Settings;
use crate::snapshot::Snapshots;

/// A bound, not yet running gateway server: `/ws`, `/sse`, `/healthz`,
/// `/readyz`, `/metrics` and the dashboard's static files.
pub struct Application {
    port: u16,
    server: Server,
    gateway: Gateway,
    health: Health,
    shutdown: Shutdown,
}

impl Application {
    /// Starts the gateway on `bus` and binds `http.host:http.port` (port 0
    /// picks a free one; see [`port`](Self::port)). `snapshots` answers
    /// `refresh` for state channels; `metrics` is the process's Prometheus
    /// handle for `/metrics` (install it once with
    /// `pulse_runtime::install_metrics`).
    ///
    /// Triggering [`shutdown`](Self::shutdown) (the binary does it on SIGTERM)
    /// drains: `/readyz` turns 503, new connections are refused, clients are
    /// closed with 1012 over `gateway.drain_window`, then the server stops.
    pub async fn build(
        settings: Settings,
        bus: Arc<dyn Bus>,
        snapshots: Snapshots,
        metrics: PrometheusHandle,
    ) -> Result<Self, StartupError> {
        let health = Health::new();
        {
            let bus = bus.clone();
            health.register("bus", move || {
                let bus = bus.clone();
                async move { bus.check().await.map_err(|e| pulse_bus::error_chain(&e)) }
            });
        }
        let shutdown = Shutdown::new();
        let static_dir = settings.gateway.static_dir.clone();
        let max_connections = settings.gateway.max_connections;
        let workers = settings.http.worker_threads();
        let addr = format!("{}:{}", settings.http.host, settings.http.port);
        let listener =
            pulse_runtime::listen(&addr).map_err(|source| StartupError::Bind { addr: addr.clone(), source })?;
        let port = listener.local_addr()?.port();
        let gateway = Gateway::start(settings, bus, snapshots, health.clone(), shutdown.clone())?;
        let app_gateway = gateway.clone();
        let ops_health = health.clone();
        let app = move || {
            App::new()
                .configure(pulse_runtime::configure_ops(ops_health.clone(), metrics.clone()))
                .configure(configure(app_gateway.clone()))
                .configure(configure_static(static_dir.as_deref()))
        };
        let server = serve(listener, gateway.clone(), app, max_connections.saturating_add(1024), workers)?;
        tracing::info!(port, "gateway listening");
        Ok(Self { port, server, gateway, health, shutdown })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The running gateway (stats, drain).
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The token that drains and stops it.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves until shutdown is triggered and the drain is over: clients
    /// are closed over `gateway.drain_window`, with
    /// [`DRAIN_GRACE`](pulse_runtime::DRAIN_GRACE) more for the last closes
    /// ([`pulse_runtime::run_until`]).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let window = self.gateway.settings().gateway.drain_window;
        let drain = {
            let gateway = self.gateway.clone();
            async move {
                tracing::info!(?window, "draining");
                gateway.wait_drained(window + pulse_runtime::DRAIN_GRACE).await;
            }
        };
        let result = pulse_runtime::run_until(self.server, self.health, self.shutdown, window, drain).await;
        self.gateway.stop();
        result
    }
}
