"""The nightly training fires at midnight in the site's zone, DST days included."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from core.clock import FakeClock
from core.training import TrainingManager, next_local_midnight

CHICAGO = ZoneInfo("America/Chicago")


@pytest.mark.parametrize(
    ("now_local", "expected_utc"),
    [
        # An ordinary summer night: CDT is UTC-5.
        (datetime(2026, 7, 14, 23, 59, tzinfo=CHICAGO), datetime(2026, 7, 15, 5, 0, tzinfo=UTC)),
        # Spring forward (2026-03-08 02:00 CST -> 03:00 CDT): the midnight after is CDT.
        (datetime(2026, 3, 8, 12, 0, tzinfo=CHICAGO), datetime(2026, 3, 9, 5, 0, tzinfo=UTC)),
        # The midnight that starts the DST day is still CST (UTC-6).
        (datetime(2026, 3, 7, 18, 0, tzinfo=CHICAGO), datetime(2026, 3, 8, 6, 0, tzinfo=UTC)),
        # Fall back (2026-11-01 02:00 CDT -> 01:00 CST): the 25-hour day ends at 06:00 UTC.
        (datetime(2026, 11, 1, 0, 30, tzinfo=CHICAGO), datetime(2026, 11, 2, 6, 0, tzinfo=UTC)),
        # Exactly at midnight: the next one, not this one.
        (datetime(2026, 7, 15, 0, 0, tzinfo=CHICAGO), datetime(2026, 7, 16, 5, 0, tzinfo=UTC)),
    ],
)
def test_next_local_midnight(now_local: datetime, expected_utc: datetime) -> None:
    assert next_local_midnight(now_local.astimezone(UTC), CHICAGO) == expected_utc


class _RecordingManager(TrainingManager):
    """The real schedule loop; trigger() records instead of starting a process."""

    def __init__(self, clock: FakeClock, settings) -> None:  # type: ignore[no-untyped-def]
        self.fired: list[datetime] = []
        self.refreshes = 0
        self._clock = clock
        self._settings = settings

    async def trigger(self, trigger: str) -> int:
        self.fired.append(self._clock.now())
        return len(self.fired)

    async def refresh(self) -> None:
        self.refreshes += 1


def test_schedule_fires_at_each_local_midnight_across_dst(settings) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock(datetime(2026, 10, 30, 15, 0, tzinfo=CHICAGO))
    manager = _RecordingManager(clock, settings.model_copy(update={"timezone": "America/Chicago"}))

    async def fake_sleep(seconds: float) -> None:
        clock.advance(seconds)
        if len(manager.fired) >= 4:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(manager.run_schedule(sleep=fake_sleep))
    local = [t.astimezone(CHICAGO) for t in manager.fired]
    assert [(t.month, t.day, t.hour, t.minute) for t in local] == [
        (10, 31, 0, 0),
        (11, 1, 0, 0),
        (11, 2, 0, 0),
        (11, 3, 0, 0),
    ]
    # 2026-11-01 has 25 hours: the UTC gap between those two firings is 25 h.
    assert (manager.fired[2] - manager.fired[1]).total_seconds() == 25 * 3600
    assert manager.refreshes > 0  # looks for models trained elsewhere in between
