//! `pulse-chaos`: runs the fault scenarios and prints one line per scenario,
//! then `N passed, M failed`; exits non-zero on any failure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pulse_chaos::stack::{StackOptions, find_bin_dir};
use pulse_chaos::{Fault, RunOptions, ScenarioReport, scenario};

#[derive(Parser)]
#[command(
    version,
    about = "Pulse fault suite: real services, one fault at a time, every acknowledged event accounted for"
)]
struct Cli {
    /// The short form (what scripts/test runs): less load, one round per fault.
    #[arg(long)]
    short: bool,
    /// Run only this scenario (repeatable): pubsub-kill, pubsub-freeze,
    /// redis-restart-empty, write-pause, gateway-kill-drain, standalone-restart.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Times each fault is injected (default: 1 short, 3 full).
    #[arg(long)]
    rounds: Option<usize>,
    /// Where the service binaries are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the services' logs go, kept (default: a new directory under
    /// /tmp, removed when every scenario passes).
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Also write the reports as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Publish without idempotency keys: retries may then publish twice,
    /// and the suite must say so (a check of the suite, not of Pulse).
    #[arg(long)]
    without_idempotency_keys: bool,
    /// RUST_LOG of the services.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // On SIGINT or SIGTERM, dropping the run stops every service it started.
    let outcome = tokio::select! {
        outcome = run(cli) => outcome,
        () = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("pulse-chaos: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let faults = if cli.scenarios.is_empty() {
        Fault::ALL.to_vec()
    } else {
        cli.scenarios
            .iter()
            .map(|name| Fault::parse(name).with_context(|| format!("unknown scenario {name:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let keep_logs = cli.logs.is_some();
    let dir = match cli.logs {
        Some(dir) => dir,
        None => tempfile::Builder::new().prefix("pulse-chaos.").tempdir()?.keep(),
    };
    let stack =
        StackOptions { bin_dir: find_bin_dir(cli.bin_dir.as_deref())?, dir: dir.clone(), log_level: cli.log_level };
    let mut options = if cli.short { RunOptions::short(stack) } else { RunOptions::full(stack) };
    options.idempotency_keys = !cli.without_idempotency_keys;
    if let Some(rounds) = cli.rounds {
        options.rounds = rounds;
    }
    println!(
        "pulse-chaos: {} form, {} channels x {}/s, {} clients ({} away at each fault), {} round(s); logs in {}",
        if cli.short { "short" } else { "full" },
        options.channels,
        options.rate,
        options.clients,
        options.away,
        options.rounds,
        dir.display()
    );
    let mut reports = Vec::new();
    for fault in faults {
        let report = match scenario::run(fault, &options).await {
            Ok(report) => report,
            Err(err) => ScenarioReport {
                name: fault.name().into(),
                failures: vec![format!("the run broke: {err:#}")],
                logs: dir.join(fault.name()),
                ..ScenarioReport::default()
            },
        };
        println!("{}", report.line());
        for failure in &report.failures {
            println!("    failure: {failure}");
        }
        if !report.passed {
            for detail in report.details.iter().take(20) {
                println!("    {detail}");
            }
            println!("    logs: {}", report.logs.display());
        }
        reports.push(report);
    }
    let passed = reports.iter().filter(|r| r.passed).count();
    let failed = reports.len() - passed;
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if failed == 0 && !keep_logs {
        // Nothing to look into: do not leave a directory behind each run.
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}
