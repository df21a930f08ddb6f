"""`open-dsm bench forecast --skip-days`: a known schedule exception left out of the scores only."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import forecast
from tests.helpers import write_minute_csv

START = datetime(2024, 1, 1)  # a Monday, UTC
DAYS = 21
ODD_DAY = "2024-01-19"  # a Friday, the first of the last 3 (test) days


def _write_csv(path: Path) -> None:
    """Weekdays 20 kW from 8 to 18 h, nights and weekends 5 kW; the odd day stays at 5 kW."""
    rng = np.random.default_rng(5)
    minutes = np.arange(DAYS * 1440)
    day = minutes // 1440
    hour = (minutes % 1440) / 60
    working = (day % 7 < 5) & (hour >= 8) & (hour < 18) & (day != 18)
    kw = np.where(working, 20.0, 5.0) + rng.normal(0.0, 0.3, len(minutes))
    write_minute_csv(path, START, kw.tolist())


def _run(tmp_path: Path, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    data = tmp_path / "meter.csv"
    if not data.exists():
        _write_csv(data)
    out = tmp_path / "forecast.json"
    parser = argparse.ArgumentParser()
    forecast.add_arguments(parser)
    argv = ["--data", str(data), "--tz", "UTC", "--test-days", "3"]
    argv += ["--models", "persistence,mean-2-weeks", "--json", str(out), *extra]
    code = forecast.run(parser.parse_args(argv))
    rows = json.loads(out.read_text()) if code == 0 else []
    out.unlink(missing_ok=True)
    return code, rows


def _table(rows: list[dict[str, Any]], scored: str | None) -> dict[str, dict[str, Any]]:
    """One table's rows by model, without the timing (it differs run to run)."""
    return {
        r["model"]: {k: v for k, v in r.items() if k != "infer_ms"}
        for r in rows
        if r.get("scored") == scored
    }


def test_a_skipped_day_leaves_the_scores_and_only_the_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, rows = _run(tmp_path)
    assert code == 0
    whole = _table(rows, None)
    code, rows = _run(tmp_path, "--skip-days", ODD_DAY)
    assert code == 0
    text = capsys.readouterr().out
    # The first table is still scored on every test day; the second leaves the day out.
    assert _table(rows, None) == whole
    skipped = _table(rows, f"without {ODD_DAY}")
    assert "scores, all test days:" in text
    assert f"scores, without {ODD_DAY}:" in text
    # The day's minutes in the 60-minute windows of the origins from its midnight on (the test
    # part starts there): 60 for each origin up to 23:00, then 59, 58, ... 0.
    assert f"scores leave out 1 day(s): {60 * 1380 + sum(range(60))} minute outcomes" in text
    # mean-2-weeks forecasts a working day the odd day did not have: leaving it out lowers its
    # error a lot, while persistence (a flat day) changes little.
    assert skipped["mean-2-weeks"]["rmse_60"] < 0.5 * whole["mean-2-weeks"]["rmse_60"]
    assert (
        skipped["mean-2-weeks"]["cvrmse_15min_day_ahead"]
        < 0.6 * whole["mean-2-weeks"]["cvrmse_15min_day_ahead"]
    )
    assert skipped["persistence"]["rmse_60"] == pytest.approx(
        whole["persistence"]["rmse_60"], rel=0.3
    )


def test_a_day_outside_the_test_days_is_named_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, whole = _run(tmp_path)
    code, other = _run(tmp_path, "--skip-days", "2024-01-03")
    assert code == 0
    text = capsys.readouterr().out
    assert "not a test day, nothing left out: 2024-01-03" in text
    assert "scores, " not in text  # one table only
    assert _table(other, None) == _table(whole, None)
    assert len(other) == len(whole)


def test_a_bad_date_is_refused_with_its_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _run(tmp_path, "--skip-days", "2024-01-17,17/01/2024")
    assert code == 2
    assert "'17/01/2024' is not a date" in capsys.readouterr().err
