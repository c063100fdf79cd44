"""The calendar: dates, hour-of-day and weekday traffic curves, seasonal events.

Owns the day-by-day multipliers of traffic, purchase intent (conversion rate),
order value and competition, and which named events are on each day.  It knows
nothing of advertisers: competition is a number that advertisers with a
``seasonal`` rule read, so prices rise because they bid up, never because a
price is scaled here.

Preset numbers and their reasoning are documented in ``docs/seasons.md``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from simulator.scenario import Event, Scenario


@dataclass(frozen=True)
class Phase:
    """One stretch of an event: dates given as (month, day) in the event's year."""

    label: str
    start: tuple[int, int]
    end: tuple[int, int]
    traffic: float
    intent: float
    order_value: float
    competition: float
    year_offset_end: int = 0


# Chinese New Year (first day of the lunar year); the preset is anchored on it.
CNY_DATES = {
    2024: (2, 10),
    2025: (1, 29),
    2026: (2, 17),
    2027: (2, 6),
    2028: (1, 26),
    2029: (2, 13),
    2030: (2, 3),
}

PRESETS: dict[str, list[Phase]] = {
    # Singles' Day: the pre-sale opens in late October (deposits), the final-payment
    # window opens 31 Oct / 1 Nov, the peak is 11 Nov, then a cool-down with returns.
    "singles_day": [
        Phase("presale", (10, 20), (10, 30), 1.10, 1.15, 1.05, 1.30),
        Phase("presale_spike", (10, 24), (10, 24), 1.18, 1.30, 1.05, 1.15),  # on top of presale
        Phase("final_payment", (10, 31), (11, 1), 1.35, 1.80, 1.15, 1.60),
        Phase("warm_up", (11, 2), (11, 9), 1.15, 1.25, 1.05, 1.50),
        Phase("eve", (11, 10), (11, 10), 1.40, 1.60, 1.10, 1.80),
        Phase("peak", (11, 11), (11, 11), 1.90, 2.50, 1.25, 2.20),
        Phase("cool_down", (11, 12), (11, 18), 0.95, 0.80, 0.95, 0.90),
    ],
    # 618 (JD anniversary, mid-year festival): pre-sale from late May, peak 18 June.
    "618": [
        Phase("presale", (5, 28), (6, 10), 1.08, 1.15, 1.05, 1.25),
        Phase("warm_up", (6, 11), (6, 17), 1.15, 1.30, 1.05, 1.40),
        Phase("peak", (6, 18), (6, 18), 1.60, 2.00, 1.15, 1.80),
        Phase("cool_down", (6, 19), (6, 24), 0.95, 0.85, 0.95, 0.90),
    ],
    # Double 12: a smaller year-end sale.
    "double_12": [
        Phase("warm_up", (12, 8), (12, 11), 1.05, 1.10, 1.00, 1.15),
        Phase("peak", (12, 12), (12, 12), 1.35, 1.60, 1.05, 1.40),
    ],
}

# Chinese New Year phases are relative to the festival's first day (day offsets).
CNY_PHASES = [
    # label, first offset, last offset, traffic, intent, order value, competition
    ("gifting_rush", -21, -10, 1.10, 1.30, 1.20, 1.30),
    ("logistics_pause", -9, 6, 1.20, 0.55, 0.90, 0.80),  # couriers stop: fewer conversions, more browsing
    ("festival", 0, 6, 1.25, 0.50, 0.90, 0.70),
    ("recovery", 7, 15, 1.00, 0.95, 1.00, 1.00),
]
PRESETS["chinese_new_year"] = []  # dates depend on the lunar calendar: see _cny_phases


def _cny_phases(year: int) -> list[tuple[str, dt.date, dt.date, float, float, float, float]]:
    if year not in CNY_DATES:
        return []
    m, d = CNY_DATES[year]
    day0 = dt.date(year, m, d)
    return [
        (label, day0 + dt.timedelta(days=a), day0 + dt.timedelta(days=b), tr, it, ov, co)
        for label, a, b, tr, it, ov, co in CNY_PHASES
    ]


@dataclass
class DayConditions:
    """Multipliers of one calendar day (1.0 = an ordinary day)."""

    date: dt.date
    traffic: float
    intent: float
    order_value: float
    competition: dict[str, float]  # event name -> competition multiplier on that day
    phases: list[str]

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
        self._days = [self._conditions(self.date(d)) for d in range(self.days)]

    def date(self, day: int) -> dt.date:
        return self.start_date + dt.timedelta(days=day)

    def conditions(self, day: int) -> DayConditions:
        return self._days[day]

    def hour_share(self, hour: int) -> float:
        """Share of a day's sessions that fall in ``hour``."""
        return float(self.hour_curve[hour] / self.hour_curve.sum())

    def expected_sessions(self, day: int, base_per_day: float) -> np.ndarray:
        """Expected sessions in each hour of ``day``: shape (24,)."""
        c = self._days[day]
        return base_per_day * self.hour_curve / 24.0 * self.weekday_curve[c.weekday] * c.traffic

    def _conditions(self, date: dt.date) -> DayConditions:
        traffic = intent = order_value = 1.0
        competition: dict[str, float] = {}
        phases: list[str] = []
        for ev in self.events:
            for label, start, end, tr, it, ov, co in self._phases(ev, date.year):
                if start <= date <= end:
                    traffic *= tr
                    intent *= it
                    order_value *= ov
                    name = ev.name or ev.preset or ""
                    competition[name] = competition.get(name, 1.0) * co
                    phases.append(f"{name}:{label}")
        return DayConditions(date, traffic, intent, order_value, competition, phases)

    @staticmethod
    def _phases(ev: Event, year: int) -> list[tuple[str, dt.date, dt.date, float, float, float, float]]:
        """The event's phases that may touch ``year`` (a preset repeats every year)."""
        if ev.preset is None:
            assert ev.start is not None and ev.end is not None
            return [
                (
                    ev.name or "event",
                    ev.start,
                    ev.end,
                    ev.traffic or 1.0,
                    ev.intent or 1.0,
                    ev.order_value or 1.0,
                    ev.competition or 1.0,
                )
            ]
        out = []
        for y in (year - 1, year, year + 1):
            if ev.preset == "chinese_new_year":
                rows = _cny_phases(y)
            else:
                rows = [
                    (p.label, dt.date(y, *p.start), dt.date(y, *p.end), p.traffic, p.intent, p.order_value, p.competition)
                    for p in PRESETS[ev.preset]
                ]
            if ev.start is not None and ev.end is not None:
                # A preset with its own dates: its peak numbers over those dates.
                peak = max(rows, key=lambda r: r[3] * r[4]) if rows else ("peak", None, None, 1, 1, 1, 1)
                rows = [("custom", ev.start, ev.end, *peak[3:])]
            out.extend(_override(rows, ev))
            if ev.start is not None:
                break
        return out


def _override(rows: list[tuple], ev: Event) -> list[tuple]:
    """Scenario numbers override the preset's peak phase (the one with most traffic x intent)."""
    if not rows or all(v is None for v in (ev.traffic, ev.intent, ev.order_value, ev.competition)):
        return rows
    peak_i = max(range(len(rows)), key=lambda i: rows[i][3] * rows[i][4])
    label, s, e, tr, it, ov, co = rows[peak_i]
    rows = list(rows)
    rows[peak_i] = (
        label,
        s,
        e,
        ev.traffic if ev.traffic is not None else tr,
        ev.intent if ev.intent is not None else it,
        ev.order_value if ev.order_value is not None else ov,
        ev.competition if ev.competition is not None else co,
    )
    return rows
