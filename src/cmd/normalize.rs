//! `rosbackup normalize` and `rosbackup hash`: the worker's normalization as a filter.
//!
//! They exist so that an operator (or a script) can check by hand what the archive and
//! the change detection will see: the same bytes and the same hash as a backup of that
//! export, from a file or stdin, without a device, a database or the network. One
//! argument struct for both, since `hash` is `normalize` reduced to its digest.

use crate::config::Env;
use crate::normalize::{self, Version};
use anyhow::Context;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct NormalizeArgs {
    /// 1 = the seed's rules (byte-compatible), 2 = real RouterOS headers (default: NORMALIZATION_VERSION or 2).
    #[arg(long, value_parser = parse_version)]
    normalization_version: Option<Version>,
    file: Option<PathBuf>,
}

/// `--normalization-version`: the library's names for the versions, its error as clap's.
pub(crate) fn parse_version(s: &str) -> Result<Version, String> {
    s.parse()
        .map_err(|e: normalize::UnknownVersion| e.to_string())
}

/// Normalized bytes on stdout, or (`hash_only`) their SHA-256 and a newline.
pub fn run(env: &Env, a: NormalizeArgs, hash_only: bool) -> anyhow::Result<ExitCode> {
    let version = match a.normalization_version {
        Some(v) => v,
        None => env.parse("NORMALIZATION_VERSION")?,
    };
    let raw = match &a.file {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
            buf
        }
    };
    let normalized = normalize::normalize(&raw, version);
    let mut out = std::io::stdout().lock();
    if hash_only {
        writeln!(out, "{}", normalize::hash(&normalized))?;
    } else {
        out.write_all(&normalized)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
