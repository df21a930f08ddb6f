"""End to end: the dispatch points over BACnet and the plan over REST agree.

`open-dsm serve` with a battery configured, a bacpypes3 client writing the meter and the battery
SOC over loopback UDP, and real HTTP.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServiceProcess, free_port, make_client

pytestmark = pytest.mark.e2e


async def _session(service: ServiceProcess) -> dict[str, Any]:
    from bacpypes3.pdu import Address
    from bacpypes3.primitivedata import ObjectIdentifier, Real

    seen: dict[str, Any] = {}
    client = make_client(free_port())
    address = Address(service.bacnet_address)

    async def read(oid: str, prop: str = "present-value") -> Any:
        return await client.read_property(address, ObjectIdentifier(oid), prop)

    try:
        # Two hours of history, so the day-ahead forecast (and the plan) has minutes to go on.
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        history = [
            {"observed_at": (now - timedelta(minutes=m)).isoformat(), "kw": 10.0 + (m % 7)}
            for m in range(2, 122)
        ]
        async with httpx.AsyncClient() as http:
            posted = await http.post(f"{service.base_url}/api/v1/readings", json=history)
            assert posted.status_code == 201, posted.text
        seen["names"] = [
            str(await read(f"analog-value,{i}", "object-name")) for i in (20, 21, 22, 23)
        ]
        await client.write_property(
            address, ObjectIdentifier("analog-value,8"), "present-value", Real(80.0), None, 10
        )
        for kw in (12.0, 14.0, 13.0):
            await client.write_property(
                address, ObjectIdentifier("analog-value,1"), "present-value", Real(kw), None, 12
            )
            await asyncio.sleep(0.4)
        await asyncio.sleep(1.5)  # a snapshot with the plan
        async with httpx.AsyncClient() as http:
            # The live layer moves the setpoint within the interval and a snapshot runs every
            # second: compare REST with BACnet reads taken around it that agree with each other
            # (no snapshot in between).
            for _ in range(20):
                before = (
                    float(await read("analog-value,20")),
                    float(await read("analog-value,22")),
                )
                plan = (await http.get(f"{service.base_url}/api/v1/dispatch/plan")).json()
                after = (float(await read("analog-value,20")), float(await read("analog-value,22")))
                if before == after:
                    break
            seen["plan"] = plan
            seen["setpoint"], seen["planned_peak"] = after
            seen["day_ahead"] = await http.get(f"{service.base_url}/api/v1/forecast/day-ahead")
        seen["setpoint_reliability"] = str(await read("analog-value,20", "reliability"))
        seen["units"] = str(await read("analog-value,20", "units"))
    finally:
        client.close()
    return seen


def test_dispatch_points_and_plan(tmp_path: Path) -> None:
    service = ServiceProcess(
        tmp_path / "data",
        [
            "--timezone",
            "UTC",
            "--snapshot-interval-s",
            "1",
            "--has-battery",
            "true",
            "--battery-capacity-kwh",
            "20",
            "--battery-charge-kw",
            "10",
            "--battery-reserve-pct",
            "10",
        ],
    )
    service.start()
    try:
        seen = asyncio.run(_session(service))
    finally:
        service.stop()
    assert seen["names"] == [
        "battery-power-setpoint",
        "ev-charge-power-limit",
        "planned-billing-peak",
        "outdoor-air-temperature",
    ]
    plan = seen["plan"]
    assert plan["configured"] is True
    assert plan["reliable"] is True, (plan["fallback"], plan["steps"][:1])
    assert len(plan["steps"]) == 96
    assert plan["soc_pct"] == pytest.approx(80.0)
    # BACnet and REST show the same decision (Real is float32 on the wire).
    assert seen["setpoint"] == pytest.approx(plan["setpoint_kw"], abs=1e-3)
    assert seen["planned_peak"] == pytest.approx(plan["planned_peak_kw"], abs=1e-3)
    assert seen["setpoint_reliability"] == "no-fault-detected"
    assert seen["units"] == "kilowatts"
    steps = plan["steps"]
    assert all(0.0 <= s["soc_pct"] <= 100.0 for s in steps)
    assert all(abs(s["battery_kw"]) <= 10.0 + 1e-6 for s in steps)
    day_ahead = seen["day_ahead"]
    assert day_ahead.status_code == 200
    assert len(day_ahead.json()["steps"]) == 96
