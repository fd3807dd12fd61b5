use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{DEADLINE, free_port, wait_until};

/// Nodes of a test cluster: three masters, one replica each.
const NODES: usize = 6;

/// A private Redis Cluster for tests: six `redis-server --cluster-enabled
/// yes` on free loopback ports (three masters, three replicas), keeping
/// nothing on disk. Dropping it kills every node.
///
/// Starting one takes 2–3 s: tests that do not inject faults share one per
/// test binary ([`shared`](Self::shared)); tests that kill nodes or move
/// slots start their own ([`start`](Self::start)).
pub struct RedisCluster {
    dir: tempfile::TempDir,
    nodes: Mutex<Vec<Node>>,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    master: bool,
    failed: bool,
    /// Slot ranges served (masters), inclusive.
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts a cluster of its own and waits until every node reports
    /// `cluster_state:ok` and agrees on who serves every slot.
    ///
    /// # Errors
    /// When a node does not start or the cluster does not form in time.
    pub async fn start() -> anyhow::Result<Self> {
        let cluster = Self { dir: tempfile::tempdir()?, nodes: Mutex::new(Vec::new()) };
        for index in 0..NODES {
            cluster.spawn_node(index).await?;
        }
        let addresses: Vec<String> = cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let output = tokio::process::Command::new(cli_binary())
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .context("running redis-cli --cluster create")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        cluster.wait_ok().await?;
        // Replicas are attached after the slots are assigned.
        wait_until("every node sees three replicas", DEADLINE, || async {
            cluster.all_agree(|nodes| nodes.iter().filter(|n| !n.master && !n.failed).count() == NODES / 2).await
        })
        .await?;
        // A replica that has not synced with its master yet would not take
        // over from it.
        wait_until("every replica has synced with its master", DEADLINE, || async {
            let mut synced = 0;
            for port in cluster.live_ports() {
                match cluster.cmd::<String>(port, &["INFO", "replication"]).await {
                    Ok(info) if info.contains("role:slave") && info.contains("master_link_status:up") => synced += 1,
                    _ => {}
                }
            }
            synced == NODES / 2
        })
        .await?;
        Ok(cluster)
    }

    /// The cluster shared by the tests of this binary that run at the same
    /// time: started by the first that asks, stopped when the last one
    /// holding it is done. Tests sharing it must not inject faults, and
    /// should use key prefixes or channel names of their own.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn shared() -> anyhow::Result<Arc<Self>> {
        static SHARED: tokio::sync::Mutex<Weak<RedisCluster>> = tokio::sync::Mutex::const_new(Weak::new());
        let mut shared = SHARED.lock().await;
        if let Some(cluster) = shared.upgrade() {
            return Ok(cluster);
        }
        let cluster = Arc::new(Self::start().await?);
        *shared = Arc::downgrade(&cluster);
        Ok(cluster)
    }

    /// Every node's URL, comma-separated: the seeds for `redis.url`.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// `redis://127.0.0.1:{port}/` of every node (killed ones included).
    pub fn urls(&self) -> Vec<String> {
        self.ports().iter().map(|p| node_url(*p)).collect()
    }

    /// The ports of every node (killed ones included).
    pub fn ports(&self) -> Vec<u16> {
        self.lock().iter().map(|n| n.port).collect()
    }

    /// The hash slot of `key` (its hash tag, if any, decides), as the
    /// cluster computes it (`CLUSTER KEYSLOT`).
    ///
    /// # Errors
    /// When no live node answers.
    pub async fn slot(&self, key: &str) -> anyhow::Result<u16> {
        let mut last_error = None;
        for port in self.live_ports() {
            match self.cmd(port, &["CLUSTER", "KEYSLOT", key]).await {
                Ok(slot) => return Ok(slot),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no live cluster node")))
    }

    /// The port of the master serving `key`'s slot, as a live node sees it.
    ///
    /// # Errors
    /// When no live node answers or none serves the slot.
    pub async fn master_of(&self, key: &str) -> anyhow::Result<u16> {
        let slot = self.slot(key).await?;
        let nodes = self.topology().await?;
        owner(&nodes, slot).map(|n| n.port).with_context(|| format!("no master serves slot {slot}"))
    }

    /// The ports of the live masters serving slots (as a live node sees
    /// them).
    ///
    /// # Errors
    /// When no live node answers.
    pub async fn masters(&self) -> anyhow::Result<Vec<u16>> {
        Ok(self
            .topology()
            .await?
            .iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .map(|n| n.port)
            .collect())
    }

    /// Runs one command on the node at `port` and returns its reply.
    ///
    /// # Errors
    /// When the node cannot be reached or answers with an error.
    pub async fn cmd<T: redis::FromRedisValue>(&self, port: u16, args: &[&str]) -> anyhow::Result<T> {
        let client = redis::Client::open(node_url(port))?;
        let mut conn = tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection())
            .await
            .with_context(|| format!("connecting to node {port} timed out"))??;
        let mut cmd = redis::cmd(args.first().context("empty command")?);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// Kills the node at `port` (SIGKILL: a crash, nothing saved).
    ///
    /// # Errors
    /// When waiting for the process fails.
    pub fn kill(&self, port: u16) -> anyhow::Result<()> {
        let mut nodes = self.lock();
        let node = nodes.iter_mut().find(|n| n.port == port).with_context(|| format!("no node on port {port}"))?;
        if let Some(mut child) = node.child.take() {
            child.kill().ok();
            child.wait().context("waiting for redis-server to exit")?;
        }
        Ok(())
    }

    /// Kills the master serving `key`'s slot and waits until its replica
    /// has taken over and the cluster is ok again. Returns the killed port
    /// and the new master's.
    ///
    /// # Errors
    /// When the failover does not complete within the deadline.
    pub async fn kill_master_of(&self, key: &str) -> anyhow::Result<(u16, u16)> {
        let old = self.master_of(key).await?;
        self.kill(old)?;
        let new = self.wait_failover(key, old).await?;
        Ok((old, new))
    }

    /// Waits until a master other than `old` serves `key`'s slot and every
    /// live node reports `cluster_state:ok`; returns the new master's port.
    ///
    /// # Errors
    /// When that does not happen within the deadline (node timeout 2 s).
    pub async fn wait_failover(&self, key: &str, old: u16) -> anyhow::Result<u16> {
        let slot = self.slot(key).await?;
        let waited = wait_until(&format!("a replica takes over slot {slot} from {old}"), DEADLINE, || async {
            match self.topology().await {
                Ok(nodes) => owner(&nodes, slot).is_some_and(|n| n.port != old),
                Err(_) => false,
            }
        })
        .await;
        if let Err(err) = waited {
            return Err(err.context(self.describe().await));
        }
        if let Err(err) = self.wait_ok().await {
            return Err(err.context(self.describe().await));
        }
        self.master_of(key).await
    }

    /// Moves the slot of `key` to another master (`CLUSTER SETSLOT …
    /// IMPORTING/MIGRATING`, `MIGRATE … KEYS`, `SETSLOT … NODE`) and returns
    /// the ports of the old and the new master.
    ///
    /// # Errors
    /// When a step fails.
    pub async fn migrate_slot_of(&self, key: &str) -> anyhow::Result<(u16, u16)> {
        let slot = self.slot(key).await?;
        let nodes = self.topology().await?;
        let source = owner(&nodes, slot).with_context(|| format!("no master serves slot {slot}"))?.clone();
        let target = nodes
            .iter()
            .find(|n| n.master && !n.failed && !n.slots.is_empty() && n.port != source.port)
            .context("no other master to move the slot to")?
            .clone();
        self.migrate_slot(slot, &source, &target).await?;
        Ok((source.port, target.port))
    }

    async fn migrate_slot(&self, slot: u16, source: &NodeLine, target: &NodeLine) -> anyhow::Result<()> {
        let slot_arg = slot.to_string();
        let _: () = self.cmd(target.port, &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &source.id]).await?;
        let _: () = self.cmd(source.port, &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &target.id]).await?;
        loop {
            let keys: Vec<String> = self.cmd(source.port, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, "100"]).await?;
            if keys.is_empty() {
                break;
            }
            let port = target.port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let _: () = self.cmd(source.port, &args).await?;
        }
        // The target first, so that the slot is never served by no one.
        let _: () = self.cmd(target.port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target.id]).await?;
        let _: () = self.cmd(source.port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target.id]).await?;
        for node in self.topology().await?.iter().filter(|n| n.master && !n.failed) {
            if node.port != source.port && node.port != target.port {
                let _: () = self.cmd(node.port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target.id]).await?;
            }
        }
        let (target_port, slot_copy) = (target.port, slot);
        wait_until(&format!("every live node sees slot {slot} on {target_port}"), DEADLINE, || async move {
            self.all_agree(|nodes| owner(nodes, slot_copy).is_some_and(|n| n.port == target_port)).await
        })
        .await
    }

    /// Waits until every live node reports `cluster_state:ok` and agrees
    /// that every slot is served.
    ///
    /// # Errors
    /// When that does not happen within the deadline.
    pub async fn wait_ok(&self) -> anyhow::Result<()> {
        wait_until("every live cluster node reports cluster_state:ok", DEADLINE, || async {
            for port in self.live_ports() {
                match self.cmd::<String>(port, &["CLUSTER", "INFO"]).await {
                    Ok(info) if info.contains("cluster_state:ok") => {}
                    _ => return false,
                }
            }
            self.all_agree(|nodes| {
                let mut served: Vec<(u16, u16)> =
                    nodes.iter().filter(|n| n.master && !n.failed).flat_map(|n| n.slots.clone()).collect();
                served.sort_unstable();
                let mut next = 0u32;
                for (start, end) in served {
                    if u32::from(start) != next {
                        return false;
                    }
                    next = u32::from(end) + 1;
                }
                next == 16_384
            })
            .await
        })
        .await
    }

    /// Whether `check` holds for the topology as every live node sees it.
    async fn all_agree(&self, check: impl Fn(&[NodeLine]) -> bool) -> bool {
        for port in self.live_ports() {
            match self.cmd::<String>(port, &["CLUSTER", "NODES"]).await {
                Ok(text) if check(&parse_nodes(&text)) => {}
                _ => return false,
            }
        }
        true
    }

    /// The topology as the first live node that answers sees it.
    async fn topology(&self) -> anyhow::Result<Vec<NodeLine>> {
        let mut last_error = None;
        for port in self.live_ports() {
            match self.cmd::<String>(port, &["CLUSTER", "NODES"]).await {
                Ok(text) => return Ok(parse_nodes(&text)),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no live cluster node")))
    }

    /// The killed nodes and every live node's `CLUSTER NODES`, for error
    /// messages.
    async fn describe(&self) -> String {
        let killed: Vec<u16> = self.lock().iter().filter(|n| n.child.is_none()).map(|n| n.port).collect();
        let mut text = format!("killed nodes: {killed:?}");
        for port in self.live_ports() {
            let nodes = self.cmd::<String>(port, &["CLUSTER", "NODES"]).await.unwrap_or_else(|e| e.to_string());
            text.push_str(&format!("\nCLUSTER NODES on {port}:\n{nodes}"));
        }
        text
    }

    fn live_ports(&self) -> Vec<u16> {
        self.lock().iter().filter(|n| n.child.is_some()).map(|n| n.port).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Node>> {
        self.nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts node number `index` on a free port (retrying when another
    /// process took the port first) and waits until it answers `PING`.
    async fn spawn_node(&self, index: usize) -> anyhow::Result<()> {
        let dir = self.dir.path().join(format!("node-{index}"));
        std::fs::create_dir_all(&dir)?;
        let mut last_error = None;
        for _ in 0..5 {
            let (port, bus_port) = (free_port()?, free_port()?);
            // A node keeps its identity in nodes.conf: start from none.
            std::fs::remove_file(dir.join("nodes.conf")).ok();
            let mut child = Command::new(server_binary())
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000", "--cluster-port", &bus_port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server (is it installed? scripts/test installs it)")?;
            let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
            let started = loop {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break Err(anyhow::anyhow!("cluster node on {port} exited at start"));
                }
                if self.cmd::<String>(port, &["PING"]).await.is_ok() {
                    break Ok(());
                }
                if tokio::time::Instant::now() >= give_up {
                    break Err(anyhow::anyhow!("cluster node on {port} did not answer PING within 10 s"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            match (started, child.try_wait()) {
                (Ok(()), Ok(None)) => {
                    self.lock().push(Node { port, child: Some(child) });
                    return Ok(());
                }
                (result, _) => {
                    child.kill().ok();
                    child.wait().ok();
                    last_error =
                        Some(result.err().unwrap_or_else(|| anyhow::anyhow!("node on {port} exited at start")));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("cluster node did not start")))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in self.lock().iter_mut() {
            if let Some(mut child) = node.child.take() {
                child.kill().ok();
                child.wait().ok();
            }
        }
    }
}

fn node_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

fn server_binary() -> std::path::PathBuf {
    std::env::var_os("REDIS_SERVER").map(Into::into).unwrap_or_else(|| "redis-server".into())
}

fn cli_binary() -> std::path::PathBuf {
    std::env::var_os("REDIS_CLI").map(Into::into).unwrap_or_else(|| "redis-cli".into())
}

/// The live master serving `slot`.
fn owner(nodes: &[NodeLine], slot: u16) -> Option<&NodeLine> {
    nodes.iter().find(|n| n.master && !n.failed && n.slots.iter().any(|(start, end)| (*start..=*end).contains(&slot)))
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport> <flags> <master> <ping>
/// <pong> <epoch> <link> <slot> <slot>…`; slots are `n` or `a-b`, and
/// `[n->-id]` / `[n-<-id]` mark migrations (ignored).
fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (id, address, flags) = (fields.first()?, fields.get(1)?, fields.get(2)?);
            let port = address.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags: Vec<&str> = flags.split(',').collect();
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(NodeLine {
                id: (*id).to_owned(),
                port,
                master: flags.contains(&"master"),
                failed: flags.iter().any(|f| *f == "fail" || *f == "fail?" || *f == "noaddr"),
                slots,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461->-b2]\n\
                    b2 127.0.0.1:7001@17001 master,fail - 0 0 2 disconnected 5461-10922\n\
                    c3 127.0.0.1:7002@17002 slave a1 0 0 1 connected\n";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 3);
        assert!(nodes[0].master && !nodes[0].failed && nodes[0].slots == [(0, 5460)]);
        assert!(nodes[1].failed);
        assert!(!nodes[2].master && nodes[2].port == 7002);
        assert_eq!(owner(&nodes, 100).unwrap().id, "a1");
        assert!(owner(&nodes, 6000).is_none(), "a failed master serves nothing");
    }

    #[tokio::test]
    async fn a_cluster_forms_fails_over_and_moves_slots() {
        let cluster = RedisCluster::start().await.unwrap();
        assert_eq!(cluster.masters().await.unwrap().len(), 3);
        let key = "{probe}:k";
        let first = cluster.master_of(key).await.unwrap();
        let _: () = cluster.cmd(first, &["SET", key, "v"]).await.unwrap();

        let (from, to) = cluster.migrate_slot_of(key).await.unwrap();
        assert_eq!(from, first);
        assert_eq!(cluster.master_of(key).await.unwrap(), to);
        let value: String = cluster.cmd(to, &["GET", key]).await.unwrap();
        assert_eq!(value, "v", "the key moved with its slot");
        // Replication is asynchronous: the key must reach the replica
        // before its master dies, or the promoted replica rightly lacks it.
        let acked: i64 = cluster.cmd(to, &["WAIT", "1", "10000"]).await.unwrap();
        assert_eq!(acked, 1, "the replica acknowledged the migrated key");

        let (killed, promoted) = cluster.kill_master_of(key).await.unwrap();
        assert_eq!(killed, to);
        assert_ne!(promoted, killed);
        let value: String = cluster.cmd(promoted, &["GET", key]).await.unwrap();
        assert_eq!(value, "v", "the replica had it");
    }

    #[tokio::test]
    async fn tests_running_together_share_one_cluster() {
        let a = RedisCluster::shared().await.unwrap();
        let b = RedisCluster::shared().await.unwrap();
        assert_eq!(a.url(), b.url());
        assert_eq!(a.urls().len(), 6);
    }
}
