"""Shared fixtures: small markets built from dicts, fast enough for unit tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from simulator.scenario import Scenario, apply_overrides, parse_scenario

SMALL: dict[str, Any] = {
    "name": "small",
    "seed": 1,
    "start_date": "2026-09-07",
    "days": 2,
    "population": {"users": 5_000},
    "traffic": {"sessions_per_user_per_day": 2.0, "ad_slots": 2, "view_factors": [1.0, 0.6]},
    "advertisers": [
        {
            "name": "alpha",
            "category": "beauty",
            "campaigns": [
                {
                    "name": "c1",
                    "bid": {"type": "CPM", "amount": 40.0},
                    "budget": {"daily": 200.0},
                    "targeting": {"interests": ["beauty"]},
                }
            ],
        },
        {
            "name": "beta",
            "category": "beauty",
            "campaigns": [
                {"name": "c1", "bid": {"type": "CPC", "amount": 1.5}, "budget": {"daily": 150.0}},
            ],
        },
        {
            "name": "gamma",
            "category": "food",
            "campaigns": [
                {"name": "c1", "bid": {"type": "CPE", "amount": 2.0}, "budget": {"daily": 100.0}},
            ],
        },
    ],
}


def make_scenario(overrides: dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> Scenario:
    """A validated small scenario; ``overrides`` maps dotted paths to values."""
    data = copy.deepcopy(base if base is not None else SMALL)
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_scenario(data, "<test>")


@pytest.fixture
def small_scenario() -> Scenario:
    return make_scenario()
