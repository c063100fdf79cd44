"""The vectorized feed against a slow per-session, per-impression Python reference."""

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import Market, engagement, kernels, respond
from simulator.scenario import parse_scenario
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


def test_brand_familiarity_lookup_matches_the_sorted_set():
    """The compiled pass finds (advertiser, user) pairs through a per-user index; the numpy path
    through a search of the sorted keys.  Both must see exactly the pairs of the set."""
    rng = np.random.default_rng(7)
    n_users, n_adv = 500, 40
    adv = rng.integers(0, n_adv, 3000)
    users = rng.integers(0, n_users, 3000)
    keys = np.unique(respond.familiar_key(adv, users))
    ptr = respond.familiar_index(keys, n_users)
    pairs = set(zip(adv.tolist(), users.tolist(), strict=True))
    q_adv, q_users = rng.integers(0, n_adv, 5000), rng.integers(0, n_users, 5000)
    truth = np.array([(a, u) in pairs for a, u in zip(q_adv.tolist(), q_users.tolist(), strict=True)])
    assert 0 < truth.sum() < truth.size
    np.testing.assert_array_equal(respond.members(respond.familiar_key(q_adv, q_users), keys), truth)
    via_index = [
        bool(np.any(keys[ptr[u] : ptr[u + 1]] == respond.familiar_key(a, u)))
        for a, u in zip(q_adv.tolist(), q_users.tolist(), strict=True)
    ]
    np.testing.assert_array_equal(via_index, truth)
    assert ptr[0] == 0
    assert ptr[-1] == keys.size


def test_familiar_index_compiled_and_numpy_agree(monkeypatch):
    """The per-user index in one compiled pass (into a given table) equals cumsum(bincount(user)),
    with users that have no keys first, in between and last, and with no keys at all."""
    from simulator import kernels

    rng = np.random.default_rng(11)
    n_users = 300
    users = rng.integers(5, n_users - 5, 2000)
    users = users[(users < 100) | (users > 120)]  # a run of users without keys
    cases = [np.unique(respond.familiar_key(rng.integers(0, 30, users.size), users)), np.zeros(0, dtype=np.int64)]
    for keys in cases:
        want = np.zeros(n_users + 1, dtype=np.int64)
        want[1:] = np.cumsum(np.bincount(keys >> 32, minlength=n_users))
        room = np.full(n_users + 50, -7, dtype=np.int64)  # longer than needed, stale values
        got = respond.familiar_index(keys, n_users, out=room)
        np.testing.assert_array_equal(got, want)
        assert np.shares_memory(got, room)
        assert (room[n_users + 1 :] == -7).all()
        with monkeypatch.context() as m:
            m.setattr(kernels, "HAVE_NUMBA", False)
            np.testing.assert_array_equal(respond.familiar_index(keys, n_users), want)
    for bad in ([n_users << 32], [5 << 32, 3 << 32]):  # a user past the table; keys out of order
        with pytest.raises(ValueError, match="sorted"):
            respond.familiar_index(np.array(bad, dtype=np.int64), n_users)


@settings(max_examples=60, deadline=None)
@given(
    days=st.lists(st.lists(st.integers(0, 40), max_size=25), min_size=1, max_size=12),
    keep=st.integers(1, 5),
    compiled=st.booleans(),
)
def test_familiarity_fades_exactly_after_its_days(days, keep, compiled):
    """The market keeps the familiar pairs by merging each day's into a sorted set with the day last
    seen (kernels.merge_seen, compiled and numpy): always exactly the distinct keys of the last
    ``keep`` days, sorted (the naive union), each with the last day it was seen."""
    if compiled and not kernels.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    keys, last = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    for day, today in enumerate(days):
        new = np.unique(np.array(today, dtype=np.int64))
        saved = kernels.HAVE_NUMBA
        kernels.HAVE_NUMBA = compiled
        try:
            keys, last = kernels.merge_seen(keys, last, new, day, day - keep)
        finally:
            kernels.HAVE_NUMBA = saved
        window = range(max(0, day - keep + 1), day + 1)
        np.testing.assert_array_equal(keys, np.unique(np.array([k for d in window for k in days[d]], dtype=np.int64)))
        np.testing.assert_array_equal(last, [max(d for d in window if k in days[d]) for k in keys.tolist()])
        assert last.dtype == np.int32


def test_hot_tables_are_reused_when_they_fit():
    a = np.arange(10, dtype=np.int64)
    out, room = kernels.hot_into(None, a)
    np.testing.assert_array_equal(out, a)
    again, same_room = kernels.hot_into(room, a[:7] * 3)
    assert same_room is room and np.shares_memory(again, room)
    np.testing.assert_array_equal(again, a[:7] * 3)
    bigger, new_room = kernels.hot_into(room, np.arange(100, dtype=np.int64))
    assert new_room is not room and new_room.size >= 100
    np.testing.assert_array_equal(bigger, np.arange(100))


def test_a_traced_days_familiarity_is_never_overwritten():
    """The feed reuses its familiarity tables from day to day, but not under a trace, which keeps
    every batch's inputs for the reference to read later."""
    market = Market(make_scenario({"days": 4}))
    market.step()
    market.step()
    market.feed.trace = []
    market.step()
    kept = [(t["winners"].familiar_keys, t["winners"].familiar_keys.copy()) for t in market.feed.trace]
    assert kept and kept[0][1].size > 0
    latest = market.feed.familiar_keys
    kept.append((latest, latest.copy()))
    market.feed.familiar_keys = latest[1:].copy()  # (fits the tables: without a trace they would be reused)
    market.step()
    for traced, copy in kept:
        np.testing.assert_array_equal(traced, copy)


def test_compiled_and_numpy_responses_agree_once_users_know_brands():
    """After a few days users have clicked and bought (brand familiarity is on): both paths still agree."""
    market = Market(make_scenario({"days": 3, "advertisers.0.campaigns.0.budget.daily": 3.0}))
    market.step()
    market.step()
    assert market.feed.familiar_keys.size > 0
    # The per-user index the compiled pass reads follows the keys, however they are set.
    np.testing.assert_array_equal(
        market.feed.familiar_ptr, respond.familiar_index(market.feed.familiar_keys, market.population.n)
    )
    market.feed.familiar_keys = market.feed.familiar_keys[::2].copy()
    np.testing.assert_array_equal(
        market.feed.familiar_ptr, respond.familiar_index(market.feed.familiar_keys, market.population.n)
    )
    # Even set from a view of its own table (which the new keys are copied into).
    before = market.feed.familiar_keys[1:].copy()
    market.feed.familiar_keys = market.feed.familiar_keys[1:]
    np.testing.assert_array_equal(market.feed.familiar_keys, before)
    np.testing.assert_array_equal(market.feed.familiar_ptr, respond.familiar_index(before, market.population.n))
    market.feed.trace = []
    market.step()

    def fresh(w, **changes):  # (serving re-auctions in place)
        return replace(w, order=w.order.copy(), sorted_ranks=w.sorted_ranks.copy(), paid=w.paid.copy(), **changes)

    def same(ref, got):
        for name in ("session", "slot", "col", "price", "amount", "over", "billed", "relevance", "lift", "frequency"):
            np.testing.assert_array_equal(getattr(ref, name), getattr(got, name), err_msg=name)
        for name in respond.OUTCOMES:
            np.testing.assert_array_equal(ref.outcomes[name], got.outcomes[name], err_msg=name)

    known = 0
    rng = np.random.default_rng(5)
    for t in market.feed.trace:
        w = t["winners"]
        # The compiled pass looks a user's familiarity up only where it might decide a click: with
        # striking creatives and first draws spread over the likely clicks, it often does.
        s_idx, k_idx = np.indices((w.users.size, w.n_slots)).reshape(2, -1)
        u = respond.uniforms(w, s_idx, k_idx).reshape(w.users.size, w.n_slots, kernels.UNIFORMS)  # the draws, given
        u[:, :, 0] = rng.random(u.shape[:2]) * 0.5
        striking = fresh(w, ad_content=np.ones_like(w.ad_content), u=u)
        same(respond.respond_numpy(fresh(striking)), respond.respond(fresh(striking)))
        same(respond.respond_numpy(fresh(w)), t["served"])
        got = t["served"]
        adv = w.camp_adv[w.camp[got.col]]
        known += int(respond.members(respond.familiar_key(adv, w.users[got.session]), w.familiar_keys).sum())
    assert known > 0  # some impressions went to users who knew the brand


def _libm_sigmoid(z: float) -> float:
    try:
        return 1.0 / (1.0 + math.exp(-z))
    except OverflowError:  # (exp(-z) past the largest double: the compiled pass gets inf, so 0)
        return 0.0


@pytest.mark.skipif(not hasattr(respond, "_occurs"), reason="numba is not installed")
def test_outcome_draws_without_the_exp_give_the_same_answer():
    """The compiled pass skips a sigmoid when a cheap bound already decides ``u < view x sigmoid(z)``."""
    rng = np.random.default_rng(3)
    near_zero = np.geomspace(1e-7, 1e-2, 2_000)  # where the bounds close in on the sigmoid: the margins decide
    z = np.concatenate(
        [rng.uniform(-12, 4, 20_000), near_zero, -near_zero, [-800.0, -709.0, -40.0, -1e-300, 0.0, 1e-300, 50.0]]
    )
    view = rng.choice([1.0, 0.7, 0.5, 0.05, 1e-305, 5e-324], z.size)  # (tiny: products round to subnormals)
    # The sigmoid as the compiled pass computes it, with the C library's exp: numpy's own exp differs from
    # it in the last place on CPUs with AVX-512 (numpy has a vector version there), and the uniforms
    # put exactly on the threshold would fall on either side.
    sig = np.array([_libm_sigmoid(x) for x in z])
    # Uniforms on both sides of each threshold, and exactly on it.
    for u in (rng.random(z.size), view * sig, np.nextafter(view * sig, 0), np.nextafter(view * sig, 1), np.zeros(z.size)):
        want = u < view * sig
        got = np.array([respond._occurs(a, b, c) for a, b, c in zip(u, view, z, strict=True)])
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not hasattr(respond, "_may_respond"), reason="numba is not installed")
def test_the_bound_on_all_events_never_hides_one():
    """The compiled pass skips the exact draws (taste, familiarity, sigmoids) of events a bound at the
    largest relevance rules out.  Wherever it clears an event's bit, the exact draw says no: with the
    uniform on, just below and just above the exact threshold and the bound's own boundary, at
    relevances up to the largest, for ordinary impressions, for the most engaging ones (where the
    events' chances are highest, so a coefficient too small shows) and for a z next to 0 (where the
    bound is tightest, so the margin matters)."""
    rng = np.random.default_rng(11)
    sig, occurs = respond._sig, respond._occurs
    fc = respond.engagement.FAMILIAR_CLICK
    fc_max = max(fc, 0.0)
    cleared = kept = 0

    def zs_at(rel, auth, content, vertical, fatigue):
        return [
            [-4.8 + 2.4 * rel + 1.6 * content + fc * known - fatigue for known in (0.0, 1.0)],
            [-4.6 + 2.0 * rel + 1.4 * auth + 1.0 * content - fatigue],
            [-6.6 + 1.8 * rel + 1.8 * auth - fatigue],
            [-5.2 + 2.2 * rel + 0.8 * auth + 1.4 * content - fatigue],
            [-6.9 + 2.0 * rel + 1.2 * auth + 0.8 * content - fatigue],
            [-7.2 + 1.6 * rel + 1.6 * auth - fatigue],
            [-1.6 + 1.8 * rel + 1.0 * auth + 0.6 * vertical - fatigue],
        ]

    for case in range(6_000):
        kind = case % 3
        vertical, video = float(rng.random() < 0.5), bool(rng.random() < 0.7)
        view = rng.choice([1.0, 0.7, 0.5, 0.05, 1e-305])
        if kind == 1:  # the most engaging impressions
            rel_obs, auth, content, fatigue = 1.0 - 0.05 * rng.random(), 0.5 - 0.1 * rng.random(), 0.5 - 0.1 * rng.random(), 0.0
        else:
            rel_obs, auth, content = rng.random(), rng.random() - 0.5, rng.random() - 0.5
            fatigue = rng.choice([0.0, rng.random() * 2.0, -0.3])
        rel_hi = (1 - respond.TASTE_WEIGHT) * rel_obs + respond.TASTE_WEIGHT * 1.0
        if kind == 2:  # one event's z at the largest relevance a hair below 0
            lane = int(rng.integers(7))
            z0 = max(zs_at(rel_hi, auth, content, vertical, 0.0)[lane])
            fatigue = z0 + float(rng.choice([1e-12, 1e-9, 1e-6, 1e-4, 1e-2]))
        # The taste term at its largest (sigmoid exactly 1), at its least, and in between.
        acc = rng.choice([40.0, 40.0, -40.0, rng.normal()])
        rel = (1 - respond.TASTE_WEIGHT) * rel_obs + respond.TASTE_WEIGHT * sig(1.5 * acc)
        z = zs_at(rel, auth, content, vertical, fatigue)
        z_hi = [max(zz) for zz in zs_at(rel_hi, auth, content, vertical, fatigue)]
        z_hi[0] = -4.8 + 2.4 * rel_hi + 1.6 * content + fc_max - fatigue
        u = rng.random((1, 1, 10))
        for lane, zz in enumerate(z):
            t = view * sig(max(zz))  # the exact threshold
            x = -z_hi[lane]
            b = view * (1.0 + 1e-9) / (2.0 + x + 0.5 * x * x + x * x * x / 6.0)  # the bound's
            choices = [u[0, 0, lane], t, np.nextafter(t, 0), np.nextafter(t, 1), 0.0, b, np.nextafter(b, 0), np.nextafter(b, 1)]
            u[0, 0, lane] = choices[(case + 3 * lane) % len(choices)]
        bits = respond._may_respond(u, 0, 0, np.uint64(0), 0, view, rel_hi, auth, content, vertical, fatigue, video)
        # Counter-based uniforms (the engine's): the same bits as the same numbers given.
        key, c = np.uint64(case * 7919), 10 * case
        drawn = kernels.counter_uniforms(int(key), c + np.arange(10)).reshape(1, 1, 10)
        assert respond._may_respond(np.empty((0, 1, 10)), 0, 0, key, c, view, rel_hi, auth, content, vertical, fatigue, video) == (
            respond._may_respond(drawn, 0, 0, key, c, view, rel_hi, auth, content, vertical, fatigue, video)
        )
        for lane, zz in enumerate(z):
            if lane == 6 and not video:
                assert not bits & (1 << lane)  # the video lane counts for video ads only
                continue
            if bits & (1 << lane):
                kept += 1
            else:
                cleared += 1
                assert not any(occurs(u[0, 0, lane], view, v) for v in zz), (case, lane)
    assert cleared > 5_000 and kept > 5_000  # the bound decides many, and leaves many to the exact draw


@pytest.mark.skipif(not hasattr(respond, "_may_respond"), reason="numba is not installed")
def test_the_bound_lanes_follow_the_engagement_model():
    """The bound's lane tables restate engagement.probabilities' logits: a change to the model that
    missed them would make the bound rule out events the model gives."""
    rng = np.random.default_rng(4)
    n = 200
    imp = engagement.Impressions(
        relevance=rng.random(n), content=rng.random(n), authenticity=rng.random(n), is_video=np.ones(n, dtype=bool),
        vertical=(rng.random(n) < 0.5).astype(float), landing=rng.random(n), view=np.ones(n), frequency=np.zeros(n),
        wear=rng.random(n) * 3, intent=1.0, familiar=np.full(n, respond.engagement.FAMILIAR_CLICK > 0),
    )  # fmt: skip
    p = engagement.probabilities(imp)
    fatigue = 0.35 * np.log1p(imp.frequency) + 0.12 * imp.wear
    lanes = (
        respond._Z0[:, None] + respond._Z_REL[:, None] * imp.relevance + respond._Z_AUTH[:, None] * (imp.authenticity - 0.5)
        + respond._Z_CONTENT[:, None] * (imp.content - 0.5) + respond._Z_VERTICAL[:, None] * imp.vertical - fatigue
    )  # fmt: skip
    for lane, name in enumerate(("click", "like", "comment", "save", "share", "follow", "video_completion")):
        np.testing.assert_allclose(engagement.sigmoid(lanes[lane]), p[name], rtol=1e-12, err_msg=name)


@pytest.mark.parametrize(("block", "mechanism"), [(16_384, "gsp"), (37, "gsp"), (5, "vcg"), (1, "first_price")])
def test_compiled_responses_split_across_threads_match_one_thread_and_numpy(monkeypatch, block, mechanism):
    """The compiled pass auctions a block of sessions, serves its impressions on all cores, then
    bills them in time order, auctioning again (and packing) the sessions that had a campaign that
    ran out.  One thread, two threads and the numpy path give the same impressions and the same
    last auctions (order, ranks, paid ranks), re-auctions included, whether a batch is one block or
    many, under each pricing mechanism."""
    if respond.kernels.numba is None:
        pytest.skip("numba is not installed")
    import dataclasses

    monkeypatch.setattr(respond, "BLOCK_SESSIONS", block)

    scenario = make_scenario(
        {
            "traffic.ad_slots": 2,
            "auction.mechanism": mechanism,
            "advertisers.0.campaigns.0.budget.daily": 2.0,  # small budgets: crossings inside batches
            "advertisers.1.campaigns.0.budget.daily": 1.5,
            "days": 1,
        }
    )
    original = respond.respond
    seen = {"batches": 0, "reauctioned": 0, "fewer": 0}

    def all_three(w):
        respond.first_auction(w)  # (the numpy path's start; the compiled one auctions block by block)

        def fresh():
            return dataclasses.replace(w, order=w.order.copy(), sorted_ranks=w.sorted_ranks.copy(), paid=w.paid.copy())

        w_serial, w_numpy = fresh(), fresh()
        before = w.order.copy()
        got = respond.respond_numba(w, parallel=True)
        for ref in (respond.respond_numba(w_serial, parallel=False), respond.respond_numpy(w_numpy)):
            for f in dataclasses.fields(got):
                if f.name == "outcomes":
                    for name in respond.OUTCOMES:
                        np.testing.assert_array_equal(ref.outcomes[name], got.outcomes[name], err_msg=name)
                else:
                    np.testing.assert_array_equal(getattr(ref, f.name), getattr(got, f.name), err_msg=f.name)
        for name in ("order", "sorted_ranks", "paid"):
            np.testing.assert_array_equal(getattr(w_serial, name), getattr(w, name), err_msg=name)
            np.testing.assert_array_equal(getattr(w_numpy, name), getattr(w, name), err_msg=name)
        assert w_serial.reauctions == w.reauctions
        seen["batches"] += 1
        seen["reauctioned"] += int((before != w.order).any(axis=1).sum())
        assert w_numpy.reauctions == int((before != w.order).any(axis=1).sum())  # one by one: each once
        seen["fewer"] += int(got.session.size < (before[:, : w.n_slots] >= 0).sum())
        return got

    monkeypatch.setattr(respond, "respond", all_three)
    try:
        Market(scenario).step()
    finally:
        monkeypatch.setattr(respond, "respond", original)
    assert seen["batches"] >= 24
    assert seen["reauctioned"] > 0  # sessions served anew after a campaign ran out
    assert seen["fewer"] > 0  # ... some with fewer impressions: the kept rows were packed


@pytest.mark.parametrize(("block", "min_block", "n_adv"), [(16_384, 256, 8), (16, 256, 8), (512, 8, 40)])
def test_budget_crossings_in_waves_match_numpy(monkeypatch, block, min_block, n_adv):
    """Many small budgets run out within the same batches: sessions auctioned again in one wave
    can lose a new winner to a later crossing and must be auctioned again once more.  In blocks
    smaller than the batches, a block's auctions leave out the campaigns that ran out before it,
    and fewer sessions need a new auction.  With a small enough floor, the block size adapts to
    the crossings (respond.next_block, carried from batch to batch): batches are cut into blocks
    of sizes that change along the day, and the results still match."""
    if respond.kernels.numba is None:
        pytest.skip("numba is not installed")
    import copy
    import dataclasses

    monkeypatch.setattr(respond, "BLOCK_SESSIONS", block)
    monkeypatch.setattr(respond, "MIN_BLOCK", min_block)

    from tests.conftest import SMALL

    base = copy.deepcopy(SMALL)
    base["population"]["users"] = 20_000
    base["traffic"]["ad_slots"] = 2
    base["days"] = 1
    base["advertisers"] = [
        {
            "name": f"adv{a}",
            "category": "beauty",
            "campaigns": [{"name": "c1", "bid": {"type": "CPM", "amount": 30.0 + 5 * a}, "budget": {"daily": 1.0 + 0.4 * (a % 8)}}],
        }
        for a in range(n_adv)
    ]
    original = respond.respond
    seen = {"crossings": 0, "twice": 0, "again": 0, "reauctions": 0, "batches": 0, "split": 0}
    sizes = set()

    def both(w):
        first_block = w.block or block
        seen["split"] += first_block < min(block, w.users.size)  # cut by a size carried from the batch before
        sizes.add(first_block)
        respond.first_auction(w)
        w_numpy = dataclasses.replace(w, order=w.order.copy(), sorted_ranks=w.sorted_ranks.copy(), paid=w.paid.copy())
        before = w.order.copy()
        got = respond.respond_numba(w, parallel=True)
        ref = respond.respond_numpy(w_numpy)
        for name in ("session", "slot", "col", "price", "amount", "over", "billed", "relevance", "lift", "frequency"):
            np.testing.assert_array_equal(getattr(ref, name), getattr(got, name), err_msg=name)
        np.testing.assert_array_equal(w_numpy.order, w.order)
        seen["crossings"] += int(got.over.sum())
        again = int((before != w.order).any(axis=1).sum())  # sessions whose last auction is not the first
        assert w_numpy.reauctions == again
        seen["batches"] += w.users.size > block
        seen["again"] += again
        seen["reauctions"] += w.reauctions
        if w.users.size <= first_block:  # one block: the compiled pass auctions each of those again, some twice
            assert w.reauctions >= again
            seen["twice"] += w.reauctions - again
        return got

    monkeypatch.setattr(respond, "respond", both)
    try:
        Market(parse_scenario(base, "<test>")).step()
    finally:
        monkeypatch.setattr(respond, "respond", original)
    assert seen["crossings"] >= 4
    if min_block < 256:
        assert seen["split"] > 0 and len(sizes) >= 3
    elif block >= 16_384:
        assert seen["twice"] > 0  # some session lost a new winner to a later crossing: auctioned once more
    else:
        assert seen["batches"] > 0
        assert seen["reauctions"] < seen["again"]  # some were first auctioned without the campaigns gone


def test_next_block_shrinks_toward_the_cheapest_size_and_grows_back():
    """Hand-computed steps of the block size (respond.next_block; a block's cost = 64 re-auctions)."""
    nb, cap = respond.next_block, respond.BLOCK_SESSIONS
    # Most of a whole batch auctioned again: sqrt(64 / k) = 3,000 x sqrt(64 / 2,700) = 462, but a step
    # shrinks by 4 x at most.
    assert nb(cap, 3_000, 2_700) == cap // 4
    # 1,024 x sqrt(64 / 300) = 472.97: taken (above the floor of 256 and a quarter of 1,024).
    assert nb(1_024, 1_024, 300) == 472
    assert nb(300, 300, 200) == 256  # 300 x sqrt(64 / 200) = 170 is below the floor
    assert nb(37, 37, 30) == 37  # never above the size asked when shrinking
    assert nb(cap, 1, 1) == cap  # a batch's one-session tail says too little to shrink on
    assert nb(cap, 300, 200) == cap // 4  # ... a tail of 300 is enough
    # Between one in fifty and one in ten: the size holds.
    assert nb(1_000, 1_000, 50) == 1_000
    assert nb(1_000, 1_000, 100) == 1_000
    # Fewer than one in fifty: doubles after a whole block, up to the cap; a batch's short last block says too little.
    assert nb(1_000, 1_000, 19) == 2_000
    assert nb(cap, cap, 0) == cap
    assert nb(1_000, 400, 0) == 1_000
