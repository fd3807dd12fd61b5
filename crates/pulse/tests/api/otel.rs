//! One trace from a probe's POST through the bus to the gateway's send,
//! exported at the default log level to a real OTLP receiver: the built
//! `pulse` binary configured only by the standard `OTEL_*` variables, over
//! gRPC (in memory) and over HTTP/protobuf (on Redis).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use fake_opentelemetry_collector::FakeCollectorServer;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use pulse_protocol::{Channel, ClientMessage, ControlMessage};
use pulse_testkit::{RedisServer, WsClient};

use crate::helpers::{DEADLINE, report};

const KEY: &str = "otel-agent-key";

/// A span as the receiver saw it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    name: String,
}

/// A running `pulse`, killed when dropped.
struct Pulse {
    child: Child,
    url: String,
    _config: tempfile::NamedTempFile,
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with an agent key, no demo, and `env`; no `RUST_LOG`,
/// so the default log level applies.
fn start_pulse(extra_args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Pulse> {
    let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(
        config.path(),
        format!("[[ingest.api_keys]]\nname = \"otel-test\"\nkey = \"{KEY}\"\nrole = \"agent\"\n"),
    )?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_pulse"));
    command
        .args(["--port", "0", "--no-demo", "--config"])
        .arg(config.path())
        .args(extra_args)
        .env_remove("RUST_LOG")
        .env_remove("PULSE_CONFIG")
        // Export each batch quickly instead of every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, url)) = line.split_once("open ") {
                let _ = tx.send(url.trim().trim_end_matches('/').to_owned());
            }
        }
    });
    let url = rx.recv_timeout(DEADLINE).context("pulse prints its address")?;
    Ok(Pulse { child, url, _config: config })
}

/// Subscribes to the agent's channel, posts its report (no `traceparent`:
/// ingest starts the trace) and returns the trace id the event carries.
async fn post_and_receive(pulse: &Pulse, agent: &str) -> anyhow::Result<String> {
    let ws = format!("{}/ws", pulse.url.replacen("http", "ws", 1));
    let mut client = WsClient::connect(&ws).await?;
    client.recv_control(DEADLINE).await?;
    client.send(&ClientMessage::Subscribe { channel: Channel::parse(&format!("agent:{agent}"))?, since: None }).await?;
    match client.recv_control(DEADLINE).await? {
        ControlMessage::Subscribed { .. } => {}
        other => anyhow::bail!("expected subscribed, got {other:?}"),
    }
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/reports", pulse.url))
        .bearer_auth(KEY)
        .json(&report(agent, "otel-r-1", "ok"))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 202, "report refused: {}", response.status());
    let event = loop {
        let event = client.recv_event(DEADLINE).await?;
        if event.event_type.as_str() == "report_received" {
            break event;
        }
    };
    let trace = event.trace.context("the event carries its trace")?;
    let trace_id = trace.split('-').nth(1).context("traceparent has a trace id")?.to_owned();
    Ok(trace_id)
}

/// Waits until `spans()` holds, for `trace_id`, ingest's request span and
/// the gateway's fan-out span.
async fn wait_for_trace(
    trace_id: &str,
    mut spans: impl AsyncFnMut() -> Vec<Span>,
) -> anyhow::Result<HashMap<String, usize>> {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    let mut seen: Vec<Span> = Vec::new();
    loop {
        seen.extend(spans().await);
        let names: HashMap<String, usize> =
            seen.iter().filter(|s| s.trace_id == trace_id).fold(HashMap::new(), |mut m, s| {
                *m.entry(s.name.clone()).or_default() += 1;
                m
            });
        if names.contains_key("http_request") && names.contains_key("fan_out") {
            return Ok(names);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < give_up,
            "trace {trace_id} incomplete: {names:?}; all spans: {:?}",
            seen.iter().map(|s| (&s.name, &s.trace_id)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_trace_from_post_to_send_over_otlp_grpc() -> anyhow::Result<()> {
    let mut collector = FakeCollectorServer::start().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let endpoint = collector.endpoint();
    let pulse = start_pulse(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "pulse-otel-test"),
        ],
    )?;
    let trace_id = post_and_receive(&pulse, "otel-grpc-1").await?;
    wait_for_trace(&trace_id, async || {
        collector
            .exported_spans(1, Duration::from_millis(200))
            .await
            .into_iter()
            .map(|s| Span { trace_id: s.trace_id, name: s.name })
            .collect()
    })
    .await?;
    Ok(())
}

/// A minimal OTLP/HTTP receiver: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, decoded with the OpenTelemetry protocol's
/// own message types.
async fn http_receiver() -> anyhow::Result<(String, Arc<Mutex<Vec<Span>>>, Arc<Mutex<Vec<String>>>)> {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let services: Arc<Mutex<Vec<String>>> = Arc::default();
    let (s, v) = (spans.clone(), services.clone());
    let server = HttpServer::new(move || {
        let (spans, services) = (s.clone(), v.clone());
        App::new().route(
            "/v1/traces",
            web::post().to(move |req: actix_web::HttpRequest, body: web::Bytes| {
                let (spans, services) = (spans.clone(), services.clone());
                async move {
                    let is_protobuf = req
                        .headers()
                        .get("content-type")
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"));
                    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
                        return HttpResponse::BadRequest().finish();
                    };
                    if !is_protobuf {
                        return HttpResponse::UnsupportedMediaType().finish();
                    }
                    for resource_spans in request.resource_spans {
                        let resource = resource_spans.resource.unwrap_or_default();
                        for attribute in resource.attributes.iter().filter(|a| a.key == "service.name") {
                            services.lock().unwrap().push(format!("{:?}", attribute.value));
                        }
                        for scope in resource_spans.scope_spans {
                            for span in scope.spans {
                                let trace_id = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                                spans.lock().unwrap().push(Span { trace_id, name: span.name });
                            }
                        }
                    }
                    // An empty ExportTraceServiceResponse.
                    HttpResponse::Ok().content_type("application/x-protobuf").body(Vec::new())
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))?;
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    Ok((format!("http://127.0.0.1:{port}"), spans, services))
}

#[actix_web::test]
async fn one_trace_from_post_through_redis_to_send_over_otlp_http() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (endpoint, spans, services) = http_receiver().await?;
    let redis_url = redis.url();
    let pulse = start_pulse(
        &["--redis", &redis_url],
        &[
            // A base URL: `/v1/traces` is appended.
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "pulse-otel-http-test"),
        ],
    )?;
    let trace_id = post_and_receive(&pulse, "otel-http-1").await?;
    wait_for_trace(&trace_id, async || std::mem::take(&mut *spans.lock().unwrap())).await?;
    let services = services.lock().unwrap().clone();
    assert!(services.iter().any(|s| s.contains("pulse-otel-http-test")), "OTEL_SERVICE_NAME honoured: {services:?}");
    Ok(())
}
