"""Load decisions: kW to shed, the chiller limit, the charge permits and the discharge request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.demand.config import DemandConfig, ProjectionMethod, Quality
from core.demand.projection import IntervalStatus, Window

LATCHES = ("battery_discharge_request", "battery_charge_permit", "ev_charge_permit")


@dataclass(frozen=True, slots=True)
class DemandDecisions:
    """Recommendations for the building, each with its quality (keyed by field name).

    * ``kw_to_shed``: max(0, projected interval average - effective target), in interval-average
      kW, on the projection after the battery's response with any charging on the remaining
      minutes stopped (``shed_projection_kw``): the building is never asked to shed what the
      battery removes itself, by discharging or by stopping its charge. Keeping the interval at
      target needs the load lower by kw_to_shed * L / remaining over the remaining minutes.
    * ``chiller_capacity_limit_pct``: 100 while nothing needs shedding. While kw_to_shed > 0 it
      steps down by 100 * kw_to_shed / chiller_rated_kw (at most ``chiller_max_step_down_pct``,
      never below ``chiller_min_pct``); when the projection is at least ``deadband_kw`` under
      the target (or the projection is unavailable) it steps up by ``chiller_step_up_pct``;
      otherwise it holds. At most one step per ``chiller_hold_minutes``.
    * ``charge_headroom_kw``: over every demand window that ends within the next hour and the
      forecast horizon (the current one included), the kW that could be added to each of the
      window's future minutes with its average still at the effective target:
      (target * L - known kW·min - sum of future P90 (point forecast without a band)) / future
      minutes; the smallest of them. None without a usable forecast.
    * ``ev_charge_permit``: granted when headroom - (ev_charge_kw - present EV power) >=
      ``deadband_kw``, withdrawn when it is < 0 (present power unknown: taken as 0).
    * ``battery_charge_permit``: the same with ``battery_charge_kw`` and the present charging
      power, on the headroom left after a granted EV permit's extra power (EV first); never
      together with a discharge request.
    * ``battery_discharge_request``: requested when the projection with the battery stopped
      (``IntervalStatus.without_battery_kw``) exceeds the effective target and SOC >
      ``battery_reserve_pct``; withdrawn when that projection is below target - ``deadband_kw``;
      dropped at once (ignoring the minimum on time) when SOC reaches the reserve or is unknown.

    The three booleans keep ``min_on_minutes`` / ``min_off_minutes`` between changes.
    """

    kw_to_shed: float
    chiller_capacity_limit_pct: float
    battery_charge_permit: bool
    ev_charge_permit: bool
    battery_discharge_request: bool
    charge_headroom_kw: float | None
    quality: Mapping[str, Quality]


@dataclass(slots=True)
class Latch:
    """A boolean with minimum on and off times (anti short-cycling)."""

    on: bool = False
    since_minute: int | None = None  # when it last changed; None: may change at once

    def update(self, minute: int, turn_on: bool, turn_off: bool, min_on: int, min_off: int) -> bool:
        held = None if self.since_minute is None else minute - self.since_minute
        if self.on and turn_off and (held is None or held >= min_on):
            self.on, self.since_minute = False, minute
        elif not self.on and turn_on and not turn_off and (held is None or held >= min_off):
            self.on, self.since_minute = True, minute
        return self.on

    def force_off(self, minute: int) -> None:
        if self.on:
            self.on, self.since_minute = False, minute


@dataclass(slots=True)
class ChillerLimit:
    """The chiller capacity limit (%) and when it last changed (integrating, with a hold time)."""

    pct: float = 100.0
    changed_minute: int | None = None

    def step(
        self,
        config: DemandConfig,
        now_minute: int,
        projected_kw: float | None,
        effective_kw: float | None,
        shed_kw: float,
    ) -> float:
        """Step the chiller limit down by shed/rated, or up in steps, at most once per hold time.

        Integrating rather than proportional-from-100: the measured shed is what remains with the
        present limit already in force. The hold time lets the chiller respond before the next
        step (anti wind-up); inside the deadband the limit is held.
        """
        cfg = config
        if cfg.chiller_rated_kw is None:
            return 100.0
        pct = self.pct
        may_change = (
            self.changed_minute is None
            or now_minute - self.changed_minute >= cfg.chiller_hold_minutes
        )
        blind = projected_kw is None or effective_kw is None
        new_pct = pct
        if may_change and not blind and shed_kw > 0.0 and pct > cfg.chiller_min_pct:
            step_pct = min(100.0 * shed_kw / cfg.chiller_rated_kw, cfg.chiller_max_step_down_pct)
            new_pct = max(cfg.chiller_min_pct, pct - step_pct)
        elif (
            may_change
            and pct < 100.0
            and (
                blind
                or (
                    projected_kw is not None
                    and effective_kw is not None
                    and projected_kw <= effective_kw - cfg.deadband_kw
                )
            )
        ):
            # Without data, fall back toward normal operation rather than hold a curtailment.
            new_pct = min(100.0, pct + cfg.chiller_step_up_pct)
        if new_pct != pct:
            self.pct, self.changed_minute = new_pct, now_minute
        return self.pct


def shed_projection_kw(interval: IntervalStatus) -> float | None:
    """The projected interval average with the battery's charging on the remaining minutes
    stopped (its discharge kept): what ``kw_to_shed`` compares with the target."""
    if interval.projected_kw is None:
        return None
    charging_kw = max(0.0, interval.battery_kw or 0.0)
    share = interval.remaining_minutes / interval.length_minutes
    return interval.projected_kw - charging_kw * share


def decide(
    config: DemandConfig,
    latches: Mapping[str, Latch],
    chiller: ChillerLimit,
    now_minute: int,
    interval: IntervalStatus,
    effective_kw: float | None,
    windows: list[Window],
    have_forecast: bool,
    soc_pct: float | None,
    battery_kw: float | None,
    ev_kw: float | None,
    notes: list[str],
) -> DemandDecisions:
    """Decide shedding, the chiller limit, the permits and the discharge request (hysteresis)."""
    cfg = config
    quality: dict[str, Quality] = {}
    projected = shed_projection_kw(interval)
    base_quality = (
        Quality.GOOD if interval.projection is ProjectionMethod.FORECAST else Quality.DEGRADED
    )

    # kW to shed: interval-average kW above the effective target.
    if projected is None or effective_kw is None:
        kw_to_shed = 0.0
        quality["kw_to_shed"] = Quality.UNAVAILABLE
    else:
        kw_to_shed = max(0.0, projected - effective_kw)
        quality["kw_to_shed"] = base_quality

    chiller_pct = chiller.step(cfg, now_minute, projected, effective_kw, kw_to_shed)
    if cfg.chiller_rated_kw is None:
        quality["chiller_capacity_limit_pct"] = Quality.UNAVAILABLE
    else:
        quality["chiller_capacity_limit_pct"] = quality["kw_to_shed"]

    # Battery discharge request.
    discharge = latches["battery_discharge_request"]
    if not cfg.has_battery:
        discharge.force_off(now_minute)
        quality["battery_discharge_request"] = Quality.UNAVAILABLE
    elif soc_pct is None:
        # The reserve cannot be checked: stop now, like at the reserve.
        discharge.force_off(now_minute)
        quality["battery_discharge_request"] = Quality.UNAVAILABLE
        notes.append("battery SOC unknown: no discharge request")
    elif projected is None or effective_kw is None:
        discharge.update(now_minute, False, True, cfg.min_on_minutes, cfg.min_off_minutes)
        quality["battery_discharge_request"] = Quality.UNAVAILABLE
    elif soc_pct <= cfg.battery_reserve_pct:
        # Protecting the reserve overrides the minimum on time.
        discharge.force_off(now_minute)
        quality["battery_discharge_request"] = base_quality
    else:
        # Is the battery needed: would the interval end over target with it stopped now (its
        # discharge put back, its charging taken out)?
        if_stopped_kw = interval.without_battery_kw
        if if_stopped_kw is None:
            if_stopped_kw = projected
        discharge.update(
            now_minute,
            turn_on=if_stopped_kw > effective_kw,
            turn_off=if_stopped_kw < effective_kw - cfg.deadband_kw,
            min_on=cfg.min_on_minutes,
            min_off=cfg.min_off_minutes,
        )
        quality["battery_discharge_request"] = base_quality

    # Charge permits: the smallest headroom over the demand windows of the next hour.
    headrooms = [w.headroom_kw for w in windows if w.headroom_kw is not None]
    headroom = min(headrooms) if headrooms else None
    ev_on = decide_permit(
        cfg,
        latches,
        "ev_charge_permit",
        cfg.has_ev,
        headroom,
        have_forecast,
        cfg.ev_charge_kw,
        ev_kw,
        now_minute,
        quality,
        notes,
    )
    ev_added_kw = max(0.0, cfg.ev_charge_kw - (ev_kw or 0.0)) if ev_on else 0.0
    battery_headroom = None if headroom is None else headroom - ev_added_kw
    battery_on = decide_permit(
        cfg,
        latches,
        "battery_charge_permit",
        cfg.has_battery,
        battery_headroom,
        have_forecast,
        cfg.battery_charge_kw,
        max(0.0, battery_kw) if battery_kw is not None else None,
        now_minute,
        quality,
        notes,
    )
    if battery_on and discharge.on:
        latches["battery_charge_permit"].force_off(now_minute)
        battery_on = False

    return DemandDecisions(
        kw_to_shed=kw_to_shed,
        chiller_capacity_limit_pct=chiller_pct,
        battery_charge_permit=battery_on,
        ev_charge_permit=ev_on,
        battery_discharge_request=discharge.on,
        charge_headroom_kw=headroom,
        quality=quality,
    )


def decide_permit(
    config: DemandConfig,
    latches: Mapping[str, Latch],
    name: str,
    equipped: bool,
    headroom_kw: float | None,
    have_forecast: bool,
    charge_kw: float,
    observed_kw: float | None,
    now_minute: int,
    quality: dict[str, Quality],
    notes: list[str],
) -> bool:
    """Permit while the headroom covers the extra charging power (deadband to grant)."""
    cfg = config
    latch = latches[name]
    if not equipped:
        latch.force_off(now_minute)
        quality[name] = Quality.UNAVAILABLE
        return False
    if headroom_kw is None:
        latch.update(now_minute, False, True, cfg.min_on_minutes, cfg.min_off_minutes)
        quality[name] = Quality.UNAVAILABLE
        if not have_forecast:
            notes.append(f"{name}: withheld without a usable forecast")
        return latch.on
    quality[name] = Quality.GOOD
    if observed_kw is None:
        # Unknown present charging: assume none is in the forecast yet, add it all.
        quality[name] = Quality.DEGRADED
        notes.append(f"{name}: present charging power unknown, assumed 0 kW")
    added_kw = max(0.0, charge_kw - (observed_kw or 0.0))
    margin_kw = headroom_kw - added_kw
    return latch.update(
        now_minute,
        turn_on=margin_kw >= cfg.deadband_kw,
        turn_off=margin_kw < 0.0,
        min_on=cfg.min_on_minutes,
        min_off=cfg.min_off_minutes,
    )
