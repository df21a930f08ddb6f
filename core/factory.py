"""Builds a DsmCore: settings -> domain configs -> the core's rooms -> DsmCore.

The composition root (``open_dsm.bootstrap``) and the tests call ``build_core``; this is the one
place the core's collaborators are made and the settings turned into domain configs.
"""

from __future__ import annotations

import asyncio

from core.accuracy import LiveErrorTracker
from core.calendar_service import CalendarKeeper
from core.clock import Clock
from core.compute import SnapshotComputer
from core.config import Settings
from core.demand import DemandTracker, WindowMode
from core.forecast.base import HORIZON_MINUTES, Forecaster
from core.handlers import CommandHandlers, Hub
from core.history import ImportedHistory
from core.intake import ReadingStats
from core.minute_cache import MinuteCache, MinuteKeeper
from core.queries import CoreQueries
from core.readings import ReadingGrid
from core.service import DsmCore
from core.signals import LoadClassifier
from core.site_config import demand_config, dispatch_controller, tariff_of
from core.state import CoreState
from core.state_store import StateStore
from core.storage.repository import Storage
from core.timegrid import MINUTES_PER_DAY, MINUTES_PER_WEEK
from core.validation import InputValidator
from core.writer import DatabaseWriter

# Live RMSE of the served forecaster is taken over this trailing window of matched forecasts.
LIVE_RMSE_WINDOW_MINUTES = MINUTES_PER_DAY
# The cache holds at least this many weeks: room for any forecaster a training run may produce.
CACHE_MIN_WEEKS = 5


def cache_capacity_minutes(settings: Settings, forecaster: Forecaster) -> int:
    """Minutes the cache keeps: the percentile window, the forecaster's lags, and the horizon."""
    window = max(1, int(settings.percentile_window_days * MINUTES_PER_DAY))
    longest = max(window, forecaster.history_minutes, CACHE_MIN_WEEKS * MINUTES_PER_WEEK)
    return longest + HORIZON_MINUTES


def build_core(
    settings: Settings,
    storage: Storage,
    clock: Clock,
    forecaster: Forecaster,
    writer: DatabaseWriter | None = None,
) -> DsmCore:
    """A core over ``storage`` serving ``forecaster`` until a trained model replaces it."""
    writer = writer or DatabaseWriter(clock)
    tz = settings.tz
    demand = demand_config(settings)
    dispatch = dispatch_controller(settings)
    window_minutes = max(1, int(settings.percentile_window_days * MINUTES_PER_DAY))
    cache = MinuteCache(cache_capacity_minutes(settings, forecaster))
    grid = ReadingGrid(settings.stale_after_s)
    classifier = LoadClassifier(
        settings.high_percentile,
        settings.low_percentile,
        settings.flag_min_dwell_s,
        settings.flag_min_history_minutes,
    )
    errors = LiveErrorTracker(LIVE_RMSE_WINDOW_MINUTES)
    computer = SnapshotComputer(
        cache.meter,
        classifier,
        errors,
        tz,
        window_minutes,
        outdoor=cache.outdoor,
        dispatched=cache.dispatched,
        dispatch=dispatch,
        interval_minutes=settings.demand_interval_minutes,
        stale_after_s=settings.stale_after_s,
        sliding_window=settings.demand_window == WindowMode.SLIDING.value,
    )
    state = CoreState.initial(forecaster, DemandTracker(demand), settings.demand_target_kw)
    stats = ReadingStats()
    calendar = CalendarKeeper(storage, writer, clock, tz)
    keeper = MinuteKeeper(
        cache,
        grid,
        state,
        errors,
        computer.observed,
        storage,
        writer,
        clock,
        settings.stale_after_s,
    )
    store = StateStore(
        storage,
        writer,
        clock,
        cache,
        grid,
        classifier,
        errors,
        demand,
        LIVE_RMSE_WINDOW_MINUTES,
    )
    queries = CoreQueries(
        settings=settings,
        state=state,
        cache=cache,
        computer=computer,
        errors=errors,
        calendar=calendar,
        dispatch=dispatch,
        stats=stats,
        storage=storage,
        writer=writer,
        clock=clock,
        demand_config=demand,
        tariff=tariff_of(settings),
    )
    wake = asyncio.Event()  # set to recompute at once rather than at the next interval
    history = ImportedHistory(
        state=state,
        cache=cache,
        keeper=keeper,
        grid=grid,
        computer=computer,
        calendar=calendar,
        storage=storage,
        writer=writer,
        clock=clock,
        tz=tz,
        demand_config=demand,
        errors_window_minutes=LIVE_RMSE_WINDOW_MINUTES,
        changed=wake.set,
    )

    def handlers(hub: Hub) -> CommandHandlers:
        return CommandHandlers(
            hub,
            state=state,
            cache=cache,
            keeper=keeper,
            grid=grid,
            computer=computer,
            history=history,
            validator=InputValidator(settings),
            stats=stats,
            storage=storage,
            writer=writer,
            clock=clock,
            calendar=calendar,
        )

    return DsmCore(
        settings=settings,
        clock=clock,
        storage=storage,
        writer=writer,
        state=state,
        grid=grid,
        keeper=keeper,
        computer=computer,
        store=store,
        history=history,
        queries=queries,
        calendar=calendar,
        wake=wake,
        handlers=lambda hub: handlers(hub).table(),
    )
