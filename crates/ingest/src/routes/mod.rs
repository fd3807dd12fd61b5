//! The `/api/v1` routes, one file per resource.

mod decisions;
mod heartbeats;
mod history;
mod publish;
mod read;
mod reports;
mod shared;

pub(crate) use reports::validate as validate_report;

use actix_web::middleware::from_fn;
use actix_web::{Resource, Route, web};

use crate::error::{json_config, method_not_allowed, not_found, query_config};
use crate::observe::observe;
use crate::state::IngestState;

pub use decisions::DecisionAccepted;
pub use heartbeats::{HeartbeatAccepted, HeartbeatRequest};
pub use history::HistoryPage;
pub use publish::{PublishRequest, Published};
pub use read::{AgentsList, AlertsList};
pub use reports::ReportAccepted;

/// The prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";

/// Every route the API serves, as `(method, path)` with OpenAPI-style path
/// parameters. The OpenAPI document must list exactly these (a test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/reports"),
    ("POST", "/api/v1/heartbeats"),
    ("POST", "/api/v1/decisions"),
    ("POST", "/api/v1/publish"),
    ("GET", "/api/v1/agents"),
    ("GET", "/api/v1/agents/{agent_id}"),
    ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/channels/{channel}/history"),
];

/// Mounts the API (`/api/v1/…`) on an app, writing to the bus and store of
/// `state`. The ops endpoints (`/healthz`, `/readyz`, `/metrics`) are not
/// included: a process that mounts several services mounts those once.
///
/// ```no_run
/// # fn demo(state: pulse_ingest::IngestState) {
/// let app = actix_web::App::new().configure(|cfg| pulse_ingest::configure(cfg, state.clone()));
/// # }
/// ```
pub fn configure(cfg: &mut web::ServiceConfig, state: IngestState) {
    // Here, not when the state is built: the metrics recorder is installed
    // by the time an app is configured, and HELP text given before it would
    // be lost.
    crate::observe::describe_metrics();
    let json = json_config(state.settings().max_body_bytes);
    let cors = pulse_runtime::cors(&state.settings().allowed_origins);
    cfg.service(
        web::scope(API_PREFIX)
            .app_data(web::Data::new(state))
            .app_data(json)
            .app_data(query_config())
            .wrap(from_fn(observe))
            // Outermost: a preflight is answered before anything else runs.
            .wrap(cors)
            .service(resource("/reports", "POST", web::post().to(reports::post_report)))
            .service(resource("/heartbeats", "POST", web::post().to(heartbeats::post_heartbeat)))
            .service(resource("/decisions", "POST", web::post().to(decisions::post_decision)))
            .service(resource("/publish", "POST", web::post().to(publish::post_publish)))
            .service(resource("/agents", "GET", web::get().to(read::get_agents)))
            .service(resource("/agents/{agent_id}", "GET", web::get().to(read::get_agent)))
            .service(resource("/alerts", "GET", web::get().to(read::get_alerts)))
            .service(resource("/channels/{channel}/history", "GET", web::get().to(history::get_history)))
            .default_service(web::to(not_found)),
    );
}

/// A resource with one route, answering other methods with a JSON 405 and
/// the `Allow` header naming `method` (RFC 9110, section 15.5.6).
fn resource(path: &str, method: &'static str, route: Route) -> Resource {
    web::resource(path).route(route).default_service(web::to(move |req| method_not_allowed(req, method)))
}
