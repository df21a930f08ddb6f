"""The state store: what the core saves between runs and how a start restores it.

Four named JSON documents in ``service_state``: the last snapshot, the load classifier, the
demand tracker and the inputs' priority arrays. They are saved together after every computation
and every target change; a start reads them back with the minute cache, the open minute and the
live forecast errors. Saved states older than the priority arrays are rewritten by the Alembic
data migration 0009, so restoring reads one form only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from datetime import datetime

from core.accuracy import LiveErrorTracker
from core.clock import Clock
from core.commands import CommandState, InputKey
from core.demand import DemandConfig, DemandTracker
from core.forecast.base import HORIZON_MINUTES
from core.minute_cache import MinuteCache, meter_quality
from core.readings import ReadingGrid
from core.signals import LoadClassifier
from core.snapshot import ModelStatus, Snapshot
from core.state import CoreState
from core.storage.repository import Storage
from core.timegrid import minute_of, minute_start
from core.writer import DatabaseWriter

log = logging.getLogger(__name__)

STATE_SNAPSHOT = "snapshot"
STATE_CLASSIFIER = "load_classifier"
STATE_DEMAND = "demand_tracker"
STATE_COMMANDS = "commands"


class StateStore:
    """Saves the core's state through the writer; restores it, with the caches, at start."""

    def __init__(
        self,
        storage: Storage,
        writer: DatabaseWriter,
        clock: Clock,
        cache: MinuteCache,
        grid: ReadingGrid,
        classifier: LoadClassifier,
        errors: LiveErrorTracker,
        demand_config: DemandConfig,
        errors_window_minutes: int,
    ) -> None:
        self._storage = storage
        self._writer = writer
        self._clock = clock
        self._cache = cache
        self._grid = grid
        self._classifier = classifier
        self._errors = errors
        self._demand_config = demand_config
        self._errors_window_minutes = errors_window_minutes

    def restore(self, state: CoreState, now: datetime) -> None:
        """Read back the cache, the open minute, the saved state and the live errors (a read;
        runs in a worker thread before the core takes commands)."""
        now_minute = minute_of(now)
        cached = self._cache.restore(self._storage, now_minute)
        latest = self._storage.latest_minute()
        if latest is not None:
            self._grid.restore(latest.minute, latest.kw, latest.sample_count, now.timestamp())
        saved = self._storage.get_state(STATE_CLASSIFIER)
        if saved:
            self._classifier.restore(saved)
        self._restore_commands(state)
        demand_state = self._storage.get_state(STATE_DEMAND)
        if demand_state:
            try:
                state.demand = DemandTracker.from_state(demand_state, self._demand_config)
            except ValueError:
                log.warning("demand state unreadable; starting a fresh billing period record")
        self._restore_snapshot(state, now)
        state.demand.set_target(state.commands[InputKey.DEMAND_TARGET_KW].present_value)
        window_start = now_minute - self._errors_window_minutes
        for target, kw in self._storage.forecasts_since(window_start):
            self._errors.predicted(target, kw)
            observed = self._cache.base_load(target)
            if target <= now_minute - 1 and not math.isnan(observed):
                self._errors.observed(target, observed)
        log.info(
            "restored %d cached minutes (latest %s), snapshot from %s",
            cached,
            minute_start(latest.minute).isoformat() if latest else "none",
            state.snapshot.computed_at.isoformat() if state.snapshot.computed_at else "never",
        )

    def _restore_commands(self, state: CoreState) -> None:
        saved = self._storage.get_state(STATE_COMMANDS) or {}
        for key in InputKey:
            saved_command = saved.get(key)
            if not isinstance(saved_command, dict):
                continue
            current = state.commands[key]
            try:
                restored = CommandState.from_state(saved_command, current.hold_last)
            except (ValueError, TypeError):
                log.warning("ignoring the unreadable priority array of %s", key)
                continue
            if not current.hold_last:  # a setting: the configured default wins
                restored = dataclasses.replace(
                    restored, relinquish_default=current.relinquish_default
                )
            state.commands[key] = restored

    def _restore_snapshot(self, state: CoreState, now: datetime) -> None:
        saved = self._storage.get_state(STATE_SNAPSHOT)
        if not saved:
            return
        try:
            restored = Snapshot.from_state(saved)
        except (KeyError, ValueError, TypeError):
            log.warning("ignoring an unreadable saved snapshot", exc_info=True)
            return
        # The model fields describe what serves now (the baseline until the training manager
        # loads an accepted model); keep the measured figures.
        model = ModelStatus.serving(state.forecaster.name, restored.model)
        state.snapshot = dataclasses.replace(
            restored, input_quality=meter_quality(self._grid, now), model=model
        )

    def save(self, state: CoreState) -> None:
        """Queue the snapshot, classifier, demand tracker and priority arrays for the database,
        and prune forecasts older than the live error window."""
        snapshot_state = state.snapshot.to_state()
        classifier_state = self._classifier.to_state()
        demand_state = state.demand.to_state()
        commands_state = {key: command.to_state() for key, command in state.commands.items()}
        horizon = minute_of(self._clock.now()) - self._errors_window_minutes - HORIZON_MINUTES
        storage = self._storage

        def write() -> None:
            storage.set_state(STATE_SNAPSHOT, snapshot_state)
            storage.set_state(STATE_CLASSIFIER, classifier_state)
            storage.set_state(STATE_DEMAND, demand_state)
            storage.set_state(STATE_COMMANDS, commands_state)
            storage.prune_forecasts(horizon)

        self._writer.enqueue("service state", write)
