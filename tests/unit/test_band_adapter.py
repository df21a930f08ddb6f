"""The online adaptation of the served P10-P90 bands (core.accuracy.BandAdapter)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.accuracy import BandAdapter


def _run_minutes(adapter: BandAdapter, half_width: float, outcomes: np.ndarray) -> list[bool]:
    """Serve a band of ``half_width`` around 0 each minute for the minute 60 ahead; score it
    when that minute's outcome arrives. Returns whether each served band held its outcome."""
    held: list[bool] = []
    served: dict[int, tuple[float, float]] = {}
    for minute, value in enumerate(outcomes):
        adapter.observed(minute, float(value))
        band = served.pop(minute, None)
        if band is not None:
            held.append(band[0] <= value <= band[1])
        low, high = adapter.widen([0.0], [-half_width], [half_width])
        served[minute + 60] = (low[0], high[0])
        adapter.issued(minute, minute + 60, low, high)
    return held


@pytest.mark.parametrize("half_width", [0.84, 1.28, 1.64])  # 60 %, 80 %, 90 % of N(0, 1)
def test_the_served_band_covers_80_percent_whatever_its_calibration(half_width: float) -> None:
    outcomes = np.random.default_rng(7).normal(size=60 * 1440)  # 60 days of minutes
    held = _run_minutes(BandAdapter(), half_width, outcomes)
    # Over n outcomes the realised coverage is within log(scale range) / (gamma * n) of 80 %.
    assert abs(float(np.mean(held)) - 0.8) < 0.01
    # ... and the scale settles where N(0, 1) has 80 % inside: 1.28 / half_width.
    tail = np.mean(held[-20 * 1440 :])
    assert abs(float(tail) - 0.8) < 0.02


def test_one_miss_widens_and_one_hit_narrows_by_the_stated_steps() -> None:
    adapter = BandAdapter(gamma=0.01)
    adapter.issued(0, 60, [9.0], [11.0])
    adapter.observed(60, 12.0)  # outside: a miss
    assert adapter.scale == pytest.approx(math.exp(0.01 * 0.8))
    adapter.issued(1, 61, [9.0], [11.0])
    adapter.observed(61, 10.0)  # inside
    assert adapter.scale == pytest.approx(math.exp(0.01 * 0.8 - 0.01 * 0.2))
    assert adapter.coverage() == pytest.approx(0.5)
    assert adapter.outcomes == 2


def test_the_newest_band_for_a_minute_is_the_one_scored_and_unknown_minutes_score_nothing() -> None:
    adapter = BandAdapter(gamma=0.01)
    adapter.issued(0, 60, [0.0], [1.0])
    adapter.issued(1, 60, [0.0], [5.0])  # a later forecast for the same minute wins
    adapter.observed(60, 3.0)
    assert adapter.coverage() == 1.0
    adapter.issued(2, 61, [0.0], [1.0])
    adapter.observed(61, math.nan)  # no reading: not scored, and the band is dropped
    adapter.observed(62, 3.0)
    assert adapter.outcomes == 1


def test_widen_scales_each_side_around_the_point_forecast() -> None:
    adapter = BandAdapter(gamma=1.0, max_scale=3.0, min_half_width_share=0.0)
    adapter.issued(0, 60, [0.0], [0.0])
    adapter.observed(60, 1.0)  # a miss: log scale + 0.8
    scale = math.exp(0.8)
    low, high = adapter.widen([10.0, 5.0], [9.0, 5.0], [12.0, 4.0])
    assert low == pytest.approx((10.0 - scale * 1.0, 5.0))
    # A P90 under the point (never served, but possible in a raw band) gives no upper width.
    assert high == pytest.approx((10.0 + scale * 2.0, 5.0))


def test_no_side_is_narrower_than_the_share_of_the_point() -> None:
    adapter = BandAdapter(min_half_width_share=0.1)
    # A zero-width band (the baseline's range where its two days agree) gets +-10 % of the
    # point; a wider side keeps its own width; a negative point (export) its magnitude's share.
    low, high = adapter.widen([20.0, 20.0, -4.0], [20.0, 15.0, -4.0], [20.0, 21.0, -4.0])
    assert low == pytest.approx((18.0, 15.0, -4.4))
    assert high == pytest.approx((22.0, 22.0, -3.6))


def test_a_point_near_zero_gets_a_band_from_the_forecasts_level() -> None:
    # A PV site's net load crosses zero at noon; the baseline's range is zero-width where its two
    # days agree. 10 % of a zero point would be no band at all, which no scale can open: the
    # floor is 10 % of a quarter of the forecast's mean magnitude there (mean 8 kW: 0.2 kW).
    adapter = BandAdapter(min_half_width_share=0.1)
    point = [20.0, 10.0, 0.0, -0.5, 9.5]
    low, high = adapter.widen(point, point, point)
    assert low == pytest.approx((18.0, 9.0, -0.2, -0.7, 8.55))
    assert high == pytest.approx((22.0, 11.0, 0.2, -0.3, 10.45))
    # The 60-minute forecast at a PV site's noon is near zero all hour: the load's level over the
    # last day (here 8 kW, from the outcomes seen) gives the floor instead.
    hour = BandAdapter(min_half_width_share=0.1)
    for minute in range(1440):
        hour.observed(minute, 8.0 if minute % 2 else -8.0)
    low, high = hour.widen([0.0, 0.5], [0.0, 0.5], [0.0, 0.5])
    assert low == pytest.approx((-0.2, 0.3)) and high == pytest.approx((0.2, 0.7))
    # Misses then widen it like any other band.
    for minute in range(50):
        adapter.issued(minute, minute + 60, [-0.2], [0.2])
        adapter.observed(minute + 60, 1.0)
    low, high = adapter.widen(point, point, point)
    assert high[2] > 0.2 and low[2] < -0.2


def test_the_scale_stays_inside_its_limits() -> None:
    adapter = BandAdapter(gamma=1.0, min_scale=0.5, max_scale=3.0)
    for minute in range(20):
        adapter.issued(minute, minute + 60, [0.0], [0.0])
        adapter.observed(minute + 60, 1.0)
    assert adapter.scale == pytest.approx(3.0)
    for minute in range(20, 200):
        adapter.issued(minute, minute + 60, [0.0], [2.0])
        adapter.observed(minute + 60, 1.0)
    assert adapter.scale == pytest.approx(0.5)


def test_day_ahead_bands_are_scored_on_each_blocks_mean_once_per_block() -> None:
    adapter = BandAdapter(step_minutes=15, gamma=0.01, min_half_width_share=0.0)
    # Two forecasts made before block 900 starts: only the first is recorded; one made once the
    # block is under way (its first step partly measured) is not recorded at all.
    adapter.issued(885, 900, [9.0, 0.0], [11.0, 1.0])
    adapter.issued(899, 900, [100.0, 100.0], [101.0, 101.0])
    adapter.issued(901, 900, [100.0, 100.0], [101.0, 101.0])
    # Block 900-914: minutes alternate 8 and 12 kW (mean 10: inside, though no minute is).
    for minute in range(900, 915):
        adapter.observed(minute, 8.0 if minute % 2 else 12.0)
    assert (adapter.outcomes, adapter.inside) == (1, 1)
    # Block 915-929 (the first forecast's step 1, band 0-1 kW): 9 of 15 minutes known, fewer
    # than the 10 the bench's targets need -> not scored; the next block's minute closes it.
    for minute in range(915, 924):
        adapter.observed(minute, 5.0)
    adapter.observed(930, 5.0)
    assert adapter.outcomes == 1


def test_a_late_minute_does_not_disturb_the_block_in_progress() -> None:
    adapter = BandAdapter(step_minutes=15, gamma=0.01, min_half_width_share=0.0)
    adapter.issued(929, 930, [9.0], [11.0])
    for minute in range(930, 937):
        adapter.observed(minute, 10.0)
    adapter.observed(916, 50.0)  # a late minute of an earlier block
    for minute in range(937, 945):
        adapter.observed(minute, 10.0)
    # Block 930 was scored on its own 15 minutes (mean 10: inside), the late minute left out.
    assert (adapter.outcomes, adapter.inside) == (1, 1)
    # A late minute right after a block closed at its last minute changes nothing either.
    adapter.observed(931, 50.0)
    adapter.observed(946, 10.0)
    assert adapter.outcomes == 1


def test_a_band_that_is_not_finite_scores_nothing() -> None:
    adapter = BandAdapter(gamma=0.01)
    adapter.issued(0, 60, [math.nan], [1.0])
    adapter.observed(60, 0.5)
    adapter.issued(1, 61, [], [])  # nothing to record
    adapter.observed(61, 0.5)
    assert adapter.outcomes == 0 and adapter.scale == 1.0


def test_day_ahead_misses_widen_the_band() -> None:
    adapter = BandAdapter(step_minutes=15, gamma=0.01, min_half_width_share=0.0)
    adapter.issued(899, 900, [9.0] * 4, [11.0] * 4)
    for minute in range(900, 960):
        adapter.observed(minute, 20.0)
    assert adapter.outcomes == 4 and adapter.inside == 0
    assert adapter.scale == pytest.approx(math.exp(4 * 0.01 * 0.8))


def test_the_service_keeps_one_adapter_per_forecaster_and_output() -> None:
    from datetime import UTC

    from core.accuracy import LiveErrorTracker
    from core.compute import SnapshotComputer
    from core.series import MinuteSeries
    from core.signals import LoadClassifier

    computer = SnapshotComputer(
        MinuteSeries(1440), LoadClassifier(90, 10, 900, 60), LiveErrorTracker(), UTC, 1440
    )
    model = computer.band("lite-v1")
    model.issued(0, 60, [0.0], [0.0])
    computer.observed(60, 1.0)  # scored through the computer, as the service feeds it
    assert model.scale > 1.0
    # The baseline standing in for the model has its own scale; the day-ahead has its own.
    assert computer.band("mean-2-weeks").scale == 1.0
    assert computer.band("lite-v1", day_ahead=True).scale == 1.0
    assert computer.band("lite-v1") is model
    computer.reset_bands()  # a new model serves
    assert computer.band("lite-v1").scale == 1.0
