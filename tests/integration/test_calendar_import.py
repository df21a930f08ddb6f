"""`open-dsm import --calendar FILE.ics` into a real migrated SQLite file, and a running core
picking the imported calendar up (as it does with imported minutes)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from core.clock import FakeClock
from core.config import Settings
from core.factory import build_core
from core.forecast.baseline import SeasonalMeanForecaster
from core.storage.migrate import upgrade_to_head
from core.storage.repository import Storage, create_db_engine
from open_dsm.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

HOLIDAYS_ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//open-dsm test//EN
BEGIN:VEVENT
UID:new-year@test
DTSTART;VALUE=DATE:20200101
DTEND;VALUE=DATE:20200102
RRULE:FREQ=YEARLY
SUMMARY:New Year's Day
END:VEVENT
BEGIN:VEVENT
UID:memorial@test
DTSTART;VALUE=DATE:20200525
DTEND;VALUE=DATE:20200526
RRULE:FREQ=YEARLY;BYMONTH=5;BYDAY=-1MO
SUMMARY:Memorial Day
END:VEVENT
BEGIN:VEVENT
UID:staff@test
DTSTART:20260811T080000
DTEND:20260811T170000
SUMMARY:Inventory day
CATEGORIES:like monday
END:VEVENT
END:VCALENDAR
"""


def _cli(data_dir: Path, *words: str) -> int:
    return main(["import", *words, "--data-dir", str(data_dir), "--timezone", "UTC"])


def test_an_ics_with_recurring_holidays_imports_the_right_dates(tmp_path: Path) -> None:
    ics = tmp_path / "holidays.ics"
    ics.write_text(HOLIDAYS_ICS)
    data_dir = tmp_path / "data"
    window = ["--calendar-from", "2026-01-01", "--calendar-to", "2027-12-31"]
    assert _cli(data_dir, str(ics), "--calendar", *window) == 0
    engine = create_db_engine(f"sqlite:///{data_dir / 'open-dsm.sqlite3'}")
    calendar = Storage(engine).load_calendar()
    listed = calendar.listed_dates(date(2026, 1, 1), date(2027, 12, 31))
    assert [(d.isoformat(), t.name) for d, t in listed] == [
        ("2026-01-01", "closed"),
        ("2026-05-25", "closed"),  # the last Monday of May
        ("2026-08-11", "like monday"),
        ("2027-01-01", "closed"),
        ("2027-05-31", "closed"),
    ]
    # Importing again adds nothing; --replace replaces.
    assert _cli(data_dir, str(ics), "--calendar", *window) == 0
    assert len(Storage(engine).load_calendar().entries) == 5
    only = tmp_path / "one.json"
    only.write_text('{"entries": [{"date": "2026-12-24", "day_type": "closed"}]}')
    assert _cli(data_dir, str(only), "--calendar", "--replace") == 0
    assert [e.to_dict() for e in Storage(engine).load_calendar().entries] == [
        {"day_type": "closed", "date": "2026-12-24"}
    ]
    # A broken file: a clear error, nothing changed.
    broken = tmp_path / "broken.json"
    broken.write_text('{"entries": [{"date": "2026-02-30", "day_type": "closed"}]}')
    assert _cli(data_dir, str(broken), "--calendar") == 1
    assert len(Storage(engine).load_calendar().entries) == 1
    engine.dispose()


async def test_a_running_core_picks_up_an_imported_calendar(
    settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    engine = create_db_engine(url)
    upgrade_to_head(engine)
    storage = Storage(engine)
    core = build_core(settings, storage, clock, SeasonalMeanForecaster())
    await core.start()
    try:
        assert core.reads.calendar.calendar.empty
        other = Storage(create_db_engine(url))  # what `open-dsm import` does, beside the service
        from core.calendar import parse_calendar

        imported: Any = parse_calendar({"entries": [{"date": "2026-07-01", "day_type": "closed"}]})
        other.save_calendar(imported)
        await core.history.pick_up_imports()
        assert core.reads.calendar.calendar.to_dict() == imported.to_dict()
        assert core.reads.calendar.day_type_today() is not None  # the fake clock is on 2026-07-01
    finally:
        await core.stop()
        engine.dispose()
