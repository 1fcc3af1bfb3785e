"""What both peer scripts share: the inventory, normalization, the event, the summary.

Why one module: the benchmark compares *transports and concurrency models* (asyncssh's
event loop vs. netmiko's thread pool vs. rosbackup's worker). Giving both peers the same
normalize + SHA-256 + event code keeps that comparison honest — neither gets a cheaper
pipeline than the other — and keeps each script as short as one a user would write.

normalize_v2 is our own Python port of the rules in src/normalize.rs (version 2): CRLF to
LF, the export's timestamp header line (three date formats) and the empty line after it
dropped, comment lines inside the body (runtime annotations such as
`# Interface not active`) dropped except `#error exporting`, trailing blanks trimmed, runs
of empty lines collapsed, exactly one final newline. Comparable work, not a byte-exact
contract.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

NORMALIZATION_VERSION = 2

_HEADER = re.compile(
    rb"# (?:\d{4}/\d{2}/\d{2}|\d{4}-\d{2}-\d{2}|[A-Za-z]{3}/\d{2}/\d{4})"
    rb" \d{2}:\d{2}:\d{2} by RouterOS(?:[ \t\r]|$)"
)


def normalize_v2(raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # a final "\n" ends the last line, it does not start a new one
    out: list[bytes] = []
    in_body = False
    header_removed = False
    drop_next_if_empty = False
    prev_empty = False
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if drop_next_if_empty:
            drop_next_if_empty = False
            if not line:
                continue
        if not in_body and line.startswith(b"/"):
            in_body = True
        if in_body:
            if line.startswith(b"#") and not line.startswith(b"#error exporting"):
                continue
        elif not header_removed and _HEADER.match(line):
            header_removed = True
            drop_next_if_empty = True
            continue
        line = line.rstrip(b" \t\r")
        if not line:
            if prev_empty:
                continue
            prev_empty = True
        else:
            prev_empty = False
        out.append(line)
    text = b"\n".join(out).rstrip(b"\n")
    return text + b"\n" if text else b""


def export_command(routeros_version: str) -> str:
    """The command rosbackup's worker runs by default (secrets included)."""
    try:
        major = int(routeros_version.split(".")[0])
    except ValueError:
        major = 7
    return "/export show-sensitive" if major >= 7 else "/export"


@dataclass
class Device:
    id: str
    tenant_id: str
    name: str
    host: str
    port: int
    username: str
    password: str
    routeros_version: str


def read_inventory(path: str) -> list[Device]:
    """The CSV `rosbackup sim --inventory FILE` writes (passwords in plaintext)."""
    with open(path, newline="") as f:
        return [
            Device(
                id=row["id"],
                tenant_id=row["tenant_id"],
                name=row["name"],
                host=row["host"],
                port=int(row["port"]),
                username=row["username"],
                password=row["password"],
                routeros_version=row.get("routeros_version") or "",
            )
            for row in csv.DictReader(f)
        ]


def check_export(raw: bytes) -> None:
    """The sanity check every backup tool makes: an export has a `/section` line."""
    if not raw.strip() or (not raw.startswith(b"/") and b"\n/" not in raw):
        raise ExportError("output is not a RouterOS export")


class ExportError(Exception):
    pass


def snapshot_event(dev: Device, raw: bytes) -> tuple[str, bytes]:
    """Normalize, hash, build rosbackup's event (same field names). Returns
    (Nats-Msg-Id, JSON payload)."""
    check_export(raw)
    normalized = normalize_v2(raw)
    digest = hashlib.sha256(normalized).hexdigest()
    collected_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    event = {
        "device_id": dev.id,
        "tenant_id": dev.tenant_id,
        "routeros_version": dev.routeros_version or None,
        "collected_at": collected_at,
        "sha256_hash": digest,
        "config_text": normalized.decode("utf-8", errors="replace"),
        "normalization_version": NORMALIZATION_VERSION,
    }
    return f"{dev.id}:{collected_at}:{digest}", json.dumps(event).encode()


def subject_for(prefix: str, dev: Device) -> str:
    return f"{prefix}.create.{dev.id}"


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(-(-q * len(sorted_values) // 1)) - 1))
    return sorted_values[k]


class Tally:
    """Per-device outcomes -> the one-line JSON summary on stdout."""

    def __init__(self, tool: str, devices: int, concurrency: int):
        self.tool = tool
        self.devices = devices
        self.concurrency = concurrency
        self.latencies_ms: list[float] = []
        self.failures: dict[str, int] = {}
        self.started = time.perf_counter()

    def ok(self, latency_s: float) -> None:
        self.latencies_ms.append(latency_s * 1000.0)

    def failed(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)
        return {
            "tool": self.tool,
            "devices": self.devices,
            "concurrency": self.concurrency,
            "ok": len(lat),
            "failed": sum(self.failures.values()),
            "wall_s": round(time.perf_counter() - self.started, 3),
            "p50_latency_ms": percentile(lat, 0.50),
            "p99_latency_ms": percentile(lat, 0.99),
            "failures": self.failures,
        }

    def print(self) -> None:
        json.dump(self.summary(), sys.stdout)
        sys.stdout.write("\n")
        sys.stdout.flush()
