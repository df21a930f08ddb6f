"""Fairness between sources: a token budget per source address (pure logic, injected clock)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class SourceBudget:
    """A token bucket per source: spending empties it, time refills it, an empty one is muted.

    Each source starts with ``burst`` tokens and regains ``rate_per_s`` a second up to ``burst``.
    A source with less than one token is muted (its datagrams are dropped unread) until it has
    one again. At most ``max_sources`` are tracked; the least recently charged is forgotten first.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = 1024,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._max_sources = max_sources
        # source -> (tokens, when they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, source: str, now: float) -> float:
        entry = self._buckets.get(source)
        if entry is None:
            return self.burst
        tokens, stamp = entry
        return min(self.burst, tokens + (now - stamp) * self.rate_per_s)

    def spend(self, source: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from ``source`` (down to at most one request's worth below 0)."""
        now = self._clock()
        tokens = max(-cost, self._tokens(source, now) - cost)
        self._buckets[source] = (tokens, now)
        self._buckets.move_to_end(source)
        while len(self._buckets) > self._max_sources:
            self._buckets.popitem(last=False)

    def muted(self, source: str) -> bool:
        """True while ``source`` has less than one token."""
        entry = self._buckets.get(source)
        if entry is None:
            return False
        tokens = self._tokens(source, self._clock())
        if tokens >= self.burst:
            del self._buckets[source]  # back to full: forget it
            return False
        return tokens < 1.0
