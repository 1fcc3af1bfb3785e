//! Normalization throughput: real exports (small and ~390 KB) read in place from
//! `../shared/routeros/exports`, and synthetic exports of 1, 4, 16 and 32 MiB, for both
//! versions (and v2 followed by SHA-256, what a worker does per backup).
//!
//! Why several synthetic sizes: one large input gives a throughput, several show whether
//! the cost grows linearly with size (BENCHMARKS.md plots time against size). Large
//! inputs use flat sampling: criterion's default linear sampling would run a 32 MiB input
//! hundreds of times per sample set.
//!
//! Run: `cargo bench --bench normalize` (`-- --warm-up-time 1 --measurement-time 2` for a
//! quick pass). Criterion prints MB/s per case and writes
//! `target/criterion/normalize/<function>/<input>/new/{estimates,benchmark}.json`, which
//! `bench/report.py --criterion target/criterion` turns into records.

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use rosbackup_core::normalize::{Version, hash, normalize};
use std::hint::black_box;
use std::path::PathBuf;

fn real(name: &str) -> Option<Vec<u8>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/routeros/exports")
        .join(name);
    std::fs::read(p).ok()
}

/// A synthetic export of about `size` bytes: header, CRLF, wrapped lines, annotations.
fn synthetic(size: usize) -> Vec<u8> {
    let mut out =
        b"# 2026-01-15 10:30:00 by RouterOS 7.16\r\n# software id = ABCD-EFGH\r\n#\r\n".to_vec();
    let mut i = 0u64;
    out.extend_from_slice(b"/ip firewall address-list\r\n");
    while out.len() < size {
        if i.is_multiple_of(97) {
            out.extend_from_slice(b"# Interface not active\r\n");
        }
        out.extend_from_slice(
            format!(
                "add address=10.{}.{}.{} comment=\"synthetic entry {i} with a long comment that wr\\\r\n    aps\" list=blocklist   \r\n",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )
            .as_bytes(),
        );
        i += 1;
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for name in [
        "gh-alexx-cap1-v7.10.rsc",
        "gh-Defm-anna-v7.8-terse-387k.rsc",
    ] {
        match real(name) {
            Some(b) => inputs.push((name.to_string(), b)),
            None => eprintln!("skipping {name}: ../shared/routeros/exports not found"),
        }
    }
    for mib in [1usize, 4, 16, 32] {
        inputs.push((format!("synthetic-{mib:02}MiB"), synthetic(mib << 20)));
    }
    let mut g = c.benchmark_group("normalize");
    for (name, raw) in &inputs {
        g.throughput(Throughput::Bytes(raw.len() as u64));
        // Small inputs keep criterion's defaults (so `--sample-size` on the command line
        // applies); large ones take 10 flat samples, each a few runs of the whole input.
        if raw.len() >= 1 << 20 {
            g.sampling_mode(SamplingMode::Flat);
            g.sample_size(10);
        } else {
            g.sampling_mode(SamplingMode::Auto);
        }
        for v in [Version::V1, Version::V2] {
            g.bench_with_input(BenchmarkId::new(format!("v{v}"), name), raw, |b, raw| {
                b.iter(|| normalize(black_box(raw), v))
            });
        }
        g.bench_with_input(BenchmarkId::new("v2+sha256", name), raw, |b, raw| {
            b.iter(|| hash(&normalize(black_box(raw), Version::V2)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
