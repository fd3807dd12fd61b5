//! The gateway's shared state: a cloneable handle every route and session
//! holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pulse_auth::{KeyError, Verifier};
use pulse_bus::{Bus, LinkState};
use pulse_runtime::{Health, Shutdown};

use crate::depth::QueueDepths;
use crate::hub::Hub;
use crate::limits::{ConnectionCount, ConnectionPermit, IpLimiter};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::settings::Settings;
use crate::snapshot::Snapshots;

/// The running gateway: hub, bus bridge, limits, auth. Cheap to clone.
///
/// Create it with [`Gateway::start`] and mount its routes with
/// [`configure`](crate::configure); [`Application`](crate::Application)
/// does both for the standalone gateway binary.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    bus: Arc<dyn Bus>,
    snapshots: Snapshots,
    hub: Hub,
    verifier: Option<Verifier>,
    ip_limiter: IpLimiter,
    connections: Arc<ConnectionCount>,
    presence: Arc<Presence>,
    metrics: Metrics,
    /// Every open connection's queue, sampled for the depth metrics.
    depths: Arc<QueueDepths>,
    health: Health,
    /// Triggered to drain: clients are closed with 1012 over the window.
    drain: Shutdown,
    /// Triggered once the server has stopped: background tasks end.
    halt: Shutdown,
    instance: String,
    next_connection: AtomicU64,
    slow_closes: AtomicU64,
    /// Set once the drain has reached the connections (before their
    /// queues are woken): one load on each wake-up, not the token's lock.
    closing_for_drain: AtomicBool,
}

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("auth settings: {0}")]
    Auth(#[from] KeyError),
    #[error("gateway.heartbeat_interval ({interval:?}) must be at most half of gateway.client_timeout ({timeout:?})")]
    Heartbeat { interval: Duration, timeout: Duration },
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Counters for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayStats {
    /// Open WebSocket and SSE connections.
    pub connections: usize,
    /// Channels with at least one local subscriber.
    pub channels: usize,
    /// Clients closed for falling behind since start.
    pub slow_closes: u64,
}

impl Gateway {
    /// Starts the hub and its bus bridge on the current Tokio runtime.
    ///
    /// `drain` is the shutdown token: once triggered, new connections are
    /// refused and open ones are closed with 1012 over `gateway.drain_window`.
    /// `health` is marked draining then.
    pub fn start(
        settings: Settings,
        bus: Arc<dyn Bus>,
        snapshots: Snapshots,
        health: Health,
        drain: Shutdown,
    ) -> Result<Self, StartupError> {
        let g = &settings.gateway;
        if g.heartbeat_interval * 2 > g.client_timeout {
            return Err(StartupError::Heartbeat { interval: g.heartbeat_interval, timeout: g.client_timeout });
        }
        let verifier = Verifier::from_settings(&settings.auth)?;
        if verifier.is_none() && !settings.auth.anonymous {
            tracing::warn!("no auth key configured and anonymous access is off: no browser can connect");
        }
        let metrics = Metrics::new();
        let subscription = bus.subscription();
        let hub = Hub::new(metrics.clone(), subscription.handle());
        let instance = format!("gw-{:08x}", rand::random::<u32>());
        let presence = Arc::new(Presence::new(
            settings.presence.channels.clone(),
            instance.clone(),
            settings.presence.refresh_interval,
        ));
        {
            // Ready means live events reach this instance: the bus link that
            // carries them is up (not only Redis answering commands).
            let bus = bus.clone();
            health.register("bus_live", move || {
                let link = bus.link();
                async move {
                    match link {
                        LinkState::Up => Ok(()),
                        LinkState::Down => Err("the pub/sub link to the bus is down; reconnecting".to_owned()),
                    }
                }
            });
        }
        let halt = Shutdown::new();
        let inner = Arc::new(Inner {
            ip_limiter: IpLimiter::new(settings.limits.connections_per_ip_per_sec),
            settings,
            bus: bus.clone(),
            snapshots,
            hub: hub.clone(),
            verifier,
            connections: Arc::default(),
            presence: presence.clone(),
            metrics,
            depths: QueueDepths::new(),
            health,
            drain: drain.clone(),
            halt: halt.clone(),
            instance,
            next_connection: AtomicU64::new(1),
            slow_closes: AtomicU64::new(0),
            closing_for_drain: AtomicBool::new(false),
        });
        tokio::spawn(crate::bridge::run(hub, subscription, halt.clone()));
        tokio::spawn(inner.depths.clone().run(halt.clone()));
        tokio::spawn(presence.run(bus, halt));
        let drained = inner.clone();
        tokio::spawn(async move {
            drain.cancelled().await;
            drained.health.set_draining();
            drained.closing_for_drain.store(true, Ordering::SeqCst);
            // Each connection sees the drain at its next wake-up (see
            // `core::run`); one registered later sees it at its first.
            drained.depths.wake_all();
        });
        Ok(Self { inner })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Starts draining (same as triggering the shutdown token).
    pub fn drain(&self) {
        self.inner.drain.trigger();
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.inner.drain.is_triggered()
    }

    /// Whether open connections are to close for the drain: set after
    /// [`Self::is_draining`], just before every queue is woken.
    pub(crate) fn closing_for_drain(&self) -> bool {
        self.inner.closing_for_drain.load(Ordering::SeqCst)
    }

    /// Waits until every client is gone or `deadline` passes; returns
    /// whether they are all gone.
    pub async fn wait_drained(&self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, self.inner.connections.none_open()).await.is_ok()
    }

    /// Stops background tasks (bus bridge, presence). Call after the HTTP
    /// server has stopped.
    pub fn stop(&self) {
        self.inner.halt.trigger();
    }

    /// Counters for tests and diagnostics.
    pub fn stats(&self) -> GatewayStats {
        GatewayStats {
            connections: self.inner.connections.open(),
            channels: self.inner.hub.channel_count(),
            slow_closes: self.inner.slow_closes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn acquire_connection(&self) -> Option<ConnectionPermit> {
        self.inner.connections.try_acquire(self.inner.settings.gateway.max_connections)
    }

    pub(crate) fn next_connection_id(&self) -> String {
        let n = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.inner.instance)
    }

    pub(crate) fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    pub(crate) fn snapshots(&self) -> &Snapshots {
        &self.inner.snapshots
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub(crate) fn verifier(&self) -> Option<&Verifier> {
        self.inner.verifier.as_ref()
    }

    pub(crate) fn presence(&self) -> &Presence {
        &self.inner.presence
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn depths(&self) -> &Arc<QueueDepths> {
        &self.inner.depths
    }

    /// Whether `ip` may open one more connection now (attempts per second).
    pub(crate) fn allow_attempt_from(&self, ip: std::net::IpAddr) -> bool {
        self.inner.ip_limiter.allow(ip)
    }

    pub(crate) fn count_slow_close(&self) {
        self.inner.slow_closes.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.slow_closes.increment(1);
    }
}
