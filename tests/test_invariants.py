"""Money and count invariants of the engine under random markets (hypothesis).

Random small markets (1-8 advertisers, every bid type, tiny to huge budgets and
bids, every mechanism and platform profile, light to extreme traffic) run end to
end through ``simulator.run``; every table must satisfy:

- each day the platform's revenue equals the advertisers' spend in micro-yuan,
  and the tables agree to the cent;
- no campaign bills more in a day than its daily budget x the profile's daily
  factor (xhs 1.0, google 2.0, meta 1.75), nor more than its total budget, nor
  more in a week (meta, 7x) or calendar month (google, 30.4x) than its cap;
- a campaign never pays more than its bid per billing event (checked as
  cpm <= bid, cpc <= bid, cpe <= bid where no multiplier applies);
- no NaN or infinity in counts and money; a rate is finite or NaN with a zero base;
- impressions >= clicks >= conversions, clicks >= bounces, filled slots <= slots.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import run
from simulator.scenario import parse_scenario

DAILY_FACTOR = {"xhs": 1.0, "google": 2.0, "meta": 1.75}
COUNTS = ["impressions", "clicks", "likes", "comments", "saves", "shares", "follows", "engagements",
          "video_completions", "conversions", "bounces"]  # fmt: skip
MONEY = ["spend", "order_value", "daily_budget", "bid", "refund", "unbilled_spend"]
#: rate column -> the column whose zero makes it undefined (NaN by design)
RATES = {
    "ctr": "impressions", "engagement_rate": "impressions", "save_rate": "impressions", "cpm": "impressions",
    "avg_position": "impressions", "bounce_rate": "clicks", "cpc": "clicks", "conversion_rate": "clicks",
    "cpe": "engagements", "cpa": "conversions", "roas": "spend",
}  # fmt: skip
BID_RANGE = {"CPM": (0.5, 2000.0), "CPC": (0.01, 200.0), "CPE": (0.01, 200.0), "CPA": (0.5, 5000.0)}
EPS = 1e-6


def log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(math.log(lo), math.log(hi)).map(lambda x: round(math.exp(x), 2))


@st.composite
def campaigns(draw: st.DrawFn, name: str) -> dict[str, Any]:
    bid_type = draw(st.sampled_from(["CPM", "CPC", "CPE", "CPA"]))
    daily = max(0.01, draw(log_uniform(0.01, 1e6)))
    camp: dict[str, Any] = {
        "name": name,
        "bid": {"type": bid_type, "amount": max(0.01, draw(log_uniform(*BID_RANGE[bid_type])))},
        "budget": {"daily": daily},
        "value_per_conversion": draw(st.sampled_from([0.0, 50.0, 300.0])),
    }
    if draw(st.booleans()):
        camp["budget"]["total"] = round(daily * draw(st.sampled_from([1.0, 1.5, 3.0, 100.0])), 2)
    if draw(st.booleans()):
        camp["creatives"] = [{"name": "a", "format": "video"}, {"name": "b", "production": 0.9}]
    if draw(st.integers(0, 3)) == 0:
        camp["targeting"] = {"gender": "female", "interests": ["beauty"]}
    return camp


RULES = [
    {"rule": "daypart", "hours": [19, 23], "multiplier": 1.5},
    {"rule": "device", "ios": 1.3, "android": 0.8},
    {"rule": "target_cpa", "target": 40.0},
    {"rule": "impression_share", "target": 0.5},
    {"rule": "conservative_start", "fraction": 0.5},
    {"rule": "budget_shift", "fraction": 0.3},
    {"rule": "weekday", "days": ["sat", "sun"], "multiplier": 1.4},
]


@st.composite
def markets(draw: st.DrawFn, days: tuple[int, int] = (1, 2), platforms: list[str] | None = None) -> dict[str, Any]:
    n_adv = draw(st.integers(1, 8))
    advertisers = []
    for i in range(n_adv):
        n_camp = draw(st.integers(1, 2))
        adv: dict[str, Any] = {
            "name": f"adv{i}",
            "category": draw(st.sampled_from(["beauty", "food", "tech"])),
            "account": {"history_conversions": draw(st.sampled_from([0, 100]))},
            "campaigns": [draw(campaigns(f"c{j}")) for j in range(n_camp)],
        }
        pacing = draw(st.sampled_from(["asap", "even", "adaptive", "pid"]))
        rules = draw(st.lists(st.sampled_from(RULES), max_size=2, unique_by=lambda r: r["rule"]))
        adv["strategy"] = {"pacing": pacing, "rules": rules}
        advertisers.append(adv)
    slots = draw(st.integers(1, 4))
    return {
        "name": "prop",
        "seed": draw(st.integers(0, 2**32)),
        "start_date": draw(st.dates(dt.date(2026, 1, 1), dt.date(2026, 12, 31))).isoformat(),
        "days": draw(st.integers(*days)),
        "platform": draw(st.sampled_from(platforms or ["xhs", "google", "meta"])),
        "population": {"users": draw(st.sampled_from([200, 600, 1500]))},
        "traffic": {
            "sessions_per_user_per_day": draw(st.sampled_from([0.2, 2.0, 8.0, 30.0])),
            "ad_slots": slots,
            "view_factors": [round(1.0 - 0.2 * k, 2) for k in range(slots)],
            "frequency_cap": draw(st.sampled_from([0, 1, 4])),
            "chunks_per_hour": draw(st.sampled_from([1, 2])),
        },
        "auction": {
            "mechanism": draw(st.sampled_from(["gsp", "vcg", "first_price"])),
            "reserve_ecpm": draw(st.sampled_from([0.0, 8.0, 50.0])),
            "cpa_min_conversions": draw(st.sampled_from([0, 50])),
        },
        "quality": {"dynamic": draw(st.booleans())},
        "advertisers": advertisers,
    }


def check_invariants(data: dict[str, Any], result: Any) -> None:
    daily: pd.DataFrame = result.advertiser_daily
    market: pd.DataFrame = result.market_daily
    hourly: pd.DataFrame = result.advertiser_hourly
    platform = data["platform"]
    # --- spend = revenue, to the micro-yuan each day and to the cent overall
    assert (market["revenue_micro"] == market["spend_micro"]).all(), market[["date", "revenue_micro", "spend_micro"]]
    assert abs(daily["spend"].sum() - market["revenue"].sum()) < 0.005
    by_day = daily.groupby("date")["spend"].sum()
    assert np.allclose(by_day.to_numpy(), market.set_index("date")["revenue"].reindex(by_day.index).to_numpy(), atol=0.005)
    # --- no NaN or infinity in counts and money
    for col in COUNTS + MONEY:
        values = daily[col].to_numpy(dtype=float)
        assert np.isfinite(values).all(), f"{col} has NaN/inf"
        assert (values >= -EPS).all(), f"{col} negative"
    for col in ("sessions", "ad_slots", "filled_slots", "revenue"):
        assert np.isfinite(market[col].to_numpy(dtype=float)).all(), col
    for col in ("impressions", "clicks", "engagements", "conversions", "spend"):
        assert np.isfinite(hourly[col].to_numpy(dtype=float)).all(), f"hourly {col}"
    # --- rates: finite, or NaN exactly where their base is zero
    for col, base in RATES.items():
        v = daily[col].to_numpy(dtype=float)
        zero = daily[base].to_numpy(dtype=float) == 0
        assert not np.isinf(v).any(), f"{col} infinite"
        assert (np.isnan(v) <= zero).all(), f"{col} NaN with a non-zero {base}"
        assert (~np.isnan(v) | zero).all()
    qs = daily["quality_score"].to_numpy(dtype=float)
    assert ((qs >= 1 - EPS) & (qs <= 10 + EPS) | np.isnan(qs)).all()
    # --- counts consistent
    assert (daily["impressions"] >= daily["clicks"]).all()
    assert (daily["clicks"] >= daily["conversions"]).all()
    assert (daily["clicks"] >= daily["bounces"]).all()
    assert (market["filled_slots"] <= market["ad_slots"]).all()
    assert (market.set_index("date")["filled_slots"] == daily.groupby("date")["impressions"].sum()).all()
    h = hourly.groupby(["date", "advertiser", "campaign"])[["impressions", "clicks", "conversions"]].sum()
    d = daily.set_index(["date", "advertiser", "campaign"])[["impressions", "clicks", "conversions"]]
    assert (h.reindex(d.index).fillna(0).astype(np.int64) == d).all().all()
    # --- budgets: daily cap of the profile, total, week (meta) and month (google)
    cap = daily["daily_budget"] * DAILY_FACTOR[platform] + EPS
    over = daily[daily["spend"] > cap]
    assert over.empty, over[["date", "advertiser", "campaign", "spend", "daily_budget"]]
    specs = {(a["name"], c["name"]): c for a in data["advertisers"] for c in a["campaigns"]}
    spent = daily.groupby(["advertiser", "campaign"])["spend"].sum()
    for key, total in spent.items():
        limit = specs[key]["budget"].get("total")
        if limit is not None:
            assert total <= limit + EPS, f"{key} spent {total} of a total budget {limit}"
    dates = pd.to_datetime(daily["date"])
    if platform == "meta":
        period = dates.dt.to_period("W-SUN")
        factor = 7.0
    elif platform == "google":
        period = dates.dt.to_period("M")
        factor = 30.4
    else:
        period = None
    if period is not None:
        g = daily.assign(period=period).groupby(["advertiser", "campaign", "period"])
        sums = g["spend"].sum()
        caps = g["daily_budget"].max() * factor + EPS
        assert (sums <= caps).all(), sums[sums > caps]
    # --- price <= bid where no multiplier can raise it (no rules, asap or even pacing)
    clean = {
        a["name"]
        for a in data["advertisers"]
        if not a.get("strategy", {}).get("rules") and a.get("strategy", {}).get("pacing", "asap") in ("asap", "even")
    }
    rows = daily[daily["advertiser"].isin(clean) & (daily["bid_multiplier"] == 1.0)]
    for bid_type, col in (("CPM", "cpm"), ("CPC", "cpc"), ("CPE", "cpe")):
        r = rows[(rows["bid_type"] == bid_type) & rows[col].notna()]
        bad = r[r[col] > r["bid"] + EPS]
        assert bad.empty, bad[["date", "advertiser", "campaign", col, "bid"]]


def run_and_check(data: dict[str, Any]) -> None:
    spec = parse_scenario(data, "<property>")
    check_invariants(data, run(spec))


SETTINGS = {"deadline": None, "suppress_health_check": list(HealthCheck), "database": None}


@settings(max_examples=int(os.environ.get("ADSIM_PROPERTY_EXAMPLES", 30)), **SETTINGS)
@given(markets())
def test_money_and_counts_hold_in_random_markets(data: dict[str, Any]):
    run_and_check(data)


def heavy(platform: str, start: str, days: int, daily: float) -> dict[str, Any]:
    """Plenty of traffic for cheap budgets: every cap of the profile binds."""
    return {
        "name": f"binding_{platform}",
        "seed": 5,
        "start_date": start,
        "days": days,
        "platform": platform,
        "population": {"users": 300},
        "traffic": {"sessions_per_user_per_day": 10.0, "ad_slots": 2, "view_factors": [1.0, 0.7], "chunks_per_hour": 1},
        "advertisers": [
            {
                "name": f"a{i}",
                "category": "beauty",
                "strategy": {"pacing": "asap"},
                "campaigns": [{"name": "c", "bid": {"type": bid, "amount": amount}, "budget": {"daily": daily}}],
            }
            for i, (bid, amount) in enumerate([("CPM", 80.0), ("CPC", 3.0), ("CPE", 4.0)])
        ],
    }


@pytest.mark.slow
def test_meta_daily_and_weekly_caps_bind_and_hold():
    data = heavy("meta", "2026-09-07", 7, 2.0)  # Monday to Sunday
    result = run(parse_scenario(data, "<meta>"))
    check_invariants(data, result)
    daily = result.advertiser_daily
    assert daily.groupby("advertiser")["spend"].sum()["a0"] > 2.0 * 7 * 0.97  # the week's 7x was reached
    assert (daily["spend"] > 2.0 + EPS).any()  # some day went over the daily budget (up to 1.75x)


@pytest.mark.slow
def test_google_monthly_cap_binds_and_holds():
    data = heavy("google", "2026-06-01", 17, 1.0)  # 2x a day reaches the month's 30.4x on day 16
    result = run(parse_scenario(data, "<google>"))
    check_invariants(data, result)
    total = result.advertiser_daily.groupby("advertiser")["spend"].sum()
    assert total["a0"] > 30.4 * 0.97, total  # the CPM campaign (billed per impression) reaches the month's cap
