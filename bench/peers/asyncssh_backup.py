#!/usr/bin/env python3
"""Back up a RouterOS fleet with asyncssh: the fastest thing a user would write by hand.

One asyncio event loop, a semaphore for the concurrency limit, per device: connect with
password auth (host keys not checked, as such scripts do), run the export on an exec
channel, normalize, SHA-256, publish rosbackup's snapshot event to NATS JetStream with a
`Nats-Msg-Id` and wait for the ack. Prints one JSON summary line on stdout (see
peercommon.Tally). Part of the peer benchmark (bench/src/peers.rs, issue #6).

    asyncssh_backup.py --inventory devices.csv --concurrency 100 \
        --nats-url nats://127.0.0.1:4222 --stream S --subject-prefix P
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncssh
import nats

from peercommon import (
    Device,
    ExportError,
    Tally,
    export_command,
    read_inventory,
    snapshot_event,
    subject_for,
)


def failure_kind(e: BaseException) -> str:
    if isinstance(e, asyncssh.PermissionDenied):
        return "auth"
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ExportError):
        return "export"
    if isinstance(e, nats.errors.Error):
        return "publish"
    if isinstance(e, (asyncssh.Error, OSError)):
        return "ssh"
    return "other"


async def backup(dev: Device, js, args) -> None:
    async with asyncssh.connect(
        dev.host,
        dev.port,
        username=dev.username,
        password=dev.password,
        known_hosts=None,
        client_keys=None,
        connect_timeout=args.connect_timeout,
    ) as conn:
        result = await conn.run(export_command(dev.routeros_version), encoding=None)
    raw = result.stdout or b""
    msg_id, payload = snapshot_event(dev, raw)
    await js.publish(
        subject_for(args.subject_prefix, dev),
        payload,
        stream=args.stream,
        headers={"Nats-Msg-Id": msg_id},
    )


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inventory", required=True, help="CSV written by `rosbackup sim --inventory`")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    p.add_argument("--stream", required=True, help="JetStream stream capturing the subjects")
    p.add_argument("--subject-prefix", default="config.snapshot")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per device, all in")
    p.add_argument("--connect-timeout", type=float, default=30.0)
    args = p.parse_args()

    devices = read_inventory(args.inventory)
    tally = Tally("asyncssh", len(devices), args.concurrency)
    nc = await nats.connect(args.nats_url)
    js = nc.jetstream()
    sem = asyncio.Semaphore(args.concurrency)

    async def one(dev: Device) -> None:
        async with sem:
            start = time.perf_counter()
            try:
                await asyncio.wait_for(backup(dev, js, args), args.timeout)
            except Exception as e:  # noqa: BLE001 - every failure is counted by kind
                tally.failed(failure_kind(e))
            else:
                tally.ok(time.perf_counter() - start)

    await asyncio.gather(*(one(d) for d in devices))
    await nc.drain()
    tally.print()


if __name__ == "__main__":
    asyncio.run(main())
