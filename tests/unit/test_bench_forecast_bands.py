"""The forecast bench scores the bands as the service serves them: adapted online, causally."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from bench.forecast_scoring import served_bands


def _case(days: int = 20) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Minutes of N(0, 1) noise (a net meter around zero: the band's 10 % floor stays out of the
    way), an origin each minute after the first day, a flat point at zero."""
    rng = np.random.default_rng(3)
    start = 27_000_000
    values = rng.normal(size=days * 1440)
    origins = np.arange(start + 1440, start + len(values) - 61, dtype=np.int64)
    point = np.zeros((len(origins), 60))
    return start, values, origins, point


def test_a_too_narrow_band_is_served_wider_and_covers_close_to_80_percent() -> None:
    start, values, origins, point = _case()
    p10, p90 = point - 0.5, point + 0.5  # covers 38 % of N(0, 1)
    low, high = served_bands(start, values, origins, point, p10, p90, day_ahead=False)
    actual = values[origins - start + 60]
    raw = np.mean((actual >= p10[:, -1]) & (actual <= p90[:, -1]))
    served = np.mean((actual >= low[:, -1]) & (actual <= high[:, -1]))
    assert raw < 0.45
    assert abs(served - 0.8) < 0.05


def test_a_served_band_depends_only_on_what_was_known_at_its_origin() -> None:
    start, values, origins, point = _case(days=6)
    p10, p90 = point - 0.5, point + 0.5
    low, _ = served_bands(start, values, origins, point, p10, p90, day_ahead=False)
    cut = len(origins) // 2
    changed = values.copy()
    changed[origins[cut] - start + 1 :] += 50.0  # the future after origin ``cut`` differs
    low2, _ = served_bands(start, changed, origins, point, p10, p90, day_ahead=False)
    np.testing.assert_array_equal(low[: cut + 1], low2[: cut + 1])
    assert not np.array_equal(low[cut + 61 :], low2[cut + 61 :])


def test_day_ahead_bands_adapt_on_the_blocks_that_have_happened() -> None:
    start, values, _, _ = _case(days=8)
    origins = np.arange(start + 1440 - 1, start + 7 * 1440 - 1, 15, dtype=np.int64)
    point = np.zeros((len(origins), 96))
    p10, p90 = point - 0.05, point + 0.05  # far too narrow for 15-minute means of N(0, 1)
    low, high = served_bands(start, values, origins, point, p10, p90, day_ahead=True)
    width = high - low
    assert abs(width[0, 0] - 0.1) < 1e-9  # nothing had happened yet: as calibrated
    assert width[-1, 0] > 2 * width[0, 0]  # widened by the misses seen so far


def test_a_served_day_ahead_band_depends_only_on_what_was_known_at_its_origin() -> None:
    start, values, _, _ = _case(days=4)
    origins = np.arange(start + 1440 - 1, start + 3 * 1440 - 1, 15, dtype=np.int64)
    point = np.zeros((len(origins), 96))
    p10, p90 = point - 0.05, point + 0.05
    low, _ = served_bands(start, values, origins, point, p10, p90, day_ahead=True)
    cut = len(origins) // 2
    changed = values.copy()
    changed[origins[cut] - start + 1 :] += 50.0
    low2, _ = served_bands(start, changed, origins, point, p10, p90, day_ahead=True)
    np.testing.assert_array_equal(low[: cut + 1], low2[: cut + 1])
    assert not np.array_equal(low[cut + 2 :], low2[cut + 2 :])


def test_a_child_that_dies_without_a_result_is_an_error_not_a_hang() -> None:
    # sys.exit(args, queue) raises TypeError in the child: it exits 1 and never puts a result.
    from bench.forecast_children import in_child

    with pytest.raises(RuntimeError, match="exited with 1 and no result"):
        in_child(sys.exit, {})
