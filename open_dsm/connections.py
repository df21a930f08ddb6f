"""REST connection limits uvicorn lacks: a deadline for the request head, a connection cap.

uvicorn (0.54, h11) closes a keep-alive connection only after a first response, never a
connection that stays silent or sends its headers a byte at a time, and its ``limit_concurrency``
answers 503 but keeps every connection open. ``guarded_protocol`` subclasses its h11 protocol:

* the *head deadline* runs from the moment a connection opens, and again from each response, until
  a complete request line and headers have arrived; a connection that misses it is closed (silent
  connections, slowloris);
* past the *connection cap* (``--http-max-connections``, and never closer than a margin to the
  process's open-file limit) a new connection is closed as soon as it is accepted, so the service
  keeps the file handles it needs for its database, BACnet and training;
* accept errors (out of file handles) are logged once per interval, not once per attempt.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h11
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.logs import RateLimitedLogger

log = logging.getLogger("open_dsm.http")
_limited = RateLimitedLogger(log, interval_s=30.0)

# File handles kept for the service itself (SQLite, BACnet, the trainer's pipes, logs, models).
FD_MARGIN = 256
# The soft open-file limit is raised towards the hard one, up to this.
FD_WANTED = 65_536
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(slots=True)
class ConnectionLimits:
    """The limits and what they did (counters for metrics and tests)."""

    head_timeout_s: float
    max_connections: int
    refused_total: int = 0
    timed_out_total: int = 0
    accept_errors_total: int = 0
    open: set[Any] = field(default_factory=set)


def raise_fd_limit(wanted: int = FD_WANTED) -> int:
    """Raise the soft open-file limit towards the hard one; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else wanted


def connection_cap(configured: int, fd_limit: int, margin: int = FD_MARGIN) -> int:
    """The connections allowed: the configured cap, kept ``margin`` handles below the limit."""
    return max(1, min(configured, fd_limit - margin))


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """An h11 protocol class enforcing ``limits`` (one class per server)."""

    class GuardedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol with a head deadline and a connection cap."""

        _refused = False
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(limits.open) >= limits.max_connections:
                self._refused = True
                limits.refused_total += 1
                _limited.warning(
                    "REST connection refused: %d connections open (the cap, "
                    "--http-max-connections and the open-file margin)",
                    limits.max_connections,
                    key="connection-cap",
                )
                transport.abort()
                return
            limits.open.add(self)
            super().connection_made(transport)
            self._arm_head_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            limits.open.discard(self)
            self._disarm_head_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the request head is complete
                self._disarm_head_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm_head_deadline()

        def _arm_head_deadline(self) -> None:
            self._disarm_head_deadline()
            self._head_timer = self.loop.call_later(limits.head_timeout_s, self._head_timed_out)

        def _disarm_head_deadline(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            limits.timed_out_total += 1
            _limited.warning(
                "REST connection closed: no complete request head within %g s",
                limits.head_timeout_s,
                key="head-deadline",
            )
            self.transport.abort()

    return GuardedH11Protocol


def install_accept_error_handler(loop: asyncio.AbstractEventLoop, limits: ConnectionLimits) -> None:
    """Log accept errors (out of file handles) once per interval instead of once per attempt."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", ""))
        if message.startswith("socket.accept()") or (
            isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS
        ):
            limits.accept_errors_total += 1
            _limited.warning(
                "cannot accept REST connections: %s (%d open)",
                exc if exc is not None else message,
                len(limits.open),
                key="accept-error",
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class ConnectionCollector(Collector):
    """The connection limits' counters for /metrics."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self._limits = limits

    def collect(self) -> Iterator[Metric]:
        """One gauge and three counters."""
        limits = self._limits
        yield GaugeMetricFamily(
            "open_dsm_http_connections", "REST connections open now", value=len(limits.open)
        )
        yield CounterMetricFamily(
            "open_dsm_http_connections_refused",
            "REST connections closed on accept (the connection cap)",
            value=limits.refused_total,
        )
        yield CounterMetricFamily(
            "open_dsm_http_head_timeouts",
            "REST connections closed without a complete request head in time",
            value=limits.timed_out_total,
        )
        yield CounterMetricFamily(
            "open_dsm_http_accept_errors",
            "Failed accepts of REST connections (out of file handles)",
            value=limits.accept_errors_total,
        )
