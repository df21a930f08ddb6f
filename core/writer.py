"""The single database writer: every write the service makes, in order, off the event loop.

One fault model: every error a job raises makes the writer *faulted*, and the fault clears only
when a job's transaction has committed (the log says so only then). A database error (I/O, full,
read-only, locked, corrupt, not a database) is retried with backoff for ever; an error that is not
about the database (a bug, a constraint) drops that one job after a few tries, counted and logged,
and the fault stays until a later write commits. A fault may also come from outside the jobs (the
database file deleted or replaced under the service, see ``core.storage.health``): such a fault is
sticky, since a write into an unlinked file commits and still keeps nothing: jobs are held, not
run, while it lasts, and a stop hands them to the recovery file.

While faulted the fault is visible (``/readyz``, the inputs' reliability, a metric) and the core
refuses new writes at the door instead of acknowledging what it may not be able to keep; callers
waiting for a commit (``confirm``) are answered with StorageUnavailable as soon as the fault is
known. The queue is bounded for the same reason. Jobs must be idempotent (upserts, merges in one
transaction), so a retry after a failed commit does no harm.
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
    keep: dict[str, Any] | None = None
    # Called on the loop as the job starts: returns the job's run and keep (what to write then).
    prepare: Callable[[], tuple[Callable[[], Any], dict[str, Any] | None]] | None = None


# Errors a retry cannot fix: the job itself is wrong (a bug or a violated constraint).
_JOB_ERRORS = frozenset({"IntegrityError", "ProgrammingError", "DataError", "NotSupportedError"})
# Database errors that mean the file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB).
_CORRUPT_MARKERS = ("malformed", "not a database", "corrupt")
# How long a caller of ``confirm`` waits for its commit before it is told the write is not kept.
CONFIRM_TIMEOUT_S = 5.0
# A check of the database (file identity, integrity) returning a problem, or None when sound.
DatabaseCheck = Callable[[bool], str | None]


def _database_error(exc: BaseException) -> bool:
    """True for errors about the database (reachable, writable, sound): retried for ever."""
    if isinstance(exc, OSError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _JOB_ERRORS:
        return False
    return bool(names & {"DBAPIError", "DatabaseError", "Error", "DisconnectionError"}) or (
        "TimeoutError" in names
    )


def looks_corrupt(exc: BaseException) -> bool:
    """True when SQLite reports a damaged file (SQLITE_CORRUPT 11, SQLITE_NOTADB 26)."""
    seen: BaseException | None = exc
    while seen is not None:
        code = getattr(seen, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in (11, 26):
            return True
        if any(marker in str(seen).lower() for marker in _CORRUPT_MARKERS):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


class DatabaseWriter:
    """Runs database jobs one at a time, in order, in a thread; retries and reports faults."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_pending: int = MAX_PENDING,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
    ) -> None:
        self._clock = clock
        self._max_pending = max_pending
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._confirm_timeout_s = confirm_timeout_s
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._fault: WriterFault | None = None
        self._file_fault: WriterFault | None = None
        self._check: DatabaseCheck | None = None
        self._listeners: list[FaultListener] = []
        self._waiters: set[asyncio.Future[None]] = set()
        self._last_log = 0.0
        self._running: _Job | None = None
        self.name = "the database"
        self.writes_total = 0
        self.failures_total = 0
        self.dropped_total = 0
        # What acknowledged writes were still queued at ``stop`` (their ``keep`` documents).
        self.unkept: list[dict[str, Any]] = []

    # -- state ---------------------------------------------------------------------------------

    @property
    def fault(self) -> WriterFault | None:
        """The current fault (the file's first, then the writes'), None while writes commit."""
        return self._file_fault or self._fault

    @property
    def pending(self) -> int:
        """Jobs waiting or running."""
        return 0 if self._queue is None else self._queue.qsize() + (self._running is not None)

    def on_fault_change(self, listener: FaultListener) -> None:
        """Call ``listener`` (on the loop) when the writer becomes faulted or recovers."""
        self._listeners.append(listener)

    def use_check(self, check: DatabaseCheck, name: str) -> None:
        """Check the database with ``check(integrity)`` (blocking, run in a thread) after an
        error and from ``watch``; ``name`` names the database in faults and logs."""
        self._check = check
        self.name = name

    def check_accepting(self) -> None:
        """Raise StorageUnavailable when a new write could not be kept now."""
        fault = self.fault
        if fault is not None:
            raise StorageUnavailable(
                f"{self.name} is not taking writes ({fault.error}); "
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

    async def watch(self, interval_s: float) -> None:
        """Check the database file every ``interval_s`` (a task; runs until cancelled)."""
        while True:
            await asyncio.sleep(interval_s)
            await self.check_now(integrity=False)

    async def check_now(self, integrity: bool) -> str | None:
        """Run the database check in a thread; a problem becomes a sticky fault. Returns it."""
        if self._check is None:
            return None
        try:
            problem = await asyncio.to_thread(self._check, integrity)
        except Exception as exc:  # the check itself failing is a problem with the file
            problem = f"cannot check {self.name}: {type(exc).__name__}: {_first_line(exc)}"
        if problem is not None and (self._file_fault is None or self._file_fault.error != problem):
            log.error("%s: %s; refusing writes until the service is restarted", self.name, problem)
            since = self._file_fault.since if self._file_fault else self._clock.now()
            self._file_fault = WriterFault(problem, since, self.pending)
            self._fail_waiters()
            self._notify()
        return problem

    async def drain(self) -> None:
        """Wait until every queued job has been written (or dropped)."""
        if self._queue is not None:
            await self._queue.join()

    async def stop(self, timeout_s: float = 10.0) -> list[str]:
        """Drain (bounded by ``timeout_s``), then stop the worker; return what was not kept."""
        if self._queue is None or self._task is None:
            return []
        if self._file_fault is not None:
            timeout_s = 0.0  # held jobs will not be written: straight to the recovery file
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            fault = self.fault
            log.error(
                "stopping with %d database writes not kept (%s)",
                self.pending,
                fault.error if fault else "writer too slow",
            )
        running = self._running
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        left = [] if running is None else [running]
        self._running = None
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
            self._queue.task_done()
        for job in left:
            _prepare(job)
        self.unkept = [job.keep for job in left if job.keep is not None]
        return [job.what for job in left]

    # -- submitting ----------------------------------------------------------------------------

    def enqueue(
        self, what: str, job: Callable[[], T], keep: dict[str, Any] | None = None
    ) -> asyncio.Future[T]:
        """Queue ``job``; its future resolves with the job's result once written.

        ``keep`` (JSON-able) describes an acknowledged write: if the job is still queued when
        the service stops, it is handed back by ``unkept`` for the recovery file.
        """
        if self._queue is None:
            raise RuntimeError("the database writer is not started")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        # Nobody may await a fire-and-forget job; its failure is logged and counted here.
        future.add_done_callback(_consume)
        self._queue.put_nowait(_Job(what, job, future, keep=keep))
        return future

    def enqueue_prepared(
        self, what: str, prepare: Callable[[], tuple[Callable[[], Any], dict[str, Any] | None]]
    ) -> asyncio.Future[Any]:
        """Queue a job decided when it starts: ``prepare()`` (on the loop) returns its run and
        keep, so everything folded in until then goes into one transaction (group commit)."""
        if self._queue is None:
            raise RuntimeError("the database writer is not started")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._queue.put_nowait(_Job(what, _unprepared, future, prepare=prepare))
        return future

    async def submit(self, what: str, job: Callable[[], T]) -> T:
        """Queue ``job`` and wait for its result."""
        return await self.enqueue(what, job)

    async def confirm(self, future: asyncio.Future[T]) -> T:
        """Wait for a queued job's commit; StorageUnavailable once a fault is known (or after
        the confirm timeout): the write is then not acknowledged, though it stays queued."""
        if future.done():
            return self._result(future)
        fault = self.fault
        if fault is not None:
            raise StorageUnavailable(f"{self.name} is not taking writes ({fault.error})")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            both: set[asyncio.Future[Any]] = {future, waiter}
            done, _ = await asyncio.wait(
                both,
                timeout=self._confirm_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self._waiters.discard(waiter)
            if not waiter.done():
                waiter.cancel()
        if future in done:
            return self._result(future)
        fault = self.fault
        raise StorageUnavailable(
            f"{self.name} did not confirm the write "
            f"({fault.error if fault else f'not committed within {self._confirm_timeout_s:g} s'})"
        )

    def _result(self, future: asyncio.Future[T]) -> T:
        """A finished job's result; a job that was given up is StorageUnavailable (not kept)."""
        exc = future.exception()
        if exc is not None:
            raise StorageUnavailable(
                f"{self.name} did not keep the write ({type(exc).__name__}: {_first_line(exc)})"
            ) from exc
        return future.result()

    # -- the worker ----------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            self._running = job
            try:
                await self._run(job)
            finally:
                self._running = None
                self._queue.task_done()

    async def _run(self, job: _Job) -> None:
        delay = self._retry_initial_s
        _prepare(job)
        while True:
            if self._file_fault is not None:
                # A write into a deleted, replaced or overwritten file keeps nothing: hold the
                # job for good (the fault is sticky; a stop hands it to the recovery file).
                await asyncio.get_running_loop().create_future()
            job.attempts += 1
            try:
                result = await asyncio.to_thread(job.run)
            except Exception as exc:
                self.failures_total += 1
                error = f"{type(exc).__name__}: {_first_line(exc)}"
                if looks_corrupt(exc):
                    problem = await self.check_now(integrity=True)
                    error = f"database file corrupt ({problem or error})"
                self._set_fault(error, job.what)
                if not _database_error(exc) and job.attempts >= MAX_ATTEMPTS_NON_TRANSIENT:
                    # A bug, not the database: drop this one job; the fault stays until a later
                    # write commits.
                    self.dropped_total += 1
                    log.error(
                        "database write %r dropped after %d attempts: %s",
                        job.what,
                        job.attempts,
                        exc,
                    )
                    if not job.future.done():
                        job.future.set_exception(exc)
                    return
                await asyncio.sleep(delay)
                delay = min(self._retry_max_s, delay * 2)
                continue
            self.writes_total += 1
            if self._fault is not None:
                self._clear_fault(job.what)
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
            self._fail_waiters()
            self._notify()

    def _clear_fault(self, what: str) -> None:
        if self._fault is None:
            return
        log.warning(
            "database writes succeed again: %r committed (faulted since %s)",
            what,
            self._fault.since,
        )
        self._fault = None
        self._notify()

    def _fail_waiters(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener(self.fault)
            except Exception:
                log.exception("writer fault listener failed")


def _prepare(job: _Job) -> None:
    """Decide a prepared job's run and keep now (once)."""
    if job.prepare is not None:
        job.run, job.keep = job.prepare()
        job.prepare = None


def _unprepared() -> None:
    raise RuntimeError("a prepared job ran before it was prepared")


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
