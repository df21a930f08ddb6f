"""``open-dsm bench service``: BACnet and REST speed and footprint against a bare device.

The real service (``open-dsm serve``) and a bare bacpypes3 device with seven plain objects
(``bench.bare_device``) run as separate processes on loopback; this process is the client for both,
so the ratios compare the servers under the same client, in the same run.
Here: the arguments, the run's sequence and the table; the processes are in ``service_procs``, the
load runs in ``service_load``, the nightly-replay rows in ``service_tuning``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from bench.service_load import LoadResult, ingest_rows, load_run, rpm_flood, training_row
from bench.service_procs import (
    BARE_INSTANCE,
    OURS_INSTANCE,
    Server,
    bacnet_client,
    bare_server,
    bas_writing,
    first_i_am,
    free_port,
    loads_tensorflow,
    ours_server,
    rss_mb,
)
from bench.service_tuning import ReplayUsage, run_tuning, tuning_lines, tuning_rows, tuning_seed

log = logging.getLogger(__name__)

SHARED_MINUTE_FILE = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "egauge_minute_kw_2022-07_08.csv"
)


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


async def _run_ingest(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Only the ingest rows, on open-dsm alone."""
    client = bacnet_client(free_port("udp"))
    try:
        ours = ours_server(workdir / "ingest", args.with_model, args.battery_kwh)
        ours.start()
        try:
            await first_i_am(client, ours, OURS_INSTANCE, time.monotonic())
            await asyncio.sleep(1.0)
            rows = await ingest_rows(client, ours, args)
            if args.training_run:
                rows.append(await training_row(client, ours, args))
            return {"loads": rows, "footprint": {}}
        finally:
            ours.stop()
    finally:
        client.close()


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from bacpypes3.pdu import Address
    from bacpypes3.primitivedata import ObjectIdentifier

    client = bacnet_client(free_port("udp"))
    results: list[LoadResult] = []
    footprint: dict[str, Any] = {}
    try:
        # Start-up to the first I-Am, several times each (fresh data dir for ours each time).
        startups: dict[str, list[float]] = {"open-dsm": [], "bare bacpypes3": []}
        for round_ in range(args.startups):
            for server, instance in (
                (
                    ours_server(workdir / f"d{round_}", args.with_model, args.battery_kwh),
                    OURS_INSTANCE,
                ),
                (bare_server("[]"), BARE_INSTANCE),
            ):
                spawned = server.start()
                try:
                    startups[server.name].append(
                        await first_i_am(client, server, instance, spawned)
                    )
                finally:
                    server.stop()

        seed_dir, night = tuning_seed(workdir, args) if args.with_tuning else (None, None)
        ours = ours_server(workdir / "load", seed_dir or args.with_model, args.battery_kwh)
        ours.start()
        bare: Server | None = None
        replay: ReplayUsage | None = None
        bas = contextlib.AsyncExitStack()
        try:
            await first_i_am(client, ours, OURS_INSTANCE, time.monotonic())
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
                await bas.enter_async_context(bas_writing(ours.http_port))
            bare = bare_server(points_json)
            bare.start()
            await first_i_am(client, bare, BARE_INSTANCE, time.monotonic())
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
                            await load_run(
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
                                await load_run(test, server.name, send, rate, args.duration_s, 1)
                            )
                        async with rpm_flood(server.bacnet_port, OURS_INSTANCE, args.flood_rate):
                            for test, send, rate in [
                                ("ReadProperty", rp, args.rate),
                                ("REST GET /healthz", healthz, args.rest_rate),
                            ]:
                                label = f"{test}, RPM flood {args.flood_rate:.0f}/s"
                                log.info("%s: %s", server.name, label)
                                results.append(
                                    await load_run(
                                        label, server.name, send, rate, args.duration_s, 1
                                    )
                                )
                        results.extend(await ingest_rows(client, server, args))
                        if args.training_run:
                            results.append(await training_row(client, server, args))
                        if args.with_tuning:
                            rows, replay = await tuning_rows(
                                client, server, args, workdir / "load" / "open-dsm.sqlite3", night
                            )
                            results.extend(rows)
                assert server.proc is not None
                rss, peak = rss_mb(server.proc.pid)
                footprint[server.name] = {
                    "forecaster": footprint_model if server is ours else "-",
                    "dispatch_planner": server is ours and args.battery_kwh is not None,
                    "rss_mb": rss,
                    "peak_rss_mb": peak,
                    "tensorflow_loaded": loads_tensorflow(server.proc.pid),
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
        return "\n".join(lines + tuning_lines(report, args)) + "\n"
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
    return "\n".join(lines + tuning_lines(report, args)) + "\n"


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print one table."""
    if args.only == "tuning":
        args.with_tuning = True
    if args.with_tuning and args.battery_kwh is None:
        args.battery_kwh = 20.0  # the replay needs a battery, the service then plans
    with tempfile.TemporaryDirectory(prefix="open-dsm-bench-") as tmp:
        main = {"ingest": _run_ingest, "tuning": run_tuning}.get(args.only, _run)
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
