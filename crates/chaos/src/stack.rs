//! The real services as child processes, configured through `PULSE__…`
//! environment variables (and a small file for the API key), each logging
//! to its own file in the run's directory.
//!
//! - [`Stack::distributed`]: a private Redis, `pulse-ingest`, two
//!   `pulse-gateway`s (each behind its own [`TcpProxy`] to Redis, so that
//!   their links can be frozen), two `pulse-heartbeat-checker`s.
//! - [`Stack::standalone`]: one `pulse` on its memory bus.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use pulse_testkit::{RedisServer, TcpProxy, free_port};
use tokio::process::{Child, Command};

/// The publisher API key every run configures.
pub const API_KEY: &str = "chaos-publisher-key-0123456789";

/// How long a service may take to become ready (a debug build on a loaded
/// 2-core machine).
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Where the service binaries are: `--bin-dir`, else `PULSE_BIN_DIR`, else
/// next to this executable (cargo puts every binary of the workspace in
/// one directory), else `$CARGO_TARGET_DIR/debug`, else `target/debug`.
pub fn find_bin_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let has_all = |dir: &Path| {
        ["pulse-gateway", "pulse-ingest", "pulse-heartbeat-checker", "pulse"].iter().all(|b| dir.join(b).is_file())
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = given {
        candidates.push(dir.to_path_buf());
    } else {
        if let Some(dir) = std::env::var_os("PULSE_BIN_DIR") {
            candidates.push(dir.into());
        }
        if let Ok(exe) = std::env::current_exe() {
            // The binary itself, or a test binary in `deps/`.
            for dir in exe.ancestors().skip(1).take(2) {
                candidates.push(dir.to_path_buf());
            }
        }
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
        candidates.push(target.join("debug"));
    }
    candidates.into_iter().find(|dir| has_all(dir)).with_context(|| {
        "the Pulse binaries were not found: build them with `cargo build -p pulse-ingest -p pulse-websocket-gateway \
         -p pulse-heartbeat-checker -p pulse --bins` (scripts/chaos does) or pass --bin-dir"
            .to_string()
    })
}

/// One service process, restartable on the same port.
pub struct Service {
    pub name: String,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub port: u16,
    log: PathBuf,
    cwd: PathBuf,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Service {
    fn new(name: &str, binary: PathBuf, port: u16, dir: &Path, http: reqwest::Client) -> Self {
        Self {
            name: name.into(),
            binary,
            args: Vec::new(),
            env: Vec::new(),
            port,
            log: dir.join(format!("{name}.log")),
            cwd: dir.to_path_buf(),
            child: None,
            http,
        }
    }

    fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `ws://127.0.0.1:PORT/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Starts the process (its output appended to its log).
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the process and waits until `/readyz` answers 200.
    ///
    /// # Errors
    /// When it exits or is not ready within [`READY_DEADLINE`].
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready().await
    }

    /// Waits until the started process answers `/readyz` with 200.
    ///
    /// # Errors
    /// When it exits or is not ready within [`READY_DEADLINE`].
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let give_up = tokio::time::Instant::now() + READY_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("{} exited at start ({status}); see {}", self.name, self.log.display());
            }
            if self.ready().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= give_up {
                bail!("{} not ready within {READY_DEADLINE:?}; see {}", self.name, self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn ready(&self) -> bool {
        let answer = self.http.get(format!("{}/readyz", self.base())).timeout(Duration::from_secs(2)).send().await;
        answer.is_ok_and(|r| r.status().is_success())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// SIGKILL, as a crash or an OOM kill; waits for the exit.
    ///
    /// # Errors
    /// When waiting fails.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().ok();
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM (drain and exit, as on a rolling update); waits for the exit,
    /// killing the process after `deadline`. Returns whether it exited by
    /// itself in time.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub async fn terminate(&mut self, deadline: Duration) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else { return Ok(true) };
        if let Some(pid) = child.id() {
            let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
            anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        }
        match tokio::time::timeout(deadline, child.wait()).await {
            Ok(exited) => {
                exited?;
                Ok(true)
            }
            Err(_) => {
                child.start_kill().ok();
                child.wait().await?;
                Ok(false)
            }
        }
    }

    /// The last lines of the log, for a failure report.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// Settings shared by the runs.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub bin_dir: PathBuf,
    /// Where logs go (kept after the run).
    pub dir: PathBuf,
    /// `RUST_LOG` of the services.
    pub log_level: String,
}

/// The running services of one scenario.
pub struct Stack {
    pub redis: Option<RedisServer>,
    /// One per gateway, in front of Redis.
    pub proxies: Vec<TcpProxy>,
    pub ingest: Option<Service>,
    pub gateways: Vec<Service>,
    pub checkers: Vec<Service>,
    pub standalone: Option<Service>,
}

fn ingest_config(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("publisher-key.toml");
    std::fs::write(
        &path,
        format!("[[ingest.api_keys]]\nname = \"chaos\"\nkey = \"{API_KEY}\"\nrole = \"publisher\"\n"),
    )?;
    Ok(path)
}

impl Stack {
    /// Redis, ingest, two gateways behind proxies, two heartbeat-checkers,
    /// all ready.
    ///
    /// # Errors
    /// When a part does not start.
    pub async fn distributed(options: &StackOptions) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let dir = &options.dir;
        std::fs::create_dir_all(dir)?;
        let redis = RedisServer::start().await?;
        let redis_addr = format!("127.0.0.1:{}", redis.port()).parse()?;
        let bin = |name: &str| options.bin_dir.join(name);
        let config = ingest_config(dir)?;
        let common = |s: Service, redis_url: &str| {
            s.env("PULSE__HTTP__HOST", "127.0.0.1")
                .env("PULSE__REDIS__URL", redis_url)
                .env("RUST_LOG", options.log_level.clone())
        };
        let mut stack = Self {
            redis: None,
            proxies: Vec::new(),
            ingest: None,
            gateways: Vec::new(),
            checkers: Vec::new(),
            standalone: None,
        };
        let mut ingest =
            common(Service::new("ingest", bin("pulse-ingest"), free_port()?, dir, http.clone()), &redis.url())
                .arg("--config")
                .arg(config.display().to_string())
                // Shorter than a Redis write pause (3 s), so that a pause is
                // answered 503 and the publisher retries, as in production.
                .env("PULSE__INGEST__BACKEND_TIMEOUT", "1s")
                .env("PULSE__INGEST__RETRY_AFTER_SECS", "1")
                // The run reads channel histories at the end.
                .env("PULSE__AUTH__ANONYMOUS", "true");
        ingest.env.push(("PULSE__HTTP__PORT".into(), ingest.port.to_string()));
        for i in 0..2 {
            let proxy = TcpProxy::start(redis_addr).await?;
            let mut gateway = common(
                Service::new(&format!("gateway-{i}"), bin("pulse-gateway"), free_port()?, dir, http.clone()),
                &proxy.redis_url(),
            )
            .env("PULSE__AUTH__ANONYMOUS", "true")
            .env("PULSE__LIMITS__CONNECTIONS_PER_IP_PER_SEC", "1000")
            .env("PULSE__GATEWAY__HEARTBEAT_INTERVAL", "2s")
            .env("PULSE__GATEWAY__CLIENT_TIMEOUT", "10s")
            .env("PULSE__GATEWAY__DRAIN_WINDOW", "1s");
            gateway.env.push(("PULSE__HTTP__PORT".into(), gateway.port.to_string()));
            stack.proxies.push(proxy);
            stack.gateways.push(gateway);
        }
        for i in 0..2 {
            let mut checker = common(
                Service::new(&format!("checker-{i}"), bin("pulse-heartbeat-checker"), free_port()?, dir, http.clone()),
                &redis.url(),
            );
            checker.env.push(("PULSE__HTTP__PORT".into(), checker.port.to_string()));
            stack.checkers.push(checker);
        }
        stack.redis = Some(redis);
        // Start them all, then wait for each: the builds start in parallel.
        ingest.spawn()?;
        for s in stack.gateways.iter_mut().chain(stack.checkers.iter_mut()) {
            s.spawn()?;
        }
        stack.ingest = Some(ingest);
        for s in stack.services_mut() {
            s.wait_ready().await?;
        }
        Ok(stack)
    }

    /// One standalone `pulse` on its memory bus, ready.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn standalone(options: &StackOptions) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        std::fs::create_dir_all(&options.dir)?;
        let config = ingest_config(&options.dir)?;
        let port = free_port()?;
        let mut pulse = Service::new("pulse", options.bin_dir.join("pulse"), port, &options.dir, http)
            .arg("--config")
            .arg(config.display().to_string())
            .arg("--no-demo")
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .env("RUST_LOG", options.log_level.clone())
            .env("PULSE__LIMITS__CONNECTIONS_PER_IP_PER_SEC", "1000")
            .env("PULSE__GATEWAY__HEARTBEAT_INTERVAL", "2s")
            .env("PULSE__GATEWAY__CLIENT_TIMEOUT", "10s")
            .env("PULSE__GATEWAY__DRAIN_WINDOW", "1s");
        pulse.start().await?;
        Ok(Self {
            redis: None,
            proxies: Vec::new(),
            ingest: None,
            gateways: Vec::new(),
            checkers: Vec::new(),
            standalone: Some(pulse),
        })
    }

    /// Every service process.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.ingest.iter().chain(&self.gateways).chain(&self.checkers).chain(&self.standalone)
    }

    fn services_mut(&mut self) -> impl Iterator<Item = &mut Service> {
        self.ingest
            .iter_mut()
            .chain(self.gateways.iter_mut())
            .chain(self.checkers.iter_mut())
            .chain(self.standalone.iter_mut())
    }

    /// Where publishes go.
    pub fn publish_base(&self) -> anyhow::Result<String> {
        self.ingest.as_ref().or(self.standalone.as_ref()).map(Service::base).context("no ingest")
    }

    /// The WebSocket URLs clients use.
    pub fn ws_urls(&self) -> Vec<String> {
        self.gateways.iter().chain(&self.standalone).map(Service::ws_url).collect()
    }

    /// The services whose `/readyz` is not 200 now.
    pub async fn not_ready(&self) -> Vec<String> {
        let mut down = Vec::new();
        for s in self.services() {
            if !s.ready().await {
                down.push(s.name.clone());
            }
        }
        down
    }

    /// The Redis server.
    ///
    /// # Errors
    /// In a standalone stack.
    pub fn redis(&self) -> anyhow::Result<&RedisServer> {
        self.redis.as_ref().context("no Redis in this stack")
    }

    /// Stops everything.
    pub async fn stop(mut self) {
        for s in self.services_mut() {
            let _ = s.kill().await;
        }
        for p in &self.proxies {
            p.cut();
        }
    }
}
