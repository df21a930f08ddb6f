"""The demand warning comes before the peak: the interval in progress is projected at least at the
measured level when the load runs above its forecast (core.demand, explicit fake times)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from core.demand import (
    DemandConfig,
    DemandTracker,
    OptionalInputs,
    Reading,
    remaining_minute_kw,
)
from core.forecast.base import Forecast, MinuteHistory
from core.forecast.baseline import SeasonalMeanForecaster
from core.timegrid import minute_of, minute_start

UTC_ZONE = ZoneInfo("UTC")
# 2024-06-03 10:00 UTC: the start of a 5- and a 15-minute interval.
S = minute_of(datetime(2024, 6, 3, 10, 0, tzinfo=UTC))
HISTORY_DAYS = 15
TARGET_KW = 21.5


def at(minute: int) -> datetime:
    """A moment a few seconds into ``minute`` (how the service calls evaluate)."""
    return minute_start(minute) + timedelta(seconds=5)


class Calm:
    """Two weeks of a calm 4 kW building, and forecasts made on it plus what came since."""

    def __init__(self) -> None:
        self.start = S - HISTORY_DAYS * 1440
        self.values = [4.0] * (S - self.start)
        self.baseline = SeasonalMeanForecaster(weeks=2)

    def observe(self, kw: float) -> None:
        self.values.append(kw)

    def history(self) -> MinuteHistory:
        return MinuteHistory(self.start, np.asarray(self.values, dtype=np.float64))

    def forecast(self, kind: str, now_minute: int) -> Forecast:
        """``baseline``: the seasonal mean on the calm weeks (4 kW); ``trained``: a model that
        learnt the calm building and follows a new level only a third of the way, with a tight
        band (a confident model that has not seen the step)."""
        history = self.history()
        assert history.end_minute == now_minute - 1
        if kind == "baseline":
            made = self.baseline.forecast(history, UTC_ZONE, at(now_minute))
            assert made is not None
            return made
        last = self.values[-1]
        level = 4.0 + (last - 4.0) / 3.0
        kw = (level,) * 60
        return Forecast(
            "trained",
            at(now_minute),
            now_minute - 1,
            kw,
            tuple(v - 0.5 for v in kw),
            tuple(v + 0.5 for v in kw),
        )


def _warning_minutes(interval: int, kind: str, loads: list[float]) -> list[float]:
    """kw-to-shed at each minute of ``loads`` (from S on), the meter reading ``loads``."""
    config = DemandConfig(target_kw=TARGET_KW, interval_minutes=interval, timezone=UTC_ZONE)
    tracker = DemandTracker(config)
    calm = Calm()
    tracker.observe_minute(S - 1, 4.0)
    shed: list[float] = []
    for offset, kw in enumerate(loads):
        now = S + offset
        snap = tracker.evaluate(at(now), calm.forecast(kind, now), OptionalInputs())
        shed.append(snap.decisions.kw_to_shed)
        tracker.observe_minute(now, kw)
        calm.observe(kw)
    return shed


@pytest.mark.parametrize("kind", ["baseline", "trained"])
@pytest.mark.parametrize("interval", [5, 15])
def test_a_step_at_the_interval_start_is_warned_within_two_minutes(
    interval: int, kind: str
) -> None:
    # The meter steps from 4 kW to 28.5 kW at the start of an interval (minute S).
    shed = _warning_minutes(interval, kind, [28.5] * interval)
    # Minute S: nothing of the step is metered yet; from S + 1 the meter has it.
    assert shed[0] == 0.0
    assert shed[1] > 0.0 and shed[2] > 0.0
    # At S + 1 one minute ran at 28.5 and the rest is projected there: the interval ends at 28.5.
    assert shed[1] == pytest.approx(28.5 - TARGET_KW)


@pytest.mark.parametrize("kind", ["baseline", "trained"])
@pytest.mark.parametrize("interval", [5, 15])
def test_the_warning_comes_within_two_minutes_of_the_measured_level_crossing(
    interval: int, kind: str
) -> None:
    """In general: within 2 minutes of the first minute at which the interval's energy so far
    plus its remaining minutes at the measured level carry it over the target."""
    rng = np.random.default_rng(29 + interval)
    for _ in range(12):
        # A calm start, a rise at a random minute to a random level, a cycling load on it.
        rise_at = int(rng.integers(0, interval))
        high = float(rng.uniform(18.0, 40.0))
        loads = [4.0] * rise_at + [
            high + float(rng.uniform(-2.0, 2.0)) for _ in range(interval - rise_at)
        ]
        shed = _warning_minutes(interval, kind, loads)
        crossing = None
        for offset in range(1, interval):
            so_far = sum(loads[:offset])
            measured = loads[offset - 1]
            if (so_far + measured * (interval - offset)) / interval > TARGET_KW:
                crossing = offset
                break
        if crossing is None:
            continue
        window = shed[crossing : min(crossing + 3, interval)]
        assert any(kw > 0.0 for kw in window), (loads, shed, crossing)


def test_a_load_under_its_forecast_keeps_the_forecast() -> None:
    # The measured level only raises the projection: a load under its forecast is projected on
    # the forecast (the warning never drops because one minute dipped).
    assert remaining_minute_kw(30.0, 10.0) == 30.0
    assert remaining_minute_kw(10.0, 30.0) == 30.0
    assert remaining_minute_kw(None, 12.0) == 12.0
    assert remaining_minute_kw(12.0, None) == 12.0
    assert remaining_minute_kw(12.0, float("nan")) == 12.0


def test_exceedance_chance_and_permits_see_the_measured_level() -> None:
    config = DemandConfig(
        target_kw=TARGET_KW,
        interval_minutes=15,
        timezone=UTC_ZONE,
        has_battery=True,
        battery_charge_kw=5.0,
    )
    tracker = DemandTracker(config)
    for offset in range(-3, 2):
        tracker.observe_minute(S + offset, 4.0 if offset < 0 else 28.5)
    band = (4.0,) * 60
    low = tuple(v - 0.5 for v in band)
    high = tuple(v + 0.5 for v in band)
    forecast = Forecast("test", at(S + 2), S + 1, band, low, high)
    inputs = OptionalInputs(
        battery_soc_pct=Reading(50.0, at(S + 2)), battery_power_kw=Reading(0.0, at(S + 2))
    )
    snap = tracker.evaluate(at(S + 2), forecast, inputs)
    # The forecast says 4 kW; the meter has run at 28.5 for two minutes.
    assert snap.interval.projected_kw == pytest.approx(28.5)
    assert snap.p_exceed_interval == pytest.approx(1.0)
    assert snap.decisions.battery_charge_permit is False
    assert snap.decisions.battery_discharge_request is True
    assert any("measured" in note for note in snap.notes)


def test_kw_to_shed_is_what_the_battery_answer_leaves_and_never_its_charging() -> None:
    config = DemandConfig(
        target_kw=TARGET_KW,
        interval_minutes=15,
        timezone=UTC_ZONE,
        has_battery=True,
        forecast_is_base_load=True,
    )
    tracker = DemandTracker(config)
    # Five minutes metered at 31 kW: a 21 kW building and the battery charging 10 kW.
    for offset in range(5):
        tracker.observe_minute(S + offset, 31.0)
    inputs = OptionalInputs(
        battery_soc_pct=Reading(50.0, at(S + 5)), battery_power_kw=Reading(10.0, at(S + 5))
    )
    outlook = tracker.project(at(S + 5), None, inputs)
    # The building alone: the charge taken out of the measured level for the 10 minutes left.
    assert outlook.rest_building_kw == pytest.approx(21.0)
    assert outlook.building is not None
    assert outlook.building.projected_kw == pytest.approx((5 * 31.0 + 10 * 21.0) / 15)
    # The battery keeps charging 10 kW: the projection counts it, kw-to-shed does not.
    charging = tracker.decide(outlook, 10.0)
    assert charging.interval.projected_kw == pytest.approx((5 * 31.0 + 10 * 31.0) / 15)
    assert charging.decisions.kw_to_shed == pytest.approx((5 * 31.0 + 10 * 21.0) / 15 - TARGET_KW)
    # The battery answers with a 3 kW discharge: only what that leaves is asked of the building.
    answered = tracker.decide(tracker.project(at(S + 5), None, inputs), -3.0)
    expected = (5 * 31.0 + 10 * 18.0) / 15
    assert answered.interval.projected_kw == pytest.approx(expected)
    assert answered.decisions.kw_to_shed == pytest.approx(max(0.0, expected - TARGET_KW))
    assert answered.interval.without_battery_kw == pytest.approx((5 * 31.0 + 10 * 21.0) / 15)
    # Without an answer (a BAS-driven battery) the present charge is held, and still not shed.
    held = tracker.evaluate(at(S + 5), None, inputs)
    assert held.interval.projected_kw == pytest.approx(31.0)
    assert held.decisions.kw_to_shed == pytest.approx(charging.decisions.kw_to_shed)
