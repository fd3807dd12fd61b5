//! RFC 6455 on the wire: a raw TCP client that writes its own frames, to
//! check what a library client would never send (unmasked or fragmented
//! frames, bad UTF-8, bytes right behind the upgrade request).

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The answer RFC 6455 §1.3 gives for `KEY`.
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A client frame: masked unless `masked` is false.
fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let bit = if masked { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(bit | payload.len() as u8);
    } else {
        out.push(bit | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects and sends the upgrade request followed by `early` bytes in
    /// the same write; returns the HTTP answer's head.
    async fn open(port: u16, path: &str, early: &[u8]) -> anyhow::Result<(Self, String)> {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut request = upgrade_request(path).into_bytes();
        request.extend_from_slice(early);
        tcp.write_all(&request).await?;
        let mut raw = Self { tcp, buf: Vec::new() };
        let head = within(DEADLINE, raw.read_head()).await?;
        Ok((raw, head))
    }

    async fn read_head(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return Ok(head);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.tcp.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The next server frame: (opcode, payload). Server frames are final
    /// and unmasked.
    async fn next_frame(&mut self) -> anyhow::Result<(u8, Vec<u8>)> {
        within(DEADLINE, async {
            loop {
                if self.buf.len() >= 2 {
                    assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                    let (len, offset) = match self.buf[1] & 0x7f {
                        126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                        127 if self.buf.len() >= 10 => {
                            (u64::from_be_bytes(self.buf[2..10].try_into().expect("8 bytes")) as usize, 10)
                        }
                        126 | 127 => (usize::MAX, 0),
                        n => (n as usize, 2),
                    };
                    if len != usize::MAX && self.buf.len() >= offset + len {
                        let opcode = self.buf[0] & 0x0f;
                        assert_eq!(self.buf[0] & 0x80, 0x80, "server frames are final");
                        let payload = self.buf[offset..offset + len].to_vec();
                        self.buf.drain(..offset + len);
                        return Ok((opcode, payload));
                    }
                }
                self.fill().await?;
            }
        })
        .await
    }

    /// The next text frame, skipping others.
    async fn next_text(&mut self) -> anyhow::Result<String> {
        loop {
            let (opcode, payload) = self.next_frame().await?;
            match opcode {
                0x1 => return Ok(String::from_utf8(payload)?),
                0x8 => bail!("closed: {:?}", close_code(&payload)),
                _ => {}
            }
        }
    }

    /// Reads until the close frame; returns its code.
    async fn close_code(&mut self) -> anyhow::Result<u16> {
        loop {
            let (opcode, payload) = self.next_frame().await?;
            if opcode == 0x8 {
                return close_code(&payload).context("close frame without a code");
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.tcp.write_all(bytes).await?;
        Ok(())
    }
}

fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

async fn within<T>(deadline: Duration, work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(deadline, work).await.context("timed out")?
}

#[tokio::test]
async fn the_upgrade_answers_101_and_frames_sent_with_the_request_are_read() -> anyhow::Result<()> {
    let gw = spawn(settings(), memory_bus()).await?;
    // A ping message sent in the same write as the upgrade request.
    let early = frame(true, 0x1, br#"{"type":"ping","id":"early"}"#, true);
    let (mut raw, head) = Raw::open(gw.port, "/ws", &early).await?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("sec-websocket-accept: {}", ACCEPT.to_ascii_lowercase())));
    assert!(raw.next_text().await?.contains("\"welcome\""));
    let pong = raw.next_text().await?;
    assert!(pong.contains("\"pong\"") && pong.contains("early"), "{pong}");
    Ok(())
}

#[tokio::test]
async fn fragments_are_joined_and_pings_between_them_answered() -> anyhow::Result<()> {
    let gw = spawn(settings(), memory_bus()).await?;
    let (mut raw, _) = Raw::open(gw.port, "/ws", &[]).await?;
    assert!(raw.next_text().await?.contains("\"welcome\""));
    let mut bytes = frame(false, 0x1, br#"{"type":"pi"#, true);
    bytes.extend(frame(true, 0x9, b"are you there", true));
    bytes.extend(frame(false, 0x0, br#"ng","id":"#, true));
    bytes.extend(frame(true, 0x0, br#""joined"}"#, true));
    raw.send(&bytes).await?;
    assert_eq!(raw.next_frame().await?, (0xA, b"are you there".to_vec()), "a pong echoing the ping");
    let pong = raw.next_text().await?;
    assert!(pong.contains("\"pong\"") && pong.contains("joined"), "{pong}");
    Ok(())
}

#[tokio::test]
async fn protocol_violations_close_with_their_codes() -> anyhow::Result<()> {
    let gw = spawn(settings(), memory_bus()).await?;
    let cases: [(&str, Vec<u8>, u16); 4] = [
        ("unmasked frame", frame(true, 0x1, b"{}", false), 1002),
        ("invalid UTF-8", frame(true, 0x1, &[b'"', 0xc3, 0x28, b'"'], true), 1007),
        ("unknown opcode", frame(true, 0x3, b"", true), 1002),
        ("continuation without a start", frame(true, 0x0, b"x", true), 1002),
    ];
    for (what, bytes, code) in cases {
        let (mut raw, _) = Raw::open(gw.port, "/ws", &[]).await?;
        assert!(raw.next_text().await?.contains("\"welcome\""));
        raw.send(&bytes).await?;
        assert_eq!(raw.close_code().await?, code, "{what}");
    }
    Ok(())
}

#[tokio::test]
async fn a_client_close_is_echoed_and_the_connection_ends() -> anyhow::Result<()> {
    let gw = spawn(settings(), memory_bus()).await?;
    let (mut raw, _) = Raw::open(gw.port, "/ws", &[]).await?;
    assert!(raw.next_text().await?.contains("\"welcome\""));
    let mut payload = 4321u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    raw.send(&frame(true, 0x8, &payload, true)).await?;
    assert_eq!(raw.close_code().await?, 4321);
    // The server half-closes after its close frame: the stream ends.
    within(DEADLINE, async {
        let mut rest = Vec::new();
        raw.tcp.read_to_end(&mut rest).await?;
        Ok(())
    })
    .await?;
    pulse_testkit::wait_until("the connection is released", DEADLINE, || async { gw.gateway.stats().connections == 0 })
        .await?;
    Ok(())
}

#[tokio::test]
async fn requests_that_are_not_websocket_upgrades_at_ws_get_json_errors() -> anyhow::Result<()> {
    let gw = spawn(settings(), memory_bus()).await?;
    let http = reqwest::Client::new();
    let plain = http.get(gw.http_url("/ws")).send().await?;
    assert_eq!(plain.status(), 400);
    let body: serde_json::Value = plain.json().await?;
    assert_eq!(body["code"], "bad_request", "{body}");

    let (_, head) = Raw::open(gw.port, "/elsewhere", &[]).await?;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    Ok(())
}

/// The close code of the first close frame among the server frames at the
/// start of `buf`, once it is all there.
fn find_close(buf: &[u8]) -> Option<Option<u16>> {
    let mut at = 0;
    while buf.len() >= at + 2 {
        let (len, offset) = match buf[at + 1] & 0x7f {
            126 => (u16::from_be_bytes(buf.get(at + 2..at + 4)?.try_into().ok()?) as usize, 4),
            127 => (u64::from_be_bytes(buf.get(at + 2..at + 10)?.try_into().ok()?) as usize, 10),
            n => (n as usize, 2),
        };
        let payload = buf.get(at + offset..at + offset + len)?;
        if buf[at] & 0x0f == 0x8 {
            return Some(close_code(payload));
        }
        at += offset + len;
    }
    None
}

/// Before any `auth`, a frame header announcing 2^40 bytes is refused with
/// 1009 from the header alone: the close arrives while the client is still
/// streaming the payload, long before the gateway could have buffered it.
#[tokio::test]
async fn a_huge_announced_frame_is_refused_from_its_header() -> anyhow::Result<()> {
    const STREAM: usize = 64 << 20;
    let mut s = settings();
    s.auth.anonymous = false;
    s.limits.max_frame_size = 16 * 1024;
    let gw = spawn(s, memory_bus()).await?;
    let (mut raw, _) = Raw::open(gw.port, "/ws", &[]).await?;
    assert!(raw.next_text().await?.contains("\"welcome\""));

    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    raw.send(&header).await?;

    let Raw { tcp, mut buf } = raw;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0usize;
    let mut sent_at_close = None;
    let ended = within(DEADLINE, async {
        loop {
            tokio::select! {
                ready = tcp.readable() => {
                    ready?;
                    let mut read = [0u8; 4096];
                    match tcp.try_read(&mut read) {
                        Ok(0) => return Ok(()),
                        Ok(n) => buf.extend_from_slice(&read[..n]),
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                        // A reset after the close frame also ends it.
                        Err(_) if sent_at_close.is_some() => return Ok(()),
                        Err(err) => return Err(err.into()),
                    }
                    if sent_at_close.is_none() && let Some(code) = find_close(&buf) {
                        assert_eq!(code, Some(1009));
                        sent_at_close = Some(sent);
                    }
                }
                ready = tcp.writable(), if sent_at_close.is_none() && sent < STREAM => {
                    ready?;
                    match tcp.try_write(&chunk) {
                        Ok(n) => sent += n,
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(err) => bail!("write failed before the close frame arrived: {err}"),
                    }
                }
            }
        }
    })
    .await;
    let sent_at_close = sent_at_close.context("no close frame")?;
    ended.context("the connection did not end after its close frame")?;
    assert!(sent_at_close < STREAM / 4, "close came after {sent_at_close} of {STREAM} bytes were sent");
    Ok(())
}
