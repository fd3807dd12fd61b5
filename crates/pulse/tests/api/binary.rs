//! The built `pulse` binary itself: run from a directory with nothing
//! around it, and its `token` subcommand.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pulse_protocol::{Channel, ClientMessage, ControlMessage, ErrorCode};
use pulse_testkit::{WsClient, wait_until};

use crate::helpers::{DEADLINE, settings, spawn};

const PULSE: &str = env!("CARGO_BIN_EXE_pulse");

/// A `pulse` child process, killed when dropped.
struct Running {
    child: Child,
    url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary` in `dir` on a free port and reads the address it prints.
fn start(binary: &std::path::Path, dir: &std::path::Path) -> Running {
    let mut command = Command::new(binary);
    command.args(["--port", "0", "--no-demo"]).current_dir(dir);
    start_command(command)
}

/// Runs `command` (which starts `pulse`) and reads the address it prints.
fn start_command(mut command: Command) -> Running {
    let mut child = command
        .env_remove("PULSE_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, url)) = line.split_once("open ") {
                let _ = tx.send(url.trim().trim_end_matches('/').to_owned());
            }
        }
    });
    let url = rx.recv_timeout(DEADLINE).expect("pulse prints its address");
    Running { child, url }
}

/// Started with few open files allowed and the default `max_connections`
/// (100,000), connections past what the limit allows are refused with 503,
/// and `/healthz` keeps answering, instead of connections that get no answer
/// at all.
#[tokio::test]
async fn connections_past_the_open_file_limit_are_refused_with_503() {
    let mut command = Command::new("sh");
    // `ulimit -n` sets the soft and the hard limit: Pulse cannot raise it.
    command.args(["-c", "ulimit -n 256 && exec \"$0\" --port 0 --no-demo", PULSE]);
    // One test client opens them all at once.
    command.env("PULSE__LIMITS__CONNECTIONS_PER_IP_PER_SEC", "100000");
    let running = start_command(command);
    let ws_url = format!("{}/ws", running.url.replacen("http://", "ws://", 1));
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..230 {
        match WsClient::connect_status(&ws_url, &[]).await.expect("every connection gets an answer") {
            Ok(client) => open.push(client),
            Err(status) => {
                assert_eq!(status, 503);
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the limit leaves room for fewer than 230 connections");
    assert!(open.len() <= pulse_runtime::connections_within(256), "{} connections held", open.len());
    let health = reqwest::Client::builder().timeout(DEADLINE).build().unwrap();
    assert_eq!(health.get(format!("{}/healthz", running.url)).send().await.unwrap().status(), 200);
}

/// `http.workers` (here from the environment) sets how many HTTP workers
/// and WebSocket session threads run, as their thread names show (3: not
/// what the default gives on a machine of 2 or 4 cores).
#[tokio::test]
async fn http_workers_sets_the_worker_and_session_threads() {
    let mut command = Command::new(PULSE);
    command.args(["--port", "0", "--no-demo"]).env("PULSE__HTTP__WORKERS", "3");
    let running = start_command(command);
    let pid = running.child.id();
    // Thread names as the kernel keeps them (15 bytes).
    let count = |prefix: &str| thread_names(pid).iter().filter(|name| name.starts_with(prefix)).count();
    // Workers start after the address is printed.
    wait_until("three HTTP workers run", DEADLINE, || std::future::ready(count("actix-rt|system") >= 3)).await.unwrap();
    let names = thread_names(pid);
    assert_eq!((count("actix-rt|system"), count("pulse-ws-")), (3, 3), "threads: {names:?}");
}

/// The names of a process's threads (`/proc/<pid>/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Copied alone into an empty directory and run from there, the binary
/// still serves the dashboard with the right content types.
#[tokio::test]
async fn the_binary_serves_the_dashboard_copied_alone() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pulse");
    std::fs::copy(PULSE, &copy).unwrap();
    let running = start(&copy, dir.path());
    let http = reqwest::Client::builder().timeout(DEADLINE).build().unwrap();
    for (path, content_type) in
        [("/", "text/html"), ("/app.js", "javascript"), ("/pulse-client.js", "javascript"), ("/style.css", "text/css")]
    {
        let response = http.get(format!("{}{path}", running.url)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let got = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(got.contains(content_type), "{path}: {got}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{path}");
    }
}

fn mint(secret: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(PULSE);
    command.arg("token").args(args).env_remove("PULSE_CONFIG").env_remove("PULSE__AUTH__SECRET");
    if let Some(secret) = secret {
        command.env("PULSE__AUTH__SECRET", secret);
    }
    command.output().unwrap()
}

/// `pulse token` mints a token from the configured secret that a running
/// Pulse with that secret accepts for its channels, and only those.
#[tokio::test]
async fn pulse_token_mints_a_token_the_gateway_accepts_for_its_channels() {
    const SECRET: &str = "a-development-secret";
    let out = mint(Some(SECRET), &["--channel", "alerts", "--channel", "agent:*", "--sub", "dev", "--ttl", "10m"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT alone on stdout: {token}");

    let mut s = settings();
    s.auth.secret = SECRET.into();
    s.auth.anonymous = false;
    let pulse = spawn(s).await.unwrap();
    let mut client = WsClient::connect(&format!("ws://127.0.0.1:{}/ws?token={token}", pulse.port)).await.unwrap();
    match client.recv_control(DEADLINE).await.unwrap() {
        ControlMessage::Welcome { authenticated, .. } => assert!(authenticated),
        other => panic!("expected welcome, got {other:?}"),
    }
    for (channel, granted) in [("alerts", true), ("agent:web-1", true), ("decisions", false)] {
        client
            .send(&ClientMessage::Subscribe { channel: Channel::parse(channel).unwrap(), since: None })
            .await
            .unwrap();
        match client.recv_control(DEADLINE).await.unwrap() {
            ControlMessage::Subscribed { channel: c, .. } if granted => assert_eq!(c.as_str(), channel),
            ControlMessage::Error { code: ErrorCode::Forbidden, .. } if !granted => {}
            other => panic!("{channel}: unexpected {other:?}"),
        }
    }
    // The read API takes it too, with the same limits.
    let bearer = |path: &str| pulse.http.get(pulse.url(path)).bearer_auth(&token).send();
    assert_eq!(bearer("/api/v1/channels/alerts/history").await.unwrap().status(), 200);
    assert_eq!(bearer("/api/v1/channels/decisions/history").await.unwrap().status(), 403);
    pulse.stop().await.unwrap();

    // A ttl counts: a token minted for a second has a one-second lifetime.
    let short = mint(Some(SECRET), &["--channel", "alerts", "--ttl", "1s"]);
    let short = String::from_utf8(short.stdout).unwrap();
    let claims = pulse_auth::Verifier::hs256(SECRET.as_bytes()).verify(short.trim()).unwrap();
    assert!(claims.time_left() <= Duration::from_secs(1), "{claims:?}");
}

#[test]
fn pulse_token_refuses_without_a_secret_or_a_channel() {
    let out = mint(None, &["--channel", "alerts"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("auth.secret"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(!mint(Some("s"), &[]).status.success(), "--channel is required");
    assert!(!mint(Some("s"), &["--channel", "bad name"]).status.success(), "patterns are checked");
    assert!(!mint(Some("s"), &["--channel", "alerts", "--ttl", "soon"]).status.success(), "ttl is checked");
    assert!(!mint(Some("s"), &["--channel", "alerts", "--ttl", "0s"]).status.success(), "a token must live");
}
