"""Logging helpers: rate limits where a remote party controls how often a line would be written."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# At most this many distinct keys are tracked; past it the oldest are forgotten.
MAX_KEYS = 256


class RateLimitedLogger:
    """At most one line per key per interval; the next line says how many were suppressed."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` was logged within the interval; True if logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if len(self._last) >= MAX_KEYS and key not in self._last:
            oldest = min(self._last, key=self._last.__getitem__)
            self._last.pop(oldest)
            self._suppressed.pop(oldest, None)
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg = f"{msg} (and {suppressed} more like it in the last {self._interval_s:g} s)"
        self._logger.log(level, msg, *args)
        return True

    def reset(self) -> None:
        """Forget every key: the next line of each kind is logged (a test starts afresh)."""
        self._last.clear()
        self._suppressed.clear()

    def warning(self, msg: str, *args: object, key: str | None = None) -> bool:
        """A rate-limited warning keyed by ``key`` (default: the message template)."""
        return self.log(logging.WARNING, key or msg, msg, *args)
