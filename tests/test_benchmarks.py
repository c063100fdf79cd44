"""The benchmark suite (benchmarks/): its references agree with the engine's auction, and it runs.

The rates themselves are measured by ``python benchmarks/run.py``, not asserted
here (a shared machine's timings are no test); what is tested is that the
reference auction is the engine's auction and that the suite produces its
tables at toy scale.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from benchmarks import reference, run, scenarios
from simulator import auction, load_scenario

N_SLOTS = 3
VIEW = np.array([1.0, 0.7, 0.5])


def frozen_market(n_ads: int, seed: int) -> tuple[reference.ReferenceMarket, np.ndarray]:
    """A reference market with fixed bids and quality scores, and a few users' affinities."""
    market = reference.random_market(n_ads, n_topics=5, n_slots=N_SLOTS, seed=seed)
    affinities = np.random.default_rng(seed + 100).random((12, 5))
    return market, affinities


@pytest.mark.parametrize(("n_ads", "seed"), [(2, 0), (4, 1), (7, 2), (15, 3)])
def test_python_reference_picks_the_engines_winners_at_the_engines_prices(n_ads, seed):
    market, affinities = frozen_market(n_ads, seed)
    ranks = np.array([[a.rank(list(aff)) for a in market.bidders] for aff in affinities])
    # Knock some ads out of some auctions (not eligible: rank 0), as budgets and targeting would.
    ranks[np.random.default_rng(seed).random(ranks.shape) < 0.25] = 0.0
    ref = [market.auction(list(row)) for row in ranks]

    offsets = np.zeros(len(ranks), dtype=np.int64)  # no ties here (continuous draws): no tie break needed
    order, sorted_ranks = auction.allocate(ranks, N_SLOTS, market.floor, offsets)
    paid = auction.rank_prices("gsp", sorted_ranks, VIEW, market.floor)
    bid_m = np.array([a.bid * a.multiplier for a in market.bidders])
    for s, slots in enumerate(ref):
        winners = [int(j) for j in order[s, :N_SLOTS] if j >= 0]
        assert winners == [slot.ad for slot in slots]
        if not winners:
            continue
        w = np.array(winners)
        prices = auction.event_prices(bid_m[w], ranks[s, w], paid[s, : len(w)])
        np.testing.assert_allclose(prices, [slot.price for slot in slots], rtol=1e-12)
        assert all(slot.price <= bid_m[slot.ad] + 1e-15 for slot in slots)


def test_python_reference_hand_computed_gsp():
    # Three ads, two slots, floor 0.01: ranks 0.06, 0.04, 0.005 (the last below the floor).
    market = reference.ReferenceMarket(
        bids=[1.0, 2.0, 0.5], multipliers=[1.0, 1.0, 1.0], qs=[6.0, 4.0, 1.0],
        base_rates=[0.1, 0.05, 0.1], topics=[0, 0, 0], n_slots=2, floor=0.01,
    )
    # affinity 0.5 -> rate = base x 1.0
    slots = market.serve([0.5])
    assert [s.ad for s in slots] == [0, 1]
    # slot 1 pays bid x max(0.04, floor) / 0.06; slot 2 has nobody eligible below: the floor
    assert slots[0].price == pytest.approx(1.0 * 0.04 / 0.06)
    assert slots[1].price == pytest.approx(2.0 * 0.01 / 0.04)


def test_kernel_methods_agree_with_a_full_sort():
    rng = np.random.default_rng(5)
    rates = rng.random((300, 40))
    coef = rng.lognormal(np.log(0.02), 0.5, 40)
    full = np.argsort(-(rates * coef), axis=1)[:, : N_SLOTS + 1]
    for method in ("argpartition", "argmax"):
        top, top_ranks = reference.topk_kernel(rates, coef, N_SLOTS, floor=0.0, method=method)
        np.testing.assert_array_equal(top, full)
        assert (np.diff(top_ranks, axis=1) <= 0).all()


def test_benchmark_scenarios_validate():
    plain = load_scenario_dict(scenarios.market(10_000, 25, 3))
    assert (plain.population.users, plain.days, plain.generate[0].count) == (10_000, 3, 25)
    season = load_scenario_dict(scenarios.singles_day(5_000, 10, 45))
    assert season.start_date.month == 10 and season.start_date.day >= 15
    assert season.start_date + dt.timedelta(days=44) > dt.date(season.start_date.year, 11, 11)
    assert [e.preset for e in season.calendar.events] == ["singles_day"]
    assert season.generate[0].seasonal_share > 0


def load_scenario_dict(data):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        return load_scenario(scenarios.write(data, Path(d) / "s.toml"))


@pytest.mark.slow
def test_quick_suite_at_toy_scale_reports_positive_rates(tmp_path, capsys):
    res = run.run_toy(tmp_path)
    rows = run.summary_rows(res)
    assert len(rows) >= 7  # python and two kernels at two sizes, and the engine
    for row in rows:
        assert float(row[1].replace(",", "")) > 0, row  # auctions/s
        assert float(row[3].replace(",", "")) > 0, row  # impressions/s
    engine = res["engine_headline"]
    assert engine["sessions"] > 0 and engine["impressions"] > 0 and engine["peak_rss_mb"] > 0
    assert [p["advertisers"] for p in res["ads_axis"]] == [8, 16]
    assert all(p["auctions_per_cpu_s"] > 0 for p in res["ads_axis"] + res["days_axis"] + res["users_axis"])
    parts = {r["part"]: r for r in res["parts"]["rows"]}
    assert parts["session generation"]["calls"] == 24  # one draw per hour of the day
    assert parts["engagement sampling"]["cpu_s"] > 0
    assert sum(r["wall_s"] for r in parts.values()) == pytest.approx(res["parts"]["wall_s"], rel=0.05)
    targets = run.targets(res)
    assert any("Python reference" in t[0] for t in targets)
    run.print_report(res)
    assert "| measurement | auctions/s" in capsys.readouterr().out


@pytest.mark.parametrize(("n_ads", "seed"), [(3, 4), (9, 5), (40, 6)])
def test_python_reference_agrees_with_the_engines_rank_kernel(n_ads, seed):
    """The same auctions through the engine's fused rank/top-slot kernel (both of its paths)."""
    kernels = pytest.importorskip("simulator.kernels")
    market, affinities = frozen_market(n_ads, seed)
    eligible = np.random.default_rng(seed).random((len(affinities), n_ads)) >= 0.25
    lift = np.array([[0.5 + aff[a.topic] for a in market.bidders] for aff in affinities], dtype=np.float32)
    bid_m = np.array([a.bid * a.multiplier for a in market.bidders])
    base = np.array([a.base_rate for a in market.bidders])
    qs = np.array([a.qs for a in market.bidders])
    args = (eligible, lift, np.zeros(len(affinities), dtype=np.int8), bid_m, None, base,
            np.ones(n_ads, dtype=np.int8), qs / 10.0, N_SLOTS, market.floor)
    ranks = np.where(eligible, bid_m * base * lift.astype(np.float64) * qs / 10.0, 0.0)
    ref = [market.auction(list(row)) for row in ranks]
    for rank_top in (kernels.rank_top_numpy, kernels.rank_top):
        order, sorted_ranks = rank_top(*args)
        paid = auction.rank_prices("gsp", sorted_ranks, VIEW, market.floor)
        for s, slots in enumerate(ref):
            winners = [int(j) for j in order[s, :N_SLOTS] if j >= 0]
            assert winners == [slot.ad for slot in slots]
            w = np.array(winners, dtype=int)
            prices = auction.event_prices(bid_m[w], sorted_ranks[s, : len(w)], paid[s, : len(w)])
            np.testing.assert_allclose(prices, [slot.price for slot in slots], rtol=1e-9)
