"""The per-source token budget and the busy-only guard on a fake clock."""

from __future__ import annotations

from bacnet.limits import SourceBudget, SourceGuard


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


def test_the_guard_mutes_only_under_contention() -> None:
    clock = Clock()
    guard = SourceGuard(rate_per_s=1.0, burst=2.0, busy_lag_s=0.02, hold_s=1.0, clock=clock)
    poller, flooder = ("10.0.0.1", "10.0.0.1:47808"), ("10.0.0.4", "10.0.0.4:47808")
    other = ("10.0.0.2", "10.0.0.2:47808")
    for _ in range(3):
        guard.spend(*poller)  # expensive requests, all answered
    assert not guard.muted(*poller), "alone on an idle device: nobody is held back"
    guard.note_lag(0.005)
    assert not guard.busy and not guard.muted(*poller)
    guard.note_lag(0.03)  # the loop lagged (REST waits too)
    assert guard.busy
    assert not guard.muted(*poller), "a lone client polling flat out is not held back"
    clock.now += 2.0  # quiet; the poller's budget refilled
    guard.note_lag(0.03)
    for _ in range(3):
        guard.spend(*flooder, refused=True)
    assert guard.muted(*flooder), "a lone flood of refused requests on a lagging loop is"
    clock.now += 1.0  # no lag for a second, nobody else
    assert not guard.busy and not guard.muted(*flooder)
    assert not guard.muted(*other), "another address, within its budget, is served"
    assert guard.muted(*flooder), "someone else is talking: the flooder waits its turn"
    assert not guard.muted("10.0.0.4", "10.0.0.4:47809"), "another port of the host is served"
    clock.now += 1.5  # the others went quiet and the budget refilled
    assert not guard.muted(*flooder)


def test_many_ports_of_one_host_share_the_host_budget() -> None:
    clock = Clock()
    guard = SourceGuard(rate_per_s=1.0, burst=2.0, host_factor=3.0, clock=clock)
    guard.note_lag(1.0)
    for port in range(6):  # 6 ports x 1 token: within each port's 2, the host's 6 spent
        guard.spend("10.0.0.1", f"10.0.0.1:{port}")
    assert not guard.muted("10.0.0.3", "10.0.0.3:1")  # another host is talking
    assert guard.muted("10.0.0.1", "10.0.0.1:99"), "the host is over its budget"
