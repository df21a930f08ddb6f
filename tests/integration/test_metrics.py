"""/metrics over real HTTP, read back with prometheus_client's own text-format parser."""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bacnet.points import POINTS, Reliability
from core.config import Settings
from core.storage.repository import Storage
from tests.integration.test_api import LiveApi, serve_app

pytestmark = pytest.mark.integration

GAUGES = {
    "open_dsm_power_watts",
    "open_dsm_power_change_watts_per_second",
    "open_dsm_ratio",
    "open_dsm_duration_seconds",
    "open_dsm_state",
    "open_dsm_temperature_celsius",
    "open_dsm_point_reliability",
    "open_dsm_point_fault",
    "open_dsm_snapshot_age_seconds",
    "open_dsm_storage_fault",
    "open_dsm_db_writes_pending",
    "open_dsm_build_info",
}
COUNTERS = {
    "open_dsm_readings_accepted",
    "open_dsm_readings_rejected",
    "open_dsm_db_write_failures",
    "open_dsm_db_writes_dropped",
    "process_cpu_seconds",
}


@pytest.fixture
def api(settings: Settings, storage: Storage) -> Iterator[LiveApi]:
    """The app on a real port."""
    with serve_app(settings, storage) as live:
        yield live


def _scrape(
    base: str,
) -> dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]:
    """family name -> (type, {(sample name, sorted labels): value})."""
    reply = httpx.get(f"{base}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {}
    for family in text_string_to_metric_families(reply.text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        families[family.name] = (family.type, samples)
    return families


def _value(
    family: dict[tuple[str, tuple[tuple[str, str], ...]], float], point: str
) -> float | None:
    for (_, labels), value in family.items():
        if dict(labels).get("point") == point:
            return value
    return None


def test_names_types_units_and_no_sentinels(api: LiveApi) -> None:
    deadline = time.monotonic() + 5
    while api.core.snapshot.computed_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    before = _scrape(api.base_url)
    # Counters exist at 0 before the first reading; no point has a value, so none has a sample.
    assert (
        before["open_dsm_readings_accepted"][1][
            ("open_dsm_readings_accepted_total", (("source", "bacnet"),))
        ]
        == 0.0
    )
    assert (
        before["open_dsm_readings_rejected"][1][
            ("open_dsm_readings_rejected_total", (("source", "rest"),))
        ]
        == 0.0
    )
    assert _value(before["open_dsm_power_watts"][1], "input-power-meter") is None
    assert all(value != -1.0 for _, samples in before.values() for value in samples.values())

    assert httpx.post(f"{api.base_url}/api/v1/readings", json={"kw": 21.5}).status_code == 201
    assert httpx.post(f"{api.base_url}/api/v1/readings", json={"kw": -1e9}).status_code == 422
    families = _scrape(api.base_url)
    for name in GAUGES:
        assert families[name][0] == "gauge", name
    for name in COUNTERS:
        assert families[name][0] == "counter", name
    assert _value(families["open_dsm_power_watts"][1], "input-power-meter") == 21500.0
    accepted = families["open_dsm_readings_accepted"][1]
    assert accepted[("open_dsm_readings_accepted_total", (("source", "rest"),))] == 1.0
    rejected = families["open_dsm_readings_rejected"][1]
    assert rejected[("open_dsm_readings_rejected_total", (("source", "rest"),))] == 1.0

    # Every point in exactly one family; reliability is a state set with fixed label values.
    quantity_families = GAUGES & {
        "open_dsm_power_watts",
        "open_dsm_power_change_watts_per_second",
        "open_dsm_ratio",
        "open_dsm_duration_seconds",
        "open_dsm_state",
        "open_dsm_temperature_celsius",
    }
    shown = [
        dict(labels)["point"] for name in quantity_families for (_, labels) in families[name][1]
    ]
    assert len(shown) == len(set(shown))
    states = families["open_dsm_point_reliability"][1]
    assert len(states) == len(POINTS) * len(Reliability)
    for point in POINTS:
        on = [
            dict(k[1])["reliability"]
            for k, v in states.items()
            if dict(k[1])["point"] == point.name and v == 1.0
        ]
        assert len(on) == 1, point.name
    assert all(
        set(dict(labels)) == {"point"} for (_, labels) in families["open_dsm_point_fault"][1]
    )

    info = families["open_dsm_build_info"][1]
    (((_, labels), one),) = info.items()
    assert one == 1.0
    assert dict(labels)["version"] == "test"
    assert dict(labels)["python_version"] == platform.python_version()
    assert families["process_resident_memory_bytes"][0] == "gauge"
    assert "python_info" in families
