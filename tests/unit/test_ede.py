"""EDE 2.3 export: layout, one row per point, BACnet codes checked against bacpypes3."""

from __future__ import annotations

import csv
import dataclasses
import io
import zipfile
from datetime import UTC, datetime

import pytest
from bacpypes3.basetypes import EngineeringUnits
from bacpypes3.primitivedata import ObjectType as BacnetObjectType

from bacnet.calendar_table import CALENDARS
from bacnet.ede import (
    COLUMNS,
    OBJECT_TYPE_CODES,
    UNIT_CODES,
    UnknownUnitError,
    ede_file_names,
    ede_files,
    ede_zip,
    unit_code,
    unit_text,
)
from bacnet.points import DATABASE_REVISION, POINT_LIST_CHANGED, POINTS, ObjectType
from core.config import Settings
from core.errors import InvalidReading
from core.snapshot import ModelStatus, Snapshot
from core.validation import InputValidator

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def _settings() -> Settings:
    return Settings(timezone="UTC", device_instance=4711, device_name="Dsm;Site 1")


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text), delimiter=";"))


def _data_rows(text: str) -> list[list[str]]:
    return [row for row in _rows(text)[6:] if row and not row[0].startswith("#")]


def _point_rows(text: str) -> list[list[str]]:
    """The device, network-port and points' rows (the Calendar objects' rows follow them)."""
    return _data_rows(text)[: 2 + len(POINTS)]


def test_main_file_has_the_ede_header_lines() -> None:
    text = ede_files(_settings(), author="tester", timestamp=WHEN)["points"]
    assert text.startswith("# Engineering-Data-Exchange - B.I.G.-EU\r\n")
    rows = _rows(text)
    assert rows[1] == ["PROJECT_NAME", "Dsm;Site 1"]  # ';' kept, the cell quoted
    assert text.splitlines()[1] == 'PROJECT_NAME;"Dsm;Site 1"'
    assert rows[2] == ["VERSION_OF_REFERENCEFILE", str(DATABASE_REVISION)]
    assert rows[3] == ["TIMESTAMP_OF_LAST_CHANGE", "2024-05-06 07:08:09"]
    assert rows[4] == ["AUTHOR_OF_LAST_CHANGE", "tester"]
    assert rows[5] == ["VERSION_OF_LAYOUT", "2.3"]
    header = next(row for row in rows if row and row[0].startswith("# keyname"))
    assert ";".join(header) == (
        "# keyname;device obj.-instance;object-name;object-type;object-instance;description;"
        "present-value-default;min-present-value;max-present-value;settable;supports COV;"
        "hi-limit;low-limit;state-text-reference;unit-code;vendor-specific-address"
    )
    assert len(header) == len(COLUMNS)


def test_one_row_per_point_plus_the_device_and_network_port() -> None:
    settings = _settings()
    every = _data_rows(ede_files(settings, timestamp=WHEN)["points"])
    assert len(every) == len(POINTS) + 2 + len(CALENDARS)
    assert all(len(row) == len(COLUMNS) for row in every)
    rows = every[: 2 + len(POINTS)]
    device, port, *points = rows
    assert device[1:5] == ["4711", "Dsm;Site 1", "8", "4711"]
    assert port[1:5] == ["4711", "NetworkPort-1", "56", "1"]
    assert [row[2] for row in points] == [p.name for p in POINTS]
    assert all(row[1] == "4711" for row in rows)
    keys = [row[0] for row in rows]
    assert len(set(keys)) == len(keys)
    identifiers = [(row[3], row[4]) for row in points]
    assert len(set(identifiers)) == len(identifiers)
    for point, row in zip(POINTS, points, strict=True):
        assert row[3] == str(OBJECT_TYPE_CODES[point.object_type.value])
        assert row[4] == str(point.instance)
        assert row[5] and "{" not in row[5]  # a ";" is kept, as the device has it
        assert row[9] == ("Y" if point.writable else "N")
        assert row[10] == "Y"
        assert float(row[6]) == float(point.default)


def test_object_type_and_unit_codes_match_bacpypes3() -> None:
    for name, code in OBJECT_TYPE_CODES.items():
        assert int(BacnetObjectType(name)) == code, name
    assert {t.value for t in ObjectType} <= set(OBJECT_TYPE_CODES)
    for name, code in UNIT_CODES.items():
        assert int(EngineeringUnits(name)) == code, name
        assert str(EngineeringUnits(name)) == unit_text(name), name


def test_every_point_unit_has_a_code_and_the_units_file_lists_them() -> None:
    files = ede_files(_settings(), timestamp=WHEN)
    units = {int(row[0]): row[1] for row in _rows(files["units"]) if row and row[0].isdigit()}
    for point, row in zip(POINTS, _point_rows(files["points"])[2:], strict=True):
        if point.units is None:
            assert row[14] == ""
            continue
        assert int(row[14]) == int(EngineeringUnits(point.units))
        assert units[int(row[14])] == str(EngineeringUnits(point.units))


def test_unit_names_in_either_spelling_and_unknown_ones_fail_clearly() -> None:
    assert unit_code("kilowatt-hours") == unit_code("kilowattHours") == 19
    assert unit_code("no-units") == 95
    with pytest.raises(UnknownUnitError, match="furlongs"):
        unit_code("furlongsPerFortnight")
    odd = dataclasses.replace(POINTS[0], units="furlongsPerFortnight")
    with pytest.raises(UnknownUnitError):
        ede_files(_settings(), points=(odd,))


def test_state_text_references_resolve_for_binaries_only() -> None:
    files = ede_files(_settings(), timestamp=WHEN)
    texts = {
        row[0]: [t for t in row[1:] if t]
        for row in _rows(files["state-texts"])
        if row and not row[0].startswith("#")
    }
    assert _rows(files["state-texts"])[1][:3] == [
        "#Reference Number",
        "Text 1 or Inactive-Text",
        "Text 2 or Active-Text",
    ]
    referenced = set()
    for point, row in zip(POINTS, _point_rows(files["points"])[2:], strict=True):
        if point.object_type is ObjectType.BINARY_VALUE:
            assert point.state_text is not None
            assert texts[row[13]] == list(point.state_text)
            referenced.add(row[13])
            assert row[7] == row[8] == ""
        else:
            assert row[13] == ""
    assert referenced == set(texts)


def test_descriptions_fill_settings_and_name_the_forecaster_only_with_a_snapshot() -> None:
    settings = Settings(timezone="UTC", high_percentile=85)
    static = _data_rows(ede_files(settings, timestamp=WHEN)["points"])
    high = next(row for row in static if row[2] == "high-load-conditions")
    assert "85th percentile" in high[5]
    assert not any("forecaster:" in row[5] for row in static)
    live = Snapshot(model=ModelStatus(forecaster="mean-2-weeks"))
    named = _data_rows(ede_files(settings, timestamp=WHEN, snapshot=live)["points"])
    forecast = next(row for row in named if row[2] == "one-hour-future-power")
    assert "mean-2-weeks" in forecast[5]


def test_files_use_crlf_and_the_zip_holds_all_three() -> None:
    settings = _settings()
    files = ede_files(settings, timestamp=WHEN)
    assert set(files) == {"points", "state-texts", "units"}
    assert all(
        text.endswith("\r\n") and "\n" not in text.replace("\r\n", "") for text in files.values()
    )
    names = ede_file_names(settings)
    assert names["points"] == "Dsm_Site_1_EDE.csv"
    with zipfile.ZipFile(io.BytesIO(ede_zip(settings, timestamp=WHEN))) as archive:
        assert sorted(archive.namelist()) == sorted(names.values())
        assert archive.read(names["points"]).decode() == files["points"]


def test_last_change_is_when_the_point_list_changed_not_the_download() -> None:
    first = _rows(ede_files(_settings())["points"])[3]
    again = _rows(ede_files(_settings())["points"])[3]
    assert (
        first
        == again
        == [
            "TIMESTAMP_OF_LAST_CHANGE",
            POINT_LIST_CHANGED.strftime("%Y-%m-%d %H:%M:%S"),
        ]
    )


def test_min_and_max_present_value_are_the_enforced_limits() -> None:
    settings = _settings()
    rows = _point_rows(ede_files(settings, timestamp=WHEN)["points"])[2:]
    validator = InputValidator(settings)
    checked = 0
    for point, row in zip(POINTS, rows, strict=True):
        if point.input_key is None:
            assert row[7] == row[8] == ""
            continue
        low, high = float(row[7]), float(row[8])
        # The limits accept the in-range values next to them and refuse the ones just outside.
        validator.command(point.input_key, high)
        with pytest.raises(InvalidReading):
            validator.command(point.input_key, high + 1.0)
        with pytest.raises(InvalidReading):
            validator.command(point.input_key, low - 1.0)
        checked += 1
    assert checked >= 2


def test_calendar_objects_follow_the_points_with_their_type_code() -> None:
    rows = _data_rows(ede_files(_settings(), timestamp=WHEN)["points"])[2 + len(POINTS) :]
    assert [(row[2], row[3], row[4]) for row in rows] == [
        (spec.name, "6", str(spec.instance)) for spec in CALENDARS
    ]
    assert rows[0][2] == "holidays-closed" and rows[1][2] == "runs-like-monday"
    assert all(row[9] == "N" and "date-list writable" in row[5] for row in rows)
    assert int(BacnetObjectType.calendar) == 6


def test_present_value_default_of_a_writable_point_is_its_relinquish_default() -> None:
    """--demand-target-kw 50: the demand target's row says 50, as relinquish-default reads."""
    settings = Settings(timezone="UTC", device_instance=4711, demand_target_kw=50.0)
    rows = _data_rows(ede_files(settings, timestamp=WHEN)["points"])
    by_name = {row[2]: row for row in rows}
    assert float(by_name["demand-target"][6]) == 50.0
    assert float(by_name["one-hour-future-power"][6]) == -1.0
