//! `/echo`: a WebSocket endpoint that sends every message back, for
//! conformance suites (Autobahn|Testsuite). It exists only when
//! `gateway.echo_endpoint` is on (never in production), and runs on the
//! session's own parts: the same frame reader ([`Reader`]), frame writer
//! ([`frames::put_frame`]) and close handling ([`session::close_socket`]),
//! so what the suite proves holds for `/ws`.
//!
//! There is no admission (origin, limits, auth): it is a test fixture.

use std::time::Duration;

use actix_http::Request;
use actix_http::ws::{self, CloseCode, CloseReason};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::frames::{self, FrameError, Incoming, Reader};
use crate::session::{self, Unsent};

/// Largest message echoed: the suite's largest is 16 MiB.
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

/// How long a write, or the closing handshake, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Answers the upgrade and echoes until the client closes or errs.
pub(crate) async fn serve(req: Request, mut tcp: TcpStream, early: BytesMut) {
    let head = req.head();
    let Some(key) =
        head.headers().get(actix_web::http::header::SEC_WEBSOCKET_KEY).filter(|_| ws::verify_handshake(head).is_ok())
    else {
        let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        return;
    };
    let mut answer = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n".to_vec();
    answer.extend_from_slice(b"sec-websocket-accept: ");
    answer.extend_from_slice(&ws::hash_key(key.as_bytes()));
    answer.extend_from_slice(b"\r\n\r\n");
    if tcp.write_all(&answer).await.is_err() {
        return;
    }
    drop(req);
    let _ = tcp.set_nodelay(true);
    let mut reader = Reader::new(MAX_MESSAGE).keep_binary(true);
    reader.extend(&early);
    let close = echo(&mut tcp, &mut reader).await;
    drop(reader);
    session::close_socket(tcp, Unsent::default(), close, IO_TIMEOUT).await;
}

/// Echoes messages; returns the close frame to send, `None` when the
/// connection is gone.
async fn echo(tcp: &mut TcpStream, reader: &mut Reader) -> Option<CloseReason> {
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut out = Vec::new();
    loop {
        loop {
            let message = match reader.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(err) => return Some(crate::core::reason(err.close_code(), error_text(&err))),
            };
            out.clear();
            match message {
                Incoming::Text(text) => frames::put_frame(&mut out, frames::OP_TEXT, text.as_bytes()),
                Incoming::Binary => {
                    let data = reader.take_binary().unwrap_or_default();
                    frames::put_frame(&mut out, frames::OP_BINARY, &data);
                }
                Incoming::Ping(payload) => frames::put_frame(&mut out, frames::OP_PONG, &payload),
                Incoming::Pong => continue,
                // Echo the client's code (RFC 6455 §5.5.1).
                Incoming::Close(None) => return Some(CloseReason::from(CloseCode::Normal)),
                Incoming::Close(Some(theirs)) => {
                    return Some(if frames::valid_close_code(u16::from(theirs.code)) {
                        CloseReason::from(theirs.code)
                    } else {
                        crate::core::reason(1002, "invalid close code")
                    });
                }
            }
            match tokio::time::timeout(IO_TIMEOUT, tcp.write_all(&out)).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => reader.extend(&chunk[..n]),
        }
    }
}

fn error_text(err: &FrameError) -> String {
    err.to_string()
}
