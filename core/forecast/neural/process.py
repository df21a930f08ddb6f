"""The training process's housekeeping: progress lines with the peak RSS, glibc arenas, trimming."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
from collections.abc import Callable

logger = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc mallopt parameter

ProgressFn = Callable[[float, str], None]


def reporter(progress: ProgressFn | None) -> ProgressFn:
    """Log each step of a training run (with the peak RSS) and pass it to ``progress``."""

    def report(fraction: float, message: str) -> None:
        logger.info("train %3.0f%%: %s (peak RSS %.0f MB)", 100 * fraction, message, peak_rss_mb())
        if progress is not None:
            progress(fraction, message)

    return report


def limit_malloc_arenas() -> None:
    """Two glibc malloc arenas instead of one per thread: TensorFlow's thread pools otherwise
    leave ~100 MB of fragmented, unreturned memory in the training process."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)


def trim_malloc() -> None:
    """Give freed heap memory back to the OS (between candidates)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
