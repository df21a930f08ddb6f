"""Input checks shared by every face: kW, the demand target, optional inputs, timestamps."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from core.commands import InputKey
from core.config import Settings
from core.errors import InvalidReading

# How far in the future a timestamp may lie (clock skew between the BAS and this box).
MAX_FUTURE_SKEW_S = 60.0
# Older than this is not a meter reading but a mistake (year 1, a Unix time read as seconds...).
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
# PV inverters draw a little from the grid at night and many report it as a small negative
# output; refusing it would leave the BAS with a write error every minute and the input stale.
PV_STANDBY_KW = 1.0
# Plausible ranges of the optional BAS inputs (unit, low, high); None means the meter's range.
INPUT_RANGES: dict[str, tuple[str, float | None, float | None]] = {
    InputKey.PV_POWER_KW: ("kW", -PV_STANDBY_KW, None),
    InputKey.BATTERY_SOC_PCT: ("%", 0.0, 100.0),
    InputKey.BATTERY_POWER_KW: ("kW", None, None),
    InputKey.EV_CHARGING_POWER_KW: ("kW", 0.0, None),
}
# Outdoor air: the coldest and hottest air a building sees, by unit.
OUTDOOR_AIR_RANGES = {"degrees-fahrenheit": (-80.0, 140.0), "degrees-celsius": (-60.0, 60.0)}


def check_number(value: object, name: str) -> float:
    """``value`` as a finite float; booleans and strings are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidReading(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidReading(f"{name} must be a finite number, got {number}")
    return number


class InputValidator:
    """Validates each commandable input and reading timestamps against the settings."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def kw(self, value: object) -> float:
        """A meter reading: finite and within --min-kw..--max-kw."""
        number = check_number(value, "kw")
        low, high = self._settings.min_kw, self._settings.max_kw
        if not low <= number <= high:
            raise InvalidReading(
                f"kw {number:g} is outside the plausible range {low:g}..{high:g} kW"
            )
        return number

    def target(self, value: object) -> float:
        """A demand target: finite kW above zero and within the meter's range."""
        number = check_number(value, "demand target")
        if not 0.0 < number <= self._settings.max_kw:
            raise InvalidReading(
                f"demand target {number:g} kW must be above 0 and at most {self._settings.max_kw:g}"
            )
        return number

    def optional(self, name: str, value: object) -> float:
        """An optional input (pv_power_kw, battery_soc_pct, ...) within its range."""
        if name not in INPUT_RANGES:
            raise InvalidReading(f"unknown input {name!r}; known: {', '.join(INPUT_RANGES)}")
        number = check_number(value, name)
        unit, low, high = INPUT_RANGES[name]
        low = -self._settings.max_kw if low is None else low
        high = self._settings.max_kw if high is None else high
        if not low <= number <= high:
            raise InvalidReading(f"{name} {number:g} {unit} is outside {low:g}..{high:g} {unit}")
        return number

    def outdoor_air(self, value: object) -> float:
        """Outdoor air temperature in the configured unit, within plausible weather."""
        number = check_number(value, "outdoor_air_temp")
        unit = self._settings.outdoor_air_units
        low, high = OUTDOOR_AIR_RANGES[unit]
        if not low <= number <= high:
            raise InvalidReading(
                f"outdoor_air_temp {number:g} is outside {low:g}..{high:g} ({unit})"
            )
        return number

    def command(self, key: str, value: object) -> float:
        """Validate a value for the commandable input ``key``."""
        if key == InputKey.METER_KW:
            return self.kw(value)
        if key == InputKey.DEMAND_TARGET_KW:
            return self.target(value)
        if key == InputKey.OUTDOOR_AIR_TEMP:
            return self.outdoor_air(value)
        return self.optional(key, value)

    def timestamp(self, observed_at: datetime | None, now: datetime) -> datetime:
        """``observed_at`` (None: now) with an offset, not in the future, not absurdly old."""
        if observed_at is None:
            return now
        if observed_at.tzinfo is None:
            raise InvalidReading("observed_at must include a time-zone offset (e.g. Z or +00:00)")
        if observed_at < EARLIEST_TIMESTAMP:
            raise InvalidReading(
                f"observed_at {observed_at.isoformat()} is before {EARLIEST_TIMESTAMP.date()}"
            )
        if (observed_at - now).total_seconds() > MAX_FUTURE_SKEW_S:
            raise InvalidReading(
                f"observed_at {observed_at.isoformat()} is in the future (now {now.isoformat()})"
            )
        return observed_at
