"""Flat-line detection: a quantised meter's quiet night is kept, a dead meter is masked."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from core.forecast.meter_csv import load_meter_csv, mask_dead_meter, meter_quantum

STEP_KW = 0.32
PER_DAY = 96  # 15-minute samples


def _quantised_site(days: int, seed: int = 1) -> np.ndarray:
    """A 15-minute meter with 0.32 kW steps: busy days, a night that sits on one step 0-4 h."""
    rng = np.random.default_rng(seed)
    slot = np.arange(days * PER_DAY) % PER_DAY
    day = 8.0 + 6.0 * np.sin(np.pi * (slot - 28) / 48) + rng.normal(0, 1.0, days * PER_DAY)
    night = 2.0 + rng.choice([0.0, STEP_KW], days * PER_DAY)
    kw = np.where((slot >= 28) & (slot < 76), day, night)
    # 00:00-04:00 every night exactly on one step (the quiet part of the night).
    kw[(slot < 16)] = 2.0
    return np.asarray(np.round(kw / STEP_KW) * STEP_KW, dtype=np.float64)


def test_quantum_is_the_meter_step() -> None:
    assert abs(meter_quantum(_quantised_site(14)) - STEP_KW) < 1e-9


def test_quiet_quantised_night_is_kept_dead_meter_is_masked() -> None:
    kw = _quantised_site(21)
    # Day 10: the meter dies at 10:00 and repeats its last value for 5 hours of busy daytime.
    dead_lo = 10 * PER_DAY + 40
    kw[dead_lo : dead_lo + 20] = kw[dead_lo]
    masked, _zeros, flat = mask_dead_meter(
        kw, zero_run_minutes=1, flatline_minutes=8, samples_per_day=PER_DAY, dead_samples=48
    )
    # Every night's flat 4 hours survive.
    for d in range(21):
        assert not np.isnan(masked[d * PER_DAY : d * PER_DAY + 16]).any(), d
    assert np.isnan(masked[dead_lo : dead_lo + 20]).all()
    assert flat == 20
    # Without the day-to-day comparison (the old rule) the nights would have gone too.
    _old, _z, flat_old = mask_dead_meter(kw, zero_run_minutes=1, flatline_minutes=8)
    assert flat_old >= 21 * 16


def test_a_meter_flat_for_half_a_day_is_dead_even_at_night() -> None:
    kw = _quantised_site(21)
    lo = 12 * PER_DAY
    kw[lo : lo + 60] = 2.0  # 15 hours from midnight, longer than any quiet night
    masked, _z, flat = mask_dead_meter(
        kw, zero_run_minutes=1, flatline_minutes=8, samples_per_day=PER_DAY, dead_samples=48
    )
    assert np.isnan(masked[lo : lo + 60]).all()
    assert flat >= 60


def test_import_of_a_quantised_15_minute_file_keeps_nights(tmp_path: Path) -> None:
    kw = _quantised_site(21)
    dead_lo = 10 * PER_DAY + 40
    kw[dead_lo : dead_lo + 20] = kw[dead_lo]
    stamps = np.datetime64("2022-01-03T00:00") + np.arange(len(kw)) * np.timedelta64(15, "m")
    lines = ["time,kw"] + [
        f"{str(t).replace('T', ' ')},{v:.2f}" for t, v in zip(stamps, kw, strict=True)
    ]
    path = tmp_path / "q.csv"
    path.write_text("\n".join(lines) + "\n")
    series = load_meter_csv(path, ZoneInfo("UTC"))
    assert series.report.resolution_minutes == 15
    assert series.report.flatline_minutes_dropped == 20 * 15
    night = series.values_kw[: 4 * 60]
    assert not np.isnan(night).any()


def _write(tmp_path: Path, kw: np.ndarray, minutes: int) -> Path:
    stamps = np.datetime64("2022-01-03T00:00") + np.arange(len(kw)) * np.timedelta64(minutes, "m")
    lines = ["time,kw"] + [
        f"{str(t).replace('T', ' ')},{v:.2f}" for t, v in zip(stamps, kw, strict=True)
    ]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_one_coarse_reading_of_zero_is_a_reading_a_run_of_them_is_not(tmp_path: Path) -> None:
    kw = _quantised_site(21) + 3.0
    kw[500] = 0.0  # one 15-minute reading of exactly 0
    kw[900:903] = 0.0  # three in a row: 45 minutes at 0, a meter that stopped
    series = load_meter_csv(_write(tmp_path, kw, 15), ZoneInfo("UTC"))
    assert series.values_kw[500 * 15] == 0.0
    assert series.report.zero_run_minutes_dropped == 3 * 15
    assert np.isnan(series.values_kw[900 * 15 : 903 * 15]).all()


def test_a_net_meter_that_exports_keeps_its_zeros(tmp_path: Path) -> None:
    # PV with a zero-export limiter: the net meter exports in the morning and sits at exactly 0
    # from 10:00 to 14:00 every day. Those zeros are readings (every day does it); a meter that
    # stops for half a day is still dead.
    kw = _quantised_site(21) + 3.0
    slot = np.arange(len(kw)) % PER_DAY
    kw[(slot >= 32) & (slot < 40)] = -4.0
    kw[(slot >= 40) & (slot < 56)] = 0.0
    dead_lo = 15 * PER_DAY + 60
    kw[dead_lo : dead_lo + 60] = kw[dead_lo]
    series = load_meter_csv(_write(tmp_path, kw, 15), ZoneInfo("UTC"))
    assert series.report.zero_run_minutes_dropped == 0
    midday = series.values_kw[(10 * PER_DAY + 40) * 15 : (10 * PER_DAY + 56) * 15]
    assert not np.isnan(midday).any() and (midday == 0.0).all()
    assert np.isnan(series.values_kw[dead_lo * 15 : (dead_lo + 60) * 15]).all()
