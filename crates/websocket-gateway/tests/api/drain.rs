use pulse_protocol::Position;
use pulse_testkit::RedisServer;

use crate::helpers::*;

#[tokio::test]
async fn clients_of_a_drained_instance_get_1012_and_resume_on_the_other_with_nothing_lost() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut s = settings();
    s.gateway.drain_window = std::time::Duration::from_secs(2);
    let one = spawn(s, redis_bus(&redis).await?).await?;
    let two = spawn(settings(), redis_bus(&redis).await?).await?;
    let ch = channel("alerts");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = one.connect().await?;
        subscribe(&mut client, &ch, None).await?;
        clients.push(client);
    }
    let before = publish(&one.bus, &ch, 10).await?;

    one.shutdown.trigger();
    let readyz = one.http_url("/readyz");
    pulse_testkit::wait_until("readyz reports draining", DEADLINE, || async {
        reqwest::get(&readyz).await.is_ok_and(|r| r.status() == 503)
    })
    .await?;
    let refused = pulse_testkit::WsClient::connect_status(&one.ws_url(""), &[]).await?;
    assert_eq!(refused.err(), Some(503));
    // Events keep flowing while the clients are being closed.
    let during = publish(&two.bus, &ch, 20).await?;

    let mut all: Vec<Position> = before.iter().chain(&during).map(|e| e.id).collect();
    for mut client in clients {
        let (frames, closed) = client.recv_until_closed(DEADLINE).await?;
        assert_eq!(closed.code, Some(1012), "{closed:?}");
        let mut seen: Vec<Position> =
            frames.iter().filter_map(|f| pulse_protocol::Event::from_json(f).ok()).map(|e| e.id).collect();
        let last = *seen.last().expect("some events before the close");
        let mut resumed = two.connect().await?;
        let (replayed, _, recovered) = subscribe(&mut resumed, &ch, Some(last)).await?;
        assert!(recovered);
        seen.extend(ids(&replayed));
        let missing = all.len() - seen.len();
        seen.extend(ids(&recv_events(&mut resumed, missing).await?));
        assert_eq!(seen, all);
    }
    let after = publish(&two.bus, &ch, 1).await?;
    all.push(after[0].id);
    one.stopped.await??;
    Ok(())
}
