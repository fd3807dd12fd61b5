//! HTTP routes: `/sse` (in [`sse`](crate::sse)), the answer to a `/ws`
//! request that is not an upgrade, and the dashboard's static files. The
//! WebSocket upgrade itself is taken below the router, in
//! [`upgrade`](crate::upgrade); the checks both transports share are in
//! [`admission`](crate::admission).

use std::path::Path;

use actix_web::{HttpResponse, web};

use crate::admission::Rejected;
use crate::gateway::Gateway;

/// `GET /ws` without the upgrade headers (upgrades never reach the router).
async fn not_an_upgrade() -> Result<HttpResponse, Rejected> {
    Err(Rejected::BadRequest("expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)".into()))
}

/// Mounts `/sse` (and the answer to a plain `GET /ws`) for `gateway` on an
/// actix-web app. Serve the app with [`serve`](crate::serve), which takes
/// the WebSocket upgrades.
pub fn configure(gateway: Gateway) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg| {
        // CORS for `/sse` from the same list as the `Origin` check.
        let cors = pulse_runtime::cors(&gateway.settings().gateway.allowed_origins);
        cfg.app_data(web::Data::new(gateway))
            .route("/ws", web::get().to(not_an_upgrade))
            .service(web::resource("/sse").wrap(cors).route(web::get().to(crate::sse::sse)));
    }
}

/// Serves the dashboard from `dir` at `/` if the directory exists; mount
/// it last, as it answers every path.
pub fn configure_static(dir: Option<&Path>) -> impl FnOnce(&mut web::ServiceConfig) + Clone + use<> {
    let dir = dir.filter(|d| d.is_dir()).map(Path::to_path_buf);
    move |cfg| {
        if let Some(dir) = dir {
            cfg.service(actix_files::Files::new("/", dir).index_file("index.html"));
        }
    }
}
