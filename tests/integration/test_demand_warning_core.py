"""The demand warning through the core (real SQLite, fake clock): a step to 28.5 kW against a
21.5 kW target is warned within two minutes, on 5- and 15-minute intervals."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.clock import FakeClock
from core.intake import Reading
from core.ports import SubmitReadings
from tests.conftest import START
from tests.helpers import submit_reading

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TARGET_KW = 21.5


@pytest.mark.parametrize("interval", [5, 15])
async def test_a_step_over_the_target_raises_kw_to_shed_within_two_minutes(
    make_core, clock: FakeClock, interval: int
) -> None:
    core = make_core(demand_target_kw=TARGET_KW, demand_interval_minutes=interval)
    # Two weeks and a day of a calm 4 kW building: the seasonal forecast says 4 kW.
    history_start = START - timedelta(days=15)
    minutes = int((START - history_start).total_seconds() // 60)
    calm = [Reading(4.0, history_start + timedelta(minutes=i, seconds=10)) for i in range(minutes)]
    await core.start()
    await core.command(SubmitReadings(calm, "import"))
    # START is 12:00 UTC, the start of a 5- and a 15-minute interval; the meter steps at once.
    shed: list[float] = []
    projected: list[float | None] = []
    for _ in range(interval):
        await submit_reading(core, 28.5)
        clock.advance(60)
        snapshot = await core.tick()
        assert snapshot.demand is not None
        assert snapshot.forecast is not None and snapshot.forecast.forecaster == "mean-2-weeks"
        assert snapshot.forecast.kw[0] == pytest.approx(4.0)
        shed.append(snapshot.demand.decisions.kw_to_shed)
        projected.append(snapshot.demand.interval.projected_kw)
    # One minute into the interval the meter has the step: the rest of it is projected there.
    assert shed[0] == pytest.approx(28.5 - TARGET_KW)
    assert all(kw > 0.0 for kw in shed[:2])
    assert projected[0] == pytest.approx(28.5)
    await core.stop()
