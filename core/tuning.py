"""Serving-side control of the dispatch self-tuning: the nightly child process, its record, and
serving its choice (``core.dispatch.tuning`` holds the replay and the selection).

The replay never runs in the serving process: each night (``TUNING_DELAY`` after the site's local
midnight, so it does not start with the nightly training) a spawned child at a lower CPU priority
reads the stored base load, replays the candidates and returns the choice. The parent records the
run (``dispatch_tuning_runs``) and hands the choice to the dispatch controller, which serves it
from its next re-plan. A child that dies (killed, out of memory) changes nothing that is served;
the run is recorded as failed. At start-up the last recorded choice is served again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from core.clock import Clock
from core.dispatch.assets import Battery, Tariff
from core.dispatch.controller import DispatchController
from core.dispatch.replay import DayAheadFn, FloatArray, TrainedDayAhead
from core.dispatch.tuning import (
    DEFAULT_CANDIDATE,
    MIN_HISTORY_DAYS,
    TRAINED_CANDIDATE,
    WINDOW_DAYS,
    Candidate,
    candidates,
    replay_window,
)
from core.forecast.base import Forecaster
from core.forecast.baseline import SeasonalMeanForecaster
from core.timegrid import minute_of, minute_start
from core.training import background_child_init, next_local_midnight

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# The replay starts this long after the local midnight (the training child starts at midnight).
TUNING_DELAY = timedelta(minutes=20)
TUNING_NICENESS = 10
# Seasonal baseline history before the window's first day (two weeks and a DST hour).
_FORECAST_HISTORY_MINUTES = SeasonalMeanForecaster(weeks=2).day_ahead_history_minutes


@dataclass(frozen=True, slots=True)
class TunedCandidate:
    """One candidate controller's replay of the site's recent history."""

    name: str
    billed_kw: float  # the highest interval average of grid import it replayed
    throughput_kwh: float  # through the battery over the window


@dataclass(frozen=True, slots=True)
class TuningStatus:
    """The self-tuning as served: the choice, each candidate's replayed bill, the saving."""

    chosen: str  # the candidate served (baseline: the defaults)
    note: str | None = None
    level_kw: float | None = None  # the fixed level it defends (history-level)
    night_at: datetime | None = None  # the night the replay ran for
    history_days: float | None = None
    no_battery_kw: float | None = None  # the window's bill without a battery
    saving_kw: float | None = None  # kW the choice cut off that bill
    saving_per_month: float | None = None  # saving_kw at the demand charge (currency a month)
    candidates: tuple[TunedCandidate, ...] = ()


@dataclass(frozen=True, slots=True)
class TuningJob:
    """What the child needs: where the history is, the battery and tariff, the night."""

    database_url: str
    timezone: str
    battery: Battery
    tariff: Tariff
    interval_minutes: int
    night_minute: int
    # Only these candidates (None: all), re-planning this often (the service: every minute).
    names: tuple[str, ...] | None = None
    replan_every_minutes: int = 1
    min_history_days: float = MIN_HISTORY_DAYS
    # The artifact directory of the model the service serves (None: none served): its day-ahead
    # is then a forecast to plan on, loaded with LiteRT (never TensorFlow).
    model_artifact: str | None = None
    window_days: int = WINDOW_DAYS


def run_tuning(job: TuningJob) -> dict[str, Any]:
    """The nightly replay (in the child): the stored base load of the window, the served model
    when there is one, the choice as a JSON-able dict."""
    from core.storage.repository import Storage, create_db_engine
    from core.trainer import base_load_series

    t0 = time.monotonic()
    model: Forecaster | None = None
    model_note = ""
    if job.model_artifact is not None:
        from core.forecast.lite import LiteForecaster

        try:
            model = LiteForecaster.load(job.model_artifact)
        except Exception as exc:  # an unreadable artifact: the baseline's candidates still run
            model_note = f"; the served model could not be loaded ({exc!r})"
            log.warning("dispatch self-tuning: %s", model_note[2:])
    history = _FORECAST_HISTORY_MINUTES
    if model is not None:
        history = max(history, TrainedDayAhead.history_for(model))
    start = job.night_minute - job.window_days * 1440 - history
    engine = create_db_engine(job.database_url)
    try:
        minutes, values = base_load_series(Storage(engine), start, job.night_minute - 1)
    finally:
        engine.dispose()
    load = np.full(job.night_minute - start, np.nan)
    load[minutes - start] = values
    out = tune(job, load, start, model)
    if model_note:
        out["note"] = f"{out['note']}{model_note}"
    out["wall_s"] = round(time.monotonic() - t0, 2)
    return out


def tune(
    job: TuningJob, load_kw: FloatArray, start_minute: int, model: Forecaster | None
) -> dict[str, Any]:
    """The replay and the choice on the base load ``load_kw`` from ``start_minute`` up to the
    night: every candidate on the seasonal baseline's day-ahead, and with ``model`` (the served
    one) the defaults on its day-ahead as the service plans on it."""
    tz = ZoneInfo(job.timezone)
    baseline = SeasonalMeanForecaster(weeks=2)
    day_ahead: dict[str, tuple[DayAheadFn, int]] = {
        "baseline": (
            lambda h, at: baseline.day_ahead(h, tz, at),
            baseline.day_ahead_history_minutes,
        )
    }
    if model is not None:
        trained = TrainedDayAhead(model, baseline, tz)
        day_ahead["trained"] = (trained, trained.history_minutes)
    pool = [
        replace(c, settings=replace(c.settings, replan_every_minutes=job.replan_every_minutes))
        for c in candidates(trained=model is not None)
        if job.names is None or c.name in job.names
    ]
    tuned = replay_window(
        load_kw,
        start_minute,
        job.night_minute,
        job.battery,
        tz,
        job.interval_minutes,
        pool,
        day_ahead,
        job.tariff,
        window_days=job.window_days,
        min_history_days=job.min_history_days,
    )
    return tuned.to_dict()


def candidate_named(name: str | None) -> Candidate:
    """The candidate of a stored choice (the defaults for an unknown or missing name)."""
    for candidate in candidates(trained=True):
        if candidate.name == name:
            return candidate
    return candidates()[0]


def plan_forecast(run: dict[str, Any], candidate: Candidate) -> str | None:
    """The day-ahead the chosen candidate planned on, when the run weighed the served model's
    against the baseline's; None (the served forecaster's, as before) when it did not."""
    names = {str(c.get("name")) for c in run.get("candidates") or [] if isinstance(c, dict)}
    return candidate.forecast if TRAINED_CANDIDATE in names else None


class TuningManager:
    """Runs the nightly replay in a child process, records it, serves its choice."""

    def __init__(
        self,
        storage: Any,
        clock: Clock,
        controller: DispatchController | None,
        database_url: str,
        tz: ZoneInfo,
        tariff: Tariff,
        interval_minutes: int,
        submit: Callable[[str, Callable[[], Any]], Awaitable[Any]],
        served_model: Callable[[], str | None] | None = None,
    ) -> None:
        # The artifact directory of the model the service serves now (None: the baseline).
        self._served_model = served_model or (lambda: None)
        self._storage = storage
        self._clock = clock
        self._controller = controller
        self._url = database_url
        self._tz = tz
        self._tariff = tariff
        self._interval = interval_minutes
        self._submit = submit
        self._task: asyncio.Task[dict[str, Any] | None] | None = None
        self._pool: ProcessPoolExecutor | None = None
        self.served: dict[str, Any] | None = None
        # Restrict the replay (tests): candidate names, the re-plan cadence, the window.
        self.names: tuple[str, ...] | None = None
        self.replan_every_minutes = 1
        self.min_history_days: float = MIN_HISTORY_DAYS
        self.window_days = WINDOW_DAYS

    def child_pids(self) -> list[int]:
        """The replay child's process id while one runs (for operators and tests)."""
        pool = self._pool
        if pool is None:
            return []
        # ProcessPoolExecutor keeps its workers by pid; there is no public accessor.
        processes = getattr(pool, "_processes", None) or {}
        return [int(pid) for pid in processes]

    @property
    def running(self) -> bool:
        """True while a replay child runs."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Serve the last recorded choice again (the choice survives a restart)."""
        runs = await asyncio.to_thread(self._storage.tuning_runs, 1, "done")
        if runs:
            self._serve(runs[0])

    def _serve(self, run: dict[str, Any]) -> None:
        candidate = candidate_named(run.get("chosen"))
        if self._controller is not None:
            level = run.get("level_kw") if candidate.history_level else None
            self._controller.use_settings(candidate.settings, level, plan_forecast(run, candidate))
        self.served = run
        log.info("dispatch self-tuning: serving %s", candidate.name)

    def trigger(self, night: datetime | None = None) -> asyncio.Task[dict[str, Any] | None]:
        """Start the replay for ``night`` (default: now) unless one runs; returns its task."""
        if self._task is not None and not self._task.done():
            return self._task
        when = night or self._clock.now()
        self._task = asyncio.create_task(self._run(minute_of(when)), name="dispatch-tuning")
        return self._task

    async def _run(self, night_minute: int) -> dict[str, Any] | None:
        if self._controller is None:
            return None
        job = TuningJob(
            self._url,
            str(self._tz),
            self._controller.battery,
            self._tariff,
            self._interval,
            night_minute,
            self.names,
            self.replan_every_minutes,
            self.min_history_days,
            self._served_model(),
            self.window_days,
        )
        loop = asyncio.get_running_loop()
        # A fresh spawned process: nothing of the serving process is inherited, and its memory
        # goes back to the OS when it ends.
        pool = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=background_child_init,
            initargs=(os.getpid(), TUNING_NICENESS),
        )
        self._pool = pool
        try:
            result: dict[str, Any] | None = await loop.run_in_executor(pool, run_tuning, job)
        except Exception as exc:  # the child died (killed, out of memory) or failed
            log.error("dispatch self-tuning process died: %r", exc)
            await self._record(night_minute, None, f"the replay process died: {exc!r}")
            return None
        finally:
            self._pool = None
            # Never wait here: the event loop serves BACnet and REST.
            pool.shutdown(wait=False, cancel_futures=True)
        assert result is not None
        run = await self._record(night_minute, result, str(result.get("note", "")))
        self._serve(run)
        return result

    async def _record(
        self, night_minute: int, result: dict[str, Any] | None, note: str
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "night_at": minute_start(night_minute),
            "finished_at": self._clock.now(),
            "status": "failed" if result is None else "done",
            "note": note,
        }
        if result is not None:
            fields.update(
                chosen=result["chosen"],
                level_kw=result["level_kw"],
                no_battery_kw=result["no_battery_kw"],
                history_days=result["history_days"],
                candidates=result["candidates"],
            )
        run_id = await self._submit(
            "dispatch tuning run", partial(self._storage.add_tuning_run, **fields)
        )
        return {"id": run_id, **fields}

    async def run_schedule(self, sleep: Sleep = asyncio.sleep) -> None:
        """Replay every night, ``TUNING_DELAY`` after the site's local midnight."""
        while True:
            now = self._clock.now()
            due = next_local_midnight(now - TUNING_DELAY, self._tz) + TUNING_DELAY
            await sleep(max(1.0, (due - now).total_seconds()))
            if self._clock.now() >= due:
                with contextlib.suppress(Exception):
                    await self.trigger(next_local_midnight(due - timedelta(days=1), self._tz))

    async def stop(self) -> None:
        """Stop waiting on a replay; its child finishes or dies with ours, nothing is served."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def status(self, demand_charge_per_kw: float) -> TuningStatus:
        """What the API shows: the served choice, every candidate's replayed bill, the saving."""
        run = self.served
        if run is None:
            return TuningStatus(
                chosen=DEFAULT_CANDIDATE,
                note="no nightly replay recorded yet: the defaults are served",
            )
        scores = tuple(
            TunedCandidate(str(s["name"]), float(s["billed_kw"]), float(s["throughput_kwh"]))
            for s in run.get("candidates") or []
        )
        chosen = next((s for s in scores if s.name == run.get("chosen")), None)
        base = run.get("no_battery_kw")
        saving_kw = None
        if chosen is not None and base is not None:
            saving_kw = max(0.0, float(base) - chosen.billed_kw)
        night = run.get("night_at")
        return TuningStatus(
            chosen=run.get("chosen") or DEFAULT_CANDIDATE,
            level_kw=_float_or_none(run.get("level_kw")),
            night_at=datetime.fromisoformat(night) if isinstance(night, str) else night,
            history_days=_float_or_none(run.get("history_days")),
            no_battery_kw=_float_or_none(base),
            candidates=scores,
            saving_kw=saving_kw,
            saving_per_month=None if saving_kw is None else saving_kw * demand_charge_per_kw,
            note=run.get("note"),
        )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
