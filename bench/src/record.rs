//! One measured number, as a JSON line.
//!
//! Why: every suite (criterion aside) appends its numbers to one JSONL file in the same
//! shape, so the report (`bench/report.py`) can take medians and spreads over runs, compute
//! ratios against the peers and draw plots without knowing how each suite works.

use serde::Serialize;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A single measurement: `suite` + `case` + `metric` identify it; `run` numbers repeats.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// `cost`, `fleet`, `enqueuer`, `peers`, …
    pub suite: String,
    /// Human-readable case name, stable across runs (e.g. `1000 devices, slow, 1 worker`).
    pub case: String,
    /// e.g. `backups_per_s`, `cpu_ms_per_backup`, `p99_latency_ms`, `peak_rss_mib`.
    pub metric: String,
    pub unit: String,
    pub value: f64,
    /// 1-based repeat number.
    pub run: u32,
    /// Parameters of the case (devices, workers, concurrency, delay_ms, tool, …) so plots
    /// can use them as axes.
    pub params: serde_json::Value,
}

/// Appends records to a JSONL file (or only prints them when there is none).
#[derive(Debug, Clone)]
pub struct Sink {
    path: Option<PathBuf>,
}

impl Sink {
    pub fn new(path: Option<&Path>) -> Sink {
        Sink {
            path: path.map(Path::to_path_buf),
        }
    }

    /// Prints the record as one human-readable line and appends it to the file.
    pub fn put(&self, r: &Record) -> anyhow::Result<()> {
        println!(
            "{:<9} {:<48} {:<24} {:>12.3} {:<8} (run {})",
            r.suite, r.case, r.metric, r.value, r.unit, r.run
        );
        if let Some(p) = &self.path {
            let mut f = OpenOptions::new().create(true).append(true).open(p)?;
            serde_json::to_writer(&mut f, r)?;
            f.write_all(b"\n")?;
        }
        Ok(())
    }
}
