//! [`serve`]: an actix-web app served with the gateway's WebSocket upgrade.

use std::fmt;
use std::net::TcpListener;
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::{HttpService, Request, Response};
use actix_server::Server;
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, fn_factory, fn_service, map_config,
};
use actix_web::dev::AppConfig;

use crate::gateway::Gateway;
use crate::sessions::SessionThreads;
use crate::upgrade;

/// Serves the app `factory` builds (one per worker) on `listener`, with
/// `gateway` taking the WebSocket upgrades at `/ws` (see
/// [`upgrade`](crate::upgrade)); mount [`configure`](crate::configure) in
/// the app for `/sse`. At most `max_connections` connections per worker.
///
/// Like `actix_web::HttpServer`, with the settings a gateway needs: signals
/// left to the caller (drain first), a deep accept queue, and a closed
/// connection's socket released at once. WebSocket sessions run on threads
/// of their own, not on the HTTP workers (see `sessions`): a burst of
/// fan-out never holds up an HTTP request. `workers` HTTP workers and as
/// many session threads (`http.workers`: one per core unless set).
pub fn serve<F, I, S, B>(
    listener: TcpListener,
    gateway: Gateway,
    factory: F,
    max_connections: usize,
    workers: usize,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let sessions = SessionThreads::start(workers)?;
    let server = Server::build()
        .workers(workers)
        .max_concurrent_connections(max_connections)
        .backlog(4096)
        // Shutdown is ours (drain first), not actix's.
        .disable_signals()
        // After the drain window, connections still open are cut quickly.
        .shutdown_timeout(2)
        .listen("pulse-http", listener, move || {
            let (gateway, sessions) = (gateway.clone(), sessions.clone());
            let app = factory().into_factory().map_err(|err| err.into().error_response());
            let upgrades = fn_factory(move || {
                let (gateway, sessions) = (gateway.clone(), sessions.clone());
                async move {
                    Ok::<_, ()>(fn_service(move |(req, framed)| {
                        upgrade::handle(gateway.clone(), sessions.clone(), req, framed)
                    }))
                }
            });
            HttpService::build()
                // Without this actix keeps a closed connection's socket open
                // for a second (FINDINGS.md).
                .client_disconnect_timeout(Duration::ZERO)
                .local_addr(addr)
                .upgrade(upgrades)
                .finish(map_config(app, |_| AppConfig::default()))
                .tcp()
        })?
        .run();
    Ok(server)
}
