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
