"""The nightly self-tuning replay: a child process over the real migrated database; its choice is
recorded, served and survives a restart; a killed child changes nothing that is served."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from core.clock import FakeClock
from core.dispatch.assets import Battery, Tariff
from core.dispatch.controller import DispatchController, DispatchSettings
from core.storage.repository import Storage
from core.timegrid import minute_of
from core.tuning import TuningManager, candidate_named

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TZ = ZoneInfo("UTC")
NIGHT = datetime(2024, 6, 1, tzinfo=UTC)
DAYS = 15
BATTERY = Battery(capacity_kwh=20.0, charge_kw=10.0, discharge_kw=10.0)


def _store_site(storage: Storage) -> None:
    """Fifteen days of a flat 10 kW load with a 45-minute spike to 22 kW every afternoon."""
    start = minute_of(NIGHT) - DAYS * 1440
    minutes = np.arange(DAYS * 1440)
    load = np.full(len(minutes), 10.0)
    of_day = minutes % 1440
    load[(of_day >= 900) & (of_day < 945)] = 22.0
    storage.insert_missing_minutes(start, load, "import")


def _manager(
    storage: Storage,
    controller: DispatchController,
    served_model: Callable[[], str | None] | None = None,
) -> TuningManager:
    async def submit(what: str, job: Callable[[], Any]) -> Any:
        return job()

    manager = TuningManager(
        storage,
        FakeClock(NIGHT),
        controller,
        storage.engine.url.render_as_string(hide_password=False),
        TZ,
        Tariff(),
        15,
        submit,
        served_model,
    )
    # Two candidates re-planning every hour: the same loop, a replay of seconds.
    manager.names = ("baseline", "reserve-off")
    manager.replan_every_minutes = 60
    manager.min_history_days = 14  # fifteen days stored: the selection runs (the service: 28)
    return manager


# The child runs at a lower priority: on a loaded machine it waits for the CPU.
@pytest.mark.timeout(900)
async def test_the_nightly_replay_is_recorded_served_and_survives_a_restart(
    storage: Storage,
) -> None:
    _store_site(storage)
    controller = DispatchController(BATTERY, Tariff(), TZ)
    manager = _manager(storage, controller)
    result = await manager.trigger(NIGHT)
    assert result is not None
    assert result["history_days"] == pytest.approx(DAYS)
    assert {c["name"] for c in result["candidates"]} == {"baseline", "reserve-off"}
    assert result["no_battery_kw"] == pytest.approx(22.0)
    runs = storage.tuning_runs(5)
    assert len(runs) == 1 and runs[0]["status"] == "done"
    assert runs[0]["chosen"] == result["chosen"]
    assert runs[0]["candidates"] == result["candidates"]
    chosen = candidate_named(result["chosen"])
    assert controller.settings == chosen.settings
    status = manager.status(15.0)
    assert status.chosen == result["chosen"]
    assert [c.name for c in status.candidates] == [c["name"] for c in result["candidates"]]
    assert status.saving_kw is not None and status.saving_kw > 0
    assert status.saving_per_month == pytest.approx(status.saving_kw * 15.0)

    # A restart: a fresh controller and manager serve the recorded choice again.
    again = DispatchController(BATTERY, Tariff(), TZ)
    restarted = _manager(storage, again)
    await restarted.start()
    assert restarted.served is not None and restarted.served["chosen"] == result["chosen"]
    assert again.settings == chosen.settings


async def test_a_killed_replay_leaves_the_served_choice_unchanged(storage: Storage) -> None:
    _store_site(storage)
    # A choice served before: reserve-off from an earlier night.
    storage.add_tuning_run(
        night_at=NIGHT,
        finished_at=NIGHT,
        status="done",
        chosen="reserve-off",
        candidates=[{"name": "reserve-off", "billed_kw": 12.0, "throughput_kwh": 9.0}],
        no_battery_kw=22.0,
        history_days=15.0,
    )
    controller = DispatchController(BATTERY, Tariff(), TZ)
    manager = _manager(storage, controller)
    await manager.start()
    served = controller.settings
    assert served == candidate_named("reserve-off").settings
    assert served != DispatchSettings()
    task = manager.trigger(NIGHT)
    for _ in range(600):
        if manager.child_pids():
            break
        await asyncio.sleep(0.05)
    pids = manager.child_pids()
    assert pids, "the replay runs in a child process"
    assert os.getpid() not in pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert await task is None
    assert controller.settings == served
    assert manager.served is not None and manager.served["chosen"] == "reserve-off"
    runs = storage.tuning_runs(5)
    assert runs[0]["status"] == "failed" and "died" in (runs[0]["note"] or "")
    assert runs[1]["chosen"] == "reserve-off"


@pytest.mark.parametrize(
    ("chosen", "names", "forecast"),
    [
        ("trained", ["baseline", "trained"], "trained"),
        ("baseline", ["baseline", "trained"], "baseline"),
        ("baseline", ["baseline", "reserve-off"], None),
    ],
)
async def test_the_forecast_the_choice_planned_on_is_served(
    storage: Storage, chosen: str, names: list[str], forecast: str | None
) -> None:
    """A night that weighed the served model's day-ahead against the baseline's serves the one
    its choice planned on; a night without the model leaves the served forecaster's."""
    storage.add_tuning_run(
        night_at=NIGHT,
        finished_at=NIGHT,
        status="done",
        chosen=chosen,
        candidates=[{"name": n, "billed_kw": 12.0, "throughput_kwh": 9.0} for n in names],
        no_battery_kw=22.0,
        history_days=28.0,
    )
    controller = DispatchController(BATTERY, Tariff(), TZ)
    manager = _manager(storage, controller)
    await manager.start()
    assert controller.plan_forecast == forecast
    assert controller.settings == DispatchSettings()


@pytest.mark.slow
@pytest.mark.timeout(1200)
# One database: it trains a model (about 30 s); the stored runs' PostgreSQL path is covered above.
@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
async def test_the_nightly_replay_plans_on_the_served_model_too(
    storage: Storage, tmp_path: Path
) -> None:
    """With a model served, the child loads its artifact (LiteRT) and replays the trained
    candidate beside the baseline's; the run records both and serves the forecast chosen."""
    from core.forecast import neural
    from core.forecast.features import FeatureConfig
    from core.forecast.lite import write_artifact

    days = 30
    start = minute_of(NIGHT) - days * 1440
    minutes = np.arange(days * 1440)
    rng = np.random.default_rng(5)
    load = 10.0 + 4.0 * np.sin(minutes * 2 * np.pi / 1440) + rng.normal(0, 0.5, len(minutes))
    of_day = minutes % 1440
    load[(of_day >= 900) & (of_day < 945)] += 12.0
    storage.insert_missing_minutes(start, load, "import")
    small = neural.Candidate("small", FeatureConfig(), hidden_units=16)
    trained = neural.train(start, load, TZ, time_budget_s=30.0, max_epochs=2, candidates=[small])
    artifact = write_artifact(
        tmp_path / "model", trained.tflite_model, trained.meta, trained.day_ahead_model
    )
    controller = DispatchController(BATTERY, Tariff(), TZ)
    manager = _manager(storage, controller, served_model=lambda: str(artifact))
    manager.names = ("baseline", "trained")
    manager.window_days = 14  # a fortnight replayed: the same loop, half the time
    result = await manager.trigger(NIGHT)
    assert result is not None
    assert {c["name"] for c in result["candidates"]} == {"baseline", "trained"}
    assert all(c["billed_kw"] <= result["no_battery_kw"] + 1e-6 for c in result["candidates"])
    assert "could not be loaded" not in result["note"]
    assert controller.plan_forecast == ("trained" if result["chosen"] == "trained" else "baseline")
