"""``open-dsm bench service``: BACnet and REST speed and footprint against a bare device.

The real service (``open-dsm serve``) and a bare bacpypes3 device with seven plain objects
(``bench.bare_device``) run as separate processes on loopback; this process is the client for both,
so the ratios compare the servers under the same client, in the same run.
One room though over 600 lines: one client's sequence of measurements over the two server processes
it starts; the process handling could move out, left here while ``bench`` edits this file (#30).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

SHARED_MINUTE_FILE = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "egauge_minute_kw_2022-07_08.csv"
)
# A request not answered within this long counts as an error (a lost datagram or a stalled
# server must not hold a load run, and the bench, for ever).
REQUEST_TIMEOUT_S = 10.0
OURS_INSTANCE = 500001
BARE_INSTANCE = 500002
CLIENT_INSTANCE = 599001


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


def _positive(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``open-dsm bench service``."""
    parser.add_argument("--duration-s", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--rate", type=float, default=500.0, help="offered ReadProperty rate /s")
    parser.add_argument("--rest-rate", type=float, default=200.0, help="offered REST rate /s")
    parser.add_argument("--concurrency", type=int, default=4, help="in-flight requests flat out")
    parser.add_argument(
        "--flood-rate",
        type=_positive,
        default=20.0,
        help="expensive ReadPropertyMultiple requests /s another client sends in the flood rows",
    )
    parser.add_argument("--startups", type=int, default=3, help="start-ups timed per server")
    parser.add_argument(
        "--with-model",
        type=Path,
        default=None,
        help="a data dir holding a trained model (e.g. after `open-dsm import` and `open-dsm "
        "train`): its database is copied so the service runs that model",
    )
    parser.add_argument(
        "--battery-kwh",
        type=_positive,
        default=None,
        help="configure a battery of this many kWh (half as many kW) and write the meter every "
        "second, so the dispatch planner runs through the load runs (its RSS is in the footprint)",
    )
    parser.add_argument(
        "--write-rate",
        type=_positive,
        default=20.0,
        help="offered WriteProperty rate /s to input-power-meter (acknowledgement latency)",
    )
    parser.add_argument(
        "--batch-readings",
        type=int,
        default=19_000,
        help="live readings per POST in the batch row (ReadProperty latency meanwhile)",
    )
    parser.add_argument(
        "--batch-read-rate",
        type=_positive,
        default=20.0,
        help="offered ReadProperty rate /s while the batches are posted",
    )
    parser.add_argument(
        "--training-run",
        action="store_true",
        help="also start a training run (POST /api/v1/model/train; needs --with-model history) "
        "and time ReadProperty from its start until well after its end",
    )
    parser.add_argument(
        "--only",
        choices=["all", "ingest", "tuning"],
        default="all",
        help="'ingest': only open-dsm's WriteProperty acknowledgement and batch rows (no bare "
        "device, no start-ups); 'tuning': only the rows of --with-tuning",
    )
    parser.add_argument(
        "--with-tuning",
        action="store_true",
        help="also ReadProperty at --rate and REST GET /api/v1/points at --rest-rate while the "
        "nightly dispatch self-tuning replay runs (core.tuning's child at its low CPU priority, "
        "over --tuning-data loaded into the service's database), beside the same rows without "
        "it before and after; prints the replay's wall time, CPU time and peak RSS (implies "
        "--battery-kwh 20 unless given)",
    )
    parser.add_argument(
        "--tuning-data",
        type=Path,
        default=SHARED_MINUTE_FILE,
        help="the site history the replay reads (a meter CSV, at least 28 days)",
    )
    parser.add_argument(
        "--tuning-tz", default="America/Chicago", help="the time zone of --tuning-data's site"
    )
    parser.add_argument(
        "--tuning-candidates",
        default=None,
        help="replay only these candidates (comma-separated; default: all, as the service)",
    )
    parser.add_argument(
        "--tuning-quiet-runs",
        type=int,
        default=1,
        help="load runs of each test before and after the replay (pooled like those during it)",
    )
    parser.add_argument(
        "--tuning-replan-minutes",
        type=int,
        default=1,
        help="the replay re-plans every N minutes (1, the default, is what the service does)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


def _free_port(kind: str) -> int:
    import socket

    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _loads_tensorflow(pid: int) -> bool:
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


def _ours(data_dir: Path, seed: Path | None = None, battery_kwh: float | None = None) -> Server:
    bacnet, http = _free_port("udp"), _free_port("tcp")
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
async def _bas_writing(http_port: int) -> AsyncIterator[None]:
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


def _bare(points_json: str) -> Server:
    bacnet, http = _free_port("udp"), _free_port("tcp")
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


async def _first_i_am(client: Any, server: Server, instance: int, spawned: float) -> float:
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


async def _load(
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


async def _ingest_rows(client: Any, server: Server, args: argparse.Namespace) -> list[LoadResult]:
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
        await _load(
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
            await _load(
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


async def _training_row(client: Any, server: Server, args: argparse.Namespace) -> LoadResult:
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


async def _run_ingest(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Only the ingest rows, on open-dsm alone."""
    client = _client(_free_port("udp"))
    try:
        ours = _ours(workdir / "ingest", args.with_model, args.battery_kwh)
        ours.start()
        try:
            await _first_i_am(client, ours, OURS_INSTANCE, time.monotonic())
            await asyncio.sleep(1.0)
            rows = await _ingest_rows(client, ours, args)
            if args.training_run:
                rows.append(await _training_row(client, ours, args))
            return {"loads": rows, "footprint": {}}
        finally:
            ours.stop()
    finally:
        client.close()


@dataclass
class ReplayUsage:
    """The nightly replay's child process, as sampled from /proc while it ran."""

    wall_s: float  # from the trigger until its result was back in this process
    child_wall_s: float | None  # the child's own measure of the replay (``run_tuning``)
    cpu_s: float  # user + system time of the child
    peak_rss_mb: float  # the child's VmHWM
    history_days: float | None
    chosen: str | None
    candidates: int
    niceness: int | None
    load_average: tuple[float, float] = (float("nan"), float("nan"))  # 1-min, replay start / end


def _tuning_seed(workdir: Path, args: argparse.Namespace) -> tuple[Path, Any]:
    """A data dir whose database holds --tuning-data as imported history (and a trained model's
    runs with --with-model); the local midnight after the history's last day."""
    from datetime import datetime
    from datetime import time as clock_time
    from zoneinfo import ZoneInfo

    from core.forecast.meter_csv import load_meter_csv
    from core.storage.migrate import upgrade_to_head
    from core.storage.repository import Storage, create_db_engine
    from core.timegrid import minute_start

    seed = workdir / "tuning-seed"
    seed.mkdir(parents=True, exist_ok=True)
    database = seed / "open-dsm.sqlite3"
    if args.with_model is not None:
        shutil.copy(args.with_model / "open-dsm.sqlite3", database)
    tz = ZoneInfo(args.tuning_tz)
    series = load_meter_csv(args.tuning_data, tz)
    engine = create_db_engine(f"sqlite:///{database}")
    try:
        upgrade_to_head(engine)
        Storage(engine).insert_missing_minutes(series.start_minute, series.values_kw, "import")
    finally:
        engine.dispose()
    last = minute_start(series.start_minute + len(series.values_kw)).astimezone(tz)
    night = datetime.combine(last.date(), clock_time(0), tzinfo=tz)
    return seed, night


def _load_average() -> float:
    """The machine's 1-minute load average."""
    return os.getloadavg()[0]


def _proc_usage(pid: int) -> tuple[float, float, int] | None:
    """(CPU s, peak RSS MB, niceness) of a live process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        _, peak = _rss_mb(pid)
    except (OSError, KeyError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # utime and stime are the 14th and 15th fields, nice the 19th (fields[0] is the 3rd).
    return (int(fields[11]) + int(fields[12])) / ticks, peak, int(fields[16])


async def _tuning_rows(
    client: Any, server: Server, args: argparse.Namespace, database: Path, night: Any
) -> tuple[list[LoadResult], ReplayUsage]:
    """ReadProperty and REST latency without the nightly replay, while it runs, and after it.

    The replay is the service's own (``core.tuning.TuningManager``: a spawned child at
    ``TUNING_NICENESS``, ``run_tuning`` over the service's database, every candidate); it is
    started from this process rather than by the service's midnight schedule, so its parent
    here only waits on it: recording the run and serving its choice (one row, one call) are left
    out.
    """
    from zoneinfo import ZoneInfo

    from bacpypes3.pdu import Address
    from bacpypes3.primitivedata import ObjectIdentifier

    from core.clock import SystemClock
    from core.dispatch.assets import Battery, Tariff
    from core.dispatch.controller import DispatchController
    from core.dispatch.tuning import candidates
    from core.storage.repository import Storage, create_db_engine
    from core.tuning import TuningManager

    address = Address(f"127.0.0.1:{server.bacnet_port}")
    meter = ObjectIdentifier("analog-value,1")
    url = f"http://127.0.0.1:{server.http_port}/api/v1/points"
    kwh = float(args.battery_kwh)
    # The battery the service builds from --battery-kwh (its reserve default, 20 %).
    battery = Battery(capacity_kwh=kwh, charge_kw=kwh / 2, discharge_kw=kwh / 2, reserve_pct=20.0)
    tz = ZoneInfo(args.tuning_tz)
    database_url = f"sqlite:///{database}"
    engine = create_db_engine(database_url)

    async def not_recorded(what: str, job: Callable[[], Any]) -> Any:
        return None  # the service's writer records the run; not this process's to write

    manager = TuningManager(
        Storage(engine),
        SystemClock(),
        DispatchController(battery, Tariff(), tz),
        database_url,
        tz,
        Tariff(),
        15,
        not_recorded,
    )
    if args.tuning_candidates:
        manager.names = tuple(n.strip() for n in args.tuning_candidates.split(",") if n.strip())
    manager.replan_every_minutes = args.tuning_replan_minutes

    def rp() -> Awaitable[Any]:
        return client.read_property(address, meter, "present-value")  # type: ignore[no-any-return]

    rows: list[LoadResult] = []
    try:
        async with httpx.AsyncClient() as http:

            async def rest() -> None:
                (await http.get(url)).raise_for_status()

            async def quiet(label: str) -> None:
                # Alternating load runs, as during the replay, pooled per test.
                pooled: dict[str, tuple[list[float], list[LoadResult]]] = {}
                for _ in range(args.tuning_quiet_runs):
                    for test, send, rate in (
                        ("ReadProperty", rp, args.rate),
                        ("REST GET /api/v1/points", rest, args.rest_rate),
                    ):
                        log.info("%s: %s, %s", server.name, test, label)
                        samples, chunks = pooled.setdefault(test, ([], []))
                        chunks.append(
                            await _load(test, server.name, send, rate, args.duration_s, 1, samples)
                        )
                for test, (samples, chunks) in pooled.items():
                    rate = args.rate if test == "ReadProperty" else args.rest_rate
                    rows.append(_merged(f"{test}, {label}", server.name, rate, samples, chunks))

            await quiet("no replay")
            usage: dict[str, float] = {"cpu_s": 0.0, "peak_mb": 0.0, "nice": -99.0}
            load_at_start = _load_average()
            started = time.monotonic()
            task = manager.trigger(night)

            async def sample() -> None:
                while True:
                    for pid in manager.child_pids():
                        now = _proc_usage(pid)
                        if now is not None:
                            usage["cpu_s"] = max(usage["cpu_s"], now[0])
                            usage["peak_mb"] = max(usage["peak_mb"], now[1])
                            usage["nice"] = now[2]
                    await asyncio.sleep(0.1)

            sampler = asyncio.create_task(sample())
            during: dict[str, tuple[list[float], list[LoadResult]]] = {
                "ReadProperty": ([], []),
                "REST GET /api/v1/points": ([], []),
            }
            try:
                # Wait until the child is up (spawned, importing) before measuring.
                for _ in range(1200):
                    if manager.child_pids() or task.done():
                        break
                    await asyncio.sleep(0.05)
                while not task.done():
                    for test, send, rate in (
                        ("ReadProperty", rp, args.rate),
                        ("REST GET /api/v1/points", rest, args.rest_rate),
                    ):
                        if task.done():
                            break
                        samples, chunks = during[test]
                        chunk = await _load(
                            test, server.name, send, rate, args.duration_s, 1, samples
                        )
                        chunks.append(chunk)
                        log.info(
                            "%s during the replay: p50 %.2f ms, p99 %.2f ms, %d errors",
                            test,
                            chunk.p50_ms,
                            chunk.p99_ms,
                            chunk.errors,
                        )
                result = await task
                wall_s = time.monotonic() - started
                load_at_end = _load_average()
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            for test, (samples, chunks) in during.items():
                rate = args.rate if test == "ReadProperty" else args.rest_rate
                rows.append(_merged(f"{test}, nightly replay", server.name, rate, samples, chunks))
            await quiet("no replay (after)")
    finally:
        engine.dispose()
    if result is None:
        raise RuntimeError("the nightly replay gave no result (see the log)")
    replay = ReplayUsage(
        wall_s=wall_s,
        child_wall_s=result.get("wall_s"),
        cpu_s=usage["cpu_s"],
        peak_rss_mb=usage["peak_mb"],
        history_days=result.get("history_days"),
        chosen=result.get("chosen"),
        candidates=len(result.get("candidates") or candidates()),
        niceness=None if usage["nice"] == -99.0 else int(usage["nice"]),
        load_average=(load_at_start, load_at_end),
    )
    return rows, replay


def _merged(
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


async def _run_tuning(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Only the rows of --with-tuning, on open-dsm alone (the BAS writing every second)."""
    seed, night = _tuning_seed(workdir, args)
    client = _client(_free_port("udp"))
    try:
        ours = _ours(workdir / "tuning", seed, args.battery_kwh)
        ours.start()
        try:
            await _first_i_am(client, ours, OURS_INSTANCE, time.monotonic())
            async with _bas_writing(ours.http_port):
                rows, replay = await _tuning_rows(
                    client, ours, args, workdir / "tuning" / "open-dsm.sqlite3", night
                )
            return {"loads": rows, "footprint": {}, "tuning": replay}
        finally:
            ours.stop()
    finally:
        client.close()


def _tuning_lines(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The replay's cost and the latency beside the same rows without it."""
    replay: ReplayUsage | None = report.get("tuning")
    if replay is None:
        return []
    rows = {r.test: r for r in report["loads"] if r.target == "open-dsm"}
    lines = [
        "",
        f"nightly replay ({replay.candidates} candidates, {replay.history_days} days of "
        f"{args.tuning_data.name}, child at nice {replay.niceness}): wall {replay.wall_s:.1f} s "
        f"(the child's own {replay.child_wall_s} s), CPU {replay.cpu_s:.1f} s, peak RSS "
        f"{replay.peak_rss_mb:.0f} MB (budget <= 300 s, <= 500 MB); chose {replay.chosen}; "
        f"load average {replay.load_average[0]:.1f} at its start, {replay.load_average[1]:.1f} at "
        f"its end ({os.cpu_count()} CPUs)",
    ]
    for test, rate in (("ReadProperty", args.rate), ("REST GET /api/v1/points", args.rest_rate)):
        cells = []
        for label in ("no replay", "nightly replay", "no replay (after)"):
            row = rows.get(f"{test}, {label}")
            if row is not None:
                cells.append(f"{label} {row.p50_ms:.2f} / {row.p99_ms:.2f}")
        lines.append(
            f"{test} at {rate:.0f}/s, p50 / p99 ms: " + ", ".join(cells) + " (p99 limit 10 ms)"
        )
    return lines


def _rpm_all_frame(instance: int, repeats: int) -> bytes:
    """A ReadPropertyMultiple of every property of the device, ``repeats`` times (raw BACnet/IP)."""
    object_id = ((8 << 22) | instance).to_bytes(4, "big")
    body = b"\x0c" + object_id + b"\x1e" + b"\x09\x08" * repeats + b"\x1f"
    npdu = b"\x01\x04" + bytes([0x00, 0x05, 0x01, 14]) + body
    return b"\x81\x0a" + (len(npdu) + 4).to_bytes(2, "big") + npdu


@contextlib.asynccontextmanager
async def _rpm_flood(port: int, instance: int, rate: float) -> Any:
    """Another client sending expensive ReadPropertyMultiple requests at ``rate`` meanwhile.

    It alternates the issue's 1.36 kB packet (every device property 150 times, refused by the
    cap) with every property of the device once (answered in full, the costliest read a
    discovery tool makes).
    """
    import socket

    frames = [_rpm_all_frame(instance, 150), _rpm_all_frame(instance, 1)]
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


def _client(port: int) -> Any:
    from bacpypes3.app import Application
    from bacpypes3.local.device import DeviceObject
    from bacpypes3.local.networkport import NetworkPortObject

    device = DeviceObject(objectIdentifier=("device", CLIENT_INSTANCE), objectName="bench-client")
    network_port = NetworkPortObject(
        f"127.0.0.1/8:{port}", objectIdentifier=("network-port", 1), objectName="NetworkPort-1"
    )
    return Application.from_object_list([device, network_port])


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from bacpypes3.pdu import Address
    from bacpypes3.primitivedata import ObjectIdentifier

    client = _client(_free_port("udp"))
    results: list[LoadResult] = []
    footprint: dict[str, Any] = {}
    try:
        # Start-up to the first I-Am, several times each (fresh data dir for ours each time).
        startups: dict[str, list[float]] = {"open-dsm": [], "bare bacpypes3": []}
        for round_ in range(args.startups):
            for server, instance in (
                (_ours(workdir / f"d{round_}", args.with_model, args.battery_kwh), OURS_INSTANCE),
                (_bare("[]"), BARE_INSTANCE),
            ):
                spawned = server.start()
                try:
                    startups[server.name].append(
                        await _first_i_am(client, server, instance, spawned)
                    )
                finally:
                    server.stop()

        tuning_seed, night = _tuning_seed(workdir, args) if args.with_tuning else (None, None)
        ours = _ours(workdir / "load", tuning_seed or args.with_model, args.battery_kwh)
        ours.start()
        bare: Server | None = None
        replay: ReplayUsage | None = None
        bas = contextlib.AsyncExitStack()
        try:
            await _first_i_am(client, ours, OURS_INSTANCE, time.monotonic())
            async with httpx.AsyncClient() as http:
                for _ in range(50):
                    with contextlib.suppress(httpx.HTTPError):
                        if (
                            await http.get(f"http://127.0.0.1:{ours.http_port}/healthz")
                        ).is_success:
                            break
                    await asyncio.sleep(0.1)
                points_json = (
                    await http.get(f"http://127.0.0.1:{ours.http_port}/api/v1/points")
                ).text
                model = (await http.get(f"http://127.0.0.1:{ours.http_port}/api/v1/model")).json()
                for _ in range(100):
                    if not args.with_model or model.get("served_run"):
                        break
                    await asyncio.sleep(0.1)
                    model = (
                        await http.get(f"http://127.0.0.1:{ours.http_port}/api/v1/model")
                    ).json()
                footprint_model = model.get("forecaster")
            if args.battery_kwh is not None:
                # The planner solves every snapshot through the load runs below.
                await bas.enter_async_context(_bas_writing(ours.http_port))
            bare = _bare(points_json)
            bare.start()
            await _first_i_am(client, bare, BARE_INSTANCE, time.monotonic())
            for server in (bare, ours):
                address = Address(f"127.0.0.1:{server.bacnet_port}")
                meter = ObjectIdentifier("analog-value,1")
                rpm_spec: list[Any] = []
                for oid in (
                    "analog-value,1",
                    "analog-value,2",
                    "analog-value,3",
                    "analog-value,4",
                    "analog-value,5",
                    "binary-value,1",
                    "binary-value,2",
                ):
                    rpm_spec += [ObjectIdentifier(oid), ["present-value", "status-flags"]]

                def rp(address: Any = address, meter: Any = meter) -> Awaitable[Any]:
                    return client.read_property(address, meter, "present-value")  # type: ignore[no-any-return]

                def rpm(address: Any = address, spec: list[Any] = rpm_spec) -> Awaitable[Any]:
                    return client.read_property_multiple(address, list(spec))  # type: ignore[no-any-return]

                url = f"http://127.0.0.1:{server.http_port}/api/v1/points"
                async with httpx.AsyncClient() as http:

                    async def rest(url: str = url, http: httpx.AsyncClient = http) -> None:
                        (await http.get(url)).raise_for_status()

                    plan: list[tuple[str, Callable[[], Awaitable[Any]], float | None]] = [
                        ("ReadProperty", rp, args.rate),
                        ("ReadProperty", rp, None),
                        ("ReadPropertyMultiple (7 x 2)", rpm, args.rate / 5),
                        ("ReadPropertyMultiple (7 x 2)", rpm, None),
                        ("REST GET /api/v1/points", rest, args.rest_rate),
                        ("REST GET /api/v1/points", rest, None),
                    ]
                    for test, send, rate in plan:
                        log.info("%s: %s at %s", server.name, test, rate or "flat out")
                        results.append(
                            await _load(
                                test, server.name, send, rate, args.duration_s, args.concurrency
                            )
                        )
                    if server is ours:
                        # Issue #9: the same ReadProperty and REST load while another client
                        # floods expensive ReadPropertyMultiple requests (compare with the rows
                        # above, which ran without them).
                        health = f"http://127.0.0.1:{server.http_port}/healthz"

                        async def healthz(
                            url: str = health, http: httpx.AsyncClient = http
                        ) -> None:
                            (await http.get(url)).raise_for_status()

                        flooded: list[tuple[str, Callable[[], Awaitable[Any]], float]] = [
                            ("REST GET /healthz", healthz, args.rest_rate),
                        ]
                        for test, send, rate in flooded:
                            results.append(
                                await _load(test, server.name, send, rate, args.duration_s, 1)
                            )
                        async with _rpm_flood(server.bacnet_port, OURS_INSTANCE, args.flood_rate):
                            for test, send, rate in [
                                ("ReadProperty", rp, args.rate),
                                ("REST GET /healthz", healthz, args.rest_rate),
                            ]:
                                label = f"{test}, RPM flood {args.flood_rate:.0f}/s"
                                log.info("%s: %s", server.name, label)
                                results.append(
                                    await _load(label, server.name, send, rate, args.duration_s, 1)
                                )
                        results.extend(await _ingest_rows(client, server, args))
                        if args.training_run:
                            results.append(await _training_row(client, server, args))
                        if args.with_tuning:
                            rows, replay = await _tuning_rows(
                                client, server, args, workdir / "load" / "open-dsm.sqlite3", night
                            )
                            results.extend(rows)
                assert server.proc is not None
                rss, peak = _rss_mb(server.proc.pid)
                footprint[server.name] = {
                    "forecaster": footprint_model if server is ours else "-",
                    "dispatch_planner": server is ours and args.battery_kwh is not None,
                    "rss_mb": rss,
                    "peak_rss_mb": peak,
                    "tensorflow_loaded": _loads_tensorflow(server.proc.pid),
                    "startup_s_median": statistics.median(startups[server.name]),
                    "startup_s_max": max(startups[server.name]),
                }
        finally:
            await bas.aclose()
            ours.stop()
            if bare is not None:
                bare.stop()
    finally:
        client.close()
    baseline = {(r.test, r.offered_per_s): r for r in results if r.target == "bare bacpypes3"}
    for r in results:
        base = baseline.get((r.test, r.offered_per_s))
        if r.target == "open-dsm" and base and base.achieved_per_s:
            r.ratio_vs_bare = r.achieved_per_s / base.achieved_per_s
    return {"loads": results, "footprint": footprint, "tuning": replay}


def _table(report: dict[str, Any], args: argparse.Namespace) -> str:
    w = max([36] + [len(r.test) for r in report["loads"]])
    lines = [
        f"{'test':<{w}} {'server':<15} {'offered/s':>9} {'achieved/s':>10} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'errors':>6} {'x bare':>6}"
    ]
    for r in report["loads"]:
        lines.append(
            f"{r.test:<{w}} {r.target:<15} "
            f"{(f'{r.offered_per_s:.0f}' if r.offered_per_s else 'flat out'):>9} "
            f"{r.achieved_per_s:>10.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{(r.max_ms if r.max_ms is not None else float('nan')):>7.1f} {r.errors:>6} "
            f"{(f'{r.ratio_vs_bare:.2f}' if r.ratio_vs_bare else '-'):>6}"
        )
    if not report["footprint"]:
        return "\n".join(lines + _tuning_lines(report, args)) + "\n"
    lines.append("")
    lines.append(
        f"{'server':<15} {'start-up to I-Am (median/max s)':>32} {'RSS MB':>7} "
        f"{'peak MB':>8} {'TensorFlow':>10}  forecaster"
    )
    for name, fp in report["footprint"].items():
        lines.append(
            f"{name:<15} {fp['startup_s_median']:>21.2f} / {fp['startup_s_max']:<8.2f} "
            f"{fp['rss_mb']:>7.1f} {fp['peak_rss_mb']:>8.1f} "
            f"{('loaded' if fp['tensorflow_loaded'] else 'no'):>10}  {fp['forecaster']}"
            f"{' + dispatch planner' if fp.get('dispatch_planner') else ''}"
        )
    ours = {(r.test, r.offered_per_s): r for r in report["loads"] if r.target == "open-dsm"}
    fixed = ours.get(("ReadProperty", args.rate))
    flat = ours.get(("ReadProperty", None))
    fp = report["footprint"].get("open-dsm", {})
    lines.append("")
    if fixed and flat:
        lines.append(
            f"goals: p99 at {args.rate:.0f} RP/s = {fixed.p99_ms:.2f} ms (<= 10); flat-out RP "
            f"= {flat.ratio_vs_bare or 0:.2f} x bare (>= 0.8); start-up "
            f"{fp.get('startup_s_max', float('nan')):.2f} s (<= 3); "
            f"RSS {fp.get('peak_rss_mb', float('nan')):.0f} MB (<= 150)"
        )
    flooded = ours.get((f"ReadProperty, RPM flood {args.flood_rate:.0f}/s", args.rate))
    if fixed and flooded:
        lines.append(
            f"ReadProperty p99 at {args.rate:.0f}/s: {fixed.p99_ms:.2f} ms without, "
            f"{flooded.p99_ms:.2f} ms with {args.flood_rate:.0f} expensive RPM/s from another "
            "client"
        )
    return "\n".join(lines + _tuning_lines(report, args)) + "\n"


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print one table."""
    if args.only == "tuning":
        args.with_tuning = True
    if args.with_tuning and args.battery_kwh is None:
        args.battery_kwh = 20.0  # the replay needs a battery, the service then plans
    with tempfile.TemporaryDirectory(prefix="open-dsm-bench-") as tmp:
        main = {"ingest": _run_ingest, "tuning": _run_tuning}.get(args.only, _run)
        report = asyncio.run(main(args, Path(tmp)))
    sys.stdout.write(_table(report, args))
    if args.json:
        payload = {
            "loads": [asdict(r) for r in report["loads"]],
            "footprint": report["footprint"],
        }
        if report.get("tuning") is not None:
            payload["tuning_replay"] = asdict(report["tuning"])
        args.json.write_text(json.dumps(payload, indent=2))
    return 0
