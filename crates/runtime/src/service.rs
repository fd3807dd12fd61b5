//! The shape every Pulse service shares: its command line ([`Cli`]), the
//! bus and store it runs on ([`connect`], [`connect_retrying`]), and
//! serving until shutdown with a drain ([`run_until`], [`DRAIN_GRACE`]).
//!
//! A service's `main` reads:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let cli = pulse_runtime::Cli::parse_for("pulse-example", "What the example does.");
//! let path = cli.config.as_deref();
//! # let _ = path;
//! // let settings = Settings::load(cli.config.as_deref())?;
//! // let _telemetry = pulse_runtime::init_telemetry("pulse-example", &settings.telemetry)?;
//! // Application::build(settings).await?.run_until_stopped().await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use clap::{Args, FromArgMatches};
use pulse_bus::{Bus, BusError, MemoryBus, MemoryBusConfig, RedisBus, RedisSettings};
use pulse_store::{MemoryStore, RedisStore, Store, StoreSettings};
use serde::Deserialize;

use crate::{Health, Shutdown};

/// The command line of every service binary (`pulse-ingest`,
/// `pulse-heartbeat-checker`, `pulse-gateway`; `pulse` adds its own flags
/// beside it with `#[command(flatten)]`).
#[derive(Debug, Clone, Default, clap::Args)]
// No argument group of its own: a binary flattens it beside its own flags
// (and may name its own struct `Cli` too).
#[group(skip)]
pub struct Cli {
    /// Settings file (TOML, or JSON/YAML by extension); defaults to
    /// $PULSE_CONFIG. Environment variables PULSE__SECTION__KEY override it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// Parses the process's arguments for the binary `name`, whose `--help`
    /// starts with `about`. Exits with the usage on bad arguments, and
    /// answers `--help` and `--version`.
    pub fn parse_for(name: &'static str, about: &'static str) -> Self {
        let command = Self::augment_args(clap::Command::new(name).about(about).version(env!("CARGO_PKG_VERSION")));
        Self::from_arg_matches(&command.get_matches()).unwrap_or_else(|err| err.exit())
    }
}

/// Which bus and store a service runs on (the top-level `bus` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// Redis (`[redis]`): state and history shared by every replica.
    Redis,
    /// In this process: for one machine and for development; nothing
    /// survives a restart.
    Memory,
}

/// The bus and store a service works on.
#[derive(Clone)]
pub struct Backend {
    /// Events: publish, history, subscriptions.
    pub bus: Arc<dyn Bus>,
    /// Agent state, alerts, dedupe.
    pub store: Arc<dyn Store>,
}

/// Connects the bus and store `kind` names: on Redis (`redis`), or in
/// memory, where `redis.history_len` is still the history length.
///
/// # Errors
///
/// [`BusError::Unavailable`] when Redis does not answer (or the URL is
/// invalid).
pub async fn connect(kind: BusKind, redis: &RedisSettings, store: &StoreSettings) -> Result<Backend, BusError> {
    Ok(match kind {
        BusKind::Redis => {
            let bus = RedisBus::connect(redis.clone()).await?;
            let store = RedisStore::new(bus.clone(), store.clone());
            Backend { bus: Arc::new(bus), store: Arc::new(store) }
        }
        BusKind::Memory => {
            let bus = MemoryBus::new(MemoryBusConfig { history_len: redis.history_len });
            let store = MemoryStore::new(bus.clone(), store.clone());
            Backend { bus: Arc::new(bus), store: Arc::new(store) }
        }
    })
}

/// Connects to Redis like [`connect`], retrying with jittered exponential
/// backoff (from 100 ms up to `max_backoff`) until Redis answers; `None` if
/// `shutdown` comes first. The first failure is logged as a warning, the
/// connection that follows it as info.
pub async fn connect_retrying(
    redis: &RedisSettings,
    store: &StoreSettings,
    max_backoff: Duration,
    shutdown: &Shutdown,
) -> Option<Backend> {
    let mut delays = pulse_bus::backoff(Duration::from_millis(100), max_backoff);
    let mut warned = false;
    loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return None,
            attempt = connect(BusKind::Redis, redis, store) => attempt,
        };
        match attempt {
            Ok(backend) => {
                if warned {
                    tracing::info!("connected to redis");
                }
                return Some(backend);
            }
            Err(error) => {
                if !warned {
                    tracing::warn!(error = %pulse_bus::error_chain(&error), ?redis, "cannot connect to redis; retrying with backoff");
                    warned = true;
                }
                let delay = delays.next().unwrap_or(max_backoff);
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The time every service gives its drain beyond its own window (the
/// gateway's `gateway.drain_window`; none for the others) for the last
/// answers and closes to reach clients, before it stops serving anyway.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Serves `server` until `shutdown` is triggered or the server stops by
/// itself, then drains and stops:
///
/// 1. `/readyz` turns not ready (`health`), so load balancers stop sending;
/// 2. `drain` runs (the service's own drain, such as closing browsers over
///    a window) for at most `drain_window` + [`DRAIN_GRACE`];
/// 3. the server stops gracefully: requests in flight are answered.
///
/// When the server stops by itself (it failed), `shutdown` is triggered so
/// the service's other tasks stop too, and the drain still runs.
///
/// # Errors
///
/// The server's own error (a failed worker, a listener error).
pub async fn run_until(
    server: Server,
    health: Health,
    shutdown: Shutdown,
    drain_window: Duration,
    drain: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = server.handle();
    let stopper = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            health.set_draining();
            if tokio::time::timeout(drain_window + DRAIN_GRACE, drain).await.is_err() {
                tracing::warn!(budget = ?(drain_window + DRAIN_GRACE), "drain not finished in time; stopping anyway");
            }
            handle.stop(true).await;
        })
    };
    let result = server.await;
    shutdown.trigger();
    if let Err(error) = stopper.await {
        tracing::error!(%error, "the drain task failed");
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use actix_web::{App, HttpServer, web};

    use super::*;

    fn server() -> (Server, u16) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(|| App::new().route("/", web::get().to(|| async { "ok" })))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
        (server, port)
    }

    #[tokio::test]
    async fn shutdown_marks_not_ready_runs_the_drain_and_stops_the_server() {
        let (server, port) = server();
        let health = Health::new();
        let shutdown = Shutdown::new();
        let drained = Arc::new(AtomicBool::new(false));
        let drain = {
            let drained = drained.clone();
            let health = health.clone();
            async move {
                // Not ready before the drain starts.
                assert!(health.is_draining());
                drained.store(true, Ordering::SeqCst);
            }
        };
        let running = tokio::spawn(run_until(server, health.clone(), shutdown.clone(), Duration::ZERO, drain));
        // It serves until shutdown.
        let answer = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(answer.is_ok());
        assert!(!running.is_finished());
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(30), running).await.unwrap().unwrap().unwrap();
        assert!(drained.load(Ordering::SeqCst));
        assert!(health.is_draining());
    }

    #[tokio::test]
    async fn a_drain_that_does_not_end_is_cut_at_its_budget() {
        let (server, _) = server();
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let started = std::time::Instant::now();
        let never = std::future::pending::<()>();
        tokio::time::timeout(
            Duration::from_secs(30),
            run_until(server, Health::new(), shutdown, Duration::ZERO, never),
        )
        .await
        .unwrap()
        .unwrap();
        // DRAIN_GRACE, not the test's deadline.
        assert!(started.elapsed() >= DRAIN_GRACE && started.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn the_cli_takes_a_settings_file() {
        let cli = <Cli as FromArgMatches>::from_arg_matches(
            &Cli::augment_args(clap::Command::new("t")).get_matches_from(["t", "--config", "x.toml"]),
        )
        .unwrap();
        assert_eq!(cli.config.as_deref(), Some(std::path::Path::new("x.toml")));
        let cli = <Cli as FromArgMatches>::from_arg_matches(
            &Cli::augment_args(clap::Command::new("t")).get_matches_from(["t", "-c", "y.toml"]),
        )
        .unwrap();
        assert_eq!(cli.config.as_deref(), Some(std::path::Path::new("y.toml")));
    }
}
