"""The service bench's processes: the servers it starts, the BAS, the client, /proc sampling."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

OURS_INSTANCE = 500001
BARE_INSTANCE = 500002
CLIENT_INSTANCE = 599001


def free_port(kind: str) -> int:
    """A free loopback port, ``udp`` or ``tcp``."""
    import socket

    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def loads_tensorflow(pid: int) -> bool:
    """Whether a process has TensorFlow mapped."""
    return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()


class Server:
    """A server process under test."""

    def __init__(self, name: str, args: list[str], bacnet_port: int, http_port: int) -> None:
        self.name = name
        self.args = args
        self.bacnet_port = bacnet_port
        self.http_port = http_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Spawn; return the monotonic spawn time."""
        spawned = time.monotonic()
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return spawned

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ours_server(
    data_dir: Path, seed: Path | None = None, battery_kwh: float | None = None
) -> Server:
    """The real service on free loopback ports (its database copied from ``seed``)."""
    bacnet, http = free_port("udp"), free_port("tcp")
    if seed is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(seed / "open-dsm.sqlite3", data_dir / "open-dsm.sqlite3")
    args = [
        sys.executable,
        "-m",
        "open_dsm",
        "serve",
        "--data-dir",
        str(data_dir),
        "--bacnet-address",
        f"127.0.0.1/8:{bacnet}",
        "--http-host",
        "127.0.0.1",
        "--http-port",
        str(http),
        "--device-instance",
        str(OURS_INSTANCE),
        "--timezone",
        "UTC",
        "--log-level",
        "WARNING",
    ]
    if battery_kwh is not None:
        args += [
            "--has-battery",
            "true",
            "--battery-capacity-kwh",
            f"{battery_kwh:g}",
            "--battery-charge-kw",
            f"{battery_kwh / 2:g}",
        ]
    return Server("open-dsm", args, bacnet, http)


@contextlib.asynccontextmanager
async def bas_writing(http_port: int) -> AsyncIterator[None]:
    """A BAS writing the meter every second and the battery's SOC every 10 s (so the dispatch
    planner runs every snapshot); on entry, waits until the service has solved a plan."""
    base = f"http://127.0.0.1:{http_port}/api/v1"

    writes = {"ok": 0, "failed": 0}

    async def write(http: httpx.AsyncClient) -> None:
        for count in itertools.count():
            try:
                if count % 10 == 0:
                    soc = await http.post(f"{base}/demand/inputs", json={"battery_soc_pct": 60.0})
                    soc.raise_for_status()
                kw = 20.0 + 5.0 * math.sin(count / 60)
                (await http.post(f"{base}/readings", json={"kw": kw})).raise_for_status()
                writes["ok"] += 1
            except httpx.HTTPError as exc:
                # A BAS writes again next second (e.g. a kept-alive connection the server
                # closed as the request went out): counted, never the end of the run.
                writes["failed"] += 1
                if writes["failed"] <= 3:
                    log.warning("BAS write failed (%r); writing on", exc)
            await asyncio.sleep(1.0)

    async with httpx.AsyncClient() as http:
        task = asyncio.create_task(write(http))
        try:
            for _ in range(300):
                plan = (await http.get(f"{base}/dispatch/plan")).json()
                if plan.get("reliable"):
                    break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError(f"the service never solved a dispatch plan: {plan}")
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info("BAS writes: %d acknowledged, %d failed", writes["ok"], writes["failed"])


def bare_server(points_json: str) -> Server:
    """The bare bacpypes3 device serving ``points_json``'s points."""
    bacnet, http = free_port("udp"), free_port("tcp")
    args = [
        sys.executable,
        "-m",
        "bench.bare_device",
        "--address",
        f"127.0.0.1/8:{bacnet}",
        "--instance",
        str(BARE_INSTANCE),
        "--http-port",
        str(http),
        "--points-json",
        points_json,
    ]
    return Server("bare bacpypes3", args, bacnet, http)


async def first_i_am(client: Any, server: Server, instance: int, spawned: float) -> float:
    """Seconds from spawn until the device answers a directed Who-Is."""
    from bacpypes3.pdu import Address

    address = Address(f"127.0.0.1:{server.bacnet_port}")
    deadline = spawned + 30
    while time.monotonic() < deadline:
        i_ams = await client.who_is(instance, instance, address, timeout=0.05)
        if i_ams:
            return time.monotonic() - spawned
        assert server.proc is not None
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}")
    raise RuntimeError(f"{server.name} never answered Who-Is")


def bacnet_client(port: int) -> Any:
    """The bench's BACnet client application on a loopback port."""
    from bacpypes3.app import Application
    from bacpypes3.local.device import DeviceObject
    from bacpypes3.local.networkport import NetworkPortObject

    device = DeviceObject(objectIdentifier=("device", CLIENT_INSTANCE), objectName="bench-client")
    network_port = NetworkPortObject(
        f"127.0.0.1/8:{port}", objectIdentifier=("network-port", 1), objectName="NetworkPort-1"
    )
    return Application.from_object_list([device, network_port])


def load_average_1min() -> float:
    """The machine's 1-minute load average."""
    return os.getloadavg()[0]


def proc_usage(pid: int) -> tuple[float, float, int] | None:
    """(CPU s, peak RSS MB, niceness) of a live process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        _, peak = rss_mb(pid)
    except (OSError, KeyError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # utime and stime are the 14th and 15th fields, nice the 19th (fields[0] is the 3rd).
    return (int(fields[11]) + int(fields[12])) / ticks, peak, int(fields[16])
