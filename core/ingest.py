"""Group commit of live minutes: a live reading is acknowledged once it is in the database.

Every live reading lands in the minute in progress (``ReadingGrid``). Rather than one row per
reading, the database keeps that minute's running mean: a commit writes the minutes closed since
the last commit and the open minute as it stands (its mean and sample count so far), in one
transaction. Readings that arrive while a commit runs wait for the next one, which takes them all
(group commit): one transaction per few milliseconds under load, not one per reading.

After a crash the newest stored minute is the open one's running mean, which ``ReadingGrid.restore``
reopens with its sample count: the minute in progress is rebuilt from what was stored, and every
acknowledged reading is in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from core.readings import CompletedMinute
from core.storage import recovery
from core.storage.repository import Storage
from core.writer import DatabaseWriter

# The open minute as it stands, with the outdoor air and dispatched kW in force (None: unknown).
OpenMinute = Callable[[], tuple[CompletedMinute | None, float | None, float | None]]


class LiveMinutes:
    """Collects closed minutes and commits them with the open minute, coalescing requests."""

    def __init__(self, writer: DatabaseWriter, storage: Storage, open_minute: OpenMinute) -> None:
        self._writer = writer
        self._storage = storage
        self._open_minute = open_minute
        self._closed: list[CompletedMinute] = []
        self._outdoor: dict[int, float] = {}
        self._dispatched: dict[int, float] = {}
        self._queued: asyncio.Future[None] | None = None
        self.commits_total = 0

    def add_closed(
        self, minutes: list[CompletedMinute], outdoor: float | None, dispatched: float | None
    ) -> None:
        """Queue closed minutes (with what was in force when they closed) for the next commit."""
        if not minutes:
            return
        self._closed.extend(minutes)
        for item in minutes:
            if outdoor is not None:
                self._outdoor[item.minute] = outdoor
            if dispatched is not None:
                self._dispatched[item.minute] = dispatched
        self.request()

    def request(self) -> asyncio.Future[None]:
        """The commit that will hold everything folded in so far (queued, or joined)."""
        if self._queued is None or self._queued.done():
            self._queued = self._writer.enqueue_prepared("live minutes", self._prepare)
        return self._queued

    def _prepare(self) -> tuple[Callable[[], Any], dict[str, Any] | None]:
        """On the loop, as the commit starts: take what is pending and the open minute now."""
        self._queued = None
        minutes, self._closed = self._closed, []
        outdoor, self._outdoor = self._outdoor, {}
        dispatched, self._dispatched = self._dispatched, {}
        open_minute, open_outdoor, open_dispatched = self._open_minute()
        if open_minute is not None:
            minutes.append(open_minute)
            if open_outdoor is not None:
                outdoor[open_minute.minute] = open_outdoor
            if open_dispatched is not None:
                dispatched[open_minute.minute] = open_dispatched
        if not minutes:
            return _nothing, None
        self.commits_total += 1
        outdoor_map = outdoor or None
        dispatched_map = dispatched or None
        job = partial(
            self._storage.upsert_minutes,
            minutes,
            "live",
            outdoor_air=outdoor_map,
            dispatched=dispatched_map,
        )
        return job, recovery.minutes_keep(minutes, "live", outdoor_map, dispatched_map)


def _nothing() -> None:
    return None
