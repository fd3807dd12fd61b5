use std::time::Duration;

use pulse_protocol::{ClientMessage, Event};
use pulse_testkit::{RedisServer, WsClient};

use crate::helpers::*;

/// Reads events until one from another instance matches `done`.
async fn until_presence(client: &mut WsClient, done: impl Fn(&Event) -> bool) -> anyhow::Result<Event> {
    loop {
        let event = client.recv_event(DEADLINE).await?;
        if event.event_type.as_str() == "presence_update" && done(&event) {
            return Ok(event);
        }
    }
}

#[tokio::test]
async fn presence_is_announced_across_instances() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut s = settings();
    s.auth.anonymous = false;
    s.presence.channels = vec![pulse_protocol::ChannelPattern::parse("room:*")?];
    let one = spawn(s.clone(), redis_bus(&redis).await?).await?;
    let two = spawn(s, redis_bus(&redis).await?).await?;
    let room = channel("room:1");
    let alice = token("alice", &["room:*"], Duration::from_secs(300));
    let bob = token("bob", &["room:*"], Duration::from_secs(300));

    let mut a = one.connect_with(&format!("?token={alice}"), &[]).await?;
    subscribe(&mut a, &room, None).await?;
    let mut b = two.connect_with(&format!("?token={bob}"), &[]).await?;
    subscribe(&mut b, &room, None).await?;

    // Alice, on instance one, hears of Bob on instance two.
    let joined = until_presence(&mut a, |e| e.data["members"] == serde_json::json!(["bob"])).await?;
    let instance = joined.data["instance"].clone();
    assert_eq!(joined.data["count"], 1);
    // Bob leaves: instance two announces an empty list.
    b.send(&ClientMessage::Unsubscribe { channel: room.clone() }).await?;
    until_presence(&mut a, |e| e.data["instance"] == instance && e.data["count"] == 0).await?;
    Ok(())
}

/// `work` within [`DEADLINE`]: presence refreshes keep updates coming, so
/// a member list never seen must still fail in time.
async fn within<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(DEADLINE, work).await?
}

/// A connection that changes token (an account switch) shows its new
/// identity, and leaves with it: no one stays listed after leaving.
#[tokio::test]
async fn presence_follows_a_token_switch_and_leaves_with_the_identity_it_shows() -> anyhow::Result<()> {
    let mut s = settings();
    s.auth.anonymous = false;
    s.presence.channels = vec![pulse_protocol::ChannelPattern::parse("room:*")?];
    let gw = spawn(s, memory_bus()).await?;
    let room = channel("room:1");
    let members = |names: &[&str]| serde_json::json!(names);

    let carol = token("carol", &["room:*"], Duration::from_secs(300));
    let mut observer = gw.connect_with(&format!("?token={carol}"), &[]).await?;
    subscribe(&mut observer, &room, None).await?;
    let alice = token("alice", &["room:*"], Duration::from_secs(300));
    let mut switcher = gw.connect_with(&format!("?token={alice}"), &[]).await?;
    subscribe(&mut switcher, &room, None).await?;
    within(until_presence(&mut observer, |e| e.data["members"] == members(&["alice", "carol"]))).await?;

    switcher.send(&ClientMessage::Auth { token: token("bob", &["room:*"], Duration::from_secs(300)) }).await?;
    within(until_presence(&mut observer, |e| e.data["members"] == members(&["bob", "carol"]))).await?;
    switcher.send(&ClientMessage::Unsubscribe { channel: room.clone() }).await?;
    let left = within(until_presence(&mut observer, |e| e.data["members"] == members(&["carol"]))).await?;
    assert_eq!(left.data["count"], 1);
    Ok(())
}
