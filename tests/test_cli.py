"""The command line and the run folder contract (DESIGN.md section 8)."""

import json

import pandas as pd
from typer.testing import CliRunner

from simulator.cli import app
from simulator.ledger import ADVERTISER_DAILY_COLUMNS
from simulator.scenario import load_scenario, scenario_to_toml
from tests.conftest import make_scenario

runner = CliRunner()


def _write(tmp_path, scenario):
    path = tmp_path / "small.toml"
    path.write_text(scenario_to_toml(scenario), encoding="utf-8")
    return path


def test_run_writes_the_whole_run_folder_and_prints_kpis(tmp_path):
    path = _write(tmp_path, make_scenario({"days": 2}))
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--quiet", "--days", "1"])
    assert res.exit_code == 0, res.output
    assert "advertiser" in res.output and "alpha" in res.output
    for name in ("scenario.toml", "manifest.json", "advertiser_daily.parquet", "advertiser_hourly.parquet",
                 "market_daily.parquet", "events.parquet", "report.png"):  # fmt: skip
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["seed"] == 1 and manifest["days"] == 1
    assert manifest["seed_entropy"] == "1"
    daily = pd.read_parquet(out / "advertiser_daily.parquet")
    assert list(daily.columns[: len(ADVERTISER_DAILY_COLUMNS)]) == ADVERTISER_DAILY_COLUMNS
    hourly = pd.read_parquet(out / "advertiser_hourly.parquet")
    assert {"date", "hour", "advertiser", "campaign", "impressions", "clicks", "engagements", "conversions", "spend"} <= set(hourly.columns)
    market = pd.read_parquet(out / "market_daily.parquet")
    assert {"date", "sessions", "ad_slots", "filled_slots", "revenue", "avg_cpm", "avg_quality_score", "active_advertisers"} <= set(market.columns)
    events = pd.read_parquet(out / "events.parquet")
    assert list(events.columns) == ["date", "hour", "advertiser", "campaign", "kind", "detail"]
    # The resolved scenario holds every default and reloads to the same scenario (with --days applied).
    resolved = load_scenario(out / "scenario.toml")
    assert resolved.days == 1
    assert resolved.model_dump() == make_scenario({"days": 1}).model_dump()
    assert "frequency_cap" in (out / "scenario.toml").read_text()


def test_run_refuses_an_existing_folder(tmp_path):
    path = _write(tmp_path, make_scenario({"days": 1}))
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--quiet"])
    assert res.exit_code == 2
    assert "already exists" in res.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_bad_scenario_exits_2_with_one_line_per_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "bad"\ndays = 0\n[traffic]\nad_slots = 2\nview_factors = [1.0]\n'
        '[[advertisers]]\nname = "a"\ncategory = "beauty"\ndaily_budjet = 3\n'
        '[[advertisers.campaigns]]\nname = "c"\nbid = { type = "CPC", amount = 1.0 }\nbudget = { daily = -5.0 }\n'
    )
    res = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "never")])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    text = "\n".join(lines)
    assert "days: must be >= 1" in text
    assert "advertisers.0.campaigns.0.budget.daily: must be > 0" in text
    assert "daily_budjet: unknown field" in text
    assert "view_factors" in text
    assert "Traceback" not in res.output
    assert not (tmp_path / "never").exists()


def test_validate_and_schema(tmp_path):
    path = _write(tmp_path, make_scenario())
    res = runner.invoke(app, ["validate", str(path)])
    assert res.exit_code == 0 and ": ok" in res.output
    res = runner.invoke(app, ["schema"])
    schema = json.loads(res.output)
    assert {"population", "traffic", "auction", "quality", "advertisers", "generate"} <= set(schema["properties"])


def test_generated_advertisers_are_drawn_reproducibly():
    scenario = make_scenario(
        {"generate": [{"count": 5, "categories": ["food", "travel"], "daily_budget": {"lognormal": [6.0, 0.5]}}]}
    )
    import numpy as np

    from simulator.generate import expand_advertisers

    a = expand_advertisers(scenario, np.random.default_rng(3))
    b = expand_advertisers(scenario, np.random.default_rng(3))
    assert [x.model_dump() for x in a] == [x.model_dump() for x in b]
    gen = a[3:]
    assert [x.name for x in gen] == [f"gen_{i:03d}" for i in range(1, 6)]
    assert {x.category for x in gen} <= {"food", "travel"}
    assert len({x.campaigns[0].budget.daily for x in gen}) == 5


def test_generated_draws_far_out_land_on_the_fields_bounds_and_run():
    """Distributions the schema accepts but whose draws leave a field's range (found by the fuzzer): a
    budget of 1e308, a uniform over [-1e300, 1e300], a lognormal that overflows, a spread of -0.0.
    Each draw is clipped to its field's range, and the market runs with its money adding up."""
    import numpy as np

    from simulator import run
    from simulator import scenario as sc
    from simulator.generate import expand_advertisers

    scenario = make_scenario(
        {
            "days": 1,
            "generate": [
                {
                    "count": 6,
                    "categories": ["food"],
                    "daily_budget": 1e308,
                    "campaign_days": 1e300,
                    "bid_types": {"CPC": 1.0},
                    "bid_cpc": {"uniform": [-1e300, 1e300]},
                    "followers": {"lognormal": [1000.0, 1.0]},
                    "history_conversions": {"normal": [5.0, -0.0]},
                    "value_per_conversion": {"lognormal": [5.0, -0.0]},
                    "production": {"normal": [0.5, 1e308]},
                }
            ],
        }
    )
    gen = expand_advertisers(scenario, np.random.default_rng(3))[-6:]
    for adv in gen:
        camp = adv.campaigns[0]
        assert camp.budget.daily == sc.MAX_DAILY_BUDGET and camp.budget.total == sc.MAX_TOTAL_BUDGET
        assert 0.01 <= camp.bid.amount <= sc.MAX_BID
        assert adv.account.followers == 10**12 and adv.account.history_conversions == 5
        assert camp.value_per_conversion == round(float(np.exp(5.0)), 2)
        assert camp.creatives[0].production in (0.0, 1.0)
    result = run(scenario)
    md = result.market_daily
    assert (md["revenue_micro"] == md["spend_micro"]).all() and result.advertiser_daily["impressions"].sum() > 0
