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


def same_local_time_weeks_ago(
    minutes: npt.NDArray[np.int64], weeks: int, tz: ZoneInfo
) -> npt.NDArray[np.int64]:
    """For each UTC minute, the UTC minute with the same site-local wall-clock time ``weeks`` ago.

    A plain ``minute - weeks * 10080`` is off by an hour across a daylight-saving change; this
    corrects by the difference of the two UTC offsets.
    """
    out = np.empty_like(minutes)
    lag = weeks * MINUTES_PER_WEEK
    for i, minute in enumerate(minutes.tolist()):
        now = minute_start(minute)
        then = now - timedelta(minutes=lag)
        offset_now = now.astimezone(tz).utcoffset() or timedelta(0)
        offset_then = then.astimezone(tz).utcoffset() or timedelta(0)
        shift = int((offset_now - offset_then).total_seconds() // SECONDS_PER_MINUTE)
        out[i] = minute - lag + shift
    return out
