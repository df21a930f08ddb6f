"""End to end: BACnet and REST writes to the same input, one truth on every face.

`open-dsm serve` as a subprocess, a bacpypes3 client over loopback UDP and real HTTP: a REST write
reaches a BAS subscribed to COV, a REST reading is refused while a BACnet priority commands the
meter, and a relinquish reaches the core, REST `/points` and `/metrics`.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServiceProcess, free_port, make_client

pytestmark = pytest.mark.e2e

TOKEN = "one-truth"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _points(base: str) -> dict[str, float]:
    body = httpx.get(f"{base}/api/v1/points", timeout=5).json()
    return {p["name"]: p["present_value"] for p in body}


def _metric(base: str, point: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    match = re.search(rf'^open_dsm_power_watts{{point="{point}"}} (\S+)$', text, re.M)
    assert match, f"no metric for {point}"
    return float(match.group(1)) / 1000.0  # the metric is in watts, the point in kW


async def _session(service: ServiceProcess) -> dict[str, Any]:
    from bacpypes3.pdu import Address
    from bacpypes3.primitivedata import Null, ObjectIdentifier, Real

    seen: dict[str, Any] = {}
    base = service.base_url
    client = make_client(free_port())
    address = Address(service.bacnet_address)
    meter = ObjectIdentifier("analog-value,1")
    target = ObjectIdentifier("analog-value,6")

    async def read(oid: Any, prop: str = "present-value", index: int | None = None) -> Any:
        return await client.read_property(address, oid, prop, index)

    try:
        # A BAS subscribed to COV on demand-target hears a change made over REST.
        async with client.change_of_value(address, target, 21, False, 300) as cov:
            await asyncio.wait_for(cov.get_value(), 5)  # the initial notification
            async with httpx.AsyncClient() as http:
                reply = await http.put(
                    f"{base}/api/v1/demand/target", json={"target_kw": 27.5}, headers=AUTH
                )
            seen["put_target"] = reply.status_code
            heard = None
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                prop, value = await asyncio.wait_for(cov.get_value(), 5)
                if str(prop) == "present-value" and abs(float(value) - 27.5) < 1e-3:
                    heard = float(value)
                    break
            seen["cov_heard"] = heard
        seen["target_bacnet"] = float(await read(target))
        seen["target_prio16"] = (await read(target, "priority-array", 16)).real

        # BACnet commands the meter at priority 8: a REST reading is refused with 409.
        await client.write_property(address, meter, "present-value", Real(12.5), None, 8)
        async with httpx.AsyncClient() as http:
            refused = await http.post(f"{base}/api/v1/readings", json={"kw": 30.0}, headers=AUTH)
        seen["rest_refused"] = (refused.status_code, refused.json().get("detail"))
        seen["after_refusal"] = (float(await read(meter)), _points(base)["input-power-meter"])

        # Priority 16 holds 60, priority 8 is relinquished: every face shows 60.
        await client.write_property(address, meter, "present-value", Real(60.0), None, 16)
        await client.write_property(address, meter, "present-value", Null(()), None, 8)
        seen["after_relinquish"] = (
            float(await read(meter)),
            _points(base)["input-power-meter"],
            _metric(base, "input-power-meter"),
        )
        # With no priority above 16, REST writes priority 16 and BACnet reads it back.
        async with httpx.AsyncClient() as http:
            accepted = await http.post(f"{base}/api/v1/readings", json={"kw": 31.0}, headers=AUTH)
        seen["rest_accepted"] = accepted.status_code
        seen["after_rest"] = (
            float(await read(meter)),
            float((await read(meter, "priority-array", 16)).real),
            _points(base)["input-power-meter"],
            _metric(base, "input-power-meter"),
        )
    finally:
        client.close()
    return seen


def test_bacnet_and_rest_agree(tmp_path: Path) -> None:
    service = ServiceProcess(
        tmp_path / "data",
        ["--api-token", TOKEN, "--timezone", "UTC", "--snapshot-interval-s", "1"],
    )
    service.start()
    try:
        seen = asyncio.run(_session(service))
    finally:
        service.stop()
    assert seen["put_target"] == 200
    assert seen["cov_heard"] == pytest.approx(27.5)
    assert seen["target_bacnet"] == pytest.approx(27.5)
    assert float(seen["target_prio16"]) == pytest.approx(27.5)
    status, detail = seen["rest_refused"]
    assert status == 409 and "priority 8" in detail
    assert seen["after_refusal"] == pytest.approx((12.5, 12.5))
    assert seen["after_relinquish"] == pytest.approx((60.0, 60.0, 60.0))
    assert seen["rest_accepted"] == 201
    assert seen["after_rest"] == pytest.approx((31.0, 31.0, 31.0, 31.0))
