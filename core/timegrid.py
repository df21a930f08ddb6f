"""The 1-minute UTC grid: minute indices are whole minutes since the Unix epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

SECONDS_PER_MINUTE = 60
MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY


def minute_of(at: datetime) -> int:
    """The index of the UTC minute that contains ``at`` (which must be timezone-aware)."""
    if at.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return int(at.timestamp() // SECONDS_PER_MINUTE)


def minute_start(minute: int) -> datetime:
    """The UTC start of a minute index."""
    return datetime.fromtimestamp(minute * SECONDS_PER_MINUTE, tz=UTC)


# DST transitions fall on a quarter hour: the UTC offset is looked up once per 15-minute bucket.
OFFSET_BUCKET_MINUTES = 15


def utc_offsets(minutes: npt.NDArray[np.int64], tz: ZoneInfo) -> npt.NDArray[np.int64]:
    """The site's UTC offset (minutes, local - UTC) at each UTC minute index (vectorised: one
    zone lookup per distinct 15-minute bucket)."""
    buckets = np.floor_divide(minutes, OFFSET_BUCKET_MINUTES)
    unique, inverse = np.unique(buckets, return_inverse=True)
    offsets = np.empty(len(unique), dtype=np.int64)
    for i, bucket in enumerate(unique.tolist()):
        at = datetime.fromtimestamp(bucket * OFFSET_BUCKET_MINUTES * 60, tz=UTC).astimezone(tz)
        offset = at.utcoffset() or timedelta(0)
        offsets[i] = int(offset.total_seconds() // SECONDS_PER_MINUTE)
    result: npt.NDArray[np.int64] = offsets[inverse.reshape(-1)]
    return result


def same_wall_clock_days_ago(
    minutes: npt.NDArray[np.int64], days: int | npt.NDArray[np.int64], tz: ZoneInfo
) -> npt.NDArray[np.int64]:
    """For each UTC minute, the UTC minute with the same site-local wall-clock time ``days`` ago
    (one number, or one per minute).

    A plain ``minute - days * 1440`` is off by an hour across a daylight-saving change; this
    corrects by the difference of the two UTC offsets.
    """
    then: npt.NDArray[np.int64] = minutes - days * MINUTES_PER_DAY
    return then + utc_offsets(minutes, tz) - utc_offsets(then, tz)


def same_local_time_weeks_ago(
    minutes: npt.NDArray[np.int64], weeks: int, tz: ZoneInfo
) -> npt.NDArray[np.int64]:
    """For each UTC minute, the UTC minute with the same site-local wall-clock time ``weeks``
    ago."""
    return same_wall_clock_days_ago(minutes, 7 * weeks, tz)
