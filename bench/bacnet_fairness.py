"""BACnet fairness: a ReadProperty's latency from one host while another host floods the device.

    python -m bench.bacnet_fairness [--rate 250] [--seconds 5] [--source DIR] [--baseline DIR]
                                    [--json]

Starts ``open-dsm serve`` on loopback (from ``--source``, default this checkout, so a baseline
checkout can be measured the same way), then for each flood kind sends it from 127.0.0.2 at
``--rate`` datagrams/s while 127.0.0.1 asks ReadProperty every 50 ms; prints p50/p99/max,
requests lost (no answer in 2 s) and how many flood datagrams were answered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

INSTANCE = 500555
ROOT = Path(__file__).resolve().parents[1]


def _frame(service: int, body: bytes, invoke_id: int) -> bytes:
    apdu = bytes([0x00, 0x05, invoke_id, service]) + body
    return b"\x81\x0a" + struct.pack(">H", len(apdu) + 6) + b"\x01\x04" + apdu


def _oid(kind: int, instance: int) -> bytes:
    return b"\x0c" + struct.pack(">I", (kind << 22) | instance)


def _rpm(specs: list[tuple[int, int, list[int]]]) -> bytes:
    body = b""
    for kind, instance, props in specs:
        body += _oid(kind, instance) + b"\x1e"
        body += b"".join(bytes([0x09, p]) if p < 256 else b"" for p in props) + b"\x1f"
    return body


FLOODS: dict[str, list[tuple[int, bytes]]] = {
    "none": [],
    "RPM over 256 reads (refused)": [(14, _rpm([(8, INSTANCE, [8] * 150)]))],
    "RPM of 250 reads": [(14, _rpm([(2, 1, [85] * 250)]))],
    "ALL of AV 1..23 (refused)": [(14, _rpm([(2, i, [8]) for i in range(1, 24)]))],
    "unexecuted service (Reject)": [(26, _oid(2, 1))],
}
FLOODS["mix of the above"] = [f for kind in list(FLOODS.values())[1:] for f in kind]


def _extra_path() -> list[str]:
    """BENCH_SERVICE_PYTHONPATH: more entries for the service's path (e.g. a sitecustomize)."""
    extra = os.environ.get("BENCH_SERVICE_PYTHONPATH", "")
    return [entry for entry in extra.split(os.pathsep) if entry]


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _service(source: Path) -> Any:
    http, bacnet = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    data = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    args = [sys.executable, "-m", "open_dsm", "serve", "--http-host", "127.0.0.1"]
    args += ["--http-port", str(http), "--bacnet-address", f"127.0.0.1/8:{bacnet}"]
    args += ["--data-dir", str(data), "--device-instance", str(INSTANCE)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), *_extra_path()])}
    log = (data / "service.log").open("wb")
    proc = subprocess.Popen(args, cwd=source, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{http}/readyz", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError((data / "service.log").read_text())
            time.sleep(0.2)
        yield bacnet, data / "service.log"
    finally:
        proc.terminate()
        proc.wait(20)


def _flood(port: int, frames: list[tuple[int, bytes]], rate: float, stop: threading.Event) -> Any:
    counts = {"sent": 0, "answered": 0}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.setblocking(False)
    start = time.monotonic()
    while not stop.is_set():
        service, body = frames[counts["sent"] % len(frames)]
        sock.sendto(_frame(service, body, counts["sent"] % 256), ("127.0.0.1", port))
        counts["sent"] += 1
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(65536)
                counts["answered"] += 1
        time.sleep(max(0.0, start + counts["sent"] / rate - time.monotonic()))
    sock.close()
    return counts


def _measure(port: int, seconds: float) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    latencies: list[float] = []
    lost = 0
    end = time.monotonic() + seconds
    invoke_id = 0
    body = _oid(2, 1) + b"\x19\x55"  # analog-value 1, present-value
    while time.monotonic() < end:
        invoke_id = (invoke_id + 1) % 256
        started = time.monotonic()
        sock.sendto(_frame(12, body, invoke_id), ("127.0.0.1", port))
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                lost += 1
                break
            if data[6] >> 4 == 3 and data[7] == invoke_id:
                latencies.append((time.monotonic() - started) * 1000)
                break
        time.sleep(0.05)
    sock.close()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {
        "n": len(latencies),
        "lost": lost,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] if latencies else 0.0,
    }


def _row(port: int, frames: list[tuple[int, bytes]], rate: float, seconds: float) -> dict[str, Any]:
    """Measure ReadProperty while ``frames`` flood (none: the baseline row)."""
    stop = threading.Event()
    counts: dict[str, int] = {"sent": 0, "answered": 0}
    thread = None
    if frames:
        thread = threading.Thread(
            target=lambda: counts.update(_flood(port, frames, rate, stop)), daemon=True
        )
        thread.start()
        time.sleep(0.5)
    row = _measure(port, seconds)
    stop.set()
    if thread is not None:
        thread.join()
    time.sleep(1.0)  # let the device drain before the next row
    return {**counts, **row}


def run(rate: float, seconds: float, source: Path) -> list[dict[str, Any]]:
    """One row per flood kind, against one service started from ``source``."""
    rows = []
    with _service(source) as (port, log_path):
        lines_before = len(log_path.read_text().splitlines())
        for name, frames in FLOODS.items():
            rows.append({"flood": name, **_row(port, frames, rate, seconds)})
        lines = len(log_path.read_text().splitlines()) - lines_before
        rows.append({"flood": "service log lines during all rows", "lines": lines})
    return rows


def _table(rows: list[dict[str, Any]], rate: float, source: Path) -> list[str]:
    out = [
        f"ReadProperty from 127.0.0.1 while 127.0.0.2 floods at {rate:g}/s ({source})",
        f"{'flood':32} {'n':>4} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'lost':>5} "
        f"{'answered':>10}",
    ]
    for row in rows:
        if "lines" in row:
            out.append(f"{row['flood']}: {row['lines']}")
            continue
        answered = f"{row['answered']}/{row['sent']}" if row["sent"] else "-"
        times = [f"{row[k]:7.1f}" if row["n"] else f"{'-':>7}" for k in ("p50_ms", "p99_ms")]
        times.append(f"{row['max_ms']:7.1f}" if row["n"] else f"{'-':>7}")
        out.append(
            f"{row['flood']:32} {row['n']:4d} {' '.join(times)} {row['lost']:5d} {answered:>10}"
        )
    return out


def main() -> int:
    """Parse arguments, run (the baseline checkout first, if given), print tables or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=250.0, help="flood datagrams/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per row")
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to run the service")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured first")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sources = [args.baseline.resolve()] if args.baseline else []
    sources.append(args.source.resolve())
    results = {str(source): run(args.rate, args.seconds, source) for source in sources}
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return 0
    out: list[str] = []
    for source, rows in results.items():
        out += [*_table(rows, args.rate, Path(source)), ""]
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
