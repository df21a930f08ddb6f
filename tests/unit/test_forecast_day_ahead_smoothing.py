"""The day-ahead seasonal base's smoothing: the moving mean, its choice, and the artifact field."""

from __future__ import annotations

import numpy as np
import pytest

from core.forecast import day_ahead as da
from core.forecast.meta import BandCalibration, DayAheadMeta


def test_smooth_profile_is_a_centred_mean_that_keeps_the_ends() -> None:
    profile = np.array([[0.0, 0.0, 3.0, 6.0, 6.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    smoothed = da.smooth_profile(profile, 3)
    np.testing.assert_allclose(smoothed[0], [0.0, 1.0, 3.0, 5.0, 6.0])
    np.testing.assert_allclose(smoothed[1], 1.0)
    assert da.smooth_profile(profile, 1) is profile


def test_smoothing_is_chosen_where_the_start_time_is_uncertain() -> None:
    # Weeks disagree by a step or two on when the building starts: the smoothed profile is the
    # better expectation, so a width above 1 wins.
    rng = np.random.default_rng(3)
    steps = np.arange(96)
    outcomes, seasonal = [], []
    for _ in range(200):
        start = 32 + rng.integers(-2, 3)
        outcomes.append(np.where(steps >= start, 18.0, 3.0))
        seasonal.append(np.where(steps >= 32 + rng.integers(-2, 3), 18.0, 3.0))
    groups, width, scores = da.choose_base({None: np.array(seasonal)}, np.array(outcomes))
    assert groups is None and width > 1
    assert scores[f"weeks/{width}"] < scores["weeks/1"]


def test_no_smoothing_when_the_profile_is_exact() -> None:
    steps = np.arange(96)
    profile = np.tile(np.where(steps >= 32, 18.0, 3.0), (10, 1))
    actual = profile.copy()
    actual[0, 5] = np.nan  # a missing outcome is skipped
    groups, width, scores = da.choose_base({None: profile}, actual)
    assert groups is None and width == 1 and scores["weeks/1"] == 0.0


def test_day_ahead_meta_keeps_the_base_choice_and_reads_old_artifacts() -> None:
    meta = DayAheadMeta(
        input_dim=49,
        outdoor_air=False,
        history_minutes=da.HISTORY_MINUTES,
        epochs=3,
        band=BandCalibration(),
        baseline_smooth_steps=3,
        weekday_groups=(0, 1, 0, 1, 0, 0, 6),
    )
    assert DayAheadMeta.from_dict(meta.to_dict()) == meta
    old = meta.to_dict()
    del old["baseline_smooth_steps"]
    assert DayAheadMeta.from_dict(old).baseline_smooth_steps == 1
    del old["weekday_groups"]
    assert DayAheadMeta.from_dict(old).weekday_groups is None
    with pytest.raises(ValueError, match="weekday_groups"):
        DayAheadMeta.from_dict({**meta.to_dict(), "weekday_groups": [0, 1, 9]})


def test_cvrmse_ranks_forecasts_the_same_way_on_a_site_that_exports() -> None:
    # A net load that exports on average: the closer forecast must score lower, as on any site.
    from core.forecast.evaluation import cvrmse_pct

    rng = np.random.default_rng(3)
    actual = rng.normal(-5.0, 10.0, 2000)
    close = actual + rng.normal(0, 1.0, 2000)
    far = actual + rng.normal(0, 8.0, 2000)
    assert 0 < cvrmse_pct(close, actual) < cvrmse_pct(far, actual)
    assert cvrmse_pct(close, actual) == pytest.approx(cvrmse_pct(-close, -actual))
