"""Optimized CPA (oCPC): gate, learning phase, compensation and re-entry, all in ``events``.

Two advertisers: ``newbie`` has no conversions yet, so its CPA campaign runs
as CPC until a CPC campaign of its own brings the account to
``cpa_min_conversions``, then learns and exits learning; ``opt`` may use CPA
from day one, but its landing page converts far worse than the platform's
prior predicts, so its first days cost far over target (compensation, refund in
the ledger), it fails learning, and a bid edit re-enters learning.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulator import Market
from tests.conftest import SMALL, make_scenario

OPT = {
    "name": "opt",
    "category": "beauty",
    "account": {"history_conversions": 100},
    "campaigns": [
        {
            "name": "ocpc",
            "bid": {"type": "CPA", "amount": 200.0},
            "budget": {"daily": 600.0},
            "landing_page": 0.0,
            "edits": [{"date": "2026-09-13", "bid": 260.0}],
        }
    ],
}
NEWBIE = {
    "name": "newbie",
    "category": "beauty",
    "account": {"history_conversions": 0},
    "campaigns": [
        {"name": "ocpc", "bid": {"type": "CPA", "amount": 100.0}, "budget": {"daily": 300.0}, "landing_page": 0.9},
        {"name": "seed", "bid": {"type": "CPC", "amount": 3.0}, "budget": {"daily": 300.0}, "landing_page": 0.9},
    ],
}


def ocpc_tables(seed: int) -> dict[str, pd.DataFrame]:
    scenario = make_scenario(
        {
            "advertisers": [OPT, NEWBIE, *SMALL["advertisers"][1:]],
            "days": 9,
            "seed": seed,
            "population.users": 10_000,
            "auction.cpa_min_conversions": 5,
            "auction.learning_conversions": 6,
            "auction.learning_days": 3,
            "auction.compensation_days": 2,
        }
    )
    m = Market(scenario)
    m.run()
    return m.tables()


#: ``opt``'s story needs a conversion or two in its first days, not six: likely, not certain
#: (seeds 1-7 but 5 tell it with this version's draws; see the last test).  This seed is one of them.
SEED = 2


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return ocpc_tables(SEED)


def kinds(tables: dict[str, pd.DataFrame], advertiser: str) -> list[str]:
    ev = tables["events"]
    ev = ev[(ev["advertiser"] == advertiser) & (ev["campaign"] == "ocpc")]
    return [k for k in ev["kind"] if k not in ("audience_size", "budget_exhausted")]


def test_cpa_gate_then_learning_and_exit(tables: dict[str, pd.DataFrame]) -> None:
    # Compensation may be paid while learning; the gate and the phase come in this order.
    k = [kind for kind in kinds(tables, "newbie") if kind != "compensation"]
    assert k[:4] == ["cpa_unavailable", "cpa_unlocked", "learning_enter", "learning_exit"], k
    daily = tables["advertiser_daily"]
    ocpc = daily[(daily["advertiser"] == "newbie") & (daily["campaign"] == "ocpc")]
    assert (ocpc["billing_event"] == "click").all()  # stage 1 (and oCPC after it) bills per click
    assert ocpc["clicks"].sum() > 0


def opt_story(k: list[str]) -> bool:
    """Learning, compensation for the over-cost, then failure; an edit re-enters learning."""
    return (
        k[:1] == ["learning_enter"]
        and "compensation" in k
        and "learning_failed" in k
        and k.index("learning_failed") > k.index("compensation")
        and "edit" in k
        and k[k.index("edit") + 1 :][:1] == ["learning_reenter"]
    )


def test_compensation_failure_and_reentry(tables: dict[str, pd.DataFrame]) -> None:
    k = kinds(tables, "opt")
    assert opt_story(k), k
    ev = tables["events"]
    comp = ev[(ev["advertiser"] == "opt") & (ev["kind"] == "compensation")]
    # What a closed window still owed is paid on the days after it (at most a day's spend each day).
    comp = comp[~comp["detail"].str.startswith("owed from a closed window")]
    # The rest only inside a guarantee window: learning (3 days) + 2, from the start or from the re-entry.
    reenter = ev[(ev["advertiser"] == "opt") & (ev["kind"] == "learning_reenter")]["date"].min()
    in_first = comp["date"] <= pd.Timestamp("2026-09-11")
    in_second = (comp["date"] >= reenter) & (comp["date"] < reenter + pd.Timedelta(days=5))
    assert (in_first | in_second).all(), comp["date"].tolist()
    assert in_first.any()


def test_refund_in_the_ledger_and_spend_equals_revenue(tables: dict[str, pd.DataFrame]) -> None:
    daily = tables["advertiser_daily"]
    opt = daily[daily["advertiser"] == "opt"]
    assert opt["refund"].sum() > 100.0
    assert (opt["spend"] >= 0).all()
    # The guarantee: the learning window's cost (its first three days: learning failed on the
    # fourth) after refunds is at most conversions x target.  A refund is at most the day's spend,
    # so what the window owed when it closed is refunded on the days after (before the edit that
    # opens the next window); every yuan of it, and no more.
    window = opt.iloc[:3]
    gross = (window["spend"] + window["refund"]).sum()
    before_edit = opt[opt["date"] < pd.Timestamp("2026-09-13")]
    owed = gross - window["conversions"].sum() * 200.0
    assert owed > 0
    assert before_edit["refund"].sum() == pytest.approx(owed, abs=0.01)
    market = tables["market_daily"]
    assert int(market["revenue_micro"].sum()) == int(market["spend_micro"].sum())
    assert market["revenue"].sum() == pytest.approx(daily["spend"].sum(), abs=1e-6)


def test_targeting_edit_reenters_learning_and_reports_reach() -> None:
    adv = {
        "name": "opt",
        "category": "beauty",
        "account": {"history_conversions": 100},
        "campaigns": [
            {
                "name": "ocpc",
                "bid": {"type": "CPA", "amount": 100.0},
                "budget": {"daily": 300.0},
                "edits": [{"date": "2026-09-08", "targeting": {"gender": "female", "interests": ["beauty"]}}],
            }
        ],
    }
    scenario = make_scenario({"advertisers": [adv, *SMALL["advertisers"][1:]], "days": 3, "population.users": 1000})
    m = Market(scenario)
    m.run()
    ev = m.tables()["events"]
    ev = ev[ev["advertiser"] == "opt"]
    k = list(ev["kind"])
    assert "learning_reenter" in k[k.index("edit") :]
    reenter = ev[ev["kind"] == "learning_reenter"]["detail"].iloc[0]
    assert "targeting" in reenter
    sizes = ev[ev["kind"] == "audience_size"]["detail"].tolist()
    assert sizes[0] == "reachable users: 1000 of 1000"
    new_reach = int(sizes[-1].split()[2])
    assert 0 < new_reach < 1000
    assert m.audience_sizes[0] == new_reach
    assert scenario.advertisers[0].campaigns[0].targeting.gender == "all"  # the scenario is not rewritten
    shown = m.book.camp_seg_ok[0][m.population.segment]
    assert not shown[m.population.gender == 1].any()  # no man is eligible after the edit


def test_targeting_edit_reaches_the_serving() -> None:
    """The feed groups campaigns by targeting: after an edit, the campaign is served only to the users
    its new targeting admits (read off the feed's trace: each impression's user and campaign)."""
    adv = {
        "name": "opt",
        "category": "beauty",
        "campaigns": [
            {
                "name": "cpm",
                "bid": {"type": "CPM", "amount": 300.0},
                "budget": {"daily": 5000.0},
                "edits": [{"date": "2026-09-08", "targeting": {"gender": "female"}}],
            }
        ],
    }
    m = Market(make_scenario({"advertisers": [adv, *SMALL["advertisers"][1:]], "days": 2, "population.users": 2000}))
    gender = []
    for _ in range(2):
        m.feed.trace = []  # (switched between days)
        m.step()
        users = [e["winners"].users[e["served"].session[e["winners"].camp[e["served"].col] == 0]] for e in m.feed.trace]
        gender.append(m.population.gender[np.concatenate(users)])
    assert (gender[0] == 1).sum() > 0  # before the edit men see the ad
    assert gender[1].size > 0
    assert (gender[1] == 0).all()  # after it, only women


@pytest.mark.slow
def test_the_story_is_not_one_lucky_seed() -> None:
    """The same events on most seeds (measured: 4 of seeds 3-7; seeds 1 and 2 tell it too)."""
    told = [opt_story(kinds(ocpc_tables(seed), "opt")) for seed in (3, 4, 5, 6, 7)]
    assert sum(told) >= 3, told
