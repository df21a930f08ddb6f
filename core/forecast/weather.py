"""Outdoor-air history import: a timestamp column and a temperature column onto the minute grid.

Weather station exports (NOAA LCD and the like) report about hourly at irregular minutes, with
many rows that carry a timestamp and no values. Reports are averaged per minute and linearly
interpolated between reports that are at most ``max_gap_minutes`` apart; longer gaps stay NaN.
NOAA stamps are local *standard* time all year (a spring-forward hour has reports, the fall-back
hour has none); ``clock='auto'`` detects that and converts with the zone's standard offset.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np

from core.forecast.meter_csv import (
    TIME_COLUMN_NAMES,
    FloatArray,
    ImportReport,
    IntArray,
    csv_reader,
    local_to_utc,
    parse_float,
    parse_stamps,
)
from core.timegrid import MINUTES_PER_DAY

logger = logging.getLogger(__name__)

Clock = Literal["auto", "local", "standard"]
# Preferred temperature column names, best first (dry bulb over dew point / wet bulb).
_TEMP_PREFERRED = ("drybulb", "dry_bulb", "dry bulb", "outdoor", "oat", "temperature", "temp")
_TEMP_EXCLUDED = ("dew", "wet", "feels", "apparent", "heat", "chill")


class WeatherImportError(ValueError):
    """The file could not be read as a timestamp + temperature series."""


@dataclass(slots=True)
class WeatherReport:
    """What the weather import kept, dropped and interpolated."""

    time_column: str = ""
    temp_column: str = ""
    rows_read: int = 0
    rows_without_time: int = 0
    rows_without_value: int = 0
    rows_nonexistent_local_time: int = 0
    reports: int = 0
    clock: str = "local"
    unit_converted: str = ""
    minutes_total: int = 0
    minutes_interpolated: int = 0
    minutes_missing: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict, JSON-ready."""
        return asdict(self)

    def summary(self) -> str:
        """One line: columns, what was skipped and how much was interpolated."""
        parts = [
            f"{self.rows_read} rows from {self.time_column!r}/{self.temp_column!r}",
            f"{self.reports} reports",
            f"clock {self.clock}",
            f"rows without a value: {self.rows_without_value}",
            f"minutes interpolated: {self.minutes_interpolated}",
            f"minutes missing (long gaps): {self.minutes_missing}",
        ]
        if self.rows_without_time:
            parts.append(f"rows without a parsable time: {self.rows_without_time}")
        if self.rows_nonexistent_local_time:
            parts.append(f"nonexistent local times dropped: {self.rows_nonexistent_local_time}")
        if self.unit_converted:
            parts.append(self.unit_converted)
        parts.extend(self.notes)
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class WeatherSeries:
    """Outdoor air on the 1-minute UTC grid (NaN where unknown), with the import report."""

    start_minute: int
    values: FloatArray
    report: WeatherReport

    def as_dict(self) -> dict[int, float]:
        """minute -> temperature for the minutes that have one (for ``Storage.upsert_weather``)."""
        idx = np.flatnonzero(~np.isnan(self.values))
        return dict(zip((idx + self.start_minute).tolist(), self.values[idx].tolist(), strict=True))


def _detect(header: list[str], time_column: str | None, temp_column: str | None) -> tuple[int, int]:
    names = [h.strip() for h in header]
    lowered = [n.lower() for n in names]

    def index_of(name: str) -> int:
        if name.lower() in lowered:
            return lowered.index(name.lower())
        raise WeatherImportError(f"column {name!r} not in header {names}")

    if time_column is not None:
        t_idx = index_of(time_column)
    else:
        t_idx = next(
            (i for i, n in enumerate(lowered) if any(k in n for k in TIME_COLUMN_NAMES)), 0
        )
    if temp_column is not None:
        return t_idx, index_of(temp_column)
    for key in _TEMP_PREFERRED:
        for i, n in enumerate(lowered):
            if i != t_idx and key in n and not any(x in n for x in _TEMP_EXCLUDED):
                return t_idx, i
    raise WeatherImportError(f"no temperature column found in header {names}")


def _standard_offset(tz: ZoneInfo, year: int) -> int:
    """The zone's standard-time UTC offset (minutes): the smaller of January's and July's."""
    offsets = []
    for month in (1, 7):
        off = datetime(year, month, 1, 12, tzinfo=tz).utcoffset() or timedelta(0)
        offsets.append(int(off.total_seconds() // 60))
    return min(offsets)


def load_weather_csv(
    path: str | Path,
    tz: ZoneInfo,
    *,
    time_column: str | None = None,
    temp_column: str | None = None,
    clock: Clock = "auto",
    convert: Literal["", "f_to_c", "c_to_f"] = "",
    max_gap_minutes: int = 180,
) -> WeatherSeries:
    """Read a weather CSV onto the minute grid (see the module docstring).

    ``clock``: 'local' (site wall clock with DST), 'standard' (local standard time all year) or
    'auto' (standard when stamps fall inside a spring-forward hour, else local). Stamps with an
    explicit UTC offset are taken as they are. ``convert`` changes the unit on the way in.
    """
    report = WeatherReport()
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader, decimal_comma = csv_reader(handle)
        try:
            header = next(reader)
        except StopIteration as exc:
            raise WeatherImportError("empty file") from exc
        t_idx, v_idx = _detect(header, time_column, temp_column)
        report.time_column = header[t_idx].strip()
        report.temp_column = header[v_idx].strip()
        stamps: list[str] = []
        values: list[float] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            report.rows_read += 1
            text = row[v_idx].strip() if len(row) > v_idx else ""
            # NOAA marks suspect values with a trailing 's'; the number is still the report.
            value = parse_float(text.rstrip("sS*"), decimal_comma) if text else float("nan")
            if np.isnan(value):
                report.rows_without_value += 1
                continue
            stamps.append(row[t_idx].strip() if len(row) > t_idx else "")
            values.append(value)
    if not values:
        raise WeatherImportError(f"no numeric values in column {report.temp_column!r}")
    parsed = parse_stamps(stamps)
    ok = parsed.ok
    report.rows_without_time = int((~ok).sum())
    temps = np.asarray(values, dtype=np.float64)[ok]
    wall, explicit, offsets = parsed.wall[ok], parsed.explicit[ok], parsed.offsets[ok]
    if len(wall) == 0:
        raise WeatherImportError(f"no parsable timestamps in column {report.time_column!r}")
    utc = wall - offsets
    local = ~explicit
    keep = np.ones(len(utc), dtype=bool)
    if local.any():
        scratch = ImportReport()
        converted, exists = local_to_utc(wall[local], tz, scratch)
        mode = clock
        if mode == "auto":
            mode = "standard" if (~exists).any() else "local"
            if mode == "standard":
                report.notes.append(
                    f"{int((~exists).sum())} reports inside a spring-forward hour: "
                    "stamps read as local standard time"
                )
        report.clock = mode
        if mode == "standard":
            year = datetime(1970, 1, 1).toordinal() + int(wall[local][0] // MINUTES_PER_DAY)
            std = _standard_offset(tz, datetime.fromordinal(year).year)
            utc[local] = wall[local] - std
        else:
            utc[local] = converted
            keep[np.flatnonzero(local)[~exists]] = False
            report.rows_nonexistent_local_time = int((~exists).sum())
    utc, temps = utc[keep], temps[keep]
    if convert == "f_to_c":
        temps = (temps - 32.0) * 5.0 / 9.0
        report.unit_converted = "converted F -> C"
    elif convert == "c_to_f":
        temps = temps * 9.0 / 5.0 + 32.0
        report.unit_converted = "converted C -> F"
    order = np.argsort(utc, kind="stable")
    utc, temps = utc[order], temps[order]
    uniq, first, counts = np.unique(utc, return_index=True, return_counts=True)
    means = np.add.reduceat(temps, first) / counts
    report.reports = len(uniq)
    series = interpolate_reports(uniq.astype(np.int64), means, max_gap_minutes)
    report.minutes_total = len(series)
    report.minutes_missing = int(np.isnan(series).sum())
    report.minutes_interpolated = len(series) - report.minutes_missing - len(uniq)
    logger.debug("weather import: %s", report.summary())
    return WeatherSeries(start_minute=int(uniq[0]), values=series, report=report)


def interpolate_reports(minutes: IntArray, temps: FloatArray, max_gap_minutes: int) -> FloatArray:
    """Dense minutes from sorted reports: linear between reports <= max_gap apart, else NaN."""
    start = int(minutes[0])
    grid = np.arange(start, int(minutes[-1]) + 1, dtype=np.int64)
    out = np.interp(grid, minutes, temps)
    # Minutes inside a gap longer than allowed stay unknown.
    gap_after = np.diff(minutes)
    for i in np.flatnonzero(gap_after > max_gap_minutes).tolist():
        lo = int(minutes[i]) - start + 1
        hi = int(minutes[i + 1]) - start
        out[lo:hi] = np.nan
    return np.asarray(out, dtype=np.float64)
