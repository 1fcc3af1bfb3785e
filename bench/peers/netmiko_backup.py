#!/usr/bin/env python3
"""Back up a RouterOS fleet with netmiko: the typical hand-written backup script.

A ThreadPoolExecutor (30 workers by default: Oxidized's default thread count), per
device: ConnectHandler(device_type="mikrotik_routeros") — netmiko's driver logs in as
`user+ct511w4098h`, opens an interactive shell and drives the prompt — then
send_command(export), normalize, SHA-256, and publish rosbackup's snapshot event to NATS
JetStream. nats-py is asyncio-only, so one background thread runs the event loop with the
NATS connection and the worker threads hand their publishes to it with
run_coroutine_threadsafe (and wait for the ack). Prints one JSON summary line on stdout
(see peercommon.Tally). Part of the peer benchmark (bench/src/peers.rs, issue #6).

    netmiko_backup.py --inventory devices.csv --workers 30 \
        --nats-url nats://127.0.0.1:4222 --stream S --subject-prefix P
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import threading
import time

import nats
from netmiko import ConnectHandler
from netmiko.exceptions import (
    NetmikoAuthenticationException,
    NetmikoTimeoutException,
    ReadTimeout,
)

from peercommon import (
    Device,
    ExportError,
    Tally,
    export_command,
    read_inventory,
    snapshot_event,
    subject_for,
)


class Publisher:
    """A NATS connection on its own asyncio loop thread, usable from any thread."""

    def __init__(self, url: str, stream: str, ack_timeout: float):
        self.stream = stream
        self.ack_timeout = ack_timeout
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nc = self._call(nats.connect(url))
        self.js = self.nc.jetstream()

    def _call(self, coro, timeout=None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def publish(self, subject: str, payload: bytes, msg_id: str) -> None:
        self._call(
            self.js.publish(
                subject,
                payload,
                stream=self.stream,
                headers={"Nats-Msg-Id": msg_id},
                timeout=self.ack_timeout,
            ),
            self.ack_timeout + 5,
        )

    def close(self) -> None:
        self._call(self.nc.drain(), 30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def failure_kind(e: BaseException) -> str:
    if isinstance(e, NetmikoAuthenticationException):
        return "auth"
    if isinstance(e, (NetmikoTimeoutException, ReadTimeout, TimeoutError)):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ExportError):
        return "export"
    if isinstance(e, nats.errors.Error):
        return "publish"
    if isinstance(e, OSError):
        return "ssh"
    return "other"


def backup(dev: Device, pub: Publisher, args) -> None:
    conn = ConnectHandler(
        device_type="mikrotik_routeros",
        host=dev.host,
        port=dev.port,
        username=dev.username,
        password=dev.password,
        timeout=args.connect_timeout,
    )
    try:
        out = conn.send_command(export_command(dev.routeros_version), read_timeout=args.timeout)
    finally:
        conn.disconnect()
    msg_id, payload = snapshot_event(dev, out.encode())
    pub.publish(subject_for(args.subject_prefix, dev), payload, msg_id)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inventory", required=True, help="CSV written by `rosbackup sim --inventory`")
    p.add_argument("--workers", "--concurrency", dest="workers", type=int, default=30)
    p.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    p.add_argument("--stream", required=True, help="JetStream stream capturing the subjects")
    p.add_argument("--subject-prefix", default="config.snapshot")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the export")
    p.add_argument("--connect-timeout", type=float, default=30.0)
    args = p.parse_args()

    devices = read_inventory(args.inventory)
    tally = Tally("netmiko", len(devices), args.workers)
    lock = threading.Lock()
    pub = Publisher(args.nats_url, args.stream, ack_timeout=10.0)

    def one(dev: Device) -> None:
        start = time.perf_counter()
        try:
            backup(dev, pub, args)
        except Exception as e:  # noqa: BLE001 - every failure is counted by kind
            with lock:
                tally.failed(failure_kind(e))
        else:
            with lock:
                tally.ok(time.perf_counter() - start)

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
        list(pool.map(one, devices))
    pub.close()
    tally.print()


if __name__ == "__main__":
    main()
