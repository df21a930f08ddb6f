"""The demand tracker: feeds the accounting, runs the projection and the decisions, keeps state."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from core.demand.accounting import (
    BillingPeriod,
    ClosedInterval,
    IntervalLedger,
    billing_period,
    interval_start_minute,
)
from core.demand.config import (
    DemandConfig,
    OptionalInputs,
    WindowMode,
    check_kw,
)
from core.demand.decisions import LATCHES, ChillerLimit, DemandDecisions, Latch, decide
from core.demand.loads import battery_power_in_force, fresh_value, gross_load_kw
from core.demand.projection import (
    IntervalStatus,
    Step,
    band_ok,
    elapsed_kw_minutes,
    forecast_offset_kw,
    interval_status,
    next_hour_windows,
    probability_of_exceedance,
    step_function,
    usable_forecast,
)
from core.forecast.base import Forecast
from core.timegrid import minute_of

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class DemandSnapshot:
    """Everything ``evaluate`` worked out for one moment.

    ``p_exceed_interval`` / ``p_exceed_next_hour``: the chance that the current window, and any
    window ending within the next hour, averages above the effective target. Each forecast
    minute is Normal(kw, (p90 - p10) / 2.563); step errors are assumed perfectly correlated
    (conservative), so a window's sigma is the sum of its future steps' sigmas / L, elapsed
    minutes carry none, and P(any window) is the largest single-window P. None without a band.
    """

    at: datetime
    minute: int
    interval: IntervalStatus
    period: BillingPeriod
    period_peak_kw: float | None
    period_peak_start_minute: int | None
    target_kw: float | None
    effective_target_kw: float | None
    next_hour_peak_kw: float | None
    next_hour_peak_start_minute: int | None
    p_exceed_interval: float | None
    p_exceed_next_hour: float | None
    gross_load_kw: float | None
    decisions: DemandDecisions
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DemandOutlook:
    """``DemandTracker.project``'s result: the interval in progress projected for the building
    alone (the battery stopped for its remaining minutes) and what ``decide`` needs to finish.

    The one projection of the interval: each remaining minute at the larger of its forecast and
    the latest metered minute (``remaining_minute_kw``), the battery's power taken out. The
    dispatch controller's live layer responds to ``rest_building_kw``; ``decide`` puts that
    response back and makes every decision on the result.
    """

    at: datetime
    minute: int
    period: BillingPeriod
    period_peak_kw: float | None
    period_peak_start_minute: int | None
    target_kw: float | None
    effective_target_kw: float | None
    window_start_minute: int
    held_kw: float | None  # the latest metered minute (meter kW), within the age limit
    battery_now_kw: float | None  # the battery's power in force (+ charging): measured or setpoint
    soc_pct: float | None
    battery_kw: float | None  # the measured battery power, when fresh
    ev_kw: float | None
    pv_kw: float | None
    forecast: Forecast | None  # the usable forecast (recent, finite), else None
    building: IntervalStatus | None  # the projection with the battery stopped
    rest_building_kw: float | None  # the building's mean kW over the remaining minutes
    notes: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Tracker


class DemandTracker:
    """Tracks interval demand and the billing-period peak from minute means; makes decisions.

    Feed ``observe_minute`` every completed minute mean of the net (meter) load in time order,
    call ``evaluate`` as often as wanted (the service: every 60 s), persist ``to_state``.
    """

    def __init__(self, config: DemandConfig) -> None:
        self._config = config
        self._target_kw = config.target_kw
        self._target_from_operator = False
        self._ledger = IntervalLedger(config)
        self._latches = {name: Latch() for name in LATCHES}
        self._chiller = ChillerLimit()

    @property
    def config(self) -> DemandConfig:
        """The settings this tracker runs with."""
        return self._config

    @property
    def target_kw(self) -> float | None:
        """The configured (or operator-set) demand target, before the peak ratchet."""
        return self._target_kw

    @property
    def period_peak_kw(self) -> float | None:
        """Highest counted interval average of the tracked billing period so far."""
        return self._ledger.peak_kw

    @property
    def period_peak_start_minute(self) -> int | None:
        """UTC start minute of the interval that set the period peak."""
        return self._ledger.peak_start_minute

    def set_target(self, kw: float | None) -> None:
        """Set the demand target (kW) from the operator; None removes it. Persisted in state."""
        if kw is not None:
            check_kw("target", kw)
        self._target_kw = kw
        self._target_from_operator = True

    # -- observations --------------------------------------------------------------------------

    def observe_minute(self, minute: int, kw: float) -> list[ClosedInterval]:
        """Add one completed minute mean of the meter (kW); return the intervals it closed.

        The rules (order, gaps, when an interval closes) are ``IntervalLedger.observe_minute``'s.
        """
        return self._ledger.observe_minute(minute, kw)

    def add_stored_minutes(
        self, now: datetime, minutes_kw: Mapping[int, float]
    ) -> list[ClosedInterval]:
        """Count the stored minutes of the interval in progress (imported, or written as a
        batch) that the live path did not see; return the intervals they closed.

        The projection then counts every stored minute of the interval, whichever way it came.
        """
        cfg = self._config
        now_minute = minute_of(now)
        if cfg.window is WindowMode.FIXED:
            start = interval_start_minute(now_minute, cfg.interval_minutes, cfg.timezone)
        else:
            start = now_minute - cfg.interval_minutes + 1
        current = {m: kw for m, kw in minutes_kw.items() if start <= m < now_minute}
        return self._ledger.add_stored(current, start)

    def seed_peak(self, intervals: Sequence[ClosedInterval]) -> bool:
        """Count intervals measured from stored (imported) minutes toward the period peak."""
        return self._ledger.seed_peak(intervals)

    def close_due(self, now: datetime) -> list[ClosedInterval]:
        """Close a fixed interval that has ended without its last minute (meter gap)."""
        return self._ledger.close_due(now)

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(
        self,
        now: datetime,
        forecast: Forecast | None,
        inputs: OptionalInputs,
        battery_setpoint_kw: float | None = None,
    ) -> DemandSnapshot:
        """Status of the interval containing ``now``, next-hour outlook, and the decisions, with
        the battery's present power held (``decide(project(...))`` without a battery response).

        ``battery_setpoint_kw``: the battery power the dispatch plan asks for now; a base-load
        forecast adds it back when no ``battery_power_kw`` measurement is fresh.

        Updates the hysteresis state (latches, chiller limit), so call it at most a few times a
        minute; calls within one minute cannot flip a latch twice.
        """
        return self.decide(self.project(now, forecast, inputs, battery_setpoint_kw))

    def project(
        self,
        now: datetime,
        forecast: Forecast | None,
        inputs: OptionalInputs,
        battery_setpoint_kw: float | None = None,
    ) -> DemandOutlook:
        """The one projection of the interval in progress, for the building alone (the battery
        stopped for the remaining minutes). Changes nothing; ``decide`` finishes it."""
        cfg = self._config
        length = cfg.interval_minutes
        now_minute = minute_of(now)
        notes: list[str] = []

        period = billing_period(now, cfg.timezone, cfg.billing_cycle_day)
        self._ledger.roll_period(period.start_minute)
        in_period = self._ledger.period_start_minute == period.start_minute
        peak_kw = self._ledger.peak_kw if in_period else None
        peak_start = self._ledger.peak_start_minute if in_period else None

        max_age_s = cfg.input_max_age_s
        soc = fresh_value(
            inputs.battery_soc_pct, "battery_soc_pct", now, notes, cfg.has_battery, max_age_s
        )
        battery_kw = fresh_value(
            inputs.battery_power_kw, "battery_power_kw", now, notes, cfg.has_battery, max_age_s
        )
        ev_kw = fresh_value(
            inputs.ev_charging_power_kw, "ev_charging_power_kw", now, notes, cfg.has_ev, max_age_s
        )
        pv_kw = fresh_value(inputs.pv_power_kw, "pv_power_kw", now, notes, False, max_age_s)

        held_kw = self._held_kw(now_minute)
        if held_kw is None:
            notes.append("no recent meter minute: no held-load fallback")
        usable = usable_forecast(cfg, forecast, now_minute, notes)

        target = self._target_kw
        effective = target
        if cfg.ratchet_to_period_peak and peak_kw is not None:
            # Billed demand is never below zero: a period whose intervals so far all exported
            # (PV over the load) ratchets to 0, so load that still exports is never shed.
            ratchet = max(peak_kw, 0.0)
            effective = ratchet if effective is None else max(effective, ratchet)
        if effective is None:
            notes.append("no demand target and no period peak yet: no shedding decisions")

        if cfg.window is WindowMode.FIXED:
            win_start = interval_start_minute(now_minute, length, cfg.timezone)
        else:
            win_start = now_minute - length + 1
        outlook = DemandOutlook(
            at=now,
            minute=now_minute,
            period=period,
            period_peak_kw=peak_kw,
            period_peak_start_minute=peak_start,
            target_kw=target,
            effective_target_kw=effective,
            window_start_minute=win_start,
            held_kw=held_kw,
            battery_now_kw=battery_power_in_force(battery_kw, battery_setpoint_kw),
            soc_pct=soc,
            battery_kw=battery_kw,
            ev_kw=ev_kw,
            pv_kw=pv_kw,
            forecast=usable,
            building=None,
            rest_building_kw=None,
            notes=tuple(notes),
        )
        # The building alone: the battery at 0 kW from now on (its own notes are decide's).
        building, _, _ = self._interval(outlook, 0.0, [])
        rest: float | None = None
        elapsed_sum = elapsed_kw_minutes(self._ledger.minutes_kw, win_start, now_minute, held_kw)
        remaining = building.remaining_minutes
        if building.projected_kw is not None and elapsed_sum is not None and remaining > 0:
            rest = (building.projected_kw * length - elapsed_sum) / remaining
        return replace(outlook, building=building, rest_building_kw=rest)

    def decide(
        self, outlook: DemandOutlook, battery_rest_kw: float | None = None
    ) -> DemandSnapshot:
        """Finish ``project``'s outlook: the battery's response on the remaining minutes, then
        the next-hour outlook and the decisions, all on that one projection.

        ``battery_rest_kw``: the battery power (+ charging) the dispatch controller holds from
        now to the end of the interval, decided on ``outlook.rest_building_kw``; None: the
        battery's present power held (no controller: a BAS-driven battery, or none). Updates the
        hysteresis state (latches, chiller limit).
        """
        cfg = self._config
        notes = list(outlook.notes)
        now_minute = outlook.minute
        effective = outlook.effective_target_kw
        usable = outlook.forecast
        interval, step, measured = self._interval(outlook, battery_rest_kw, notes)
        building = outlook.building
        interval = replace(
            interval, without_battery_kw=None if building is None else building.projected_kw
        )

        windows = next_hour_windows(
            cfg,
            self._ledger.minutes_kw,
            outlook.window_start_minute,
            now_minute,
            usable,
            step,
            outlook.held_kw,
            effective,
            measured,
        )
        if not windows and usable is not None:
            notes.append("forecast does not cover a whole demand window: no next-hour outlook")
        has_band = usable is not None and band_ok(usable)
        if usable is not None and not has_band:
            notes.append("forecast has no P10/P90 band: no exceedance probability")
        p_interval: float | None = None
        p_hour: float | None = None
        if has_band and effective is not None and windows:
            probs = [
                probability_of_exceedance(w.mean_kw, w.sigma_kw or 0.0, effective) for w in windows
            ]
            # With perfectly correlated errors one standard normal drives every window, so the
            # chance that any window exceeds equals the largest single-window chance.
            p_hour = max(probs)
            if windows[0].start_minute == outlook.window_start_minute:
                p_interval = probs[0]
        peak_window = max(windows, key=lambda w: w.mean_kw) if windows else None

        # The battery's charging the permits see: its response when the controller gave one.
        permit_battery_kw = outlook.battery_kw if battery_rest_kw is None else battery_rest_kw
        decisions = decide(
            cfg,
            self._latches,
            self._chiller,
            now_minute,
            interval,
            effective,
            windows,
            usable is not None,
            outlook.soc_pct,
            permit_battery_kw,
            outlook.ev_kw,
            notes,
        )

        held_kw, battery_kw, ev_kw, pv_kw = (
            outlook.held_kw,
            outlook.battery_kw,
            outlook.ev_kw,
            outlook.pv_kw,
        )
        gross: float | None = None
        if (
            pv_kw is not None
            and held_kw is not None
            and (battery_kw is not None or not cfg.has_battery)
            and (ev_kw is not None or not cfg.has_ev)
        ):
            gross = gross_load_kw(held_kw, pv_kw, battery_kw or 0.0, ev_kw or 0.0)

        return DemandSnapshot(
            at=outlook.at,
            minute=now_minute,
            interval=interval,
            period=outlook.period,
            period_peak_kw=outlook.period_peak_kw,
            period_peak_start_minute=outlook.period_peak_start_minute,
            target_kw=outlook.target_kw,
            effective_target_kw=effective,
            next_hour_peak_kw=None if peak_window is None else peak_window.mean_kw,
            next_hour_peak_start_minute=None if peak_window is None else peak_window.start_minute,
            p_exceed_interval=p_interval,
            p_exceed_next_hour=p_hour,
            gross_load_kw=gross,
            decisions=decisions,
            notes=tuple(notes),
        )

    def _interval(
        self, outlook: DemandOutlook, battery_rest_kw: float | None, notes: list[str]
    ) -> tuple[IntervalStatus, Callable[[int], Step | None], float | None]:
        """The interval in progress with the battery at ``battery_rest_kw`` on the remaining
        minutes (None: its present power), the forecast minutes' function and the measured
        level the rest counts at least."""
        cfg = self._config
        now_kw = outlook.battery_now_kw
        rest_kw = now_kw if battery_rest_kw is None else battery_rest_kw
        offset = forecast_offset_kw(cfg, outlook.forecast, now_kw, rest_kw, outlook.ev_kw, notes)
        step = step_function(outlook.forecast, offset)
        held = outlook.held_kw
        # The latest metered minute with the battery's power in it replaced by its power from now.
        measured = None if held is None else held - (now_kw or 0.0) + (rest_kw or 0.0)
        status = interval_status(
            cfg,
            self._ledger.minutes_kw,
            outlook.window_start_minute,
            outlook.minute,
            held,
            step,
            outlook.effective_target_kw,
            notes,
            measured_kw=measured,
            battery_kw=rest_kw,
        )
        return status, step, measured

    def _held_kw(self, now_minute: int) -> float | None:
        if self._ledger.last_minute is None or self._ledger.last_kw is None:
            return None
        if now_minute - self._ledger.last_minute - 1 > self._config.meter_max_age_minutes:
            return None
        return self._ledger.last_kw

    # -- persistence ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state: enough to resume after a restart."""
        cfg = self._config
        return {
            "version": STATE_VERSION,
            "timezone": cfg.timezone.key,
            "interval_minutes": cfg.interval_minutes,
            "window": cfg.window.value,
            "billing_cycle_day": cfg.billing_cycle_day,
            "target_kw": self._target_kw,
            "target_from_operator": self._target_from_operator,
            "minutes_kw": [[m, kw] for m, kw in sorted(self._ledger.minutes_kw.items())],
            "open_start_minute": self._ledger.open_start,
            "last_minute": self._ledger.last_minute,
            "last_kw": self._ledger.last_kw,
            "period_start_minute": self._ledger.period_start_minute,
            "peak_kw": self._ledger.peak_kw,
            "peak_start_minute": self._ledger.peak_start_minute,
            "latches": {
                name: {"on": latch.on, "since_minute": latch.since_minute}
                for name, latch in self._latches.items()
            },
            "chiller_pct": self._chiller.pct,
            "chiller_changed_minute": self._chiller.changed_minute,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: DemandConfig) -> DemandTracker:
        """Resume from ``to_state``; raise ValueError for an unknown version or malformed state.

        A config-set target follows ``config`` (an operator-set one survives). When the interval
        length, window mode, time zone or cycle day changed, the partial interval and the period
        peak are dropped (they were measured differently); the latches are kept.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported demand state version {state.get('version')!r}")
        tracker = cls(config)
        try:
            if state["target_from_operator"]:
                tracker._target_kw = _opt_float(state["target_kw"])
                tracker._target_from_operator = True
            same_grid = (
                state["timezone"] == config.timezone.key
                and state["interval_minutes"] == config.interval_minutes
                and state["window"] == config.window.value
                and state["billing_cycle_day"] == config.billing_cycle_day
            )
            tracker._ledger.last_minute = _opt_int(state["last_minute"])
            tracker._ledger.last_kw = _opt_float(state["last_kw"])
            if same_grid:
                tracker._ledger.minutes_kw = {int(m): float(kw) for m, kw in state["minutes_kw"]}
                tracker._ledger.open_start = _opt_int(state["open_start_minute"])
                tracker._ledger.period_start_minute = _opt_int(state["period_start_minute"])
                tracker._ledger.peak_kw = _opt_float(state["peak_kw"])
                tracker._ledger.peak_start_minute = _opt_int(state["peak_start_minute"])
            for name in LATCHES:
                saved = state["latches"][name]
                tracker._latches[name] = Latch(bool(saved["on"]), _opt_int(saved["since_minute"]))
            tracker._chiller.pct = float(state["chiller_pct"])
            tracker._chiller.changed_minute = _opt_int(state["chiller_changed_minute"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed demand state: {exc!r}") from exc
        return tracker


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
