"""Live accuracy: the error of the served 60-minute-ahead forecast once its minute has happened."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

# How fast the served bands adapt (log-scale step per outcome, see BandAdapter). The 60-minute
# band is scored once a minute (1,440 outcomes a day); the day-ahead band on every step of one
# forecast per 15 minutes (96 x 96 = 9,216 a day): the same drift per day for both.
BAND_GAMMA = 0.002
DAY_AHEAD_BAND_GAMMA = BAND_GAMMA * 1440 / 9216
# Before the scale applies, each side of a band is at least this share of its point forecast: a
# width scale cannot open a band of zero width (the seasonal baseline's day-ahead range where its
# two days agree), and no building repeats itself closer than that.
MIN_HALF_WIDTH_SHARE = 0.1
# ... and of at least this share of the site's level (the mean magnitude of the forecast, or of
# the load over about the last day, whichever is larger), so a point near zero (a site whose PV
# meets its load at noon) still gets a band the scale can open. A quarter of the level is under
# this building's night load (2.4-2.9 kW against a mean of about 8), so a site whose load never
# nears zero keeps its bands as they were.
MIN_LEVEL_SHARE_OF_MEAN = 0.25
# The load's level is followed with this time constant (in outcomes, one a minute).
LEVEL_MINUTES = 1440


class LiveErrorTracker:
    """Matches each 60-minute-ahead forecast with the minute it predicted; RMSE over a window."""

    def __init__(self, window_minutes: int = 1440, min_samples: int = 60) -> None:
        self._window = window_minutes
        self._min_samples = min_samples
        self._pending: dict[int, float] = {}
        self._errors: deque[tuple[int, float]] = deque()

    def predicted(self, target_minute: int, kw: float) -> None:
        """Remember a forecast for ``target_minute`` (the newest forecast for a minute wins)."""
        self._pending[target_minute] = kw

    def observed(self, minute: int, kw: float) -> None:
        """A minute completed: score the forecast made for it, if any."""
        forecast_kw = self._pending.pop(minute, None)
        if forecast_kw is not None:
            self._errors.append((minute, kw - forecast_kw))
        horizon = minute - self._window
        while self._errors and self._errors[0][0] <= horizon:
            self._errors.popleft()
        for old in [m for m in self._pending if m < horizon]:
            del self._pending[old]

    @property
    def samples(self) -> int:
        """How many forecast/actual pairs are in the window."""
        return len(self._errors)

    @property
    def errors_kw(self) -> tuple[float, ...]:
        """The errors (actual - forecast) in the window, oldest first."""
        return tuple(error for _, error in self._errors)

    def rmse_kw(self) -> float | None:
        """Root-mean-square error over the window, None until ``min_samples`` pairs exist."""
        if len(self._errors) < self._min_samples:
            return None
        return math.sqrt(sum(e * e for _, e in self._errors) / len(self._errors))


class BandAdapter:
    """Keeps a served P10-P90 band honest after training: adaptive conformal inference.

    The band is calibrated on the days before the model was accepted; the days after drift (a
    season, a new schedule), and a band that covered 80 % there may cover 74 % or 86 % now. Each
    outcome that arrives moves a width scale: a miss widens the band by ``gamma * 0.8`` in log
    scale, a hit narrows it by ``gamma * 0.2``. The scale then settles where one outcome in five
    falls outside, whatever the drift, and over ``n`` outcomes the realised coverage is within
    ``log(scale range) / (gamma * n)`` of the target while the scale stays inside its limits
    (Gibbs and Candès, "Adaptive conformal inference under distribution shift", 2021; here on the
    width, not the quantile level). A band that needs more than ``max_scale`` keeps missing more
    often than that, and says so in ``coverage()``.

    ``step_minutes`` is the band's step: 1 for the 60-minute forecast (each forecast is scored at
    its last minute), 15 for the day-ahead (every step of the forecast made just before a block
    starts is scored on each block's mean load, when at least two thirds of its minutes are
    known; forecasts made once a block is under way are not recorded, their first step being
    partly measured). One adapter serves one forecaster: a new model starts again from its own
    calibration, scale 1.
    """

    def __init__(
        self,
        *,
        step_minutes: int = 1,
        gamma: float = 0.002,
        target: float = 0.8,
        min_scale: float = 0.5,
        max_scale: float = 3.0,
        min_half_width_share: float = MIN_HALF_WIDTH_SHARE,
    ) -> None:
        self._step = max(1, step_minutes)
        self._min_share = min_half_width_share
        self._gamma = gamma
        self._target = target
        self._log_min = math.log(min_scale)
        self._log_max = math.log(max_scale)
        self._log_scale = 0.0
        self._pending: dict[int, list[tuple[float, float]]] = {}
        self._issued_block: int | None = None
        self._block: int | None = None
        self._block_sum = 0.0
        self._block_count = 0
        self.outcomes = 0
        self.inside = 0
        self._level = 0.0  # the load's recent mean magnitude, kW
        self._level_count = 0

    @property
    def scale(self) -> float:
        """The factor the calibrated band's half-widths are multiplied by (1: as trained)."""
        return math.exp(self._log_scale)

    def coverage(self) -> float | None:
        """The share of scored outcomes inside the band as served (None before the first)."""
        return self.inside / self.outcomes if self.outcomes else None

    def widen(
        self, point: Sequence[float], p10: Sequence[float], p90: Sequence[float]
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The band to serve: each side's distance from the point forecast (at least
        ``min_half_width_share`` of the point, or of a quarter of the site's level where the
        point is nearer zero) times the scale."""
        s, share = self.scale, self._min_share
        magnitudes = [abs(p) for p in point if math.isfinite(p)]
        mean = sum(magnitudes) / len(magnitudes) if magnitudes else 0.0
        level = MIN_LEVEL_SHARE_OF_MEAN * max(mean, self._level)
        low = tuple(
            p - s * max(p - lo, share * max(abs(p), level), 0.0)
            for p, lo in zip(point, p10, strict=True)
        )
        high = tuple(
            p + s * max(hi - p, share * max(abs(p), level), 0.0)
            for p, hi in zip(point, p90, strict=True)
        )
        return low, high

    def issued(
        self,
        made_minute: int,
        first_minute: int,
        low: Sequence[float],
        high: Sequence[float],
    ) -> None:
        """Remember a served band whose first step starts at ``first_minute``."""
        if not low or len(low) != len(high):
            return
        if self._step == 1:
            # The newest forecast for a minute wins (one outcome per minute).
            self._pending[first_minute] = [(float(low[0]), float(high[0]))]
            return
        block = first_minute // self._step
        if first_minute <= made_minute or block == self._issued_block:
            return
        self._issued_block = block
        for k, (lo, hi) in enumerate(zip(low, high, strict=True)):
            self._pending.setdefault(first_minute + k * self._step, []).append(
                (float(lo), float(hi))
            )

    def observed(self, minute: int, kw: float) -> None:
        """A minute of load completed (NaN: unknown). Scores the bands it closes."""
        if math.isfinite(kw):
            self._level_count += 1
            weight = 1.0 / min(self._level_count, LEVEL_MINUTES)
            self._level += weight * (abs(kw) - self._level)
        if self._step == 1:
            if not math.isnan(kw):
                for band in self._pending.pop(minute, []):
                    self._score(band, kw)
            self._drop_before(minute)
            return
        block = minute - minute % self._step
        if self._block is not None and block < self._block:
            return  # a late minute of a block already scored or abandoned
        if self._block is not None and block != self._block:
            self._close_block()
        if self._block != block:
            self._block, self._block_sum, self._block_count = block, 0.0, 0
        if not math.isnan(kw):
            self._block_sum += kw
            self._block_count += 1
        if minute == block + self._step - 1:
            self._close_block()

    def _close_block(self) -> None:
        block, total, count = self._block, self._block_sum, self._block_count
        self._block, self._block_sum, self._block_count = None, 0.0, 0
        if block is None:
            return
        bands = self._pending.pop(block, [])
        # A block is scored on its mean when two thirds of its minutes are known (as the bench's
        # day-ahead targets are).
        if count * 3 >= self._step * 2:
            for band in bands:
                self._score(band, total / count)
        self._drop_before(block)

    def _drop_before(self, minute: int) -> None:
        for old in [m for m in self._pending if m < minute]:
            del self._pending[old]

    def _score(self, band: tuple[float, float], kw: float) -> None:
        if not (math.isfinite(band[0]) and math.isfinite(band[1])):
            return  # a forecast without a usable band scores nothing
        hit = band[0] <= kw <= band[1]
        self.outcomes += 1
        self.inside += hit
        miss = 0.0 if hit else 1.0
        step = self._gamma * (miss - (1.0 - self._target))
        self._log_scale = min(self._log_max, max(self._log_min, self._log_scale + step))
