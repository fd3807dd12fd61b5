use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use pulse_protocol::{ClientMessage, Position};
use pulse_testkit::RedisServer;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_4000_while_a_fast_one_gets_everything() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut s = settings();
    s.gateway.queue_capacity = 64;
    let gw = spawn(s, redis_bus(&redis).await?).await?;
    let ch = channel("firehose");

    // The slow client: a small receive buffer, and it stops reading after
    // subscribing.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(([127, 0, 0, 1], gw.port).into()).await?;
    let (mut slow, _) = tokio_tungstenite::client_async(gw.ws_url(""), stream).await?;
    slow.send(Message::text(ClientMessage::Subscribe { channel: ch.clone(), since: None }.to_json())).await?;
    loop {
        let text = slow.next().await.ok_or_else(|| anyhow::anyhow!("closed"))??;
        if text.to_text().is_ok_and(|t| t.contains("\"subscribed\"")) {
            break;
        }
    }

    let mut fast = gw.connect().await?;
    subscribe(&mut fast, &ch, None).await?;
    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut ids: Vec<Position> = Vec::new();
            loop {
                let event = fast.recv_event(DEADLINE * 3).await?;
                ids.push(event.id);
                received.store(ids.len(), Ordering::Release);
                if event.data.get("last").is_some() {
                    return anyhow::Ok(ids);
                }
            }
        })
    };

    // Publish in batches, each once the fast client has caught up, until
    // the slow one is closed.
    let mut published = Vec::new();
    while gw.gateway.stats().slow_closes == 0 {
        anyhow::ensure!(published.len() < 20_000, "the slow client was never closed");
        published.extend(publish_sized(&gw.bus, &ch, 50, 8_000).await?);
        let target = published.len();
        pulse_testkit::wait_until("the fast client keeps up", DEADLINE, || async {
            received.load(Ordering::Acquire) >= target
        })
        .await?;
    }
    let last = gw
        .bus
        .publish(
            &ch,
            pulse_protocol::EventDraft::new(
                pulse_protocol::EventType::parse("test")?,
                serde_json::json!({"last": true}),
            ),
        )
        .await?;
    published.push(last);
    let got = reader.await??;
    assert_eq!(got, ids(&published), "the fast client received every event, in order");

    // The slow client, reading again, finds its backlog cut short by 4000.
    let mut code = None;
    while let Some(message) = slow.next().await {
        match message {
            Ok(Message::Close(frame)) => {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(4000));
    Ok(())
}
