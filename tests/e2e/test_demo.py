"""`open-dsm demo` end to end: bundled history imported to end now, the service, a simulated BAS
writing over BACnet whose writes arrive in the stored minutes, and Ctrl-C stopping everything."""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest

from core.timegrid import minute_of, minute_start
from open_dsm.demo import (
    BUSIEST_LEAD_MINUTES,
    MIN_HISTORY_MINUTES,
    MINUTES_PER_WEEK,
    choose_start,
    shifted_demo_data,
)
from tests.helpers import LOOPBACK, free_port

pytestmark = pytest.mark.e2e

# A BAS line on the file's clock: "2022-08-23 15:21:28-0500 wrote  12.93 kW | forecast+60 ...".
WROTE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[-+]\d{4}) wrote +(-?\d+\.\d\d) kW \| ")


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


def _demo(*flags: str) -> tuple[subprocess.Popen[str], str, queue.Queue[str]]:
    http_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "open_dsm",
            "demo",
            "--http-port",
            str(http_port),
            "--bacnet-port",
            str(free_port(socket.SOCK_DGRAM)),
            "--bas-port",
            str(free_port(socket.SOCK_DGRAM)),
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    return proc, f"http://{LOOPBACK}:{http_port}", lines


def test_choose_start_picks_a_weekday_time_or_the_busiest_stretch() -> None:
    tz = ZoneInfo("America/Chicago")
    start = minute_of(datetime(2022, 7, 25, 5, 0, tzinfo=UTC))  # Monday 00:00 CDT
    values = np.full(35 * 1440, 5.0)
    peak = MIN_HISTORY_MINUTES + 3 * 1440 + 600  # a 15-minute block, aligned with the file
    values[peak : peak + 15] = 40.0
    values[1000:1015] = 90.0  # inside the 28 days of history: never chosen
    busiest = choose_start(start, values, tz, "busiest")
    assert busiest == peak - BUSIEST_LEAD_MINUTES
    at_seven = choose_start(start, values, tz, "07:00")
    local = minute_start(start + at_seven).astimezone(tz)
    assert at_seven >= MIN_HISTORY_MINUTES and (local.hour, local.minute) == (7, 0)
    assert local.weekday() < 5
    for bad in ("7", "25:00", "noon"):
        with pytest.raises(ValueError, match="--start"):
            choose_start(start, values, tz, bad)


def test_demo_on_the_files_clock_writes_one_minute_per_file_minute(tmp_path: Path) -> None:
    """--speed 20 --start busiest: the service, the BAS and the stored minutes run on file time;
    each BAS write is one stored minute; the forecast line is replayed over the imported day."""
    proc, base, lines = _demo("--speed", "20", "--start", "busiest")
    seen: list[str] = []
    writes: list[tuple[datetime, float]] = []

    def drain(wait_s: float) -> None:
        with contextlib.suppress(queue.Empty):
            line = lines.get(timeout=wait_s)
            while True:
                seen.append(line)
                match = WROTE.match(line)
                if match:
                    writes.append((datetime.fromisoformat(match[1]), float(match[2])))
                line = lines.get_nowait()

    try:
        deadline = time.monotonic() + 120
        while not any(line.startswith("dashboard: ") for line in seen):
            assert time.monotonic() < deadline and proc.poll() is None, "\n".join(seen)
            drain(1.0)
        data_dir = Path(next(line for line in seen if "data in" in line).split("data in ")[1])
        # The service's clock is the file's (August 2022), not the wall clock.
        month = httpx.get(f"{base}/api/v1/demand/month").json()
        service_now = datetime.fromisoformat(month["now"])
        assert service_now.year == 2022 and service_now.month == 8, month["now"]
        assert month["billed_peak_kw"] is not None  # seeded from the imported August minutes
        # The day before the start has a forecast line at once (replayed).
        deadline = time.monotonic() + 60
        replayed: list[dict[str, object]] = []
        while len(replayed) < 1000 and time.monotonic() < deadline:
            drain(1.0)
            history = httpx.get(f"{base}/api/v1/forecast/history", params={"limit": 5000}).json()
            replayed = [e for e in history["items"] if e["replayed"]]
        assert len(replayed) >= 1000

        # Each write is one file minute: it arrives as one stored minute with its value.
        deadline = time.monotonic() + 90
        while len(writes) < 6 and time.monotonic() < deadline:
            drain(2.0)
            assert proc.poll() is None, "\n".join(seen)
        assert len(writes) >= 6, "\n".join(seen)
        minutes = [at.replace(second=0) for at, _ in writes]
        assert len(set(minutes)) == len(minutes)
        first = minutes[0]
        reply = httpx.get(
            f"{base}/api/v1/readings",
            params={"start": first.isoformat(), "end": minutes[-2].isoformat(), "limit": 100},
        ).json()
        stored = {datetime.fromisoformat(r["observed_at"]): r for r in reply["items"]}
        checked = 0
        for (at, kw), minute in zip(writes[:-2], minutes[:-2], strict=True):
            row = stored[minute.astimezone(UTC)]
            assert row["sample_count"] == 1 and abs(row["kw"] - kw) <= 0.006, (row, at, kw)
            checked += 1
        assert checked >= 4
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


def test_demo_minutes_counts_file_minutes() -> None:
    proc, _, lines = _demo("--speed", "30", "--start", "10:00", "--minutes", "4")
    try:
        assert proc.wait(150) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seen: list[str] = []
    with contextlib.suppress(queue.Empty):
        while True:
            seen.append(lines.get(timeout=1))
    text = "\n".join(seen)
    assert "played 4 file minutes" in text, text
    stamps = [datetime.fromisoformat(m[1]) for m in map(WROTE.match, seen) if m]
    assert 1 <= len(stamps) <= 4, text
    assert all(at.strftime("%H") == "10" for at in stamps), text
    assert "service stopped (exit code 0)" in text
