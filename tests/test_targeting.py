"""Targeting: reach reported, narrow audiences, lookalikes, retargeting, exclusions, mismatch.

One advertiser (beauty) runs the same creative and bid in five campaigns:
broad, retargeting (users who clicked its ads), a lookalike of those
clickers (10 % of users), an over-narrow demographic slice, and a
mismatched one (a beauty ad shown to tech fans).  Purchase intent is held at
3x and landing pages are good so that conversion rates are measurable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from simulator import Market
from tests.conftest import SMALL, make_scenario

DAYS = 8


def camp(name: str, targeting: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "bid": {"type": "CPM", "amount": 50.0},
        "budget": {"daily": 300.0},
        "targeting": targeting,
        "landing_page": 1.0,
        "creatives": [{"name": "a", "production": 0.7, "authenticity": 0.7}],
    }


NARROW = {"gender": "male", "ages": ["45+"], "city_tiers": [3], "devices": ["android"], "interests": ["luxury"]}


@pytest.fixture(scope="module")
def market() -> Market:
    brand = {
        "name": "brand",
        "category": "beauty",
        "campaigns": [
            camp("broad", {}),
            camp("retarget", {"custom_audience": "clicked"}),
            camp("lookalike", {"lookalike": {"seed": "clicked", "ratio": 0.1}}),
            camp("narrow", NARROW),
            camp("matched", {"interests": ["beauty"]}),
            camp("mismatched", {"interests": ["tech"]}),
            camp("prospect", {"exclude": "clicked"}),
        ],
    }
    scenario = make_scenario(
        {
            "advertisers": [brand, *SMALL["advertisers"][1:]],
            "days": DAYS,
            "population.users": 5000,
            "calendar.events": [{"name": "steady", "start": "2026-01-01", "end": "2027-12-31", "intent": 3.0}],
        }
    )
    m = Market(scenario)
    m.run()
    return m


@pytest.fixture(scope="module")
def totals(market: Market) -> pd.DataFrame:
    d = market.tables()["advertiser_daily"]
    d = d[(d["advertiser"] == "brand") & (d["date"] > d["date"].min())]  # audiences exist from day two
    g = d.groupby("campaign")[["impressions", "clicks", "conversions", "spend", "eligible_auctions"]].sum()
    g["ctr"] = g["clicks"] / g["impressions"]
    g["cvr"] = g["conversions"] / g["clicks"]
    g["qs"] = d.groupby("campaign")["quality_score"].mean()
    g["qs_relevance"] = d.groupby("campaign")["qs_relevance"].mean()
    g["qs_content"] = d.groupby("campaign")["qs_content"].mean()
    return g


def two_prop_z(x1: float, n1: float, x2: float, n2: float) -> float:
    p = (x1 + x2) / (n1 + n2)
    return (x1 / n1 - x2 / n2) / np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))


def test_reachable_audience_is_reported(market: Market) -> None:
    ev = market.tables()["events"]
    sizes = ev[(ev["kind"] == "audience_size") & (ev["advertiser"] == "brand")]
    first = sizes.groupby("campaign")["detail"].first()
    assert first["broad"] == "reachable users: 5000 of 5000"
    narrow_n = int(first["narrow"].split()[2])
    assert 0 < narrow_n < 50
    assert sizes["detail"].str.startswith("audience now").any()  # custom audiences report as they grow
    assert market.audience_sizes[3] == narrow_n


def test_reachable_audiences_count_each_campaigns_targeting(market: Market, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted per distinct targeting over blocks of users: the same as testing every user per campaign."""
    from simulator import kernels

    pop, book = market.population, market.book
    want = np.zeros(book.n_campaigns)
    for c in range(book.n_campaigns):
        ok = book.camp_seg_ok[c][pop.segment]
        if book.camp_interest_bits[c]:
            ok &= (pop.interest_bits & book.camp_interest_bits[c]) != 0
        want[c] = ok.sum()
    assert 0 < want.min() < want.max() == pop.n  # broad and narrow campaigns
    np.testing.assert_array_equal(market.audience_sizes, want)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    np.testing.assert_array_equal(market._reachable_audiences(), want)


def test_lookalike_outperforms_broad(totals: pd.DataFrame) -> None:
    b, lal = totals.loc["broad"], totals.loc["lookalike"]
    assert lal["impressions"] > 1000
    assert two_prop_z(lal["clicks"], lal["impressions"], b["clicks"], b["impressions"]) > 3.0
    assert lal["cvr"] > b["cvr"]
    assert lal["qs_relevance"] > b["qs_relevance"]


def test_retargeting_outperforms_broad(totals: pd.DataFrame) -> None:
    """Users who clicked the brand before come back more readily (ground truth's brand familiarity)."""
    b, rt = totals.loc["broad"], totals.loc["retarget"]
    assert rt["impressions"] > 1000
    assert two_prop_z(rt["clicks"], rt["impressions"], b["clicks"], b["impressions"]) > 3.0
    assert rt["cvr"] > b["cvr"]


def test_over_narrow_audience_under_delivers(totals: pd.DataFrame) -> None:
    n, b = totals.loc["narrow"], totals.loc["broad"]
    assert n["eligible_auctions"] < 0.01 * b["eligible_auctions"]  # fewer auctions
    assert n["spend"] < 0.05 * (DAYS - 1) * 300.0  # far under its budget
    assert n["spend"] < 0.01 * b["spend"]  # while the broad twin, same bid and budget, delivers


def test_targeting_mismatch_gives_low_quality_despite_good_creative(totals: pd.DataFrame) -> None:
    """The seed article: "low quality score despite good creative = targeting mismatch"."""
    good, bad = totals.loc["matched"], totals.loc["mismatched"]
    assert bad["qs_content"] == pytest.approx(good["qs_content"], abs=0.15)  # same creative quality
    assert bad["qs_relevance"] < good["qs_relevance"] - 0.2
    assert bad["qs"] < good["qs"] - 0.5
    assert good["eligible_auctions"] < totals.loc["broad", "eligible_auctions"]  # narrow: fewer auctions...
    assert good["ctr"] > totals.loc["broad", "ctr"]  # ...but more relevant


def test_exclusion_keeps_clickers_out(market: Market) -> None:
    b = market.book
    c = b.camp_name.index("prospect")
    excluded = b.camp_exclusion[c]
    assert excluded is not None and excluded.size > 0
    assert b.camp_audience_mode[c] == -1
    assert np.array_equal(excluded, market.clicked[int(b.camp_adv[c])])


def test_lookalike_by_size_and_without_seed(market: Market) -> None:
    seed = market.clicked[0]
    aud = market.lookalike(seed, 0.05)
    assert aud.size == 250
    no_seed = market.lookalike(seed, 0.05, exclude=seed)
    assert no_seed.size == 250 and not np.isin(no_seed, seed).any()
    aff = market.population.affinity
    beauty = market.book.categories.index("beauty")
    assert aff[aud, beauty].mean() > aff[:, beauty].mean()


def test_an_edit_that_switches_on_a_custom_audience_finds_the_earlier_clickers() -> None:
    """The clickers before the edit are kept, so the audience the edit switches on is not empty."""
    scenario = make_scenario(
        {
            "days": 4,
            "population.users": 3000,
            "advertisers.0.campaigns.0.edits": [{"date": "2026-09-09", "targeting": {"custom_audience": "clicked"}}],
        }
    )
    m = Market(scenario)
    m.run()
    c = 0
    audience = m.book.camp_audience[c]
    assert audience is not None and audience.size > 0
    assert np.array_equal(audience, m.clicked[int(m.book.camp_adv[c])])
    daily = m.tables()["advertiser_daily"]
    name = m.book.advertiser_names[m.book.camp_adv[c]]
    first = daily[(daily["advertiser"] == name) & (daily["campaign"] == m.book.camp_name[c])]
    assert first["impressions"].iloc[-1] > 0  # still served after the edit, to its audience
