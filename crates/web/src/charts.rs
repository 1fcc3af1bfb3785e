//! Charts as inline SVG, drawn on the server: no chart library, no build step, and they
//! render the same in every browser and in screenshots.

use maud::{Markup, html};
use rosbackup_core::report::{ActivityBucket, AgeBucket};
use std::collections::BTreeSet;

/// Colour of an error kind (stable, so the legend means the same thing everywhere).
pub fn kind_colour(kind: &str) -> &'static str {
    // Hues far apart, so neighbours in a stacked bar stay distinguishable.
    match kind {
        "auth_failed" => "#e03131",
        "host_key_mismatch" => "#c2255c",
        "timeout" => "#f59f00",
        "connection_refused" => "#1098ad",
        "truncated_output" => "#ae3ec9",
        "bad_output" => "#4263eb",
        "too_large" => "#d9480f",
        "publish_failed" => "#495057",
        "credentials_unreadable" => "#5c940d",
        _ => "#868e96",
    }
}

pub const SUCCESS: &str = "#2b8a3e";

/// Stacked bars of backups per bucket: successes, then failures by kind.
pub fn activity(buckets: &[ActivityBucket]) -> Markup {
    // About as wide as the card it sits in, so 11-unit text renders near 11 px.
    let (w, h, left, bottom) = (1000.0_f64, 190.0_f64, 40.0_f64, 22.0_f64);
    let plot_h = h - bottom - 6.0;
    let max = buckets
        .iter()
        .map(|b| b.success + b.failed.values().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = buckets.len().max(1) as f64;
    let slot = (w - left) / n;
    let bar = (slot * 0.8).max(1.0);
    let kinds: BTreeSet<&str> = buckets
        .iter()
        .flat_map(|b| b.failed.keys().map(String::as_str))
        .collect();
    let total_ok: i64 = buckets.iter().map(|b| b.success).sum();
    let total_failed: i64 = buckets.iter().flat_map(|b| b.failed.values()).sum();
    let y = |v: f64| 6.0 + plot_h - v / max as f64 * plot_h;
    let label_every = buckets.len().div_ceil(8).max(1);
    html! {
        svg.chart viewBox=(format!("0 0 {w} {h}")) role="img"
            aria-label=(format!("Backups per minute: {total_ok} succeeded, {total_failed} failed")) {
            // grid: 0, half, max
            @for frac in [0.0, 0.5, 1.0] {
                @let v = (max as f64 * frac).round();
                line x1=(left) x2=(w) y1=(y(v)) y2=(y(v)) stroke="#e9ecef" {}
                text x=(left - 4.0) y=(y(v) + 3.5) text-anchor="end" class="axis" { (v as i64) }
            }
            @for (i, b) in buckets.iter().enumerate() {
                @let x = left + i as f64 * slot + (slot - bar) / 2.0;
                g {
                    title { (b.minute.format("%H:%M")) " UTC — " (b.success) " ok"
                        @for (k, v) in &b.failed { ", " (v) " " (k) } }
                    @for (lo, hi, colour) in stack(b) {
                        rect x=(x) y=(y(hi)) width=(bar) height=(y(lo) - y(hi)) fill=(colour) {}
                    }
                }
                @if i % label_every == 0 {
                    text x=(x) y=(h - 5.0) class="axis" { (b.minute.format("%H:%M")) }
                }
            }
        }
        div.legend {
            span { i style=(format!("background:{SUCCESS}")) {} "success (" (total_ok) ")" }
            @for k in &kinds {
                @let n: i64 = buckets.iter().filter_map(|b| b.failed.get(*k)).sum();
                span { i style=(format!("background:{}", kind_colour(k))) {} (k) " (" (n) ")" }
            }
        }
    }
}

/// A bucket's stacked segments, bottom up: (from, to, colour).
fn stack(b: &ActivityBucket) -> Vec<(f64, f64, &'static str)> {
    let mut out = Vec::new();
    let mut base = 0.0;
    if b.success > 0 {
        out.push((0.0, b.success as f64, SUCCESS));
        base = b.success as f64;
    }
    for (k, v) in &b.failed {
        let top = base + *v as f64;
        out.push((base, top, kind_colour(k)));
        base = top;
    }
    out
}

/// Horizontal bars: enabled devices by the age of their last successful backup.
pub fn ages(buckets: &[AgeBucket]) -> Markup {
    let max = buckets.iter().map(|b| b.devices).max().unwrap_or(0).max(1);
    let total: i64 = buckets.iter().map(|b| b.devices).sum();
    html! {
        div.hbars role="img" aria-label="Backup age distribution" {
            @for (i, b) in buckets.iter().enumerate() {
                @let pct = b.devices as f64 / max as f64 * 100.0;
                @let tone = match i { 0 | 1 => "good", 2 | 3 => "warn", _ => "bad" };
                @let share = if total > 0 { b.devices as f64 * 100.0 / total as f64 } else { 0.0 };
                div.hbar {
                    span.label { (b.label) }
                    span.track { span class=(format!("fill {tone}")) style=(format!("width:{pct:.1}%")) {} }
                    span.value title=(format!("{share:.1} % of enabled devices")) { (b.devices) }
                }
            }
        }
    }
}
