"""The 1-minute grid: means, carry-forward while fresh, gaps when stale."""

from __future__ import annotations

import pytest

from core.readings import CompletedMinute, ReadingGrid

T0 = 1_700_000_040.0  # an exact minute boundary (minute 28_333_334)
M0 = int(T0 // 60)


def test_writes_in_one_minute_are_averaged_when_the_minute_closes() -> None:
    grid = ReadingGrid(stale_after_s=300)
    assert grid.add(10.0, T0 + 1) == []
    assert grid.add(14.0, T0 + 30) == []
    closed = grid.close_until(T0 + 60.5)
    assert closed == [CompletedMinute(M0, 12.0, 2)]
    assert grid.close_until(T0 + 61) == []  # nothing closes twice


def test_a_write_in_a_later_minute_closes_the_open_one() -> None:
    grid = ReadingGrid(stale_after_s=300)
    grid.add(8.0, T0 + 5)
    closed = grid.add(9.0, T0 + 65)
    assert closed == [CompletedMinute(M0, 8.0, 1)]
    assert grid.open_minute == M0 + 1


def test_empty_minutes_carry_the_last_value_while_fresh_then_become_gaps() -> None:
    grid = ReadingGrid(stale_after_s=150)
    grid.add(20.0, T0 + 30)  # last write at T0+30
    closed = grid.close_until(T0 + 6 * 60)
    # minute M0 closes with its write; M0+1 ends at T0+120 (90 s after the write: fresh);
    # M0+2 ends at T0+180 (150 s: still fresh); M0+3 ends 210 s after: stale -> gap.
    assert closed == [
        CompletedMinute(M0, 20.0, 1),
        CompletedMinute(M0 + 1, 20.0, 0),
        CompletedMinute(M0 + 2, 20.0, 0),
    ]
    assert all(m.carried for m in closed[1:])
    assert grid.close_until(T0 + 10 * 60) == []  # stale minutes are never filled later


def test_a_fresh_write_after_a_stale_gap_does_not_fill_the_gap() -> None:
    grid = ReadingGrid(stale_after_s=60)
    grid.add(5.0, T0)
    grid.close_until(T0 + 600)
    closed = grid.add(7.0, T0 + 600)
    assert closed == []
    assert grid.close_until(T0 + 661) == [CompletedMinute(M0 + 10, 7.0, 1)]


def test_staleness_and_its_deadline() -> None:
    grid = ReadingGrid(stale_after_s=300)
    assert grid.is_stale(T0)  # never written
    assert grid.stale_deadline_s() is None
    grid.add(1.0, T0)
    assert not grid.is_stale(T0 + 300)
    assert grid.is_stale(T0 + 300.01)
    assert grid.stale_deadline_s() == T0 + 300


def test_writes_before_the_open_minute_are_refused_as_live() -> None:
    grid = ReadingGrid(stale_after_s=300)
    grid.add(1.0, T0 + 120)
    with pytest.raises(ValueError, match="history"):
        grid.add(2.0, T0 + 10)
    assert grid.live_from_minute == M0 + 2


def test_restore_reopens_a_flushed_partial_of_the_current_minute() -> None:
    grid = ReadingGrid(stale_after_s=300)
    grid.restore(M0, 10.0, 2, now_s=T0 + 40)
    grid.add(16.0, T0 + 50)
    assert grid.close_until(T0 + 61) == [CompletedMinute(M0, 12.0, 3)]


def test_restore_of_an_old_minute_continues_after_it() -> None:
    grid = ReadingGrid(stale_after_s=300)
    grid.restore(M0, 10.0, 1, now_s=T0 + 125)
    assert not grid.is_stale(T0 + 125)  # a quick restart keeps the input fresh
    closed = grid.close_until(T0 + 125)
    assert closed == [CompletedMinute(M0 + 1, 10.0, 0)]
