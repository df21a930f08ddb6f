"""`open-dsm bench dispatch` end to end on a small synthetic meter file (no training)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import dispatch
from tests.helpers import write_minute_csv

START = datetime(2024, 3, 4)  # UTC, so no DST anywhere
DAYS = 3


def _write_csv(path: Path) -> None:
    """10 kW days, 4 kW nights, a 30-minute 24 kW plateau every afternoon."""
    rng = np.random.default_rng(3)
    minutes = np.arange(DAYS * 1440)
    day_minute = minutes % 1440
    kw = np.where((day_minute >= 8 * 60) & (day_minute < 18 * 60), 10.0, 4.0)
    for day in range(DAYS):
        lo = day * 1440 + 14 * 60 + 5
        kw[lo : lo + 30] = 24.0
    write_minute_csv(path, START, (kw + rng.normal(0.0, 0.2, len(kw))).tolist())


def _run_rows(data: Path, out: Path, *extra: str) -> dict[str, dict[str, Any]]:
    """``bench dispatch`` on ``data`` (10 kW / 10 kWh, threshold 15, no training) with ``extra``
    options; its JSON rows by controller."""
    parser = argparse.ArgumentParser()
    dispatch.add_arguments(parser)
    argv = ["--data", str(data), "--tz", "UTC", "--battery-kw", "10", "--battery-kwh", "10"]
    argv += ["--thresholds", "15", "--no-trained", *extra, "--json", str(out)]
    assert dispatch.run(parser.parse_args(argv)) == 0
    written: list[dict[str, Any]] = json.loads(out.read_text())
    return {row["controller"]: row for row in written}


def test_the_perfect_forecast_row_sits_between_the_optimum_and_no_battery(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "meter.csv"
    _write_csv(data)
    rows = _run_rows(data, tmp_path / "dispatch.json", "--perfect-forecast")
    assert set(rows) == {"no-battery", "threshold-15", "baseline", "perfect-forecast", "optimum"}
    none, perfect, best = rows["no-battery"], rows["perfect-forecast"], rows["optimum"]
    assert none["billed_kw"] == pytest.approx(24.0, abs=0.5)
    # The plateau needs 14 kW off for 30 minutes at the 10 kW limit: the optimum is near 14 kW
    # (24 - 10), and the plan on the true load reaches it.
    assert best["billed_kw"] == pytest.approx(14.0, abs=0.6)
    assert best["billed_kw"] - 1e-3 <= perfect["billed_kw"] <= best["billed_kw"] + 0.3
    assert perfect["share_of_optimum"] > 0.95
    assert perfect["violations"] == 0 and perfect["solve_ms_p99"] is not None
    assert "perfect-forecast" in capsys.readouterr().out


@pytest.mark.parametrize(("interval", "billed"), [(15, 10.0 + 14.0 / 3), (5, 24.0)])
def test_the_tariffs_interval_sets_what_is_billed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], interval: int, billed: float
) -> None:
    # Five minutes at 24 kW on a 10 kW day: a 15-minute tariff bills 14.67 kW, a 5-minute one 24.
    minutes = np.arange(DAYS * 1440)
    kw = np.where((minutes % 1440 >= 8 * 60) & (minutes % 1440 < 18 * 60), 10.0, 4.0)
    for day in range(DAYS):
        kw[day * 1440 + 14 * 60 : day * 1440 + 14 * 60 + 5] = 24.0
    data = tmp_path / "meter.csv"
    write_minute_csv(data, START, kw.tolist())
    rows = _run_rows(data, tmp_path / "dispatch.json", "--interval-minutes", str(interval))
    assert rows["no-battery"]["billed_kw"] == pytest.approx(billed, abs=0.01)
    # On 5-minute intervals the spike's own interval needs 24 - 10 kW at the power limit; on
    # 15-minute ones the battery can go lower (the whole day). The planner sits in between, never
    # above no battery, and breaks no limit, whatever the interval.
    best = rows["optimum"]["billed_kw"]
    assert best == pytest.approx(14.0, abs=0.05) if interval == 5 else best < 10.0
    assert best - 1e-6 <= rows["baseline"]["billed_kw"] <= rows["no-battery"]["billed_kw"] + 1e-6
    assert rows["baseline"]["violations"] == 0
    assert f"{interval}-minute demand intervals" in capsys.readouterr().out


def test_the_self_tuned_row_runs_on_its_defaults_without_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "meter.csv"
    _write_csv(data)
    rows = _run_rows(data, tmp_path / "dispatch.json", "--self-tuned", "--replan-minutes", "30")
    assert "self-tuned" in rows
    tuned, baseline = rows["self-tuned"], rows["baseline"]
    # Three days are fewer than the 14 the selection needs: every night serves the defaults,
    # which are the baseline's settings, so it bills what the baseline bills.
    assert "3 on the defaults" in tuned["note"] and "baseline 3" in tuned["note"]
    assert tuned["billed_kw"] == pytest.approx(baseline["billed_kw"])
    assert tuned["violations"] == 0
    assert "self-tuned" in capsys.readouterr().out
