"""Bid rules: each changes the bid when, and only when, it should.

Direct checks read the multipliers the feed uses (``book.camp_mult``,
``camp_hour_mult``, ``camp_dev_mult``, today's budget); one behavioural check
shows a daypart rule changes the auction at 21:00 and leaves 10:00 alone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from simulator import Market
from simulator.calendar import DayConditions
from simulator.scenario import ScenarioError, parse_scenario
from simulator.strategy.rules import BOUNDS, CampaignPlan, RuleContext, make_rule
from tests.conftest import SMALL, make_scenario

MONDAY = dt.date(2026, 9, 7)  # SMALL's start date


def focal(rules: list[dict[str, Any]], days: int = 2, users: int = 500, **extra: Any) -> Market:
    """A tiny market whose first advertiser (alpha) carries ``rules``."""
    over = {"advertisers.0.strategy": {"rules": rules}, "days": days, "population.users": users, **extra}
    return Market(make_scenario(over))


def ctx(day: int = 1, **yesterday: float) -> RuleContext:
    date = MONDAY + dt.timedelta(days=day)
    cond = DayConditions(date, 1.0, 1.0, 1.0, {}, [])
    return RuleContext(day=day, campaign_day=day, date=date, conditions=cond, yesterday=dict(yesterday), bid_type="CPC")


def apply(rule: Any, c: int = 0, **kw: Any) -> CampaignPlan:
    plan = CampaignPlan()
    rule.plan(c, ctx(**kw), plan)
    plan.clip()
    return plan


# ---------------------------------------------------------------- calendar rules, via the market


def test_daypart_multiplies_evening_hours_only() -> None:
    m = focal([{"rule": "daypart", "hours": [19, 23], "multiplier": 1.3}], days=1)
    m.step()
    hours = m.book.camp_hour_mult[0]
    assert hours[21] == pytest.approx(1.3)
    assert hours[10] == 1.0
    assert np.flatnonzero(hours != 1.0).tolist() == [19, 20, 21, 22, 23]
    assert (m.book.camp_hour_mult[1:] == 1.0).all()  # other advertisers untouched


def test_daypart_wraps_past_midnight() -> None:
    rule = make_rule(parse_rule({"rule": "daypart", "hours": [22, 2], "multiplier": 0.5}))
    plan = apply(rule)
    assert np.flatnonzero(plan.hour_multiplier != 1.0).tolist() == [0, 1, 2, 22, 23]


def test_daypart_changes_the_auction_at_21_not_at_10() -> None:
    """Same seed with and without the rule: 10:00 is identical, 21:00 is not."""

    def hourly(rules: list[dict[str, Any]]) -> Any:
        m = focal(rules, days=1, users=3000)
        m.run()
        h = m.tables()["advertiser_hourly"]
        return h[h["advertiser"] == "alpha"].set_index("hour")

    base = hourly([])
    ruled = hourly([{"rule": "daypart", "hours": [19, 23], "multiplier": 3.0}])
    assert ruled.loc[10, "impressions"] == base.loc[10, "impressions"]
    assert ruled.loc[10, "spend"] == base.loc[10, "spend"]
    # At 21:00 the tripled bid buys more (where alpha can still move up) or pays more.
    assert ruled.loc[21, "spend"] > 1.5 * base.loc[21, "spend"]
    assert ruled.loc[19:23, "impressions"].sum() > base.loc[19:23, "impressions"].sum()


def test_weekday_only_on_its_days() -> None:
    m = focal([{"rule": "weekday", "days": ["sat", "sun"], "multiplier": 1.2}], days=7)
    mults = []
    for _ in range(7):
        m.step()
        mults.append(float(m.book.camp_mult[0]))
    assert mults == pytest.approx([1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2])  # Mon..Sun


def test_device_rule_on_ios_only() -> None:
    m = focal([{"rule": "device", "ios": 1.4}], days=1)
    m.step()
    android, ios = m.book.camp_dev_mult[0]
    assert android == 1.0
    assert ios == pytest.approx(1.4)


def test_seasonal_inside_the_event_only() -> None:
    m = focal(
        [{"rule": "seasonal", "event": "promo", "multiplier": 1.5, "budget_multiplier": 2.0}],
        days=5,
        **{"calendar.events": [{"name": "promo", "start": "2026-09-09", "end": "2026-09-10", "competition": 1.3}]},
    )
    mults, budgets = [], []
    for _ in range(5):
        m.step()
        mults.append(float(m.book.camp_mult[0]))
        budgets.append(float(m.book.camp_budget[0]))
    assert mults == pytest.approx([1.0, 1.0, 1.5, 1.5, 1.0])
    assert budgets == pytest.approx([200.0, 200.0, 400.0, 400.0, 200.0])
    seasonal = [e for e in m.events if e["kind"] == "seasonal"]
    assert [e["date"] for e in seasonal] == [dt.date(2026, 9, 9), dt.date(2026, 9, 10)]


def test_seasonal_by_dates_and_event_competition_default() -> None:
    rule = make_rule(parse_rule({"rule": "seasonal", "start": "2026-09-08", "end": "2026-09-08", "multiplier": 1.7}))
    assert apply(rule, day=0).multiplier == 1.0
    assert apply(rule, day=1).multiplier == pytest.approx(1.7)
    assert apply(rule, day=2).multiplier == 1.0
    promo = {"calendar.events": [{"name": "promo", "start": "2026-09-08", "end": "2026-09-08"}]}
    by_event = make_rule(parse_rule({"rule": "seasonal", "event": "promo"}, **promo))
    plan = CampaignPlan()
    c = ctx(day=1)
    c.conditions.competition["promo"] = 1.25
    by_event.plan(0, c, plan)
    assert plan.multiplier == pytest.approx(1.25)  # the event's competition, bids and budget
    assert plan.budget_multiplier == pytest.approx(1.25)


# ---------------------------------------------------------------- rules that read results


def test_target_cpa_lowers_bids_when_over_target_and_only_then() -> None:
    over = make_rule(parse_rule({"rule": "target_cpa", "target": 50.0}))
    assert apply(over, spend=1000.0, conversions=10.0).multiplier < 1.0  # CPA 100
    under = make_rule(parse_rule({"rule": "target_cpa", "target": 50.0}))
    assert apply(under, spend=1000.0, conversions=40.0).multiplier > 1.0  # CPA 25
    near = make_rule(parse_rule({"rule": "target_cpa", "target": 50.0}))
    # CPA 52 on 20 conversions: 4 % off, well inside the sampling noise (22 %): no change.
    assert apply(near, spend=1040.0, conversions=20.0).multiplier == 1.0
    first = make_rule(parse_rule({"rule": "target_cpa", "target": 50.0}))
    assert apply(first, day=0, spend=1000.0, conversions=1.0).multiplier == 1.0  # nothing to read on day one
    none_yet = make_rule(parse_rule({"rule": "target_cpa", "target": 50.0}))
    assert apply(none_yet, spend=40.0, conversions=0.0).multiplier == 1.0  # less than a target spent: no evidence
    assert apply(make_rule(parse_rule({"rule": "target_cpa", "target": 50.0})), spend=400.0, conversions=0.0).multiplier < 1.0


def test_target_cpa_steps_are_bounded_and_logged() -> None:
    rule = make_rule(parse_rule({"rule": "target_cpa", "target": 10.0, "step": 0.2}))
    plan = apply(rule, spend=1000.0, conversions=10.0)  # CPA 10x the target
    assert plan.multiplier == pytest.approx(0.8)
    assert plan.notes and plan.notes[0][0] == "bid_change"


def test_target_roas() -> None:
    low = make_rule(parse_rule({"rule": "target_roas", "target": 3.0}))
    assert apply(low, spend=1000.0, order_value=1500.0, conversions=30.0).multiplier < 1.0
    high = make_rule(parse_rule({"rule": "target_roas", "target": 3.0}))
    assert apply(high, spend=1000.0, order_value=6000.0, conversions=30.0).multiplier > 1.0
    on = make_rule(parse_rule({"rule": "target_roas", "target": 3.0}))
    assert apply(on, spend=1000.0, order_value=3100.0, conversions=30.0).multiplier == 1.0


def test_impression_share() -> None:
    rule = make_rule(parse_rule({"rule": "impression_share", "target": 0.5, "step": 0.1}))
    assert apply(rule, impression_share=0.3).multiplier == pytest.approx(1.1)
    assert apply(rule, impression_share=0.55).multiplier == pytest.approx(1.1)  # on target: holds
    assert apply(rule, impression_share=0.9).multiplier == pytest.approx(1.0)  # well above: back down
    assert apply(make_rule(parse_rule({"rule": "impression_share", "target": 0.5})), impression_share=0.9).multiplier == 1.0


def test_conservative_start_scales_up_while_cpa_holds() -> None:
    rule = make_rule(parse_rule({"rule": "conservative_start", "fraction": 0.5, "scale_per_day": 0.5, "target_cpa": 40.0}))
    assert apply(rule, day=0).multiplier == pytest.approx(0.5)
    assert apply(rule, day=1, spend=300.0, conversions=10.0).multiplier == pytest.approx(0.75)  # CPA 30 holds
    assert apply(rule, day=2, spend=600.0, conversions=10.0).multiplier == pytest.approx(0.75)  # CPA 60: waits
    assert apply(rule, day=3, spend=300.0, conversions=10.0).multiplier == pytest.approx(1.0)  # capped at the bid


def test_multipliers_combine_within_platform_bounds() -> None:
    rules = [
        {"rule": "weekday", "days": ["mon"], "multiplier": 6.0},
        {"rule": "seasonal", "start": "2026-09-07", "end": "2026-09-07", "multiplier": 4.0},
        {"rule": "daypart", "hours": [20, 21], "multiplier": 3.0},
        {"rule": "device", "ios": 5.0, "android": 0.01},
    ]
    m = focal(rules, days=1)
    m.step()
    b = m.book
    combined = b.camp_mult[0] * b.camp_hour_mult[0][:, None] * b.camp_dev_mult[0][None, :]
    assert combined.max() == pytest.approx(BOUNDS[1])  # +900 % at most
    assert combined.min() >= BOUNDS[0] - 1e-12  # -90 % at least
    assert b.camp_mult[0] == pytest.approx(BOUNDS[1])
    low = focal([{"rule": "weekday", "days": ["mon"], "multiplier": 0.05}], days=1)
    low.step()
    assert low.book.camp_mult[0] == pytest.approx(BOUNDS[0])


def test_budget_shift_moves_budget_to_the_cheaper_campaign() -> None:
    data = {
        **SMALL,
        "days": 3,
        "population": {"users": 3000},
        "advertisers": [
            {
                "name": "shifter",
                "category": "beauty",
                "strategy": {"rules": [{"rule": "budget_shift", "fraction": 0.25}]},
                "campaigns": [
                    {"name": "cheap", "bid": {"type": "CPC", "amount": 1.0}, "budget": {"daily": 100.0}},
                    {"name": "dear", "bid": {"type": "CPC", "amount": 6.0}, "budget": {"daily": 100.0}},
                ],
            },
            *SMALL["advertisers"][1:],
        ],
    }
    m = Market(parse_scenario(data))
    m.run()
    daily = m.tables()["advertiser_daily"]
    shifter = daily[daily["advertiser"] == "shifter"].pivot(index="date", columns="campaign", values="daily_budget")
    assert shifter.iloc[0].tolist() == [100.0, 100.0]
    assert shifter["cheap"].iloc[-1] > 100.0 > shifter["dear"].iloc[-1]
    assert shifter.iloc[-1].sum() == pytest.approx(200.0)  # moved, not created
    assert any(e["kind"] == "budget_shift" for e in m.events)


# ---------------------------------------------------------------- validation


def parse_rule(rule: dict[str, Any], **extra: Any) -> Any:
    scenario = make_scenario({"advertisers.0.strategy": {"rules": [rule]}, **extra})
    return scenario.advertisers[0].strategy.rules[0]


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ({"rule": "daypart", "hours": [19, 25], "multiplier": 1.3}, "rules.0.hours.1", "<= 23"),
        ({"rule": "daypart", "hours": [19, 23], "multiplier": 0}, "rules.0.multiplier", "> 0"),
        ({"rule": "daypart", "hours": [19, 23]}, "rules.0.multiplier", "required"),
        ({"rule": "weekday", "days": ["caturday"], "multiplier": 1.1}, "rules.0.days.0", "not allowed"),
        ({"rule": "device", "ios": -1.0}, "rules.0.ios", "> 0"),
        ({"rule": "device", "iphone": 1.2}, "rules.0.iphone", "unknown field"),
        ({"rule": "seasonal", "multiplier": 1.5}, "rules.0", "event name or start and end"),
        ({"rule": "seasonal", "event": "singels_day", "multiplier": 1.5}, "rules.0.event", "unknown event"),
        ({"rule": "target_cpa", "target": -5.0}, "rules.0.target", "> 0"),
        ({"rule": "target_cpa", "target": 50.0, "step": 1.5}, "rules.0.step", "< 1"),
        ({"rule": "target_roas"}, "rules.0.target", "required"),
        ({"rule": "impression_share", "target": 1.5}, "rules.0.target", "<= 1"),
        ({"rule": "conservative_start", "fraction": 0.0}, "rules.0.fraction", "> 0"),
        ({"rule": "budget_shift", "fraction": 2.0}, "rules.0.fraction", "<= 1"),
        ({"rule": "bid_boost"}, "rules.0", "unknown rule"),
    ],
)
def test_bad_rule_parameters_name_the_field(rule: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        make_scenario({"advertisers.0.strategy": {"rules": [rule]}})
    lines = info.value.lines
    assert any(f"advertisers.0.strategy.{field}:" in line and words in line for line in lines), lines


@pytest.mark.parametrize(
    ("pacing", "field", "words"),
    [
        ({"pacing": "evenly"}, "pacing", "did you mean even"),
        ({"pacing": "adaptive", "pacing_params": {"step": 0}}, "pacing_params.step", "> 0"),
        ({"pacing": "pid", "pacing_params": {"kp": -1}}, "pacing_params.kp", ">= 0"),
        ({"pacing": "pid", "pacing_params": {"gain": 1}}, "pacing_params.gain", "unknown field"),
    ],
)
def test_bad_pacing_parameters_name_the_field(pacing: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        make_scenario({"advertisers.0.strategy": pacing})
    assert any(f"advertisers.0.strategy.{field}:" in line and words in line for line in info.value.lines), info.value.lines


# ---------------------------------------------------------------- target CPA on a stationary market


@pytest.mark.slow
def test_target_cpa_bidder_meets_its_target_on_a_stationary_market() -> None:
    """A CPC bidder whose CPA starts ~45 % above target steers down to it.

    Stationary: fixed quality and predictions, no season, purchase intent held
    at 3x all run long (so a 5,000-user market gives ~40 conversions a day).
    Over the last five days the CPA must be within the sampling noise of the
    target: |log(CPA / target)| < tolerance (0.05) + 2.5 / sqrt(conversions).
    (Brand familiarity makes CPA drift down as the audience warms up, so the
    controller also has to follow a slowly moving market.)
    """
    cats = ["fashion", "food", "travel", "beauty", "home", "tech"]
    competitors = [
        {"name": f"comp{i}", "category": cats[i % 6], "campaigns": [{"name": "c", "bid": {"type": "CPC", "amount": 1.0 + 0.6 * i}, "budget": {"daily": 1e6}}]}
        for i in range(8)
    ]
    target, days, tail = 10.0, 10, 5
    focal_adv = {
        "name": "focal",
        "category": "beauty",
        "strategy": {"rules": [{"rule": "target_cpa", "target": target, "step": 0.15}]},
        "campaigns": [
            {
                "name": "c",
                "bid": {"type": "CPC", "amount": 12.0},
                "budget": {"daily": 1e6},
                "landing_page": 1.0,
                "creatives": [{"name": "a", "production": 0.9, "authenticity": 0.9}],
            }
        ],
    }
    scenario = make_scenario(
        {
            "advertisers": [focal_adv, *competitors],
            "days": days,
            "quality.dynamic": False,
            "auction.reserve_ecpm": 2.0,
            "calendar.events": [{"name": "steady", "start": "2026-01-01", "end": "2027-12-31", "intent": 3.0}],
        }
    )
    m = Market(scenario)
    m.run()
    daily = m.tables()["advertiser_daily"]
    f = daily[daily["advertiser"] == "focal"]
    start = f.iloc[:2]
    assert start["spend"].sum() / start["conversions"].sum() > 1.1 * target  # it had somewhere to go
    end = f.iloc[-tail:]
    conv = end["conversions"].sum()
    cpa = end["spend"].sum() / conv
    assert abs(np.log(cpa / target)) < 0.05 + 2.5 / np.sqrt(conv), f"CPA {cpa:.2f} on {conv} conversions vs {target}"
    assert f["bid_multiplier"].min() < 0.8  # it got there by lowering bids while over target


def test_all_rules_scenario_uses_every_rule_and_pacer_and_runs() -> None:
    from pathlib import Path

    from simulator import load_scenario, run
    from simulator.scenario import PACING_NAMES, RULE_NAMES

    path = Path(__file__).resolve().parent.parent / "scenarios" / "all_rules.toml"
    scenario = load_scenario(path)
    rules = {r.rule for a in scenario.advertisers for r in a.strategy.rules}
    pacers = {a.strategy.pacing for a in scenario.advertisers}
    assert rules == set(RULE_NAMES)
    assert pacers == set(PACING_NAMES)
    result = run(scenario, days=3)
    kinds = set(result.events["kind"])
    assert {"bid_change", "seasonal", "cpa_unavailable", "learning_enter", "audience_size", "budget_shift"} <= kinds
    assert result.market_daily["revenue"].sum() == pytest.approx(result.advertiser_daily["spend"].sum(), abs=1e-6)
