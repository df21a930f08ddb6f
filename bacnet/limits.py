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


class SourceGuard:
    """Per-source budgets, enforced only under contention (work-conserving fairness).

    Each source address (B/IP: host and UDP port) has a budget, and each host one ``host_factor``
    times larger, so many ports of one host cannot multiply it. A source over either budget is
    muted while there is someone to be fair to: another address sent a datagram within the last
    ``hold_s``. When it is alone, it is muted only if the event loop lagged by ``busy_lag_s`` or
    more within ``hold_s`` (REST shares the loop) and it has also spent its separate budget of
    refused requests: a lone client polling flat out is not held back, a lone flood of refused
    requests is, before anyone else arrives to wait behind it.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        host_factor: float = 5.0,
        busy_lag_s: float = 0.02,
        hold_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.addresses = SourceBudget(rate_per_s, burst, clock)
        self.hosts = SourceBudget(rate_per_s * host_factor, burst * host_factor, clock)
        self.refusals = SourceBudget(rate_per_s, burst, clock)
        self.busy_lag_s = busy_lag_s
        self.hold_s = hold_s
        self._clock = clock
        self._lagged_at: float | None = None
        # The two addresses that sent last, with when: enough to tell whether anyone else did.
        self._recent: list[tuple[str, float]] = []

    def note_lag(self, lag_s: float) -> None:
        """Record how late a periodic loop callback ran."""
        if lag_s >= self.busy_lag_s:
            self._lagged_at = self._clock()

    @property
    def busy(self) -> bool:
        """True while the loop lagged within the last ``hold_s``."""
        return self._lagged_at is not None and self._clock() - self._lagged_at < self.hold_s

    def spend(self, host: str, address: str, cost: float = 1.0, refused: bool = False) -> None:
        """Charge a request to its address and its host (and a refused one to its refusals)."""
        self.addresses.spend(address, cost)
        self.hosts.spend(host, cost)
        if refused:
            self.refusals.spend(address, cost)

    def _contended(self, address: str, now: float) -> bool:
        """Note ``address`` as sending now; True if another address sent within ``hold_s``."""
        others = [t for a, t in self._recent if a != address and now - t < self.hold_s]
        if self._recent and self._recent[0][0] == address:
            self._recent[0] = (address, now)
        else:
            self._recent = [(address, now), *self._recent[:1]]
        return bool(others)

    def muted(self, host: str, address: str) -> bool:
        """True when ``address`` or its host is over budget and someone else would wait."""
        contended = self._contended(address, self._clock())
        if not (self.addresses.muted(address) or self.hosts.muted(host)):
            return False
        return contended or (self.busy and self.refusals.muted(address))
