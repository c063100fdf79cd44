"""Review and approval: delays shrink with QS and grow with compliance risk; rejections grow with
risk; a rejected creative can be fixed and resubmitted.  All in ``events``."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from simulator import Market
from tests.conftest import SMALL, make_scenario

N = 40  # creatives per campaign: exponential delays, so a mean's se is mean / sqrt(40) ~ 16 %


def camp(name: str, risk: float, quality: float | None = None, resubmit: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "bid": {"type": "CPM", "amount": 40.0},
        "budget": {"daily": 50.0},
        "ab_test": "split",
        "resubmit_rejected": resubmit,
        "creatives": [{"name": f"{name}_{i}", "compliance_risk": risk, "start_date": "2026-09-08"} for i in range(N)],
    }
    if quality is not None:
        out["initial_quality"] = quality
    return out


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    brand = {
        "name": "brand",
        "category": "beauty",
        "campaigns": [
            camp("safe", 0.0),
            camp("risky", 0.9),
            camp("risky_once", 0.9, resubmit=False),
            camp("high_qs", 0.3, quality=9.0),
            camp("low_qs", 0.3, quality=3.5),
            {"name": "day_one", "bid": {"type": "CPM", "amount": 40.0}, "budget": {"daily": 50.0}},
        ],
    }
    m = Market(make_scenario({"advertisers": [brand, *SMALL["advertisers"][1:]], "days": 4, "population.users": 500}))
    m.run()
    ev = m.tables()["events"]
    return ev[ev["advertiser"] == "brand"]


def delays(events: pd.DataFrame, campaign: str) -> np.ndarray:
    ok = events[(events["campaign"] == campaign) & (events["kind"] == "creative_approved")]
    return np.array([int(re.search(r"approved after (\d+) h", d).group(1)) for d in ok["detail"]])


def count(events: pd.DataFrame, campaign: str, kind: str) -> int:
    return int(((events["campaign"] == campaign) & (events["kind"] == kind)).sum())


def test_review_starts_when_the_creative_does(events: pd.DataFrame) -> None:
    reviewed = events[events["kind"].str.startswith("creative_")]
    assert reviewed["date"].min() == pd.Timestamp("2026-09-08")
    assert count(events, "day_one", "creative_approved") == 0  # running on day one: approved without review


def test_delay_grows_with_risk_and_shrinks_with_quality(events: pd.DataFrame) -> None:
    safe, risky = delays(events, "safe"), delays(events, "risky")
    assert len(safe) >= 0.9 * N
    assert safe.mean() < 0.5 * risky.mean()  # expected ratio (4 + 40 x 0.9) / 4 = 10 at equal QS
    high, low = delays(events, "high_qs"), delays(events, "low_qs")
    # Expected means 19.6 h (QS 9) vs 37 h (QS 3.5); each mean's se is ~16 %.
    assert high.mean() < low.mean()


def test_rejections_grow_with_risk_and_resubmission_is_a_choice(events: pd.DataFrame) -> None:
    # p(reject) = 0.02 at risk 0, 0.53 at risk 0.9: 0.8 vs 21 expected of 40.
    assert count(events, "safe", "creative_rejected") <= 4
    assert count(events, "risky", "creative_rejected") >= 10
    assert count(events, "risky", "creative_resubmitted") == count(events, "risky", "creative_rejected")
    once = count(events, "risky_once", "creative_rejected")
    assert once >= 10 and count(events, "risky_once", "creative_resubmitted") == 0
    # Fixed and resubmitted creatives come back: more of "risky" than of "risky_once" end approved.
    assert count(events, "risky", "creative_approved") > count(events, "risky_once", "creative_approved")
