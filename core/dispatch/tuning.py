"""Site self-tuning of the dispatch controller: replay the site's own recent history through a few
candidate controllers and serve the one that would have billed least.

Every night the service (in a child process, ``core.dispatch.tuning_child``) replays the last
``WINDOW_DAYS`` days of the site's base load (at least ``MIN_HISTORY_DAYS``) through the same
closed loop the dispatch bench uses (``core.dispatch.replay.simulate_month``), once per candidate:

* the service's controller with its default settings (``baseline``);
* the same with a few values of the settings that measured as building-specific: the live
  layer's within-interval reserve (half, off) and the charge margin (three times wider). A
  faster fade of the hot-day lift billed July the same as the default and was dropped, to keep
  the nightly replay in its budget;
* an interval-aware fixed-level rule (``history-level``): the controller defending, as its target,
  the lowest level the battery could have held over the window before the replayed day (the
  perfect-foresight optimum of that window). It keeps the plan's look-ahead: when the forecast
  says the battery cannot hold that level to the end of the day, the plan's peak (the level the
  live layer defends) rises early, and by as little as it must.

The defaults are served unless a candidate beat them on strong evidence (``choose``): it billed
less over the window and in no week more, by more than the risk of switching is worth (the
defaults' cut over the window divided by the number of weeks plus one), and not by defending a
lower level than the defaults on the window's hardest day. Among those, the lowest bill wins;
within ``TIE_SHARE`` of the no-battery bill the one with the least energy through the battery.
No candidate that billed above no battery is chosen. With less than ``MIN_HISTORY_DAYS`` of
history the defaults are served and the note says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.dispatch.assets import Battery, Tariff
from core.dispatch.controller import DispatchController, DispatchSettings
from core.dispatch.replay import (
    DayAheadFn,
    IntervalRecord,
    PlannerController,
    ReplayState,
    month_optimum,
)
from core.timegrid import minute_start

FloatArray = npt.NDArray[np.float64]

WINDOW_DAYS = 28
# A window shorter than a billing month misses its hard days (see ``choose``).
MIN_HISTORY_DAYS = 28
DEFAULT_CANDIDATE = "baseline"
HISTORY_LEVEL = "history-level"
# Two bills within this share of the no-battery bill are a tie (0.1 kW on a 34 kW site).
TIE_SHARE = 0.003
START_SOC_PCT = 50.0
REPLAY_PLAN_TIME_LIMIT_S = 30.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """One controller the nightly replay tries."""

    name: str
    settings: DispatchSettings = field(default_factory=DispatchSettings)
    forecast: str = "baseline"  # the day-ahead it plans on: "baseline" or "trained"
    history_level: bool = False  # defend the window's optimum level (see the module)


TRAINED_CANDIDATE = "trained"


def candidates(trained: bool = False) -> tuple[Candidate, ...]:
    """The candidate set: the defaults, a few values of the sensitive settings, the fixed-level
    rule, all on the seasonal baseline's day-ahead; with ``trained`` (a model is served), also
    the defaults on the trained day-ahead.

    Only the defaults are crossed with the trained forecast: each trained replay also runs the
    model for every plan, and the whole cross (ten replays) does not fit the nightly budget (five
    minutes of CPU).
    """
    base = DispatchSettings()
    own = (
        Candidate(DEFAULT_CANDIDATE, base),
        Candidate("reserve-half", replace(base, bank_share=base.bank_share / 2)),
        Candidate("reserve-off", replace(base, bank_share=0.0)),
        Candidate("margin-wide", replace(base, charge_margin_share=3 * base.charge_margin_share)),
        Candidate(HISTORY_LEVEL, base, history_level=True),
    )
    if not trained:
        return own
    return (*own, Candidate(TRAINED_CANDIDATE, base, forecast="trained"))


@dataclass(frozen=True, slots=True)
class CandidateScore:
    """One candidate's replayed window."""

    name: str
    billed_kw: float
    throughput_kwh: float
    # The highest interval average in each week of the window, oldest first.
    weekly_kw: tuple[float, ...] = ()
    # The highest interval average on the window's hardest day (``hardest_day``); None: unknown.
    hardest_day_kw: float | None = None

    def to_dict(self) -> dict[str, float | str]:
        """JSON form."""
        return {
            "name": self.name,
            "billed_kw": round(self.billed_kw, 3),
            "throughput_kwh": round(self.throughput_kwh, 2),
        }


@dataclass(frozen=True, slots=True)
class Choice:
    """What the nightly replay chose, and every candidate's replayed bill."""

    chosen: str
    no_battery_kw: float | None
    scores: tuple[CandidateScore, ...]
    history_days: float
    note: str

    @property
    def chosen_billed_kw(self) -> float | None:
        """The chosen candidate's replayed bill (None on the defaults without history)."""
        for score in self.scores:
            if score.name == self.chosen:
                return score.billed_kw
        return None

    def saving_kw(self) -> float | None:
        """kW of billed demand the chosen candidate cut over the window against no battery."""
        billed = self.chosen_billed_kw
        if billed is None or self.no_battery_kw is None:
            return None
        return max(0.0, self.no_battery_kw - billed)


def window_score(
    records: Sequence[IntervalRecord], lo_minute: int, hi_minute: int
) -> tuple[float, float] | None:
    """(billed kW, kWh through the battery) of the intervals that start in [lo, hi)."""
    billed = -math.inf
    throughput = 0.0
    seen = False
    for record in records:
        if lo_minute <= record.start_minute < hi_minute:
            seen = True
            billed = max(billed, record.grid_kw)
            throughput += record.throughput_kwh
    return (billed, throughput) if seen else None


def weekly_maxima(
    records: Sequence[IntervalRecord], lo_minute: int, hi_minute: int
) -> tuple[float, ...]:
    """The highest interval average of each week of [lo, hi) (the last week may be shorter)."""
    week = 7 * 1440
    count = max(1, math.ceil((hi_minute - lo_minute) / week))
    highest = [-math.inf] * count
    for record in records:
        if lo_minute <= record.start_minute < hi_minute:
            k = (record.start_minute - lo_minute) // week
            highest[k] = max(highest[k], record.grid_kw)
    return tuple(highest)


def hardest_day(
    no_battery: Sequence[IntervalRecord], lo_minute: int, hi_minute: int, tz: ZoneInfo
) -> tuple[int, int] | None:
    """[start, end) UTC minutes of the site-local day of [lo, hi) that holds the highest interval
    without a battery (the window's hardest day); None without one."""
    top: IntervalRecord | None = None
    for record in no_battery:
        if lo_minute <= record.start_minute < hi_minute and (
            top is None or record.grid_kw > top.grid_kw
        ):
            top = record
    if top is None:
        return None
    local = minute_start(top.start_minute).astimezone(tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    following = (midnight.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=tz)
    return int(midnight.timestamp() // 60), int(following.timestamp() // 60)


def score(
    name: str,
    records: Sequence[IntervalRecord],
    lo_minute: int,
    hi_minute: int,
    hardest: tuple[int, int] | None = None,
) -> CandidateScore | None:
    """One candidate's replay of the window, as the selection weighs it."""
    scored = window_score(records, lo_minute, hi_minute)
    if scored is None:
        return None
    weekly = weekly_maxima(records, lo_minute, hi_minute)
    day_kw = None
    if hardest is not None:
        day = window_score(records, max(lo_minute, hardest[0]), min(hi_minute, hardest[1]))
        day_kw = None if day is None else day[0]
    return CandidateScore(name, scored[0], scored[1], weekly, day_kw)


def switch_margin_kw(base: CandidateScore, no_battery_kw: float) -> float:
    """How much less than the defaults a candidate must have billed over the window to be served.

    The errors are not symmetric. A candidate that wins by defending a lower level gains its
    saving on the window; on a day harder than the window's it can run the battery empty, and the
    month's ratchet then keeps nearly the unshaved peak: it loses up to the defaults' whole cut,
    ``no_battery_kw - base.billed_kw``. A candidate not worse than the defaults in any of the
    window's ``w`` weeks has, by Laplace's rule of succession, a chance of at least ``1 / (w + 2)``
    of going the other way next; switching pays only if ``(1 - p) gain > p cut``, that is if
    ``gain > cut / (w + 1)``. No tuned constant: the window sets it.
    """
    weeks = max(1, len(base.weekly_kw))
    return max(0.0, no_battery_kw - base.billed_kw) / (weeks + 1)


def choose(
    scores: Sequence[CandidateScore],
    no_battery_kw: float | None,
    history_days: float,
    default: str = DEFAULT_CANDIDATE,
    min_history_days: float = MIN_HISTORY_DAYS,
) -> Choice:
    """The defaults, unless a candidate billed less over the window by more than
    ``switch_margin_kw``, no more in any of its weeks, and on the window's hardest day no less
    (ties: the least throughput); never one that billed above no battery.

    A replay's bill is one interval, on one hard day: a candidate that did better over a
    window whose hard day was easy for it can lose the next hard day (the shared minute file,
    July 2022: the halved reserve billed 1-3 % less over the first two weeks, and 19 July 2 kW
    more; the hourly file, October 2022: the reserve off, better than the defaults in every week
    of September's window, kept 4 % of the optimum's cut against the defaults' 35 %). The
    defaults are kept unless the evidence holds week by week and the gain is worth the risk.

    The hardest day: a candidate that held the window's hardest day (the highest interval
    without a battery) lower than the defaults won by defending a lower level, the bet that
    costs the whole cut on the next harder day. One that held it no lower and still billed less
    fixed a failure of the defaults on another day (a spike the reserve missed, a charge that
    set a peak): a difference of behaviour, not of nerve. On the hourly file, September's window
    favoured the removed reserve and the fixed level by defending its hardest day 0.4 and 0.8 kW
    lower; in October both kept under a third of what the defaults kept.
    """
    if history_days < min_history_days or no_battery_kw is None:
        note = f"defaults: {history_days:.1f} days of history, at least {min_history_days:g} needed"
        return Choice(default, no_battery_kw, tuple(scores), history_days, note)
    eligible = [s for s in scores if s.billed_kw <= no_battery_kw + 1e-9]
    if not eligible:
        note = "defaults: every candidate billed above no battery over the window"
        return Choice(default, no_battery_kw, tuple(scores), history_days, note)
    tie = TIE_SHARE * max(abs(no_battery_kw), 1e-9)
    base = next((s for s in scores if s.name == default), None)
    if base is not None:
        margin = max(tie, switch_margin_kw(base, no_battery_kw))

        def held_the_hardest_day(s: CandidateScore) -> bool:
            if s.hardest_day_kw is None or base.hardest_day_kw is None:
                return True
            return s.hardest_day_kw >= base.hardest_day_kw - tie

        def dominates(s: CandidateScore) -> bool:
            weeks = zip(s.weekly_kw, base.weekly_kw, strict=False)
            return (
                s.billed_kw < base.billed_kw - margin
                and all(a <= b + tie for a, b in weeks)
                and held_the_hardest_day(s)
            )

        eligible = [s for s in eligible if s.name == default or dominates(s)]
        if not any(s.name != default for s in eligible):
            note = (
                f"{default}: no candidate billed more than {margin:.2f} kW less over the last "
                f"{history_days:.0f} days, no more in any week and no lower on the hardest day"
            )
            return Choice(default, no_battery_kw, tuple(scores), history_days, note)
        eligible = [s for s in eligible if s.name != default]
    lowest = min(s.billed_kw for s in eligible)
    tied = [s for s in eligible if s.billed_kw <= lowest + tie]
    best = min(tied, key=lambda s: (s.throughput_kwh, s.billed_kw, s.name))
    note = (
        f"{best.name}: {best.billed_kw:.2f} kW over the last {history_days:.0f} days "
        f"against {no_battery_kw:.2f} kW without the battery"
    )
    return Choice(best.name, no_battery_kw, tuple(scores), history_days, note)


def local_midnights(start_minute: int, end_minute: int, tz: ZoneInfo) -> list[int]:
    """UTC minute indices of the site-local midnights in [start, end)."""
    first = minute_start(start_minute).astimezone(tz)
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    out: list[int] = []
    while True:
        moment = int(day.timestamp() // 60)
        if moment >= end_minute:
            return out
        if moment >= start_minute:
            out.append(moment)
        naive = day.replace(tzinfo=None) + timedelta(days=1)
        day = naive.replace(tzinfo=tz)


def history_level_kw(
    load_kw: FloatArray,
    start_minute: int,
    lo: int,
    hi: int,
    battery: Battery,
    step_minutes: int,
) -> float | None:
    """The lowest billed level the battery could have held over ``load_kw[lo:hi]`` (the
    perfect-foresight optimum of that stretch, from and back to half full); None when short."""
    if hi - lo < step_minutes * 4:
        return None
    try:
        result = month_optimum(
            load_kw, start_minute, lo, hi, battery, START_SOC_PCT, step_minutes, "window"
        )
    except RuntimeError:
        return None
    return result.billed_kw if math.isfinite(result.billed_kw) else None


class CandidateController:
    """A candidate as a replay controller: the service's controller with the candidate's settings
    (and, for the fixed-level rule, the window's optimum level set as its target each midnight).
    """

    def __init__(
        self,
        candidate: Candidate,
        battery: Battery,
        tz: ZoneInfo,
        start_minute: int,
        day_ahead: DayAheadFn,
        history_minutes: int,
        load_kw: FloatArray,
        step_minutes: int,
        tariff: Tariff | None = None,
    ) -> None:
        self.name = candidate.name
        self._candidate = candidate
        self._battery = battery
        self._start = start_minute
        self._load = load_kw
        self._step = step_minutes
        self._tz = tz
        # A replay is not real time: a plan is never given up for the wall clock (on a loaded
        # machine a low-priority child can wait longer than the service's limit for the CPU).
        settings = replace(
            candidate.settings,
            plan_time_limit_s=max(candidate.settings.plan_time_limit_s, REPLAY_PLAN_TIME_LIMIT_S),
        )
        controller = DispatchController(battery, tariff or Tariff(), tz, settings=settings)
        self._inner = PlannerController(
            candidate.name, controller, day_ahead, history_minutes, start_minute, tz
        )
        self._next_midnight: int | None = None

    @property
    def solve_ms(self) -> list[float]:
        """Solve times of the inner controller's plans."""
        return self._inner.solve_ms

    def setpoint(self, state: ReplayState) -> float:
        """The candidate's setpoint; the fixed level is renewed at each local midnight."""
        if self._candidate.history_level and (
            self._next_midnight is None or state.minute >= self._next_midnight
        ):
            self._renew_level(state.minute)
        return self._inner.setpoint(state)

    def _renew_level(self, minute: int) -> None:
        index = minute - self._start
        lo = max(0, index - WINDOW_DAYS * 1440)
        level = history_level_kw(self._load, self._start, lo, index, self._battery, self._step)
        self._inner.set_target(level)
        local = minute_start(minute).astimezone(self._tz)
        midnight = (local.replace(tzinfo=None) + timedelta(days=1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        self._next_midnight = int(midnight.replace(tzinfo=self._tz).timestamp() // 60)


ControllerFactory = Callable[[Candidate], CandidateController]


class SelfTuned:
    """The ``self-tuned`` replay controller: at each local midnight, the choice made on the
    candidates' replays of the window before it (only intervals that started before the
    midnight), applied the next day; the defaults until there are ``MIN_HISTORY_DAYS``."""

    name = "self-tuned"

    def __init__(
        self,
        factory: ControllerFactory,
        pool: Sequence[Candidate],
        records: Mapping[str, Sequence[IntervalRecord]],
        no_battery: Sequence[IntervalRecord],
        history_start_minute: int,
        tz: ZoneInfo,
        min_history_days: float = MIN_HISTORY_DAYS,
    ) -> None:
        self._min_days = min_history_days
        self._factory = factory
        self._pool = {c.name: c for c in pool}
        self._records = records
        self._no_battery = no_battery
        self._history_start = history_start_minute
        self._tz = tz
        self._current: CandidateController | None = None
        self._next_midnight: int | None = None
        self.choices: list[tuple[int, Choice]] = []
        self._done_ms: list[float] = []

    @property
    def solve_ms(self) -> list[float]:
        """Solve times of every plan so far (ms), whichever candidate made it."""
        own = self._current.solve_ms if self._current is not None else []
        return self._done_ms + own

    def setpoint(self, state: ReplayState) -> float:
        """The chosen candidate's setpoint."""
        if self._next_midnight is None or state.minute >= self._next_midnight:
            self._choose(state.minute)
        assert self._current is not None
        return self._current.setpoint(state)

    def choice_at(self, minute: int) -> Choice:
        """The choice a night at ``minute`` makes (only records before it)."""
        lo = max(self._history_start, minute - WINDOW_DAYS * 1440)
        days = (minute - lo) / 1440.0
        base = window_score(self._no_battery, lo, minute)
        hardest = hardest_day(self._no_battery, lo, minute, self._tz)
        scores = [
            score(name, self._records.get(name, ()), lo, minute, hardest) for name in self._pool
        ]
        found = [s for s in scores if s is not None]
        base_kw = None if base is None else base[0]
        return choose(found, base_kw, days, min_history_days=self._min_days)

    def _choose(self, minute: int) -> None:
        choice = self.choice_at(minute)
        self.choices.append((minute, choice))
        if self._current is None or self._current.name != choice.chosen:
            if self._current is not None:
                self._done_ms.extend(self._current.solve_ms)
            self._current = self._factory(self._pool[choice.chosen])
        local = minute_start(minute).astimezone(self._tz)
        midnight = (local.replace(tzinfo=None) + timedelta(days=1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        self._next_midnight = int(midnight.replace(tzinfo=self._tz).timestamp() // 60)


@dataclass(frozen=True, slots=True)
class Tuned:
    """A night's result: the choice, and what serving it takes (settings, level)."""

    night_minute: int
    choice: Choice
    settings: DispatchSettings
    level_kw: float | None  # the fixed level of the history-level rule, None for the others
    cpu_s: float

    def to_dict(self) -> dict[str, object]:
        """JSON form (stored with the run)."""
        return {
            "night_minute": self.night_minute,
            "chosen": self.choice.chosen,
            "level_kw": self.level_kw,
            "no_battery_kw": self.choice.no_battery_kw,
            "history_days": self.choice.history_days,
            "note": self.choice.note,
            "candidates": [s.to_dict() for s in self.choice.scores],
            "cpu_s": round(self.cpu_s, 2),
        }


def replay_window(
    load_kw: FloatArray,
    start_minute: int,
    night_minute: int,
    battery: Battery,
    tz: ZoneInfo,
    step_minutes: int,
    pool: Sequence[Candidate],
    day_ahead: Mapping[str, tuple[DayAheadFn, int]],
    tariff: Tariff | None = None,
    window_days: int = WINDOW_DAYS,
    min_history_days: float = MIN_HISTORY_DAYS,
) -> Tuned:
    """Replay the last ``window_days`` before ``night_minute`` through every candidate whose
    forecast ``day_ahead`` offers, and choose.

    ``load_kw`` is the site's base load from ``start_minute`` (NaN where not metered) up to the
    night; the replay starts each calendar month of the window (or the window's start) half full,
    as the dispatch bench starts each month.
    """
    import time

    from core.dispatch.replay import NoBattery, month_bounds, simulate_month

    t0 = time.process_time()
    night = night_minute - start_minute
    lo = max(0, night - window_days * 1440)
    window = load_kw[lo:night]
    measured = np.isfinite(window)
    if measured.any():
        lo += int(np.argmax(measured))  # the window starts at the first metered minute
    history_days = float(np.count_nonzero(np.isfinite(load_kw[lo:night]))) / 1440.0
    usable = [c for c in pool if c.forecast in day_ahead]
    records: dict[str, list[IntervalRecord]] = {c.name: [] for c in usable}
    no_battery: list[IntervalRecord] = []
    if history_days >= min_history_days:
        pieces = month_bounds(start_minute + lo, night - lo, tz)
        for month, first, end in pieces:
            a, b = lo + first, lo + end
            simulate_month(
                NoBattery(),
                load_kw,
                start_minute,
                a,
                b,
                None,
                START_SOC_PCT,
                step_minutes,
                month,
                no_battery,
            )
            for candidate in usable:
                fn, history = day_ahead[candidate.forecast]
                controller = CandidateController(
                    candidate,
                    battery,
                    tz,
                    start_minute,
                    fn,
                    history,
                    load_kw,
                    step_minutes,
                    tariff,
                )
                simulate_month(
                    controller,
                    load_kw,
                    start_minute,
                    a,
                    b,
                    battery,
                    START_SOC_PCT,
                    step_minutes,
                    month,
                    records[candidate.name],
                )
    lo_minute = start_minute + lo
    base = window_score(no_battery, lo_minute, night_minute)
    hardest = hardest_day(no_battery, lo_minute, night_minute, tz)
    scored = [score(c.name, records[c.name], lo_minute, night_minute, hardest) for c in usable]
    scores = [s for s in scored if s is not None]
    base_kw = None if base is None else base[0]
    choice = choose(scores, base_kw, history_days, min_history_days=min_history_days)
    chosen = next((c for c in pool if c.name == choice.chosen), pool[0])
    level = None
    if chosen.history_level:
        level = history_level_kw(load_kw, start_minute, lo, night, battery, step_minutes)
    return Tuned(night_minute, choice, chosen.settings, level, time.process_time() - t0)
