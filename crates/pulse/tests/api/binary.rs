//! The built `pulse` binary itself: run from a directory with nothing
//! around it, and its `token` subcommand.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pulse_protocol::{Channel, ClientMessage, ControlMessage, ErrorCode};
use pulse_testkit::WsClient;

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
    let mut child = Command::new(binary)
        .args(["--port", "0", "--no-demo"])
        .current_dir(dir)
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
