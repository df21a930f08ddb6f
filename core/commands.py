"""Commandable inputs: one 16-slot priority array per input, owned by the core.

The value the core uses for a commandable input is the priority-array winner (the BACnet
present value). A BACnet write or relinquish lands in the slot of its priority; a REST write is a
write at ``REST_PRIORITY`` and is refused while a higher priority (a lower number) commands, so a
BACnet read, REST, ``/metrics`` and the stored minute always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.errors import CommandConflict, InvalidRequest

PRIORITY_COUNT = 16
# BACnet's default priority for a write that names none, and the slot REST writes use.
DEFAULT_PRIORITY = 16
REST_PRIORITY = 16
_EMPTY: tuple[float | None, ...] = (None,) * PRIORITY_COUNT


class InputKey(StrEnum):
    """The commandable inputs, by the name the core and the point table use."""

    METER_KW = "kw"
    DEMAND_TARGET_KW = "demand_target_kw"
    PV_POWER_KW = "pv_power_kw"
    BATTERY_SOC_PCT = "battery_soc_pct"
    BATTERY_POWER_KW = "battery_power_kw"
    EV_CHARGING_POWER_KW = "ev_charging_power_kw"
    OUTDOOR_AIR_TEMP = "outdoor_air_temp"


@dataclass(frozen=True, slots=True)
class CommandState:
    """A commandable input's priority array (index 0 is priority 1) and relinquish default.

    With every slot empty the present value is the relinquish default. For a measured input
    (``hold_last``) it holds the last commanded value, so relinquishing every priority does not
    invent a reading; for a setting (the demand target) it is the configured value.
    """

    priority_array: tuple[float | None, ...] = _EMPTY
    relinquish_default: float | None = None
    hold_last: bool = True

    @property
    def active_priority(self) -> int | None:
        """The priority (1..16) of the winning slot, None when every slot is empty."""
        for index, value in enumerate(self.priority_array):
            if value is not None:
                return index + 1
        return None

    @property
    def present_value(self) -> float | None:
        """The winning slot's value, else the relinquish default."""
        priority = self.active_priority
        if priority is None:
            return self.relinquish_default
        return self.priority_array[priority - 1]

    def command(self, value: float | None, priority: int) -> CommandState:
        """Write ``value`` (None relinquishes) at ``priority``; the new state."""
        check_priority(priority)
        slots = list(self.priority_array)
        slots[priority - 1] = value
        default = self.relinquish_default
        if self.hold_last and all(slot is None for slot in slots):
            default = self.present_value
        return CommandState(tuple(slots), default, self.hold_last)

    def check_rest_write(self, name: str) -> None:
        """Raise CommandConflict when a priority above REST's commands this input."""
        priority = self.active_priority
        if priority is not None and priority < REST_PRIORITY:
            raise CommandConflict(
                f"{name} is commanded over BACnet at priority {priority}; REST writes at "
                f"priority {REST_PRIORITY} and cannot override it until that priority is "
                "relinquished"
            )

    def to_state(self) -> dict[str, object]:
        """JSON-safe form for the service_state table."""
        return {
            "priority_array": list(self.priority_array),
            "relinquish_default": self.relinquish_default,
        }

    @classmethod
    def from_state(cls, state: dict[str, object], hold_last: bool = True) -> CommandState:
        """Rebuild a state saved with ``to_state``; raise ValueError when it is malformed."""
        raw = state.get("priority_array")
        if not isinstance(raw, list) or len(raw) != PRIORITY_COUNT:
            raise ValueError("priority_array must be a list of 16 entries")
        slots = tuple(None if v is None else float(v) for v in raw)
        default = state.get("relinquish_default")
        if default is not None and not isinstance(default, int | float):
            raise ValueError("relinquish_default must be a number or null")
        return cls(slots, None if default is None else float(default), hold_last)


def check_priority(priority: int) -> None:
    """A BACnet write priority is 1..16."""
    if isinstance(priority, bool) or not 1 <= priority <= PRIORITY_COUNT:
        raise InvalidRequest(f"priority must be 1..{PRIORITY_COUNT}, got {priority!r}")
