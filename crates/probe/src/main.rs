//! `pulse-probe`: simulated Probe agents posting reports to a Pulse server.

use std::time::Duration;

use clap::Parser;
use pulse_probe::{Fleet, FleetConfig};
use pulse_runtime::{Shutdown, TelemetrySettings};

/// Simulated Probe agents posting real reports to Pulse's HTTP API.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Pulse's address (standalone, or ingest's port).
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "PULSE_PROBE_URL")]
    url: String,
    /// API key with the `agent` role.
    #[arg(long, default_value = "demo-agent-key", env = "PULSE_PROBE_KEY")]
    key: String,
    /// API key with the `publisher` role: also post a decision per L3 failure.
    #[arg(long, env = "PULSE_PROBE_PUBLISHER_KEY")]
    publisher_key: Option<String>,
    /// Number of agents.
    #[arg(long, default_value_t = 30)]
    agents: usize,
    /// How often each agent reports, such as `2s` or `500ms`.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    interval: Duration,
    /// Chance per report that a healthy agent starts failing an L3 check.
    #[arg(long, default_value_t = 0.02)]
    rate: f64,
    /// Agents that stop reporting after `--silent-after` (to show offline).
    #[arg(long, default_value_t = 0)]
    silent: usize,
    /// When the silent agents stop.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    silent_after: Duration,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// How often to log the running totals.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    summary_every: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    pulse_runtime::duration::parse(text).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = pulse_runtime::init_telemetry("pulse-probe", &TelemetrySettings::default())?;
    let fleet = Fleet::new(FleetConfig {
        base_url: args.url,
        api_key: args.key,
        agents: args.agents,
        interval: args.interval,
        l3_failure_rate: args.rate,
        silent_agents: args.silent,
        silent_after: args.silent_after,
        seed: args.seed,
        publisher_key: args.publisher_key,
        ..FleetConfig::default()
    })?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal();
    if let Some(limit) = args.duration {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            shutdown.trigger();
        });
    }
    let stats = fleet.stats();
    let reporter = {
        let shutdown = shutdown.clone();
        let every = args.summary_every.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => tracing::info!(summary = %stats.snapshot(), "probe fleet running"),
                }
            }
        })
    };
    let summary = fleet.run(shutdown).await;
    reporter.abort();
    println!("pulse-probe: {summary}");
    Ok(())
}
