"""Pure tests of meter import, gap handling and feature construction (no TensorFlow)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from core.forecast.evaluation import forecast_metrics
from core.forecast.features import (
    FeatureConfig,
    Scaling,
    calendar_features,
    design_matrix,
    feature_blocks,
    persistence_windows,
    seasonal_mean_windows,
    target_windows,
    training_origins,
)
from core.forecast.meter_csv import (
    MeterImportError,
    fill_short_gaps,
    load_meter_csv,
    mask_dead_meter,
)
from core.timegrid import minute_of, same_local_time_weeks_ago, same_wall_clock_days_ago

TZ = ZoneInfo("America/Chicago")


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _local_minute(text: str) -> int:
    return minute_of(datetime.fromisoformat(text).replace(tzinfo=TZ))


def test_load_minute_csv_us_dates(tmp_path: Path) -> None:
    lines = ["Date,Usage_kW"] + [f"7/1/2022 0:{m:02d},{m * 1.5}" for m in range(10)]
    series = load_meter_csv(_write(tmp_path / "a.csv", lines), TZ)
    assert series.start_minute == _local_minute("2022-07-01 00:00")
    assert np.allclose(series.values_kw, np.arange(10) * 1.5)
    assert series.report.kw_column == "Usage_kW"
    assert series.report.resolution_minutes == 1


def test_load_european_export_semicolons_and_decimal_commas(tmp_path: Path) -> None:
    # A ';'-separated export with decimal commas, day-first dates and a thousands point.
    lines = ["Zeitstempel;Wirkleistung kW;Zählerstand kWh"] + [
        f"01.07.2022 00:{m:02d};{m},5;1.234,{m}" for m in range(10)
    ]
    series = load_meter_csv(_write(tmp_path / "eu.csv", lines), TZ)
    assert series.start_minute == _local_minute("2022-07-01 00:00")
    assert series.report.kw_column == "Wirkleistung kW"
    assert np.allclose(series.values_kw, np.arange(10) + 0.5)
    tabbed = ["time\tpower"] + [f"2022-07-01 00:{m:02d}\t{m * 2.0}" for m in range(10)]
    series = load_meter_csv(_write(tmp_path / "tab.csv", tabbed), TZ)
    assert np.allclose(series.values_kw, np.arange(10) * 2.0)
    # A comma file whose header names hold a semicolon is still comma-separated.
    commas = ["Date,Usage; kW"] + [f"7/1/2022 0:{m:02d},{m}.25" for m in range(10)]
    series = load_meter_csv(_write(tmp_path / "c.csv", commas), TZ)
    assert np.allclose(series.values_kw, np.arange(10) + 0.25)


def test_load_handles_newest_first_and_blank_rows(tmp_path: Path) -> None:
    lines = (
        ["Timestamp,Power kW"]
        + [f"2022-07-01 00:{m:02d}:00,{m}" for m in range(9, -1, -1)]
        + [",", ""]
    )
    series = load_meter_csv(_write(tmp_path / "b.csv", lines), TZ)
    assert series.report.reversed_order
    assert np.allclose(series.values_kw, np.arange(10))


def test_fall_back_hour_duplicates_map_to_two_utc_hours(tmp_path: Path) -> None:
    # 2022-11-06 01:00-01:59 local happens twice in America/Chicago.
    lines = ["Date,kW"]
    for hour in (0, 1, 1, 2):
        lines += [f"11/6/2022 {hour}:{m:02d},{hour + 1 + m / 100}" for m in range(60)]
    series = load_meter_csv(_write(tmp_path / "c.csv", lines), TZ)
    assert len(series.values_kw) == 4 * 60  # four real hours, no gap, no overlap
    assert series.report.ambiguous_local_rows == 120
    assert not np.isnan(series.values_kw).any()
    first_utc = datetime(2022, 11, 6, 5, 0, tzinfo=UTC)  # 00:00 CDT
    assert series.start_minute == minute_of(first_utc)


def test_spring_forward_rows_dropped_and_hourly_spread(tmp_path: Path) -> None:
    lines = ["Date,total_main_kw"] + [f"3/13/2022 {h}:00,{h + 1}" for h in range(0, 5)]
    series = load_meter_csv(_write(tmp_path / "d.csv", lines), TZ)
    assert series.report.rows_nonexistent_local_time == 1  # 2:00 does not exist
    assert series.report.resolution_minutes == 60
    # 0:00 CST .. 4:00 CDT is 3 real hours + the last hour's 60 minutes.
    assert len(series.values_kw) == 4 * 60
    assert np.allclose(series.values_kw[:60], 1.0)
    assert np.allclose(series.values_kw[-60:], 5.0)


def test_explicit_offsets_are_absolute(tmp_path: Path) -> None:
    lines = ["time,kw", "2022-07-01T05:00:00Z,1", "2022-07-01T00:01:00-05:00,2"]
    series = load_meter_csv(_write(tmp_path / "e.csv", lines), TZ)
    assert series.start_minute == minute_of(datetime(2022, 7, 1, 5, 0, tzinfo=UTC))
    assert list(series.values_kw) == [1.0, 2.0]


def test_no_kw_column_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MeterImportError):
        load_meter_csv(_write(tmp_path / "f.csv", ["time,name", "2022-07-01 00:00,x"]), TZ)


def test_dead_meter_and_gap_fill() -> None:
    values = np.concatenate(
        [np.linspace(1, 2, 30), np.zeros(20), np.full(130, 3.0), np.linspace(4, 5, 30)]
    )
    masked, zeros, flat = mask_dead_meter(values, zero_run_minutes=15, flatline_minutes=120)
    assert zeros == 20 and flat == 130
    assert np.isnan(masked[30:180]).all()
    holes = np.array([1.0, np.nan, np.nan, 4.0, np.nan, np.nan, np.nan, np.nan, 9.0])
    filled, count = fill_short_gaps(holes, max_fill_minutes=2)
    assert count == 2
    assert np.allclose(filled[:4], [1, 2, 3, 4])
    assert np.isnan(filled[4:8]).all()


def test_a_year_of_minutes_loads_with_one_dst_gap_and_one_fold(tmp_path: Path) -> None:
    start = datetime(2022, 1, 1)
    rows = ["Date,Usage_kW"]
    for m in range(0, 525_600, 1):
        t = start + timedelta(minutes=m)
        rows.append(f"{t.month}/{t.day}/{t.year} {t.hour}:{t.minute:02d},{(m % 97) / 10 + 1}")
    path = _write(tmp_path / "year.csv", rows)
    series = load_meter_csv(path, TZ)
    # The spring-forward hour does not exist; the fall-back hour appears once -> 60 missing.
    assert series.report.rows_nonexistent_local_time == 60
    assert series.report.minutes_missing == 60


def test_same_wall_clock_matches_timegrid_across_dst() -> None:
    minutes = np.arange(
        _local_minute("2022-11-06 00:00"), _local_minute("2022-11-14 00:00"), 37, dtype=np.int64
    )
    ours = same_wall_clock_days_ago(minutes, 7, TZ)
    reference = same_local_time_weeks_ago(minutes, 1, TZ)
    assert np.array_equal(ours, reference)


def test_calendar_is_local() -> None:
    # Monday 2022-08-15 08:00 local.
    cal = calendar_features(np.array([_local_minute("2022-08-15 08:00")]), TZ)
    angle = 2 * np.pi * 8 * 60 / 1440
    assert cal[0, 0] == pytest.approx(np.sin(angle))
    assert cal[0, 2] == 1.0 and cal[0, 2:].sum() == 1.0


def _series(days: int) -> tuple[int, np.ndarray]:
    start = _local_minute("2022-07-01 00:00")
    t = np.arange(days * 1440)
    values = 5 + 3 * np.sin(2 * np.pi * t / 1440) + (t % 19 < 9) * 2.0
    return start, values.astype(np.float64)


def test_features_and_targets_line_up() -> None:
    start, values = _series(22)
    cfg = FeatureConfig(seasonal_days=(1, 7, 14, 21), baseline_weeks=3)
    origins = np.array([start + 21 * 1440 + 100, start + 21 * 1440 + 500], dtype=np.int64)
    blocks = feature_blocks(start, values, origins, TZ, cfg)
    rel = origins - start
    assert np.allclose(blocks.recent_kw[:, -1], values[rel])
    assert np.allclose(blocks.last_kw, values[rel])
    assert blocks.recent_kw.shape == (2, cfg.recent_minutes)
    targets = target_windows(start, values, origins, 60)
    assert np.allclose(targets[:, 0], values[rel + 1])
    assert np.allclose(targets[:, -1], values[rel + 60])
    # The series repeats daily (plus the cycle), so the weekly baseline is close to the truth.
    assert np.abs(blocks.baseline_kw - targets).mean() < 1.5
    x = design_matrix(blocks, Scaling.fit(values))
    assert x.dtype == np.float32 and np.isfinite(x).all()


def test_features_tolerate_gaps() -> None:
    start, values = _series(15)
    values[14 * 1440 - 30 : 14 * 1440 + 10] = np.nan
    origin = np.array([start + 14 * 1440 + 5], dtype=np.int64)
    blocks = feature_blocks(start, values, origin, TZ, FeatureConfig())
    x = design_matrix(blocks, Scaling.fit(values))
    assert np.isfinite(x).all()
    assert not np.isnan(blocks.baseline_kw).any()


def test_training_origins_skip_incomplete_targets() -> None:
    start, values = _series(3)
    values[2000:2010] = np.nan
    origins = training_origins(start, values, start + 100, start + 3 * 1440 - 61, 60)
    rel = origins - start
    # Targets of origins 1940..2008 include a missing minute; 2009 is the first clean one again.
    assert not ((rel >= 2000 - 60) & (rel < 2009)).any()
    assert 1939 in rel and 2009 in rel
    assert ((rel >= 1000) & (rel < 1900)).sum() == 900


def test_baselines_and_metrics() -> None:
    start, values = _series(15)
    origins = np.arange(start + 14 * 1440, start + 14 * 1440 + 100, dtype=np.int64)
    actual = target_windows(start, values, origins, 60)
    pers = persistence_windows(start, values, origins, 60)
    assert np.allclose(pers[:, 0], values[origins - start])
    seasonal = seasonal_mean_windows(start, values, origins, TZ, 2, 60)
    m_pers = forecast_metrics(pers, actual)
    m_seas = forecast_metrics(seasonal, actual)
    # On a strictly daily-periodic series the seasonal mean is exact where both weeks exist.
    assert m_seas["rmse_60"] < m_pers["rmse_60"]
    perfect = forecast_metrics(actual, actual, p10_kw=actual - 1, p90_kw=actual + 1)
    assert perfect["rmse_1_60"] == 0.0 and perfect["coverage_p10_p90_60"] == 1.0


def test_level_offsets_and_old_configs() -> None:
    start, values = _series(22)
    cfg = FeatureConfig(level_minutes=(15, 60))
    origins = np.array([start + 21 * 1440 + 300], dtype=np.int64)
    # A (nearly) daily-periodic series sits on its seasonal mean: small offsets.
    blocks = feature_blocks(start, values, origins, TZ, cfg)
    assert blocks.level_kw.shape == (1, 2) and np.abs(blocks.level_kw).max() < 0.5
    raised = values.copy()
    raised[21 * 1440 :] += 2.0
    lifted = feature_blocks(start, raised, origins, TZ, cfg)
    assert np.allclose(lifted.level_kw - blocks.level_kw, 2.0)
    plain = design_matrix(
        feature_blocks(start, values, origins, TZ, FeatureConfig()), Scaling(0, 1)
    )
    assert design_matrix(blocks, Scaling(0, 1)).shape[1] == plain.shape[1] + 2
    # Artifacts written before level offsets existed load with none.
    old = FeatureConfig().to_dict()
    del old["level_minutes"]
    assert FeatureConfig.from_dict(old) == FeatureConfig()
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg


def test_window_means_match_a_plain_loop() -> None:
    from core.forecast.features import window_means

    rng = np.random.default_rng(4)
    values = rng.normal(5, 1, 500)
    values[rng.random(500) < 0.2] = np.nan
    lo = np.array([[-20, 0, 13], [250, 480, 499]])
    got = window_means(1000, values, lo + 1000, 30)
    for (i, j), start in np.ndenumerate(lo):
        window = values[max(0, start) : max(0, start + 30)]
        expected = np.nanmean(window) if np.any(~np.isnan(window)) else np.nan
        assert got[i, j] == pytest.approx(expected, nan_ok=True)


def test_outdoor_air_features_and_scaling() -> None:
    start = _local_minute("2022-07-01 00:00")
    values = np.full(3 * 1440, 5.0)
    air = 70.0 + np.arange(3 * 1440) / 1440.0  # warms one degree a day
    origin = start + 2 * 1440 + 600
    config = FeatureConfig(outdoor_air=True)
    blocks = feature_blocks(start, values, np.array([origin]), TZ, config, air)
    now, mean3h, change = blocks.weather[0]
    rel = origin - start
    assert now == pytest.approx(air[rel - 14 : rel + 1].mean())
    assert mean3h == pytest.approx(air[rel - 179 : rel + 1].mean())
    assert change == pytest.approx(1.0)
    scaling = Scaling.fit(values, air)
    assert scaling.center_air == pytest.approx(air.mean())
    plain = design_matrix(
        feature_blocks(start, values, np.array([origin]), TZ, FeatureConfig()), scaling
    )
    x = design_matrix(blocks, scaling)
    assert x.shape[1] == plain.shape[1] + 4  # three air inputs and a missing flag
    # No outdoor air at all: the inputs are zero and flagged missing, nothing breaks.
    missing = feature_blocks(start, values, np.array([origin]), TZ, config, None)
    xm = design_matrix(missing, scaling)
    assert xm[0, -1] == 1.0 and np.all(xm[0, -4:-1] == 0.0)


def test_day_ahead_features_align_with_the_seasonal_baseline() -> None:
    from core.forecast import day_ahead as da
    from core.forecast.base import MinuteHistory
    from core.forecast.baseline import seasonal_day_ahead

    start = _local_minute("2022-10-20 00:00")
    rng = np.random.default_rng(2)
    values = 5 + rng.random(25 * 1440)
    # Across the fall-back change (2022-11-06): the same wall-clock steps two weeks back.
    origins = np.array([start + 21 * 1440 + 7, start + 22 * 1440 + 599, start + 23 * 1440 + 14])
    blocks = da.day_ahead_blocks(start, values, origins, TZ)
    for i, origin in enumerate(origins.tolist()):
        lo = origin - da.HISTORY_MINUTES + 1
        history = MinuteHistory(lo, values[lo - start : origin - start + 1])
        expected = seasonal_day_ahead(history, TZ, datetime.now(UTC), 2, "mean-2-weeks")
        assert expected is not None
        assert da.step_start(np.array([origin]))[0] == expected.start_minute
        np.testing.assert_allclose(blocks.baseline_kw[i], expected.p50_kw, rtol=1e-9)
    targets = da.day_ahead_targets(start, values, origins)
    first = int(da.step_start(origins[:1])[0]) - start
    assert targets[0, 0] == pytest.approx(values[first : first + 15].mean())
    assert targets.shape == (3, 96)
    x = da.day_ahead_matrix(blocks, Scaling.fit(values))
    assert x.shape[0] == 3 and np.isfinite(x).all()


def test_model_meta_round_trip_and_old_artifacts() -> None:
    from core.forecast.meta import BandCalibration, MetaError, ModelMeta

    meta = ModelMeta(
        model="mlp-residual",
        candidate="2w-ctx60",
        created_at="2026-11-26T00:00:00+00:00",
        timezone="America/Chicago",
        horizon_minutes=60,
        input_dim=200,
        features=FeatureConfig(outdoor_air=True),
        history_minutes=20000,
        floor_kw=0.0,
        scaling=Scaling(8.0, 5.0, 75.0, 9.0),
        epochs=8,
        shrink=0.9,
        train_weeks=12,
        train_origins=1000,
        trained_until_minute=28_000_000,
        holdout_days=6,
        train_s=40.0,
        band=BandCalibration((-0.5,) * 60, (0.4,) * 60, 0.8),
        shrink_steps=(1.0,) * 30 + (0.9,) * 30,
    )
    assert ModelMeta.from_dict(meta.to_dict()) == meta
    old = meta.to_dict()
    old["version"] = 1
    for key in ("band", "day_ahead", "notes", "shrink_steps"):
        del old[key]
    del old["scaling"]["center_air"], old["scaling"]["scale_air"]
    del old["features"]["outdoor_air"]
    parsed = ModelMeta.from_dict(old)
    assert parsed.band.p10_shift_kw == () and parsed.day_ahead is None
    assert parsed.shrink_steps == ()
    assert not parsed.features.outdoor_air
    with pytest.raises(MetaError):
        ModelMeta.from_dict({**old, "version": 99})
    bad = dict(old)
    del bad["scaling"]
    with pytest.raises(MetaError):
        ModelMeta.from_dict(bad)
