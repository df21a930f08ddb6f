"""GET /api/v1/dispatch/tuning over real HTTP: the served choice, every candidate's replayed bill
and the demand charge it saves, from the recorded nightly run."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn

from api.app import create_app
from bacnet.table import BacnetPointTable
from core.clock import SystemClock
from core.config import Settings
from core.dispatch.assets import Tariff
from core.dispatch.tuning import candidates
from core.factory import build_core
from core.forecast.baseline import SeasonalMeanForecaster
from core.service import DsmCore
from core.storage.repository import Storage
from core.tuning import TuningManager

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def serve(settings: Settings, storage: Storage) -> Iterator[tuple[str, DsmCore]]:
    """Core, tuning manager and uvicorn on one event loop in a thread, on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    core = build_core(settings, storage, SystemClock(), SeasonalMeanForecaster())
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        await core.start()
        controller = core.reads.dispatch_controller
        tuning = TuningManager(
            storage,
            SystemClock(),
            controller,
            settings.database_url,
            settings.tz,
            controller.tariff if controller else Tariff(),
            settings.demand_interval_minutes,
            core.writer.submit,
        )
        await tuning.start()
        app = create_app(
            core,
            point_table=BacnetPointTable(core.reads.settings),
            bacnet_bound=lambda: False,
            version="test",
            tuning=tuning,
        )
        server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, lifespan="off", access_log=False)
        )
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        holder["server"] = server
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for this)
            await asyncio.sleep(0.01)
        ready.set()
        await serving
        await core.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(15), "server did not start"
    try:
        yield f"http://127.0.0.1:{port}", core
    finally:
        holder["server"].should_exit = True
        thread.join(15)
        sock.close()


def test_the_tuning_endpoint_serves_the_recorded_choice(settings: Settings, storage: Storage):
    storage.add_tuning_run(
        night_at=datetime(2026, 6, 1, tzinfo=UTC),
        finished_at=datetime(2026, 6, 1, 0, 23, tzinfo=UTC),
        status="done",
        chosen="margin-wide",
        candidates=[
            {"name": "baseline", "billed_kw": 23.2, "throughput_kwh": 400.0},
            {"name": "margin-wide", "billed_kw": 22.2, "throughput_kwh": 380.0},
        ],
        no_battery_kw=27.6,
        history_days=28.0,
        note="margin-wide: 22.20 kW over the last 28 days against 27.60 kW without the battery",
    )
    battery = settings.model_copy(
        update={"has_battery": True, "battery_capacity_kwh": 20.0, "demand_charge_per_kw": 12.0}
    )
    with serve(battery, storage) as (base_url, core):
        body = httpx.get(f"{base_url}/api/v1/dispatch/tuning").json()
        assert body["configured"] is True
        assert body["chosen"] == "margin-wide"
        assert [c["name"] for c in body["candidates"]] == ["baseline", "margin-wide"]
        assert body["saving_kw"] == pytest.approx(27.6 - 22.2)
        assert body["saving_per_month"] == pytest.approx((27.6 - 22.2) * 12.0)
        assert body["history_days"] == 28.0
        assert body["candidates"][1] == {
            "name": "margin-wide",
            "billed_kw": 22.2,
            "throughput_kwh": 380.0,
        }
        assert body["night_at"].startswith("2026-06-01T00:00:00")
        # The response is a typed record end to end: the OpenAPI schema names every field.
        schemas = httpx.get(f"{base_url}/openapi.json").json()["components"]["schemas"]
        assert set(schemas["DispatchTuningOut"]["properties"]) == {
            "configured",
            "chosen",
            "level_kw",
            "night_at",
            "history_days",
            "no_battery_kw",
            "saving_kw",
            "saving_per_month",
            "candidates",
            "replay_running",
            "note",
        }
        assert set(schemas["TuningCandidateOut"]["properties"]) == {
            "name",
            "billed_kw",
            "throughput_kwh",
        }
        # The choice is served: the controller runs the candidate's settings.
        served = {c.name: c for c in candidates()}["margin-wide"].settings
        assert core.reads.dispatch_controller is not None
        assert core.reads.dispatch_controller.settings == served


def test_the_tuning_endpoint_without_a_battery(settings: Settings, storage: Storage) -> None:
    with serve(settings, storage) as (base_url, _):
        response = httpx.get(f"{base_url}/api/v1/dispatch/tuning")
        assert response.status_code == 200
        assert response.json()["configured"] is False
