"""`open-dsm bench demand` on a small synthetic meter file: counts checked independently."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from bench import demand
from core.forecast.baseline import SeasonalMeanForecaster
from tests.helpers import write_minute_csv

TARGET_KW = 18.0
INTERVAL = 15
DAYS = 2
START = datetime(2024, 3, 4)  # a Monday; the CSV is in UTC, so no DST anywhere


def _series() -> np.ndarray[Any, np.dtype[np.float64]]:
    """10 kW base, a daily swing, and plateaus that push some intervals over the target."""
    minutes = np.arange(DAYS * 1440)
    day_minute = minutes % 1440
    kw = 10.0 + 4.0 * np.sin(2 * np.pi * (day_minute - 360) / 1440)
    rng = np.random.default_rng(7)
    kw += rng.normal(0.0, 0.3, len(kw))
    for day in range(DAYS):
        base = day * 1440
        kw[base + 13 * 60 + 5 : base + 13 * 60 + 50] += 9.0 + day  # 45-minute plateau
        kw[base + 16 * 60 + 20 : base + 16 * 60 + 27] += 12.0  # short spike inside one interval
    return kw


def _run(tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    kw = _series()
    data = tmp_path / "meter.csv"
    write_minute_csv(data, START, kw.tolist())
    out = tmp_path / "demand.json"
    parser = argparse.ArgumentParser()
    demand.add_arguments(parser)
    args = parser.parse_args(
        [
            "--data",
            str(data),
            "--target-kw",
            str(TARGET_KW),
            "--tz",
            "UTC",
            "--json",
            str(out),
            *list(extra),
        ]
    )
    return demand.run(args), json.loads(out.read_text()), data.name


def test_replay_counts_match_an_independent_computation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, result, name = _run(tmp_path)
    assert rc == 0
    averages = _series().reshape(-1, INTERVAL).mean(axis=1)
    exceeded = int((averages > TARGET_KW).sum())
    assert exceeded >= DAYS * 3  # the plateaus and spikes really cross the target

    assert result["intervals"] == len(averages)
    assert result["exceeded"] == exceeded
    assert result["flagged_exceeded"] + result["missed"] == exceeded
    assert result["flagged_exceeded"] > 0
    assert 0 <= result["false_alarms"] <= result["intervals"] - exceeded
    assert 1 <= result["lead_median_minutes"] <= INTERVAL
    assert 1 <= result["lead_mean_minutes"] <= INTERVAL

    assert len(result["periods"]) == 1
    period = result["periods"][0]
    assert period["period_start"] == "2024-03-01"
    assert period["original_kw"] == pytest.approx(averages.max(), abs=1e-3)
    peak_start = START + timedelta(minutes=INTERVAL * int(averages.argmax()))
    assert period["original_start"] == peak_start.strftime("%Y-%m-%d %H:%M")
    # Shedding can only lower the billed peak; here it must lower it (capacity 20% of target).
    assert result["shed_capacity_kw"] == pytest.approx(0.2 * TARGET_KW)
    assert period["shed_kw"] < period["original_kw"]
    assert period["reduction_kw"] == pytest.approx(period["original_kw"] - period["shed_kw"])
    assert result["shed_peak_kw"] == pytest.approx(period["shed_kw"])
    assert result["exceeded_after_shed"] <= exceeded
    assert result["shed_minutes"] > 0 and result["shed_kwh"] > 0
    assert result["forecaster"] == "mean-2-weeks"
    assert result["data"] == name

    table = capsys.readouterr().out
    assert "exceeded target" in table and f"{exceeded} (" in table
    assert "2024-03-01" in table


def test_no_shed_capacity_leaves_the_peak_and_a_high_target_sees_nothing(tmp_path: Path) -> None:
    rc, result, _ = _run(tmp_path, "--shed-capacity-kw", "0", "--no-ratchet")
    assert rc == 0
    period = result["periods"][0]
    assert period["shed_kw"] == pytest.approx(period["original_kw"])
    assert result["shed_kwh"] == 0.0

    kw = _series()[:1440]
    high = demand.replay(0, kw, ZoneInfo("UTC"), SeasonalMeanForecaster(), target_kw=500.0)
    assert high.exceeded == high.flagged_exceeded == high.false_alarms == 0
    assert high.shed_minutes == 0
    assert high.intervals == len(kw) // INTERVAL


def test_unreadable_data_is_an_error_code(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    demand.add_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path / "missing.csv"), "--target-kw", "10"])
    assert demand.run(args) == 2
