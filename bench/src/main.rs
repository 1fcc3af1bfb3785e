//! `rosbackup-bench`: the benchmark suites behind `bench/run` and BENCHMARKS.md.
//!
//! Why a separate binary: benchmarks start fleets of simulated routers, databases with a
//! million rows and Python peers; none of that belongs in the operator's `rosbackup` CLI.
//! Each suite prints its numbers and appends them as JSON lines ([`record`]) to `--out`;
//! `bench/report.py` turns the lines into tables and plots. Numbers are never asserted:
//! nothing here fails on speed.

mod cost;
mod enqueuer;
mod fleet;
mod peers;
mod procstat;
mod record;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "rosbackup-bench", about = "rosbackup benchmark suites")]
struct Cli {
    /// Append results as JSON lines to this file.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Repeat each case this many times (medians and spread come from the repeats).
    #[arg(long, global = true, default_value_t = 3)]
    runs: u32,
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Subcommand, Debug)]
enum Suite {
    /// The Python peers (asyncssh, netmiko) against the simulated fleet.
    Peers(peers::Args),
    /// Enqueuer scale: steady-state ticks, scheduling every device, draining a backlog.
    Enqueuer(enqueuer::EnqueuerArgs),
    /// Worker CPU and wall time per backup by phase, against the bare SSH export.
    Cost(cost::CostArgs),
    /// The real fleet (enqueuer, worker processes, simulator process) on a backlog.
    Fleet(fleet::FleetArgs),
    /// Print a job statement as the worker sends it (`lease`, `leases`, `outcome`, …), for
    /// experiments on it outside the worker (`bench/pgbench-leases`).
    Statement {
        /// The statement's name; an unknown name lists the names.
        name: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sink = record::Sink::new(cli.out.as_deref());
    match cli.suite {
        Suite::Peers(a) => peers::run(a, &sink, cli.runs),
        Suite::Enqueuer(a) => {
            tokio::runtime::Runtime::new()?.block_on(enqueuer::run(a, cli.runs, &sink))
        }
        Suite::Cost(a) => cost::run(&a, cli.runs, &sink),
        Suite::Fleet(a) => fleet::run(&a, cli.runs, &sink),
        Suite::Statement { name } => {
            let statements = rosbackup::store::lane_statements();
            match statements.iter().find(|(n, _)| *n == name) {
                Some((_, sql)) => {
                    println!("{sql}");
                    Ok(())
                }
                None => {
                    let names: Vec<&str> = statements.iter().map(|(n, _)| *n).collect();
                    anyhow::bail!("no statement {name:?}; one of {}", names.join(", "))
                }
            }
        }
    }
}
