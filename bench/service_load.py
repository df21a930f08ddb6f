"""The service bench's load: open-loop runs and their latency, the RPM flood, the ingest rows."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench.service_procs import Server

log = logging.getLogger(__name__)

# A request not answered within this long counts as an error (a lost datagram or a stalled
# server must not hold a load run, and the bench, for ever).
REQUEST_TIMEOUT_S = 10.0


@dataclass
class LoadResult:
    """One load run."""

    test: str
    target: str
    offered_per_s: float | None
    achieved_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    ratio_vs_bare: float | None = None
    max_ms: float | None = None


async def load_run(
    test: str,
    target: str,
    send: Callable[[], Awaitable[Any]],
    rate: float | None,
    duration_s: float,
    concurrency: int,
    samples: list[float] | None = None,
) -> LoadResult:
    """Open-loop at ``rate`` (latency from the scheduled time) or closed-loop flat out; the
    latencies (s) are also appended to ``samples`` when given."""
    latencies: list[float] = []
    errors = 0

    async def timed(scheduled: float) -> None:
        nonlocal errors
        try:
            await asyncio.wait_for(send(), REQUEST_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except BaseException:  # bacpypes3's AbortPDU is not an Exception; TimeoutError
            errors += 1
            return
        latencies.append(time.perf_counter() - scheduled)

    for _ in range(20):  # warm up caches, connections, device-info lookups
        try:
            await asyncio.wait_for(send(), REQUEST_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except BaseException:
            pass
    started = time.perf_counter()
    end = started + duration_s
    if rate is None:

        async def worker() -> None:
            while time.perf_counter() < end:
                await timed(time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    else:
        interval = 1.0 / rate
        tasks = []
        next_at = started
        while next_at < end:
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(timed(next_at)))
            next_at += interval
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    if samples is not None:
        samples.extend(latencies)
    ordered = sorted(latencies) or [float("nan")]
    return LoadResult(
        test=test,
        target=target,
        offered_per_s=rate,
        achieved_per_s=len(latencies) / elapsed,
        p50_ms=1000 * statistics.median(ordered),
        p99_ms=1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        errors=errors,
        max_ms=1000 * ordered[-1],
    )


def merged(
    test: str, target: str, rate: float, samples: list[float], chunks: list[LoadResult]
) -> LoadResult:
    """One row of several load runs (their pooled latencies)."""
    ordered = sorted(samples) or [float("nan")]
    return LoadResult(
        test=test,
        target=target,
        offered_per_s=rate,
        achieved_per_s=statistics.fmean(c.achieved_per_s for c in chunks) if chunks else 0.0,
        p50_ms=1000 * statistics.median(ordered),
        p99_ms=1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        errors=sum(c.errors for c in chunks),
        max_ms=1000 * ordered[-1],
    )


def rpm_all_frame(instance: int, repeats: int) -> bytes:
    """A ReadPropertyMultiple of every property of the device, ``repeats`` times (raw BACnet/IP)."""
    object_id = ((8 << 22) | instance).to_bytes(4, "big")
    body = b"\x0c" + object_id + b"\x1e" + b"\x09\x08" * repeats + b"\x1f"
    npdu = b"\x01\x04" + bytes([0x00, 0x05, 0x01, 14]) + body
    return b"\x81\x0a" + (len(npdu) + 4).to_bytes(2, "big") + npdu


@contextlib.asynccontextmanager
async def rpm_flood(port: int, instance: int, rate: float) -> Any:
    """Another client sending expensive ReadPropertyMultiple requests at ``rate`` meanwhile.

    It alternates the issue's 1.36 kB packet (every device property 150 times, refused by the
    cap) with every property of the device once (answered in full, the costliest read a
    discovery tool makes).
    """
    import socket

    frames = [rpm_all_frame(instance, 150), rpm_all_frame(instance, 1)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def send() -> None:
        index = 0
        while True:
            with contextlib.suppress(OSError):
                await loop.sock_sendto(sock, frames[index % 2], ("127.0.0.1", port))
            index += 1
            await asyncio.sleep(1.0 / rate)

    task = asyncio.create_task(send())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


async def ingest_rows(client: Any, server: Server, args: argparse.Namespace) -> list[LoadResult]:
    """Issue #25: the WriteProperty acknowledgement (committed before it is sent), and
    ReadProperty latency while large live batches are posted back to back."""
    from bacpypes3.pdu import Address
    from bacpypes3.primitivedata import ObjectIdentifier, Real

    address = Address(f"127.0.0.1:{server.bacnet_port}")
    meter = ObjectIdentifier("analog-value,1")
    counter = itertools.count()

    def wp() -> Awaitable[Any]:
        kw = 20.0 + next(counter) % 11
        return client.write_property(address, meter, "present-value", Real(kw), None, 16)  # type: ignore[no-any-return]

    def rp() -> Awaitable[Any]:
        return client.read_property(address, meter, "present-value")  # type: ignore[no-any-return]

    rows = [
        await load_run(
            "WriteProperty meter (ack)", server.name, wp, args.write_rate, args.duration_s, 1
        )
    ]
    body = json.dumps([{"kw": 20.0 + i % 7} for i in range(args.batch_readings)]).encode()
    url = f"http://127.0.0.1:{server.http_port}/api/v1/readings"
    posted = 0

    async def post_batches() -> None:
        nonlocal posted
        async with httpx.AsyncClient(timeout=60) as http:
            while True:
                reply = await http.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
                reply.raise_for_status()
                posted += 1

    batches = asyncio.create_task(post_batches())
    try:
        await asyncio.sleep(0.05)
        rows.append(
            await load_run(
                f"ReadProperty, {args.batch_readings} live/POST",
                server.name,
                rp,
                args.batch_read_rate,
                args.duration_s,
                1,
            )
        )
    finally:
        batches.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await batches
    log.info("%d batches of %d readings posted", posted, args.batch_readings)
    if posted == 0:
        raise RuntimeError("no batch was accepted during the batch row")
    return rows


async def training_row(client: Any, server: Server, args: argparse.Namespace) -> LoadResult:
    """ReadProperty at --batch-read-rate from a training run's start until 3 s after its end
    (the hand-over: the child's result, its join, the new model's load)."""
    from bacpypes3.pdu import Address
    from bacpypes3.primitivedata import ObjectIdentifier

    address = Address(f"127.0.0.1:{server.bacnet_port}")
    meter = ObjectIdentifier("analog-value,1")
    base = f"http://127.0.0.1:{server.http_port}/api/v1/model"
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(timeout=30) as http:
        (await http.post(f"{base}/train")).raise_for_status()
        started = time.perf_counter()
        ended: float | None = None
        next_poll = started
        interval = 1.0 / args.batch_read_rate
        scheduled = started
        while ended is None or time.perf_counter() < ended + 3.0:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await client.read_property(address, meter, "present-value")
                latencies.append(time.perf_counter() - scheduled)
                if latencies[-1] > 0.1:
                    log.info(
                        "ReadProperty took %.0f ms at %.1f s into the run (%s)",
                        1000 * latencies[-1],
                        scheduled - started,
                        "running" if ended is None else f"{scheduled - ended:.1f} s after its end",
                    )
            except asyncio.CancelledError:
                raise
            except BaseException:  # bacpypes3's AbortPDU is not an Exception
                errors += 1
            scheduled += interval
            scheduled = max(scheduled, time.perf_counter() - interval)
            if ended is None and time.perf_counter() >= next_poll:
                next_poll = time.perf_counter() + 0.5
                model = (await http.get(base)).json()
                if model.get("training_run_in_progress") is None:
                    ended = time.perf_counter()
            if time.perf_counter() - started > 600:
                raise RuntimeError("the training run did not end within 10 minutes")
    ordered = sorted(latencies) or [float("nan")]
    return LoadResult(
        test="ReadProperty, a training run's end",
        target=server.name,
        offered_per_s=args.batch_read_rate,
        achieved_per_s=len(latencies) / (time.perf_counter() - started),
        p50_ms=1000 * statistics.median(ordered),
        p99_ms=1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        errors=errors,
        max_ms=1000 * ordered[-1],
    )
