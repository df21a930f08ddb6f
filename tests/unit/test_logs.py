"""RateLimitedLogger: one line per key per interval, driven by a fake clock."""

from __future__ import annotations

import logging

import pytest

from core.logs import RateLimitedLogger

pytestmark = pytest.mark.unit


def test_one_line_per_key_per_interval_and_reset_starts_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limited = RateLimitedLogger(logging.getLogger("test.logs"), 60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.logs"):
        assert limited.warning("bad packet from %s", "a")
        assert not limited.warning("bad packet from %s", "b")  # same key, same minute
        assert limited.warning("other kind")  # another key
        now[0] = 61.0
        assert limited.warning("bad packet from %s", "c")
        assert not limited.warning("bad packet from %s", "d")
        limited.reset()
        assert limited.warning("bad packet from %s", "e")  # forgotten: logged at once
    assert [r.getMessage() for r in caplog.records] == [
        "bad packet from a",
        "other kind",
        "bad packet from c (and 1 more like it in the last 60 s)",
        "bad packet from e",
    ]
