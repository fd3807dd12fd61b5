//! The Redis bus: streams for history, pub/sub for live delivery.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Pool, Runtime};
use pulse_protocol::{Channel, Epoch, Event, EventDraft, Offset, Position};
use tokio::sync::{mpsc, oneshot};

use crate::connection::{Deployment, RedisConnection};
use crate::link::{self, Link, LinkState};
use crate::redis_lua::{self, Keys};
use crate::router::Router;
use crate::subscription::Backend;
use crate::{Bus, BusError, History, Publication, Subscription, backoff, continuous};

/// The settings [`RedisBus::connect`] takes: the `[redis]` block itself,
/// under the name this crate used before the block moved here.
pub type RedisBusConfig = crate::RedisSettings;

/// Awaits a request sent on `conn` within the bus's `request_timeout`,
/// through [`deadline::within`](crate::deadline::within), the one deadline
/// of every Redis call.
///
/// A request that was sent but not answered (in time, or at all) may still
/// be carried out later: Redis holds the writes of paused clients, as in a
/// managed failover, and runs them when the pause ends. Its connection is
/// therefore discarded, never handed to the next caller, and the error is
/// [`BusError::OutcomeUnknown`]. The same holds when the caller gives up
/// (the future is dropped): see [`InFlight`].
macro_rules! within_deadline {
    ($inner:expr, $op:expr, $conn:ident, $request:expr) => {{
        let mut $conn = InFlight(Some($conn));
        let result = match crate::deadline::within($inner.request_timeout, $request).await {
            Ok(value) => {
                $conn.answered();
                Ok(value)
            }
            Err(err) => {
                if err.connection_usable() {
                    $conn.answered();
                }
                Err(BusError::from(err))
            }
        };
        if result.is_err() {
            link::count_error($op);
        }
        result
    }};
}

/// A connection with a request in flight. Unless the request was
/// answered, dropping it closes a pooled connection instead of returning it
/// to the pool, where the next caller would read the late answer, or have
/// its own command run after the unanswered one. (A cluster connection is
/// one multiplexed connection per node, shared like the store's: it is
/// kept, and replaced by redis-rs when it fails.)
struct InFlight(Option<Lease>);

/// A connection lent to one request.
enum Lease {
    /// From the pool of a single Redis server.
    Pooled(deadpool_redis::Connection),
    /// The bus's cluster connection.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Lease {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Pooled(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Pooled(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Pooled(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl InFlight {
    /// The request was answered: the connection may serve the next one.
    fn answered(&mut self) {
        self.0.take();
    }
}

impl std::ops::Deref for InFlight {
    type Target = Lease;

    fn deref(&self) -> &Self::Target {
        // Only `answered` takes it, after the last use.
        self.0.as_ref().unwrap_or_else(|| unreachable!("connection used after its answer"))
    }
}

impl std::ops::DerefMut for InFlight {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.as_mut().unwrap_or_else(|| unreachable!("connection used after its answer"))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(Lease::Pooled(conn)) = self.0.take() {
            drop(deadpool_redis::Connection::take(conn));
        }
    }
}

/// A connection on which a command can be sent to the master of a hash
/// slot: on a cluster, routed there; on a single server, the connection
/// itself.
trait MasterRoute: redis::aio::ConnectionLike + Send {
    fn cluster(&mut self) -> Option<&mut redis::cluster_async::ClusterConnection>;
}

impl MasterRoute for Lease {
    fn cluster(&mut self) -> Option<&mut redis::cluster_async::ClusterConnection> {
        match self {
            Self::Cluster(conn) => Some(conn),
            Self::Pooled(_) => None,
        }
    }
}

impl MasterRoute for RedisConnection {
    fn cluster(&mut self) -> Option<&mut redis::cluster_async::ClusterConnection> {
        match self {
            Self::Cluster(conn) => Some(conn),
            Self::Node(_) => None,
        }
    }
}

/// Runs `cmd` on `conn`; on a cluster, on the master of `slot`.
async fn on_master<C: MasterRoute, T: redis::FromRedisValue>(
    conn: &mut C,
    slot: u16,
    cmd: redis::Cmd,
) -> redis::RedisResult<T> {
    match conn.cluster() {
        Some(cluster) => {
            use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
            let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
            Ok(redis::from_redis_value(cluster.route_command(cmd, RoutingInfo::SingleNode(route)).await?)?)
        }
        None => cmd.query_async(conn).await,
    }
}

/// Where requests go: a pool of connections to one server, or one cluster
/// connection (multiplexed per node, following the cluster's topology).
enum Commands {
    Pool(Pool),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// The bus on Redis (one server or a Redis Cluster). Cheap to clone; all
/// clones share one connection pool (on a cluster: one cluster connection)
/// and one pub/sub connection.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    commands: Commands,
    /// For connections outside the pool ([`RedisBus::open_connection`]).
    deployment: Deployment,
    keys: Keys,
    /// The deadline of every request (`redis.request_timeout`).
    request_timeout: Duration,
    /// Replicas a publish waits for (`redis.replicas_to_ack`, resolved).
    replicas_to_ack: usize,
    /// Replicas connected to the master of each hash slot a publish went
    /// to (one entry, slot 0, on a single server), and when that was read:
    /// see [`Inner::replicated`].
    replicas: std::sync::Mutex<std::collections::HashMap<u16, (tokio::time::Instant, usize)>>,
    /// This process's `history_len` setting.
    configured_history_len: usize,
    /// What publishes trim to: the largest `history_len` any live process
    /// claims (see [`HISTORY_LEN_CLAIM_TTL`]).
    history_len: AtomicUsize,
    history_len_claim: String,
    history_len_script: redis::Script,
    router: Arc<Router>,
    publish: redis::Script,
    publish_once: redis::Script,
    history: redis::Script,
    latest: redis::Script,
    head: redis::Script,
    /// The pub/sub link's state, kept by its task.
    link: Arc<Link>,
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
    /// Connects, verifying that Redis answers: one server, or a Redis
    /// Cluster (`redis.url` names one node or several; a cluster is
    /// detected with `INFO cluster`, and every node it lists becomes a seed
    /// of later connections). The pub/sub connection is opened in the
    /// background and kept open (reconnecting) until the last clone of the
    /// bus is dropped.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when no node answers within
    /// `redis.request_timeout`, or the URL is invalid.
    pub async fn connect(config: RedisBusConfig) -> Result<Self, BusError> {
        let request_timeout = config.request_timeout.max(Duration::from_millis(1));
        let deployment = Deployment::detect(&config.url, request_timeout).await?;
        let commands = match &deployment {
            Deployment::Node(_) => {
                let mut pool_config = deadpool_redis::Config::from_url(config.url.trim());
                let mut pool_settings = deadpool_redis::PoolConfig::new(config.pool_size.max(1));
                pool_settings.timeouts.wait = Some(request_timeout);
                pool_settings.timeouts.create = Some(request_timeout);
                pool_settings.timeouts.recycle = Some(request_timeout);
                pool_config.pool = Some(pool_settings);
                Commands::Pool(
                    pool_config
                        .create_pool(Some(Runtime::Tokio1))
                        .map_err(|e| BusError::Unavailable(format!("cannot create redis pool: {e}").into()))?,
                )
            }
            Deployment::Cluster { seeds } => {
                Commands::Cluster(crate::connection::connect_cluster(seeds, request_timeout).await?)
            }
        };
        let replicas_to_ack = config.replicas_to_ack.unwrap_or(if deployment.is_cluster() { 1 } else { 0 });

        let (listener, requests) = mpsc::unbounded_channel();
        let keys = Keys::new(config.prefix.clone());
        let router = Arc::<Router>::default();
        let link = Arc::new(Link::new());
        let bus = Self {
            inner: Arc::new(Inner {
                commands,
                deployment: deployment.clone(),
                replicas_to_ack,
                replicas: std::sync::Mutex::default(),
                keys: keys.clone(),
                request_timeout,
                configured_history_len: config.history_len.max(1),
                history_len: AtomicUsize::new(config.history_len.max(1)),
                history_len_claim: format!("{}:{:016x}", config.history_len.max(1), rand::random::<u64>()),
                history_len_script: redis_lua::history_len_script(),
                router: router.clone(),
                publish: redis_lua::publish_script(),
                publish_once: redis_lua::publish_once_script(),
                history: redis_lua::history_script(),
                latest: redis_lua::latest_script(),
                head: redis_lua::head_script(),
                link: link.clone(),
                listener,
            }),
        };
        bus.inner.claim_history_len().await?;
        tokio::spawn(renew_history_len_claim(Arc::downgrade(&bus.inner)));
        let pubsub = PubSubLink {
            deployment,
            keys,
            router,
            link: link.clone(),
            ping_interval: config.ping_interval.max(Duration::from_millis(10)),
            ping_timeout: config.ping_timeout.max(Duration::from_millis(10)),
            request_timeout,
        };
        tokio::spawn(pubsub.run(requests));
        // Ready means live events can arrive too: wait for the pub/sub link.
        if !link.wait_up(request_timeout).await {
            return Err(BusError::Unavailable(
                format!("the redis pub/sub connection did not come up within {request_timeout:?}").into(),
            ));
        }
        Ok(bus)
    }

    /// A new connection to the bus's Redis for commands and scripts, outside
    /// the bus's own: on a single server a multiplexed connection, on a
    /// cluster a cluster connection. It is driven by a task on the calling
    /// thread's runtime: a thread that keeps one for itself sends commands
    /// and receives answers without waking another thread (each actix
    /// worker runs its own runtime).
    ///
    /// # Errors
    ///
    /// [`BusError::Unavailable`] when Redis does not answer within
    /// `redis.request_timeout`.
    pub async fn open_connection(&self) -> Result<RedisConnection, BusError> {
        self.inner.deployment.connect(self.inner.request_timeout).await
    }

    /// Waits, as a publish of the bus does (`redis.replicas_to_ack`), until
    /// replicas have every write sent on `conn` so far: for another crate's
    /// script that publishes (see [`redis_lua`]). On a cluster the wait
    /// runs on the master of `key`'s slot (pass a key the script wrote).
    ///
    /// # Errors
    /// [`BusError::OutcomeUnknown`] when fewer replicas confirmed in time
    /// (the writes are done, but a failover may lose them); as any request
    /// when Redis does not answer within `redis.request_timeout`.
    pub async fn wait_replicas(&self, conn: &mut RedisConnection, key: &str) -> Result<(), BusError> {
        let short = crate::deadline::within(self.inner.request_timeout, self.inner.wait_replicas(conn, key))
            .await
            .map_err(BusError::from)?;
        self.inner.check_replicated(short)
    }

    /// Whether writes wait for replicas (`redis.replicas_to_ack` above 0):
    /// when not, [`wait_replicas`](Self::wait_replicas) returns at once.
    pub fn waits_for_replicas(&self) -> bool {
        self.inner.replicas_to_ack > 0
    }

    /// Whether the bus runs on a Redis Cluster (detected on connect).
    pub fn is_cluster(&self) -> bool {
        self.inner.deployment.is_cluster()
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The deadline of every request (`redis.request_timeout`), for other
    /// crates' calls on [`open_connection`](Self::open_connection)
    /// connections (see
    /// [`deadline::within`](crate::deadline::within)).
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// Events kept per channel: the largest `redis.history_len` claimed by
    /// a live Pulse process, so that whoever publishes (each publisher trims
    /// the shared history), a channel keeps the same history.
    pub fn history_len(&self) -> usize {
        self.inner.history_len.load(Ordering::Relaxed)
    }
}

/// How long the number of replicas connected to a master is taken as known
/// (see [`Inner::replicated`]).
const REPLICAS_REFRESH: Duration = Duration::from_secs(1);

/// How long a process's `history_len` claim counts without renewal; it is
/// renewed every third of that.
const HISTORY_LEN_CLAIM_TTL: Duration = Duration::from_secs(30);

impl Inner {
    /// Claims this process's `history_len` in Redis and adopts the largest
    /// live claim, warning when it is not this process's own setting.
    async fn claim_history_len(&self) -> Result<(), BusError> {
        let mut invocation = self.history_len_script.key(self.keys.key("meta:history_len"));
        invocation.arg(&self.history_len_claim).arg(u64::try_from(HISTORY_LEN_CLAIM_TTL.as_millis()).unwrap_or(30_000));
        let conn = self.conn("check").await?;
        let largest: usize =
            within_deadline!(self, "check", conn, invocation.invoke_async(&mut *conn)).map_err(BusError::read)?;
        let largest = largest.max(self.configured_history_len);
        let previous = self.history_len.swap(largest, Ordering::Relaxed);
        if largest != self.configured_history_len && previous != largest {
            tracing::warn!(
                history_len = self.configured_history_len,
                applied = largest,
                "another Pulse service is configured with a larger redis.history_len; channels keep that many \
                 events whoever publishes: set the same redis.history_len for every service"
            );
        }
        Ok(())
    }

    /// Runs `write` (a publish script) on `conn`, then, when
    /// `redis.replicas_to_ack` asks for it, `WAIT`s on the same connection
    /// (on a cluster: on the master of `channel`'s slot) until that many
    /// replicas have it or half the request deadline has passed. Returns
    /// the write's answer, and how many replicas confirmed when that was
    /// fewer than waited for.
    ///
    /// It waits for no more replicas than the master has connected (read
    /// with `ROLE` at most every [`REPLICAS_REFRESH`]): a master whose
    /// replica was promoted away from it, or died, has no copy to wait
    /// for, and no replica that a failover could promote either, so its
    /// publishes go through instead of all failing until a replica is back.
    async fn replicated<T: redis::FromRedisValue>(
        &self,
        conn: &mut Lease,
        channel: &Channel,
        write: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<(T, Option<usize>)> {
        let answer = write.invoke_async(conn).await?;
        let short = self.wait_replicas(conn, &self.keys.live(channel)).await?;
        Ok((answer, short))
    }

    /// `WAIT`s on `conn` (on a cluster: on the master of `key`'s slot)
    /// until `redis.replicas_to_ack` replicas, at most as many as the
    /// master has connected, have every write sent on it so far, or half
    /// the request deadline has passed. Returns how many confirmed when
    /// that was fewer than waited for.
    async fn wait_replicas<C: MasterRoute>(&self, conn: &mut C, key: &str) -> redis::RedisResult<Option<usize>> {
        if self.replicas_to_ack == 0 {
            return Ok(None);
        }
        let slot = if conn.cluster().is_some() { crate::connection::slot(key) } else { 0 };
        let cached = self.lock_replicas().get(&slot).copied();
        let connected = match cached {
            Some((read, connected)) if read.elapsed() < REPLICAS_REFRESH => connected,
            _ => {
                let role: Vec<redis::Value> = on_master(conn, slot, redis::cmd("ROLE")).await?;
                let connected = match role.get(2) {
                    Some(redis::Value::Array(replicas)) => replicas.len(),
                    _ => 0,
                };
                self.lock_replicas().insert(slot, (tokio::time::Instant::now(), connected));
                connected
            }
        };
        let wanted = self.replicas_to_ack.min(connected);
        if wanted == 0 {
            return Ok(None);
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(wanted).arg(u64::try_from((self.request_timeout / 2).as_millis()).unwrap_or(1000));
        let acked: usize = on_master(conn, slot, wait).await?;
        Ok((acked < wanted).then_some(acked))
    }

    fn lock_replicas(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u16, (tokio::time::Instant, usize)>> {
        // Entries are replaced whole.
        self.replicas.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An error when fewer replicas than `redis.replicas_to_ack` confirmed
    /// a publish: it is published (and may have been delivered), but a
    /// failover may lose it.
    fn check_replicated(&self, short: Option<usize>) -> Result<(), BusError> {
        let Some(acked) = short else { return Ok(()) };
        link::count_error("publish");
        Err(BusError::OutcomeUnknown(format!(
            "published, but only {acked} replicas confirmed it in time (redis.replicas_to_ack = {}): a failover may \
             lose it",
            self.replicas_to_ack
        ).into()))
    }

    /// A connection for one request (the pool's own wait and create
    /// timeouts bound this; nothing has been sent when it fails).
    async fn conn(&self, op: &'static str) -> Result<Lease, BusError> {
        match &self.commands {
            Commands::Pool(pool) => pool.get().await.map(Lease::Pooled).map_err(|e| {
                link::count_error(op);
                BusError::from(e)
            }),
            Commands::Cluster(conn) => Ok(Lease::Cluster(conn.clone())),
        }
    }
}

fn corrupt(channel: &Channel, reason: impl ToString) -> BusError {
    BusError::Corrupt { channel: channel.to_string(), reason: reason.to_string() }
}

/// Parses a position as the scripts return it (`<epoch>:<stream id>`).
fn parse_position(channel: &Channel, text: &str) -> Result<Position, BusError> {
    Position::from_str(text).map_err(|e| corrupt(channel, e))
}

/// Parses an epoch as the scripts return it ('' for none).
fn parse_epoch(channel: &Channel, text: &str) -> Result<Epoch, BusError> {
    if text.is_empty() { Ok(Epoch::NONE) } else { Epoch::from_str(text).map_err(|e| corrupt(channel, e)) }
}

fn parse_offset(channel: &Channel, text: &str) -> Result<Offset, BusError> {
    Offset::from_str(text).map_err(|e| corrupt(channel, e))
}

/// Parses a stream entry or live message back into an event.
fn decode(channel: &Channel, id: Position, draft_json: &str) -> Result<Event, BusError> {
    let draft: EventDraft =
        serde_json::from_str(draft_json).map_err(|e| corrupt(channel, format!("event {id}: {e}")))?;
    Ok(draft.into_event(channel.clone(), id))
}

/// A stream entry as XRANGE returns it: id and flat field/value list.
type Entry = (String, Vec<String>);

fn decode_entry(channel: &Channel, epoch: Epoch, (id, fields): Entry) -> Result<Event, BusError> {
    let payload = fields
        .chunks(2)
        .find(|pair| pair.first().is_some_and(|f| f == "e"))
        .and_then(|pair| pair.get(1))
        .ok_or_else(|| corrupt(channel, format!("entry {id} has no event field")))?;
    decode(channel, Position::new(epoch, parse_offset(channel, &id)?), payload)
}

#[async_trait]
impl Backend for Inner {
    async fn history(&self, channel: &Channel, after: Position, limit: usize) -> Result<History, BusError> {
        let (hist, epoch_key) = (self.keys.hist(channel), self.keys.epoch(channel));
        let reader_epoch = if after.epoch.is_none() { String::new() } else { after.epoch.to_string() };
        let mut invocation = self.history.key(hist);
        invocation.key(epoch_key).arg(reader_epoch).arg(after.offset.to_string()).arg(limit.max(1));
        let conn = self.conn("history").await?;
        let (epoch, head, max_deleted, entries, missing): (String, String, String, Vec<Entry>, u8) =
            within_deadline!(self, "history", conn, invocation.invoke_async(&mut *conn)).map_err(BusError::read)?;
        let epoch = parse_epoch(channel, &epoch)?;
        let head = parse_offset(channel, &head)?;
        let max_deleted = parse_offset(channel, &max_deleted)?;
        let events = entries.into_iter().map(|entry| decode_entry(channel, epoch, entry)).collect::<Result<_, _>>()?;
        Ok(History {
            events,
            // Missing: the reader's position is one this history lost (see
            // history.lua).
            truncated: missing == 1 || !continuous(after, epoch, head, max_deleted),
            head: Position::new(epoch, head),
        })
    }

    async fn head(&self, channel: &Channel) -> Result<Position, BusError> {
        let (hist, epoch_key) = (self.keys.hist(channel), self.keys.epoch(channel));
        let mut invocation = self.head.key(hist);
        invocation.key(epoch_key);
        let conn = self.conn("head").await?;
        let (epoch, head): (String, String) =
            within_deadline!(self, "head", conn, invocation.invoke_async(&mut *conn)).map_err(BusError::read)?;
        Ok(Position::new(parse_epoch(channel, &epoch)?, parse_offset(channel, &head)?))
    }

    async fn listen(&self, channel: &Channel) -> Result<(), BusError> {
        let (done, answer) = oneshot::channel();
        self.listener.send(Converge { channel: channel.clone(), done: Some(done) }).map_err(|_| BusError::Closed)?;
        tokio::time::timeout(self.request_timeout, answer)
            .await
            .map_err(|_| {
                BusError::Unavailable(format!("redis did not subscribe within {:?}", self.request_timeout).into())
            })?
            .map_err(|_| BusError::Closed)?
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
        let inner = &*self.inner;
        let draft_json = redis_lua::encode_draft(&draft);
        let keys = [inner.keys.hist(channel), inner.keys.live(channel), inner.keys.epoch(channel)];
        let mut invocation = inner.publish.key(&keys[..]);
        invocation.arg(inner.history_len.load(Ordering::Relaxed)).arg(&draft_json).arg(redis_lua::epoch_candidate());
        let conn = inner.conn("publish").await?;
        let (position, short): (String, Option<usize>) =
            within_deadline!(inner, "publish", conn, inner.replicated(&mut conn, channel, &invocation))?;
        inner.check_replicated(short)?;
        Ok(draft.into_event(channel.clone(), parse_position(channel, &position)?))
    }

    async fn publish_once(
        &self,
        channel: &Channel,
        draft: EventDraft,
        key: &str,
        ttl: Duration,
    ) -> Result<Publication, BusError> {
        let inner = &*self.inner;
        let draft_json = redis_lua::encode_draft(&draft);
        let keys = [
            inner.keys.hist(channel),
            inner.keys.live(channel),
            inner.keys.epoch(channel),
            inner.keys.idempotency(channel, key),
        ];
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = inner.publish_once.key(&keys[..]);
        invocation
            .arg(inner.history_len.load(Ordering::Relaxed))
            .arg(&draft_json)
            .arg(redis_lua::epoch_candidate())
            .arg(ttl_ms);
        let conn = inner.conn("publish").await?;
        let ((duplicate, position), short): ((u8, String), Option<usize>) =
            within_deadline!(inner, "publish", conn, inner.replicated(&mut conn, channel, &invocation))?;
        inner.check_replicated(short)?;
        Ok(Publication { id: parse_position(channel, &position)?, duplicate: duplicate == 1 })
    }

    async fn history(&self, channel: &Channel, after: Position, limit: usize) -> Result<History, BusError> {
        Backend::history(&*self.inner, channel, after, limit).await
    }

    async fn latest(&self, channel: &Channel, limit: usize) -> Result<Vec<Event>, BusError> {
        let inner = &*self.inner;
        let (hist, epoch_key) = (inner.keys.hist(channel), inner.keys.epoch(channel));
        let mut invocation = inner.latest.key(hist);
        invocation.key(epoch_key).arg(limit.max(1));
        let conn = inner.conn("latest").await?;
        let (epoch, newest): (String, Vec<Entry>) =
            within_deadline!(inner, "latest", conn, invocation.invoke_async(&mut *conn)).map_err(BusError::read)?;
        let epoch = parse_epoch(channel, &epoch)?;
        newest.into_iter().rev().map(|entry| decode_entry(channel, epoch, entry)).collect()
    }

    async fn head(&self, channel: &Channel) -> Result<Position, BusError> {
        Backend::head(&*self.inner, channel).await
    }

    fn subscription(&self) -> Subscription {
        Subscription::new(self.inner.clone())
    }

    async fn check(&self) -> Result<(), BusError> {
        let conn = self.inner.conn("check").await?;
        if let Lease::Cluster(_) = conn {
            // Any node tells whether every slot has a master that answers.
            let info: String =
                within_deadline!(self.inner, "check", conn, redis::cmd("CLUSTER").arg("INFO").query_async(&mut *conn))
                    .map_err(BusError::read)?;
            if info.lines().any(|line| line.trim() == "cluster_state:ok") {
                return Ok(());
            }
            return Err(BusError::Unavailable(
                "the redis cluster is not ok (a master is down); waiting for failover".into(),
            ));
        }
        // A replica answers PING too; only a primary takes publishes.
        let role: Vec<redis::Value> =
            within_deadline!(self.inner, "check", conn, redis::cmd("ROLE").query_async(&mut *conn))
                .map_err(BusError::read)?;
        match role.first() {
            Some(redis::Value::BulkString(role)) if role.as_slice() == b"master" => Ok(()),
            _ => Err(BusError::Unavailable("redis is not a primary (read-only replica); waiting for failover".into())),
        }
    }

    fn link(&self) -> LinkState {
        self.inner.link.get()
    }
}

/// Renews this process's `history_len` claim until the bus is dropped.
async fn renew_history_len_claim(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(HISTORY_LEN_CLAIM_TTL / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(err) = inner.claim_history_len().await {
            tracing::debug!(error = %crate::error_chain(&err), "could not renew the history length claim; retrying");
        }
    }
}

/// Owns the process's one pub/sub connection: subscribes channels while
/// local subscriptions want them, hands live messages to the router, and
/// replaces the connection when it drops or goes silent. After a
/// reconnection every subscription fills what it missed from history.
///
/// Live messages use sharded pub/sub (`SSUBSCRIBE`, published with
/// `SPUBLISH`), on a single server as on a cluster: one RESP3 connection
/// whose pushes carry the messages. On a cluster it is a cluster
/// connection, which subscribes each channel on the master of its slot.
/// The connection is replaced as a whole (every channel fills from
/// history) when any part of it is lost: a node's connection dropped (a
/// failover), a ping unanswered, or the server unsubscribed a channel
/// itself (its slot moved to another master). redis-rs would resubscribe
/// some of these by itself, but not after every failover, and a
/// server-initiated `sunsubscribe` is taken by redis-rs for the answer to
/// whatever request is in flight on that node's connection, so that
/// connection cannot be trusted any more.
///
/// A connection can stay open yet move no bytes (a partition, or a failover
/// that leaves the old primary unreachable): nothing on it fails, it is just
/// quiet. So it is pinged every `ping_interval` (every master, on a
/// cluster), and a ping or subscribe unanswered within `ping_timeout` counts
/// as a dropped connection.
struct PubSubLink {
    deployment: Deployment,
    keys: Keys,
    router: Arc<Router>,
    link: Arc<Link>,
    ping_interval: Duration,
    ping_timeout: Duration,
    request_timeout: Duration,
}

/// Why a connected pub/sub link ended.
enum Ended {
    /// The bus was dropped: stop.
    BusGone,
    /// Lost or silent: reconnect.
    Lost(String),
}

/// What the pub/sub connection receives: messages, subscription changes
/// and disconnections, as RESP3 pushes.
type Pushes = mpsc::UnboundedReceiver<redis::PushInfo>;

impl PubSubLink {
    async fn run(self, mut requests: mpsc::UnboundedReceiver<Converge>) {
        let mut failures: u32 = 0;
        let mut connected_before = false;
        loop {
            let (conn, pushes, subscribed) = match self.connect().await {
                Ok(parts) => parts,
                Err(err) => {
                    if failures == 0 {
                        tracing::warn!(error = %crate::error_chain(&err), "redis pub/sub connection failed; reconnecting with backoff");
                    }
                    link::count_error("subscribe");
                    failures = failures.saturating_add(1);
                    // Meanwhile, answer requests at once instead of letting them hang.
                    let retry = tokio::time::sleep(backoff::delay(failures));
                    tokio::pin!(retry);
                    loop {
                        tokio::select! {
                            () = &mut retry => break,
                            request = requests.recv() => match request {
                                Some(request) => answer(request, Err(BusError::Unavailable(crate::error_chain(&err).into()))),
                                None => return,
                            },
                        }
                    }
                    continue;
                }
            };
            self.link.set(LinkState::Up);
            if connected_before {
                link::count_reconnect();
                tracing::info!(
                    channels = self.router.channels().len(),
                    "redis pub/sub reconnected; filling gaps from history"
                );
                self.router.mark_all_lagged();
            }
            connected_before = true;
            failures = 0;

            let ended = self.serve(conn, pushes, subscribed, &mut requests).await;
            self.link.set(LinkState::Down);
            match ended {
                Ended::BusGone => return,
                Ended::Lost(why) => {
                    tracing::warn!(reason = %why, "redis pub/sub connection lost; reconnecting");
                    link::count_error("ping");
                }
            }
        }
    }

    /// A new connection, subscribed to the channels the router wants now;
    /// returns them with it.
    async fn connect(&self) -> Result<(RedisConnection, Pushes, HashSet<Channel>), BusError> {
        let (sender, pushes) = mpsc::unbounded_channel();
        let mut conn = self.deployment.connect_pushing(self.request_timeout, sender).await?;
        let wanted = self.router.channels();
        let channels: Vec<String> = wanted.iter().map(|c| self.keys.live(c)).collect();
        if !channels.is_empty() {
            tokio::time::timeout(self.ping_timeout, conn.ssubscribe(&channels))
                .await
                .map_err(|_| BusError::Unavailable("redis did not confirm the subscriptions in time".into()))??;
        }
        Ok((conn, pushes, wanted.into_iter().collect()))
    }

    /// Runs one connection until it is lost, silent, or the bus is dropped.
    ///
    /// `subscribed` is what [`connect`](Self::connect) subscribed, not what
    /// the router wants by now: a channel added to the router since then
    /// (a subscribe that started while the connection was being made, or
    /// the first one after [`RedisBus::connect`] returned) is subscribed
    /// by its own request, which is waiting in `requests`.
    ///
    /// Live messages are read all along: a subscribe, unsubscribe or ping
    /// waiting for Redis's answer (one at a time, in order) runs beside the
    /// stream, so a slow answer delays no channel's events.
    async fn serve(
        &self,
        conn: RedisConnection,
        mut pushes: Pushes,
        mut subscribed: HashSet<Channel>,
        requests: &mut mpsc::UnboundedReceiver<Converge>,
    ) -> Ended {
        let mut ping = tokio::time::interval(self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        let mut ping_due = false;
        let mut waiting: VecDeque<Converge> = VecDeque::new();
        let mut in_flight: Option<InFlightOp> = None;
        // The channel of the subscribe or unsubscribe in flight: its own
        // confirmation arrives as a push too.
        let mut changing: Option<Channel> = None;
        loop {
            while in_flight.is_none() {
                if let Some(request) = waiting.pop_front() {
                    let channel = request.channel.clone();
                    let wanted = self.router.wants(&channel);
                    let change = match (wanted, subscribed.contains(&channel)) {
                        (true, false) => Change::Subscribe,
                        (false, true) => Change::Unsubscribe,
                        _ => {
                            answer(request, Ok(()));
                            continue;
                        }
                    };
                    changing = Some(channel);
                    in_flight = Some(self.start(conn.clone(), Some(request), change));
                } else if std::mem::take(&mut ping_due) {
                    in_flight = Some(self.start(conn.clone(), None, Change::Ping));
                } else {
                    break;
                }
            }
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { return Ended::Lost("connection closed".into()) };
                    match push.kind {
                        redis::PushKind::SMessage => deliver(&self.keys, &self.router, &push.data),
                        redis::PushKind::Disconnection => return Ended::Lost("connection closed".into()),
                        redis::PushKind::SUnsubscribe => {
                            let channel = push.data.first().and_then(|name| self.channel_of(name));
                            if let Some(channel) = channel
                                && changing.as_ref() != Some(&channel)
                                && subscribed.contains(&channel)
                            {
                                return Ended::Lost(format!("redis unsubscribed {channel} (its slot moved)"));
                            }
                        }
                        _ => {}
                    }
                }
                // A ping while another request waits would prove nothing new.
                _ = ping.tick() => ping_due = in_flight.is_none(),
                request = requests.recv() => match request {
                    Some(request) => waiting.push_back(request),
                    None => return Ended::BusGone,
                },
                (request, change, result) = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                    in_flight = None;
                    changing = None;
                    if let Err(err) = result {
                        let why = crate::error_chain(&err);
                        if let Some(request) = request {
                            answer(request, Err(err));
                        }
                        return Ended::Lost(why);
                    }
                    if let Some(request) = request {
                        match change {
                            Change::Subscribe => subscribed.insert(request.channel.clone()),
                            Change::Unsubscribe => subscribed.remove(&request.channel),
                            Change::Ping => false,
                        };
                        answer(request, Ok(()));
                    }
                }
            }
        }
    }

    fn channel_of(&self, name: &redis::Value) -> Option<Channel> {
        match name {
            redis::Value::BulkString(bytes) => {
                std::str::from_utf8(bytes).ok().and_then(|n| self.keys.channel_of_live(n))
            }
            _ => None,
        }
    }

    /// Sends one request on the pub/sub connection; its future completes
    /// with Redis's confirmation, or an error after `ping_timeout`.
    fn start(&self, mut conn: RedisConnection, request: Option<Converge>, change: Change) -> InFlightOp {
        let timeout = self.ping_timeout;
        let live = request.as_ref().map(|r| self.keys.live(&r.channel));
        Box::pin(async move {
            let sent = async {
                match (change, live) {
                    (Change::Subscribe, Some(live)) => conn.ssubscribe(&[live]).await,
                    (Change::Unsubscribe, Some(live)) => conn.sunsubscribe(&[live]).await,
                    _ => conn.ping_all().await,
                }
            };
            let result = match tokio::time::timeout(timeout, sent).await {
                Ok(result) => result.map_err(BusError::from),
                Err(_) => Err(BusError::Unavailable(
                    format!("redis did not answer on the pub/sub link within {timeout:?}").into(),
                )),
            };
            (request, change, result)
        })
    }
}

/// What a request on the pub/sub connection changes.
#[derive(Debug, Clone, Copy)]
enum Change {
    Subscribe,
    Unsubscribe,
    Ping,
}

/// A request sent on the pub/sub connection, awaiting its answer.
type InFlightOp = std::pin::Pin<Box<dyn Future<Output = (Option<Converge>, Change, Result<(), BusError>)> + Send>>;

fn answer(request: Converge, result: Result<(), BusError>) {
    if let Some(done) = request.done {
        // The requester may have given up waiting; nothing to do then.
        let _ = done.send(result);
    }
}

/// Hands a live message (the data of an `smessage` push: channel name and
/// payload) to the router.
fn deliver(keys: &Keys, router: &Router, data: &[redis::Value]) {
    fn bytes(value: Option<&redis::Value>) -> Option<&[u8]> {
        match value {
            Some(redis::Value::BulkString(bytes)) => Some(bytes.as_slice()),
            _ => None,
        }
    }
    let (Some(name), Some(payload)) = (bytes(data.first()), bytes(data.get(1))) else {
        tracing::warn!("dropping a live message that is not `[channel, payload]`");
        return;
    };
    let name = String::from_utf8_lossy(name);
    let Some(channel) = keys.channel_of_live(&name) else {
        tracing::warn!(channel = %name, "live message on an unexpected channel");
        return;
    };
    let decoded = std::str::from_utf8(payload)
        .ok()
        .and_then(|text| text.split_once(' '))
        .ok_or_else(|| corrupt(&channel, "live message is not `<position> <json>`"))
        .and_then(|(id, json)| decode(&channel, parse_position(&channel, id)?, json));
    match decoded {
        Ok(event) => router.dispatch(Arc::new(event)),
        Err(err) => tracing::warn!(error = %err, "dropping a malformed live message"),
    }
}
