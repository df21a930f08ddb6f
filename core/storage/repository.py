"""The repository: every database access the core makes goes through ``Storage``.

One room though over 600 lines: ``Storage`` is the core's one port to the database, about 40
short queries grouped by table around one engine and session factory; split per table, every
caller would hold several repositories sharing that engine, for no gain in what a reader follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    Engine,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from core.calendar import SiteCalendar, parse_calendar
from core.demand import ClosedInterval
from core.readings import CompletedMinute
from core.records import DemandIntervalRecord, LoggedForecast, ModelRunRecord, RunStatus
from core.storage.models import (
    CalendarEntryRow,
    DemandInterval,
    DispatchTuningRun,
    ForecastLog,
    MinuteReading,
    ModelRun,
    ServiceState,
)
from core.timegrid import minute_start

# (minute indices, values) of stored minutes, oldest first.
MinuteColumns = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]

log = logging.getLogger(__name__)

# service_state key of the calendar's own settings (the weekday a closed day runs like).
CALENDAR_STATE_KEY = "calendar"

_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class StoredMinute:
    """One persisted minute."""

    minute: int
    observed_at: datetime
    kw: float
    sample_count: int
    source: str
    outdoor_air_temp: float | None = None  # the configured unit
    dispatched_kw: float | None = None  # battery and EV kW this service dispatched


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, full sync, foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_pre_ping=False,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed minute survives a power cut, not only a process kill; at one row a
            # minute the cost is nothing.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Storage:
    """Typed data access over one engine. Methods are blocking: call them off the event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def session(self) -> Session:
        """A new session (use as a context manager)."""
        return self._sessions()

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # any driver error means not reachable
            log.warning("database ping failed", exc_info=True)
            return False

    # -- minute readings ---------------------------------------------------------------------

    def upsert_minutes(
        self,
        minutes: Sequence[CompletedMinute],
        source: str,
        outdoor_air: Mapping[int, float] | None = None,
        dispatched: Mapping[int, float] | None = None,
    ) -> None:
        """Insert or replace completed minutes (a later close of the same minute wins).

        ``outdoor_air`` (minute -> temperature in force, the configured unit) sets the outdoor
        air of those minutes; a minute not in it keeps what is stored (None when new).
        ``dispatched`` (minute -> battery and EV kW in force) likewise sets ``dispatched_kw``.
        """
        if not minutes:
            return
        with self.session() as session, session.begin():
            for item in minutes:
                row = MinuteReading(
                    minute=item.minute,
                    observed_at=minute_start(item.minute),
                    kw=item.kw,
                    sample_count=item.sample_count,
                    source=source,
                )
                if outdoor_air is not None and item.minute in outdoor_air:
                    row.outdoor_air_temp = float(outdoor_air[item.minute])
                if dispatched is not None and item.minute in dispatched:
                    row.dispatched_kw = float(dispatched[item.minute])
                session.merge(row)

    def upsert_weather(self, temps: Mapping[int, float]) -> int:
        """Set the outdoor air temperature (minute -> value) of stored minutes; return how many.

        Minutes without a stored kW row are skipped (import the meter history first).
        """
        keys = sorted(temps)
        updated = 0
        with self.session() as session, session.begin():
            for begin in range(0, len(keys), _CHUNK):
                chunk = keys[begin : begin + _CHUNK]
                present = list(
                    session.scalars(
                        select(MinuteReading.minute).where(
                            MinuteReading.minute.between(chunk[0], chunk[-1])
                        )
                    )
                )
                rows = [{"m": m, "t": float(temps[m])} for m in present if m in temps]
                if rows:
                    table = cast(Table, MinuteReading.__table__)
                    session.connection().execute(
                        update(table)
                        .where(table.c.minute == bindparam("m"))
                        .values(outdoor_air_temp=bindparam("t")),
                        rows,
                    )
                updated += len(rows)
        return updated

    def merge_history(self, sums: dict[int, tuple[float, int]], source: str) -> dict[int, float]:
        """Fold historical writes (minute -> (sum kW, count)) into stored minutes; return means.

        A minute already stored with real samples is averaged with the new ones, weighted by
        sample count; a carried-forward minute (0 samples) is replaced.
        """
        result: dict[int, float] = {}
        keys = sorted(sums)
        with self.session() as session, session.begin():
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                existing = {
                    row.minute: row
                    for row in session.scalars(
                        select(MinuteReading).where(MinuteReading.minute.in_(chunk))
                    )
                }
                new_rows = []
                for minute in chunk:
                    total_kw, count = sums[minute]
                    row = existing.get(minute)
                    if row is not None and row.sample_count > 0:
                        n = row.sample_count + count
                        row.kw = (row.kw * row.sample_count + total_kw) / n
                        row.sample_count = n
                        row.source = source
                        result[minute] = row.kw
                    elif row is not None:
                        row.kw = total_kw / count
                        row.sample_count = count
                        row.source = source
                        result[minute] = row.kw
                    else:
                        kw = total_kw / count
                        new_rows.append(
                            {
                                "minute": minute,
                                "observed_at": minute_start(minute),
                                "kw": kw,
                                "sample_count": count,
                                "source": source,
                            }
                        )
                        result[minute] = kw
                if new_rows:
                    session.execute(insert(MinuteReading), new_rows)
        return result

    def insert_missing_minutes(
        self,
        start_minute: int,
        values_kw: npt.NDArray[np.float64],
        source: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Insert a contiguous series (NaN = skip) where no minute is stored yet; return count.

        Re-importing the same file adds nothing, and live readings already stored win.
        """
        offsets = np.flatnonzero(~np.isnan(values_kw))
        inserted = 0
        for begin in range(0, len(offsets), _CHUNK * 4):
            chunk = offsets[begin : begin + _CHUNK * 4]
            minutes = (chunk + start_minute).tolist()
            with self.session() as session, session.begin():
                existing = set(
                    session.scalars(
                        select(MinuteReading.minute).where(
                            MinuteReading.minute.between(minutes[0], minutes[-1])
                        )
                    )
                )
                rows = [
                    {
                        "minute": minute,
                        "observed_at": minute_start(minute),
                        "kw": float(kw),
                        "sample_count": 1,
                        "source": source,
                    }
                    for minute, kw in zip(minutes, values_kw[chunk].tolist(), strict=True)
                    if minute not in existing
                ]
                if rows:
                    session.execute(insert(MinuteReading), rows)
                inserted += len(rows)
            if progress is not None:
                progress(min(begin + len(chunk), len(offsets)), len(offsets))
        return inserted

    def latest_minute(self) -> StoredMinute | None:
        """The newest stored minute."""
        with self.session() as session:
            row = session.scalars(
                select(MinuteReading).order_by(MinuteReading.minute.desc()).limit(1)
            ).first()
            return _stored(row) if row else None

    def load_series(self, start_minute: int, end_minute: int) -> MinuteColumns:
        """Minute indices and kW for ``start_minute <= minute <= end_minute`` (for the cache)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(MinuteReading.minute, MinuteReading.kw)
                .where(MinuteReading.minute.between(start_minute, end_minute))
                .order_by(MinuteReading.minute)
            ).all()
        return _columns(rows)

    def load_outdoor_air(self, start_minute: int, end_minute: int) -> MinuteColumns:
        """Minute indices and outdoor air of the minutes in [start, end] that have one."""
        return self._load_column(MinuteReading.outdoor_air_temp, start_minute, end_minute)

    def load_dispatched(self, start_minute: int, end_minute: int) -> MinuteColumns:
        """Minute indices and dispatched kW (battery and EV) of the minutes in [start, end]
        that have one."""
        return self._load_column(MinuteReading.dispatched_kw, start_minute, end_minute)

    def _load_column(
        self, column: InstrumentedAttribute[float | None], start_minute: int, end_minute: int
    ) -> MinuteColumns:
        """(minute, value) of a nullable minute column over [start, end], where it is set."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(MinuteReading.minute, column)
                .where(MinuteReading.minute.between(start_minute, end_minute), column.is_not(None))
                .order_by(MinuteReading.minute)
            ).all()
        return _columns(rows)

    def minute_bounds(self) -> tuple[int, int] | None:
        """(oldest, newest) stored minute, or None when nothing is stored."""
        with self.session() as session:
            row = session.execute(
                select(func.min(MinuteReading.minute), func.max(MinuteReading.minute))
            ).one()
        return None if row[0] is None else (int(row[0]), int(row[1]))

    def latest_minute_before(self, minute: int) -> int | None:
        """The newest stored minute index before ``minute``, or None."""
        with self.session() as session:
            value = session.scalar(
                select(func.max(MinuteReading.minute)).where(MinuteReading.minute < minute)
            )
        return None if value is None else int(value)

    def column_counts(self, start_minute: int, end_minute: int) -> tuple[int, int, int]:
        """Stored minutes in [start, end], and how many of them have outdoor air and a
        dispatched kW (one query: a running service's check for an import)."""
        with self.session() as session:
            row = session.execute(
                select(
                    func.count(),
                    func.count(MinuteReading.outdoor_air_temp),
                    func.count(MinuteReading.dispatched_kw),
                ).where(MinuteReading.minute.between(start_minute, end_minute))
            ).one()
        return int(row[0]), int(row[1]), int(row[2])

    def count_minutes_between(self, start_minute: int, end_minute: int) -> int:
        """How many minutes are stored in [start, end]."""
        with self.session() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(MinuteReading)
                    .where(MinuteReading.minute.between(start_minute, end_minute))
                )
                or 0
            )

    def list_minutes(
        self, start_minute: int | None, end_minute: int | None, limit: int
    ) -> list[StoredMinute]:
        """Stored minutes in time order within [start, end), at most ``limit``."""
        query = select(MinuteReading).order_by(MinuteReading.minute)
        if start_minute is not None:
            query = query.where(MinuteReading.minute >= start_minute)
        if end_minute is not None:
            query = query.where(MinuteReading.minute < end_minute)
        with self.session() as session:
            return [_stored(row) for row in session.scalars(query.limit(limit))]

    def count_minutes(self) -> int:
        """How many minutes are stored."""
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(MinuteReading)) or 0)

    # -- demand intervals ----------------------------------------------------------------------

    def upsert_intervals(self, intervals: Sequence[ClosedInterval]) -> None:
        """Store closed demand intervals (a re-close of the same interval replaces it)."""
        if not intervals:
            return
        with self.session() as session, session.begin():
            for item in intervals:
                session.merge(
                    DemandInterval(
                        start_minute=item.start_minute,
                        length_minutes=item.length_minutes,
                        start_at=minute_start(item.start_minute),
                        average_kw=item.average_kw,
                        observed_minutes=item.observed_minutes,
                        complete=item.complete,
                        period_start_at=minute_start(item.period_start_minute),
                        counted_for_peak=item.counted_for_peak,
                    )
                )

    def list_intervals(
        self, start_minute: int | None, end_minute: int | None, limit: int
    ) -> list[DemandIntervalRecord]:
        """Closed intervals starting in [start, end), oldest first."""
        query = select(DemandInterval).order_by(
            DemandInterval.start_minute, DemandInterval.length_minutes
        )
        if start_minute is not None:
            query = query.where(DemandInterval.start_minute >= start_minute)
        if end_minute is not None:
            query = query.where(DemandInterval.start_minute < end_minute)
        with self.session() as session:
            return [
                DemandIntervalRecord(
                    start_minute=row.start_minute,
                    length_minutes=row.length_minutes,
                    start_at=row.start_at,
                    average_kw=row.average_kw,
                    observed_minutes=row.observed_minutes,
                    complete=row.complete,
                    period_start_at=row.period_start_at,
                    counted_for_peak=row.counted_for_peak,
                )
                for row in session.scalars(query.limit(limit))
            ]

    # -- forecast log --------------------------------------------------------------------------

    def log_forecast(
        self, target_minute: int, forecaster: str, kw: float, made_at: datetime
    ) -> None:
        """Remember the 60-minute-ahead value for its target minute (newest wins)."""
        with self.session() as session, session.begin():
            session.merge(
                ForecastLog(
                    target_minute=target_minute,
                    forecaster=forecaster,
                    kw=kw,
                    made_at=made_at,
                    replayed=False,
                )
            )

    def log_replayed_forecasts(self, rows: Sequence[tuple[int, str, float, datetime]]) -> int:
        """Store replayed (target minute, forecaster, kW, made at) rows; a live row is kept.

        Replaces earlier replayed rows of the same minutes; returns how many were stored.
        """
        if not rows:
            return 0
        lo, hi = min(row[0] for row in rows), max(row[0] for row in rows)
        in_range = (ForecastLog.target_minute >= lo) & (ForecastLog.target_minute <= hi)
        with self.session() as session, session.begin():
            live = set(
                session.scalars(
                    select(ForecastLog.target_minute).where(
                        in_range, ForecastLog.replayed.is_(False)
                    )
                )
            )
            session.execute(delete(ForecastLog).where(in_range, ForecastLog.replayed.is_(True)))
            fresh = [
                {
                    "target_minute": target,
                    "forecaster": forecaster,
                    "kw": kw,
                    "made_at": made_at,
                    "replayed": True,
                }
                for target, forecaster, kw, made_at in rows
                if target not in live
            ]
            if fresh:
                session.execute(insert(ForecastLog), fresh)
            stored = len(fresh)
        return stored

    def live_forecast_targets(self, start_minute: int, end_minute: int) -> set[int]:
        """Target minutes in [start, end) that have a forecast logged live (not replayed)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ForecastLog.target_minute).where(
                    ForecastLog.target_minute >= start_minute,
                    ForecastLog.target_minute < end_minute,
                    ForecastLog.replayed.is_(False),
                )
            ).all()
        return {int(row[0]) for row in rows}

    def forecast_log_between(
        self, start_minute: int | None, end_minute: int | None, limit: int
    ) -> list[LoggedForecast]:
        """Logged forecasts in [start, end), oldest first, with whether each was replayed."""
        query = select(
            ForecastLog.target_minute,
            ForecastLog.forecaster,
            ForecastLog.kw,
            ForecastLog.made_at,
            ForecastLog.replayed,
        )
        if start_minute is not None:
            query = query.where(ForecastLog.target_minute >= start_minute)
        if end_minute is not None:
            query = query.where(ForecastLog.target_minute < end_minute)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(ForecastLog.target_minute).limit(limit)).all()
        return [
            LoggedForecast(int(m), str(name), float(kw), made, bool(replayed))
            for m, name, kw, made, replayed in rows
        ]

    def forecasts_since(self, minute: int) -> list[tuple[int, float]]:
        """(target minute, kW) of forecasts logged live from ``minute`` on (not replayed)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ForecastLog.target_minute, ForecastLog.kw)
                .where(ForecastLog.target_minute >= minute, ForecastLog.replayed.is_(False))
                .order_by(ForecastLog.target_minute)
            ).all()
        return [(int(m), float(kw)) for m, kw in rows]

    def prune_forecasts(self, before_minute: int) -> None:
        """Drop forecast-log rows older than ``before_minute`` (the log is only for live RMSE)."""
        with self.session() as session, session.begin():
            session.execute(delete(ForecastLog).where(ForecastLog.target_minute < before_minute))

    # -- service state -------------------------------------------------------------------------

    def get_state(self, key: str) -> dict[str, Any] | None:
        """A named JSON document, or None."""
        with self.session() as session:
            row = session.get(ServiceState, key)
            return dict(row.value) if row else None

    def set_state(self, key: str, value: dict[str, Any]) -> None:
        """Store a named JSON document."""
        with self.session() as session, session.begin():
            session.merge(ServiceState(key=key, value=value, updated_at=datetime.now(UTC)))

    # -- site calendar -------------------------------------------------------------------------

    def load_calendar(self) -> SiteCalendar:
        """The stored site calendar (empty when none was ever stored)."""
        with self.session() as session:
            rows = session.scalars(select(CalendarEntryRow).order_by(CalendarEntryRow.position))
            entries = [dict(row.entry) for row in rows]
            state = session.get(ServiceState, CALENDAR_STATE_KEY)
            closed = (state.value if state else {}).get("closed_like", "sunday")
        return parse_calendar({"closed_like": closed, "entries": entries})

    def save_calendar(self, calendar: SiteCalendar) -> None:
        """Replace the stored calendar with ``calendar`` in one transaction."""
        now = datetime.now(UTC)
        document = calendar.to_dict()
        with self.session() as session, session.begin():
            session.execute(delete(CalendarEntryRow))
            for position, entry in enumerate(document["entries"]):
                session.add(
                    CalendarEntryRow(
                        position=position,
                        day_type=entry["day_type"],
                        entry=entry,
                        updated_at=now,
                    )
                )
            session.merge(
                ServiceState(
                    key=CALENDAR_STATE_KEY,
                    value={"closed_like": document["closed_like"]},
                    updated_at=now,
                )
            )

    # -- model runs ----------------------------------------------------------------------------

    def add_model_run(self, **fields: Any) -> int:
        """Insert a model run and return its id."""
        with self.session() as session, session.begin():
            run = ModelRun(**fields)
            session.add(run)
            session.flush()
            return int(run.id)

    def update_model_run(self, run_id: int, **fields: Any) -> bool:
        """Update fields of a model run; False (nothing changed) once its status is final.

        A final status is written once: a run marked failed by a restarted service is never
        rewritten by a training process that outlived the old one.
        """
        with self.session() as session, session.begin():
            run = session.get(ModelRun, run_id, with_for_update=True)
            if run is None:
                raise KeyError(run_id)
            if RunStatus(run.status).final:
                log.warning("model run %d is already %s; not rewriting it", run_id, run.status)
                return False
            for name, value in fields.items():
                setattr(run, name, value)
            return True

    def model_runs(self, limit: int = 50) -> list[ModelRunRecord]:
        """Newest model runs first."""
        with self.session() as session:
            rows = session.scalars(select(ModelRun).order_by(ModelRun.id.desc()).limit(limit))
            return [_run_record(row) for row in rows]

    def latest_model_run(self, status: str | None = None) -> ModelRunRecord | None:
        """The newest run, optionally with a given status."""
        query = select(ModelRun).order_by(ModelRun.id.desc()).limit(1)
        if status is not None:
            query = query.where(ModelRun.status == status)
        with self.session() as session:
            row = session.scalars(query).first()
            return None if row is None else _run_record(row)

    # -- dispatch self-tuning -------------------------------------------------------------------

    def add_tuning_run(self, **fields: Any) -> int:
        """Record one nightly self-tuning replay; returns its id."""
        with self.session() as session, session.begin():
            run = DispatchTuningRun(**fields)
            session.add(run)
            session.flush()
            return int(run.id)

    def tuning_runs(self, limit: int = 10, status: str | None = None) -> list[dict[str, Any]]:
        """Newest self-tuning runs first, as plain dicts."""
        query = select(DispatchTuningRun).order_by(DispatchTuningRun.id.desc()).limit(limit)
        if status is not None:
            query = query.where(DispatchTuningRun.status == status)
        with self.session() as session:
            return [
                {
                    "id": row.id,
                    "night_at": row.night_at,
                    "finished_at": row.finished_at,
                    "status": row.status,
                    "chosen": row.chosen,
                    "level_kw": row.level_kw,
                    "no_battery_kw": row.no_battery_kw,
                    "history_days": row.history_days,
                    "candidates": list(row.candidates or []),
                    "note": row.note,
                }
                for row in session.scalars(query)
            ]


def _columns(rows: Sequence[Any]) -> MinuteColumns:
    """(minute, value) rows -> two arrays (np.fromiter: np.array over Row objects is ~100x
    slower, seconds for a few weeks of minutes)."""
    n = len(rows)
    minutes = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
    values = np.fromiter((r[1] for r in rows), dtype=np.float64, count=n)
    return minutes, values


def _run_record(row: ModelRun) -> ModelRunRecord:
    return ModelRunRecord(
        id=row.id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        status=RunStatus(row.status),
        trigger=row.trigger,
        model_version=row.model_version,
        model_family=row.model_family,
        artifact_path=row.artifact_path,
        rows_used=row.rows_used,
        train_start=row.train_start,
        train_end=row.train_end,
        holdout_start=row.holdout_start,
        rmse_kw=row.rmse_kw,
        mae_kw=row.mae_kw,
        cvrmse_pct=row.cvrmse_pct,
        baseline_metrics=row.baseline_metrics,
        training_minutes=row.training_minutes,
        error_text=row.error_text,
    )


def _stored(row: MinuteReading) -> StoredMinute:
    return StoredMinute(
        row.minute,
        row.observed_at,
        row.kw,
        row.sample_count,
        row.source,
        row.outdoor_air_temp,
        row.dispatched_kw,
    )
