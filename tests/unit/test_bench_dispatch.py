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


def test_the_perfect_forecast_row_sits_between_the_optimum_and_no_battery(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "meter.csv"
    _write_csv(data)
    out = tmp_path / "dispatch.json"
    parser = argparse.ArgumentParser()
    dispatch.add_arguments(parser)
    args = parser.parse_args(
        [
            "--data",
            str(data),
            "--tz",
            "UTC",
            "--battery-kw",
            "10",
            "--battery-kwh",
            "10",
            "--thresholds",
            "15",
            "--no-trained",
            "--perfect-forecast",
            "--json",
            str(out),
        ]
    )
    assert dispatch.run(args) == 0
    written: list[dict[str, Any]] = json.loads(out.read_text())
    rows = {row["controller"]: row for row in written}
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
