"""Rate of change and the percentile load classifier with anti-short-cycling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core.signals import DwellFlag, LoadClassifier, rate_of_change_1min, rate_of_change_15min

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def test_rate_of_change_over_the_last_minute() -> None:
    assert rate_of_change_1min(10.0, 12.5) == pytest.approx(2.5)
    assert rate_of_change_1min(np.nan, 12.5) is None


def test_rate_of_change_15min_is_the_least_squares_slope() -> None:
    ramp = 3.0 + 0.4 * np.arange(15)
    assert rate_of_change_15min(ramp) == pytest.approx(0.4)
    noisy_end = ramp.copy()
    noisy_end[-1] += 6.0  # one spike at the end moves a fitted slope far less than last-first
    fitted = rate_of_change_15min(noisy_end)
    assert fitted is not None
    assert abs(fitted - 0.4) < abs((noisy_end[-1] - noisy_end[0]) / 14 - 0.4)


def test_rate_of_change_15min_needs_ten_points() -> None:
    values = np.full(15, np.nan)
    values[:9] = 1.0
    assert rate_of_change_15min(values) is None
    values[9] = 1.0
    assert rate_of_change_15min(values) == pytest.approx(0.0)


def _window() -> np.ndarray:
    # 1..100 kW: the 90th percentile is 90.1 and the 30th is 30.7 (linear interpolation).
    return np.arange(1.0, 101.0)


def test_flags_follow_the_percentiles_of_the_window() -> None:
    classifier = LoadClassifier(90, 30, min_dwell_s=900, min_history_minutes=60)
    flags = classifier.evaluate(95.0, _window(), NOW)
    assert flags.high and not flags.low
    assert flags.high_threshold_kw == pytest.approx(np.percentile(_window(), 90))
    assert flags.low_threshold_kw == pytest.approx(np.percentile(_window(), 30))
    other = LoadClassifier(90, 30, min_dwell_s=900, min_history_minutes=60)
    flags = other.evaluate(10.0, _window(), NOW)
    assert flags.low and not flags.high


def test_a_flag_changes_at_most_once_per_dwell() -> None:
    classifier = LoadClassifier(90, 30, min_dwell_s=900, min_history_minutes=60)
    assert classifier.evaluate(95.0, _window(), NOW).high
    # Falls below at once: held for 15 minutes from the change.
    assert classifier.evaluate(50.0, _window(), NOW + timedelta(minutes=5)).high
    assert classifier.evaluate(50.0, _window(), NOW + timedelta(minutes=14, seconds=59)).high
    assert not classifier.evaluate(50.0, _window(), NOW + timedelta(minutes=15)).high
    # And back up: another 15 minutes must pass.
    assert not classifier.evaluate(95.0, _window(), NOW + timedelta(minutes=20)).high
    assert classifier.evaluate(95.0, _window(), NOW + timedelta(minutes=30)).high


def test_too_little_history_or_no_latest_value_drives_flags_inactive() -> None:
    classifier = LoadClassifier(90, 30, min_dwell_s=0, min_history_minutes=60)
    short = np.arange(1.0, 30.0)
    flags = classifier.evaluate(95.0, short, NOW)
    assert not flags.evaluated and not flags.high and flags.history_minutes == 29
    assert classifier.evaluate(95.0, _window(), NOW).high
    flags = classifier.evaluate(None, _window(), NOW + timedelta(seconds=1))
    assert not flags.high and not flags.evaluated


def test_gaps_in_the_window_are_ignored() -> None:
    window = np.concatenate([_window(), np.full(500, np.nan)])
    flags = LoadClassifier(90, 30, 0, 60).evaluate(95.0, window, NOW)
    assert flags.high_threshold_kw == pytest.approx(np.percentile(_window(), 90))


def test_classifier_state_round_trips() -> None:
    classifier = LoadClassifier(90, 30, min_dwell_s=900, min_history_minutes=60)
    classifier.evaluate(95.0, _window(), NOW)
    restored = LoadClassifier(90, 30, min_dwell_s=900, min_history_minutes=60)
    restored.restore(classifier.to_state())
    assert restored.high == DwellFlag(True, NOW)
    # The dwell continues across the restart.
    assert restored.evaluate(50.0, _window(), NOW + timedelta(minutes=1)).high
