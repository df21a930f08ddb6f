"""Serving-side control of training: the process pool, the midnight schedule, model loading.

Nothing here imports TensorFlow: training runs in a spawned child process, and a trained model is
served through the light LiteRT runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, time, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from core.clock import Clock
from core.config import Settings
from core.errors import Busy, NotReady
from core.forecast.base import Forecaster
from core.ports import CommandPort, NoteTraining, UseForecaster
from core.records import ModelRunRecord, RunStatus
from core.storage.repository import Storage
from core.trainer import TrainingOutcome, run_training
from core.writer import DatabaseWriter

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# How often the service looks for a model accepted by another process (`open-dsm train`).
REFRESH_INTERVAL_S = 300.0
# The trainer yields the CPU to serving: BACnet and REST latency hold while it trains.
TRAINER_NICENESS = 10
_PR_SET_PDEATHSIG = 1


def background_child_init(parent_pid: int, niceness: int) -> None:
    """In a background child (training, the dispatch tuning): die with the service, and run at
    a lower CPU priority (``niceness``).

    Linux's parent-death signal kills this process when the service dies, even by SIGKILL, so no
    orphan trains on (and holds a gigabyte) after the service is gone.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the service died before the signal was armed
        os._exit(1)
    with contextlib.suppress(OSError):
        os.nice(niceness)


def next_local_midnight(now: datetime, tz: ZoneInfo) -> datetime:
    """The next 00:00 of the site's wall clock after ``now``, in UTC (DST-aware)."""
    local = now.astimezone(tz)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)
    return midnight.astimezone(UTC)


def load_model(run: ModelRunRecord) -> Forecaster:
    """The LiteRT forecaster of an accepted run (raises if its artifact is unreadable)."""
    from core.forecast.lite import LiteForecaster

    if not run.artifact_path:
        raise FileNotFoundError(f"run {run.id} has no artifact")
    return LiteForecaster.load(run.artifact_path)


def trainer_installed() -> bool:
    """True when the trainer's TensorFlow can be imported (the serving image leaves it out)."""
    return importlib.util.find_spec("tensorflow") is not None


class TrainingManager:
    """Starts training runs in a separate process, one at a time, and swaps in accepted models."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        clock: Clock,
        commands: CommandPort,
        writer: DatabaseWriter,
    ) -> None:
        self._settings = settings
        self._storage = storage
        self._clock = clock
        self._commands = commands  # the served model and training time go to the core here
        self._writer = writer
        self._task: asyncio.Task[TrainingOutcome] | None = None
        self._starting = False
        self._running_id: int | None = None
        self._served_run_id: int | None = None
        self._served_artifact: str | None = None

    @property
    def running_run_id(self) -> int | None:
        """The id of the run in progress, if any."""
        return self._running_id if self._task and not self._task.done() else None

    @property
    def served_run_id(self) -> int | None:
        """The accepted run whose model is served (None: the baseline)."""
        return self._served_run_id

    def served_artifact(self) -> str | None:
        """The artifact directory of the served model (None: the baseline serves)."""
        return self._served_artifact

    async def start(self) -> None:
        """Mark runs interrupted by a crash as failed; serve the last accepted model."""
        for run in await asyncio.to_thread(self._storage.model_runs, 20):
            if run.status is RunStatus.RUNNING:
                await self._writer.submit(
                    "interrupted model run",
                    partial(
                        self._storage.update_model_run,
                        run.id,
                        status=RunStatus.FAILED.value,
                        finished_at=self._clock.now(),
                        error_text="interrupted: the service stopped while this run was training",
                    ),
                )
                log.warning("training run %d was interrupted; marked failed", run.id)
        await self.refresh()

    async def refresh(self) -> None:
        """Serve the newest accepted model if it is not served yet (or note the last run)."""
        runs = await asyncio.to_thread(self._storage.model_runs, 50)
        finished = [r for r in runs if r.status.final]
        if finished and finished[0].training_minutes is not None:
            await self._commands.command(
                NoteTraining(finished[0].training_minutes, finished[0].finished_at)
            )
        for run in runs:
            if run.status is not RunStatus.ACCEPTED:
                continue
            if run.id == self._served_run_id:
                return
            try:
                forecaster = await asyncio.to_thread(load_model, run)
            except Exception:
                log.exception("cannot load the model of run %d; trying an older one", run.id)
                continue
            await self._commands.command(UseForecaster(forecaster, run))
            self._served_run_id = run.id
            self._served_artifact = run.artifact_path
            log.info("serving model %s (run %d)", run.model_version, run.id)
            return

    async def trigger(self, trigger: str) -> int:
        """Start a run in a new process; raise Busy if one is running. Returns the run id.

        Check and claim happen with no await between them, so two concurrent triggers on the
        event loop cannot both start a run. NotReady where TensorFlow is not installed.
        """
        if not trainer_installed():
            raise NotReady(
                "training needs TensorFlow, which this installation leaves out (the serving "
                "image): install open-dsm[train] or use the image's 'full' stage"
            )
        if self._starting or self.running_run_id is not None:
            raise Busy(f"training run {self._running_id or '(starting)'} is already running")
        self._starting = True
        try:
            run_id = await self._writer.submit(
                "new model run",
                partial(
                    self._storage.add_model_run,
                    started_at=self._clock.now(),
                    status=RunStatus.RUNNING.value,
                    trigger=trigger,
                ),
            )
            self._running_id = run_id
            self._task = asyncio.create_task(self._run(run_id, trigger), name=f"training-{run_id}")
        finally:
            self._starting = False
        return run_id

    async def _run(self, run_id: int, trigger: str) -> TrainingOutcome:
        loop = asyncio.get_running_loop()
        # A fresh spawned process per run: TensorFlow's memory goes back to the OS afterwards and
        # nothing of the serving process (event loop, sockets) is inherited.
        pool = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=background_child_init,
            initargs=(os.getpid(), TRAINER_NICENESS),
        )
        job = partial(
            run_training,
            self._settings.database_url,
            str(self._settings.models_dir),
            self._settings.timezone,
            trigger,
            run_id=run_id,
            time_budget_s=self._settings.training_time_budget_s,
            configure_logging=True,
            record=False,  # the result comes back here: one writer for the database
        )
        try:
            outcome = await loop.run_in_executor(pool, job)
        except asyncio.CancelledError:
            # Stopping: do not wait for the child; it finishes or dies with this process.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        except Exception as exc:  # the child died (killed, out of memory)
            log.error("training process for run %d died: %r", run_id, exc)
            outcome = TrainingOutcome(
                run_id,
                "failed",
                f"training process died: {exc!r}",
                fields={
                    "status": RunStatus.FAILED.value,
                    "finished_at": self._clock.now(),
                    "error_text": f"training process died: {exc!r}",
                },
            )
        # Joining the child (TensorFlow's teardown: about 2 s) happens in a thread, never on the
        # loop: BACnet and REST keep answering through the end of a run.
        await asyncio.to_thread(pool.shutdown, True)
        if outcome.fields is not None:
            await self._writer.submit(
                "model run result",
                partial(self._storage.update_model_run, run_id, **outcome.fields),
            )
        log.info("training run %d: %s", run_id, outcome.message)
        await self.refresh()
        return outcome

    async def wait(self) -> TrainingOutcome | None:
        """Wait for the run in progress (tests, shutdown)."""
        if self._task is None:
            return None
        return await self._task

    async def run_schedule(self, sleep: Sleep = asyncio.sleep) -> None:
        """Train every midnight in the site's zone; look for new models in between."""
        tz = self._settings.tz
        while True:
            now = self._clock.now()
            midnight = next_local_midnight(now, tz)
            wait_s = (midnight - now).total_seconds()
            if wait_s > REFRESH_INTERVAL_S:
                await sleep(REFRESH_INTERVAL_S)
                with contextlib.suppress(Exception):
                    await self.refresh()
                continue
            await sleep(max(0.0, wait_s))
            if self._clock.now() >= midnight:
                log.info("midnight (%s): nightly training", midnight.astimezone(tz).isoformat())
                try:
                    await self.trigger("schedule")
                except Busy:
                    pass
                except NotReady as exc:
                    log.warning("no nightly training: %s", exc)

    async def stop(self) -> None:
        """Stop waiting on a run; its process finishes or dies with ours, the model stays safe."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
