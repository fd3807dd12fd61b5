use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use pulse_protocol::{ClientMessage, ControlMessage, Event, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A real WebSocket client speaking the browser protocol.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub code: Option<u16>,
    pub reason: String,
}

impl WsClient {
    /// Connects to `url` (`ws://127.0.0.1:PORT/ws?...`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, &[]).await
    }

    /// Connects with extra request headers (`Origin`, `Authorization`).
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        let (stream, _) =
            tokio_tungstenite::connect_async(request).await.with_context(|| format!("connecting to {url}"))?;
        Ok(Self { stream })
    }

    /// Connects and returns the HTTP error status if the upgrade is refused.
    pub async fn connect_status(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Result<Self, u16>> {
        match Self::connect_with(url, headers).await {
            Ok(client) => Ok(Ok(client)),
            Err(err) => match err.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
                Some(tokio_tungstenite::tungstenite::Error::Http(response)) => Ok(Err(response.status().as_u16())),
                _ => Err(err),
            },
        }
    }

    pub async fn send(&mut self, message: &ClientMessage) -> anyhow::Result<()> {
        self.send_text(&message.to_json()).await
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.stream.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, message: Message) -> anyhow::Result<()> {
        self.stream.send(message).await?;
        Ok(())
    }

    /// The next text frame, parsed; pings are answered and skipped.
    pub async fn recv(&mut self, deadline: Duration) -> anyhow::Result<ServerFrame> {
        let text = self.recv_text(deadline).await?;
        ServerFrame::parse(&text).with_context(|| format!("unparseable frame {text}"))
    }

    /// The next text frame as sent.
    pub async fn recv_text(&mut self, deadline: Duration) -> anyhow::Result<String> {
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            let next = tokio::time::timeout_at(give_up, self.stream.next())
                .await
                .map_err(|_| anyhow::anyhow!("no frame within {deadline:?}"))?;
            match next {
                Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
                Some(Ok(Message::Ping(payload))) => self.stream.send(Message::Pong(payload)).await?,
                Some(Ok(Message::Close(frame))) => bail!("connection closed: {}", describe(frame.as_ref())),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.into()),
                None => bail!("connection ended"),
            }
        }
    }

    /// The next frame, which must be an event.
    pub async fn recv_event(&mut self, deadline: Duration) -> anyhow::Result<Event> {
        match self.recv(deadline).await? {
            ServerFrame::Event(event) => Ok(event),
            ServerFrame::Control(control) => bail!("expected an event, got {control:?}"),
        }
    }

    /// The next control message.
    pub async fn recv_control(&mut self, deadline: Duration) -> anyhow::Result<ControlMessage> {
        match self.recv(deadline).await? {
            ServerFrame::Control(control) => Ok(control),
            ServerFrame::Event(event) => bail!("expected a control message, got event {event:?}"),
        }
    }

    /// Reads until the server closes the connection; returns its close frame.
    /// Frames received before the close are returned too.
    pub async fn recv_until_closed(&mut self, deadline: Duration) -> anyhow::Result<(Vec<String>, Closed)> {
        let give_up = tokio::time::Instant::now() + deadline;
        let mut frames = Vec::new();
        loop {
            let next = tokio::time::timeout_at(give_up, self.stream.next())
                .await
                .map_err(|_| anyhow::anyhow!("not closed within {deadline:?}"))?;
            match next {
                Some(Ok(Message::Text(text))) => frames.push(text.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    let closed = Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.as_ref().map(|f| f.reason.to_string()).unwrap_or_default(),
                    };
                    return Ok((frames, closed));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ok((frames, Closed { code: None, reason: "connection dropped".into() })),
            }
        }
    }

    /// Sends a WebSocket ping with `payload`.
    pub async fn ping(&mut self, payload: &'static [u8]) -> anyhow::Result<()> {
        self.stream.send(Message::Ping(Bytes::from_static(payload))).await?;
        Ok(())
    }

    pub async fn close(mut self) -> anyhow::Result<()> {
        self.stream.close(None).await.ok();
        Ok(())
    }

    /// The underlying stream, for tests that need raw control.
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.stream
    }
}

fn describe(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) => format!("code {} {:?}", u16::from(frame.code), frame.reason.as_str()),
        None => "without a close frame".into(),
    }
}
