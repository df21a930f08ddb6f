"""The BACnet face's log lines: every one a remote party can cause is rate-limited."""

from __future__ import annotations

import logging
import time

from core.logs import RateLimitedLogger

# One logger for the whole request path, under the name it had when it was one module (an
# operator's logging configuration may name it).
log = logging.getLogger("bacnet.app")
# Anyone on the network decides how many bad packets arrive: one line per kind a minute.
bad_packets = RateLimitedLogger(log, interval_s=60.0)


class BadPacketLogFilter(logging.Filter):
    """bacpypes3's warnings and errors: one line per logger and message a minute, no traceback.

    bacpypes3 logs each undecodable datagram with a traceback (a remote party controls the
    volume); this keeps one summary line per kind and counts the rest.
    """

    MAX_KINDS = 256

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass the first of each kind per interval, summarised; drop the rest."""
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        if len(self._last) >= self.MAX_KINDS and kind not in self._last:
            oldest = min(self._last, key=self._last.__getitem__)
            del self._last[oldest]
            self._suppressed.pop(oldest, None)
        self._last[kind] = now
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message = f"{message} [{type(error).__name__}: {error}]"
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message = f"{message} ({suppressed} more like it suppressed)"
        record.msg, record.args = message, ()
        record.exc_info, record.exc_text = None, None
        return True


_LOG_FILTER = BadPacketLogFilter()


def guard_bacpypes3_logs() -> None:
    """Rate-limit every bacpypes3 logger (each exists once its module is imported)."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (
            name.startswith("bacpypes3")
            and isinstance(logger, logging.Logger)
            and _LOG_FILTER not in logger.filters
        ):
            logger.addFilter(_LOG_FILTER)
