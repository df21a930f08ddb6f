"""`open-dsm demo` end to end: bundled history imported to end now, the service, a simulated BAS
writing over BACnet whose writes arrive in the stored minutes, and Ctrl-C stopping everything."""

from __future__ import annotations

import contextlib
import itertools
import queue
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import pytest

from open_dsm.demo import MIN_HISTORY_MINUTES, MINUTES_PER_WEEK, shifted_demo_data
from tests.helpers import LOOPBACK, free_port

pytestmark = pytest.mark.e2e

WROTE = re.compile(r"^(\d\d):(\d\d):(\d\d) wrote +(-?\d+\.\d\d) kW \| forecast\+60 ")


def test_shift_keeps_weekday_and_history() -> None:
    values = np.arange(35 * 1440, dtype=np.float64)
    start = 27_000_000
    for now in (start + 40 * 1440 + 17, start + 400 * 1440 + 1234, start + 35 * 1440):
        data = shifted_demo_data(start, values, now)
        assert data.shift_minutes % MINUTES_PER_WEEK == 0
        assert len(data.history_kw) >= MIN_HISTORY_MINUTES
        # History ends with the minute before now; the BAS plays the file from the next one.
        assert data.history_start_minute + len(data.history_kw) == now
        assert data.future_kw[0] == values[len(data.history_kw)]
        assert len(data.future_kw) == len(values)


def _lines(stream: IO[str], out: queue.Queue[str]) -> None:
    for raw in iter(stream.readline, ""):
        out.put(raw.rstrip("\n"))


def test_demo_bas_writes_arrive_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    http_port = free_port()
    bacnet_port = free_port(socket.SOCK_DGRAM)
    bas_port = free_port(socket.SOCK_DGRAM)
    base = f"http://{LOOPBACK}:{http_port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "open_dsm",
            "demo",
            "--speed",
            "20",  # a write every 3 s
            "--http-port",
            str(http_port),
            "--bacnet-port",
            str(bacnet_port),
            "--bas-port",
            str(bas_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    writes: list[tuple[datetime, float]] = []
    today = datetime.now(UTC).date()

    def drain(wait_s: float) -> None:
        with contextlib.suppress(queue.Empty):
            line = lines.get(timeout=wait_s)
            while True:
                seen.append(line)
                match = WROTE.match(line)
                if match:
                    h, m, s = (int(g) for g in match.groups()[:3])
                    at = datetime(today.year, today.month, today.day, h, m, s, tzinfo=UTC)
                    writes.append((at, float(match.group(4))))
                line = lines.get_nowait()

    try:
        deadline = time.monotonic() + 120
        while not any(line.startswith("dashboard: ") for line in seen):
            assert time.monotonic() < deadline and proc.poll() is None, "\n".join(seen)
            drain(1.0)
        assert f"dashboard: {base}/" in "\n".join(seen)
        data_dir = Path(next(line for line in seen if "data in" in line).split("data in ")[1])
        # The imported history ends now: the last 24 h are stored.
        day_ago = (datetime.now(UTC) - timedelta(hours=24)).isoformat()
        stored = httpx.get(f"{base}/api/v1/readings", params={"start": day_ago, "limit": 2000})
        assert len(stored.json()["items"]) >= 1400

        # Wait for a minute the BAS wrote through, closed and stored by the service.
        checked = None
        deadline = time.monotonic() + 150
        while checked is None and time.monotonic() < deadline:
            drain(2.0)
            assert proc.poll() is None, "\n".join(seen)
            if not writes:
                continue
            # The BAS's first minute (the imported history ends the minute before the import).
            first = writes[0][0].replace(second=0)
            reply = httpx.get(f"{base}/api/v1/readings", params={"start": first.isoformat()}).json()
            for row in reply["items"]:
                minute = datetime.fromisoformat(row["observed_at"])
                if row["sample_count"] > 0 and writes[-1][0] >= minute + timedelta(minutes=1):
                    checked = (minute, row)
                    break
        assert checked is not None, "no BAS minute was stored:\n" + "\n".join(seen)
        minute, row = checked
        inside = [kw for at, kw in writes if minute <= at < minute + timedelta(minutes=1)]
        # A write printed on the boundary second may belong to either minute.
        edge = [
            kw
            for at, kw in writes
            if at in (minute - timedelta(seconds=1), minute + timedelta(seconds=59))
        ]
        candidates = [
            inside,
            *[[*inside, kw] for kw in edge],
            *[[k for k in inside if k != kw] for kw in edge],
        ]
        assert any(
            len(c) == row["sample_count"] and abs(sum(c) / len(c) - row["kw"]) <= 0.006
            for c in candidates
            if c
        ), (row, inside, edge)
        # 20 writes a minute at --speed 20: one every 3 s (printed to the second, so 2-4 s apart).
        gaps = [(b - a).total_seconds() for (a, _), (b, _) in itertools.pairwise(writes)]
        assert gaps and 2.5 <= statistics.median(gaps) <= 3.5, gaps

        # The BAS reads the decisions back: the forecast 60 minutes ahead is a number.
        assert re.search(r"forecast\+60 \d+\.\d\d", "\n".join(seen))

        # Ctrl-C stops the BAS and the service, and removes the temporary data.
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        drain(1.0)
        assert "service stopped (exit code 0)" in "\n".join(seen)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{base}/healthz", timeout=2)
        assert not data_dir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
