"""End to end: `open-dsm serve` as a subprocess, a real bacpypes3 client over loopback UDP, real
HTTP, and a restart on the same SQLite file."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bacnet.calendar_table import CALENDARS
from bacnet.points import POINTS
from tests.helpers import SEED_POINTS, ServiceProcess, free_port, make_client

pytestmark = pytest.mark.e2e

DEVICE = 500123
TOKEN = "e2e-secret"
SEVEN_POINTS = SEED_POINTS
STALE_AFTER_S = 4


def _service(tmp_path: Path) -> ServiceProcess:
    return ServiceProcess(
        tmp_path / "data",
        [
            "--device-instance",
            str(DEVICE),
            "--device-name",
            "E2E-DSM",
            "--vendor-id",
            "555",
            "--timezone",
            "UTC",
            "--api-token",
            TOKEN,
            "--stale-after-s",
            str(STALE_AFTER_S),
            "--snapshot-interval-s",
            "1",
            "--max-kw",
            "5000",
        ],
    )


async def _error_of(coro: Any) -> str:
    """Run a request expected to fail; return 'class: code' or the reject/abort reason."""
    from bacpypes3.apdu import ErrorRejectAbortNack

    try:
        await coro
    except ErrorRejectAbortNack as err:
        return str(err)
    return "ack"


async def _raw_write(client: Any, address: Any, oid: str, prop: str, value: Any, priority=None):
    """A WriteProperty whose value the client library does not cast (wrong types on purpose)."""
    from bacpypes3.apdu import WritePropertyRequest
    from bacpypes3.constructeddata import Any as BacnetAny
    from bacpypes3.primitivedata import ObjectIdentifier

    request = WritePropertyRequest(
        objectIdentifier=ObjectIdentifier(oid), propertyIdentifier=prop, destination=address
    )
    request.propertyValue = BacnetAny(value)
    if priority is not None:
        request.priority = priority
    return await client.request(request)


async def _bacnet_session(service: ServiceProcess) -> dict[str, Any]:
    """Everything the BAS does; returns observations for the assertions."""
    from bacpypes3.basetypes import BinaryPV
    from bacpypes3.pdu import Address
    from bacpypes3.primitivedata import (
        Boolean,
        CharacterString,
        Null,
        ObjectIdentifier,
        ObjectType,
        Real,
    )

    seen: dict[str, Any] = {}
    client = make_client(free_port())
    address = Address(service.bacnet_address)
    try:
        # Directed Who-Is / I-Am, and Who-Has by name.
        i_ams = await client.who_is(DEVICE, DEVICE, address, timeout=3)
        seen["i_am"] = [(i.iAmDeviceIdentifier[1], i.vendorID) for i in i_ams]
        i_haves = await client.who_has(
            DEVICE,
            DEVICE,
            object_name=CharacterString("input-power-meter"),
            address=address,
            timeout=3,
        )
        seen["i_have"] = [tuple(i.objectIdentifier) for i in i_haves]

        async def read(oid: str, prop: str, index: int | None = None) -> Any:
            return await client.read_property(address, ObjectIdentifier(oid), prop, index)

        device_oid = f"device,{DEVICE}"
        seen["device"] = {
            prop: await read(device_oid, prop)
            for prop in (
                "object-name",
                "vendor-identifier",
                "vendor-name",
                "model-name",
                "firmware-revision",
                "application-software-version",
                "database-revision",
                "protocol-services-supported",
                "protocol-object-types-supported",
            )
        }
        seen["object_list"] = [tuple(o) for o in await read(device_oid, "object-list")]

        # ReadProperty of every point.
        points = {}
        for kind, instance, _ in SEVEN_POINTS:
            oid = f"{kind},{instance}"
            entry = {
                prop: await read(oid, prop)
                for prop in (
                    "object-name",
                    "present-value",
                    "status-flags",
                    "reliability",
                    "event-state",
                    "out-of-service",
                    "description",
                )
            }
            if kind == "analog-value":
                entry["units"] = await read(oid, "units")
                entry["cov-increment"] = await read(oid, "cov-increment")
            points[oid] = entry
        seen["points_before"] = points

        # ReadPropertyMultiple of all seven.
        spec: list[Any] = []
        for kind, instance, _ in SEVEN_POINTS:
            spec += [
                ObjectIdentifier(f"{kind},{instance}"),
                ["object-name", "present-value", "reliability"],
            ]
        seen["rpm"] = await client.read_property_multiple(address, spec)

        # COV: subscribe (confirmed) to the input and (unconfirmed) to a derived point.
        meter = ObjectIdentifier("analog-value,1")
        async with client.change_of_value(address, meter, 17, True, 300) as meter_cov:
            initial = await asyncio.wait_for(meter_cov.get_value(), 5)
            seen["cov_initial"] = initial
            # WriteProperty at priority 8, and read it back.
            await client.write_property(address, meter, "present-value", Real(12.5), None, 8)
            notified = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                prop, value = await asyncio.wait_for(meter_cov.get_value(), 5)
                notified.append((str(prop), value))
                if str(prop) == "present-value" and abs(float(value) - 12.5) < 1e-3:
                    break
            seen["cov_after_write"] = notified
        seen["pv_after_write"] = await read("analog-value,1", "present-value")
        seen["prio8_after_write"] = await read("analog-value,1", "priority-array", 8)
        seen["ccp_after_write"] = await read("analog-value,1", "current-command-priority")

        derived = ObjectIdentifier("binary-value,1")
        async with client.change_of_value(address, derived, 18, False, 300) as derived_cov:
            seen["cov_unconfirmed"] = await asyncio.wait_for(derived_cov.get_value(), 5)

        # The same values over HTTP, read right after the BACnet reads.
        bacnet_now = {
            f"{k},{i}": (
                await read(f"{k},{i}", "present-value"),
                await read(f"{k},{i}", "reliability"),
            )
            for k, i, _ in SEVEN_POINTS
        }
        async with httpx.AsyncClient() as http:
            http_now = (await http.get(f"{service.base_url}/api/v1/points", timeout=5)).json()
        seen["bacnet_vs_http"] = (bacnet_now, http_now)

        # Bad writes: each answers an error and changes nothing.
        errors = {}
        errors["nan"] = await _error_of(
            client.write_property(address, meter, "present-value", Real(math.nan), None, 8)
        )
        errors["inf"] = await _error_of(
            client.write_property(address, meter, "present-value", Real(math.inf), None, 8)
        )
        errors["huge"] = await _error_of(
            client.write_property(address, meter, "present-value", Real(1e30), None, 8)
        )
        errors["above_max"] = await _error_of(
            client.write_property(address, meter, "present-value", Real(5000.5), None, 8)
        )
        errors["wrong_type"] = await _error_of(
            _raw_write(
                client, address, "analog-value,1", "present-value", CharacterString("twelve"), 8
            )
        )
        errors["priority_17"] = await _error_of(
            client.write_property(address, meter, "present-value", Real(3.0), None, 17)
        )
        errors["units"] = await _error_of(client.write_property(address, meter, "units", 47))
        errors["out_of_service"] = await _error_of(
            _raw_write(client, address, "analog-value,1", "out-of-service", Boolean(True))
        )
        errors["object_type"] = await _error_of(
            _raw_write(client, address, "analog-value,1", "object-type", ObjectType("binary-value"))
        )
        errors["output_pv"] = await _error_of(
            client.write_property(
                address, ObjectIdentifier("analog-value,2"), "present-value", Real(1.0)
            )
        )
        errors["binary_pv"] = await _error_of(
            _raw_write(client, address, "binary-value,1", "present-value", BinaryPV("active"))
        )
        errors["device_name"] = await _error_of(
            client.write_property(
                address, ObjectIdentifier(device_oid), "object-name", CharacterString("pwned")
            )
        )
        errors["relinquish_default"] = await _error_of(
            client.write_property(address, meter, "relinquish-default", Real(9.0))
        )
        seen["errors"] = errors
        seen["after_bad_writes"] = {
            "pv": await read("analog-value,1", "present-value"),
            "units": await read("analog-value,1", "units"),
            "object_type": await read("analog-value,1", "object-type"),
            "oos": await read("analog-value,1", "out-of-service"),
            "device_name": await read(device_oid, "object-name"),
            "av2": await read("analog-value,2", "present-value"),
        }

        # Relinquish priority 8 with Null: the slot empties, the value is held.
        await client.write_property(address, meter, "present-value", Null(()), None, 8)
        seen["prio8_after_relinquish"] = await read("analog-value,1", "priority-array", 8)
        seen["ccp_after_relinquish"] = await read("analog-value,1", "current-command-priority")
        seen["pv_after_relinquish"] = await read("analog-value,1", "present-value")

        # Demand-charge points: the target and the optional inputs are commandable inputs.
        target = ObjectIdentifier("analog-value,6")
        await client.write_property(address, target, "present-value", Real(25.0), None, 10)
        soc = ObjectIdentifier("analog-value,8")
        demand = {
            "target_pv": await read("analog-value,6", "present-value"),
            "target_units": await read("analog-value,6", "units"),
            "soc_150": await _error_of(
                client.write_property(address, soc, "present-value", Real(150.0), None, 10)
            ),
            "kw_to_shed_write": await _error_of(
                client.write_property(
                    address, ObjectIdentifier("analog-value,16"), "present-value", Real(1.0)
                )
            ),
            "permit_name": await read("binary-value,4", "object-name"),
            "chiller_units": await read("analog-value,17", "units"),
        }
        await client.write_property(address, soc, "present-value", Real(55.0), None, 10)
        demand["soc_pv"] = await read("analog-value,8", "present-value")
        demand["soc_reliability"] = await read("analog-value,8", "reliability")
        await asyncio.sleep(1.2)  # one snapshot interval
        demand["effective_target"] = await read("analog-value,15", "present-value")
        seen["demand"] = demand

        # Stale input: no write for longer than the limit.
        await asyncio.sleep(STALE_AFTER_S + 1.5)
        seen["stale"] = {
            "reliability": await read("analog-value,1", "reliability"),
            "flags": await read("analog-value,1", "status-flags"),
            "derived": await read("analog-value,3", "reliability"),
        }
        await client.write_property(address, meter, "present-value", Real(14.0), None, 12)
        await asyncio.sleep(0.3)
        seen["fresh_again"] = await read("analog-value,1", "reliability")
    finally:
        client.close()
    return seen


def test_service_end_to_end(tmp_path: Path) -> None:
    service = _service(tmp_path)
    ready_s = service.start()
    try:
        seen = asyncio.run(_bacnet_session(service))
        base = service.base_url

        # REST: writes need the token; reads do not.
        past = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
        batch = [
            {"observed_at": (past + timedelta(minutes=m, seconds=s)).isoformat(), "kw": 10 + m}
            for m in range(5)
            for s in (0, 30)
        ]
        unauth = httpx.post(f"{base}/api/v1/readings", json=batch, timeout=5)
        wrong = httpx.post(
            f"{base}/api/v1/readings",
            json=batch,
            timeout=5,
            headers={"Authorization": "Bearer nope"},
        )
        auth = {"Authorization": f"Bearer {TOKEN}"}
        bad_batch = [*batch[:2], {"observed_at": past.isoformat(), "kw": -1e9}]
        rejected = httpx.post(f"{base}/api/v1/readings", json=bad_batch, headers=auth, timeout=5)
        posted = httpx.post(f"{base}/api/v1/readings", json=batch, headers=auth, timeout=5)
        window = {"start": past.isoformat(), "end": (past + timedelta(minutes=5)).isoformat()}
        listed = httpx.get(f"{base}/api/v1/readings", params=window, timeout=5).json()
        paged = httpx.get(f"{base}/api/v1/readings", params={**window, "limit": 2}, timeout=5)
        as_csv = httpx.get(
            f"{base}/api/v1/readings", params=window, headers={"Accept": "text/csv"}, timeout=5
        )
        docs = httpx.get(f"{base}/docs", timeout=5)
        rest_demand = httpx.get(f"{base}/api/v1/demand", timeout=5).json()
        openapi = httpx.get(f"{base}/openapi.json", timeout=5).json()
    finally:
        exit_code = service.stop(signal.SIGTERM)

    # Discovery and the device object.
    assert ready_s < 30
    assert seen["i_am"] == [(DEVICE, 555)]
    assert seen["i_have"] == [(ObjectTypeName("analog-value"), 1)]
    device = seen["device"]
    assert str(device["object-name"]) == "E2E-DSM"
    assert device["vendor-identifier"] == 555
    assert str(device["model-name"]) == "open-dsm"
    assert str(device["firmware-revision"]) == str(device["application-software-version"])
    services = str(device["protocol-services-supported"])
    for name in (
        "read-property",
        "read-property-multiple",
        "write-property",
        "subscribe-cov",
        "who-is",
        "who-has",
    ):
        assert name in services.split(";"), (name, services)
    # Services only initiated (I-Am, I-Have, COV notifications) are not claimed (#28).
    for name in ("reinitialize-device", "i-am", "i-have", "confirmed-cov-notification"):
        assert name not in services.split(";"), (name, services)
    assert set(str(device["protocol-object-types-supported"]).split(";")) == {
        "analog-value",
        "binary-value",
        "device",
        "network-port",
        "calendar",
    }
    # device, network port, every point, the Calendar objects
    assert len(seen["object_list"]) == 2 + len(POINTS) + len(CALENDARS)

    # Every point: name, fault until a value exists, units and COV increment on analogs.
    for kind, instance, name in SEVEN_POINTS:
        entry = seen["points_before"][f"{kind},{instance}"]
        assert str(entry["object-name"]) == name
        assert str(entry["event-state"]) == "normal"
        assert entry["out-of-service"] == 0
        assert str(entry["reliability"]) == "no-sensor"
        assert list(entry["status-flags"]) == [0, 1, 0, 0]
        assert str(entry["description"])
        if kind == "analog-value":
            assert entry["cov-increment"] > 0
            expected_units = "minutes" if name == "model-training-time" else "kilowatts"
            assert str(entry["units"]) == expected_units
            if name != "input-power-meter":
                assert float(entry["present-value"]) == -1.0
        else:
            assert str(entry["present-value"]) == "inactive"
    assert "per minute" in str(seen["points_before"]["analog-value,3"]["description"])
    assert "mean-2-weeks" in str(seen["points_before"]["analog-value,2"]["description"])

    rpm_names = [str(v) for _, p, _, v in seen["rpm"] if str(p) == "object-name"]
    assert rpm_names == [name for _, _, name in SEVEN_POINTS]
    assert len(seen["rpm"]) == 21

    # Commanding and COV.
    assert str(seen["cov_initial"][0]) in ("present-value", "status-flags")
    assert any(
        p == "present-value" and abs(float(v) - 12.5) < 1e-3 for p, v in seen["cov_after_write"]
    )
    assert abs(float(seen["pv_after_write"]) - 12.5) < 1e-3
    assert abs(float(seen["prio8_after_write"].real) - 12.5) < 1e-3
    assert seen["ccp_after_write"].unsigned == 8
    assert str(seen["cov_unconfirmed"][0]) in ("present-value", "status-flags")

    bacnet_now, http_now = seen["bacnet_vs_http"]
    by_oid = {p["object_identifier"]: p for p in http_now}
    for oid, (value, reliability) in bacnet_now.items():
        rest = by_oid[oid]
        assert rest["reliability"] == str(reliability), oid
        if isinstance(rest["present_value"], bool):
            assert rest["present_value"] == (str(value) == "active"), oid
        else:
            assert abs(rest["present_value"] - float(value)) < 1e-3, oid

    # Bad writes: the proper errors, nothing changed.
    errors = seen["errors"]
    for key in ("nan", "inf", "huge", "above_max"):
        assert errors[key] == "property: value-out-of-range", (key, errors[key])
    for key in (
        "units",
        "out_of_service",
        "object_type",
        "output_pv",
        "binary_pv",
        "device_name",
        "relinquish_default",
    ):
        assert errors[key] == "property: write-access-denied", (key, errors[key])
    assert errors["wrong_type"] != "ack"
    assert errors["priority_17"] != "ack"
    after = seen["after_bad_writes"]
    assert abs(float(after["pv"]) - 12.5) < 1e-3
    assert str(after["units"]) == "kilowatts"
    assert str(after["object_type"]) == "analog-value"
    assert after["oos"] == 0
    assert str(after["device_name"]) == "E2E-DSM"
    assert float(after["av2"]) != 1.0

    # Relinquish: slot 8 empty, no commanding priority, last reading held.
    assert seen["prio8_after_relinquish"].null is not None
    assert seen["ccp_after_relinquish"].null is not None
    assert abs(float(seen["pv_after_relinquish"]) - 12.5) < 1e-3

    # Staleness and recovery.
    assert str(seen["stale"]["reliability"]) == "communication-failure"
    assert list(seen["stale"]["flags"])[1] == 1
    assert str(seen["stale"]["derived"]) == "communication-failure"
    assert str(seen["fresh_again"]) == "no-fault-detected"

    # Demand points over BACnet.
    demand = seen["demand"]
    assert abs(float(demand["target_pv"]) - 25.0) < 1e-3
    assert str(demand["target_units"]) == "kilowatts"
    assert demand["soc_150"] == "property: value-out-of-range"
    assert demand["kw_to_shed_write"] == "property: write-access-denied"
    assert str(demand["permit_name"]) == "ev-charge-permit"
    assert str(demand["chiller_units"]) == "percent"
    assert abs(float(demand["soc_pv"]) - 55.0) < 1e-3
    assert str(demand["soc_reliability"]) == "no-fault-detected"
    assert float(demand["effective_target"]) >= 25.0 - 1e-3
    assert rest_demand["target_kw"] == 25.0

    # REST writes and reads.
    assert unauth.status_code == 401 and "Bearer" in unauth.json()["detail"]
    assert wrong.status_code == 401
    assert rejected.status_code == 422 and "reading 2" in rejected.json()["detail"]
    assert posted.status_code == 201, posted.text
    assert posted.json() == {"accepted": 10, "live": 0, "historical_minutes": 5}
    assert [round(i["kw"], 6) for i in listed["items"]] == [10, 11, 12, 13, 14]
    assert all(i["sample_count"] == 2 for i in listed["items"])
    assert paged.json()["next_start"] is not None and 'rel="next"' in paged.headers["link"]
    assert as_csv.headers["content-type"].startswith("text/csv")
    header = "observed_at,kw,sample_count,outdoor_air_temp,dispatched_kw"
    assert as_csv.text.splitlines()[0] == header
    assert len(as_csv.text.splitlines()) == 6
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "/api/v1/readings" in openapi["paths"]
    assert exit_code == 0, service.log()

    # Restart on the same database: readings and the last snapshot come back.
    again = _service(tmp_path)
    again.start()
    try:
        relisted = httpx.get(f"{again.base_url}/api/v1/readings", params=window, timeout=5).json()
        points = httpx.get(f"{again.base_url}/api/v1/points", timeout=5).json()
    finally:
        again.stop()
    assert relisted["items"] == listed["items"]
    meter = next(p for p in points if p["name"] == "input-power-meter")
    assert abs(meter["present_value"] - 14.0) < 1e-6


def ObjectTypeName(name: str) -> Any:
    """The bacpypes3 ObjectType for ``name`` (compares equal to the tuple element)."""
    from bacpypes3.primitivedata import ObjectType

    return ObjectType(name)
