"""SQLAlchemy 2 typed models. Timestamps are stored in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (stable Alembic diffs)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class MinuteReading(Base):
    """One row per UTC minute: the mean of the writes in it, or a carried-forward value."""

    __tablename__ = "minute_readings"

    # Minute index since the Unix epoch (UTC): the natural key, cheap to range-scan.
    minute: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    observed_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    kw: Mapped[float] = mapped_column(Float, nullable=False)
    # Number of writes averaged; 0 means the value was carried forward from the previous minute.
    sample_count: Mapped[int] = mapped_column(Integer, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    # Outdoor air temperature in force in this minute (the configured unit); None when unknown.
    outdoor_air_temp: Mapped[float | None] = mapped_column(Float, nullable=True)
    # kW of the battery and EV charging this service dispatches, in this minute (+ drawn from the
    # grid, as the meter counts it); the forecasters learn the meter less this. None: none known.
    dispatched_kw: Mapped[float | None] = mapped_column(Float, nullable=True)


class ModelRun(Base):
    """One training run of a forecaster, accepted, rejected or failed."""

    __tablename__ = "model_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # running / accepted / rejected / failed
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)  # schedule/api/cli
    model_version: Mapped[str | None] = mapped_column(String(64))
    model_family: Mapped[str | None] = mapped_column(String(64))
    artifact_path: Mapped[str | None] = mapped_column(Text)
    rows_used: Mapped[int | None] = mapped_column(Integer)
    train_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    train_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    holdout_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    rmse_kw: Mapped[float | None] = mapped_column(Float)
    mae_kw: Mapped[float | None] = mapped_column(Float)
    cvrmse_pct: Mapped[float | None] = mapped_column(Float)
    baseline_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    training_minutes: Mapped[float | None] = mapped_column(Float)
    error_text: Mapped[str | None] = mapped_column(Text)


class ServiceState(Base):
    """Small named JSON documents the core restores at start-up (last snapshot, flag state)."""

    __tablename__ = "service_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class ForecastLog(Base):
    """The 60-minute-ahead value each forecast gave for its target minute (live accuracy)."""

    __tablename__ = "forecast_log"

    target_minute: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    forecaster: Mapped[str] = mapped_column(String(64), nullable=False)
    kw: Mapped[float] = mapped_column(Float, nullable=False)
    made_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # Computed after the fact over imported minutes (not made live; not in the live error).
    replayed: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )


class DemandInterval(Base):
    """A closed demand interval: its average kW and whether it could set the period peak."""

    __tablename__ = "demand_intervals"

    start_minute: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    length_minutes: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    average_kw: Mapped[float] = mapped_column(Float, nullable=False)
    observed_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    complete: Mapped[bool] = mapped_column(Boolean, nullable=False)
    period_start_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    counted_for_peak: Mapped[bool] = mapped_column(Boolean, nullable=False)


class CalendarEntryRow(Base):
    """One entry of the site calendar (dates and their day type), in the calendar's order."""

    __tablename__ = "calendar_entries"

    # The entry's place in the calendar (0 first): the first entry that lists a date decides.
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # 'closed' or 'like <weekday>'.
    day_type: Mapped[str] = mapped_column(String(16), nullable=False)
    # The entry's JSON form (core.calendar.CalendarEntry.to_dict).
    entry: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class DispatchTuningRun(Base):
    """One nightly replay of the dispatch self-tuning: the choice and every candidate's bill."""

    __tablename__ = "dispatch_tuning_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    night_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # done / failed
    chosen: Mapped[str | None] = mapped_column(String(64))
    level_kw: Mapped[float | None] = mapped_column(Float)
    no_battery_kw: Mapped[float | None] = mapped_column(Float)
    history_days: Mapped[float | None] = mapped_column(Float)
    # [{"name", "billed_kw", "throughput_kwh"}, ...] over the replayed window
    candidates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(Text)
