"""Seasons end to end: Singles' Day lifts traffic, conversion rate and prices, and the
price rise comes from advertisers competing, not from the calendar scaling a price."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from simulator import run
from simulator.batch import single_threaded
from simulator.scenario import apply_overrides, parse_scenario

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "singles_day_beauty.toml"
EARLY = slice(pd.Timestamp("2026-10-06"), pd.Timestamp("2026-10-12"))
PEAK = pd.Timestamp("2026-11-11")


def small_season() -> dict[str, Any]:
    """The shipped Singles' Day scenario, smaller and stopped at the peak (6 Oct - 11 Nov)."""
    data = tomllib.loads(SCENARIO.read_text(encoding="utf-8"))
    data.pop("sweep", None)
    return apply_overrides(
        data,
        {"population.users": 2_000, "days": 37, "generate.0.count": 12, "generate.1.count": 6},
    )


def without_competition(data: dict[str, Any]) -> dict[str, Any]:
    """Same calendar and market, but nobody reacts to the season and nobody enters for it."""
    out = apply_overrides(data, {"generate.0.seasonal_share": 0.0})
    out["generate"] = [g for g in out["generate"] if g.get("enter_date") is None]
    for adv in out["advertisers"]:
        adv["strategy"]["rules"] = [r for r in adv["strategy"].get("rules", []) if r["rule"] != "seasonal"]
    return out


def peak_vs_early(data: dict[str, Any]) -> dict[str, float]:
    r = run(parse_scenario(data, "<season>"))
    d = r.advertiser_daily.groupby("date")[["impressions", "clicks", "conversions", "spend"]].sum()
    cpm = d["spend"] * 1000 / d["impressions"]
    cvr = d["conversions"] / d["clicks"]
    sessions = r.market_daily.set_index("date")["sessions"]
    return {
        "sessions": sessions.loc[PEAK] / sessions.loc[EARLY].mean(),
        "cpm": cpm.loc[PEAK] / cpm.loc[EARLY].mean(),
        "cvr": cvr.loc[PEAK] / cvr.loc[EARLY].mean(),
        "active": r.market_daily.set_index("date")["active_advertisers"].loc[PEAK],
    }


@pytest.fixture(scope="module")
def season() -> dict[str, dict[str, float]]:
    data = small_season()
    with single_threaded():
        return {"with": peak_vs_early(data), "without": peak_vs_early(without_competition(data))}


@pytest.mark.slow
def test_singles_day_peak_is_busier_dearer_and_converts_better(season):
    s = season["with"]
    assert s["sessions"] > 1.6  # the preset's 1.9 x traffic, less the weekday mix
    assert s["cvr"] > 1.5  # purchase intent 2.5 x on the day
    assert s["cpm"] > 1.25  # advertisers bid up and the entrants are in


@pytest.mark.slow
def test_removing_competition_removes_the_cpm_rise(season):
    with_, without = season["with"], season["without"]
    # Traffic and intent are the calendar's and stay; fewer advertisers are active on the day.
    assert without["sessions"] == pytest.approx(with_["sessions"], rel=0.02)
    assert without["cvr"] > 1.3
    assert without["active"] < with_["active"]
    # The price rise is gone: more sessions for the same budgets and bids do not lift the CPM.
    assert without["cpm"] < 1.05
    assert with_["cpm"] - without["cpm"] > 0.25
