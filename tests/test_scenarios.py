"""Every file in scenarios/ validates, says what it answers, and runs a few days at small scale."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import pytest

from simulator import run
from simulator.batch import single_threaded
from simulator.scenario import apply_overrides, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
FILES = sorted(SCENARIOS.glob("*.toml"))


def test_the_library_is_there():
    names = {p.stem for p in FILES}
    assert {
        "baseline",
        "singles_day_beauty",
        "chinese_new_year",
        "quality_vs_bid",
        "dayparting",
        "pacing_comparison",
        "playbook_vs_naive",
        "scaling_lookalike_vs_bid",
        "creative_ab",
        "review_delays",
        "platform_profiles",
    } <= names


def test_readme_table_has_a_row_per_scenario():
    readme = (SCENARIOS / "README.md").read_text(encoding="utf-8")
    body = readme.split("<!-- BEGIN scenario-table -->")[1].split("<!-- END scenario-table -->")[0]
    for p in FILES:
        assert f"[`{p.stem}`]({p.name})" in body, f"{p.name} has no row in scenarios/README.md"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_validates_and_describes_itself(path):
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert len(scenario.description) > 80
    assert "Answers" in scenario.description
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    # Every point of a sweep grid is a valid scenario too.
    sweep = data.get("sweep", {})
    for values in itertools.product(*sweep.values()):
        parse_scenario(apply_overrides(data, dict(zip(sweep, values, strict=True))), str(path))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_runs_a_few_days_small(path):
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    scenario = parse_scenario(apply_overrides(data, {"population.users": 3_000, "days": 2}), str(path))
    with single_threaded():
        result = run(scenario)
    market = result.market_daily
    assert len(market) == 2
    assert market["sessions"].gt(0).all()
    assert result.advertiser_daily["impressions"].sum() > 0
    assert market["revenue"].sum() == pytest.approx(result.advertiser_daily["spend"].sum())
