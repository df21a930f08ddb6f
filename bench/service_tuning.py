"""The service bench's rows while the nightly replay runs (``--with-tuning``), and its cost."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.service_load import LoadResult, load_run, merged
from bench.service_procs import (
    OURS_INSTANCE,
    Server,
    bacnet_client,
    bas_writing,
    first_i_am,
    free_port,
    load_average_1min,
    ours_server,
    proc_usage,
)

log = logging.getLogger(__name__)


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


def tuning_seed(workdir: Path, args: argparse.Namespace) -> tuple[Path, Any]:
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


async def tuning_rows(
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
                            await load_run(
                                test, server.name, send, rate, args.duration_s, 1, samples
                            )
                        )
                for test, (samples, chunks) in pooled.items():
                    rate = args.rate if test == "ReadProperty" else args.rest_rate
                    rows.append(merged(f"{test}, {label}", server.name, rate, samples, chunks))

            await quiet("no replay")
            usage: dict[str, float] = {"cpu_s": 0.0, "peak_mb": 0.0, "nice": -99.0}
            load_at_start = load_average_1min()
            started = time.monotonic()
            task = manager.trigger(night)

            async def sample() -> None:
                while True:
                    for pid in manager.child_pids():
                        now = proc_usage(pid)
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
                        chunk = await load_run(
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
                load_at_end = load_average_1min()
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            for test, (samples, chunks) in during.items():
                rate = args.rate if test == "ReadProperty" else args.rest_rate
                rows.append(merged(f"{test}, nightly replay", server.name, rate, samples, chunks))
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


async def run_tuning(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Only the rows of --with-tuning, on open-dsm alone (the BAS writing every second)."""
    seed, night = tuning_seed(workdir, args)
    client = bacnet_client(free_port("udp"))
    try:
        ours = ours_server(workdir / "tuning", seed, args.battery_kwh)
        ours.start()
        try:
            await first_i_am(client, ours, OURS_INSTANCE, time.monotonic())
            async with bas_writing(ours.http_port):
                rows, replay = await tuning_rows(
                    client, ours, args, workdir / "tuning" / "open-dsm.sqlite3", night
                )
            return {"loads": rows, "footprint": {}, "tuning": replay}
        finally:
            ours.stop()
    finally:
        client.close()


def tuning_lines(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
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
