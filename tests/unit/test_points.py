"""The point table: the seed's contract, and the database revision guard."""

from __future__ import annotations

import hashlib

from bacnet.calendar_table import CALENDARS
from bacnet.points import DATABASE_REVISION, POINTS, ObjectType, Reliability
from core.config import Settings
from core.snapshot import ModelStatus, Quality, Snapshot
from tests.helpers import SEED_POINTS

# (revision, fingerprint of the point list). Changing the list without bumping DATABASE_REVISION
# fails here: integrators' tools re-read the point list only when the revision changes.
KNOWN_REVISIONS = {
    1: "16f67d2aa4cd",
    2: "7f08085bc20a",
    3: "8b9923357ca6",
    4: "369f37278a43",
}


def _fingerprint() -> str:
    text = "|".join(
        f"{p.object_type.value},{p.instance},{p.name},{p.units},{p.writable}" for p in POINTS
    )
    if DATABASE_REVISION >= 4:  # the Calendar objects are part of the list from revision 4
        text += "|" + "|".join(f"calendar,{c.instance},{c.name}" for c in CALENDARS)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def test_the_seed_points_keep_their_names_types_and_instances() -> None:
    assert [(p.object_type.value, p.instance, p.name) for p in POINTS][:7] == SEED_POINTS


def test_database_revision_is_bumped_with_the_point_list() -> None:
    assert KNOWN_REVISIONS.get(DATABASE_REVISION) == _fingerprint()
    assert max(KNOWN_REVISIONS) == DATABASE_REVISION


def test_points_are_unique_and_the_seed_seven_come_first() -> None:
    identifiers = [(p.object_type, p.instance) for p in POINTS]
    assert len(set(identifiers)) == len(identifiers)
    assert len({p.name for p in POINTS}) == len(POINTS)


def test_only_inputs_are_writable_and_analogs_have_units_and_cov() -> None:
    assert [p.name for p in POINTS if p.writable] == [
        "input-power-meter",
        "demand-target",
        "pv-power",
        "battery-soc",
        "battery-power",
        "ev-charging-power",
        "outdoor-air-temperature",
    ]
    assert all(p.input_key for p in POINTS if p.writable)
    for point in POINTS:
        if point.object_type is ObjectType.ANALOG_VALUE:
            assert point.units and point.cov_increment and point.cov_increment > 0
        else:
            assert point.state_text is not None


def test_values_and_reliability_come_from_the_snapshot() -> None:
    empty = Snapshot()
    forecast_point = next(p for p in POINTS if p.name == "one-hour-future-power")
    assert forecast_point.present_value(empty) == -1.0
    assert forecast_point.reliability(empty) is Reliability.NO_SENSOR
    stale = Snapshot(forecast_quality=Quality.STALE_INPUT)
    assert forecast_point.reliability(stale) is Reliability.COMMUNICATION_FAILURE
    named = Snapshot(model=ModelStatus(forecaster="mean-2-weeks"))
    settings = Settings(timezone="UTC", high_percentile=85)
    assert "mean-2-weeks" in forecast_point.describe(named, settings)
    high = next(p for p in POINTS if p.name == "high-load-conditions")
    assert "85th percentile" in high.describe(named, settings)
