"""The single database writer: every write the service makes, in order, off the event loop.

A write that fails is retried with backoff until it succeeds, and while it fails the writer is
*faulted*: the fault is visible (``/readyz``, the inputs' reliability, a metric) and the core
refuses new writes at the door instead of acknowledging what it may not be able to keep. The queue
is bounded for the same reason. Jobs must be idempotent (upserts, merges in one transaction), so a
retry after a failed commit does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from core.clock import Clock
from core.errors import StorageUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
FaultListener = Callable[["WriterFault | None"], None]

MAX_PENDING = 10_000
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
# A job that fails this many times with an error that is not about the database being reachable
# or writable (a bug, a constraint) is dropped, counted and logged, so it cannot block the queue.
MAX_ATTEMPTS_NON_TRANSIENT = 5
# While faulted, one log line per this many seconds at most.
LOG_EVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class WriterFault:
    """Why the database is not taking writes, since when."""

    error: str
    since: datetime
    pending: int


@dataclass(slots=True)
class _Job:
    what: str
    run: Callable[[], Any]
    future: asyncio.Future[Any]
    attempts: int = 0


def _transient(exc: BaseException) -> bool:
    """Errors about the database being unreachable, full, locked or read-only: retry forever."""
    if isinstance(exc, OSError):
        return True
    name = type(exc).__name__
    return name in {"OperationalError", "InterfaceError", "DisconnectionError", "TimeoutError"}


class DatabaseWriter:
    """Runs database jobs one at a time, in order, in a thread; retries and reports faults."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_pending: int = MAX_PENDING,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self._clock = clock
        self._max_pending = max_pending
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._fault: WriterFault | None = None
        self._listeners: list[FaultListener] = []
        self._last_log = 0.0
        self._running = 0
        self.writes_total = 0
        self.failures_total = 0
        self.dropped_total = 0

    # -- state ---------------------------------------------------------------------------------

    @property
    def fault(self) -> WriterFault | None:
        """The current fault, None while writes succeed."""
        return self._fault

    @property
    def pending(self) -> int:
        """Jobs waiting or running."""
        return 0 if self._queue is None else self._queue.qsize() + self._running

    def on_fault_change(self, listener: FaultListener) -> None:
        """Call ``listener`` (on the loop) when the writer becomes faulted or recovers."""
        self._listeners.append(listener)

    def check_accepting(self) -> None:
        """Raise StorageUnavailable when a new write could not be kept now."""
        if self._fault is not None:
            raise StorageUnavailable(
                f"the database is not taking writes ({self._fault.error}); "
                "nothing was accepted, try again later"
            )
        if self.pending >= self._max_pending:
            raise StorageUnavailable(
                f"{self.pending} database writes are pending; nothing was accepted, try again later"
            )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker (inside the running loop)."""
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._work(), name="open-dsm-db-writer")

    async def drain(self) -> None:
        """Wait until every queued job has been written (or dropped)."""
        if self._queue is not None:
            await self._queue.join()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Drain (bounded by ``timeout_s``), then stop the worker; report what could not be kept."""
        if self._queue is None or self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.error(
                "stopping with %d database writes not kept (%s)",
                self.pending,
                self._fault.error if self._fault else "writer too slow",
            )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    # -- submitting ----------------------------------------------------------------------------

    def enqueue(self, what: str, job: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``job``; its future resolves with the job's result once written."""
        if self._queue is None:
            raise RuntimeError("the database writer is not started")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        # Nobody may await a fire-and-forget job; its failure is logged and counted here.
        future.add_done_callback(_consume)
        self._queue.put_nowait(_Job(what, job, future))
        return future

    async def submit(self, what: str, job: Callable[[], T]) -> T:
        """Queue ``job`` and wait for its result."""
        return await self.enqueue(what, job)

    # -- the worker ----------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            self._running = 1
            try:
                await self._run(job)
            finally:
                self._running = 0
                self._queue.task_done()

    async def _run(self, job: _Job) -> None:
        delay = self._retry_initial_s
        while True:
            job.attempts += 1
            try:
                result = await asyncio.to_thread(job.run)
            except Exception as exc:
                self.failures_total += 1
                transient = _transient(exc)
                self._set_fault(f"{type(exc).__name__}: {_first_line(exc)}", job.what)
                if not transient and job.attempts >= MAX_ATTEMPTS_NON_TRANSIENT:
                    self.dropped_total += 1
                    log.error(
                        "database write %r dropped after %d attempts: %s",
                        job.what,
                        job.attempts,
                        exc,
                    )
                    if not job.future.done():
                        job.future.set_exception(exc)
                    self._clear_fault()
                    return
                await asyncio.sleep(delay)
                delay = min(self._retry_max_s, delay * 2)
                continue
            self.writes_total += 1
            if self._fault is not None:
                self._clear_fault()
            if not job.future.done():
                job.future.set_result(result)
            return

    def _set_fault(self, error: str, what: str) -> None:
        now = time.monotonic()
        first = self._fault is None
        if first or now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.error(
                "database write %r failed (%s); retrying, %d writes pending",
                what,
                error,
                self.pending,
            )
        if first or self._fault is None or self._fault.error != error:
            since = self._clock.now() if self._fault is None else self._fault.since
            self._fault = WriterFault(error, since, self.pending)
            self._notify()

    def _clear_fault(self) -> None:
        if self._fault is None:
            return
        log.warning("database writes succeed again (faulted since %s)", self._fault.since)
        self._fault = None
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener(self._fault)
            except Exception:
                log.exception("writer fault listener failed")


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
