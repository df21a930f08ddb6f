"""The per-source token budget on a fake clock."""

from __future__ import annotations

from bacnet.limits import SourceBudget


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_source_is_muted_when_its_tokens_run_out_and_refills() -> None:
    clock = Clock()
    budget = SourceBudget(rate_per_s=10.0, burst=5.0, clock=clock)
    assert not budget.muted("10.0.0.1")  # never charged: full
    for _ in range(4):
        budget.spend("10.0.0.1")
    assert not budget.muted("10.0.0.1")  # one token left
    budget.spend("10.0.0.1")
    assert budget.muted("10.0.0.1")
    assert not budget.muted("10.0.0.2"), "another source keeps its own budget"
    clock.now += 0.05  # half a token
    assert budget.muted("10.0.0.1")
    clock.now += 0.06
    assert not budget.muted("10.0.0.1")


def test_a_large_cost_mutes_for_its_price_but_no_longer() -> None:
    clock = Clock()
    budget = SourceBudget(rate_per_s=10.0, burst=20.0, clock=clock)
    budget.spend("a", 17.0)
    assert not budget.muted("a")
    budget.spend("a", 17.0)  # 3 - 17 = -14
    assert budget.muted("a")
    for _ in range(100):  # a muted source's requests are dropped, not charged: no debt piles up
        budget.muted("a")
    clock.now += 1.4
    assert budget.muted("a")
    clock.now += 0.11
    assert not budget.muted("a")
    for _ in range(10):  # debt is floored at one request's cost below zero
        budget.spend("b", 5.0)
    clock.now += 0.61
    assert not budget.muted("b")


def test_sources_tracked_are_bounded() -> None:
    clock = Clock()
    budget = SourceBudget(rate_per_s=1.0, burst=1.0, clock=clock, max_sources=3)
    for source in ("a", "b", "c", "d"):
        budget.spend(source)
    assert budget.muted("d") and budget.muted("c") and budget.muted("b")
    assert not budget.muted("a"), "the least recently charged source is forgotten first"
    clock.now += 5
    assert not any(budget.muted(s) for s in "bcd")
    assert budget._buckets == {}, "full buckets are forgotten"
