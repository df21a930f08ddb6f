"""Test helpers: free loopback ports, a bacpypes3 client, and starting the service."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from core.intake import Reading
from core.ports import CommandPort, InputWriter, SubmitReadings

LOOPBACK = "127.0.0.1"


def write_minute_csv(path: Path, start: datetime, kw: Iterable[float]) -> None:
    """A meter CSV (``timestamp,kW``), one row per minute from ``start``."""
    lines = ["timestamp,kW"]
    for i, value in enumerate(kw):
        lines.append(f"{(start + timedelta(minutes=i)).strftime('%Y-%m-%d %H:%M')},{value:.4f}")
    path.write_text("\n".join(lines) + "\n")


# The seed's seven points: a contract with field technicians (names, types, instances).
SEED_POINTS = [
    ("analog-value", 1, "input-power-meter"),
    ("analog-value", 2, "one-hour-future-power"),
    ("analog-value", 3, "power-rate-of-change"),
    ("analog-value", 4, "model-rsme"),
    ("analog-value", 5, "model-training-time"),
    ("binary-value", 1, "high-load-conditions"),
    ("binary-value", 2, "low-load-conditions"),
]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 for both TCP and UDP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as check:
                check.bind((LOOPBACK, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free loopback port")


def make_client(port: int, instance: int = 599999) -> Any:
    """A bacpypes3 client application on 127.0.0.1:<port> (call inside a running loop)."""
    from bacpypes3.app import Application
    from bacpypes3.local.device import DeviceObject
    from bacpypes3.local.networkport import NetworkPortObject

    device = DeviceObject(objectIdentifier=("device", instance), objectName=f"test-client-{port}")
    network_port = NetworkPortObject(
        f"{LOOPBACK}/8:{port}", objectIdentifier=("network-port", 1), objectName="NetworkPort-1"
    )
    return Application.from_object_list([device, network_port])


class ServiceProcess:
    """``open-dsm serve`` as a subprocess on loopback."""

    def __init__(self, data_dir: Path, extra_args: list[str], env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.http_port = free_port()
        self.bacnet_port = free_port(socket.SOCK_DGRAM)
        self.args = [
            sys.executable,
            "-m",
            "open_dsm",
            "serve",
            "--http-host",
            LOOPBACK,
            "--http-port",
            str(self.http_port),
            "--bacnet-address",
            f"{LOOPBACK}/8:{self.bacnet_port}",
            "--data-dir",
            str(data_dir),
            *extra_args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "service.log"

    @property
    def base_url(self) -> str:
        """Root URL of the REST face."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def bacnet_address(self) -> str:
        """Where a client reaches the device."""
        return f"{LOOPBACK}:{self.bacnet_port}"

    def start(self, timeout_s: float = 30.0) -> float:
        """Start and wait until /readyz answers 200; return the seconds it took."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"service did not become ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        """Signal the process and wait for it; return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def log(self) -> str:
        """What the service logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_service(
    data_dir: Path, extra_args: list[str], env: dict[str, str] | None = None
) -> Iterator[ServiceProcess]:
    """Start the service and always stop it."""
    service = ServiceProcess(data_dir, extra_args, env)
    service.start()
    try:
        yield service
    finally:
        service.stop()


async def submit_reading(core: CommandPort, kw: float, observed_at: datetime | None = None) -> None:
    """One REST meter reading (a batch of one) through the command port."""
    await core.command(SubmitReadings([Reading(kw, observed_at)], "rest"))


async def command_input(
    core: CommandPort, key: str, value: float | None, priority: int, source: str = "bacnet"
) -> None:
    """A write (None: a relinquish) of one input at ``priority``, as a BACnet point sends it."""
    await InputWriter(core, key, source).command(value, priority)
