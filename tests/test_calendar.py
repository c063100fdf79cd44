"""The calendar: curves, preset dates and numbers, overrides, custom events."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from simulator.calendar import CNY_DATES, PRESETS, Calendar, preset_spans
from tests.conftest import make_scenario


def calendar(start: str, days: int, events: list[dict]) -> Calendar:
    return Calendar(make_scenario({"start_date": start, "days": days, "calendar.events": events}))


def on(cal: Calendar, date: str):
    d = (dt.date.fromisoformat(date) - cal.start_date).days
    return cal.conditions(d)


def test_hour_curve_peaks_in_the_evening_and_weekends_are_busier():
    cal = calendar("2026-09-07", 7, [])  # Monday to Sunday, no event
    hours = cal.expected_sessions(0, 24_000.0)
    assert set(np.argsort(hours)[-3:]) <= {20, 21, 22, 23}
    assert hours.sum() == pytest.approx(24_000.0 * cal.weekday_curve[0])
    weekday = [cal.expected_sessions(d, 1.0).sum() for d in range(5)]
    weekend = [cal.expected_sessions(d, 1.0).sum() for d in (5, 6)]
    assert min(weekend) > max(weekday)


def test_ordinary_day_has_no_event():
    c = on(calendar("2026-09-07", 3, [{"preset": "singles_day"}]), "2026-09-08")
    assert (c.traffic, c.intent, c.order_value, c.competition, c.phases) == (1.0, 1.0, 1.0, {}, [])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_phases_tile_without_overlap(name):
    spans = preset_spans(name, 2026)
    assert spans
    for a, b in zip(spans, spans[1:], strict=False):
        assert b.start > a.end, f"{a.label} and {b.label} overlap"
    # Every day of the season is in exactly one phase, so a day's numbers are one phase's numbers.
    cal = calendar(spans[0].start.isoformat(), (spans[-1].end - spans[0].start).days + 1, [{"preset": name}])
    for d in range(cal.days):
        assert len(cal.conditions(d).phases) <= 1


def test_singles_day_dates_and_numbers():
    cal = calendar("2026-10-01", 60, [{"preset": "singles_day"}])
    assert on(cal, "2026-10-19").phases == []
    assert on(cal, "2026-10-20").phases == ["singles_day:presale_open"]
    spike = on(cal, "2026-10-24")
    assert spike.phases == ["singles_day:deposit_spike"]
    # The spike's numbers are its own, not multiplied onto the pre-sale's.
    assert (spike.traffic, spike.intent, spike.competition["singles_day"]) == (1.30, 1.35, 1.45)
    assert on(cal, "2026-10-31").phases == ["singles_day:final_payment"]
    peak = on(cal, "2026-11-11")
    assert peak.phases == ["singles_day:peak"]
    assert (peak.traffic, peak.intent, peak.order_value, peak.competition) == (1.9, 2.5, 1.25, {"singles_day": 2.2})
    assert on(cal, "2026-11-12").intent < 1.0  # cool-down
    assert on(cal, "2026-11-19").phases == []
    # The peak is the season's busiest, most purchase-minded day.
    days = [cal.conditions(d) for d in range(cal.days)]
    assert max(days, key=lambda c: c.traffic).date == dt.date(2026, 11, 11)
    assert max(days, key=lambda c: c.intent).date == dt.date(2026, 11, 11)


def test_singles_day_midnight_rush_moves_sessions_not_the_total():
    cal = calendar("2026-11-10", 2, [{"preset": "singles_day"}])
    plain = calendar("2026-11-10", 2, [])
    peak, base = cal.expected_sessions(1, 1000.0), plain.expected_sessions(1, 1000.0)
    assert peak.sum() == pytest.approx(base.sum() * 1.9)
    assert peak[0] / peak.sum() > 3 * base[0] / base.sum()


@pytest.mark.parametrize("year", [2025, 2026, 2027])
def test_chinese_new_year_follows_the_lunar_date(year):
    day0 = dt.date(year, *CNY_DATES[year])
    cal = calendar((day0 - dt.timedelta(days=30)).isoformat(), 60, [{"preset": "chinese_new_year"}])
    d0 = (day0 - cal.start_date).days
    assert cal.conditions(d0).phases == ["chinese_new_year:festival"]
    assert cal.conditions(d0 - 1).phases == ["chinese_new_year:new_years_eve"]
    assert cal.conditions(d0 - 5).phases == ["chinese_new_year:logistics_pause"]
    assert cal.conditions(d0 - 15).phases == ["chinese_new_year:gifting_rush"]
    assert cal.conditions(d0 + 10).phases == ["chinese_new_year:recovery"]
    # Couriers pause: purchase intent falls while people browse more.
    assert cal.conditions(d0).intent < 0.6 < cal.conditions(d0).traffic
    assert cal.conditions(d0 - 15).intent > 1.0
    pause = [cal.conditions(d0 + k) for k in range(-9, 7)]
    assert all(c.intent <= 0.6 for c in pause)  # about two weeks without deliveries


def test_618_and_double_12():
    cal = calendar("2026-05-20", 40, [{"preset": "618"}])
    assert on(cal, "2026-05-24").phases == []
    assert on(cal, "2026-05-25").phases == ["618:presale"]
    assert on(cal, "2026-06-18").competition == {"618": 1.8}
    assert on(cal, "2026-06-18").traffic == max(cal.conditions(d).traffic for d in range(40))
    cal = calendar("2026-12-01", 20, [{"preset": "double_12"}])
    assert on(cal, "2026-12-12").phases == ["double_12:peak"]
    assert on(cal, "2026-12-12").intent > on(cal, "2026-12-09").intent > 1.0


def test_override_replaces_the_peak_phase_only():
    cal = calendar("2026-10-20", 25, [{"preset": "singles_day", "traffic": 3.0, "competition": 1.2}])
    peak = on(cal, "2026-11-11")
    assert (peak.traffic, peak.intent, peak.competition) == (3.0, 2.5, {"singles_day": 1.2})
    assert on(cal, "2026-11-10").traffic == 1.40  # the eve keeps the preset's numbers
    cny = calendar("2026-02-10", 20, [{"preset": "chinese_new_year", "intent": 0.3}])
    assert on(cny, "2026-02-18").intent == 0.3  # the CNY preset's peak phase is the festival
    assert on(cny, "2026-02-12").intent == 0.60


def test_preset_with_own_dates_uses_its_peak_numbers_there_only():
    cal = calendar("2026-09-01", 30, [{"preset": "singles_day", "name": "brand_day", "start": "2026-09-09", "end": "2026-09-10"}])
    assert on(cal, "2026-09-09").competition == {"brand_day": 2.2}
    assert on(cal, "2026-09-10").traffic == 1.9
    assert on(cal, "2026-09-11").phases == []


def test_custom_event_and_stacking():
    ev = {"name": "launch", "start": "2026-11-10", "end": "2026-11-11", "traffic": 1.5, "intent": 1.2}
    cal = calendar("2026-11-09", 4, [{"preset": "singles_day"}, ev])
    assert on(cal, "2026-11-09").phases == ["singles_day:warm_up"]
    both = on(cal, "2026-11-11")
    assert both.traffic == pytest.approx(1.9 * 1.5)
    assert both.intent == pytest.approx(2.5 * 1.2)
    assert both.order_value == pytest.approx(1.25)  # the custom event leaves order value alone
    assert both.competition == {"singles_day": 2.2, "launch": 1.0}


def test_season_straddling_new_year():
    # CNY 2027 is 6 February: its gifting rush starts on 16 January, reached from a December start.
    cal = calendar("2026-12-20", 40, [{"preset": "chinese_new_year"}])
    assert on(cal, "2027-01-16").phases == ["chinese_new_year:gifting_rush"]
    assert on(cal, "2027-01-15").phases == []
