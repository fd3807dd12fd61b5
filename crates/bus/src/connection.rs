//! Which Redis deployment the bus talks to (one server, or a Redis
//! Cluster), and [`RedisConnection`], the connection type of both.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::BusError;

/// A connection for commands and scripts on either deployment: a
/// multiplexed connection to one Redis server, or a Redis Cluster
/// connection that sends each command to the master of its keys' slot
/// (following `MOVED` after a failover or a slot migration). Cheap to
/// clone; clones share the connection.
///
/// A script sent on a cluster must keep all its keys in one slot: every key
/// of a channel ([`Keys`](crate::redis_lua::Keys)) carries the channel's
/// hash tag for that reason.
#[derive(Clone)]
pub enum RedisConnection {
    /// One Redis server (with or without replicas).
    Node(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Whether this is a Redis Cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Subscribes the sharded pub/sub `channels` (on a connection with a
    /// push sender: RESP3). On a cluster, one `SSUBSCRIBE` per hash slot,
    /// sent to its master, all at once; on a server, one `SSUBSCRIBE` per
    /// channel in one pipeline (redis-rs matches one confirmation per
    /// command there).
    pub(crate) async fn ssubscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        self.subscription_change("SSUBSCRIBE", channels).await
    }

    /// Unsubscribes sharded pub/sub `channels`, as [`ssubscribe`](Self::ssubscribe).
    pub(crate) async fn sunsubscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        self.subscription_change("SUNSUBSCRIBE", channels).await
    }

    async fn subscription_change(&mut self, command: &str, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Self::Node(conn) => {
                let mut pipe = redis::pipe();
                for channel in channels {
                    pipe.cmd(command).arg(channel);
                }
                let answers: Vec<Value> = pipe.query_async(conn).await?;
                answers.into_iter().try_for_each(|answer| answer.extract_error().map(drop))
            }
            Self::Cluster(conn) => {
                let mut by_slot: std::collections::BTreeMap<u16, Vec<&String>> = Default::default();
                for channel in channels {
                    by_slot.entry(slot(channel)).or_default().push(channel);
                }
                let subscribe = command == "SSUBSCRIBE";
                futures_util::future::try_join_all(by_slot.into_values().map(|group| {
                    let mut conn = conn.clone();
                    async move { if subscribe { conn.ssubscribe(group).await } else { conn.sunsubscribe(group).await } }
                }))
                .await
                .map(drop)
            }
        }
    }

    /// Pings the server, or every master of a cluster: proves that each
    /// connection a subscription may be on still moves bytes.
    pub(crate) async fn ping_all(&mut self) -> redis::RedisResult<()> {
        match self {
            Self::Node(conn) => redis::cmd("PING").query_async::<Value>(conn).await.map(drop),
            Self::Cluster(conn) => {
                use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
                let routing =
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::AllSucceeded)));
                conn.route_command(redis::cmd("PING"), routing).await.map(drop)
            }
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_cluster() { "RedisConnection::Cluster" } else { "RedisConnection::Node" })
    }
}

/// Where the bus's Redis is, as `redis.url` names it: one server, or the
/// seed nodes of a cluster.
#[derive(Clone)]
pub(crate) enum Deployment {
    Node(redis::Client),
    Cluster { seeds: Vec<redis::ConnectionInfo> },
}

impl Deployment {
    /// Reads `redis.url` (one URL, or a comma-separated list of a
    /// cluster's nodes) and asks the first node that answers whether it is
    /// a cluster node (`INFO cluster`: `cluster_enabled:1`).
    pub(crate) async fn detect(url: &str, timeout: Duration) -> Result<Self, BusError> {
        let urls: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        let invalid = |e: &dyn std::fmt::Display| {
            BusError::Unavailable(format!("invalid redis url {:?}: {e}", crate::settings::redact_url(url)).into())
        };
        if urls.is_empty() {
            return Err(invalid(&"empty"));
        }
        let clients =
            urls.iter().map(|u| redis::Client::open(*u)).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(&e))?;
        let mut last_error = None;
        let mut answered = None;
        for client in &clients {
            match cluster_nodes(client, timeout).await {
                Ok(nodes) => {
                    answered = Some((client, nodes));
                    break;
                }
                Err(err) => last_error = Some(err),
            }
        }
        let Some((answering, nodes)) = answered else {
            return Err(last_error.unwrap_or_else(|| BusError::Unavailable("no redis node answered".into())));
        };
        let cluster = nodes.is_some();
        if !cluster {
            let [client] = <[redis::Client; 1]>::try_from(clients).map_err(|_| {
                invalid(&"several URLs name the nodes of a Redis Cluster, but this Redis is not a cluster node")
            })?;
            return Ok(Self::Node(client));
        }
        // Every node known now is a seed too: a new connection (after a
        // failover, the pub/sub link's) must not depend on the one node
        // that `redis.url` named being alive.
        let mut seeds: Vec<redis::ConnectionInfo> = clients.iter().map(|c| c.get_connection_info().clone()).collect();
        let template = answering.get_connection_info();
        for (host, port) in nodes.unwrap_or_default() {
            let addr = match template.addr() {
                redis::ConnectionAddr::TcpTls { insecure, tls_params, .. } => {
                    redis::ConnectionAddr::TcpTls { host, port, insecure: *insecure, tls_params: tls_params.clone() }
                }
                _ => redis::ConnectionAddr::Tcp(host, port),
            };
            if !seeds.iter().any(|seed| *seed.addr() == addr) {
                seeds.push(template.clone().set_addr(addr));
            }
        }
        cluster_client(&seeds, timeout, None).map_err(|e| invalid(&e))?;
        Ok(Self::Cluster { seeds })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// A new connection for commands, driven on the calling runtime.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<RedisConnection, BusError> {
        let connected = match self {
            Self::Node(client) => crate::deadline::within(timeout, client.get_multiplexed_async_connection())
                .await
                .map(RedisConnection::Node),
            Self::Cluster { seeds } => return connect_cluster(seeds, timeout).await.map(RedisConnection::Cluster),
        };
        connected.map_err(|err| BusError::from(err).read())
    }

    /// A new RESP3 connection whose pushes (messages of subscribed
    /// channels, subscription changes, disconnections) go to `pushes`.
    pub(crate) async fn connect_pushing(
        &self,
        timeout: Duration,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> Result<RedisConnection, BusError> {
        let connected = match self {
            Self::Node(client) => {
                let info = client.get_connection_info().clone();
                let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
                let client = redis::Client::open(info.set_redis_settings(settings))?;
                let config = redis::AsyncConnectionConfig::new().set_push_sender(pushes);
                crate::deadline::within(timeout, client.get_multiplexed_async_connection_with_config(&config))
                    .await
                    .map(RedisConnection::Node)
            }
            Self::Cluster { seeds } => {
                let client = cluster_client(seeds, timeout, Some(pushes))?;
                crate::deadline::within(timeout, client.get_async_connection()).await.map(RedisConnection::Cluster)
            }
        };
        connected.map_err(|err| BusError::from(err).read())
    }
}

/// A cluster client on `seeds`, speaking RESP3 (subscriptions need it:
/// replies and messages come as pushes), whose pushes go to `pushes`.
fn cluster_client(
    seeds: &[redis::ConnectionInfo],
    timeout: Duration,
    pushes: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> redis::RedisResult<ClusterClient> {
    let builder =
        ClusterClient::builder(seeds.to_vec()).use_protocol(redis::ProtocolVersion::RESP3).connection_timeout(timeout);
    match pushes {
        Some(pushes) => builder.push_sender(pushes).build(),
        None => builder.build(),
    }
}

/// A new cluster connection for commands, from `seeds`.
pub(crate) async fn connect_cluster(
    seeds: &[redis::ConnectionInfo],
    timeout: Duration,
) -> Result<ClusterConnection, BusError> {
    let client = cluster_client(seeds, timeout, None)?;
    crate::deadline::within(timeout, client.get_async_connection()).await.map_err(|err| BusError::from(err).read())
}

/// The nodes of the cluster the server behind `client` belongs to, as
/// `(host, port)` (`CLUSTER NODES`); `None` when it is not a cluster node
/// (`INFO cluster`: `cluster_enabled:0`).
async fn cluster_nodes(client: &redis::Client, timeout: Duration) -> Result<Option<Vec<(String, u16)>>, BusError> {
    crate::deadline::within(timeout, async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut conn).await?;
        if !info.lines().any(|line| line.trim() == "cluster_enabled:1") {
            return Ok(None);
        }
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await?;
        Ok(Some(parse_cluster_nodes(&nodes)))
    })
    .await
    .map_err(|err| BusError::from(err).read())
}

/// `(host, port)` of each node in a `CLUSTER NODES` answer (`<id>
/// <ip:port@cport[,hostname]> <flags> …`), leaving out nodes without an
/// address.
fn parse_cluster_nodes(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let address = line.split_whitespace().nth(1)?;
            let (host, port) = address.split(['@', ',']).next()?.rsplit_once(':')?;
            let port = port.parse().ok().filter(|p| *p != 0)?;
            (!host.is_empty()).then(|| (host.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
        })
        .collect()
}

/// The hash slot of `key` (0–16383): CRC16 of its hash tag (the part
/// between the first `{` and the next `}`, if not empty), else of the whole
/// key, modulo 16384, as Redis Cluster computes it.
pub(crate) fn slot(key: &str) -> u16 {
    let key = key.as_bytes();
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|b| *b == b'}').map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty());
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % 16_384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_are_read_with_their_addresses() {
        let text = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                    b2 10.0.0.2:7001@17001,redis-b master,fail - 0 0 2 disconnected\n\
                    c3 :0@0 master,noaddr - 0 0 0 disconnected\n\
                    d4 [::1]:7003@17003 slave a1 0 0 1 connected\n";
        assert_eq!(
            parse_cluster_nodes(text),
            [("127.0.0.1".into(), 7000), ("10.0.0.2".into(), 7001), ("::1".into(), 7003)]
        );
    }

    #[test]
    fn slots_follow_hash_tags_as_redis_computes_them() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"), "an empty tag hashes the whole key");
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }
}
