#!/usr/bin/env bash
# One command to see rosbackup work: builds it, then runs `rosbackup demo` — PostgreSQL,
# Redis and NATS at their URLs (or private instances from installed binaries), a
# simulated fleet of RouterOS devices, an enqueuer, two workers, an archiver (versions
# and diffs) and the dashboard. The processes' logs stay in the folder it names.
# Flags go to `rosbackup demo` (try --help); --once exits after every healthy device
# was backed up once.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null; then
  echo "demo.sh: cargo not found — install Rust from https://rustup.rs first" >&2
  exit 1
fi
if [ ! -x target/release/rosbackup ]; then
  echo "building rosbackup (release; the first build takes 5-15 minutes and about 1.5 GB of disk)…"
fi
cargo build --release --bin rosbackup
exec ./target/release/rosbackup demo "$@"
