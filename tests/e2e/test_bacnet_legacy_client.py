"""An independent client (the original bacpypes, its own venv) against the running service."""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from bacnet.calendar_table import CALENDARS
from bacnet.points import POINTS
from tests.helpers import ServiceProcess, free_port

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
LEGACY_PYTHON = ROOT / ".venv-legacy" / "bin" / "python"
CLIENT = ROOT / "tests" / "legacy_bacpypes" / "client.py"
INSTANCE = 500901
# BACnetServicesSupported bits of what the device executes (not what it only initiates).
CLAIMED_BITS = {5, 8, 9, 12, 14, 15, 16, 33, 34}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the legacy client's whole session once against a fresh service."""
    if not LEGACY_PYTHON.exists():
        pytest.skip("the legacy bacpypes venv is missing: run `make legacy-venv` (make test does)")
    service = ServiceProcess(
        tmp_path_factory.mktemp("legacy") / "data", ["--device-instance", str(INSTANCE)]
    )
    service.start()
    try:
        done = subprocess.run(
            [
                str(LEGACY_PYTHON),
                str(CLIENT),
                service.bacnet_address,
                str(INSTANCE),
                str(free_port(socket.SOCK_DGRAM)),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result: dict[str, Any] = json.loads(done.stdout)
        result["ede"] = httpx.get(f"{service.base_url}/api/v1/points.ede.csv", timeout=10).text
    finally:
        service.stop()
    assert result["failure"] == []
    return result


def test_discovery_and_pics_walk(session: dict[str, Any]) -> None:
    """Directed Who-Is finds the device; every property of every object reads back."""
    assert session["i_am"] == [INSTANCE]
    assert session["wildcard"] == ["ok", "OpenDsm"]
    # device + network port + the Calendar objects
    assert len(session["object_list"]) == len(POINTS) + 2 + len(CALENDARS)
    assert session["walk_errors"] == []
    assert session["decode_failures"] == []
    for key, values in session["walk"].items():
        listed = set(values["propertyList"])
        assert listed.isdisjoint({"objectIdentifier", "objectName", "objectType", "propertyList"})
        assert set(values) - {"objectIdentifier", "objectName", "objectType"} == listed | {
            "propertyList"
        }, key
    device = session["walk"][f"device,{INSTANCE}"]
    claimed = {i for i, bit in enumerate(device["protocolServicesSupported"]) if bit}
    assert claimed == CLAIMED_BITS
    assert "apduLength" in session["walk"]["networkPort,1"]["propertyList"]


def test_commandable_write_relinquish_cov_and_wpm(session: dict[str, Any]) -> None:
    """Write @16 and @8, relinquish @8 and @16 (Null, no priority), COV, WPM ok and refused."""
    assert session["writes"] == ["ack", "ack"]
    assert session["after_write"] == pytest.approx(123.4, rel=1e-6)
    assert session["relinquish"] == "ack"
    assert session["after_relinquish"] == pytest.approx(60.0)
    assert session["relinquish_16_without_priority"] == "ack"
    assert session["subscribe"] == "ack"
    assert 70.5 in session["cov_values"]
    assert session["active_cov"] == 1
    assert (session["cancel"], session["active_cov_after_cancel"]) == ("ack", 0)
    assert session["wpm_ok"] == "ack" and session["after_wpm"] == pytest.approx(55.0)
    assert session["wpm_read_only"] == "WritePropertyMultipleError:writeAccessDenied"
    # An Abort raised in a handler carries SRV: the client matches it (not a timeout).
    assert session["wpm_too_many"] == "AbortPDU:9"  # out-of-resources


def test_every_ede_row_matches_what_bacnet_reads(session: dict[str, Any]) -> None:
    """Object name, description and min/max present value are the device's."""
    rows = list(csv.reader(io.StringIO(session["ede"]), delimiter=";"))
    assert rows[0] == ["# Engineering-Data-Exchange - B.I.G.-EU"]
    types = {"2": "analogValue", "5": "binaryValue", "8": "device", "6": "calendar"}
    types["56"] = "networkPort"
    checked = 0
    for row in rows[6:]:
        if not row or row[0].startswith("#"):
            continue
        values = session["walk"][f"{types[row[3]]},{row[4]}"]
        assert row[2] == values["objectName"]
        assert row[5] == " ".join(values.get("description", "").split())
        for column, prop in ((7, "minPresValue"), (8, "maxPresValue")):
            if row[column]:
                assert float(row[column]) == pytest.approx(values[prop])
            else:
                assert prop not in values["propertyList"]
        # present-value-default: what the point reads with nothing written (the meter's follows
        # its last reading, which the session changed after the walk).
        if row[9] == "Y" and row[2] != "input-power-meter":
            assert float(row[6]) == pytest.approx(values["relinquishDefault"])
        checked += 1
    # every object: the points, the device, the network port, the calendars
    assert checked == len(POINTS) + 2 + len(CALENDARS)
