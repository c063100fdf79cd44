"""Benchmark scenarios, built as plain dicts and written as TOML files.

Every benchmark market is ``users`` users, ``advertisers`` advertisers drawn by
one ``[[generate]]`` block, and ``days`` days; optionally the Singles' Day
season (``[[calendar.events]] preset = "singles_day"``, start in late October,
a share of advertisers bidding up for it).

Budgets scale with the market: each advertiser's mean daily budget is
``budget_per_user_day x users / advertisers`` yuan, so along every scaling axis
the market stays in the same regime (budgets last roughly the same part of the
day) instead of running dry at a million users or never binding at ten
thousand.  Without this, the advertiser and user curves would measure how soon
budgets run out, not what an auction costs.

Only the public scenario format (DESIGN.md section 8) is used here; nothing
imports the engine.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

#: Interest categories the generated advertisers are drawn from (all defaults of the engine).
CATEGORIES = ["beauty", "fashion", "food", "travel", "home", "parenting", "fitness", "tech", "luxury"]

#: Yuan per user per day that all advertisers together may spend (sets the budgets, see the module doc).
BUDGET_PER_USER_DAY = 0.5

#: An ordinary Monday in September (no season) and the Singles' Day start (late October pre-sale).
PLAIN_START = dt.date(2026, 9, 7)
SINGLES_DAY_START = dt.date(2026, 10, 20)


def market(
    users: int,
    advertisers: int,
    days: int,
    *,
    name: str | None = None,
    seed: int = 1,
    singles_day: bool = False,
    seasonal_share: float = 0.5,
    budget_per_user_day: float = BUDGET_PER_USER_DAY,
    start_date: dt.date | None = None,
    chunks_per_hour: int | None = None,
) -> dict[str, Any]:
    """A benchmark scenario as a dict of the TOML scenario format.

    Parameters
    ----------
    users, advertisers, days : the market's size
    singles_day : run through the Singles' Day season (``preset = "singles_day"``),
        with ``seasonal_share`` of the advertisers reacting to it (a seasonal bid rule)
    budget_per_user_day : yuan per user per day over all advertisers (mean)
    chunks_per_hour : the engine's time-ordered chunks per hour (default: the engine's default)
    """
    sigma = 0.6
    mean_daily = max(50.0, budget_per_user_day * users / advertisers)
    mu = math.log(mean_daily) - sigma**2 / 2
    gen: dict[str, Any] = {
        "count": advertisers,
        "name_prefix": "bench",
        "categories": CATEGORIES,
        "daily_budget": {"lognormal": [round(mu, 4), sigma]},
        "bid_types": {"CPM": 0.3, "CPC": 0.35, "CPE": 0.15, "CPA": 0.2},
        "pacing": {"asap": 0.4, "even": 0.3, "adaptive": 0.3},
        "target_interests": 2,
    }
    data: dict[str, Any] = {
        "name": name or f"bench_u{users}_a{advertisers}_d{days}{'_1111' if singles_day else ''}",
        "description": "benchmark market (benchmarks/scenarios.py)",
        "seed": seed,
        "start_date": start_date or (SINGLES_DAY_START if singles_day else PLAIN_START),
        "days": days,
        "population": {"users": users},
        "traffic": {"sessions_per_user_per_day": 3.0, "ad_slots": 3, "view_factors": [1.0, 0.7, 0.5], "frequency_cap": 4},
        "auction": {"mechanism": "gsp", "reserve_ecpm": 8.0, "min_quality": 3.0},
    }
    if chunks_per_hour is not None:
        data["traffic"]["chunks_per_hour"] = chunks_per_hour
    if singles_day:
        data["calendar"] = {"events": [{"preset": "singles_day"}]}
        gen["seasonal_share"] = seasonal_share
        gen["seasonal_event"] = "singles_day"
    data["generate"] = [gen]
    return data


def singles_day(users: int = 1_000_000, advertisers: int = 200, days: int = 45, **kw: Any) -> dict[str, Any]:
    """The issue's Singles' Day season: from the 20 October pre-sale through the 11.11 peak and after."""
    return market(users, advertisers, days, singles_day=True, name=kw.pop("name", f"bench_singles_day_u{users}_a{advertisers}_d{days}"), **kw)


def expected_sessions(scenario: dict[str, Any]) -> float:
    """Rough number of sessions (auctions) a scenario brings, for planning only (season ~ +25 %)."""
    per_day = scenario["population"]["users"] * scenario["traffic"]["sessions_per_user_per_day"]
    season = 1.25 if "calendar" in scenario else 1.0
    return per_day * scenario["days"] * season


# ---------------------------------------------------------------------- TOML


def to_toml(data: dict[str, Any]) -> str:
    """TOML text of a scenario dict (tables, arrays of tables, inline lists and tables)."""
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines).strip() + "\n"


def write(data: dict[str, Any], path: str | Path) -> Path:
    """Write a scenario dict as a TOML file and return its path."""
    path = Path(path)
    path.write_text(to_toml(data), encoding="utf-8")
    return path


def _table(lines: list[str], path: list[str], table: dict[str, Any]) -> None:
    for k, v in table.items():
        if not isinstance(v, dict) and not _is_table_array(v):
            lines.append(f"{k} = {_value(v)}")
    for k, v in table.items():
        if isinstance(v, dict) and not _inline(v):
            lines.append("")
            lines.append(f"[{'.'.join([*path, k])}]")
            _table(lines, [*path, k], v)
        elif isinstance(v, dict):
            lines.append(f"{k} = {_value(v)}")
    for k, v in table.items():
        if _is_table_array(v):
            for item in v:
                lines.append("")
                lines.append(f"[[{'.'.join([*path, k])}]]")
                _table(lines, [*path, k], item)


def _inline(d: dict[str, Any]) -> bool:
    """Small leaf tables (distributions, shares) are written inline."""
    return all(not isinstance(v, dict) and not _is_table_array(v) for v in d.values()) and len(d) <= 4 and bool(d) and all(
        isinstance(v, (int, float, list)) for v in d.values()
    )


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")
