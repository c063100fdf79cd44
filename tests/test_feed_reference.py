"""The vectorized feed against a slow per-session, per-impression Python reference."""

import numpy as np
import pytest

from simulator import Market, respond
from tests import reference
from tests.conftest import make_scenario


@pytest.mark.parametrize(
    ("mechanism", "platform"), [("gsp", "xhs"), ("vcg", "google"), ("first_price", "meta")]
)
def test_engine_matches_reference_auction_and_billing(mechanism, platform):
    scenario = make_scenario(
        {
            "auction.mechanism": mechanism,
            "platform": platform,
            "traffic.ad_slots": 2,
            "advertisers.0.campaigns.0.budget.daily": 3.0,  # small budgets: crossings inside batches
            "advertisers.1.campaigns.0.budget.daily": 2.0,
            "advertisers.1.strategy": {"rules": [{"rule": "device", "ios": 1.5, "android": 0.8}]},
            "advertisers.2.campaigns.0.bid": {"type": "CPA", "amount": 40.0},  # oCPC: value x lift
            "auction.cpa_min_conversions": 0,
            "days": 1,
        }
    )
    market = Market(scenario)
    market.feed.trace = []
    market.step()
    trace = market.feed.trace
    assert len(trace) >= 24  # a chunk per hour at least
    crossings = clicks = reauctions = 0
    for t in trace:
        n_s = t["eligible"].shape[0]
        camp_of_col = t["camp"]
        # When each campaign ran out in this chunk: after the session of its crossing event.
        crossed_in = {}
        for s, k, over in zip(t["s_idx"], t["k_idx"], t["over"], strict=True):
            if over:
                crossed_in.setdefault(int(camp_of_col[t["order"][s, k]]), int(s))
        # 1. Auction, session by session, among the campaigns that still had budget at that session.
        rows = []
        for s in range(n_s):
            gone = {c for c, at in crossed_in.items() if at < s} | set(np.flatnonzero(t["dead"]).tolist())
            eligible = t["eligible"][s] & ~np.isin(camp_of_col, list(gone))
            cands = reference.session_ranks(
                eligible, t["lift"][s], t["device"][s], t["per_event"], t["device_mult"],
                t["base_rate"], t["lift_power"], t["qs_factor"], t["floor"], t["value_lift"],
            )  # fmt: skip
            for k, j, price in reference.session_auction(cands, t["n_slots"], t["floor"], t["mechanism"], t["view"]):
                rows.append((s, k, j, price))
            reauctions += int(any(camp_of_col[j] in gone for j in t["winners"].order[s] if j >= 0))
        assert [(s, k) for s, k, _, _ in rows] == list(zip(t["s_idx"], t["k_idx"], strict=True))
        assert [j for _, _, j, _ in rows] == list(t["order"][t["s_idx"], t["k_idx"]])
        np.testing.assert_allclose([p for *_, p in rows], t["prices"], rtol=1e-12, atol=0)
        # 2. Billing, impression by impression in time order; after the re-auctions no session
        # has a campaign that had already run out.
        amounts = np.where(t["event"], np.floor(t["prices"] * 1e6), 0).astype(np.int64)
        camp = camp_of_col[t["order"][t["s_idx"], t["k_idx"]]]
        session_camps = [{int(camp_of_col[j]) for j in t["order"][s] if j >= 0} for s in range(n_s)]
        billed, over, n_used = reference.bill_in_time_order(
            camp, t["s_idx"], amounts, t["event"], t["remaining"], session_camps, np.flatnonzero(t["dead"])
        )
        assert n_used == np.inf
        assert t["n_used"] == n_s
        np.testing.assert_array_equal(t["billed"], billed)
        np.testing.assert_array_equal(t["over"], over)
        crossings += int(over.any())
        # 3. The compiled pass (with its re-auctions inline) equals the numpy reference.
        ref = respond.respond_numpy(t["winners"])
        got = t["served"]
        assert ref.n_used == got.n_used
        for name in ("session", "slot", "col", "price", "event", "amount", "over", "billed", "relevance", "lift", "frequency"):
            np.testing.assert_array_equal(getattr(ref, name), getattr(got, name), err_msg=name)
        for name in respond.OUTCOMES:
            np.testing.assert_array_equal(ref.outcomes[name], got.outcomes[name], err_msg=name)
        np.testing.assert_array_equal(t["winners"].order, t["order"])  # the numpy path re-auctioned the same sessions
        clicks += int(got.outcomes["click"].sum())
    assert crossings >= 1
    assert clicks > 0
    assert reauctions >= 1
    # The money closes: what the advertisers were billed is what the platform earned.
    md = market.tables()["market_daily"]
    assert int(md["revenue_micro"].iloc[0]) == int(md["spend_micro"].iloc[0])
