//! Liveness, readiness and the ops endpoints.
//!
//! - `GET /healthz`: 200 `{"status":"ok"}` as long as the process can answer.
//!   Liveness says nothing about dependencies, so that a Redis outage never
//!   makes Kubernetes restart every pod at once.
//! - `GET /readyz`: 200 `{"status":"ready"}` when every registered
//!   [`ReadinessCheck`] passes; 503 `{"status":"not_ready","failed":{"redis":
//!   "…"}}` naming each failing check; 503 `{"status":"draining"}` once
//!   [`Health::set_draining`] was called, so the load balancer stops sending
//!   new connections while the gateway closes the old ones.
//! - `GET /metrics`: the Prometheus text of [`install_metrics`](crate::install_metrics).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, CacheControl, CacheDirective};
use actix_web::{HttpResponse, web};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

/// The future a [`ReadinessCheck`] returns: `Err` carries a short reason
/// that ends up in the `/readyz` body.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One dependency the service needs to do its job (e.g. `"redis"`, backed by
/// the bus's `check()`).
///
/// Implemented for every `Fn() -> impl Future<Output = Result<(), String>>`,
/// so a closure is enough:
///
/// ```
/// let health = pulse_runtime::Health::new();
/// health.register("redis", || async { Ok(()) });
/// ```
pub trait ReadinessCheck: Send + Sync {
    /// Probes the dependency once.
    fn check(&self) -> CheckFuture<'_>;
}

impl<F, Fut> ReadinessCheck for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(self())
    }
}

/// The outcome of all checks, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every check passed.
    Ready,
    /// Shutdown has begun; checks are not run.
    Draining,
    /// These checks failed, by name, with their reasons.
    NotReady(BTreeMap<String, String>),
}

impl Readiness {
    /// Whether the service should receive traffic.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }
}

/// How long one readiness check may take before it counts as failed. A
/// blackholed Redis must not make `/readyz` hang past the probe's timeout.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type Checks = Vec<(String, Arc<dyn ReadinessCheck>)>;

struct Inner {
    draining: AtomicBool,
    /// A std lock, not a Tokio one: it is held only to clone the list, never
    /// across an `.await`.
    checks: RwLock<Checks>,
    check_timeout: Duration,
}

/// The service's health state, shared by its tasks and its ops endpoints.
/// Cheap to clone: every clone is the same state.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("draining", &self.is_draining())
            .field("checks", &self.check_names())
            .field("check_timeout", &self.inner.check_timeout)
            .finish()
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Ready (no checks), not draining, with [`DEFAULT_CHECK_TIMEOUT`].
    pub fn new() -> Self {
        Self::with_check_timeout(DEFAULT_CHECK_TIMEOUT)
    }

    /// Like [`new`](Self::new) with another per-check timeout.
    pub fn with_check_timeout(check_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner { draining: AtomicBool::new(false), checks: RwLock::new(Vec::new()), check_timeout }),
        }
    }

    /// Adds a readiness check under `name`, replacing any check of that name.
    pub fn register(&self, name: impl Into<String>, check: impl ReadinessCheck + 'static) {
        let name = name.into();
        let mut checks = self.inner.checks.write().unwrap_or_else(PoisonError::into_inner);
        checks.retain(|(existing, _)| *existing != name);
        checks.push((name, Arc::new(check)));
    }

    /// Names of the registered checks, in registration order.
    pub fn check_names(&self) -> Vec<String> {
        self.inner.checks.read().unwrap_or_else(PoisonError::into_inner).iter().map(|(n, _)| n.clone()).collect()
    }

    /// Marks the service as shutting down: from now on `/readyz` answers 503
    /// `{"status":"draining"}`. There is no way back; a draining process exits.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`set_draining`](Self::set_draining) was called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Runs every check (one after the other, each bounded by the check
    /// timeout) unless draining.
    pub async fn readiness(&self) -> Readiness {
        if self.is_draining() {
            return Readiness::Draining;
        }
        let checks: Checks = self.inner.checks.read().unwrap_or_else(PoisonError::into_inner).clone();
        let mut failed = BTreeMap::new();
        for (name, check) in checks {
            let outcome = match tokio::time::timeout(self.inner.check_timeout, check.check()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("timed out after {:?}", self.inner.check_timeout)),
            };
            if let Err(reason) = outcome {
                failed.insert(name, reason);
            }
        }
        // Draining may have begun while the checks ran.
        if self.is_draining() {
            Readiness::Draining
        } else if failed.is_empty() {
            Readiness::Ready
        } else {
            Readiness::NotReady(failed)
        }
    }
}

#[derive(Serialize)]
struct StatusBody<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<&'a BTreeMap<String, String>>,
}

fn json(status: actix_web::http::StatusCode, body: &StatusBody<'_>) -> HttpResponse {
    HttpResponse::build(status).insert_header(CacheControl(vec![CacheDirective::NoStore])).json(body)
}

/// `GET /healthz`.
async fn healthz() -> HttpResponse {
    json(actix_web::http::StatusCode::OK, &StatusBody { status: "ok", failed: None })
}

/// `GET /readyz`.
async fn readyz(health: web::Data<Health>) -> HttpResponse {
    use actix_web::http::StatusCode;
    match health.readiness().await {
        Readiness::Ready => json(StatusCode::OK, &StatusBody { status: "ready", failed: None }),
        Readiness::Draining => json(StatusCode::SERVICE_UNAVAILABLE, &StatusBody { status: "draining", failed: None }),
        Readiness::NotReady(failed) => {
            tracing::warn!(?failed, "not ready");
            json(StatusCode::SERVICE_UNAVAILABLE, &StatusBody { status: "not_ready", failed: Some(&failed) })
        }
    }
}

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
async fn metrics_text(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE))
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(crate::metrics::render(&handle))
}

/// Mounts `GET /healthz`, `GET /readyz` and `GET /metrics` on an actix-web
/// app or scope:
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// use actix_web::{App, HttpServer};
/// let health = pulse_runtime::Health::new();
/// let metrics = pulse_runtime::install_metrics()?;
/// HttpServer::new(move || App::new().configure(pulse_runtime::configure_ops(health.clone(), metrics.clone())))
///     .bind(("127.0.0.1", 0))?
///     .run()
///     .await?;
/// # Ok(()) }
/// ```
///
/// The state travels inside the returned closure and is attached to the
/// three resources only (no catch-all scope), so forgetting it is a compile
/// error rather than a 500, and the service's own routes are unaffected.
pub fn configure_ops(health: Health, metrics: PrometheusHandle) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.service(web::resource("/healthz").route(web::get().to(healthz)))
            .service(web::resource("/readyz").app_data(web::Data::new(health)).route(web::get().to(readyz)))
            .service(web::resource("/metrics").app_data(web::Data::new(metrics)).route(web::get().to(metrics_text)));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use actix_web::http::StatusCode;
    use actix_web::{App, test};
    use serde_json::{Value, json};

    use super::*;

    async fn get(health: &Health, path: &str) -> (StatusCode, String, Option<String>) {
        let metrics = crate::install_metrics().unwrap();
        let app = test::init_service(App::new().configure(configure_ops(health.clone(), metrics))).await;
        let resp = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        let status = resp.status();
        let content_type = resp.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
        let body = test::read_body(resp).await;
        (status, String::from_utf8(body.to_vec()).unwrap(), content_type)
    }

    fn body_json(body: &str) -> Value {
        serde_json::from_str(body).unwrap()
    }

    #[actix_web::test]
    async fn healthz_is_ok_even_when_not_ready() {
        let health = Health::new();
        health.register("broken", || async { Err::<(), _>("down".to_owned()) });
        health.set_draining();
        let (status, body, content_type) = get(&health, "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body_json(&body), json!({"status": "ok"}));
        assert_eq!(content_type.as_deref(), Some("application/json"));
    }

    #[actix_web::test]
    async fn readyz_ready_when_all_checks_pass() {
        let health = Health::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        health.register("redis", move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        });
        let (status, body, _) = get(&health, "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body_json(&body), json!({"status": "ready"}));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the check ran");
    }

    #[actix_web::test]
    async fn readyz_names_the_failing_check() {
        let health = Health::new();
        health.register("memory", || async { Ok(()) });
        health.register("redis", || async { Err::<(), _>("connection refused".to_owned()) });
        let (status, body, _) = get(&health, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_json(&body), json!({"status": "not_ready", "failed": {"redis": "connection refused"}}));
    }

    #[actix_web::test]
    async fn readyz_times_out_a_hanging_check() {
        let health = Health::with_check_timeout(Duration::from_millis(50));
        health.register("slow", std::future::pending::<Result<(), String>>);
        let (status, body, _) = get(&health, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let failed = &body_json(&body)["failed"]["slow"];
        assert!(failed.as_str().unwrap().starts_with("timed out"), "{body}");
    }

    #[actix_web::test]
    async fn readyz_draining_is_503() {
        let health = Health::new();
        health.register("redis", || async { Ok(()) });
        let (status, _, _) = get(&health, "/readyz").await;
        assert_eq!(status, StatusCode::OK);

        health.clone().set_draining();
        assert!(health.is_draining());
        let (status, body, _) = get(&health, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_json(&body), json!({"status": "draining"}));
    }

    #[actix_web::test]
    async fn register_replaces_a_check_of_the_same_name() {
        let health = Health::new();
        health.register("redis", || async { Err::<(), _>("down".to_owned()) });
        health.register("redis", || async { Ok(()) });
        assert_eq!(health.check_names(), vec!["redis"]);
        assert_eq!(health.readiness().await, Readiness::Ready);
    }

    #[actix_web::test]
    async fn metrics_endpoint_shows_recorded_counter() {
        let health = Health::new();
        crate::install_metrics().unwrap();
        metrics::counter!("pulse_runtime_test_ops_requests_total", "route" => "test").increment(7);
        let (status, body, content_type) = get(&health, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(PROMETHEUS_CONTENT_TYPE));
        assert!(body.contains("pulse_runtime_test_ops_requests_total{route=\"test\"} 7"), "{body}");
    }

    #[actix_web::test]
    async fn service_routes_mounted_after_ops_still_answer() {
        let metrics = crate::install_metrics().unwrap();
        let app = test::init_service(
            App::new()
                .configure(configure_ops(Health::new(), metrics))
                .route("/api/thing", web::get().to(|| async { HttpResponse::Ok().body("thing") })),
        )
        .await;
        let resp = test::call_service(&app, test::TestRequest::get().uri("/api/thing").to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(test::read_body(resp).await, "thing");
        let resp = test::call_service(&app, test::TestRequest::get().uri("/nope").to_request()).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
