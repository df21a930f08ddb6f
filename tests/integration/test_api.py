"""The REST face over real HTTP: uvicorn on loopback serving the real app over a real core."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from api.app import create_app
from bacnet.points import POINTS
from bacnet.table import BacnetPointTable
from core.clock import SystemClock
from core.config import Settings
from core.factory import build_core
from core.forecast.baseline import SeasonalMeanForecaster
from core.readings import CompletedMinute
from core.service import DsmCore
from core.storage.repository import Storage

pytestmark = pytest.mark.integration


@dataclass
class LiveApi:
    """A running app and its core."""

    base_url: str
    core: DsmCore


@contextlib.contextmanager
def serve_app(settings: Settings, storage: Storage) -> Iterator[LiveApi]:
    """Run core + uvicorn on one event loop in a thread, on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    core = build_core(settings, storage, SystemClock(), SeasonalMeanForecaster())
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        await core.start()
        app = create_app(
            core,
            point_table=BacnetPointTable(core.reads.settings),
            bacnet_bound=lambda: False,
            version="test",
        )
        server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, lifespan="off", access_log=False)
        )
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        holder["server"] = server
        runner = asyncio.create_task(core.run())
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for this)
            await asyncio.sleep(0.01)
        ready.set()
        await serving
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await core.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(15), "server did not start"
    try:
        yield LiveApi(f"http://127.0.0.1:{port}", core)
    finally:
        holder["server"].should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture
def api(settings: Settings, storage: Storage) -> Iterator[LiveApi]:
    """The app without a token."""
    with serve_app(settings, storage) as live:
        yield live


@pytest.fixture
def secured(settings: Settings, storage: Storage) -> Iterator[LiveApi]:
    """The app with --api-token set."""
    with serve_app(settings.model_copy(update={"api_token": SecretStr("s3cret")}), storage) as live:
        yield live


def test_post_one_reading_shows_in_points(api: LiveApi) -> None:
    response = httpx.post(f"{api.base_url}/api/v1/readings", json={"kw": 21.5})
    assert response.status_code == 201
    assert response.json() == {"accepted": 1, "live": 1, "historical_minutes": 0}
    points = {p["name"]: p for p in httpx.get(f"{api.base_url}/api/v1/points").json()}
    meter = points["input-power-meter"]
    assert meter["present_value"] == 21.5
    assert meter["reliability"] == "no-fault-detected"
    assert meter["status_flags"]["fault"] is False
    assert meter["units"] == "kilowatts"
    assert points["one-hour-future-power"]["present_value"] == -1.0
    assert len(points) == len(POINTS)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"kw": "lots"}, 422, "kw"),
        ({"kw": 1e12}, 422, "outside the plausible range"),
        ({"kw": 5, "observed_at": "2026-07-01T10:00:00"}, 422, "time-zone offset"),
        ([], 422, "empty"),
        ({"watts": 5}, 422, "kw"),
    ],
)
def test_bad_readings_get_a_clear_4xx_and_store_nothing(
    api: LiveApi, body: Any, status: int, fragment: str
) -> None:
    response = httpx.post(f"{api.base_url}/api/v1/readings", json=body)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and fragment in detail
    assert httpx.get(f"{api.base_url}/api/v1/readings").json()["items"] == []
    assert api.core.snapshot.input_kw is None


def test_writes_need_the_token_and_reads_do_not(secured: LiveApi) -> None:
    url = f"{secured.base_url}/api/v1/readings"
    assert httpx.post(url, json={"kw": 1}).status_code == 401
    assert httpx.post(url, json={"kw": 1}, headers={"Authorization": "Bearer x"}).status_code == 401
    ok = httpx.post(url, json={"kw": 1}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201
    assert httpx.get(url).status_code == 200
    assert httpx.get(f"{secured.base_url}/api/v1/points").status_code == 200


def test_readings_pagination_and_csv(api: LiveApi, storage: Storage) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    batch = [
        {"observed_at": (start + timedelta(minutes=i)).isoformat(), "kw": float(i)}
        for i in range(25)
    ]
    assert httpx.post(f"{api.base_url}/api/v1/readings", json=batch).status_code == 201
    # An imported weather history fills the outdoor air of the second minute.
    first_minute = int(start.timestamp()) // 60
    assert storage.upsert_weather({first_minute + 1: 71.5}) == 1
    collected: list[float] = []
    params: dict[str, Any] = {"start": start.isoformat(), "limit": 10}
    pages = 0
    while True:
        page = httpx.get(f"{api.base_url}/api/v1/readings", params=params).json()
        collected += [item["kw"] for item in page["items"]]
        pages += 1
        if page["next_start"] is None:
            break
        params["start"] = page["next_start"]
    assert collected == [float(i) for i in range(25)] and pages == 3
    csv_text = httpx.get(
        f"{api.base_url}/api/v1/readings",
        params={"start": start.isoformat(), "limit": 3},
        headers={"Accept": "text/csv"},
    ).text
    assert csv_text.splitlines() == [
        "observed_at,kw,sample_count,outdoor_air_temp,dispatched_kw",
        f"{start.isoformat()},0.0,1,,",
        f"{(start + timedelta(minutes=1)).isoformat()},1.0,1,71.5,",
        f"{(start + timedelta(minutes=2)).isoformat()},2.0,1,,",
    ]
    items = httpx.get(
        f"{api.base_url}/api/v1/readings", params={"start": start.isoformat(), "limit": 2}
    ).json()["items"]
    assert [(i["outdoor_air_temp"], i["dispatched_kw"]) for i in items] == [
        (None, None),
        (71.5, None),
    ]
    # A minute the service closed while the battery discharged 2.5 kW.
    storage.upsert_minutes(
        [CompletedMinute(first_minute + 60, 9.0, 3)], "live", dispatched={first_minute + 60: -2.5}
    )
    later = (start + timedelta(minutes=60)).isoformat()
    (item,) = httpx.get(f"{api.base_url}/api/v1/readings", params={"start": later}).json()["items"]
    assert (item["kw"], item["dispatched_kw"], item["outdoor_air_temp"]) == (9.0, -2.5, None)


def test_bad_queries(api: LiveApi) -> None:
    url = f"{api.base_url}/api/v1/readings"
    now = datetime.now(UTC)
    backwards = httpx.get(
        url, params={"start": now.isoformat(), "end": (now - timedelta(hours=1)).isoformat()}
    )
    assert backwards.status_code == 400 and "end must be after start" in backwards.json()["detail"]
    naive = httpx.get(url, params={"start": "2026-07-01T00:00:00"})
    assert naive.status_code == 422 and "offset" in naive.json()["detail"]
    too_many = httpx.get(url, params={"limit": 100000})
    assert too_many.status_code == 422 and "limit" in too_many.json()["detail"]


def test_forecast_is_503_until_a_minute_completes(api: LiveApi) -> None:
    response = httpx.get(f"{api.base_url}/api/v1/forecast")
    assert response.status_code == 503
    assert "no forecast yet" in response.json()["detail"]


def test_health_readiness_metrics_and_docs(api: LiveApi) -> None:
    assert httpx.get(f"{api.base_url}/healthz").json() == {"status": "ok"}
    deadline = time.monotonic() + 5
    while api.core.snapshot.computed_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    ready = httpx.get(f"{api.base_url}/readyz")
    assert ready.status_code == 503  # BACnet is not bound in this test
    assert ready.json()["problems"] == ["BACnet not bound"]
    assert ready.json()["database"] is True
    metrics = httpx.get(f"{api.base_url}/metrics").text
    assert 'open_dsm_power_watts{point="input-power-meter"}' not in metrics  # no value yet
    assert 'open_dsm_point_fault{point="input-power-meter"} 1.0' in metrics
    assert (
        'open_dsm_point_reliability{point="input-power-meter",reliability="no-sensor"} 1.0'
        in metrics
    )
    spec = httpx.get(f"{api.base_url}/openapi.json").json()
    post = spec["paths"]["/api/v1/readings"]["post"]
    assert post["summary"].startswith("Post one reading or a batch")
    assert "examples" in post["requestBody"]["content"]["application/json"]
    assert httpx.get(f"{api.base_url}/docs").status_code == 200


def test_demand_target_inputs_and_intervals(secured: LiveApi) -> None:
    base, auth = secured.base_url, {"Authorization": "Bearer s3cret"}
    assert httpx.put(f"{base}/api/v1/demand/target", json={"target_kw": 30}).status_code == 401
    bad = httpx.put(f"{base}/api/v1/demand/target", json={"target_kw": -3}, headers=auth)
    assert bad.status_code == 422 and "demand target" in bad.json()["detail"]
    ok = httpx.put(f"{base}/api/v1/demand/target", json={"target_kw": 30}, headers=auth)
    assert ok.status_code == 200 and ok.json() == {"target_kw": 30.0}

    out_of_range = httpx.post(
        f"{base}/api/v1/demand/inputs",
        json={"pv_power_kw": 2.0, "battery_soc_pct": 140},
        headers=auth,
    )
    assert out_of_range.status_code == 422 and "battery_soc_pct" in out_of_range.json()["detail"]
    # An inverter's night standby draw (a little below 0) is a reading; -5 kW of PV is not.
    standby = httpx.post(f"{base}/api/v1/demand/inputs", json={"pv_power_kw": -5.0}, headers=auth)
    assert standby.status_code == 422 and "pv_power_kw -5 kW" in standby.json()["detail"]
    unknown = httpx.post(f"{base}/api/v1/demand/inputs", json={"wind_kw": 1}, headers=auth)
    assert unknown.status_code == 422
    assert secured.core.snapshot.inputs == {}  # nothing of the refused batch was kept
    posted = httpx.post(
        f"{base}/api/v1/demand/inputs",
        json={"pv_power_kw": 2.0, "battery_soc_pct": 64},
        headers=auth,
    )
    assert posted.status_code == 204
    night = httpx.post(f"{base}/api/v1/demand/inputs", json={"pv_power_kw": -0.02}, headers=auth)
    assert night.status_code == 204
    points = {p["name"]: p for p in httpx.get(f"{base}/api/v1/points").json()}
    assert points["pv-power"]["present_value"] == -0.02
    again = httpx.post(f"{base}/api/v1/demand/inputs", json={"pv_power_kw": 2.0}, headers=auth)
    assert again.status_code == 204
    points = {p["name"]: p for p in httpx.get(f"{base}/api/v1/points").json()}
    assert points["demand-target"]["present_value"] == 30.0
    assert points["pv-power"]["present_value"] == 2.0
    assert points["battery-soc"]["reliability"] == "no-fault-detected"
    assert points["ev-charging-power"]["reliability"] == "no-sensor"

    deadline = time.monotonic() + 5
    while secured.core.snapshot.demand is None and time.monotonic() < deadline:
        time.sleep(0.05)
    demand = httpx.get(f"{base}/api/v1/demand").json()
    assert demand["target_kw"] == 30.0 and demand["operator_target_kw"] == 30.0
    assert demand["inputs"] == {"pv_power_kw": 2.0, "battery_soc_pct": 64.0}
    assert {"kw_to_shed", "chiller_capacity_limit_pct", "ev_charge_permit"} <= set(
        demand["decisions"]
    )
    assert httpx.get(f"{base}/api/v1/demand/intervals").json() == []


def test_ede_point_list(api: LiveApi) -> None:
    response = httpx.get(f"{api.base_url}/api/v1/points.ede.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0] == "# Engineering-Data-Exchange - B.I.G.-EU"
    assert lines[1].startswith("PROJECT_NAME;")
    names = [
        line.split(";")[2]
        for line in lines
        if line
        and line[0] not in "#"
        and ";" in line
        and line.split(";")[0]
        not in {
            "PROJECT_NAME",
            "VERSION_OF_REFERENCEFILE",
            "TIMESTAMP_OF_LAST_CHANGE",
            "AUTHOR_OF_LAST_CHANGE",
            "VERSION_OF_LAYOUT",
        }
    ]
    assert set(names) >= {p.name for p in POINTS}
    archive = httpx.get(f"{api.base_url}/api/v1/points.ede.zip")
    assert archive.status_code == 200 and archive.content[:2] == b"PK"


def test_model_and_runs(api: LiveApi, storage: Storage) -> None:
    started = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    run_id = storage.add_model_run(started_at=started, status="running", trigger="cli")
    storage.update_model_run(
        run_id,
        status="rejected",
        finished_at=started + timedelta(minutes=1),
        rmse_kw=3.3,
        baseline_metrics={"mean-2-weeks": {"rmse_60": 3.1}},
        training_minutes=1.0,
    )
    model = httpx.get(f"{api.base_url}/api/v1/model").json()
    assert model["forecaster"] == "mean-2-weeks" and model["heldout_rmse_kw"] is None
    assert model["rmse_source"].startswith("live")
    assert 0.5 <= model["band_scale"] <= 3.0 and 0.5 <= model["day_ahead_band_scale"] <= 3.0
    assert {"band_coverage", "day_ahead_band_coverage"} <= set(model)
    runs = httpx.get(f"{api.base_url}/api/v1/model/runs").json()
    assert [(r["id"], r["status"], r["rmse_kw"]) for r in runs] == [(run_id, "rejected", 3.3)]
    assert runs[0]["baseline_metrics"] == {"mean-2-weeks": {"rmse_60": 3.1}}
    assert runs[0]["started_at"].startswith("2026-07-01T00:00:00")
    # This app was built without a training manager: say so rather than pretend.
    response = httpx.post(f"{api.base_url}/api/v1/model/train")
    assert response.status_code == 503 and "training" in response.json()["detail"]
