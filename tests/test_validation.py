"""Validation against auction and pacing theory (issue 7): each paper's number, reproduced by the engine.

Every test runs a check of :mod:`simulator.validation` and asserts each of its
rows; the assertion message gives the claim, the source, the predicted and the
simulated number and the tolerance.  ``scripts/validation_report.py`` turns the
same rows into ``docs/validation.md``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from simulator import validation as v


def assert_rows(rows: list[v.Check]) -> None:
    assert rows, "a check returned no rows"
    failed = [r.describe() for r in rows if not r.passed]
    assert not failed, "\n".join(failed)


@functools.cache
def target_cpa_rows() -> tuple[v.Check, ...]:
    return tuple(v.check_target_cpa())


# ---------------------------------------------------------------- fast: the mechanism functions


def test_gsp_vcg_revenues_and_equilibrium():
    rows = v.check_gsp_vcg()
    assert len(rows) == 10
    assert_rows(rows)


def test_lowest_envy_free_bids_follow_the_recursion():
    # Three slots (clicks 300, 200, 100), values (10, 8, 5, 2), by hand:
    # r4 = 2; r3 = ((200-100)*5 + 100*2)/200 = 3.5; r2 = ((300-200)*8 + 200*3.5)/300 = 5.
    bids = v.lowest_envy_free_bids(np.array([10.0, 8.0, 5.0, 2.0]), np.ones(4), np.array([300.0, 200.0, 100.0]))
    np.testing.assert_allclose(bids, [10.0, 5.0, 3.5, 2.0])


def test_deviation_search_finds_a_profitable_deviation_from_truthful_gsp():
    clicks = np.array([200.0, 100.0])
    # Values (10, 4, 2), truthful: the top bidder earns 200 x (10 - 4) = 1200 in slot 1 against
    # 100 x (10 - 2) = 800 in slot 2; bidder 2 earns 100 x (4 - 2) = 200 and would pay 10 above: stable.
    values = np.array([10.0, 4.0, 2.0])
    assert v._max_deviation_gain(values, np.ones(3), clicks, values) == pytest.approx(0.0, abs=1e-6)
    # Values (10, 9, 2), truthful: slot 1 earns 200 x (10 - 9) = 200, slot 2 would earn 100 x (10 - 2) = 800,
    # so the top bidder gains 600 by bidding below 9 (EOS 2007: truthful GSP is not an equilibrium).
    values = np.array([10.0, 9.0, 2.0])
    assert v._max_deviation_gain(values, np.ones(3), clicks, values) == pytest.approx(600.0, rel=1e-6)


def test_myerson_formula_matches_the_papers_numbers():
    assert v.myerson_revenue(2, 0.0) == pytest.approx(1 / 3)
    assert v.myerson_revenue(2, 0.5) == pytest.approx(5 / 12)
    assert v.myerson_revenue(3, 0.0) == pytest.approx(0.5)
    assert v.myerson_revenue(3, 0.5) == pytest.approx(0.53125)


def test_myerson_reserve_through_the_engine():
    assert_rows(v.check_myerson())


def test_fppe_solver_on_a_second_case():
    # Values 1 and 2, budgets 0.1 and 0.3, one item: g(p) = p - 0.1 log p - 0.3 log(p/2) is least
    # at p = 0.4, so alpha = (0.4, 0.2) and both spend their budgets: x = (0.1, 0.3) / 0.4.
    alpha, price, shares = v.fppe_identical_items(np.array([1.0, 2.0]), np.array([0.1, 0.3]), 1.0)
    assert price == pytest.approx(0.4, abs=1e-6)
    np.testing.assert_allclose(alpha, [0.4, 0.2], atol=1e-6)
    np.testing.assert_allclose(shares, [0.25, 0.75], atol=1e-6)


def test_check_fails_when_the_numbers_disagree():
    row = v.Check("x", "s", "setup", predicted=1.0, simulated=1.2, tolerance=0.1)
    assert not row.passed
    assert "FAIL" in row.describe()
    assert v.Check("x", "s", "setup", 60.0, 61.0, 2.0, kind="upper").passed
    assert not v.Check("x", "s", "setup", 60.0, 63.0, 2.0, kind="upper").passed


# ---------------------------------------------------------------- slow: whole market runs


@pytest.mark.slow
def test_adaptive_pacing_spends_budget_over_horizon_and_settles():
    assert_rows(v.check_adaptive_pacing())


@pytest.mark.slow
def test_first_price_pacing_equilibrium():
    assert_rows(v.check_fppe())


@pytest.mark.slow
def test_quality_elasticity_one_point_lowers_price_by_one_over_qs_plus_one():
    assert_rows(v.check_quality_elasticity())


@pytest.mark.slow
def test_target_cpa_bidder_meets_its_target():
    assert_rows([r for r in target_cpa_rows() if r.extra.get("row") == "meets"])


@pytest.mark.slow
def test_target_cpa_bid_is_target_times_pcvr():
    assert_rows([r for r in target_cpa_rows() if r.extra.get("row") == "bid"])
