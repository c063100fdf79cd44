"""End-to-end properties of the market engine (DESIGN.md sections 3-5)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import Market, run
from simulator.book import MICRO, PROFILES
from tests.conftest import make_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def test_same_seed_same_tables_other_seed_different():
    a = run(make_scenario({"days": 2}))
    b = run(make_scenario({"days": 2}))
    c = run(make_scenario({"days": 2, "seed": 2}))
    for name in ("advertiser_daily", "advertiser_hourly", "market_daily", "events", "creative_daily"):
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    assert not a.advertiser_daily["impressions"].equals(c.advertiser_daily["impressions"])


def test_numpy_and_numba_paths_give_identical_tables(monkeypatch):
    from simulator import kernels

    fast = run(make_scenario({"days": 1}))
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    slow = run(make_scenario({"days": 1}))
    pd.testing.assert_frame_equal(fast.advertiser_daily, slow.advertiser_daily)
    pd.testing.assert_frame_equal(fast.advertiser_hourly, slow.advertiser_hourly)


def _elasticity_market(qs: float) -> dict:
    # Two CPM ads shown to everyone: "top" always ranks first (bid x QS far above "runner");
    # its price per impression is the runner's rank / (QS/10), so CPM ~ 1/QS.
    return {
        "name": "elasticity",
        "seed": 5,
        "days": 1,
        "population": {"users": 3000},
        "traffic": {"ad_slots": 2, "view_factors": [1.0, 0.5], "frequency_cap": 0},
        "auction": {"min_quality": 1.0, "reserve_ecpm": 1.0},
        "quality": {"dynamic": False},
        "advertisers": [
            {
                "name": "top",
                "category": "beauty",
                "campaigns": [
                    {"name": "c", "bid": {"type": "CPM", "amount": 400.0}, "budget": {"daily": 1e6}, "initial_quality": qs}
                ],
            },
            {
                "name": "runner",
                "category": "beauty",
                "campaigns": [
                    {"name": "c", "bid": {"type": "CPM", "amount": 30.0}, "budget": {"daily": 1e6}, "initial_quality": 5.0}
                ],
            },
        ],
    }


def test_one_more_quality_point_lowers_the_price_paid_by_one_over_qs_plus_one():
    cpm = {}
    for q in range(2, 11):
        r = run(make_scenario(base=_elasticity_market(float(q))))
        top = r.advertiser_daily.query("advertiser == 'top'").iloc[0]
        assert top["avg_position"] == 1.0  # the position never changes
        assert top["quality_score"] == pytest.approx(q)
        cpm[q] = top["cpm"]
    for q in range(2, 10):
        drop = 1 - cpm[q + 1] / cpm[q]
        # Exact up to the micro-yuan rounding of each charge (a price is ~0.0075 yuan).
        assert drop == pytest.approx(1 / (q + 1), abs=2e-4), (q, drop)


def _twin_market(production: float, authenticity: float, dynamic: bool) -> dict:
    # One slot; the twin's CPC bid keeps it on top of a CPM rival wherever it is eligible, so
    # its price per click is the rival's rank / (pCTR x QS / 10): no position effects.
    return {
        "name": "feedback",
        "seed": 11,
        "days": 14,
        "population": {"users": 6000},
        "traffic": {"sessions_per_user_per_day": 2.0, "ad_slots": 1, "view_factors": [1.0]},
        "quality": {"dynamic": dynamic, "review_noise": 0.0},
        "advertisers": [
            {
                "name": "twin",
                "category": "beauty",
                "account": {"followers": 5000},
                "campaigns": [
                    {
                        "name": "c",
                        "bid": {"type": "CPC", "amount": 5.0},
                        "budget": {"daily": 1e5},
                        "targeting": {"interests": ["beauty"]},
                        "creatives": [{"name": "cr", "production": production, "authenticity": authenticity}],
                    }
                ],
            },
            {
                "name": "rival",
                "category": "beauty",
                "campaigns": [{"name": "c", "bid": {"type": "CPM", "amount": 20.0}, "budget": {"daily": 1e5}}],
            },
        ],
    }


@pytest.mark.slow
def test_quality_feedback_rewards_the_creative_users_engage_with():
    def twin(production: float, authenticity: float, dynamic: bool = True) -> pd.DataFrame:
        r = run(make_scenario(base=_twin_market(production, authenticity, dynamic)))
        return r.advertiser_daily.query("advertiser == 'twin'").sort_values("date").reset_index(drop=True)

    engaging, ignored = twin(0.75, 0.95), twin(0.6, 0.2)
    assert (engaging["avg_position"].dropna() == 1.0).all()
    gap_start = engaging["quality_score"].iloc[0] - ignored["quality_score"].iloc[0]
    gap_end = engaging["quality_score"].iloc[-1] - ignored["quality_score"].iloc[-1]
    assert gap_end > gap_start + 0.3  # feedback widened the gap beyond the review's prior
    cpc_engaging = engaging["spend"].iloc[-3:].sum() / engaging["clicks"].iloc[-3:].sum()
    cpc_ignored = ignored["spend"].iloc[-3:].sum() / ignored["clicks"].iloc[-3:].sum()
    assert cpc_engaging < 0.8 * cpc_ignored
    # With quality frozen the scores stay where the review put them.
    frozen = twin(0.75, 0.95, dynamic=False)
    assert frozen["quality_score"].max() - frozen["quality_score"].min() < 1e-9
    assert frozen["quality_score"].iloc[0] == pytest.approx(engaging["quality_score"].iloc[0])


market_params = st.fixed_dictionaries(
    {
        "mechanism": st.sampled_from(["gsp", "vcg", "first_price"]),
        "platform": st.sampled_from(["xhs", "google", "meta"]),
        "budgets": st.lists(st.floats(0.05, 5000.0), min_size=3, max_size=3),
        "types": st.lists(st.sampled_from(["CPM", "CPC", "CPE", "CPA"]), min_size=3, max_size=3),
        "sessions": st.floats(0.5, 12.0),
        "seed": st.integers(0, 10_000),
    }
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market_params)
def test_money_counts_and_shares_hold_in_random_markets(p):
    amounts = {"CPM": 60.0, "CPC": 2.0, "CPE": 3.0, "CPA": 80.0}
    overrides = {
        "auction.mechanism": p["mechanism"],
        "platform": p["platform"],
        "seed": p["seed"],
        "days": 2,
        "population.users": 2000,
        "traffic.sessions_per_user_per_day": p["sessions"],
        "auction.cpa_min_conversions": 0,
    }
    for i in range(3):
        overrides[f"advertisers.{i}.campaigns.0.budget.daily"] = round(p["budgets"][i], 2)
        overrides[f"advertisers.{i}.campaigns.0.bid"] = {"type": p["types"][i], "amount": amounts[p["types"][i]]}
    r = run(make_scenario(overrides))
    md, daily = r.market_daily, r.advertiser_daily
    assert (md["revenue_micro"] == md["spend_micro"]).all()
    assert round(daily["spend"].sum(), 6) == round(md["revenue"].sum(), 6)
    cap = PROFILES[p["platform"]].daily
    assert (daily["spend"] <= daily["daily_budget"] * cap + 1e-6).all()
    assert (daily["impressions"] >= daily["clicks"]).all()
    assert (daily["clicks"] >= daily["conversions"]).all()
    share = daily["impression_share"].dropna()
    assert share.between(0, 1).all()
    assert daily["quality_score"].dropna().between(1, 10).all()
    assert (md["filled_slots"] <= md["ad_slots"]).all()


def test_budget_exhaustion_leaves_only_the_crossing_event_unbilled():
    r = run(make_scenario({"days": 1, "advertisers.0.campaigns.0.budget.daily": 1.0}))
    row = r.advertiser_daily.query("advertiser == 'alpha'").iloc[0]
    assert row["spend"] <= 1.0
    assert row["spend"] > 0.95  # it spent its budget: the last CPM charge is a few fen
    assert row["unbilled_events"] == 1
    exhausted = r.events.query("kind == 'budget_exhausted' and advertiser == 'alpha'")
    assert len(exhausted) == 1


def test_total_budget_stops_the_campaign_for_good():
    r = run(
        make_scenario(
            {"days": 3, "advertisers.0.campaigns.0.budget.daily": 5.0, "advertisers.0.campaigns.0.budget.total": 7.0}
        )
    )
    alpha = r.advertiser_daily.query("advertiser == 'alpha'").sort_values("date")
    assert alpha["spend"].sum() <= 7.0 + 1e-9
    assert alpha["spend"].iloc[0] == pytest.approx(5.0, abs=0.1)
    # Day 3 has under a cent left: at most the one crossing impression, delivered and not billed.
    assert alpha["spend"].iloc[2] == 0
    assert alpha["impressions"].iloc[2] <= 1


def test_google_profile_may_spend_twice_the_daily_budget():
    base = {"days": 1, "advertisers.0.campaigns.0.budget.daily": 2.0}
    xhs = run(make_scenario({**base, "platform": "xhs"})).advertiser_daily.query("advertiser == 'alpha'")
    google = run(make_scenario({**base, "platform": "google"})).advertiser_daily.query("advertiser == 'alpha'")
    assert xhs["spend"].iloc[0] <= 2.0
    assert 2.0 < google["spend"].iloc[0] <= 4.0


def test_market_steps_day_by_day_as_a_mesa_model():
    import mesa

    m = Market(make_scenario({"days": 3}))
    assert isinstance(m, mesa.Model)
    assert len(m.advertisers) == 3
    m.step()
    assert m.day == 1
    assert len(m.tables()["market_daily"]) == 1
    series = m.datacollector.get_model_vars_dataframe()
    assert series["sessions"].iloc[0] == m.tables()["market_daily"]["sessions"].iloc[0]


def test_spend_in_yuan_is_the_integer_ledger():
    r = run(make_scenario({"days": 1}))
    total_micro = int(r.market_daily["spend_micro"].sum())
    assert round(r.advertiser_daily["spend"].sum() * MICRO) == total_micro
    assert np.isfinite(r.advertiser_daily["spend"]).all()


def test_c_math_is_the_c_library_compiled_or_not(monkeypatch):
    """kernels.c_math gives what Python's math module (the C library) gives, element by element,
    with numba and without it, at the edges of each function's range too."""
    import math

    from simulator import kernels

    rng = np.random.default_rng(4)
    x = np.concatenate([rng.uniform(-30.0, 30.0, 5_000), [0.0, -0.0, 709.7, 710.0, -800.0, 1e-300]])
    pos = np.abs(x)
    cases = {"exp": x, "log1p": np.concatenate([pos, [-1.0]]), "log10": np.concatenate([pos, [0.0]])}
    edges = {("exp", 710.0): math.inf, ("log1p", -1.0): -math.inf, ("log10", 0.0): -math.inf}
    for name, values in cases.items():
        want = np.array([edges[(name, v)] if (name, v) in edges else getattr(math, name)(v) for v in values.tolist()])
        for compiled in (kernels.numba is not None, False):
            monkeypatch.setattr(kernels, "_C_MATH_COMPILED", [compiled])
            np.testing.assert_array_equal(kernels.c_math(name, values), want, err_msg=f"{name}, numba {compiled}")
            assert kernels.c_math(name, 0.5) == getattr(math, name)(0.5)  # a scalar stays one
            assert kernels.c_math(name, 0.5).shape == ()
            assert kernels.c_math(name, np.ones((2, 3), np.float32)).shape == (2, 3)
    got = kernels.c_pow(np.array([1.7, 2.0, 0.3, 1e200]), np.array([3, 2, 0, 3], dtype=np.int8))
    np.testing.assert_array_equal(got, [math.pow(1.7, 3), 4.0, 1.0, math.inf])
    with pytest.raises(ValueError, match="positive bases"):
        kernels.c_pow(np.array([0.0]), np.array([-1.0]))


@pytest.mark.slow
def test_tables_do_not_depend_on_numpy_vector_code():
    """On CPUs with AVX-512, numpy computes float64 exp, log1p, log10 and pow with its own vector code,
    which differs from the C library's in the last place; a run must not notice.  The baseline
    scenario run with numpy's AVX-512 code switched off (numpy then works as on an AVX2 CPU) gives
    the same tables.  (Before kernels.c_math, its qs_reputation differed in one value.)"""
    import os
    import subprocess
    import sys

    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:
        pytest.skip("this numpy does not list its CPU dispatch")
    off = [t for t in __cpu_dispatch__ if t.startswith(("X86_V4", "AVX512")) and __cpu_features__.get(t)]
    if not off:
        pytest.skip("numpy runs no AVX-512 code on this CPU")
    code = (
        "import hashlib, sys\nimport pandas as pd\nfrom simulator import run\n"
        "r = run(sys.argv[1])\n"
        "for name, t in sorted(r.tables.items()):\n"
        "    print('table', name, hashlib.sha1(pd.util.hash_pandas_object(t, index=False).values.tobytes()).hexdigest())\n"
    )
    outs = []
    for env_off in ([], off):
        env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
        if env_off:
            env["NPY_DISABLE_CPU_FEATURES"] = " ".join(env_off)
        done = subprocess.run(
            [sys.executable, "-c", code, str(SCENARIOS / "baseline.toml")], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outs.append(sorted(line for line in done.stdout.splitlines() if line.startswith("table ")))
    assert len(outs[0]) == 5
    assert outs[0] == outs[1]


def test_a_run_with_a_progress_bar_says_when_it_compiles_first(monkeypatch, capsys):
    from simulator import kernels

    for cold in (True, False):
        monkeypatch.setattr(kernels, "compiles_first", lambda cold=cold: cold)
        run(make_scenario({"days": 1}), progress=True)
        assert ("numba compiles the engine's kernels first" in capsys.readouterr().err) == cold
    monkeypatch.undo()
    # Here the test session has compiled them already: a fresh cache entry for each response pass
    # it used (the serial one, at this size) is found.
    if kernels.HAVE_NUMBA:
        from simulator import respond

        assert respond._settle_serial._cache._cache_file._load_index()
