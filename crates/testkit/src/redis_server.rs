use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::free_port;

/// A private `redis-server` for one test, on a free loopback port, keeping
/// nothing on disk. Dropping it kills the process.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    pub async fn start() -> anyhow::Result<Self> {
        // Another process may take a "free" port before we bind it: try a few.
        let mut last_error = None;
        for _ in 0..5 {
            let mut server = Self { port: free_port()?, dir: tempfile::tempdir()?, child: None };
            match server.spawn().await {
                Ok(()) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:{port}/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A plain client for assertions and fault injection.
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        Ok(redis::Client::open(self.url())?)
    }

    /// Runs one command and returns its reply.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> anyhow::Result<T> {
        let mut conn = self.client()?.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args.first().context("empty command")?);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// Kills every pub/sub connection (`CLIENT KILL TYPE pubsub`), as a
    /// network blip would. Returns how many were killed.
    pub async fn kill_pubsub_clients(&self) -> anyhow::Result<u64> {
        self.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).await
    }

    /// Kills every normal (non-pub/sub) client connection.
    pub async fn kill_normal_clients(&self) -> anyhow::Result<u64> {
        self.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]).await
    }

    /// Stops the server (SIGKILL: nothing is saved, as in a crash).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().context("waiting for redis-server to exit")?;
        }
        Ok(())
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        // The port was ours a moment ago; retry briefly while the kernel
        // releases it.
        let mut attempts = 0;
        loop {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                Err(err) if attempts < 20 => {
                    attempts += 1;
                    tracing_free_log(&err);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn binary() -> PathBuf {
        std::env::var_os("REDIS_SERVER").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("redis-server"))
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(Self::binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed? scripts/test installs it)")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("redis-server exited at start on port {}: {status}", self.port);
            }
            if self.ping().await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.stop()?;
                bail!("redis-server on port {} did not answer PING within 10 s", self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let client = self.client()?;
        let mut conn =
            tokio::time::timeout(Duration::from_millis(500), client.get_multiplexed_async_connection()).await??;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

fn tracing_free_log(err: &anyhow::Error) {
    if std::env::var_os("TEST_LOG").is_some() {
        eprintln!("redis-server restart attempt failed: {err:#}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}
