#!/usr/bin/env python3
"""Turn one benchmark run into tables, target checks and plots.

Reads RESULTS_DIR/records.jsonl (one JSON object per line: suite, case, metric, unit,
value, run, params — see bench/src/record.rs), RESULTS_DIR/machine.json, criterion's
estimates for the normalize bench (RESULTS_DIR/criterion/ or --criterion DIR, laid out as
criterion writes it: <group>/<function>/<input>/new/{estimates,benchmark}.json) and
latency samples (RESULTS_DIR/latency*.{jsonl,txt}: one number of milliseconds per line,
or a JSON object with latency_ms).

Writes RESULTS_DIR/results.md (printed too) and RESULTS_DIR/plots/*.svg. With --publish
it also copies the SVGs to bench/plots/, which BENCHMARKS.md links; results.md is the
block the maintainer pastes into BENCHMARKS.md.

Why medians and min-max: the suite runs on small shared machines where a neighbour's
burst moves single numbers a lot; the median of several runs with its full spread is
what can honestly be compared. Numbers are never asserted here: a missed target is
reported with by how much, not turned into a failure.

Only the standard library is needed for the tables; matplotlib (pinned in
bench/report-requirements.txt) for the plots. Without it the plots are skipped with a
message.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
from collections import defaultdict

# Metric names the suites write (bench/src/*.rs); alternatives are accepted so a renamed
# metric in one suite degrades to "no data" instead of a crash.
THROUGHPUT = ("backups_per_s", "throughput_per_s", "jobs_per_s")
CPU_PER_BACKUP = ("cpu_ms_per_backup", "worker_cpu_ms_per_backup", "cpu_ms_per_job")
# Busy CPU of the whole machine per backup (every process the backups made work: the
# simulator, PostgreSQL, Redis, NATS, …), recorded by fleet and peers alike.
MACHINE_CPU = ("machine_cpu_ms_per_backup",)
RSS = ("peak_rss_mib", "worker_peak_rss_mib")
DELAY_KEYS = ("delay_ms", "export_delay_ms")


# ---- loading ---------------------------------------------------------------------------

def load_records(path):
    records = []
    if not os.path.exists(path):
        print(f"report: {path} not found; tables will be empty", file=sys.stderr)
        return records
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
                float(r["value"])
                r.setdefault("params", {})
                r.setdefault("run", 1)
                r.setdefault("unit", "")
                records.append(r)
            except (ValueError, KeyError, TypeError) as e:
                print(f"report: {path}:{n}: skipped ({e})", file=sys.stderr)
    return records


def load_criterion(root):
    """Criterion results as records of suite `normalize` (median time and throughput)."""
    out = []
    if not root or not os.path.isdir(root):
        return out
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        try:
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue
        group = meta.get("group_id", "")
        func = meta.get("function_id") or ""
        value = meta.get("value_str") or ""
        tp = meta.get("throughput") or {}
        nbytes = tp.get("Bytes") or tp.get("BytesDecimal")
        med = est.get("median", {})
        ns = med.get("point_estimate")
        if ns is None:
            continue
        ci = med.get("confidence_interval", {})
        params = {"group": group, "function": func, "input": value, "bytes": nbytes,
                  "ci_low_ms": ci.get("lower_bound", ns) / 1e6,
                  "ci_high_ms": ci.get("upper_bound", ns) / 1e6}
        case = f"{func} {value}".strip()
        out.append(dict(suite=group or "normalize", case=case, metric="median_ms", unit="ms",
                        value=ns / 1e6, run=1, params=params))
        if nbytes:
            out.append(dict(suite=group or "normalize", case=case, metric="mb_per_s",
                            unit="MB/s", value=nbytes / (ns / 1e9) / 1e6, run=1, params=params))
    return out


def load_latencies(results):
    """{name: [ms, ...]} from latency*.jsonl / latency*.txt files in the results dir."""
    out = {}
    if not os.path.isdir(results):
        return out
    for name in sorted(os.listdir(results)):
        if not name.startswith("latency") or not name.endswith((".jsonl", ".txt", ".json")):
            continue
        vals = []
        with open(os.path.join(results, name)) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    v = json.loads(line)
                except ValueError:
                    continue
                if isinstance(v, dict):
                    v = v.get("latency_ms", v.get("ms"))
                if isinstance(v, list):
                    vals.extend(float(x) for x in v if isinstance(x, (int, float)))
                elif isinstance(v, (int, float)):
                    vals.append(float(v))
        if vals:
            out[os.path.splitext(name)[0]] = vals
    return out


# ---- statistics ------------------------------------------------------------------------

def group(records):
    g = defaultdict(list)
    for r in records:
        g[(r["suite"], r["case"], r["metric"])].append(r)
    return g


def summary(rs):
    vals = [float(r["value"]) for r in rs]
    return dict(median=statistics.median(vals), lo=min(vals), hi=max(vals), n=len(vals),
                unit=rs[0].get("unit", ""), params=rs[0].get("params", {}))


def fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def param(p, *keys, default=None):
    for k in keys:
        if k in p and p[k] is not None:
            return p[k]
    return default


def match_key(p):
    return (param(p, "devices"), param(p, "concurrency"), param(p, *DELAY_KEYS, default=0))


def pick(g, suite, metrics, pred=lambda p: True):
    """{(case, metric): summary} of one suite's records whose params satisfy pred."""
    out = {}
    for (s, case, metric), rs in g.items():
        if s == suite and metric in metrics and pred(rs[0].get("params", {})):
            out[(case, metric)] = summary(rs)
    return out


# ---- peers and targets ----------------------------------------------------------------

def ratios(g):
    """Ours (fleet) vs each peer tool on matching (devices, concurrency, delay_ms)."""
    rows = []
    # Our CPU metric is `worker_cpu_ms_per_backup`, the peers' `cpu_ms_per_backup`: compare
    # them under one name.
    def canon(metric):
        return "cpu_ms_per_backup" if metric in CPU_PER_BACKUP else metric

    ours = {}
    for (case, metric), s in pick(g, "fleet", THROUGHPUT + CPU_PER_BACKUP + MACHINE_CPU).items():
        key = match_key(s["params"]) + (canon(metric),)
        workers = param(s["params"], "workers", default=1)
        # Prefer one worker: one process against one peer process.
        if key not in ours or workers == 1:
            ours[key] = (case, s)
    for (case, metric), s in pick(g, "peers", THROUGHPUT + CPU_PER_BACKUP + MACHINE_CPU).items():
        tool = param(s["params"], "tool", default=case.split()[0])
        key = match_key(s["params"]) + (canon(metric),)
        if tool == "netmiko":
            # The netmiko target is against its fixed 30-thread pool, not at equal
            # concurrency: compare with our best case on the same fleet (devices, delay).
            same_fleet = [v for k, v in ours.items()
                          if (k[0], k[2], k[3]) == (key[0], key[2], key[3])]
            if not same_fleet:
                continue
            higher = metric in THROUGHPUT
            ocase, o = (max if higher else min)(same_fleet, key=lambda v: v[1]["median"])
        elif key in ours:
            ocase, o = ours[key]
        else:
            continue
        if s["median"] == 0 or o["median"] == 0:
            continue
        if metric in THROUGHPUT:
            ratio, better = o["median"] / s["median"], "ours / theirs (higher is better)"
        else:
            ratio, better = s["median"] / o["median"], "theirs / ours (higher is better)"
        rows.append(dict(tool=tool, devices=key[0], concurrency=key[1], delay_ms=key[2],
                         metric=metric, ours=o["median"], theirs=s["median"], ratio=ratio,
                         reading=better, ours_case=ocase, peer_case=case))
    rows.sort(key=lambda r: (r["tool"], r["metric"], str(r["devices"]), str(r["concurrency"]),
                             str(r["delay_ms"])))
    return rows


def target(name, value, goal, higher_is_better, unit, note=""):
    if value is None:
        return dict(name=name, value=None, goal=goal, unit=unit, status="no data", by="", note=note)
    met = value >= goal if higher_is_better else value <= goal
    if met:
        by = ""
    elif higher_is_better:
        by = f"{(goal - value) / goal * 100:.0f} % short (×{goal / value:.2f} needed)" if value else "no throughput"
    else:
        by = f"{(value - goal) / goal * 100:.0f} % over (×{value / goal:.2f})"
    return dict(name=name, value=value, goal=goal, unit=unit, status="met" if met else "MISSED",
                by=by, note=note)


def targets(g, ratio_rows):
    t = []
    # 1. Pipeline overhead over the bare SSH export, in CPU.
    overhead = None
    for (s, case, metric), rs in g.items():
        if s == "cost" and metric in ("overhead_pct", "pipeline_overhead_pct", "overhead_ratio"):
            v = summary(rs)["median"] * (100 if metric == "overhead_ratio" else 1)
            overhead = v if overhead is None else max(overhead, v)
    if overhead is None:
        bare = pipe = None
        for (s, case, metric), rs in g.items():
            if s == "cost" and metric in CPU_PER_BACKUP + ("cpu_ms",):
                if "bare" in case:
                    bare = summary(rs)["median"]
                elif "pipeline" in case or "full" in case:
                    pipe = summary(rs)["median"]
        if bare and pipe:
            overhead = (pipe - bare) / bare * 100
    t.append(target("Pipeline CPU overhead over the bare SSH export", overhead, 50, False, "%"))

    def best(tool, metric_set):
        rs = [r for r in ratio_rows if r["tool"] == tool and r["metric"] in metric_set]
        return (min(rs, key=lambda r: r["ratio"]) if rs else None)

    r = best("asyncssh", CPU_PER_BACKUP)
    t.append(target("Worker CPU per backup vs asyncssh (theirs / ours, worst case)",
                    r and r["ratio"], 5, True, "×",
                    r and f"at {r['devices']} devices, concurrency {r['concurrency']}, delay {r['delay_ms']} ms" or ""))
    r = best("asyncssh", THROUGHPUT)
    t.append(target("Fleet throughput vs asyncssh at the same concurrency (worst case)",
                    r and r["ratio"], 3, True, "×",
                    r and f"at {r['devices']} devices, concurrency {r['concurrency']}, delay {r['delay_ms']} ms" or ""))
    r = best("netmiko", THROUGHPUT)
    t.append(target("Fleet throughput vs netmiko, 30 threads (worst case)",
                    r and r["ratio"], 50, True, "×",
                    r and f"at {r['devices']} devices, concurrency {r['concurrency']}, delay {r['delay_ms']} ms" or ""))

    # One worker, ≥ 1,000 slow exports in flight, RSS.
    rss = None
    note = ""
    for (s, case, metric), rs in g.items():
        p = rs[0].get("params", {})
        if s != "fleet" or metric not in RSS:
            continue
        if param(p, "workers", default=1) != 1:
            continue
        if (param(p, "concurrency", default=0) or 0) < 1000:
            continue
        if (param(p, *DELAY_KEYS, default=0) or 0) < 1000:
            continue
        v = summary(rs)["median"]
        if rss is None or v > rss:
            rss, note = v, f"{case}"
    t.append(target("One worker, ≥ 1,000 slow exports in flight: peak RSS", rss, 256, False,
                    "MiB", note))

    def enq(metric, devices, case_prefix=None, agg=max):
        vals = []
        for (s, case, m), rs in g.items():
            if s == "enqueuer" and m == metric and param(rs[0]["params"], "devices") == devices:
                if case_prefix is None or case.startswith(case_prefix):
                    vals.append(summary(rs)["median"])
        return agg(vals) if vals else None

    took = enq("schedule_all_s", 1_000_000)
    note = "schedule-all case: cap lifted, every device one job in Redis"
    if took is None:
        # Stopped at the case's timeout: project from the rate reached (a lower bound on
        # the time, since the per-tick cost grows with the jobs already outstanding).
        frac = enq("scheduled_fraction", 1_000_000, agg=min)
        rate = enq("jobs_per_s", 1_000_000, "schedule-all", agg=min)
        if frac is not None and rate:
            took = 1_000_000 / rate
            note = (f"stopped at the timeout with {frac * 100:.0f} % scheduled; "
                    f"time projected from {rate:,.0f} jobs/s (a lower bound)")
    t.append(target("Enqueuer: 1,000,000 devices scheduled", took, 60, False, "s", note))
    t.append(target("Enqueuer: peak RSS at 1,000,000 devices", enq("peak_rss_mib", 1_000_000),
                    1024, False, "MiB", "largest of the steady (real process) and schedule-all cases"))
    # Per-job memory hardly depends on N: take the largest N measured.
    sizes = sorted({param(rs[0]["params"], "devices") or 0 for (s, _c, m), rs in g.items()
                    if s == "enqueuer" and m == "redis_bytes_per_job_keys"})
    per_job = enq("redis_bytes_per_job_keys", sizes[-1]) if sizes else None
    t.append(target("Redis memory per queued job", per_job, 300, False, "B",
                    (f"at {sizes[-1]:,} jobs; " if sizes else "")
                    + "MEMORY USAGE of the queue's own keys; the used_memory delta is in the table"))

    # Normalization on large exports (≥ 16 MiB inputs), the slower of v1/v2.
    worst = None
    note = ""
    for (s, case, metric), rs in g.items():
        if s != "normalize" or metric != "mb_per_s":
            continue
        p = rs[0].get("params", {})
        if (p.get("bytes") or 0) < 16 << 20 or p.get("function") not in ("v1", "v2"):
            continue
        v = summary(rs)["median"] / 1000.0
        if worst is None or v < worst:
            worst, note = v, case
    t.append(target("Normalization on large exports (slowest of v1/v2, ≥ 16 MiB)", worst, 1.0,
                    True, "GB/s", note))
    return t


def linearity(g):
    """Least-squares fit of time vs size over the synthetic inputs, per function."""
    series = defaultdict(list)
    for (s, case, metric), rs in g.items():
        if s == "normalize" and metric == "median_ms":
            p = rs[0]["params"]
            if p.get("bytes"):
                series[p.get("function", "?")].append((p["bytes"], summary(rs)["median"], p.get("input", "")))
    out = {}
    for func, pts in series.items():
        syn = sorted((b, ms) for b, ms, inp in pts if "synthetic" in inp)
        if len(syn) < 2:
            continue
        xs = [b / (1 << 20) for b, _ in syn]
        ys = [ms for _, ms in syn]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
        icpt = my - slope * mx
        ss_tot = sum((y - my) ** 2 for y in ys)
        ss_res = sum((y - (icpt + slope * x)) ** 2 for x, y in zip(xs, ys))
        r2 = 1 - ss_res / ss_tot if ss_tot else 1.0
        # ms per MiB at the smallest and the largest size: equal when cost is linear.
        out[func] = dict(slope_ms_per_mib=slope, intercept_ms=icpt, r2=r2,
                         small=(xs[0], ys[0] / xs[0]), large=(xs[-1], ys[-1] / xs[-1]), pts=syn)
    return out


# ---- plots -----------------------------------------------------------------------------

def plots(g, latencies, lin, outdir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib not installed; no plots "
              "(pip install -r bench/report-requirements.txt)", file=sys.stderr)
        return []
    os.makedirs(outdir, exist_ok=True)
    made = []
    plt.rcParams.update({"svg.hashsalt": "rosbackup", "font.size": 9})

    # Throughput vs concurrency: fleet (ours) and peers, one line per series.
    series = defaultdict(list)
    for (s, case, metric), rs in g.items():
        if s not in ("fleet", "peers") or metric not in THROUGHPUT[:2]:
            continue
        p = rs[0].get("params", {})
        c = param(p, "concurrency")
        if c is None:
            continue
        delay = param(p, *DELAY_KEYS, default=0)
        # A named series (a sweep whose fleet grows with the concurrency) is one line;
        # otherwise one line per fleet size.
        fleet = param(p, "series") or f"{param(p, 'devices')} devices"
        if s == "fleet":
            label = f"rosbackup, {param(p, 'workers', default=1)} worker(s), {fleet}, delay {delay} ms"
        else:
            label = f"{param(p, 'tool', default='peer')}, {fleet}, delay {delay} ms"
        series[label].append((c, summary(rs)))
    if series:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for label, pts in sorted(series.items()):
            pts.sort(key=lambda x: x[0])
            xs = [c for c, _ in pts]
            ys = [s["median"] for _, s in pts]
            err = [[s["median"] - s["lo"] for _, s in pts], [s["hi"] - s["median"] for _, s in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("concurrency (exports in flight per process)")
        ax.set_ylabel("backups per second (median, min–max)")
        ax.set_title("Throughput vs concurrency")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(outdir, "throughput-vs-concurrency.svg")
        fig.savefig(path)
        plt.close(fig)
        made.append(path)

    if latencies:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name, vals in sorted(latencies.items()):
            vals = sorted(vals)
            n = len(vals)
            ax.plot(vals, [(i + 1) / n for i in range(n)], label=f"{name} (n={n})")
        ax.set_xscale("log")
        ax.set_xlabel("job latency, due time → published snapshot (ms)")
        ax.set_ylabel("fraction of jobs (CDF)")
        ax.set_title("Latency distribution")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(outdir, "latency-cdf.svg")
        fig.savefig(path)
        plt.close(fig)
        made.append(path)

    pts = defaultdict(list)
    for (s, case, metric), rs in g.items():
        if s == "normalize" and metric == "median_ms":
            p = rs[0]["params"]
            if p.get("bytes"):
                pts[p.get("function", "?")].append((p["bytes"] / (1 << 20), summary(rs)["median"],
                                                    p.get("ci_low_ms"), p.get("ci_high_ms")))
    if pts:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for func, ps in sorted(pts.items()):
            ps.sort()
            line = ax.plot([x for x, *_ in ps], [y for _, y, *_ in ps], marker="o", label=func)
            f = lin.get(func)
            if f:
                xs = [min(x for x, *_ in ps), max(x for x, *_ in ps)]
                ax.plot(xs, [f["intercept_ms"] + f["slope_ms_per_mib"] * x for x in xs],
                        linestyle=":", color=line[0].get_color(),
                        label=f"{func} fit: {f['slope_ms_per_mib']:.2f} ms/MiB, R²={f['r2']:.4f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("export size (MiB)")
        ax.set_ylabel("median time (ms)")
        ax.set_title("Normalization time vs size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(outdir, "normalize-time-vs-size.svg")
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    return made


# ---- the report ------------------------------------------------------------------------

def render(machine, g, ratio_rows, tgts, lin, made, results):
    L = []
    L.append("<!-- generated by bench/report.py; paste into BENCHMARKS.md -->")
    L.append("## Machine\n")
    if machine:
        for k in ("date", "nproc", "cpu_model", "mem_total", "kernel", "rustc", "mode", "git"):
            if k in machine:
                L.append(f"- **{k}**: {machine[k]}")
    else:
        L.append("- (machine.json missing)")
    L.append("")
    suites = sorted({s for s, _, _ in g})
    order = ["normalize", "cost", "fleet", "peers", "enqueuer"]
    suites.sort(key=lambda s: (order.index(s) if s in order else 99, s))
    for suite in suites:
        L.append(f"## {suite}\n")
        L.append("| case | metric | median | min – max | n | unit |")
        L.append("|---|---|---:|---:|---:|---|")
        for (s, case, metric) in sorted(k for k in g if k[0] == suite):
            sm = summary(g[(s, case, metric)])
            L.append(f"| {case} | {metric} | {fmt(sm['median'])} | {fmt(sm['lo'])} – {fmt(sm['hi'])} "
                     f"| {sm['n']} | {sm['unit']} |")
        L.append("")
        if suite == "normalize" and lin:
            L.append("Linearity (synthetic inputs, least squares of time on size):\n")
            L.append("| function | ms per MiB | intercept ms | R² | ms/MiB at smallest | ms/MiB at largest |")
            L.append("|---|---:|---:|---:|---:|---:|")
            for func, f in sorted(lin.items()):
                L.append(f"| {func} | {f['slope_ms_per_mib']:.3f} | {f['intercept_ms']:.3f} | {f['r2']:.5f} "
                         f"| {f['small'][1]:.3f} ({f['small'][0]:g} MiB) | {f['large'][1]:.3f} ({f['large'][0]:g} MiB) |")
            L.append("")
    L.append("## Ratios against the peers\n")
    if ratio_rows:
        L.append("| peer | devices | concurrency | delay ms | metric | ours | theirs | ratio | reading |")
        L.append("|---|---:|---:|---:|---|---:|---:|---:|---|")
        for r in ratio_rows:
            L.append(f"| {r['tool']} | {r['devices']} | {r['concurrency']} | {r['delay_ms']} | {r['metric']} "
                     f"| {fmt(r['ours'])} | {fmt(r['theirs'])} | ×{r['ratio']:.2f} | {r['reading']} |")
    else:
        L.append("No matching cases (fleet and peers must share devices, concurrency and delay_ms).")
    L.append("")
    L.append("## Targets\n")
    L.append("| target | goal | measured | status | by how much | note |")
    L.append("|---|---:|---:|---|---|---|")
    for t in tgts:
        cmp_ = "≤" if t["name"].startswith(("Pipeline", "One worker", "Enqueuer", "Redis")) else "≥"
        L.append(f"| {t['name']} | {cmp_} {fmt(t['goal'])} {t['unit']} | "
                 f"{fmt(t['value'])} {t['unit'] if t['value'] is not None else ''} | {t['status']} | {t['by']} | {t['note']} |")
    L.append("")
    if made:
        L.append("## Plots\n")
        for p in made:
            name = os.path.basename(p)
            L.append(f"![{name}](bench/plots/{name})")
        L.append("")
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", help="results directory (bench/results/<timestamp>)")
    ap.add_argument("--criterion", help="criterion output directory (default: RESULTS/criterion)")
    ap.add_argument("--publish", action="store_true", help="copy the SVGs to bench/plots/")
    ap.add_argument("--self-test", action="store_true", help="run on synthetic data and check")
    a = ap.parse_args(argv)
    if a.self_test:
        return self_test()
    if not a.results:
        ap.error("a results directory is required")
    results = a.results
    records = load_records(os.path.join(results, "records.jsonl"))
    crit = a.criterion or os.path.join(results, "criterion")
    records += load_criterion(crit)
    machine = {}
    mpath = os.path.join(results, "machine.json")
    if os.path.exists(mpath):
        with open(mpath) as f:
            machine = json.load(f)
    g = group(records)
    rr = ratios(g)
    tg = targets(g, rr)
    lin = linearity(g)
    made = plots(g, load_latencies(results), lin, os.path.join(results, "plots"))
    md = render(machine, g, rr, tg, lin, made, results)
    with open(os.path.join(results, "results.md"), "w") as f:
        f.write(md + "\n")
    print(md)
    print("\nTargets:")
    for t in tg:
        v = "no data" if t["value"] is None else f"{fmt(t['value'])} {t['unit']}"
        print(f"  [{t['status']:>7}] {t['name']}: {v} (goal {fmt(t['goal'])} {t['unit']}) {t['by']}")
    if a.publish and made:
        here = os.path.dirname(os.path.abspath(__file__))
        dst = os.path.join(here, "plots")
        os.makedirs(dst, exist_ok=True)
        for p in made:
            shutil.copy(p, dst)
        print(f"report: copied {len(made)} plots to {dst}")
    print(f"report: wrote {os.path.join(results, 'results.md')}")
    return 0


# ---- self-test on synthetic data ------------------------------------------------------

def self_test():
    """Synthetic records with known medians, ratios and misses; checks what the report says."""
    d = tempfile.mkdtemp(prefix="rbbench-report-")
    recs = []

    def r(suite, case, metric, unit, values, **params):
        for i, v in enumerate(values, 1):
            recs.append(dict(suite=suite, case=case, metric=metric, unit=unit, value=v, run=i, params=params))

    for c, ours, theirs, nm in [(10, [90, 100, 110], [30, 31, 29], [1.0, 1.1, 0.9]),
                                (100, [800, 850, 900], [200, 190, 210], [1.0, 1.0, 1.0])]:
        r("fleet", f"1000 devices fast c={c} 1 worker", "backups_per_s", "1/s", ours,
          devices=1000, concurrency=c, delay_ms=0, workers=1)
        r("fleet", f"1000 devices fast c={c} 2 workers", "backups_per_s", "1/s", [v * 1.8 for v in ours],
          devices=1000, concurrency=c, delay_ms=0, workers=2)
        r("fleet", f"1000 devices fast c={c} 1 worker", "cpu_ms_per_backup", "ms", [2.0, 2.1, 1.9],
          devices=1000, concurrency=c, delay_ms=0, workers=1)
        r("peers", f"asyncssh c={c}", "backups_per_s", "1/s", theirs, tool="asyncssh",
          devices=1000, concurrency=c, delay_ms=0)
        r("peers", f"asyncssh c={c}", "cpu_ms_per_backup", "ms", [8.0, 8.0, 8.0], tool="asyncssh",
          devices=1000, concurrency=c, delay_ms=0)
        r("peers", f"netmiko c={c}", "backups_per_s", "1/s", nm, tool="netmiko",
          devices=1000, concurrency=c, delay_ms=0)
    r("fleet", "1000 devices slow c=1000 1 worker", "worker_peak_rss_mib", "MiB", [120, 130, 125],
      devices=1000, concurrency=1000, delay_ms=2000, workers=1)
    r("cost", "pipeline, modern", "cpu_ms_per_backup", "ms", [3.0, 3.0, 3.0])
    r("cost", "bare export, modern", "cpu_ms_per_backup", "ms", [2.5, 2.5, 2.5])
    r("enqueuer", "schedule-all 1000000 devices", "schedule_all_s", "s", [75.0], devices=1_000_000)
    r("enqueuer", "schedule-all 100000 devices", "scheduled_fraction", "ratio", [0.5], devices=100_000)
    r("enqueuer", "schedule-all 1000000 devices", "peak_rss_mib", "MiB", [300.0], devices=1_000_000)
    r("enqueuer", "steady 1000000 devices", "peak_rss_mib", "MiB", [200.0], devices=1_000_000)
    r("enqueuer", "schedule-all 1000000 devices", "redis_bytes_per_job_keys", "B", [450.0], devices=1_000_000)
    with open(os.path.join(d, "records.jsonl"), "w") as f:
        for x in recs:
            f.write(json.dumps(x) + "\n")
        f.write("not json\n")
    with open(os.path.join(d, "machine.json"), "w") as f:
        json.dump({"nproc": 2, "cpu_model": "Synthetic CPU"}, f)
    # Criterion layout: linear time, 2 ms per MiB for v2, 1 ms per MiB for v1.
    for func, ms_per_mib in (("v1", 1.0), ("v2", 2.0)):
        for mib in (1, 4, 16, 32):
            p = os.path.join(d, "criterion", "normalize", func, f"synthetic-{mib:02d}MiB", "new")
            os.makedirs(p)
            ns = ms_per_mib * mib * 1e6
            with open(os.path.join(p, "estimates.json"), "w") as f:
                json.dump({"median": {"point_estimate": ns, "confidence_interval":
                                      {"lower_bound": ns * 0.99, "upper_bound": ns * 1.01}}}, f)
            with open(os.path.join(p, "benchmark.json"), "w") as f:
                json.dump({"group_id": "normalize", "function_id": func,
                           "value_str": f"synthetic-{mib:02d}MiB", "throughput": {"Bytes": mib << 20}}, f)
    with open(os.path.join(d, "latency-fleet-1000.jsonl"), "w") as f:
        for i in range(1000):
            f.write(json.dumps({"latency_ms": 10 + i}) + "\n")
    main([d])
    md = open(os.path.join(d, "results.md")).read()
    g = group(load_records(os.path.join(d, "records.jsonl")) + load_criterion(os.path.join(d, "criterion")))
    checks = []

    def check(cond, what):
        checks.append((cond, what))

    s = summary(g[("fleet", "1000 devices fast c=10 1 worker", "backups_per_s")])
    check(s["median"] == 100 and s["lo"] == 90 and s["hi"] == 110 and s["n"] == 3, "median/spread/n")
    rr = {(x["tool"], x["concurrency"], x["metric"]): x for x in ratios(g)}
    check(abs(rr[("asyncssh", 10, "backups_per_s")]["ratio"] - 100 / 30) < 1e-9,
          "throughput ratio uses the 1-worker case")
    check(abs(rr[("asyncssh", 10, "cpu_ms_per_backup")]["ratio"] - 4.0) < 1e-9, "CPU ratio theirs/ours")
    tg = {t["name"]: t for t in targets(g, ratios(g))}
    check(tg["Pipeline CPU overhead over the bare SSH export"]["status"] == "met", "overhead 20 % met")
    cpu = tg["Worker CPU per backup vs asyncssh (theirs / ours, worst case)"]
    check(cpu["status"] == "MISSED" and "20 % short" in cpu["by"], "CPU ×4 misses ×5 by 20 %")
    check(tg["Fleet throughput vs asyncssh at the same concurrency (worst case)"]["status"] == "met",
          "throughput ×3.3 meets ×3")
    nm = tg["Fleet throughput vs netmiko, 30 threads (worst case)"]
    check(nm["status"] == "met" and abs(nm["value"] - 100.0) < 1e-9, "netmiko worst ratio 100")
    check(tg["Enqueuer: 1,000,000 devices scheduled"]["by"].startswith("25 % over"), "75 s is 25 % over 60")
    check(tg["Enqueuer: peak RSS at 1,000,000 devices"]["value"] == 300, "RSS takes the larger case")
    check(tg["Redis memory per queued job"]["status"] == "MISSED", "450 B misses 300")
    check(tg["One worker, ≥ 1,000 slow exports in flight: peak RSS"]["value"] == 125, "in-flight RSS")
    norm = tg["Normalization on large exports (slowest of v1/v2, ≥ 16 MiB)"]
    # v2: 2 ms per MiB = 1,048,576 B / 2 ms = 0.524 GB/s.
    check(abs(norm["value"] - (1 << 20) / 2e-3 / 1e9) < 1e-6 and norm["status"] == "MISSED",
          "normalization GB/s from criterion")
    partial = group([dict(suite="enqueuer", case="schedule-all 1000000 devices", metric=m, unit="",
                          value=v, run=1, params={"devices": 1_000_000})
                     for m, v in (("scheduled_fraction", 0.25), ("jobs_per_s", 2000.0))])
    pt = {t["name"]: t for t in targets(partial, [])}["Enqueuer: 1,000,000 devices scheduled"]
    check(pt["value"] == 500 and pt["status"] == "MISSED" and "25 %" in pt["note"],
          "a timed-out schedule-all is projected from its rate and missed")
    lin = linearity(g)
    check(abs(lin["v2"]["slope_ms_per_mib"] - 2.0) < 1e-9 and lin["v2"]["r2"] > 0.9999, "linear fit")
    check("| fleet | " not in md and "## fleet" in md and "×3.33" in md, "markdown has tables and ratios")
    try:
        import matplotlib  # noqa: F401
        for name in ("throughput-vs-concurrency.svg", "latency-cdf.svg", "normalize-time-vs-size.svg"):
            p = os.path.join(d, "plots", name)
            check(os.path.exists(p) and open(p).read(200).lstrip().startswith("<?xml"), f"plot {name}")
    except ImportError:
        print("self-test: matplotlib missing, plots not checked", file=sys.stderr)
    failed = [w for ok, w in checks if not ok]
    for ok, w in checks:
        print(f"self-test: {'ok  ' if ok else 'FAIL'} {w}")
    shutil.rmtree(d)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
