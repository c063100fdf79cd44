"""Populations of advertisers drawn from distributions (``[[generate]]``).

Turns each ``[[generate]]`` block into ordinary advertiser specs, drawn from
the run's ``advertisers`` random stream, so a generated market is as
reproducible as a hand-written one.
"""

from __future__ import annotations

import math

import numpy as np

from simulator import scenario as sc


def draw(dist: sc.Dist, rng: np.random.Generator) -> float:
    """One draw from a scenario distribution."""
    if dist.value is not None:
        return float(dist.value)
    if dist.lognormal is not None:
        return float(rng.lognormal(*dist.lognormal))
    if dist.uniform is not None:
        return float(rng.uniform(*dist.uniform))
    if dist.normal is not None:
        return float(rng.normal(*dist.normal))
    assert dist.beta is not None
    return float(rng.beta(*dist.beta))


#: Upper ends for drawn counts (followers, past conversions): the fields have none, but a draw must be finite.
MAX_COUNT = 1e12


def _within(x: float, lo: float, hi: float) -> float:
    """A draw clipped to its field's range: a draw far out in a tail (or one that overflowed to
    infinity) lands on the nearer bound, a NaN (a uniform over an infinite span) on ``lo``."""
    return lo if math.isnan(x) else min(max(x, lo), hi)


def _pick(shares: dict[str, float], rng: np.random.Generator) -> str:
    names = list(shares)
    p = np.array([shares[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def expand_advertisers(scenario: sc.Scenario, rng: np.random.Generator) -> list[sc.Advertiser]:
    """The scenario's advertisers followed by every generated one."""
    out = list(scenario.advertisers)
    events = [e.name or e.preset for e in scenario.calendar.events]
    for gen in scenario.generate:
        for name in sc.generated_names(gen):
            out.append(_one(gen, name, scenario, events, rng))
    return out


def _one(gen: sc.Generate, name: str, scenario: sc.Scenario, events: list[str | None], rng: np.random.Generator) -> sc.Advertiser:
    cats = scenario.categories
    category = gen.categories[int(rng.integers(len(gen.categories)))]
    bid_type = _pick(gen.bid_types, rng)
    amount = draw({"CPM": gen.bid_cpm, "CPC": gen.bid_cpc, "CPE": gen.bid_cpe, "CPA": gen.bid_cpa}[bid_type], rng)
    daily = round(_within(draw(gen.daily_budget, rng), 1.0, sc.MAX_DAILY_BUDGET), 2)
    interests = [category]
    others = [c for c in cats if c != category]
    if gen.target_interests > 1 and others:
        extra = rng.choice(len(others), size=min(len(others), gen.target_interests - 1), replace=False)
        interests += [others[int(i)] for i in extra]
    elif gen.target_interests == 0:
        interests = []
    creative = sc.Creative(
        name="main",
        format="video" if rng.random() < gen.video_share else "image",
        production=_within(draw(gen.production, rng), 0.0, 1.0),
        authenticity=_within(draw(gen.authenticity, rng), 0.0, 1.0),
    )
    rules: list[dict] = []
    if rng.random() < gen.seasonal_share:
        event = gen.seasonal_event or next((e for e in events if e), None)
        if event is not None:
            rules.append({"rule": "seasonal", "event": event})
    return sc.Advertiser.model_validate(
        {
            "name": name,
            "category": category,
            "account": {
                "followers": int(_within(draw(gen.followers, rng), 0.0, MAX_COUNT)),
                "history_conversions": int(_within(draw(gen.history_conversions, rng), 0.0, MAX_COUNT)),
            },
            "strategy": {"pacing": _pick(gen.pacing, rng), "rules": rules},
            "enter_date": gen.enter_date,
            "exit_date": gen.exit_date,
            "campaigns": [
                {
                    "name": "main",
                    "bid": {"type": bid_type, "amount": round(_within(amount, 0.01, sc.MAX_BID), 2)},
                    "budget": {
                        "daily": daily,
                        "total": round(min(daily * gen.campaign_days, sc.MAX_TOTAL_BUDGET), 2) if gen.campaign_days else None,
                    },
                    "targeting": {"interests": interests},
                    "value_per_conversion": round(_within(draw(gen.value_per_conversion, rng), 1.0, sc.MAX_DAILY_BUDGET), 2),
                    "landing_page": _within(draw(gen.landing_page, rng), 0.0, 1.0),
                    "creatives": [creative],
                }
            ],
        }
    )
