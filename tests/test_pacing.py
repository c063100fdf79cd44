"""Pacing controllers on a market where the right behaviour is known.

The focal campaign bids CPM against six CPC competitors with unlimited
budgets (each targeting two interests), so its win rate falls smoothly as it
shades its bid.  Its daily budget is a tenth of what it would spend unpaced
(measured by a first run with an unlimited budget).  Right behaviour: ``asap``
spends everything in the early hours, long before the evening peak; ``even``,
``adaptive`` and ``pid`` still spend in the last hours; all spend at least 90 %
of the budget; ``adaptive`` settles on a steady bid multiplier.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import Market
from simulator.scenario import PacingParams
from simulator.strategy.pacing import PACERS, AdaptivePacer, EvenPacer, PaceState, PacingBank, PidPacer, make_pacer
from tests.conftest import make_scenario

CATS = ["fashion", "food", "travel", "beauty", "home", "tech"]
COMPETITOR_BIDS = [0.8, 1.2, 1.8, 2.6, 3.6, 5.0]
EVENING_PEAK = 19  # the default hour curve peaks 20:00-23:00


def paced_market(pacing: str, daily: float, days: int, params: dict[str, Any] | None = None) -> Market:
    strategy: dict[str, Any] = {"pacing": pacing}
    if params:
        strategy["pacing_params"] = params
    advertisers: list[dict[str, Any]] = [
        {
            "name": "focal",
            "category": "beauty",
            "strategy": strategy,
            "campaigns": [{"name": "c", "bid": {"type": "CPM", "amount": 60.0}, "budget": {"daily": daily}}],
        }
    ]
    for i, bid in enumerate(COMPETITOR_BIDS):
        advertisers.append(
            {
                "name": f"comp{i}",
                "category": CATS[i],
                "campaigns": [
                    {
                        "name": "c",
                        "bid": {"type": "CPC", "amount": bid},
                        "budget": {"daily": 1e6},
                        "targeting": {"interests": [CATS[i], CATS[(i + 1) % 6]]},
                    }
                ],
            }
        )
    scenario = make_scenario(
        {"advertisers": advertisers, "days": days, "quality.dynamic": False, "auction.reserve_ecpm": 2.0}
    )
    return Market(scenario)


def focal_hourly(market: Market) -> np.ndarray:
    """Focal spend, shape (days, 24), yuan."""
    h = market.tables()["advertiser_hourly"]
    h = h[h["advertiser"] == "focal"].sort_values(["date", "hour"])
    return h["spend"].to_numpy().reshape(-1, 24)


@pytest.fixture(scope="module")
def budget() -> float:
    """A tenth of what the focal campaign spends in a day with no budget limit."""
    m = paced_market("asap", 1e6, days=1)
    m.run()
    demand = focal_hourly(m).sum()
    assert demand > 100.0  # enough volume for the shares below to mean something
    return demand / 10.0


def hour_reaching(spend: np.ndarray, share: float, budget: float) -> int:
    """First hour by whose end cumulative spend reached ``share`` of the budget (24 if never)."""
    cum = np.cumsum(spend) / budget
    return int(np.argmax(cum >= share)) if cum[-1] >= share else 24


@pytest.mark.slow
@pytest.mark.parametrize("pacing", ["asap", "even", "adaptive", "pid"])
def test_pacing_on_a_tenth_of_demand(pacing: str, budget: float) -> None:
    days = 3
    m = paced_market(pacing, budget, days)
    end_multipliers = []
    for _ in range(days):
        m.step()
        end_multipliers.append(float(m.book.camp_pace_mult[0]))
    spend = focal_hourly(m)
    for day in range(1, days):  # day 0 is the controllers' warm-up
        s = spend[day]
        assert s.sum() >= 0.9 * budget, f"{pacing} day {day}: spent {s.sum():.2f} of {budget:.2f}"
        assert s.sum() <= budget + 1e-6
        h90 = hour_reaching(s, 0.9, budget)
        if pacing == "asap":
            assert h90 < EVENING_PEAK, f"asap spent 90 % only at {h90}:00"
            assert s[EVENING_PEAK:].sum() == 0.0
        else:
            # Still spending in the last three hours, and in proportion to their traffic (about 18 % of a day).
            assert s[21:].sum() >= 0.08 * budget, f"{pacing} day {day}: last hours {s[21:].sum():.2f}"
            assert h90 >= 20, f"{pacing} reached 90 % at {h90}:00"
    if pacing == "adaptive":
        steady = np.array(end_multipliers[1:])
        assert steady.max() < 0.7  # it shades: a tenth of demand needs a much lower bid
        assert steady.max() / steady.min() < 1.15, f"multiplier not steady: {end_multipliers}"


def _state(hour: int, budget: float, spent: float, hour_spend: np.ndarray, exhausted: bool = False) -> PaceState:
    share = np.full(24, 1 / 24)
    return PaceState(hour=hour, budget=budget, spent=spent, hour_spend=hour_spend, traffic_share=share, exhausted=exhausted)


def test_adaptive_shades_when_over_plan_and_holds_once_exhausted() -> None:
    pacer = AdaptivePacer(PacingParams(step=0.2))
    spend = np.zeros(24)
    pacer.update(_state(0, 240.0, 0.0, spend))
    spend[0] = 30.0  # three times the plan of 10 per hour
    m1, _ = pacer.update(_state(1, 240.0, 30.0, spend))
    assert m1 < 1.0
    spend[1] = 210.0
    m2, _ = pacer.update(_state(2, 240.0, 240.0, spend, exhausted=True))
    assert m2 < m1
    # Idle, exhausted hours are not read as under-spending: the multiplier holds.
    for h in range(3, 24):
        m, _ = pacer.update(_state(h, 240.0, 240.0, spend, exhausted=True))
        assert m == pytest.approx(m2)


def test_even_throttles_participation_not_bids() -> None:
    pacer = EvenPacer(PacingParams())
    spend = np.zeros(24)
    pacer.update(_state(0, 24.0, 0.0, spend))
    spend[0] = 0.3 * 24.0 / 1.0  # at participation 0.3 it spent 7.2, far above the plan of 1
    mult, throttle = pacer.update(_state(1, 24.0, spend[0], spend))
    assert mult == 1.0
    assert 0.0 < throttle < 0.1


def test_pid_shades_when_ahead_and_recovers_when_under_plan_never_above_the_bid() -> None:
    pacer = PidPacer(PacingParams())
    spend = np.zeros(24)
    pacer.update(_state(0, 240.0, 0.0, spend))
    ahead, _ = pacer.update(_state(6, 240.0, 200.0, spend))  # a quarter of the day, most of the budget gone
    assert ahead < 0.8
    behind, _ = pacer.update(_state(18, 240.0, 200.0, spend))  # the plan has caught up and passed
    assert ahead < behind <= 1.0
    m, _ = pacer.update(_state(20, 240.0, 0.0, spend))  # far under plan: back to the full bid, not above
    assert m == 1.0


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), days=st.integers(1, 3))
def test_bank_matches_the_controllers_one_campaign_at_a_time(seed: int, n: int, days: int) -> None:
    """The array bank gives bit-identical multipliers and participation to the per-campaign controllers.

    Random days: campaigns of every kind with their own gains, some inactive on
    some days, budgets of 0 among them, spend in uneven steps (idle hours,
    overspend, exhaustion), and traffic plans with empty hours (including an
    empty rest of the day).
    """
    rng = np.random.default_rng(seed)
    kinds = list(rng.choice(list(PACERS), size=n))
    params = [
        PacingParams(step=float(rng.uniform(0.01, 2.0)), kp=float(rng.uniform(0, 2)), ki=float(rng.uniform(0, 1)), kd=float(rng.uniform(0, 1)))
        for _ in range(n)
    ]
    one_by_one = [make_pacer(k, p) for k, p in zip(kinds, params, strict=True)]
    bank = PacingBank(kinds, params)
    for _ in range(days):
        share = rng.dirichlet(np.ones(24)) * (rng.random(24) > 0.2)
        if rng.random() < 0.3:
            share[rng.integers(12, 24) :] = 0.0
        share = share / share.sum() if share.sum() > 0 else np.full(24, 1 / 24)
        active = rng.random(n) < 0.8
        budget = np.where(rng.random(n) < 0.1, 0.0, rng.choice([10.0, 240.0, 1e4], size=n))
        hour_spend = np.zeros((24, n))
        exhausted = ~active
        for hour in range(24):
            spent = hour_spend.sum(axis=0)
            mult, throttle = bank.update(hour, active, budget, spent, hour_spend[hour - 1] if hour else None, share, exhausted)
            for c in np.flatnonzero(active):
                state = PaceState(hour, float(budget[c]), float(spent[c]), hour_spend[:, c], share, bool(exhausted[c]))
                assert (mult[c], throttle[c]) == one_by_one[c].update(state), (kinds[c], hour)
            # This hour's spend: none, some, or a burst past the budget; exhausted once spent reaches it.
            step = rng.choice([0.0, 0.5, 3.0, 50.0], size=n) * rng.random(n) * active * ~exhausted
            hour_spend[hour] = step
            exhausted |= active & (hour_spend.sum(axis=0) >= budget) & (budget > 0)


@pytest.mark.parametrize(("left", "expected"), [(5.0, 1.0), (0.0, 0.005)])
def test_even_pacing_with_a_vanishing_demand_estimate(left: float, expected: float) -> None:
    """A demand estimate that halves through weeks of idle hours ends below what a float holds
    (demand x traffic left underflows to 0): money left buys full participation, none buys the
    least, in the controller and in the bank alike (no division by zero, no NaN)."""
    share = np.full(24, 1 / 24)
    pacer = EvenPacer(PacingParams())
    pacer.demand = 5e-324  # the smallest subnormal: times the traffic left, 0.0
    bank = PacingBank(["even"], [PacingParams()])
    bank.demand[0] = 5e-324
    spend = np.zeros((24, 1))
    # At noon half the day's traffic is left: 5e-324 x 0.5 rounds to 0.  (No spend in the hour before,
    # at participation 0.3: the estimate is not updated.)
    state = PaceState(hour=12, budget=left, spent=0.0, hour_spend=spend[:, 0], traffic_share=share)
    assert pacer.update(state) == (1.0, expected)
    mult, throttle = bank.update(12, np.ones(1, bool), np.array([left]), np.zeros(1), spend[11], share, np.zeros(1, bool))
    assert (mult[0], throttle[0]) == (1.0, expected)
