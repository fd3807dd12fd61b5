use std::time::Duration;

use pulse_protocol::Event;

use crate::helpers::*;

/// Reads SSE frames until `n` events arrived; returns them with the last id.
async fn read_events(response: &mut reqwest::Response, n: usize) -> anyhow::Result<(Vec<Event>, String)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let mut last_id = String::new();
    while events.len() < n {
        let chunk = tokio::time::timeout(DEADLINE, response.chunk())
            .await
            .map_err(|_| anyhow::anyhow!("no SSE data within {DEADLINE:?}"))??
            .ok_or_else(|| anyhow::anyhow!("SSE stream ended"))?;
        buffer.push_str(std::str::from_utf8(&chunk)?);
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(id) = line.strip_prefix("id: ") {
                    last_id = id.to_owned();
                } else if let Some(data) = line.strip_prefix("data: ")
                    && let Ok(event) = Event::from_json(data)
                {
                    events.push(event);
                }
            }
        }
    }
    Ok((events, last_id))
}

#[tokio::test]
async fn sse_streams_events_and_resumes_from_last_event_id() -> anyhow::Result<()> {
    let gw = spawn(settings(), memory_bus()).await?;
    let (a, b) = (channel("alerts"), channel("agents"));
    let client = reqwest::Client::new();
    let mut response = client.get(gw.http_url("/sse?channels=alerts,agents")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    pulse_testkit::wait_until("both channels are live", DEADLINE, || async { gw.gateway.stats().channels == 2 })
        .await?;
    let first = publish(&gw.bus, &a, 2).await?;
    let other = publish(&gw.bus, &b, 1).await?;
    let (events, last_id) = read_events(&mut response, 3).await?;
    assert_eq!(events.len(), 3);
    assert!(last_id.contains(&format!("alerts@{}", first[1].id)), "{last_id}");
    assert!(last_id.contains(&format!("agents@{}", other[0].id)), "{last_id}");
    drop(response);

    let missed = publish(&gw.bus, &a, 3).await?;
    let mut response =
        client.get(gw.http_url("/sse?channels=alerts,agents")).header("Last-Event-ID", &last_id).send().await?;
    let (events, _) = read_events(&mut response, 3).await?;
    assert_eq!(ids(&events), ids(&missed));
    Ok(())
}

#[tokio::test]
async fn sse_auth_and_channel_errors_are_http_errors() -> anyhow::Result<()> {
    let mut s = settings();
    s.auth.anonymous = false;
    let gw = spawn(s, memory_bus()).await?;
    let client = reqwest::Client::new();
    let response = client.get(gw.http_url("/sse?channels=alerts")).send().await?;
    assert_eq!(response.status(), 401);
    let token = token("dave", &["alerts"], Duration::from_secs(60));
    let response = client.get(gw.http_url("/sse?channels=decisions")).bearer_auth(&token).send().await?;
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["code"], "forbidden");
    let response = client.get(gw.http_url("/sse?channels=bad%20name")).bearer_auth(&token).send().await?;
    assert_eq!(response.status(), 400);
    let response = client.get(gw.http_url(&format!("/sse?channels=alerts&token={token}"))).send().await?;
    assert_eq!(response.status(), 200);
    Ok(())
}

/// Opens `/sse?channels=…` on a raw socket with a small receive buffer and
/// reads only the response head: a client that then stops reading.
async fn stalled_sse_client(gw: &TestGateway, channels: &str) -> anyhow::Result<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(([127, 0, 0, 1], gw.port).into()).await?;
    let request =
        format!("GET /sse?channels={channels} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut byte)).await??;
        anyhow::ensure!(n == 1, "the stream ended before its head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(stream)
}

#[tokio::test]
async fn an_sse_client_that_stops_reading_is_closed_like_a_websocket_one() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut s = settings();
    s.gateway.queue_capacity = 64;
    s.gateway.max_connections = 4;
    let gw = spawn(s, memory_bus()).await?;
    let ch = channel("firehose");
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_sse_client(&gw, "firehose").await?);
    }
    pulse_testkit::wait_until("all four are subscribed", DEADLINE, || async { gw.gateway.stats().connections == 4 })
        .await?;
    let full = reqwest::Client::new().get(gw.http_url("/sse?channels=firehose")).send().await?;
    assert_eq!(full.status(), 503, "every slot is taken");
    drop(full);

    // Events they do not read pile up until each is closed as slow.
    let mut published = 0;
    while gw.gateway.stats().slow_closes < 4 {
        anyhow::ensure!(published < 20_000, "the stalled clients were never closed");
        publish_sized(&gw.bus, &ch, 50, 8_000).await?;
        published += 50;
        tokio::task::yield_now().await;
    }
    // Their slots are free: a new client gets in.
    pulse_testkit::wait_until("the slots are freed", DEADLINE, || async { gw.gateway.stats().connections == 0 })
        .await?;
    let mut fresh = reqwest::Client::new().get(gw.http_url("/sse?channels=firehose")).send().await?;
    assert_eq!(fresh.status(), 200);
    let sent = publish(&gw.bus, &ch, 1).await?;
    let (events, _) = read_events(&mut fresh, 1).await?;
    assert_eq!(ids(&events), ids(&sent));

    // A stalled client reading again finds its stream ended.
    let mut buffer = vec![0u8; 64 * 1024];
    let give_up = tokio::time::Instant::now() + DEADLINE * 3;
    loop {
        let n = tokio::time::timeout_at(give_up, stalled[0].read(&mut buffer))
            .await
            .map_err(|_| anyhow::anyhow!("the stream of a client closed as slow did not end"))??;
        if n == 0 {
            break;
        }
    }
    Ok(())
}
