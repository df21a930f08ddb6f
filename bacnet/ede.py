"""EDE 2.3 point-list export (BIG-EU Engineering Data Exchange) generated from the point table.

Three semicolon-separated files, as integrators' tools expect them:

* ``points`` (``<project>_EDE.csv``): the main file; one row for the device object and one per
  point. This is the file BAS engineering tools import, and the one ``GET /api/v1/points.ede.csv``
  serves. Its ``state-text-reference`` and ``unit-code`` columns point into the other two.
* ``state-texts`` (``<project>_StateTexts.csv``): inactive/active texts of the binary points.
* ``units`` (``<project>_Units.csv``): the BACnet engineering-unit codes used, with their names.

``ede_zip`` bundles the three under those names. Pure Python: no bacpypes3 import, so the REST
face can use it; the numeric codes are checked against bacpypes3 in the unit tests.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from bacnet.calendar_table import CALENDAR_OBJECT_TYPE_CODE, CALENDARS, CalendarSpec
from bacnet.points import (
    DATABASE_REVISION,
    NETWORK_PORT_INSTANCE,
    NETWORK_PORT_NAME,
    POINT_LIST_CHANGED,
    POINTS,
    ObjectType,
    PointSpec,
    present_value_limits,
)
from core.config import Settings
from core.snapshot import Snapshot

LAYOUT_VERSION = "2.3"
# The first line of EDE files written by the B.I.G.-EU tools and YABE; parsers key on it.
EDE_SIGNATURE = "# Engineering-Data-Exchange - B.I.G.-EU"
COLUMNS: tuple[str, ...] = (
    "keyname",
    "device obj.-instance",
    "object-name",
    "object-type",
    "object-instance",
    "description",
    "present-value-default",
    "min-present-value",
    "max-present-value",
    "settable",
    "supports COV",
    "hi-limit",
    "low-limit",
    "state-text-reference",
    "unit-code",
    "vendor-specific-address",
)
_MANDATORY = ("mandatory",) * 5 + ("optional",) * (len(COLUMNS) - 5)
FILE_KINDS: tuple[str, ...] = ("points", "state-texts", "units")
FILE_SUFFIXES: dict[str, str] = {
    "points": "_EDE.csv",
    "state-texts": "_StateTexts.csv",
    "units": "_Units.csv",
}

# BACnet object-type codes (ASHRAE 135 clause 21, BACnetObjectType).
DEVICE_OBJECT_TYPE = 8
NETWORK_PORT_OBJECT_TYPE = 56
OBJECT_TYPE_CODES: dict[str, int] = {
    ObjectType.ANALOG_VALUE.value: 2,
    ObjectType.BINARY_VALUE.value: 5,
    "device": DEVICE_OBJECT_TYPE,
    "calendar": CALENDAR_OBJECT_TYPE_CODE,
    "network-port": NETWORK_PORT_OBJECT_TYPE,
}

# BACnet engineering-unit codes (BACnetEngineeringUnits), keyed by bacpypes3's attribute name.
# Every units name a point may carry must be here; the unit tests check the codes against
# bacpypes3.basetypes.EngineeringUnits.
UNIT_CODES: dict[str, int] = {
    "noUnits": 95,
    "percent": 98,
    "percentPerSecond": 99,
    "percentRelativeHumidity": 29,
    "partsPerMillion": 96,
    "perMinute": 100,
    "perHour": 131,
    "watts": 47,
    "kilowatts": 48,
    "megawatts": 49,
    "kilovoltAmperes": 9,
    "kilovoltAmperesReactive": 12,
    "powerFactor": 15,
    "wattHours": 18,
    "kilowattHours": 19,
    "megawattHours": 146,
    "kilovoltAmpereHours": 240,
    "kilowattHoursPerSquareMeter": 137,
    "wattsPerSquareMeter": 35,
    "volts": 5,
    "kilovolts": 6,
    "milliamperes": 2,
    "amperes": 3,
    "hertz": 27,
    "milliseconds": 159,
    "seconds": 73,
    "minutes": 72,
    "hours": 71,
    "days": 70,
    "weeks": 69,
    "months": 68,
    "years": 67,
    "degreesCelsius": 62,
    "degreesKelvin": 63,
    "degreesFahrenheit": 64,
    "deltaDegreesFahrenheit": 120,
    "deltaDegreesKelvin": 121,
    "pascals": 53,
    "kilopascals": 54,
    "poundsForcePerSquareInch": 56,
    "tonsRefrigeration": 52,
    "btusPerHour": 50,
    "litersPerSecond": 87,
    "litersPerMinute": 88,
    "cubicFeetPerMinute": 84,
    "cubicMetersPerHour": 135,
    "currency1": 105,
}

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


class UnknownUnitError(ValueError):
    """A point names an engineering unit that has no EDE unit code here."""


def canonical_unit_name(units: str) -> str:
    """bacpypes3 attribute spelling of a units name: ``kilowatt-hours`` -> ``kilowattHours``."""
    head, *rest = units.strip().split("-")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def unit_text(units: str) -> str:
    """BACnet (ASN.1) spelling of a units name: ``kilowattHours`` -> ``kilowatt-hours``."""
    return _CAMEL_BOUNDARY.sub("-", canonical_unit_name(units)).lower()


def unit_code(units: str) -> int:
    """The BACnet engineering-unit code of a units name (either spelling); raise if unknown."""
    name = canonical_unit_name(units)
    try:
        return UNIT_CODES[name]
    except KeyError:
        raise UnknownUnitError(
            f"no BACnet unit code for units {units!r}; add it to bacnet.ede.UNIT_CODES"
        ) from None


def object_type_code(object_type: str) -> int:
    """The BACnet object-type code of an object type (bacpypes3 spelling); raise if unknown."""
    try:
        return OBJECT_TYPE_CODES[str(object_type)]
    except KeyError:
        raise ValueError(
            f"no BACnet object-type code for {object_type!r}; add it to OBJECT_TYPE_CODES"
        ) from None


def _text(value: str) -> str:
    """A cell on one line; ';' is kept (the CSV writer quotes the cell), as the device has it."""
    return " ".join(value.split())


def _number(value: float | bool | None) -> str:
    """A plain decimal cell: booleans as 0/1, integral floats without a fraction."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _csv(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerows(rows)
    return buffer.getvalue()


def _description(point: PointSpec, settings: Settings, snapshot: Snapshot | None) -> str:
    """The point's description with settings filled in; the forecaster only with a snapshot."""
    if snapshot is None:
        # A static export names no forecaster: the serving one can change after every training.
        return dataclasses.replace(point, names_forecaster=False).describe(Snapshot(), settings)
    return point.describe(snapshot, settings)


def state_text_references(
    points: Sequence[PointSpec] = POINTS,
) -> dict[tuple[str, ...], int]:
    """1-based reference numbers of the distinct state-text tuples, in point-table order."""
    references: dict[tuple[str, ...], int] = {}
    for point in points:
        if point.state_text is not None and tuple(point.state_text) not in references:
            references[tuple(point.state_text)] = len(references) + 1
    return references


def present_value_default(
    point: PointSpec, settings: Settings, snapshot: Snapshot | None
) -> float | bool:
    """What the point reads with nothing written: a writable point's relinquish-default."""
    if point.input_key is not None:
        state = None if snapshot is None else snapshot.commands.get(point.input_key)
        if state is not None and state.relinquish_default is not None:
            return state.relinquish_default
        if point.input_key == "demand_target_kw" and settings.demand_target_kw is not None:
            return settings.demand_target_kw
    return point.default


def ede_files(
    settings: Settings,
    *,
    author: str = "open-dsm",
    timestamp: datetime | None = None,
    snapshot: Snapshot | None = None,
    points: Sequence[PointSpec] = POINTS,
    calendars: Sequence[CalendarSpec] = CALENDARS,
) -> dict[str, str]:
    """The EDE 2.3 texts keyed 'points', 'state-texts' and 'units' (semicolon-separated, CRLF).

    The Calendar objects follow the points (present-value read-only, date-list writable).

    TIMESTAMP_OF_LAST_CHANGE is when the point list last changed (``POINT_LIST_CHANGED``) unless
    ``timestamp`` says otherwise; min/max present value are the limits the core enforces.
    """
    when = (timestamp or POINT_LIST_CHANGED).astimezone(UTC)
    device_instance = str(settings.device_instance)
    device_name = _text(settings.device_name)
    references = state_text_references(points)

    rows: list[list[str]] = [
        [EDE_SIGNATURE],
        ["PROJECT_NAME", device_name],
        ["VERSION_OF_REFERENCEFILE", str(DATABASE_REVISION)],
        ["TIMESTAMP_OF_LAST_CHANGE", when.strftime("%Y-%m-%d %H:%M:%S")],
        ["AUTHOR_OF_LAST_CHANGE", _text(author)],
        ["VERSION_OF_LAYOUT", LAYOUT_VERSION],
        ["#" + _MANDATORY[0], *_MANDATORY[1:]],
        ["# " + COLUMNS[0], *COLUMNS[1:]],
        [
            device_name,
            device_instance,
            device_name,
            str(DEVICE_OBJECT_TYPE),
            device_instance,
            _text(settings.device_description),
            *([""] * 3),
            "N",
            "N",
            *([""] * 5),
        ],
        [  # the network-port object: every object of the device has its row
            f"{device_name}.{NETWORK_PORT_NAME}",
            device_instance,
            NETWORK_PORT_NAME,
            str(NETWORK_PORT_OBJECT_TYPE),
            str(NETWORK_PORT_INSTANCE),
            *([""] * 4),
            "N",
            "N",
            *([""] * 5),
        ],
    ]
    used_units: dict[int, str] = {}
    for point in points:
        is_binary = point.object_type is ObjectType.BINARY_VALUE
        code = ""
        units = point.units_for(settings)
        if units is not None:
            used_units[unit_code(units)] = unit_text(units)
            code = str(unit_code(units))
        limits = present_value_limits(point, settings)
        low, high = (None, None) if limits is None or is_binary else limits
        reference = ""
        if point.state_text is not None:
            reference = str(references[tuple(point.state_text)])
        rows.append(
            [
                f"{device_name}.{_text(point.name)}",
                device_instance,
                _text(point.name),
                str(object_type_code(point.object_type)),
                str(point.instance),
                _text(_description(point, settings, snapshot)),
                _number(present_value_default(point, settings, snapshot)),
                _number(low),
                _number(high),
                "Y" if point.writable else "N",
                "Y",
                "",
                "",
                reference,
                code,
                "",
            ]
        )

    for spec in calendars:
        rows.append(
            [
                f"{device_name}.{_text(spec.name)}",
                device_instance,
                _text(spec.name),
                str(CALENDAR_OBJECT_TYPE_CODE),
                str(spec.instance),
                _text(spec.description),
                "0",
                "",
                "",
                "N",  # present-value is derived; the date-list is what a BAS writes
                "N",
                *([""] * 5),
            ]
        )

    width = max([2, *(len(texts) for texts in references)])
    text_columns = ["Reference Number", "Text 1 or Inactive-Text", "Text 2 or Active-Text"]
    text_columns += [f"Text {i}" for i in range(3, width + 1)]
    state_rows: list[list[str]] = [["#State Text Reference"], ["#" + text_columns[0]]]
    state_rows[1].extend(text_columns[1:])
    for texts, number in references.items():
        padded = [_text(t) for t in texts] + [""] * (width - len(texts))
        state_rows.append([str(number), *padded])

    unit_rows: list[list[str]] = [["#Encoding of BACnet Engineering Units"], ["#Code", "Unit Text"]]
    unit_rows.extend([str(code), text] for code, text in sorted(used_units.items()))

    return {"points": _csv(rows), "state-texts": _csv(state_rows), "units": _csv(unit_rows)}


def ede_file_names(settings: Settings) -> dict[str, str]:
    """Conventional file names of the three EDE files (``<device-name>_EDE.csv`` ...)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", settings.device_name).strip("_") or "open-dsm"
    return {kind: stem + suffix for kind, suffix in FILE_SUFFIXES.items()}


def ede_zip(
    settings: Settings,
    *,
    author: str = "open-dsm",
    timestamp: datetime | None = None,
    snapshot: Snapshot | None = None,
) -> bytes:
    """The three EDE files in one zip archive under their conventional names."""
    files = ede_files(settings, author=author, timestamp=timestamp, snapshot=snapshot)
    names = ede_file_names(settings)
    when = (timestamp or POINT_LIST_CHANGED).astimezone(UTC)
    stamp = (when.year, when.month, when.day, when.hour, when.minute, when.second)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for kind in FILE_KINDS:
            info = zipfile.ZipInfo(names[kind], date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[kind].encode("utf-8"))
    return buffer.getvalue()
