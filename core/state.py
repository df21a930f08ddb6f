"""The core's mutable state: what commands and computations change, shared by the core's rooms.

Only ``DsmCore`` and its command handlers assign the fields; the other rooms read them (the
queries, the minute keeper, the state store when it saves).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from datetime import datetime

from core.commands import CommandState, InputKey
from core.demand import (
    DemandTracker,
    OptionalInputs,
    battery_power_in_force,
    value_if_fresh,
)
from core.demand import Reading as DemandReading
from core.forecast.base import Forecaster
from core.snapshot import ModelStatus, Quality, Snapshot
from core.validation import INPUT_RANGES


def fresh_commands(demand_target_kw: float | None) -> dict[str, CommandState]:
    """Empty priority arrays; the demand target's relinquish default is the configured target."""
    commands: dict[str, CommandState] = {key: CommandState() for key in InputKey}
    commands[InputKey.DEMAND_TARGET_KW] = CommandState(
        relinquish_default=demand_target_kw, hold_last=False
    )
    return commands


@dataclass(slots=True)
class CoreState:
    """The published snapshot, the served forecaster, the demand tracker and the inputs."""

    forecaster: Forecaster
    demand: DemandTracker
    commands: dict[str, CommandState]
    snapshot: Snapshot
    # Optional inputs (PV, battery, EV, outdoor air): the value in force and when it was written.
    inputs: dict[str, tuple[float, datetime]] = field(default_factory=dict)
    # The event loop's thread, once the core started: commands and publishing run only there.
    loop_thread: int | None = None

    @classmethod
    def initial(
        cls, forecaster: Forecaster, demand: DemandTracker, demand_target_kw: float | None
    ) -> CoreState:
        """Before anything is restored: empty priority arrays, a snapshot naming the forecaster."""
        commands = fresh_commands(demand_target_kw)
        snapshot = Snapshot(model=ModelStatus(forecaster=forecaster.name), commands=dict(commands))
        return cls(forecaster, demand, commands, snapshot)

    def assert_loop(self) -> None:
        """Raise when called off the event loop's thread (once the core started)."""
        if self.loop_thread is not None and threading.get_ident() != self.loop_thread:
            raise RuntimeError("DsmCore used off the event loop thread")

    def input_in_force(self, key: InputKey, now: datetime, stale_after_s: float) -> float | None:
        """An optional input's value written within ``stale_after_s``, else None."""
        item = self.inputs.get(key)
        if item is None:
            return None
        value, at = item
        return value_if_fresh(value, at, now, stale_after_s)

    def dispatched_in_force(self, now: datetime, stale_after_s: float) -> float | None:
        """kW of the battery and EV charging in force now (+ drawn from the grid), None if neither.

        The measured inputs while fresh; without a battery measurement, the setpoint the plan
        gives the BAS (what the inverter is told to do; the plan keeps it within the SOC limits).
        """
        dispatch = self.snapshot.dispatch
        battery = battery_power_in_force(
            self.input_in_force(InputKey.BATTERY_POWER_KW, now, stale_after_s),
            dispatch.setpoint_kw if dispatch is not None else None,
        )
        ev = self.input_in_force(InputKey.EV_CHARGING_POWER_KW, now, stale_after_s)
        if battery is None and ev is None:
            return None
        return (battery or 0.0) + (ev or 0.0)

    def input_qualities(self, now: datetime, stale_after_s: float) -> dict[str, Quality]:
        """Each optional input's quality: OK while written within ``stale_after_s``."""
        qualities = {}
        for name, (value, at) in self.inputs.items():
            fresh = value_if_fresh(value, at, now, stale_after_s) is not None
            qualities[name] = Quality.OK if fresh else Quality.STALE_INPUT
        return qualities

    def optional_inputs(self) -> OptionalInputs:
        """The optional inputs as the demand decisions and the dispatch read them."""
        return OptionalInputs(
            **{
                name: DemandReading(value, at)
                for name, (value, at) in self.inputs.items()
                if name in INPUT_RANGES
            }
        )

    def with_inputs(
        self,
        now: datetime,
        meter_quality: Quality,
        stale_after_s: float,
        storage_fault: str | None,
    ) -> Snapshot:
        """The current snapshot with every input field refreshed from the priority arrays."""
        return dataclasses.replace(
            self.snapshot,
            input_kw=self.commands[InputKey.METER_KW].present_value,
            input_quality=meter_quality,
            demand_target_kw=self.demand.target_kw,
            inputs=dict(self.inputs),
            input_qualities=self.input_qualities(now, stale_after_s),
            commands=dict(self.commands),
            storage_fault=storage_fault,
        )
