"""The calendar: dates, hour-of-day and weekday traffic curves, seasonal events.

Owns the day-by-day multipliers of traffic, purchase intent (conversion rate),
order value and competition, the shape of each day's traffic over its hours,
and which named events are on each day.  It knows nothing of advertisers:
competition is a number that advertisers with a ``seasonal`` rule read, so
prices rise because they bid up, never because a price is scaled here.

A preset is a list of phases that tile its season without overlapping: every
day of the season belongs to exactly one phase, and that phase's numbers are
the day's numbers (nothing is multiplied on top of a "base" phase).  Several
events on one day do multiply: a scenario that stacks a custom promotion on
Singles' Day gets both.

Preset numbers and their reasoning are documented in ``docs/seasons.md``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from simulator.scenario import Event, Scenario

#: (first hour, last hour, factor): hours whose share of the day's traffic is
#: multiplied by ``factor`` before the day's curve is normalised again.
HourShift = tuple[int, int, float]


@dataclass(frozen=True)
class Phase:
    """One stretch of a preset.

    ``start`` and ``end`` (inclusive) are ``(month, day)`` in the event's year,
    or whole-day offsets from the preset's anchor date (Chinese New Year).
    """

    label: str
    start: tuple[int, int] | int
    end: tuple[int, int] | int
    traffic: float
    intent: float
    order_value: float
    competition: float
    hours: tuple[HourShift, ...] = ()


@dataclass(frozen=True)
class Preset:
    """A named season: its phases, the phase a scenario's numbers override, and its anchor."""

    name: str
    phases: tuple[Phase, ...]
    peak: str = "peak"
    anchored: bool = False  # phases are day offsets from ANCHORS[name][year]


@dataclass(frozen=True)
class Span:
    """A phase of an event placed on real dates (what the calendar applies)."""

    event: str
    label: str
    start: dt.date
    end: dt.date
    traffic: float
    intent: float
    order_value: float
    competition: float
    hours: tuple[HourShift, ...] = ()

    def covers(self, date: dt.date) -> bool:
        return self.start <= date <= self.end


# Chinese New Year (first day of the first lunar month); the preset is anchored on it.
CNY_DATES: dict[int, tuple[int, int]] = {
    2023: (1, 22),
    2024: (2, 10),
    2025: (1, 29),
    2026: (2, 17),
    2027: (2, 6),
    2028: (1, 26),
    2029: (2, 13),
    2030: (2, 3),
    2031: (1, 23),
    2032: (2, 11),
}
ANCHORS: dict[str, dict[int, tuple[int, int]]] = {"chinese_new_year": CNY_DATES}

_EVENING = (20, 23, 1.5)  # a sale that opens at 20:00 pulls the evening up further
_MIDNIGHT = (0, 1, 4.0)  # 11.11 and 6.18 open at 00:00: the midnight rush

PRESETS: dict[str, Preset] = {
    # Singles' Day (Tmall / JD): pre-sale deposits from late October, the final-payment
    # window from 31 Oct 20:00, the on-the-day sale of 11 Nov, then the cool-down (returns,
    # spent budgets).  See docs/seasons.md for each number.
    "singles_day": Preset(
        "singles_day",
        (
            Phase("presale_open", (10, 20), (10, 23), 1.08, 1.05, 1.00, 1.30),
            Phase("deposit_spike", (10, 24), (10, 24), 1.30, 1.35, 1.05, 1.45, (_EVENING,)),
            Phase("presale", (10, 25), (10, 30), 1.12, 1.15, 1.05, 1.35),
            Phase("final_payment", (10, 31), (11, 1), 1.35, 1.80, 1.15, 1.60, (_EVENING,)),
            Phase("warm_up", (11, 2), (11, 9), 1.15, 1.25, 1.05, 1.50),
            Phase("eve", (11, 10), (11, 10), 1.40, 1.60, 1.10, 1.80, (_EVENING,)),
            Phase("peak", (11, 11), (11, 11), 1.90, 2.50, 1.25, 2.20, (_MIDNIGHT,)),
            Phase("cool_down", (11, 12), (11, 18), 0.95, 0.80, 0.95, 0.90),
        ),
    ),
    # 618 (JD's anniversary sale, now the mid-year festival of every platform).
    "618": Preset(
        "618",
        (
            Phase("presale", (5, 25), (5, 30), 1.05, 1.10, 1.00, 1.20),
            Phase("first_wave", (5, 31), (6, 3), 1.20, 1.50, 1.10, 1.50, (_EVENING,)),
            Phase("mid_season", (6, 4), (6, 14), 1.08, 1.15, 1.05, 1.30),
            Phase("final_sprint", (6, 15), (6, 17), 1.20, 1.40, 1.05, 1.50),
            Phase("peak", (6, 18), (6, 18), 1.60, 2.00, 1.15, 1.80, (_MIDNIGHT,)),
            Phase("cool_down", (6, 19), (6, 24), 0.95, 0.85, 0.95, 0.90),
        ),
    ),
    # Double 12: the smaller year-end sale (Taobao's, from 2012).
    "double_12": Preset(
        "double_12",
        (
            Phase("warm_up", (12, 8), (12, 11), 1.05, 1.10, 1.00, 1.15),
            Phase("peak", (12, 12), (12, 12), 1.35, 1.60, 1.05, 1.40, (_MIDNIGHT,)),
        ),
    ),
    # Chinese New Year: day 0 is the first day of the lunar year (the Spring Festival).
    # Gifting before it; couriers stop taking orders about ten days before and resume
    # about a week after, so conversions fall while browsing rises (people on holiday).
    "chinese_new_year": Preset(
        "chinese_new_year",
        (
            Phase("gifting_rush", -21, -10, 1.10, 1.30, 1.20, 1.30),
            Phase("logistics_pause", -9, -2, 1.15, 0.60, 0.90, 0.85),
            Phase("new_years_eve", -1, -1, 0.90, 0.45, 0.90, 0.70, ((20, 23, 0.6),)),  # the Gala on TV
            Phase("festival", 0, 6, 1.25, 0.50, 0.90, 0.70, ((10, 17, 1.4),)),  # holiday: days as busy as evenings
            Phase("recovery", 7, 15, 1.05, 0.90, 1.00, 1.00),
        ),
        peak="festival",
        anchored=True,
    ),
}


def _check_presets() -> None:
    """Each preset's phases are in order and never overlap (so no day is counted twice)."""
    for p in PRESETS.values():
        key = (lambda x: x) if p.anchored else (lambda x: dt.date(2001, *x).toordinal())  # 2001: not a leap year
        bounds = [(key(ph.start), key(ph.end)) for ph in p.phases]
        for (s, e), ph in zip(bounds, p.phases, strict=True):
            if e < s:
                raise ValueError(f"preset {p.name}: phase {ph.label} ends before it starts")
        for (_, e1), (s2, _), ph in zip(bounds, bounds[1:], p.phases[1:], strict=False):
            if s2 <= e1:
                raise ValueError(f"preset {p.name}: phase {ph.label} overlaps the one before it")
        if p.peak not in {ph.label for ph in p.phases}:
            raise ValueError(f"preset {p.name}: no phase named {p.peak!r}")
        for ph in p.phases:
            for a, b, f in ph.hours:
                if not (0 <= a <= b <= 23 and f > 0):
                    raise ValueError(f"preset {p.name}: phase {ph.label}: bad hour shift {(a, b, f)}")


_check_presets()


def preset_spans(name: str, year: int, event: str | None = None) -> list[Span]:
    """The phases of preset ``name`` in ``year`` on real dates (empty if the anchor is unknown)."""
    p = PRESETS[name]
    label = event or name
    if p.anchored:
        anchor = ANCHORS[name].get(year)
        if anchor is None:
            return []
        day0 = dt.date(year, *anchor)
        return [
            Span(
                label,
                ph.label,
                day0 + dt.timedelta(days=ph.start),  # type: ignore[arg-type]
                day0 + dt.timedelta(days=ph.end),  # type: ignore[arg-type]
                ph.traffic,
                ph.intent,
                ph.order_value,
                ph.competition,
                ph.hours,
            )
            for ph in p.phases
        ]
    return [
        Span(
            label,
            ph.label,
            dt.date(year, *ph.start),  # type: ignore[misc]
            dt.date(year, *ph.end),  # type: ignore[misc]
            ph.traffic,
            ph.intent,
            ph.order_value,
            ph.competition,
            ph.hours,
        )
        for ph in p.phases
    ]


def event_spans(ev: Event, years: range) -> list[Span]:
    """The dated phases of one scenario event over ``years``.

    - a custom event (``name``, ``start``, ``end``): one span with its numbers (1.0 where unset);
    - a preset: its phases every year, with the scenario's ``traffic``, ``intent``,
      ``order_value`` and ``competition`` replacing those of the preset's peak phase;
    - a preset with ``start`` and ``end``: the preset's peak numbers (or the scenario's)
      over those dates only, e.g. a brand's own anniversary sale "like 11.11".
    """
    name = ev.name or ev.preset or "event"
    if ev.preset is None:
        assert ev.start is not None and ev.end is not None
        return [
            Span(
                name,
                name,
                ev.start,
                ev.end,
                _or(ev.traffic, 1.0),
                _or(ev.intent, 1.0),
                _or(ev.order_value, 1.0),
                _or(ev.competition, 1.0),
            )
        ]
    preset = PRESETS[ev.preset]
    peak = next(ph for ph in preset.phases if ph.label == preset.peak)
    if ev.start is not None and ev.end is not None:
        return [
            Span(
                name,
                peak.label,
                ev.start,
                ev.end,
                _or(ev.traffic, peak.traffic),
                _or(ev.intent, peak.intent),
                _or(ev.order_value, peak.order_value),
                _or(ev.competition, peak.competition),
                peak.hours,
            )
        ]
    out: list[Span] = []
    for year in years:
        for s in preset_spans(ev.preset, year, name):
            if s.label == preset.peak:
                s = Span(
                    s.event,
                    s.label,
                    s.start,
                    s.end,
                    _or(ev.traffic, s.traffic),
                    _or(ev.intent, s.intent),
                    _or(ev.order_value, s.order_value),
                    _or(ev.competition, s.competition),
                    s.hours,
                )
            out.append(s)
    return out


def _or(value: float | None, default: float) -> float:
    return default if value is None else float(value)


@dataclass
class DayConditions:
    """Multipliers of one calendar day (1.0 = an ordinary day)."""

    date: dt.date
    traffic: float
    intent: float
    order_value: float
    competition: dict[str, float]  # event name -> competition multiplier on that day
    phases: list[str]
    hour_factor: np.ndarray = field(default_factory=lambda: np.ones(24))  # reshapes the hour curve

    @property
    def weekday(self) -> int:
        return self.date.weekday()


class Calendar:
    """Dates of the run and the traffic curves and events on each of them."""

    def __init__(self, scenario: Scenario):
        self.start_date = scenario.start_date
        self.days = scenario.days
        hour = np.asarray(scenario.traffic.hour_curve, dtype=np.float64)
        self.hour_curve = hour / hour.mean()
        wk = np.asarray(scenario.traffic.weekday_curve, dtype=np.float64)
        self.weekday_curve = wk / wk.mean() if wk.mean() > 0 else wk
        self.events = scenario.calendar.events
        end = self.start_date + dt.timedelta(days=self.days - 1)
        years = range(self.start_date.year - 1, end.year + 2)  # a season may straddle New Year
        self.spans = [s for ev in self.events for s in event_spans(ev, years)]
        self._days = [self._conditions(self.date(d)) for d in range(self.days)]

    def date(self, day: int) -> dt.date:
        return self.start_date + dt.timedelta(days=day)

    def conditions(self, day: int) -> DayConditions:
        return self._days[day]

    def hour_share(self, hour: int) -> float:
        """Share of an ordinary day's sessions that fall in ``hour``."""
        return float(self.hour_curve[hour] / self.hour_curve.sum())

    def expected_sessions(self, day: int, base_per_day: float) -> np.ndarray:
        """Expected sessions in each hour of ``day``: shape (24,), summing to the day's total.

        The day's total is ``base_per_day x weekday x traffic``; an event's hour shifts
        (the 11.11 midnight rush, the New Year's Eve Gala) move sessions between hours
        without changing it.
        """
        c = self._days[day]
        shape = self.hour_curve * c.hour_factor
        shape = shape / shape.sum()
        return base_per_day * shape * self.weekday_curve[c.weekday] * c.traffic

    def _conditions(self, date: dt.date) -> DayConditions:
        traffic = intent = order_value = 1.0
        competition: dict[str, float] = {}
        phases: list[str] = []
        hour_factor = np.ones(24)
        for s in self.spans:
            if not s.covers(date):
                continue
            traffic *= s.traffic
            intent *= s.intent
            order_value *= s.order_value
            competition[s.event] = competition.get(s.event, 1.0) * s.competition
            for a, b, f in s.hours:
                hour_factor[a : b + 1] *= f
            phases.append(f"{s.event}:{s.label}")
        return DayConditions(date, traffic, intent, order_value, competition, phases, hour_factor)
