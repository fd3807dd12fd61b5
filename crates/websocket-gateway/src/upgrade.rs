//! The WebSocket upgrade, taken below actix-web's router.
//!
//! actix-http hands every HTTP/1.1 upgrade request, with its socket, to this
//! handler. The gateway then owns the socket and runs the session on it
//! directly (see [`session`](crate::session)), on a session thread (see
//! [`sessions`](crate::sessions)): the HTTP connection's 8 KiB
//! read and write buffers are released, so a connection costs its queue and
//! its session state and no more.
//!
//! The checks are those of any connection (draining, `Origin`, attempts per
//! IP, connection limit), answered with an HTTP status and a JSON body; a bad
//! token is refused after the upgrade, with a close code, because a browser
//! cannot see the status of a failed upgrade.

use std::time::Duration;

use actix_codec::{Framed, FramedParts};
use actix_http::ws;
use actix_http::{Request, h1};
use actix_web::ResponseError;
use pulse_auth::AuthError;
use pulse_protocol::browser::close;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::admission::{Rejected, admit};
use crate::auth;
use crate::client::Client;
use crate::core::reason;
use crate::gateway::Gateway;
use crate::metrics;
use crate::session::{self, Unsent};
use crate::sessions::SessionThreads;

/// How long writing an answer to the upgrade request may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one upgrade request; the connection ends with it.
pub(crate) async fn handle(
    gw: Gateway,
    sessions: SessionThreads,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_web::Error> {
    let FramedParts { io: mut tcp, read_buf: early, write_buf, codec, .. } = framed.into_parts();
    // Events go out as they come, not held back to fill a segment.
    let _ = tcp.set_nodelay(true);
    // The HTTP connection's buffers and codec go now, not with the session.
    drop((write_buf, codec));
    let head = req.head();
    if gw.settings().gateway.echo_endpoint && head.uri.path() == "/echo" {
        crate::echo::serve(req, tcp, early).await;
        return Ok(());
    }
    let admitted = if head.uri.path() != "/ws" {
        Err(Rejected::NotFound("only /ws takes an upgrade".into()))
    } else if let Err(err) = ws::verify_handshake(head) {
        Err(Rejected::BadRequest(format!("bad WebSocket handshake: {err}")))
    } else {
        admit(head, &gw)
    };
    let permit = match admitted {
        Ok(permit) => permit,
        Err(rejected) => {
            refuse(&mut tcp, &rejected).await;
            return Ok(());
        }
    };
    let identity = auth::identify(head, gw.verifier(), gw.settings().auth.anonymous);
    let Some(key) = head.headers().get(actix_web::http::header::SEC_WEBSOCKET_KEY) else {
        return Ok(()); // checked by verify_handshake
    };
    let accept = ws::hash_key(key.as_bytes());
    let mut answer = Vec::with_capacity(160);
    answer.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n");
    answer.extend_from_slice(b"sec-websocket-accept: ");
    answer.extend_from_slice(&accept);
    answer.extend_from_slice(b"\r\n\r\n");
    if !matches!(tokio::time::timeout(ANSWER_TIMEOUT, tcp.write_all(&answer)).await, Ok(Ok(()))) {
        return Ok(());
    }
    // The request's headers are not needed any more.
    drop(req);
    match identity {
        Ok(identity) => {
            let client = Client::new(gw.clone(), "ws", permit, identity);
            // On a session thread, so that actix-http's per-connection task
            // (some 8 KiB, sized for any HTTP exchange) ends now, and the
            // fan-out never runs on the HTTP workers. `early`: what the
            // client sent after its request, its first frames.
            if let Err(err) = sessions.run(client, tcp, early) {
                tracing::warn!(error = %err, "cannot hand a WebSocket connection over");
            }
        }
        Err(err) => {
            metrics::rejected("auth");
            let code = if err == AuthError::Expired { close::TOKEN_EXPIRED } else { close::UNAUTHORIZED };
            let reason = reason(code, err.to_string());
            actix_web::rt::spawn(async move {
                session::close_socket(tcp, Unsent::default(), Some(reason), ANSWER_TIMEOUT).await;
                drop(permit);
            });
        }
    }
    Ok(())
}

/// Answers the upgrade request with `rejected` as HTTP (status, JSON body)
/// and closes the connection.
async fn refuse(tcp: &mut TcpStream, rejected: &Rejected) {
    let status = rejected.status_code();
    let body = rejected.body();
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{}\r\n{}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        if rejected.retry_later() { "retry-after: 1\r\n" } else { "" },
        body,
    );
    let sent = async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, sent).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "could not answer an upgrade request"),
        Err(_) => tracing::debug!("timed out answering an upgrade request"),
    }
}
