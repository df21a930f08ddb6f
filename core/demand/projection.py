"""The interval-in-progress projection, the next-hour windows and their exceedance chances."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from core.demand.accounting import interval_average_kw
from core.demand.config import NEXT_HOUR_MINUTES, DemandConfig, ProjectionMethod, WindowMode
from core.forecast.base import Forecast
from core.timegrid import minute_start

# The 10th..90th percentile width of a normal distribution is 2 * 1.2816 sigma.
P10_P90_WIDTH_IN_SIGMAS = 2.563


def elapsed_minutes_kw(window_kw: Sequence[float], held_kw: float | None) -> list[float] | None:
    """Each elapsed minute of an interval, one entry per minute of the clock (NaN: no reading).

    A gap counts at the mean of the measured minutes (as billing averages what it measured), or at
    ``held_kw`` (the latest reading) when none was measured; None when neither is known. Shared by
    the demand projection and the dispatch controller, so both count the interval's elapsed part,
    and with it its start, the same way across a gap.
    """
    measured = [kw for kw in window_kw if not math.isnan(kw)]
    if measured:
        fill = sum(measured) / len(measured)
    elif held_kw is not None and math.isfinite(held_kw):
        fill = held_kw
    else:
        return None
    return [fill if math.isnan(kw) else float(kw) for kw in window_kw]


def projected_interval_kw(
    elapsed_sum_kw_minutes: float, remaining_kw: list[float], length_minutes: int
) -> float:
    """End-of-interval average: (kW·minutes so far + expected kW of each remaining minute) / L."""
    return (elapsed_sum_kw_minutes + sum(remaining_kw)) / length_minutes


def remaining_minute_kw(expected_kw: float | None, measured_kw: float | None) -> float | None:
    """What a remaining minute of the interval in progress counts at: its expected kW, but never
    less than the measured level (the latest metered minute), so a load running above its
    forecast is projected where the meter has it, not where the forecast hoped.

    The one rule of the interval in progress: ``kw-to-shed``, the interval's exceedance chance,
    the charge permits' headroom and the battery's live layer (which holds the rest of the
    interval at the latest minute's load) all project the rest of the interval with it.
    """
    if expected_kw is None:
        return measured_kw
    if measured_kw is None or not math.isfinite(measured_kw):
        return expected_kw
    return max(expected_kw, measured_kw)


def allowance_kw(
    target_kw: float, length_minutes: int, elapsed_sum_kw_minutes: float, remaining_minutes: int
) -> float | None:
    """kW the load may average over the remaining minutes and still end at ``target_kw``.

    (target * L - kW·minutes so far) / remaining. Negative when the target is already lost
    (only exporting could save it). None when no minute remains: nothing is left to allocate.
    """
    if remaining_minutes <= 0:
        return None
    return (target_kw * length_minutes - elapsed_sum_kw_minutes) / remaining_minutes


def sigma_from_band_kw(p10_kw: float, p90_kw: float) -> float:
    """Standard deviation of a normal distribution with the given 10th and 90th percentiles."""
    return max(0.0, p90_kw - p10_kw) / P10_P90_WIDTH_IN_SIGMAS


def probability_of_exceedance(mean_kw: float, sigma_kw: float, threshold_kw: float) -> float:
    """P(X > threshold) for X ~ Normal(mean, sigma); a step function when sigma is 0."""
    if sigma_kw <= 0.0:
        return 1.0 if mean_kw > threshold_kw else 0.0
    z = (threshold_kw - mean_kw) / sigma_kw
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class IntervalStatus:
    """The demand interval in progress: so far, projected and allowed."""

    start_minute: int
    length_minutes: int
    elapsed_minutes: int
    observed_minutes: int
    remaining_minutes: int
    average_so_far_kw: float | None
    projected_kw: float | None
    projection: ProjectionMethod
    allowance_kw: float | None
    # The battery's power counted on the remaining minutes (+ charging; None: no battery power
    # known), and the projection with the battery stopped for them (the building's own).
    battery_kw: float | None = None
    without_battery_kw: float | None = None

    @property
    def start(self) -> datetime:
        """UTC start of the interval."""
        return minute_start(self.start_minute)


@dataclass(frozen=True, slots=True)
class Window:
    """One demand window seen from now: its known part and the forecast of its future part."""

    start_minute: int
    mean_kw: float
    sigma_kw: float | None
    headroom_kw: float | None  # kW that may be added to each future minute, staying at target


@dataclass(frozen=True, slots=True)
class Step:
    """Expected net kW of one future minute, its sigma and its upper (P90) kW."""

    mean_kw: float
    sigma_kw: float | None
    upper_kw: float  # P90 when a band exists, else the point forecast


def at_least(step: Step | None, measured_kw: float | None) -> Step | None:
    """A forecast minute of the interval in progress under the measured-level rule."""
    if step is None:
        return None
    mean = remaining_minute_kw(step.mean_kw, measured_kw)
    if mean is None or mean <= step.mean_kw:
        return step
    return Step(mean, step.sigma_kw, max(step.upper_kw, mean))


def band_ok(forecast: Forecast) -> bool:
    """True when the forecast's P10/P90 band is complete, finite and ordered."""
    p10, p90 = forecast.p10_kw, forecast.p90_kw
    if p10 is None or p90 is None or len(p10) != len(forecast.kw) or len(p90) != len(forecast.kw):
        return False
    return all(
        math.isfinite(a) and math.isfinite(b) and b >= a for a, b in zip(p10, p90, strict=True)
    )


def usable_forecast(
    config: DemandConfig, forecast: Forecast | None, now_minute: int, notes: list[str]
) -> Forecast | None:
    """The forecast when recent and finite; otherwise None with a note."""
    if forecast is None:
        notes.append("no forecast: projection holds the latest kW")
        return None
    age_minutes = now_minute - 1 - forecast.origin_minute
    if age_minutes > config.forecast_max_age_minutes:
        notes.append(f"forecast stale ({age_minutes} min old): ignored")
        return None
    if not all(math.isfinite(v) for v in forecast.kw):
        notes.append("forecast has non-finite values: ignored")
        return None
    return forecast


def forecast_offset_kw(
    config: DemandConfig,
    forecast: Forecast | None,
    battery_now_kw: float | None,
    battery_rest_kw: float | None,
    ev_kw: float | None,
    notes: list[str],
) -> float:
    """kW added to each forecast minute so it is the meter with the battery at ``battery_rest_kw``.

    A base-load forecast lacks the dispatched loads: the EV's present power is held and the
    battery counts at its power for the rest (``battery_rest_kw``; None: its present power). A
    meter forecast already holds the battery as it runs now: only the change is added.
    """
    rest_kw = battery_now_kw if battery_rest_kw is None else battery_rest_kw
    if forecast is None:
        return 0.0
    if config.forecast_is_base_load:
        if (config.has_battery and battery_now_kw is None and battery_rest_kw is None) or (
            config.has_ev and ev_kw is None
        ):
            notes.append("base-load forecast: unknown battery/EV power taken as 0 kW")
        return (rest_kw or 0.0) + (ev_kw or 0.0)
    return (rest_kw or 0.0) - (battery_now_kw or 0.0)


def step_function(forecast: Forecast | None, offset_kw: float) -> Callable[[int], Step | None]:
    """Expected net kW of a future minute from the forecast (plus ``offset_kw``), or None where
    it has none."""
    band = forecast is not None and band_ok(forecast)

    def step(minute: int) -> Step | None:
        if forecast is None:
            return None
        index = minute - forecast.origin_minute - 1
        if not 0 <= index < len(forecast.kw):
            return None
        mean = forecast.kw[index] + offset_kw
        if band and forecast.p10_kw is not None and forecast.p90_kw is not None:
            sigma = sigma_from_band_kw(forecast.p10_kw[index], forecast.p90_kw[index])
            return Step(mean, sigma, max(mean, forecast.p90_kw[index] + offset_kw))
        return Step(mean, None, mean)

    return step


def elapsed_kw_minutes(
    minutes_kw: Mapping[int, float], start: int, now_minute: int, held_kw: float | None
) -> float | None:
    """kW·minutes of [start, now): observed minutes, gaps at the observed mean (else held)."""
    if now_minute <= start:
        return 0.0
    window = [minutes_kw.get(m, math.nan) for m in range(start, now_minute)]
    values = elapsed_minutes_kw(window, held_kw)
    return None if values is None else sum(values)


def interval_status(
    config: DemandConfig,
    minutes_kw: Mapping[int, float],
    start: int,
    now_minute: int,
    held_kw: float | None,
    step: Callable[[int], Step | None],
    effective_kw: float | None,
    notes: list[str],
    measured_kw: float | None = None,
    battery_kw: float | None = None,
) -> IntervalStatus:
    """The interval in progress: average so far, projected end average, allowance.

    ``held_kw`` (the latest metered minute) fills the elapsed part's gaps; ``measured_kw`` is the
    measured level the remaining minutes count at least (default ``held_kw``: the meter with the
    battery as it ran; the tracker passes it with the battery at ``battery_kw`` instead).
    """
    if measured_kw is None:
        measured_kw = held_kw
    length = config.interval_minutes
    end = start + length
    elapsed = now_minute - start
    observed = [kw for m, kw in minutes_kw.items() if start <= m < now_minute]
    average = interval_average_kw(observed)
    elapsed_sum = elapsed_kw_minutes(minutes_kw, start, now_minute, held_kw)
    if elapsed > 0 and not observed and elapsed_sum is not None:
        notes.append("no minute of this interval observed yet: elapsed part holds latest kW")
    remaining_kw: list[float] = []
    method = ProjectionMethod.FORECAST
    forecast_minutes = 0
    lifted = 0
    for minute in range(now_minute, end):
        forecast_step = step(minute)
        if forecast_step is not None:
            kw = remaining_minute_kw(forecast_step.mean_kw, measured_kw)
            remaining_kw.append(forecast_step.mean_kw if kw is None else kw)
            if kw is not None and kw > forecast_step.mean_kw:
                lifted += 1
            forecast_minutes += 1
        elif measured_kw is not None:
            remaining_kw.append(measured_kw)
            method = ProjectionMethod.HELD
        else:
            method = ProjectionMethod.NONE
            break
    if method is ProjectionMethod.HELD and forecast_minutes:
        notes.append("forecast covers only part of the interval: the rest holds latest kW")
    if lifted and measured_kw is not None:
        notes.append(
            f"the load runs above the forecast: the interval's rest is projected at least "
            f"at the measured {measured_kw:.2f} kW"
        )
    projected: float | None = None
    if method is not ProjectionMethod.NONE and elapsed_sum is not None:
        projected = projected_interval_kw(elapsed_sum, remaining_kw, length)
    else:
        method = ProjectionMethod.NONE
        notes.append("no projection: neither forecast nor a recent meter minute")
    return IntervalStatus(
        start_minute=start,
        length_minutes=length,
        elapsed_minutes=elapsed,
        observed_minutes=len(observed),
        remaining_minutes=end - now_minute,
        average_so_far_kw=average,
        projected_kw=projected,
        projection=method,
        allowance_kw=(
            None
            if effective_kw is None or elapsed_sum is None
            else allowance_kw(effective_kw, length, elapsed_sum, end - now_minute)
        ),
        battery_kw=battery_kw,
    )


def next_hour_windows(
    config: DemandConfig,
    minutes_kw: Mapping[int, float],
    win_start: int,
    now_minute: int,
    forecast: Forecast | None,
    step: Callable[[int], Step | None],
    held_kw: float | None,
    effective_kw: float | None,
    measured_kw: float | None = None,
) -> list[Window]:
    """Demand windows that end within the next hour and the forecast horizon, current first.

    ``held_kw`` fills gaps of the known part; the current window's rest counts at least at
    ``measured_kw`` (default ``held_kw``), as ``interval_status`` projects it.
    """
    if measured_kw is None:
        measured_kw = held_kw
    if forecast is None:
        return []
    length = config.interval_minutes
    horizon_end = min(
        forecast.origin_minute + forecast.horizon_minutes + 1, now_minute + NEXT_HOUR_MINUTES
    )
    if config.window is WindowMode.FIXED:
        starts = range(win_start, horizon_end - length + 1, length)
    else:
        starts = range(win_start, horizon_end - length + 1)
    windows: list[Window] = []
    for start in starts:
        known = elapsed_kw_minutes(minutes_kw, start, min(now_minute, start + length), held_kw)
        future = [step(m) for m in range(max(start, now_minute), start + length)]
        if start == win_start:
            # The interval in progress: its rest at least at the measured level, as the
            # projection (``remaining_minute_kw``); later windows keep the forecast.
            future = [at_least(s, measured_kw) for s in future]
        if known is None or any(s is None for s in future):
            break
        steps = [s for s in future if s is not None]
        mean = (known + sum(s.mean_kw for s in steps)) / length
        sigma: float | None = None
        if steps and all(s.sigma_kw is not None for s in steps):
            # Perfectly correlated step errors (conservative): sigma of the mean is the
            # sum of the step sigmas over L, not sqrt(sum of squares) / L.
            sigma = sum(s.sigma_kw or 0.0 for s in steps) / length
        elif not steps:
            sigma = 0.0
        headroom: float | None = None
        if effective_kw is not None and steps:
            upper = sum(s.upper_kw for s in steps)
            headroom = (effective_kw * length - known - upper) / len(steps)
        windows.append(Window(start, mean, sigma, headroom))
    return windows
