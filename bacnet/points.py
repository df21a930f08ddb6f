"""The point table: every BACnet point described once.

Both the device builder and the point-list exports read this table. It imports no bacpypes3, so the
REST face can list points without loading the BACnet stack. Names, types and instances of the seed's
seven points are a contract with field technicians: never rename or renumber them; bump
``DATABASE_REVISION`` whenever the list changes (a unit test checks this).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from core.config import Settings
from core.demand import DemandSnapshot
from core.dispatch.controller import DispatchDecision
from core.snapshot import Quality, Snapshot
from core.validation import INPUT_RANGES, OUTDOOR_AIR_RANGES

# Bumped whenever the point list (names, types, instances, units) changes.
DATABASE_REVISION = 4
# When the point list last changed (UTC): the EDE TIMESTAMP_OF_LAST_CHANGE. Update it together
# with DATABASE_REVISION. 4: the Calendar objects (bacnet/calendar_table.py) after the points.
POINT_LIST_CHANGED = datetime(2026, 12, 6, 3, 0, 0, tzinfo=UTC)
SENTINEL_KW = -1.0
# The device's one network-port object (not a point: no value, not in POINTS).
NETWORK_PORT_INSTANCE = 1
NETWORK_PORT_NAME = "NetworkPort-1"


class ObjectType(StrEnum):
    """BACnet object types used by the device (bacpypes3 spelling)."""

    ANALOG_VALUE = "analog-value"
    BINARY_VALUE = "binary-value"


class Reliability(StrEnum):
    """BACnet reliability values the device reports (bacpypes3 spelling)."""

    NO_FAULT_DETECTED = "no-fault-detected"
    NO_SENSOR = "no-sensor"
    COMMUNICATION_FAILURE = "communication-failure"
    UNRELIABLE_OTHER = "unreliable-other"


RELIABILITY_OF_QUALITY: dict[Quality, Reliability] = {
    Quality.OK: Reliability.NO_FAULT_DETECTED,
    Quality.NO_DATA: Reliability.NO_SENSOR,
    Quality.STALE_INPUT: Reliability.COMMUNICATION_FAILURE,
    Quality.INSUFFICIENT_HISTORY: Reliability.UNRELIABLE_OTHER,
    Quality.STORAGE_FAULT: Reliability.UNRELIABLE_OTHER,
    Quality.DEGRADED: Reliability.UNRELIABLE_OTHER,
}

PointValue = float | bool


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One BACnet point: identity, engineering metadata and where its value comes from."""

    name: str
    object_type: ObjectType
    instance: int
    description: str
    units: str | None  # bacpypes3 EngineeringUnits name, None for binaries
    cov_increment: float | None
    writable: bool
    default: PointValue
    value_of: Callable[[Snapshot], PointValue | None]
    quality_of: Callable[[Snapshot], Quality]
    min_value: float | None = None
    max_value: float | None = None
    state_text: tuple[str, str] | None = None  # (inactive, active)
    names_forecaster: bool = False
    # For writable points: what the core calls the value (readings, target, optional inputs).
    input_key: str | None = None

    @property
    def object_identifier(self) -> str:
        """e.g. ``analog-value,1``."""
        return f"{self.object_type.value},{self.instance}"

    def present_value(self, snapshot: Snapshot) -> PointValue:
        """The value both faces publish: the snapshot's, or the sentinel until one exists."""
        value = self.value_of(snapshot)
        return self.default if value is None else value

    def units_for(self, settings: Settings) -> str | None:
        """The engineering units, where a setting chooses them (outdoor air: F or C)."""
        if self.input_key == "outdoor_air_temp":
            return settings.outdoor_air_units
        return self.units

    def quality(self, snapshot: Snapshot) -> Quality:
        """The point's quality; a writable point is faulted while its writes are refused."""
        if self.writable and snapshot.storage_fault is not None:
            return Quality.STORAGE_FAULT
        return self.quality_of(snapshot)

    def reliability(self, snapshot: Snapshot) -> Reliability:
        """BACnet reliability for the snapshot's quality of this point."""
        return RELIABILITY_OF_QUALITY[self.quality(snapshot)]

    def describe(self, snapshot: Snapshot, settings: Settings) -> str:
        """The description with settings filled in and, for model outputs, the forecaster named."""
        text = self.description.format(
            high_percentile=settings.high_percentile,
            low_percentile=settings.low_percentile,
            window_days=settings.percentile_window_days,
        )
        if self.names_forecaster:
            text = f"{text} (forecaster: {snapshot.model.forecaster})"
        return text


def _forecast_kw(snapshot: Snapshot) -> float | None:
    return snapshot.one_hour_kw


POINTS: tuple[PointSpec, ...] = (
    PointSpec(
        name="input-power-meter",
        object_type=ObjectType.ANALOG_VALUE,
        instance=1,
        description="Building electric power written by the BAS (kW); commandable",
        units="kilowatts",
        cov_increment=0.1,
        writable=True,
        default=0.0,
        value_of=lambda s: s.input_kw,
        quality_of=lambda s: s.input_quality,
        input_key="kw",
    ),
    PointSpec(
        name="one-hour-future-power",
        object_type=ObjectType.ANALOG_VALUE,
        instance=2,
        description="Forecast building power 60 minutes ahead (kW)",
        units="kilowatts",
        cov_increment=0.1,
        writable=False,
        default=SENTINEL_KW,
        value_of=_forecast_kw,
        quality_of=lambda s: s.forecast_quality,
        names_forecaster=True,
    ),
    PointSpec(
        name="power-rate-of-change",
        object_type=ObjectType.ANALOG_VALUE,
        instance=3,
        description="Rate of change of building power in kW per minute over the last minute",
        units="kilowatts",
        cov_increment=0.05,
        writable=False,
        default=SENTINEL_KW,
        value_of=lambda s: s.rate_of_change_kw_per_min,
        quality_of=lambda s: s.rate_quality,
    ),
    PointSpec(
        name="model-rsme",
        object_type=ObjectType.ANALOG_VALUE,
        instance=4,
        description="RMSE of the 60-minute-ahead forecast (kW)",
        units="kilowatts",
        cov_increment=0.01,
        writable=False,
        default=SENTINEL_KW,
        value_of=lambda s: s.model.rmse_kw,
        quality_of=lambda s: s.model_rmse_quality,
        names_forecaster=True,
    ),
    PointSpec(
        name="model-training-time",
        object_type=ObjectType.ANALOG_VALUE,
        instance=5,
        description="Wall time of the last model training (minutes)",
        units="minutes",
        cov_increment=0.1,
        writable=False,
        default=SENTINEL_KW,
        value_of=lambda s: s.model.training_minutes,
        quality_of=lambda s: s.training_quality,
    ),
    PointSpec(
        name="high-load-conditions",
        object_type=ObjectType.BINARY_VALUE,
        instance=1,
        description="Active when the last minute is above the {high_percentile:g}th percentile "
        "of the last {window_days:g} days",
        units=None,
        cov_increment=None,
        writable=False,
        default=False,
        value_of=lambda s: s.high_load,
        quality_of=lambda s: s.load_quality,
        state_text=("normal", "high load"),
    ),
    PointSpec(
        name="low-load-conditions",
        object_type=ObjectType.BINARY_VALUE,
        instance=2,
        description="Active when the last minute is below the {low_percentile:g}th percentile "
        "of the last {window_days:g} days",
        units=None,
        cov_increment=None,
        writable=False,
        default=False,
        value_of=lambda s: s.low_load,
        quality_of=lambda s: s.load_quality,
        state_text=("normal", "low load"),
    ),
)


def _demand(
    value: Callable[[DemandSnapshot], float | bool | None],
) -> tuple[Callable[[Snapshot], PointValue | None], Callable[[Snapshot], Quality]]:
    """value_of / quality_of for a demand output: no value until the tracker has one."""

    def value_of(snapshot: Snapshot) -> PointValue | None:
        return None if snapshot.demand is None else value(snapshot.demand)

    def quality_of(snapshot: Snapshot) -> Quality:
        if snapshot.input_quality != Quality.OK:
            return snapshot.input_quality
        return Quality.OK if value_of(snapshot) is not None else Quality.NO_DATA

    return value_of, quality_of


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * fraction


def _input(
    name: str,
) -> tuple[Callable[[Snapshot], PointValue | None], Callable[[Snapshot], Quality]]:
    return (lambda s: s.optional_input(name)), (lambda s: s.optional_input_quality(name))


def _analog_output(
    name: str,
    instance: int,
    description: str,
    value: Callable[[DemandSnapshot], float | None],
    units: str = "kilowatts",
    default: float = SENTINEL_KW,
    cov_increment: float = 0.1,
) -> PointSpec:
    value_of, quality_of = _demand(value)
    return PointSpec(
        name=name,
        object_type=ObjectType.ANALOG_VALUE,
        instance=instance,
        description=description,
        units=units,
        cov_increment=cov_increment,
        writable=False,
        default=default,
        value_of=value_of,
        quality_of=quality_of,
    )


def _binary_output(
    name: str,
    instance: int,
    description: str,
    value: Callable[[DemandSnapshot], bool],
    state_text: tuple[str, str],
    from_plan: Callable[[DispatchDecision], bool] | None = None,
) -> PointSpec:
    demand_value_of, quality_of = _demand(value)

    def value_of(snapshot: Snapshot) -> PointValue | None:
        # With a battery planned, the permits follow the plan so they never contradict it.
        if from_plan is not None and snapshot.dispatch is not None:
            return from_plan(snapshot.dispatch)
        return demand_value_of(snapshot)

    return PointSpec(
        name=name,
        object_type=ObjectType.BINARY_VALUE,
        instance=instance,
        description=description,
        units=None,
        cov_increment=None,
        writable=False,
        default=False,
        value_of=value_of,
        quality_of=quality_of,
        state_text=state_text,
    )


def _analog_input(
    name: str, instance: int, description: str, key: str, units: str, default: float = 0.0
) -> PointSpec:
    value_of, quality_of = _input(key)
    return PointSpec(
        name=name,
        object_type=ObjectType.ANALOG_VALUE,
        instance=instance,
        description=description,
        units=units,
        cov_increment=0.1,
        writable=True,
        default=default,
        value_of=value_of,
        quality_of=quality_of,
        input_key=key,
    )


# Demand-charge management points: after the seed's seven, never renumbered.
DEMAND_POINTS: tuple[PointSpec, ...] = (
    PointSpec(
        name="demand-target",
        object_type=ObjectType.ANALOG_VALUE,
        instance=6,
        description="Demand target (kW, interval average); commandable",
        units="kilowatts",
        cov_increment=0.1,
        writable=True,
        default=SENTINEL_KW,
        value_of=lambda s: s.demand_target_kw,
        quality_of=lambda s: Quality.OK if s.demand_target_kw is not None else Quality.NO_DATA,
        input_key="demand_target_kw",
    ),
    _analog_input(
        "pv-power", 7, "Solar PV output (kW), written by the BAS", "pv_power_kw", "kilowatts"
    ),
    _analog_input(
        "battery-soc",
        8,
        "Battery state of charge (%), written by the BAS",
        "battery_soc_pct",
        "percent",
    ),
    _analog_input(
        "battery-power",
        9,
        "Battery power (kW): + charging, - discharging",
        "battery_power_kw",
        "kilowatts",
    ),
    _analog_input(
        "ev-charging-power",
        10,
        "EV charging power (kW), written by the BAS",
        "ev_charging_power_kw",
        "kilowatts",
    ),
    _analog_output(
        "interval-average-demand",
        11,
        "Average kW of the demand interval so far",
        lambda d: d.interval.average_so_far_kw,
    ),
    _analog_output(
        "interval-projected-demand",
        12,
        "Projected average kW at the end of the demand interval",
        lambda d: d.interval.projected_kw,
    ),
    _analog_output(
        "interval-allowance",
        13,
        "kW the building may average for the rest of the interval to stay at target",
        lambda d: d.interval.allowance_kw,
    ),
    _analog_output(
        "billing-period-peak",
        14,
        "Highest interval demand this billing period (kW)",
        lambda d: d.period_peak_kw,
    ),
    _analog_output(
        "effective-demand-target",
        15,
        "Target in force: max(target, period peak) when ratcheting (kW)",
        lambda d: d.effective_target_kw,
    ),
    _analog_output(
        "kw-to-shed",
        16,
        "kW the projection exceeds the effective target by",
        lambda d: d.decisions.kw_to_shed,
        default=0.0,
    ),
    _analog_output(
        "chiller-capacity-limit",
        17,
        "Recommended chiller capacity limit (%)",
        lambda d: d.decisions.chiller_capacity_limit_pct,
        units="percent",
        default=100.0,
        cov_increment=1.0,
    ),
    _analog_output(
        "exceed-probability-interval",
        18,
        "Probability the current interval exceeds the effective target (%)",
        lambda d: _percent(d.p_exceed_interval),
        units="percent",
        cov_increment=1.0,
    ),
    _analog_output(
        "exceed-probability-next-hour",
        19,
        "Probability an interval in the next hour exceeds the effective target (%)",
        lambda d: _percent(d.p_exceed_next_hour),
        units="percent",
        cov_increment=1.0,
    ),
    _binary_output(
        "battery-charge-permit",
        3,
        "Battery charging allowed within the target",
        lambda d: d.decisions.battery_charge_permit,
        ("not permitted", "permitted"),
        from_plan=lambda plan: plan.setpoint_kw > 0,
    ),
    _binary_output(
        "ev-charge-permit",
        4,
        "EV charging allowed within the target",
        lambda d: d.decisions.ev_charge_permit,
        ("not permitted", "permitted"),
        from_plan=lambda plan: plan.ev_limit_kw is not None and plan.ev_limit_kw > 0,
    ),
    _binary_output(
        "battery-discharge-request",
        5,
        "Discharge the battery: the projection exceeds the target",
        lambda d: d.decisions.battery_discharge_request,
        ("no request", "discharge"),
        from_plan=lambda plan: plan.setpoint_kw < 0,
    ),
)


def _plan_output(
    name: str,
    instance: int,
    description: str,
    value: Callable[[DispatchDecision], float | None],
) -> PointSpec:
    """A dispatch output: no-sensor without a battery plan, unreliable on the fallback rule."""

    def value_of(snapshot: Snapshot) -> PointValue | None:
        return None if snapshot.dispatch is None else value(snapshot.dispatch)

    def quality_of(snapshot: Snapshot) -> Quality:
        if snapshot.input_quality != Quality.OK:
            return snapshot.input_quality
        if snapshot.dispatch is None or value_of(snapshot) is None:
            return Quality.NO_DATA
        return Quality.OK if snapshot.dispatch.reliable else Quality.DEGRADED

    return PointSpec(
        name=name,
        object_type=ObjectType.ANALOG_VALUE,
        instance=instance,
        description=description,
        units="kilowatts",
        cov_increment=0.1,
        writable=False,
        default=0.0,
        value_of=value_of,
        quality_of=quality_of,
    )


# Dispatch (battery and EV) and outdoor air: after the demand points, never renumbered.
DISPATCH_POINTS: tuple[PointSpec, ...] = (
    _plan_output(
        "battery-power-setpoint",
        20,
        "Battery power to command (kW): + charge, - discharge; from the dispatch plan",
        lambda plan: plan.setpoint_kw,
    ),
    _plan_output(
        "ev-charge-power-limit",
        21,
        "Most the EV chargers may draw now (kW), so charging sets no new peak",
        lambda plan: plan.ev_limit_kw,
    ),
    _plan_output(
        "planned-billing-peak",
        22,
        "Billing-period peak the dispatch plan holds (kW, interval average)",
        lambda plan: plan.planned_peak_kw,
    ),
    _analog_input(
        "outdoor-air-temperature",
        23,
        "Outdoor air temperature, written by the BAS (units: --outdoor-air-units)",
        "outdoor_air_temp",
        "degrees-fahrenheit",
    ),
)

POINTS = POINTS + DEMAND_POINTS + DISPATCH_POINTS
POINTS_BY_NAME: dict[str, PointSpec] = {point.name: point for point in POINTS}
INPUT_POWER_METER = POINTS_BY_NAME["input-power-meter"]


def present_value_limits(point: PointSpec, settings: Settings) -> tuple[float, float] | None:
    """The range the core enforces on a writable point (min/max-pres-value, EDE), else None."""
    if point.input_key is None:
        return None
    if point.input_key == "kw":
        return (settings.min_kw, settings.max_kw)
    if point.input_key == "demand_target_kw":
        return (0.0, settings.max_kw)  # above 0: the smallest accepted value is just over it
    if point.input_key == "outdoor_air_temp":
        return OUTDOOR_AIR_RANGES[settings.outdoor_air_units]
    _unit, low, high = INPUT_RANGES[point.input_key]
    return (
        -settings.max_kw if low is None else low,
        settings.max_kw if high is None else high,
    )
