//! `pulse-bench`: load generator for Pulse gateways, and the reference
//! broadcaster it is compared with. See `docs/benchmarks.md`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pulse_bench::reference::{self, ReferenceConfig};
use pulse_bench::{Layout, Publisher, RunConfig, report};
use pulse_bus::{RedisBus, RedisBusConfig};
use pulse_protocol::Channel;

#[derive(Parser)]
#[command(version, about = "Benchmark for Pulse gateways")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open N WebSocket clients, publish at a rate, report delivery,
    /// loss, latency and the server's CPU and memory.
    Run(RunArgs),
    /// The minimal reference broadcaster (one Redis channel to every client).
    ReferenceServer(ReferenceArgs),
    /// How many probe reports one pulse-ingest takes: lean keep-alive HTTP
    /// clients post reports as fast as ingest answers; reports the rate,
    /// failures and the CPU per report of ingest and Redis.
    Ingest(IngestArgs),
}

#[derive(Args)]
struct IngestArgs {
    /// Ingest's base URL (`http://host:port`).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    url: String,
    /// An agent API key.
    #[arg(long, env = "PULSE_BENCH_API_KEY")]
    api_key: String,
    /// Agents the reports are spread over.
    #[arg(long, default_value_t = 100)]
    agents: u64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Requests in flight per connection (HTTP/1.1 pipelining).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Seconds of posting.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Reports per second at most; as fast as ingest answers when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// PID of ingest, for its CPU per report.
    #[arg(long)]
    ingest_pid: Option<u32>,
    /// Redis of that ingest, for its CPU per report and the published-events check.
    #[arg(long)]
    redis_url: Option<String>,
    #[arg(long, default_value = "pulse:")]
    prefix: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Gateway WebSocket URL; repeat for several gateways.
    #[arg(long = "url", default_value = "ws://127.0.0.1:8080/ws")]
    urls: Vec<String>,
    /// Number of clients.
    #[arg(long, short = 'n', default_value_t = 100)]
    clients: usize,
    /// Channel every client subscribes to.
    #[arg(long, default_value = "bench")]
    channel: String,
    /// Each client on its own `{agent-prefix}{i}` channel plus `--channel`;
    /// 1 % of the events go to `--channel` (every client), the rest to the agent channels in turn.
    #[arg(long)]
    many_channels: bool,
    #[arg(long, default_value = "agent:bench-")]
    agent_prefix: String,
    /// Events per second (all channels together).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Padding bytes in each event's data (0 gives Pulse frames of ~144 B).
    #[arg(long, default_value_t = 0)]
    pad: usize,
    /// Seconds to wait for late deliveries after publishing.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Hold the connections this many seconds without publishing, for
    /// memory per connection.
    #[arg(long)]
    idle: bool,
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Do not subscribe (idle mode: what a bare connection costs).
    #[arg(long)]
    no_subscribe: bool,
    /// Redis URL for publishing directly on the bus.
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    #[arg(long, default_value = "pulse:")]
    prefix: String,
    /// Publish through ingest's API at this base URL instead of the bus.
    #[arg(long)]
    ingest_url: Option<String>,
    /// Publisher API key for `--ingest-url` (an agent key with `--reports`).
    #[arg(long, env = "PULSE_BENCH_API_KEY", default_value = "")]
    api_key: String,
    /// With `--ingest-url`: post probe reports (`/api/v1/reports`) from
    /// `--agents` simulated agents instead of generic events; subscribe
    /// the clients to `reports` to see them.
    #[arg(long)]
    reports: bool,
    #[arg(long, default_value_t = 100)]
    agents: u64,
    /// PID of the server to measure (CPU, RSS) from /proc.
    #[arg(long, alias = "gateway-pid")]
    server_pid: Option<u32>,
    /// Bind clients to 127.0.x.y source addresses (default: when > 5,000 clients).
    #[arg(long)]
    spread_sources: Option<bool>,
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Label of the run in the output.
    #[arg(long, default_value = "run")]
    label: String,
}

#[derive(Args)]
struct ReferenceArgs {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    /// Redis pub/sub channel (`{prefix}ch:{channel}` of the Pulse bus).
    #[arg(long, default_value = "pulse:{ch:bench}")]
    redis_channel: String,
    /// Frames queued per client before it is dropped as too slow: deep
    /// enough that the floor never sheds load a slow load generator causes.
    #[arg(long, default_value_t = 8192)]
    queue: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Ingest(args) => ingest(args).await,
        Command::ReferenceServer(args) => {
            pulse_bench::run::raise_nofile();
            let (addr, serving) = reference::serve(ReferenceConfig {
                listen: args.listen,
                redis_url: args.redis_url,
                redis_channel: args.redis_channel,
                queue: args.queue,
            })
            .await?;
            println!("reference server listening on ws://{addr}/ws");
            tokio::select! {
                done = serving => done,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
    }
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let addr = args.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let report = pulse_bench::ingest::run(pulse_bench::ingest::IngestConfig {
        addr,
        api_key: args.api_key,
        agents: args.agents,
        connections: args.connections,
        pipeline: args.pipeline,
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        ingest_pid: args.ingest_pid,
        redis_url: args.redis_url,
        prefix: args.prefix,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", pulse_bench::ingest::summary(&report));
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let channel = Channel::parse(&args.channel).context("--channel")?;
    let layout = if args.many_channels {
        Layout::PerClient { prefix: args.agent_prefix.clone(), shared: channel }
    } else {
        Layout::Single(channel)
    };
    let config = RunConfig {
        urls: args.urls.clone(),
        clients: args.clients,
        layout,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        pad: args.pad,
        drain: Duration::from_secs_f64(args.drain),
        connect_concurrency: args.connect_concurrency,
        spread_sources: args.spread_sources.unwrap_or(args.clients > 5_000),
        server_pid: args.server_pid,
        idle_hold: args.idle.then(|| Duration::from_secs_f64(args.hold)),
        max_in_flight: args.max_in_flight,
        subscribe: !args.no_subscribe,
    };
    let publisher = if args.idle {
        None
    } else if let Some(base) = &args.ingest_url {
        Some(if args.reports {
            Publisher::reports(base, &args.api_key, args.agents)
        } else {
            Publisher::ingest(base, &args.api_key)
        })
    } else {
        let bus = RedisBus::connect(RedisBusConfig {
            url: args.redis_url.clone(),
            prefix: args.prefix.clone(),
            pool_size: 8,
            ..RedisBusConfig::default()
        })
        .await
        .context("connecting to Redis")?;
        Some(Publisher::Bus(Arc::new(bus)))
    };
    let report = pulse_bench::run(&config, publisher).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"label": args.label, "report": report}))?);
    } else {
        print!("{}", report::table(&args.label, &report));
    }
    Ok(())
}
