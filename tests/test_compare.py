"""Comparisons: Student-t quantiles, paired and Welch intervals, and two strategies on common seeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from simulator.batch import batch, replicate_seeds
from simulator.cli import app
from simulator.compare import CompareError, compare, compare_tables, paired_interval, t_quantile, welch_interval
from simulator.scenario import scenario_to_toml
from tests.conftest import make_scenario


@pytest.mark.parametrize(
    ("df", "q"),
    [(1, 12.706204736174), (2, 4.302652729749), (4, 2.776445105198), (10, 2.228138851986), (30, 2.042272456301), (2.5, 3.574654842004)],
)
def test_t_quantile_matches_the_tables(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-9)
    assert t_quantile(0.025, df) == pytest.approx(-q, abs=1e-9)


def test_paired_interval_by_hand():
    out = paired_interval(np.array([1.0, 2.0, 3.0, 6.0]))
    se = math.sqrt(14 / 3) / 2  # sd of (1, 2, 3, 6) is sqrt(14/3); n = 4
    assert out["mean_diff"] == 3.0 and out["se"] == pytest.approx(se)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((3 - 3.182446305284 * se, 3 + 3.182446305284 * se))


def test_welch_interval_by_hand():
    xa, xb = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0, 8.0])
    out = welch_interval(xa, xb)
    va, vb = 1.0 / 3, (20 / 3) / 4  # variance / n of each side
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    assert out["mean_diff"] == 3.0 and out["se"] == pytest.approx(math.sqrt(va + vb))
    assert out["ci_high"] - 3.0 == pytest.approx(t_quantile(0.975, df) * math.sqrt(va + vb))
    assert 3.0 < df < 5.0


def test_compare_tables_pairs_shared_seeds_only_and_handles_missing_advertisers():
    def kpis(spend: dict[str, float]) -> pd.DataFrame:
        return pd.DataFrame({"spend": spend}).rename_axis("advertiser")

    a = {1: kpis({"x": 10.0, "y": 5.0}), 2: kpis({"x": 12.0, "y": 7.0}), 3: kpis({"x": 11.0, "y": 6.0})}
    b = {1: kpis({"x": 13.0}), 2: kpis({"x": 13.0}), 9: kpis({"x": 100.0})}
    table = compare_tables(a, b, ["spend"]).set_index("advertiser")
    x = table.loc["x"]
    assert (x.method, x.n_pairs, x.n_a, x.n_b) == ("paired", 2, 3, 3)
    assert x.mean_diff == 2.0  # (13 - 10 + 13 - 12) / 2, seed 3 and seed 9 unpaired
    assert x.b_mean - x.a_mean == pytest.approx(42.0 - 11.0)
    assert (x.ci_low, x.ci_high) == pytest.approx((2.0 - 12.706204736174, 2.0 + 12.706204736174))  # sd 1.414, se 1
    y = table.loc["y"]
    assert y.n_b == 0 and y.n_pairs == 0 and math.isnan(y.mean_diff)


@pytest.fixture(scope="module")
def strategies(tmp_path_factory) -> Path:
    """Two strategies for advertiser alpha (CPM bid 30 vs 60), three common replicate seeds."""
    tmp = tmp_path_factory.mktemp("compare")
    paths = []
    for name, bid in (("low", 30.0), ("high", 60.0)):
        path = tmp / f"{name}.toml"
        path.write_text(scenario_to_toml(make_scenario({"name": name, "days": 1, "advertisers.0.campaigns.0.bid.amount": bid})))
        paths.append(path)
    summary = batch(paths, replicates=3, workers=0, out=tmp / "out", progress=False)
    assert (summary["status"] == "complete").all()
    return tmp / "out"


def test_paired_differences_match_a_direct_computation(strategies):
    table = compare(strategies / "scenario=low", strategies / "scenario=high").set_index(["advertiser", "kpi"])
    seeds = replicate_seeds(1, 3)

    def totals(side: str, seed: int) -> pd.DataFrame:
        daily = pd.read_parquet(strategies / f"scenario={side}/sweep=base/seed={seed}/advertiser_daily.parquet")
        return daily.groupby("advertiser")[["spend", "clicks", "conversions"]].sum()

    t2 = 4.302652729749  # t(0.975, 2 df)
    for adv in ("alpha", "beta", "gamma"):
        for kpi in ("spend", "clicks", "cpa"):
            d = []
            for s in seeds:
                lo, hi = totals("low", s).loc[adv], totals("high", s).loc[adv]
                value = (lambda r: r.spend / r.conversions if r.conversions else np.nan) if kpi == "cpa" else (lambda r, k=kpi: r[k])
                d.append(value(hi) - value(lo))
            d = np.array(d, dtype=float)
            d = d[~np.isnan(d)]  # a seed where a side had no conversions has no CPA: no pair
            row = table.loc[(adv, kpi)]
            if d.size < 2:  # (a CPA with conversions on one seed's two sides only) no interval from one pair
                assert row.n_pairs == d.size and math.isnan(row.ci_low) and math.isnan(row.ci_high)
                assert row.mean_diff == pytest.approx(d.mean(), rel=1e-9) if d.size else math.isnan(row.mean_diff)
                continue
            t_quantile = {2: 12.706204736174707, 3: t2}[d.size]  # t(0.975, n - 1 df)
            half = t_quantile * d.std(ddof=1) / math.sqrt(d.size)
            assert row.method == "paired" and row.n_pairs == d.size
            assert row.mean_diff == pytest.approx(d.mean(), rel=1e-9, abs=1e-9)
            assert (row.ci_low, row.ci_high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-9, abs=1e-9)
    # Doubling alpha's CPM bid buys it more impressions on every seed.
    assert table.loc[("alpha", "impressions"), "ci_low"] > 0


def test_compare_command(strategies, tmp_path):
    runner = CliRunner()
    csv = tmp_path / "cmp.csv"
    result = runner.invoke(app, ["compare", str(strategies / "scenario=low"), str(strategies / "scenario=high"), "--csv", str(csv)])
    assert result.exit_code == 0, result.output
    assert "paired over 3 shared seeds" in result.stdout
    saved = pd.read_csv(csv)
    assert len(saved) == 4 * 12  # (all) + 3 advertisers, 12 KPIs
    alpha = saved[(saved.advertiser == "alpha") & (saved.kpi == "spend")].iloc[0]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("alpha") and " spend " in ln)
    assert f"{alpha.ci_low:,.4g}" in line and f"{alpha.ci_high:,.4g}" in line
    # The batch root holds two scenarios: which side is meant is ambiguous.
    result = runner.invoke(app, ["compare", str(strategies), str(strategies / "scenario=high")])
    assert result.exit_code == 2
    assert "holds runs of 2 scenarios or sweep points" in result.stderr
    with pytest.raises(CompareError):
        compare(strategies / "scenario=low", strategies / "nowhere")
