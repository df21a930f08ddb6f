"""What a face hands the core and gets back: readings, batch results, pages, reading counters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.storage.repository import StoredMinute


class ReadingLike(Protocol):
    """Anything with a reading's two fields (the REST body's items are passed as they are)."""

    @property
    def kw(self) -> float: ...

    @property
    def observed_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Reading:
    """One meter reading as submitted by a face; ``observed_at`` None means now."""

    kw: float
    observed_at: datetime | None = None


@dataclass(slots=True)
class ReadingStats:
    """Counters of readings accepted and refused, by source (for metrics)."""

    accepted: dict[str, int] = dataclasses.field(default_factory=dict)
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)

    def count(self, accepted: bool, source: str, n: int = 1) -> None:
        """Add ``n`` to one counter."""
        table = self.accepted if accepted else self.rejected
        table[source] = table.get(source, 0) + n


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a batch of readings did."""

    accepted: int
    live: int
    historical_minutes: int


@dataclass(frozen=True, slots=True)
class ReadingsPage:
    """A page of stored minutes and where the next page starts."""

    items: list[StoredMinute]
    next_start: datetime | None
