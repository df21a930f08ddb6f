"""The leave-one-month-out bench's synthetic buildings, the plan-solve bench on a small file,
and the service bench's pieces that do not need a service (pooled rows, /proc sampling)."""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from bench import dispatch_lomo, plan_solve, service_load, service_procs, service_tuning
from core.dispatch.assets import Battery
from tests.helpers import write_minute_csv

CHICAGO = ZoneInfo("America/Chicago")
# 2022-07-01 00:00 CDT as a UTC epoch minute (05:00 UTC).
START = int(datetime(2022, 7, 1, tzinfo=CHICAGO).timestamp() // 60)


def _load(days: int = 10) -> np.ndarray:
    minutes = np.arange(days * 1440)
    return np.where((minutes % 1440 >= 480) & (minutes % 1440 < 1080), 20.0, 5.0)


def test_a_pv_site_exports_around_noon_and_not_at_night() -> None:
    load = _load()
    pv = dispatch_lomo.make_variant(START, load, CHICAGO, "pv")
    hours = (np.arange(len(load)) % 1440) / 60.0  # local hours: the series starts at midnight
    night = (hours < 6) | (hours >= 20)
    assert np.array_equal(pv[night], load[night])
    taken = load - pv
    assert taken.max() <= dispatch_lomo.PV_PEAK_KW + 1e-9
    assert taken[(hours >= 12) & (hours < 14)].min() > 0  # every day has some sun at noon
    # The cloud factor differs from day to day, the same on every call (seeded).
    noon = taken[(np.arange(len(load)) % 1440) == 13 * 60]
    assert len(set(np.round(noon, 6))) > 1
    assert np.array_equal(pv, dispatch_lomo.make_variant(START, load, CHICAGO, "pv"))


def test_the_other_buildings_and_their_batteries_zones_and_intervals() -> None:
    load = _load()
    assert np.allclose(dispatch_lomo.make_variant(START, load, CHICAGO, "x40"), 40 * load)
    assert np.allclose(dispatch_lomo.make_variant(START, load, CHICAGO, "flat"), 500 + load / 2)
    gaps = dispatch_lomo.make_variant(START, load, CHICAGO, "gaps")
    whole_days = [d for d in range(10) if np.isnan(gaps[d * 1440 : (d + 1) * 1440]).all()]
    assert len(whole_days) == 2
    assert 0.005 < np.isnan(gaps).mean() - 0.2 < 0.015  # two days of ten, and 1 % more
    for same in ("tz", "5min"):
        assert np.array_equal(dispatch_lomo.make_variant(START, load, CHICAGO, same), load)
    battery = Battery(capacity_kwh=20.0, charge_kw=10.0, discharge_kw=10.0)
    big = dispatch_lomo.variant_battery("f.csv#x40", battery)
    assert (big.capacity_kwh, big.charge_kw, big.discharge_kw) == (800.0, 400.0, 400.0)
    assert dispatch_lomo.variant_battery("f.csv#pv", battery) == battery
    assert dispatch_lomo.variant_tz("f.csv#tz", "America/Chicago") == "Europe/Berlin"
    assert dispatch_lomo.variant_tz("f.csv", "America/Chicago") == "America/Chicago"
    assert dispatch_lomo.variant_step("f.csv#5min", 15) == 5
    assert dispatch_lomo.variant_step("f.csv#gaps", 15) == 15


def test_variants_are_sets_of_their_own_and_unknown_names_are_refused() -> None:
    args = argparse.Namespace(variants="pv,5min")
    specs = dispatch_lomo.variant_specs(["minute=/d/m.csv", "hourly=/d/h.csv:2022-04-01"], args)
    assert specs == [
        "minute=/d/m.csv",
        "hourly=/d/h.csv:2022-04-01",
        "minute+pv=/d/m.csv#pv",
        "minute+5min=/d/m.csv#5min",
        "hourly+pv=/d/h.csv#pv:2022-04-01",
        "hourly+5min=/d/h.csv#5min:2022-04-01",
    ]
    assert dispatch_lomo.variant_specs(["a=b"], argparse.Namespace(variants=None)) == ["a=b"]
    with pytest.raises(SystemExit, match="unknown x3"):
        dispatch_lomo.variant_specs(["a=b"], argparse.Namespace(variants="pv,x3"))


def test_the_plan_solve_bench_times_every_re_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fifteen days of a daily plateau; half a day replayed after two weeks of history."""
    data = tmp_path / "meter.csv"
    load = _load(15)
    write_minute_csv(data, datetime(2024, 3, 4), load.tolist())
    out = tmp_path / "solve.json"
    flags = ["--data", str(data), "--tz", "UTC", "--from", "2024-03-18", "--days", "0.5"]
    code = plan_solve.main([*flags, "--json", str(out)])
    assert code == 0
    report: dict[str, Any] = json.loads(out.read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    # Every minute re-plans (one solve and one HiGHS run each); the first is reported apart.
    assert report["plans"] == 720
    for stage in ("HiGHS run", "plan solve", "re-plan (decide)"):
        assert stages[stage]["count"] == 719
    assert stages["day-ahead forecast"]["count"] == 48  # once per 15-minute interval
    for s in stages.values():
        assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    # The solve holds the run, the controller's minute holds the solve.
    assert stages["HiGHS run"]["p50_ms"] <= stages["plan solve"]["p50_ms"]
    assert stages["plan solve"]["p50_ms"] <= stages["re-plan (decide)"]["p50_ms"]
    assert report["violations"] == 0
    printed = capsys.readouterr().out
    assert "load average before" in printed and "target: plan solve p99 <= 10 ms" in printed


def test_the_service_bench_pools_chunks_and_reads_a_process_usage() -> None:
    chunks = [
        service_load.LoadResult("ReadProperty", "open-dsm", 100.0, 99.0, 1.0, 2.0, 1),
        service_load.LoadResult("ReadProperty", "open-dsm", 100.0, 101.0, 1.0, 9.0, 0),
    ]
    samples = [0.001] * 198 + [0.020, 0.030]
    row = service_load.merged("ReadProperty, nightly replay", "open-dsm", 100.0, samples, chunks)
    assert row.achieved_per_s == pytest.approx(100.0)
    assert row.errors == 1
    assert row.p50_ms == pytest.approx(1.0)
    assert row.p99_ms == pytest.approx(20.0)  # the 199th of 200, as every row takes it
    assert row.max_ms == pytest.approx(30.0)
    usage = service_procs.proc_usage(os.getpid())
    assert usage is not None
    cpu_s, peak_mb, nice = usage
    assert cpu_s > 0 and peak_mb > 10 and nice == os.nice(0)
    assert service_procs.proc_usage(2**22 + 12345) is None  # no such process


def test_the_service_bench_seeds_the_site_history_and_names_the_night(tmp_path: Path) -> None:
    """The replay's history is the meter file stored as imported minutes; the night is the
    local midnight after its last day."""
    from core.storage.repository import Storage, create_db_engine

    data = tmp_path / "meter.csv"
    # Noise, so the import's flat-line check keeps every minute.
    kw = _load(3) + np.random.default_rng(1).normal(0.0, 0.3, 3 * 1440)
    write_minute_csv(data, datetime(2024, 3, 4), kw.tolist())
    args = argparse.Namespace(with_model=None, tuning_data=data, tuning_tz="America/Chicago")
    seed, night = service_tuning.tuning_seed(tmp_path, args)
    assert night == datetime(2024, 3, 7, tzinfo=CHICAGO)
    engine = create_db_engine(f"sqlite:///{seed / 'open-dsm.sqlite3'}")
    try:
        first = int(datetime(2024, 3, 4, tzinfo=CHICAGO).timestamp() // 60)
        minutes, values = Storage(engine).load_series(first, first + 3 * 1440 - 1)
    finally:
        engine.dispose()
    assert len(minutes) == 3 * 1440
    assert np.allclose(values, kw, atol=1e-4)  # the CSV's four decimals


def test_the_service_bench_prints_the_replay_beside_the_rows_without_it() -> None:
    rows = [
        service_load.LoadResult(f"{test}, {label}", "open-dsm", 200.0, 200.0, 2.0, p99, 0)
        for test in ("ReadProperty", "REST GET /api/v1/points")
        for label, p99 in (("no replay", 5.0), ("nightly replay", 8.0), ("no replay (after)", 6.0))
    ]
    replay = service_tuning.ReplayUsage(
        120.0, 118.5, 95.0, 180.0, 28.0, "baseline", 5, 10, (3.0, 4.0)
    )
    args = argparse.Namespace(rate=200.0, rest_rate=200.0, tuning_data=Path("m.csv"))
    text = "\n".join(service_tuning.tuning_lines({"loads": rows, "tuning": replay}, args))
    assert "wall 120.0 s" in text and "CPU 95.0 s" in text and "peak RSS 180 MB" in text
    assert "child at nice 10" in text and "load average 3.0 at its start" in text
    assert (
        "ReadProperty at 200/s, p50 / p99 ms: no replay 2.00 / 5.00, nightly replay 2.00 / 8.00,"
        " no replay (after) 2.00 / 6.00" in text
    )
