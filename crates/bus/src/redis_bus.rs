//! The Redis bus: streams for history, pub/sub for live delivery.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Pool, Runtime};
use futures_util::StreamExt;
use pulse_protocol::{Channel, Event, EventDraft, Offset};
use redis::AsyncCommands;
use tokio::sync::{mpsc, oneshot};

use crate::redis_lua::{self, Keys};
use crate::router::Router;
use crate::subscription::Backend;
use crate::{Bus, BusError, History, Subscription, backoff};

/// Settings of the Redis bus.
#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    /// `redis://host:port/db`
    pub url: String,
    /// Prefix of every key and channel name (default `pulse:`).
    pub prefix: String,
    /// Events kept per channel for resume and the history API.
    pub history_len: usize,
    /// Pooled connections for publishing and reads.
    pub pool_size: usize,
}

impl Default for RedisBusConfig {
    fn default() -> Self {
        Self { url: "redis://127.0.0.1:6379/".into(), prefix: "pulse:".into(), history_len: 10_000, pool_size: 16 }
    }
}

/// How long a request waits for a pooled connection or for Redis to answer
/// before it fails with [`BusError::Unavailable`]: services answer 503
/// quickly instead of hanging while Redis is away.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The bus on Redis. Cheap to clone; all clones share one connection pool
/// and one pub/sub connection.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    keys: Keys,
    history_len: usize,
    router: Arc<Router>,
    publish: redis::Script,
    history: redis::Script,
    /// Requests to the task that owns the pub/sub connection.
    listener: mpsc::UnboundedSender<Converge>,
}

/// Asks the pub/sub task to make Redis subscriptions match local demand for
/// `channel`, answering on `done` once it does.
struct Converge {
    channel: Channel,
    done: Option<oneshot::Sender<Result<(), BusError>>>,
}

impl RedisBus {
    /// Connects, verifying that Redis answers. The pub/sub connection is
    /// opened in the background and kept open (reconnecting) until the last
    /// clone of the bus is dropped.
    pub async fn connect(config: RedisBusConfig) -> Result<Self, BusError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| BusError::Unavailable(format!("invalid redis url {:?}: {e}", config.url)))?;
        let mut pool_config = deadpool_redis::Config::from_url(config.url.as_str());
        let mut pool_settings = deadpool_redis::PoolConfig::new(config.pool_size.max(1));
        pool_settings.timeouts.wait = Some(REQUEST_TIMEOUT);
        pool_settings.timeouts.create = Some(REQUEST_TIMEOUT);
        pool_settings.timeouts.recycle = Some(REQUEST_TIMEOUT);
        pool_config.pool = Some(pool_settings);
        let pool = pool_config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| BusError::Unavailable(format!("cannot create redis pool: {e}")))?;

        let (listener, requests) = mpsc::unbounded_channel();
        let keys = Keys::new(config.prefix.clone());
        let router = Arc::<Router>::default();
        let bus = Self {
            inner: Arc::new(Inner {
                pool,
                keys: keys.clone(),
                history_len: config.history_len.max(1),
                router: router.clone(),
                publish: redis_lua::publish_script(),
                history: redis_lua::history_script(),
                listener,
            }),
        };
        bus.check().await?;
        tokio::spawn(listen(client, keys, router, requests));
        Ok(bus)
    }

    /// The connection pool, for other crates' scripts (see [`redis_lua`]).
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn history_len(&self) -> usize {
        self.inner.history_len
    }
}

impl Inner {
    async fn conn(&self) -> Result<deadpool_redis::Connection, BusError> {
        Ok(self.pool.get().await?)
    }
}

/// Parses a stream entry or live message back into an event.
fn decode(channel: &Channel, id: &str, draft_json: &str) -> Result<Event, BusError> {
    let corrupt = |reason: String| BusError::Corrupt { channel: channel.to_string(), reason };
    let id = Offset::from_str(id).map_err(|e| corrupt(e.to_string()))?;
    let draft: EventDraft = serde_json::from_str(draft_json).map_err(|e| corrupt(format!("event {id}: {e}")))?;
    Ok(draft.into_event(channel.clone(), id))
}

/// A stream entry as XRANGE returns it: id and flat field/value list.
type Entry = (String, Vec<String>);

fn decode_entry(channel: &Channel, (id, fields): Entry) -> Result<Event, BusError> {
    let payload =
        fields.chunks(2).find(|pair| pair.first().is_some_and(|f| f == "e")).and_then(|pair| pair.get(1)).ok_or_else(
            || BusError::Corrupt { channel: channel.to_string(), reason: format!("entry {id} has no event field") },
        )?;
    decode(channel, &id, payload)
}

async fn with_timeout<T>(future: impl Future<Output = Result<T, BusError>>) -> Result<T, BusError> {
    tokio::time::timeout(REQUEST_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| Err(BusError::Unavailable(format!("redis did not answer within {REQUEST_TIMEOUT:?}"))))
}

#[async_trait]
impl Backend for Inner {
    async fn history(&self, channel: &Channel, after: Offset, limit: usize) -> Result<History, BusError> {
        with_timeout(async {
            let mut conn = self.conn().await?;
            let (max_deleted, entries): (String, Vec<Entry>) = self
                .history
                .key(self.keys.hist(channel))
                .arg(after.to_string())
                .arg(limit.max(1))
                .invoke_async(&mut conn)
                .await?;
            let max_deleted = Offset::from_str(&max_deleted)
                .map_err(|e| BusError::Corrupt { channel: channel.to_string(), reason: e.to_string() })?;
            let events = entries.into_iter().map(|entry| decode_entry(channel, entry)).collect::<Result<_, _>>()?;
            Ok(History { events, truncated: after < max_deleted })
        })
        .await
    }

    async fn head(&self, channel: &Channel) -> Result<Offset, BusError> {
        with_timeout(async {
            let mut conn = self.conn().await?;
            let newest: Vec<Entry> = redis::cmd("XREVRANGE")
                .arg(self.keys.hist(channel))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            match newest.into_iter().next() {
                Some((id, _)) => Offset::from_str(&id)
                    .map_err(|e| BusError::Corrupt { channel: channel.to_string(), reason: e.to_string() }),
                None => Ok(Offset::ZERO),
            }
        })
        .await
    }

    async fn listen(&self, channel: &Channel) -> Result<(), BusError> {
        let (done, answer) = oneshot::channel();
        self.listener.send(Converge { channel: channel.clone(), done: Some(done) }).map_err(|_| BusError::Closed)?;
        with_timeout(async { answer.await.map_err(|_| BusError::Closed)? }).await
    }

    fn release(&self, channel: &Channel) {
        // Nothing waits for the answer; if the task is gone there is nothing
        // to release.
        let _ = self.listener.send(Converge { channel: channel.clone(), done: None });
    }

    fn router(&self) -> &Arc<Router> {
        &self.router
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, channel: &Channel, draft: EventDraft) -> Result<Event, BusError> {
        let inner = &self.inner;
        let draft_json = redis_lua::encode_draft(&draft);
        let id: String = with_timeout(async {
            let mut conn = inner.conn().await?;
            Ok(inner
                .publish
                .key(inner.keys.hist(channel))
                .key(inner.keys.live(channel))
                .arg(inner.history_len)
                .arg(&draft_json)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        let id = Offset::from_str(&id)
            .map_err(|e| BusError::Corrupt { channel: channel.to_string(), reason: e.to_string() })?;
        Ok(draft.into_event(channel.clone(), id))
    }

    async fn history(&self, channel: &Channel, after: Offset, limit: usize) -> Result<History, BusError> {
        Backend::history(&*self.inner, channel, after, limit).await
    }

    async fn latest(&self, channel: &Channel, limit: usize) -> Result<Vec<Event>, BusError> {
        let inner = &self.inner;
        with_timeout(async {
            let mut conn = inner.conn().await?;
            let newest: Vec<Entry> = redis::cmd("XREVRANGE")
                .arg(inner.keys.hist(channel))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(limit.max(1))
                .query_async(&mut conn)
                .await?;
            newest.into_iter().rev().map(|entry| decode_entry(channel, entry)).collect()
        })
        .await
    }

    async fn head(&self, channel: &Channel) -> Result<Offset, BusError> {
        Backend::head(&*self.inner, channel).await
    }

    fn subscription(&self) -> Subscription {
        Subscription::new(self.inner.clone())
    }

    async fn check(&self) -> Result<(), BusError> {
        with_timeout(async {
            let mut conn = self.inner.conn().await?;
            let _: String = conn.ping().await?;
            Ok(())
        })
        .await
    }
}

/// Owns the process's one pub/sub connection: subscribes channels while
/// local subscriptions want them, hands live messages to the router, and
/// reconnects with backoff when the connection drops. After a reconnection
/// every subscription fills what it missed from history.
async fn listen(
    client: redis::Client,
    keys: Keys,
    router: Arc<Router>,
    mut requests: mpsc::UnboundedReceiver<Converge>,
) {
    let mut failures: u32 = 0;
    let mut connected_before = false;
    loop {
        let (mut sink, mut stream) = match connect(&client, &keys, &router).await {
            Ok(parts) => parts,
            Err(err) => {
                if failures == 0 {
                    tracing::warn!(error = %err, "redis pub/sub connection lost; reconnecting with backoff");
                }
                failures = failures.saturating_add(1);
                // Meanwhile, answer requests at once instead of letting them hang.
                let retry = tokio::time::sleep(backoff::delay(failures));
                tokio::pin!(retry);
                loop {
                    tokio::select! {
                        () = &mut retry => break,
                        request = requests.recv() => match request {
                            Some(request) => answer(request, Err(BusError::Unavailable(err.to_string()))),
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        let mut subscribed: HashSet<Channel> = router.channels().into_iter().collect();
        if connected_before {
            tracing::info!(channels = subscribed.len(), "redis pub/sub reconnected; filling gaps from history");
            router.mark_all_lagged();
        }
        connected_before = true;

        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    deliver(&keys, &router, &message);
                }
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    let wanted = router.wants(&request.channel);
                    let result = if wanted && !subscribed.contains(&request.channel) {
                        sink.subscribe(keys.live(&request.channel)).await.map(|()| {
                            subscribed.insert(request.channel.clone());
                        })
                    } else if !wanted && subscribed.contains(&request.channel) {
                        sink.unsubscribe(keys.live(&request.channel)).await.map(|()| {
                            subscribed.remove(&request.channel);
                        })
                    } else {
                        Ok(())
                    };
                    let failed = result.is_err();
                    answer(request, result.map_err(BusError::from));
                    if failed {
                        break;
                    }
                }
            }
        }
        tracing::warn!("redis pub/sub connection lost; reconnecting with backoff");
        // Already logged: the first failed reconnection stays quiet.
        failures = 1;
    }
}

async fn connect(
    client: &redis::Client,
    keys: &Keys,
    router: &Router,
) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), BusError> {
    let pubsub = tokio::time::timeout(REQUEST_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| BusError::Unavailable("timed out connecting to redis".into()))??;
    let (mut sink, stream) = pubsub.split();
    let channels: Vec<String> = router.channels().iter().map(|c| keys.live(c)).collect();
    if !channels.is_empty() {
        sink.subscribe(channels).await?;
    }
    Ok((sink, stream))
}

fn answer(request: Converge, result: Result<(), BusError>) {
    if let Some(done) = request.done {
        // The requester may have given up waiting; nothing to do then.
        let _ = done.send(result);
    }
}

fn deliver(keys: &Keys, router: &Router, message: &redis::Msg) {
    let Some(channel) = keys.channel_of_live(message.get_channel_name()) else {
        tracing::warn!(channel = message.get_channel_name(), "live message on an unexpected channel");
        return;
    };
    let payload = message.get_payload_bytes();
    let decoded = std::str::from_utf8(payload)
        .ok()
        .and_then(|text| text.split_once(' '))
        .ok_or_else(|| BusError::Corrupt {
            channel: channel.to_string(),
            reason: "live message is not `<id> <json>`".into(),
        })
        .and_then(|(id, json)| decode(&channel, id, json));
    match decoded {
        Ok(event) => router.dispatch(Arc::new(event)),
        Err(err) => tracing::warn!(error = %err, "dropping a malformed live message"),
    }
}
