//! The WebSocket upgrade, taken below actix-web's router.
//!
//! actix-http hands every HTTP/1.1 upgrade request, with its socket, to this
//! handler. The gateway then owns the socket and runs the session on it
//! directly (see [`session`](crate::session)): the HTTP connection's 8 KiB
//! read and write buffers are released, so a connection costs its queue and
//! its session state and no more.
//!
//! The checks are those of any connection (draining, `Origin`, attempts per
//! IP, connection limit), answered with an HTTP status and a JSON body; a bad
//! token is refused after the upgrade, with a close code, because a browser
//! cannot see the status of a failed upgrade.

use std::time::Duration;

use actix_codec::{Framed, FramedParts};
use actix_http::ws::{self, CloseCode, CloseReason};
use actix_http::{Request, h1};
use actix_web::http::StatusCode;
use pulse_auth::AuthError;
use pulse_protocol::browser::close;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::auth;
use crate::connection::Connection;
use crate::gateway::Gateway;
use crate::metrics;
use crate::routes::{Rejected, admit};
use crate::session::{self, Unsent};

/// How long writing an answer to the upgrade request may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one upgrade request; the connection ends with it.
pub(crate) async fn handle(
    gw: Gateway,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_web::Error> {
    let FramedParts { io: mut tcp, read_buf: early, write_buf, codec, .. } = framed.into_parts();
    // Events go out as they come, not held back to fill a segment.
    let _ = tcp.set_nodelay(true);
    // The HTTP connection's buffers and codec go now, not with the session.
    drop((write_buf, codec));
    let head = req.head();
    if head.uri.path() != "/ws" {
        let refusal = Refusal::new(StatusCode::NOT_FOUND, "not_found", "only /ws takes an upgrade".into());
        refusal.send(&mut tcp).await;
        return Ok(());
    }
    if let Err(err) = ws::verify_handshake(head) {
        let refusal = Refusal::new(StatusCode::BAD_REQUEST, "bad_request", format!("bad WebSocket handshake: {err}"));
        refusal.send(&mut tcp).await;
        return Ok(());
    }
    let permit = match admit(head, &gw) {
        Ok(permit) => permit,
        Err(rejected) => {
            Refusal::from(&rejected).send(&mut tcp).await;
            return Ok(());
        }
    };
    let inner = &gw.inner;
    let identity = auth::identify(head, inner.verifier.as_ref(), inner.settings.auth.anonymous);
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
            let conn = Connection::new(gw.clone(), "ws", permit, identity);
            // What the client sent after its request is the start of its
            // first frames.
            // A task of its own, so actix-http's per-connection task (some
            // 8 KiB, sized for any HTTP exchange) ends now.
            let session = session::run(conn, tcp, early);
            actix_web::rt::spawn(session);
        }
        Err(err) => {
            metrics::rejected("auth");
            let code = if err == AuthError::Expired { close::TOKEN_EXPIRED } else { close::UNAUTHORIZED };
            let reason = CloseReason { code: CloseCode::from(code), description: Some(err.to_string()) };
            actix_web::rt::spawn(async move {
                session::close_socket(tcp, Unsent::default(), Some(reason), ANSWER_TIMEOUT).await;
                drop(permit);
            });
        }
    }
    Ok(())
}

/// An HTTP answer refusing the upgrade.
struct Refusal {
    status: StatusCode,
    body: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &str, message: String) -> Self {
        Self { status, body: serde_json::json!({"code": code, "message": message}).to_string() }
    }

    /// Writes the answer and closes the connection.
    async fn send(self, tcp: &mut TcpStream) {
        let retry = matches!(self.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS);
        let answer = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{}\r\n{}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.body.len(),
            if retry { "retry-after: 1\r\n" } else { "" },
            self.body,
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
}

impl From<&Rejected> for Refusal {
    fn from(rejected: &Rejected) -> Self {
        use actix_web::ResponseError;
        Self { status: rejected.status_code(), body: rejected.body() }
    }
}
