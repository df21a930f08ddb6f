"""Meter CSV import onto the 1-minute UTC grid: column and date-format detection, site-local
times across daylight-saving changes, dead-meter masking and short-gap filling (plain numpy).

The parsing helpers are public: ``core.forecast.weather`` reads its files with the same ones.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.timegrid import (
    MINUTES_PER_DAY,
    OFFSET_BUCKET_MINUTES,
)

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_EPOCH_DAY = datetime(1970, 1, 1).toordinal()

_DATE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"), "ymd"),
    (re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"), "ymd"),
    (re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{2,4})$"), "xy/y"),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$"), "dmy"),
    (re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{4})$"), "xy/y"),
)
_TIME_RE = re.compile(
    r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?\s*([AaPp][Mm])?\s*"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)
TIME_COLUMN_NAMES = ("date", "time", "timestamp", "datetime", "ts", "local")


class MeterImportError(ValueError):
    """The CSV could not be read as a timestamp + kW series."""


@dataclass(slots=True)
class ImportReport:
    """What the CSV import kept, dropped and filled (counts of rows or minutes)."""

    time_column: str = ""
    kw_column: str = ""
    rows_read: int = 0
    rows_blank_or_unparsable_time: int = 0
    rows_non_numeric_kw: int = 0
    rows_nonexistent_local_time: int = 0
    rows_duplicate_minute: int = 0
    ambiguous_local_rows: int = 0
    resolution_minutes: int = 1
    reversed_order: bool = False
    zero_run_minutes_dropped: int = 0
    flatline_minutes_dropped: int = 0
    minutes_total: int = 0
    minutes_filled_linear: int = 0
    minutes_missing: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict, JSON-ready."""
        return asdict(self)

    def summary(self) -> str:
        """One line listing everything that was dropped or filled."""
        parts = [
            f"{self.rows_read} rows read from {self.time_column!r}/{self.kw_column!r}",
            f"resolution {self.resolution_minutes} min",
        ]
        for key in (
            "rows_blank_or_unparsable_time",
            "rows_non_numeric_kw",
            "rows_nonexistent_local_time",
            "rows_duplicate_minute",
            "ambiguous_local_rows",
            "zero_run_minutes_dropped",
            "flatline_minutes_dropped",
            "minutes_filled_linear",
            "minutes_missing",
        ):
            value = getattr(self, key)
            if value:
                parts.append(f"{key.replace('_', ' ')}: {value}")
        if self.reversed_order:
            parts.append("rows were newest-first (reversed)")
        parts.extend(self.notes)
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class MeterSeries:
    """A meter series on the 1-minute UTC grid, with the import report."""

    start_minute: int
    values_kw: FloatArray
    report: ImportReport


def parse_float(text: str, decimal_comma: bool = False) -> float:
    """A number written with a decimal point (or comma), NaN when it is not one."""
    if decimal_comma and "," in text:
        # '2,88' and '1.234,5' (a thousands point) as written by European exports.
        text = text.replace(".", "").replace(",", ".")
    try:
        return float(text)
    except ValueError:
        return float("nan")


def csv_reader(handle: TextIO) -> tuple[Iterator[list[str]], bool]:
    """A CSV reader for the file's delimiter, and whether its numbers use a decimal comma.

    Comma-separated unless the header line holds more semicolons or tabs than commas: many
    European building systems export ';'-separated files with decimal commas ('2,88').
    """
    first = handle.readline()
    handle.seek(0)
    delimiter = max((",", ";", "\t"), key=lambda d: (first.count(d), d == ","))
    return csv.reader(handle, delimiter=delimiter), delimiter != ","


def _detect_columns(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    time_column: str | None,
    kw_column: str | None,
    decimal_comma: bool = False,
) -> tuple[int, int]:
    names = [h.strip() for h in header]
    lowered = [n.lower() for n in names]

    def index_of(name: str) -> int:
        if name in names:
            return names.index(name)
        if name.lower() in lowered:
            return lowered.index(name.lower())
        raise MeterImportError(f"column {name!r} not in CSV header {names}")

    if time_column is not None:
        t_idx = index_of(time_column)
    else:
        t_idx = next(
            (i for i, n in enumerate(lowered) if any(k in n for k in TIME_COLUMN_NAMES)), 0
        )
    if kw_column is not None:
        k_idx = index_of(kw_column)
    else:
        candidates = [i for i, n in enumerate(lowered) if i != t_idx and "kw" in n]
        if not candidates:
            # Fall back to the first other column that is mostly numeric.
            sample = rows[: min(len(rows), 200)]
            for i in range(len(names)):
                if i == t_idx:
                    continue
                parsed = [
                    parse_float(r[i], decimal_comma) for r in sample if len(r) > i and r[i].strip()
                ]
                if parsed and np.isfinite(parsed).mean() > 0.9:
                    candidates.append(i)
                    break
        if not candidates:
            raise MeterImportError(f"no kW column found in CSV header {names}")
        k_idx = candidates[0]
    return t_idx, k_idx


def parse_dates(unique_dates: Sequence[str]) -> dict[str, int | None]:
    """Map each unique date string to days since the epoch (None when unparsable)."""
    parsed: dict[str, tuple[int, int, int, str] | None] = {}
    first_over_12 = second_over_12 = False
    for text in unique_dates:
        result: tuple[int, int, int, str] | None = None
        for pattern, kind in _DATE_PATTERNS:
            m = pattern.match(text)
            if m:
                a, b, c = (int(g) for g in m.groups())
                result = (a, b, c, kind)
                if kind == "xy/y":
                    first_over_12 |= a > 12
                    second_over_12 |= b > 12
                break
        parsed[text] = result
    day_first = first_over_12 and not second_over_12
    out: dict[str, int | None] = {}
    for text, res in parsed.items():
        if res is None:
            out[text] = None
            continue
        a, b, c, kind = res
        if kind == "ymd":
            year, month, day = a, b, c
        elif kind == "dmy" or day_first:
            day, month, year = a, b, c
        else:
            month, day, year = a, b, c
        if year < 100:
            year += 2000
        try:
            out[text] = datetime(year, month, day).toordinal() - _EPOCH_DAY
        except ValueError:
            out[text] = None
    return out


def parse_time(text: str) -> tuple[int, int | None] | None:
    """(minute of day, explicit UTC offset in minutes or None), None when unparsable."""
    if not text:
        return 0, None
    m = _TIME_RE.match(text)
    if m is None:
        return None
    hour, minute = int(m.group(1)), int(m.group(2))
    ampm, zone = m.group(4), m.group(5)
    if ampm is not None:
        hour = hour % 12 + (12 if ampm.lower() == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    offset: int | None = None
    if zone is not None:
        if zone == "Z":
            offset = 0
        else:
            digits = zone[1:].replace(":", "")
            offset = int(digits[:2]) * 60 + int(digits[2:])
            offset = -offset if zone[0] == "-" else offset
    return hour * 60 + minute, offset


def split_stamp(text: str) -> tuple[str, str]:
    """A timestamp's (date, time) parts, split at its 'T' or first space."""
    text = text.strip()
    for sep in ("T", " "):
        pos = text.find(sep)
        if pos > 0:
            return text[:pos], text[pos + 1 :].strip()
    return text, ""


@dataclass(frozen=True, slots=True)
class ParsedStamps:
    """Timestamps parsed row by row (values of rows where ``ok`` is False are 0)."""

    wall: IntArray  # the stamp's wall-clock minute since 1970-01-01 00:00 (its own clock)
    explicit: npt.NDArray[np.bool_]  # the stamp states its UTC offset
    offsets: IntArray  # that offset, minutes east of UTC
    ok: npt.NDArray[np.bool_]  # the date and time parts both parsed


def parse_stamps(stamps: Sequence[str]) -> ParsedStamps:
    """Parse timestamp texts, each distinct date part and time part once (far fewer than rows)."""
    parts = [split_stamp(s) for s in stamps]
    date_map = parse_dates(sorted({p[0] for p in parts}))
    time_map = {t: parse_time(t) for t in {p[1] for p in parts}}
    n = len(parts)
    wall = np.zeros(n, dtype=np.int64)
    explicit = np.zeros(n, dtype=bool)
    offsets = np.zeros(n, dtype=np.int64)
    ok = np.ones(n, dtype=bool)
    for i, (d, t) in enumerate(parts):
        day, tm = date_map[d], time_map[t]
        if day is None or tm is None:
            ok[i] = False
            continue
        wall[i] = day * MINUTES_PER_DAY + tm[0]
        if tm[1] is not None:
            explicit[i] = True
            offsets[i] = tm[1]
    return ParsedStamps(wall, explicit, offsets, ok)


def local_to_utc(
    local: IntArray, tz: ZoneInfo, report: ImportReport
) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """UTC minutes for local wall-clock minutes (file order kept); mask of rows that exist.

    Fall-back hours: the first occurrence of a repeated wall-clock minute is taken as the
    earlier (daylight) instant, the second as the later one. Spring-forward hours do not exist
    and are dropped.
    """
    buckets = np.floor_divide(local, OFFSET_BUCKET_MINUTES)
    unique, inverse = np.unique(buckets, return_inverse=True)
    inverse = inverse.reshape(-1)
    off0 = np.empty(len(unique), dtype=np.int64)
    off1 = np.empty(len(unique), dtype=np.int64)
    exists = np.ones(len(unique), dtype=bool)
    for i, bucket in enumerate(unique.tolist()):
        naive = datetime(1970, 1, 1) + timedelta(minutes=bucket * OFFSET_BUCKET_MINUTES)
        a = naive.replace(tzinfo=tz, fold=0)
        b = naive.replace(tzinfo=tz, fold=1)
        off0[i] = int((a.utcoffset() or timedelta(0)).total_seconds() // 60)
        off1[i] = int((b.utcoffset() or timedelta(0)).total_seconds() // 60)
        # A wall time that does not exist does not survive a round trip through UTC.
        back = a.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
        exists[i] = back == naive
    row_exists = exists[inverse]
    row_off0 = off0[inverse]
    row_off1 = off1[inverse]
    ambiguous = row_exists & (row_off0 != row_off1)
    fold = np.zeros(len(local), dtype=bool)
    if ambiguous.any():
        idx = np.flatnonzero(ambiguous)
        _, first = np.unique(local[idx], return_index=True)
        second = np.ones(len(idx), dtype=bool)
        second[first] = False
        fold[idx[second]] = True
        report.ambiguous_local_rows = len(idx)
    utc = local - np.where(fold, row_off1, row_off0)
    report.rows_nonexistent_local_time = int((~row_exists).sum())
    return utc, row_exists


def _runs(mask: npt.NDArray[np.bool_]) -> tuple[IntArray, IntArray]:
    """Start indices and lengths of the runs of True in ``mask``."""
    padded = np.concatenate(([False], mask, [False]))
    diff = np.diff(padded.astype(np.int8))
    starts = np.flatnonzero(diff == 1)
    ends = np.flatnonzero(diff == -1)
    return starts.astype(np.int64), (ends - starts).astype(np.int64)


def meter_quantum(values_kw: FloatArray) -> float:
    """The meter's resolution: a low percentile of the non-zero steps between samples."""
    steps = np.abs(np.diff(values_kw))
    steps = steps[np.isfinite(steps) & (steps > 1e-9)]
    if len(steps) == 0:
        return 0.0
    return float(np.percentile(steps, 1))


def _quiet_elsewhere(
    values_kw: FloatArray, lo: int, hi: int, samples_per_day: int, quantum: float
) -> bool:
    """True when the same clock span on nearby days (up to a week either side) also moves by
    no more than about one meter step: a flat run there is the building being quiet."""
    ranges = []
    for days in (*range(-7, 0), *range(1, 8)):
        a, b = lo + days * samples_per_day, hi + days * samples_per_day
        if a < 0 or b > len(values_kw):
            continue
        span = values_kw[a:b]
        if np.isnan(span).mean() > 0.5:
            continue
        ranges.append(float(np.nanmax(span) - np.nanmin(span)))
    if len(ranges) < 2:
        return False
    return float(np.median(ranges)) <= 2.0 * quantum + 1e-9


def mask_dead_meter(
    values_kw: FloatArray,
    *,
    zero_run_minutes: int = 15,
    flatline_minutes: int = 120,
    samples_per_day: int = 0,
    dead_samples: int = 0,
) -> tuple[FloatArray, int, int]:
    """NaN out zero runs and exactly-flat runs that look like a dead meter; returns counts.

    Lengths are in samples. With ``samples_per_day`` a flat run of ``flatline_minutes`` samples
    is kept when the same clock span on nearby days also stays within about one meter step
    (a quantised meter on a quiet night), unless it reaches ``dead_samples`` (when > 0): a meter
    that does not move for that long is dead whatever the hour.
    """
    out = values_kw.copy()
    zero_dropped = flat_dropped = 0
    if zero_run_minutes > 0:
        starts, lengths = _runs(np.abs(np.nan_to_num(out, nan=1.0)) < 1e-9)
        for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
            if n >= zero_run_minutes:
                out[s : s + n] = np.nan
                zero_dropped += n
    if flatline_minutes > 0 and len(out) > 1:
        quantum = meter_quantum(values_kw) if samples_per_day > 0 else 0.0
        same = np.zeros(len(out), dtype=bool)
        same[1:] = out[1:] == out[:-1]
        starts, lengths = _runs(same)
        for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
            # The run of equal values starts one sample before the first 'same'.
            length = n + 1
            if length < flatline_minutes:
                continue
            dead = dead_samples > 0 and length >= dead_samples
            if (
                not dead
                and samples_per_day > 0
                and _quiet_elsewhere(values_kw, s - 1, s + n, samples_per_day, quantum)
            ):
                continue
            out[s - 1 : s + n] = np.nan
            flat_dropped += length
    return out, zero_dropped, flat_dropped


def fill_short_gaps(values_kw: FloatArray, max_fill_minutes: int) -> tuple[FloatArray, int]:
    """Linearly fill NaN holes of at most ``max_fill_minutes`` between two values."""
    out = values_kw.copy()
    if max_fill_minutes <= 0:
        return out, 0
    starts, lengths = _runs(np.isnan(out))
    filled = 0
    for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
        if n > max_fill_minutes or s == 0 or s + n >= len(out):
            continue
        left, right = out[s - 1], out[s + n]
        out[s : s + n] = left + (right - left) * np.arange(1, n + 1) / (n + 1)
        filled += n
    return out, filled


def load_meter_csv(
    path: str | Path,
    tz: ZoneInfo,
    *,
    time_column: str | None = None,
    kw_column: str | None = None,
    stamp: str = "start",
    max_fill_minutes: int = 5,
    zero_run_minutes: int = 15,
    flatline_minutes: int = 120,
    dead_meter_minutes: int = 720,
) -> MeterSeries:
    """Read a meter CSV (site-local or offset-stamped times) onto the 1-minute UTC grid.

    Times without an explicit offset are site-local (``tz``). Coarser data (e.g. hourly) is
    spread over the minutes of each interval; ``stamp`` says whether a timestamp marks the
    'start' or 'end' of its interval. Zero runs / flat lines from a dead meter become NaN, short
    holes are filled linearly, long ones stay NaN. A flat run is kept where the same clock span
    on nearby days is as quiet (a quantised meter at night) unless it lasts ``dead_meter_minutes``.
    Raises MeterImportError on unusable input.
    """
    if stamp not in ("start", "end"):
        raise ValueError("stamp must be 'start' or 'end'")
    report = ImportReport()
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader, decimal_comma = csv_reader(handle)
        try:
            header = next(reader)
        except StopIteration as exc:
            raise MeterImportError("empty CSV") from exc
        rows = [r for r in reader if any(cell.strip() for cell in r)]
    blank_rows = 0
    t_idx, k_idx = _detect_columns(header, rows, time_column, kw_column, decimal_comma)
    report.time_column = header[t_idx].strip()
    report.kw_column = header[k_idx].strip()
    report.rows_read = len(rows)

    stamps = [r[t_idx].strip() if len(r) > t_idx else "" for r in rows]
    kw_text = [r[k_idx].strip() if len(r) > k_idx else "" for r in rows]
    del rows
    kw = np.array(
        [parse_float(t, decimal_comma) if t else np.nan for t in kw_text], dtype=np.float64
    )
    del kw_text

    parsed = parse_stamps(stamps)
    del stamps
    ok = parsed.ok
    report.rows_blank_or_unparsable_time = int((~ok).sum()) + blank_rows
    if not ok.any():
        raise MeterImportError(f"no parsable timestamps in column {report.time_column!r}")
    wall, explicit, offsets, kw = parsed.wall[ok], parsed.explicit[ok], parsed.offsets[ok], kw[ok]

    # eGauge exports newest first; reverse so 'first occurrence' in a fall-back hour is earlier.
    if len(wall) > 1 and np.mean(np.diff(wall) < 0) > 0.5:
        wall, explicit, offsets, kw = wall[::-1], explicit[::-1], offsets[::-1], kw[::-1]
        report.reversed_order = True

    utc = wall - offsets
    local_rows = ~explicit
    if local_rows.any():
        converted, exists = local_to_utc(wall[local_rows], tz, report)
        utc[local_rows] = converted
        keep = np.ones(len(utc), dtype=bool)
        keep[np.flatnonzero(local_rows)[~exists]] = False
        utc, kw = utc[keep], kw[keep]
    report.rows_non_numeric_kw = int(np.isnan(kw).sum())
    valid = ~np.isnan(kw)
    utc, kw = utc[valid], kw[valid]
    if len(utc) == 0:
        raise MeterImportError(f"no numeric values in column {report.kw_column!r}")

    # Resolution: the most common step between distinct stamps.
    order = np.argsort(utc, kind="stable")
    utc, kw = utc[order], kw[order]
    uniq, first_idx, counts = np.unique(utc, return_index=True, return_counts=True)
    report.rows_duplicate_minute = int(len(utc) - len(uniq))
    sums = np.add.reduceat(kw, first_idx)
    means = sums / counts
    step = 1
    if len(uniq) > 1:
        steps, step_counts = np.unique(np.diff(uniq), return_counts=True)
        step = int(steps[np.argmax(step_counts)])
    report.resolution_minutes = step
    if stamp == "end":
        uniq = uniq - step

    # Dead-meter detection on the native samples, converted to minute lengths by the step.
    # Flat runs are judged against the same clock span on nearby days where the samples sit on
    # a regular grid (a quantised meter's quiet night is kept; a dead meter is not).
    aligned = MINUTES_PER_DAY % step == 0 and bool(np.all((uniq - uniq[0]) % step == 0))
    slots = (uniq - uniq[0]) // step
    grid = np.full(int(slots[-1]) + 1 if aligned else 0, np.nan)
    if aligned:
        grid[slots] = means
    # A zero run is at least two samples: one 15-minute or hourly reading of exactly 0 is a
    # reading. A net meter that exports (PV) reads exactly 0 when a zero-export limiter holds
    # it there, so on such a meter zeros are judged like any flat run (kept where nearby days
    # are as flat, dropped once the meter has not moved for ``dead_meter_minutes``).
    exports = bool(np.any(means < 0.0))
    masked, zero_dropped, flat_dropped = mask_dead_meter(
        grid if aligned else means,
        zero_run_minutes=0 if exports else max(2, -(-zero_run_minutes // step)),
        flatline_minutes=max(2, -(-flatline_minutes // step)),
        samples_per_day=MINUTES_PER_DAY // step if aligned else 0,
        dead_samples=-(-dead_meter_minutes // step),
    )
    native = masked[slots] if aligned else masked
    del grid, masked
    report.zero_run_minutes_dropped = zero_dropped * step
    report.flatline_minutes_dropped = flat_dropped * step

    start = int(uniq[0])
    total = int(uniq[-1]) - start + step
    values = np.full(total, np.nan)
    for k in range(step):
        # Each sample covers its whole interval, but never past the next sample.
        positions = uniq - start + k
        inside = positions < np.concatenate((uniq[1:] - start, [total]))
        values[positions[inside]] = native[inside]
    values, filled = fill_short_gaps(values, max_fill_minutes)
    report.minutes_total = total
    report.minutes_filled_linear = filled
    report.minutes_missing = int(np.isnan(values).sum())
    if step > 1:
        report.notes.append(f"{step}-minute samples spread over their minutes")
    logger.info("meter import: %s", report.summary())
    return MeterSeries(start_minute=start, values_kw=values, report=report)
