"""Hand-computed auctions: exact positions and prices under gsp, vcg and first_price."""

import mmap
import os
import re
import time

import numpy as np
import pytest

from simulator import auction, kernels

# Three CPM ads, two slots (view factors 1.0, 0.6), QS 5, 8, 6, bids 40, 30, 20 yuan per mille.
# Value per impression = bid / 1000; rank = value x QS / 10 = 0.020, 0.024, 0.012.
PER_EVENT = np.array([0.040, 0.030, 0.020])
QS = np.array([5.0, 8.0, 6.0])
VIEW = np.array([1.0, 0.6])
FLOOR = 0.008  # reserve_ecpm 8 yuan


def _run(per_event=PER_EVENT, qs=QS, floor=FLOOR, mechanism="gsp", eligible=None, impl=kernels.rank_top_numpy):
    n = per_event.size
    eligible = np.ones((1, n), dtype=bool) if eligible is None else eligible
    order, ranks = impl(
        eligible,
        np.ones((1, n), dtype=np.float32),
        np.zeros(1, dtype=np.int8),
        per_event,
        None,
        np.ones(n),
        np.zeros(n, dtype=np.int8),
        qs / 10.0,
        2,
        floor,
    )
    paid = auction.rank_prices(mechanism, ranks, VIEW, floor)
    won = order[0, :2] >= 0
    cols = order[0, :2][won]
    prices = auction.event_prices(per_event[cols], ranks[0, :2][won], paid[0, :2][won])
    return list(cols), prices


@pytest.mark.parametrize("impl", [kernels.rank_top_numpy, kernels.rank_top_numba])
def test_gsp_positions_and_prices(impl):
    cols, prices = _run(impl=impl)
    assert cols == [1, 0]  # QS 8 at bid 30 outranks QS 5 at bid 40
    # Slot 1 pays bid x next rank / own rank = 0.030 x 0.020 / 0.024 = 0.025 (CPM 25).
    # Slot 2 pays 0.040 x 0.012 / 0.020 = 0.024 (CPM 24).
    np.testing.assert_allclose(prices, [0.025, 0.024], rtol=1e-12)
    assert np.all(prices <= PER_EVENT[cols])


def test_vcg_prices_weight_positions_by_view_factor():
    cols, prices = _run(mechanism="vcg")
    assert cols == [1, 0]
    # Slot 1: ((1.0 - 0.6) x 0.020 + 0.6 x 0.012) / 1.0 = 0.0152 in rank units -> 0.030 x 0.0152 / 0.024.
    # Slot 2: (0.6 x 0.012) / 0.6 = 0.012 -> 0.040 x 0.012 / 0.020 = 0.024.
    np.testing.assert_allclose(prices, [0.030 * 0.0152 / 0.024, 0.024], rtol=1e-12)
    gsp_cols, gsp_prices = _run(mechanism="gsp")
    assert np.all(prices <= gsp_prices + 1e-15)


def test_first_price_pays_the_bid():
    cols, prices = _run(mechanism="first_price")
    np.testing.assert_allclose(prices, [0.030, 0.040])


def test_floor_binds_for_the_last_winner():
    # Only two ads: slot 2 has nobody below, so it pays the floor: 0.040 x 0.008 / 0.020 = 0.016.
    cols, prices = _run(per_event=PER_EVENT[:2], qs=QS[:2])
    assert cols == [1, 0]
    np.testing.assert_allclose(prices, [0.030 * 0.020 / 0.024, 0.016], rtol=1e-12)


def test_floor_excludes_ads_ranked_below_it():
    # Raise the floor above ad 2's rank (0.012) and ad 0's (0.020): only ad 1 (0.024) may win.
    cols, prices = _run(floor=0.021)
    assert cols == [1]
    np.testing.assert_allclose(prices, [0.030 * 0.021 / 0.024])


def test_ineligible_ads_neither_win_nor_set_prices():
    eligible = np.array([[True, False, True]])
    cols, prices = _run(eligible=eligible)
    assert cols == [0, 2]
    np.testing.assert_allclose(prices, [0.040 * 0.012 / 0.020, 0.020 * FLOOR / 0.012], rtol=1e-12)


def test_one_more_quality_point_lowers_price_by_one_over_qs_plus_one():
    # The winner's price is next_rank / (rate x QS / 10): from QS q to q + 1 it falls by 1 / (q + 1).
    for q in range(2, 10):
        per_event = np.array([0.5, 0.030])
        _, low = _run(per_event=per_event, qs=np.array([float(q), 5.0]))
        _, high = _run(per_event=per_event, qs=np.array([float(q + 1), 5.0]))
        drop = 1 - high[0] / low[0]
        assert drop == pytest.approx(1 / (q + 1), rel=1e-12)


def test_ties_go_to_the_lower_column_and_price_equals_bid():
    per_event = np.array([0.03, 0.03, 0.03])
    cols, prices = _run(per_event=per_event, qs=np.array([6.0, 6.0, 6.0]))
    assert cols == [0, 1]
    np.testing.assert_allclose(prices, [0.03, 0.03])


def test_vcg_revenue_matches_textbook_example():
    # Edelman-Ostrovsky-Schwarz: values 10, 4, 2 per click; clicks 200, 100 -> VCG revenue 800, GSP 1000.
    ranks = np.array([[10.0, 4.0, 2.0]])
    view = np.array([1.0, 0.5])
    vcg = auction.vcg_rank_prices(ranks, view, 0.0)[0] * np.array([200, 100])
    gsp = auction.gsp_rank_prices(ranks, 0.0)[0] * np.array([200, 100])
    assert vcg.sum() == pytest.approx(800)
    assert gsp.sum() == pytest.approx(1000)


def test_kernels_agree_on_random_markets():
    rng = np.random.default_rng(3)
    for trial in range(20):
        n_s, n_a = rng.integers(1, 60), rng.integers(1, 40)
        args = (
            rng.random((n_s, n_a)) < 0.6,
            rng.random((n_s, n_a), dtype=np.float32) * 2,
            rng.integers(0, 2, n_s).astype(np.int8),
            rng.random(n_a).round(2),  # rounding makes exact ties common
            rng.random((n_a, 2)).round(1) + 0.5 if trial % 2 else None,
            rng.random(n_a) * 0.05,
            rng.integers(0, 3, n_a).astype(np.int8),
            rng.integers(1, 11, n_a) / 10.0,
            int(rng.integers(1, 4)),
            float(rng.random() * 0.001),
            rng.random(n_a) < 0.3,
        )
        o1, r1 = kernels.rank_top_numpy(*args)
        o2, r2 = kernels.rank_top_numba(*args)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)


def _random_batch(rng, n_users=50, n_ads=12, n_s=40):
    from simulator.kernels import Batch

    n_groups = 3
    multi_cols = rng.choice(n_ads, size=4, replace=False)
    col_multi = np.full(n_ads, -1, dtype=np.int32)
    col_slot = np.zeros(n_ads, dtype=np.int8)
    col_multi[multi_cols[:2]] = 0
    col_slot[multi_cols[:2]] = [0, 1]
    col_multi[multi_cols[2:]] = 1
    col_slot[multi_cols[2:]] = [0, 1]
    col_audience = np.full(n_ads, -1, dtype=np.int32)
    col_audience[rng.choice(n_ads, 2, replace=False)] = [0, 1]
    return Batch(
        users=rng.integers(0, n_users, n_s).astype(np.int32),
        device=rng.integers(0, 2, n_s).astype(np.int8),
        admitted=rng.random((n_s, n_groups)) < 0.8,
        audience=rng.random((n_s, 2)) < 0.5,
        picks=rng.integers(0, 2, (n_s, 2)).astype(np.int8),
        u_part=rng.random(n_s, dtype=np.float32),
        col_group=rng.integers(0, n_groups, n_ads).astype(np.int32),
        col_audience=col_audience,
        exhausted=rng.random(n_ads) < 0.1,
        col_ad=rng.permutation(n_ads).astype(np.int32),
        cap=int(rng.integers(0, 3)),
        col_multi=col_multi,
        col_slot=col_slot,
        share=np.where(rng.random(n_ads) < 0.5, 1.0, rng.random(n_ads)).astype(np.float32),
        phase=rng.random(n_ads, dtype=np.float32),
        col_topic=rng.integers(0, 4, n_ads).astype(np.int32),
        freq=rng.integers(0, 3, (n_users, n_ads)).astype(np.uint8),
        user_lift=(rng.random((n_users, 4)) * 2).astype(np.float32),
        per_event=rng.random(n_ads).round(2),
        device_mult=rng.random((n_ads, 2)).round(1) + 0.5 if rng.random() < 0.5 else None,
        base_rate=rng.random(n_ads) * 0.05,
        lift_power=rng.integers(0, 3, n_ads).astype(np.int8),
        qs_factor=rng.integers(1, 11, n_ads) / 10.0,
        n_slots=int(rng.integers(1, 4)),
        floor=float(rng.random() * 0.0005),
        value_lift=rng.random(n_ads) < 0.3,
    )


def test_fused_selection_matches_the_numpy_path():
    rng = np.random.default_rng(11)
    for _ in range(30):
        b = _random_batch(rng)
        o1, r1 = kernels.select_numpy(b)
        for parallel in (False, True):
            o2, r2 = kernels.select_numba(b, parallel=parallel)
            np.testing.assert_array_equal(o1, o2)
            np.testing.assert_array_equal(r1, r2)
        assert (o1[:, 0] >= 0).any()  # the batches are not trivially empty


def test_serial_and_parallel_kernels_keep_separate_compiled_caches():
    # numba's file cache keys a function by name and signature, not by compile flags: one function
    # compiled twice would share one entry, and the parallel kernel would load the serial code.
    if kernels.numba is None:
        pytest.skip("numba is not installed")
    from simulator import respond

    for serial, parallel in (
        (kernels._select_serial, kernels._select_parallel),
        (respond._speculate_serial, respond._speculate_parallel),
        (respond._settle_serial, respond._settle_parallel),
    ):
        names = {d._cache._cache_file._index_name for d in (serial, parallel)}
        assert len(names) == 2
        options = parallel.targetoptions.get("parallel")  # prange loops on all cores, and no other transformation
        assert options.enabled and options.prange and not options.numpy and not options.fusion
        assert not serial.targetoptions.get("parallel")


def test_a_compiled_cache_goes_stale_when_another_compiled_file_changes(tmp_path, monkeypatch):
    # numba checks only a cached function's own file; the response passes inline the kernels' scan,
    # so their cache must also go stale when kernels.py changes (kernels._install_cache_stamps).
    if kernels.numba is None:
        pytest.skip("numba is not installed")
    import os

    from simulator import respond

    assert kernels.CACHE_STAMPS
    for fn in (kernels._select_serial, respond._settle_parallel, respond._speculate_serial):
        stamp = fn._cache._impl.locator.get_source_stamp()
        assert stamp[1] == tuple((os.stat(f).st_mtime, os.stat(f).st_size) for f in kernels.COMPILED_SOURCES)
    other = tmp_path / "other.py"  # (a stand-in for kernels.py: the test leaves the real files alone)
    other.write_text("x = 1\n")
    monkeypatch.setattr(kernels, "COMPILED_SOURCES", (*kernels.COMPILED_SOURCES, str(other)))
    locator = respond._settle_serial._cache._impl.locator
    before = locator.get_source_stamp()
    os.utime(other, (1_000_000, 1_000_000))
    after = locator.get_source_stamp()
    assert before[0] == after[0]  # respond.py itself unchanged
    assert before != after  # but the stamp numba compares with the cache's has changed


def _with_pruning(b, rng):
    """The batch with columns in ``pruning_order`` and its buckets set (the engine's exact pruning)."""
    import dataclasses

    max_lift = b.user_lift.max(axis=0).astype(np.float64)
    perm, bound, start, topic, power = kernels.pruning_order(
        b.per_event, b.device_mult, b.base_rate, b.lift_power, b.value_lift, b.qs_factor, b.col_topic, max_lift
    )
    per_col = {
        f.name: getattr(b, f.name)[perm]
        for f in dataclasses.fields(b)
        if f.name.startswith("col_") or f.name in ("exhausted", "share", "phase", "per_event", "base_rate", "lift_power", "qs_factor", "value_lift")
    }
    if b.device_mult is not None:
        per_col["device_mult"] = b.device_mult[perm]
    return dataclasses.replace(b, **per_col, bound=bound, bucket_start=start, bucket_topic=topic, bucket_power=power)


def test_pruning_by_lift_buckets_keeps_the_winners_and_ties():
    rng = np.random.default_rng(5)
    pruned_any = 0
    for _ in range(60):
        b = _with_pruning(_random_batch(rng, n_ads=int(rng.integers(4, 40)), n_s=60), rng)
        assert (np.diff(b.bucket_start) > 0).all()
        for lo, hi in zip(b.bucket_start[:-1], b.bucket_start[1:], strict=True):
            assert (np.diff(b.bound[lo:hi]) <= 0).all()  # bounds fall inside each bucket
        o1, r1 = kernels.select_numpy(b)
        o2, r2 = kernels.select_numba(b, parallel=False)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        # The bound holds: no eligible ad outranks bound x lift ** power of its bucket.
        eligible, lift = kernels.eligibility(b)
        o_all, r_all = kernels.rank_top_numpy(
            np.ones_like(eligible), lift, b.device, b.per_event, b.device_mult, b.base_rate, b.lift_power,
            b.qs_factor, b.per_event.size, 0.0, b.value_lift,
        )
        for s in range(eligible.shape[0]):
            for k in range(o_all.shape[1]):
                j = o_all[s, k]
                if j < 0:
                    continue
                bkt = np.searchsorted(b.bucket_start, j, side="right") - 1
                factor = np.float64(b.user_lift[b.users[s], b.bucket_topic[bkt]]) ** b.bucket_power[bkt]
                assert r_all[s, k] <= b.bound[j] * factor
        pruned_any += int((b.bound < b.bound.max()).any())
    assert pruned_any > 30


def test_throttle_bins_leave_out_only_columns_the_throttle_turns_away():
    """The compiled scan visits only the columns listed for the bin of the session's participation
    draw; a column may be left out only if ``frac(u_part + phase) < share`` (float32) fails for
    every draw in the bin.  Checked at the bins' edges and next to them, and at random."""
    if kernels.numba is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(17)
    n_bins = kernels.THROTTLE_BINS
    edges = (np.arange(n_bins + 1) / n_bins).astype(np.float32)
    near = np.concatenate([edges, np.nextafter(edges, np.float32(0)), np.nextafter(edges, np.float32(2))])
    share = np.concatenate([[0.0, 1.0, 0.5, 1 / n_bins], near, rng.random(200)]).astype(np.float32)
    phase = np.concatenate([near[: share.size // 2], rng.random(share.size)])[: share.size].astype(np.float32)
    phase = np.where(phase >= 1, np.float32(0.0), phase)  # phases are draws in [0, 1)
    rng.shuffle(phase)
    bucket_start = np.array([0, 7, 7 + 90, share.size])
    bin_cols, bin_start = kernels.throttle_bins(share, phase, bucket_start)
    u = np.concatenate([near[(near >= 0) & (near < 1)], rng.random(5000, dtype=np.float32)]).astype(np.float32)
    x = u[:, None] + phase[None, :]
    enters = np.where(x >= np.float32(1.0), x - np.float32(1.0), x) < share[None, :]
    listed = np.zeros((n_bins, share.size), dtype=bool)
    for r in range(n_bins):
        row = bin_cols[r, : bin_start[r, -1]]
        listed[r, row] = True
        for b in range(bucket_start.size - 1):  # each bucket's columns, in order, inside the bucket
            cols = row[bin_start[r, b] : bin_start[r, b + 1]]
            assert ((cols >= bucket_start[b]) & (cols < bucket_start[b + 1])).all()
            assert (np.diff(cols) > 0).all()
    rb = np.minimum((u.astype(np.float64) * n_bins).astype(np.int64), n_bins - 1)
    assert not (enters & ~listed[rb]).any()  # nobody who would enter is left out
    assert (~listed).sum() > share.size * n_bins // 4  # and the bins do leave many out


def test_fused_selection_at_the_throttle_bins_edges_matches_numpy():
    """Sessions whose participation draws sit on and next to the bins' edges, many throttled columns."""
    import dataclasses

    rng = np.random.default_rng(23)
    edges = (np.arange(kernels.THROTTLE_BINS) / kernels.THROTTLE_BINS).astype(np.float32)
    draws = np.concatenate([edges, np.nextafter(edges, np.float32(0))[1:], np.nextafter(edges, np.float32(1))])
    for _ in range(20):
        b = _random_batch(rng, n_ads=30, n_s=draws.size)
        # Shares right at a column's threshold for some edge draw, and one float32 step either side.
        x = rng.choice(draws, 30) + b.phase
        at = np.where(x >= np.float32(1.0), x - np.float32(1.0), x).astype(np.float32)
        share = np.select(
            [rng.random(30) < 0.25, rng.random(30) < 0.33, rng.random(30) < 0.5],
            [at, np.nextafter(at, np.float32(0)), np.nextafter(at, np.float32(1))],
            rng.random(30) * 0.6,
        ).astype(np.float32)
        b = dataclasses.replace(b, u_part=draws.copy(), share=share)
        b = _with_pruning(b, rng)
        o1, r1 = kernels.select_numpy(b)
        o2, r2 = kernels.select_numba(b, parallel=False)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)


@pytest.mark.parametrize("shape", [(10, 3), (3_000, 2_000)])  # below and above kernels.HUGE_TABLE_BYTES
def test_kernel_tables_are_zeroed_writable_arrays(shape):
    """Big tables live on huge pages (an mmap); they must behave like any zeroed numpy table."""
    t = kernels.hot_zeros(shape, np.uint8)
    if t.nbytes >= kernels.HUGE_TABLE_BYTES and hasattr(mmap, "MADV_HUGEPAGE"):
        assert t.ctypes.data % (2 << 20) == 0  # on the mmap path, starting on a huge-page boundary
    assert t.shape == shape
    assert t.dtype == np.uint8
    assert t.flags.c_contiguous
    assert t.flags.writeable
    assert not t.any()
    t[-1, -1] = 7
    assert t.sum() == 7
    values = np.random.default_rng(0).random(shape, dtype=np.float32)
    c = kernels.hot_copy(values)
    np.testing.assert_array_equal(c, values)
    assert c.dtype == np.float32


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_populated_tables_are_backed_in_the_background_and_still_zero():
    """``populate=True``: the OS backs the whole table at once, on a thread (``MADV_POPULATE_WRITE``);
    without it, a fresh table takes no memory until written.  Either way it reads as zeros."""
    shape = (64, 1 << 20)  # 64 MB
    before = _resident_mb()
    lazy = kernels.hot_zeros(shape, np.uint8)
    assert _resident_mb() - before < 16
    populated = kernels.hot_zeros(shape, np.uint8, populate=True)
    release = tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
    if release < (5, 14):  # the kernel does not know the advice: nothing is done
        pytest.skip("MADV_POPULATE_WRITE needs Linux 5.14")
    deadline = time.monotonic() + 60
    while _resident_mb() - before < 48 and time.monotonic() < deadline:  # the thread runs on
        time.sleep(0.01)
    assert _resident_mb() - before >= 48
    assert not populated.any() and not lazy.any()
    populated[5, 7] = 3
    assert int(populated.sum()) == 3


def test_compiled_feed_passes_match_their_numpy_twins(monkeypatch):
    """Targeting matrix, frequency bump and the sessions' CDF search, compiled (one thread and
    all cores) against the numpy expressions they replace."""
    if kernels.numba is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(3)
    n_users, n_seg, n_ads = 5_000, 48, 30
    segment = rng.integers(0, n_seg, n_users).astype(np.int16)
    interest_bits = rng.integers(0, 1 << 12, n_users).astype(np.int64)
    users = rng.integers(0, n_users, 20_000).astype(np.int32)
    seg_ok = rng.random((7, n_seg)) < 0.6
    bits = np.where(rng.random(7) < 0.3, 0, rng.integers(1, 1 << 12, 7)).astype(np.int64)
    want = seg_ok.T[segment[users]] & (((interest_bits[users][:, None] & bits[None, :]) != 0) | (bits == 0)[None, :])
    assert 0 < want.mean() < 1
    freq = rng.integers(0, 256, (n_users, n_ads)).astype(np.uint8)
    # Impressions of a batch: each one's session (of `users`) and column (of `col_ad`).
    session = rng.integers(0, users.size, 30_000)
    col_ad = rng.permutation(n_ads)[:20].astype(np.int32)
    col = rng.integers(0, col_ad.size, session.size).astype(np.int32)
    before = freq[users[session], col_ad[col]].copy()  # pairs listed twice carry the same count, as in a batch
    freq_want = freq.copy()
    freq_want[users[session], col_ad[col]] = np.minimum(before.astype(np.int16) + 1, 255).astype(np.uint8)
    assert (before == 255).any()  # the count saturates
    cdf = np.cumsum(rng.random(1_000))
    cdf /= cdf[-1]
    u = rng.permutation(np.concatenate([rng.random(5_000), cdf[:50], [0.0, 1.0]]))  # values on the steps too
    guides = (kernels.cdf_guide(cdf), np.zeros(cdf.size, dtype=np.int32), rng.integers(0, cdf.size, cdf.size).astype(np.int32))
    for threads in (1, 2):
        monkeypatch.setattr(kernels, "PARALLEL_PAIRS", 1 if threads == 2 else 10**12)
        for table_bytes in (kernels.ADMIT_TABLE_BYTES, 0):  # word by word (AdmitTables), then group by group
            monkeypatch.setattr(kernels, "ADMIT_TABLE_BYTES", table_bytes)
            assert (kernels.admit_tables(seg_ok, bits) is None) == (table_bytes == 0)
            got, counts = kernels.admitted(seg_ok, bits, users, segment, interest_bits)
            assert got.shape == (users.size, 8)  # seven groups, a whole word per row
            np.testing.assert_array_equal(got[:, :7], want)
            assert not got[:, 7:].any()
            np.testing.assert_array_equal(counts, want.sum(axis=0))
            got, counts = kernels.admitted(seg_ok[:0], bits[:0], users, segment, interest_bits)  # no groups
            assert got.shape == (users.size, 0)
            assert counts.shape == (0,)
        got = freq.copy()
        kernels.bump_frequency(got, users, session, col_ad, col, before)
        np.testing.assert_array_equal(got, freq_want)
        monkeypatch.setattr(kernels, "PARALLEL_SEARCH", 1 if threads == 2 else 10**12)
        for guide in guides:  # the guide says only where to start: a wrong one gives the same answers
            np.testing.assert_array_equal(kernels.search_cdf(cdf, guide, u), np.searchsorted(cdf, u, side="right"))
    for parts in (3, 7, u.size + 5):
        out = np.empty(u.size, dtype=np.int64)
        kernels._guided_serial(cdf, guides[0], u, out, parts)
        np.testing.assert_array_equal(out, np.searchsorted(cdf, u, side="right"))
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)  # the numpy twins themselves
    got, counts = kernels.admitted(seg_ok, bits, users, segment, interest_bits)
    np.testing.assert_array_equal(got[:, :7], want)
    assert got.shape == (users.size, 8)
    assert not got[:, 7:].any()
    np.testing.assert_array_equal(counts, want.sum(axis=0))
    got = freq.copy()
    kernels.bump_frequency(got, users, session, col_ad, col, before)
    np.testing.assert_array_equal(got, freq_want)
    np.testing.assert_array_equal(kernels.search_cdf(cdf, guides[1], u), np.searchsorted(cdf, u, side="right"))
    monkeypatch.setattr(kernels, "HAVE_NUMBA", True)
    odd = np.array([np.nan, np.inf, -np.inf, 1e300, -1e300, -0.0, np.nextafter(1.0, 0.0), 1.0])
    np.testing.assert_array_equal(kernels.search_cdf(cdf, guides[0], odd), np.searchsorted(cdf, odd, side="right"))


def test_ledger_sums_compiled_and_numpy_give_the_same_floats(monkeypatch):
    """Compiled passes sum a batch per ad and per campaign; the numpy twin uses np.bincount.
    Both add the terms in impression order from zero, so the floats agree exactly, and both
    read each impression's ad and campaign through its column."""
    if kernels.numba is None:
        pytest.skip("numba is not installed")
    from simulator.engagement import Outcomes

    rng = np.random.default_rng(9)
    n, n_ads, n_camps = 20_000, 37, 11
    flags = {k: rng.random(n) < p for k, p in (("click", 0.1), ("like", 0.2), ("comment", 0.05), ("save", 0.1),
             ("share", 0.03), ("follow", 0.02), ("video_completion", 0.3), ("conversion", 0.02), ("bounce", 0.05))}  # fmt: skip
    out = Outcomes(**flags, order_value=np.where(flags["conversion"], rng.lognormal(4, 0.5, n).round(2), 0.0))
    col_ad = rng.permutation(n_ads)[:25].astype(np.int32)  # a batch's columns: some of the ads, each of a campaign
    col_camp = rng.integers(0, n_camps, col_ad.size).astype(np.int32)
    col = rng.integers(0, col_ad.size, n).astype(np.int32)
    ad, camp = col_ad[col], col_camp[col]
    event = rng.random(n) < 0.3
    amount = np.where(event, rng.integers(1, 3_000_000, n), 0)
    over = event & (rng.random(n) < 0.03)
    slot, view = rng.integers(0, 3, n), np.array([1.0, 0.7, 0.5])
    lift = rng.random(n) * 2.1
    weights = {"like": 1.0, "save": 2.0, "comment": 3.0, "share": 4.0, "follow": 5.0}
    args = (col, col_ad, col_camp, n_ads, n_camps, slot, out, amount, over, rng.random(n), lift, view, weights, 1_000_000)
    monkeypatch.setattr(kernels, "PARALLEL_LEDGER", n + 1)
    one_ad, one_camp = kernels.ledger_sums(*args)  # one thread
    monkeypatch.setattr(kernels, "PARALLEL_LEDGER", 0)
    per_ad, per_camp = kernels.ledger_sums(*args)  # the threads split the sums between them (if numba has several)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    ref_ad, ref_camp = kernels.ledger_sums(*args)
    for got_ad, got_camp in ((one_ad, one_camp), (per_ad, per_camp)):
        np.testing.assert_array_equal(got_ad, ref_ad)
        np.testing.assert_array_equal(got_camp, ref_camp)
    parts = kernels._LEDGER_PARTS  # each sum in one table of the compiled pass
    assert sorted(name for k in (0, 1, 3, 4) for name in parts[k]) == sorted(kernels.AD_SUMS)
    assert sorted(parts[2] + parts[5]) == sorted(kernels.CAMPAIGN_SUMS)
    row = dict(zip(kernels.AD_SUMS, per_ad, strict=True))
    assert per_ad.shape == (len(kernels.AD_SUMS), n_ads)
    assert row["impressions"].sum() == n
    assert row["impressions"][np.setdiff1d(np.arange(n_ads), col_ad)].sum() == 0  # ads without a column
    billed = np.where(over, 0, amount)
    assert over.sum() > 0
    assert per_camp[kernels.CAMPAIGN_SUMS.index("spend_micro")].sum() == billed.sum()
    np.testing.assert_array_equal(row["spend_micro"], np.bincount(ad, weights=billed, minlength=n_ads))
    np.testing.assert_array_equal(row["unbilled_events"], np.bincount(ad, weights=over, minlength=n_ads))
    np.testing.assert_array_equal(row["unbilled_value"], np.bincount(ad, weights=np.where(over, amount, 0) / 1e6, minlength=n_ads))
    np.testing.assert_array_equal(row["exposure"], np.bincount(ad, weights=lift * view[slot], minlength=n_ads))
    np.testing.assert_array_equal(row["likes"], np.bincount(ad, weights=flags["like"], minlength=n_ads))
    np.testing.assert_array_equal(per_camp[0], np.bincount(camp, minlength=n_camps))


def test_counter_uniforms_are_splitmix64_and_the_compiled_ones_equal_them():
    """The responses' uniforms: SplitMix64's outputs (the reference's first three from seed 0), top
    53 bits; the compiled pass's one-at-a-time version gives the same numbers, for keys and counters
    of every size."""
    first = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    np.testing.assert_array_equal(kernels.counter_uniforms(0, np.arange(3)), [(x >> 11) * 2.0**-53 for x in first])
    if kernels.numba is None:
        return
    rng = np.random.default_rng(8)
    for key in (0, 1, 2**63 - 1, 2**63, 2**64 - 1, kernels.batch_key(rng)):
        counter = np.concatenate([np.arange(50), rng.integers(0, 2**62, 200), [2**63 - 1]])
        got = [kernels.counter_uniform(np.uint64(key), np.int64(c)) for c in counter]
        np.testing.assert_array_equal(got, kernels.counter_uniforms(key, counter))
        if key < 2**63:  # a key typed int64 gives the same numbers (no sign shifted in)
            got = [kernels.counter_uniform(np.int64(key), np.int64(c)) for c in counter[:20]]
            np.testing.assert_array_equal(got, kernels.counter_uniforms(key, counter[:20]))


def test_the_responses_read_uniform_e_of_slot_k_of_session_s_at_its_own_counter():
    """Counter ``((first + s) x n_slots + k) x 10 + e``, written out by hand for a few draws."""
    from types import SimpleNamespace

    from simulator import respond

    w = SimpleNamespace(u=None, u_key=987654321, u_first=7, n_slots=3)
    got = respond.uniforms(w, np.array([0, 0, 2, 5]), np.array([0, 2, 1, 0]))
    for row, (s, k) in enumerate([(0, 0), (0, 2), (2, 1), (5, 0)]):
        for e in (0, 6, 9):
            want = kernels.counter_uniforms(987654321, np.array([((7 + s) * 3 + k) * 10 + e]))[0]
            assert got[row, e] == want
    given = np.random.default_rng(1).random((6, 3, 10))  # given draws are read as they are
    w = SimpleNamespace(u=given, u_key=987654321, u_first=7, n_slots=3)
    np.testing.assert_array_equal(respond.uniforms(w, np.array([5]), np.array([2])), given[[5], [2]])


def test_counter_uniforms_look_uniform_and_independent():
    """On [0, 1), uniform (Kolmogorov-Smirnov), neighbours uncorrelated, and another key another stream."""
    key = kernels.batch_key(np.random.default_rng(2))
    n = 200_000
    u = kernels.counter_uniforms(key, np.arange(n))
    assert 0.0 <= u.min() and u.max() < 1.0
    ks = np.abs(np.sort(u) - np.arange(n) / n).max()  # Kolmogorov-Smirnov distance (within 1/n)
    assert ks < 1.95 / np.sqrt(n)  # the 0.1 % critical value
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01
    lanes = u.reshape(-1, kernels.UNIFORMS)  # the uniforms of one slot, event by event
    assert np.abs(np.corrcoef(lanes.T) - np.eye(kernels.UNIFORMS)).max() < 0.03
    other = kernels.counter_uniforms(key + 1, np.arange(200_000))
    assert abs(np.corrcoef(u, other)[0, 1]) < 0.01 and not np.any(u == other[::-1])


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE 10000"), ("ACTIVE", "ACTIVE -")])
def test_openmp_workers_spin_briefly_unless_the_user_says_otherwise(given, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if given:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run(
        [sys.executable, "-c", "import os, simulator; print(os.environ['OMP_WAIT_POLICY'], os.environ.get('GOMP_SPINCOUNT', '-'))"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == expected


def _search_in_child(cdf, u, expected, q):
    q.put(bool(np.array_equal(kernels.search_cdf(cdf, kernels.cdf_guide(cdf), u), expected)))


def test_a_child_forked_after_threaded_passes_runs_them_serially():
    """numba's OpenMP layer kills a child forked after the parent's threads started, at its first
    threaded pass; such a child takes the serial passes instead and gets the same numbers."""
    if not kernels.HAVE_NUMBA or kernels.numba.get_num_threads() < 2:
        pytest.skip("needs numba with two threads")
    import multiprocessing as mp

    rng = np.random.default_rng(2)
    cdf = np.cumsum(rng.random(1000))
    u = rng.random(200_000) * cdf[-1]
    assert kernels.use_threads(u.size, kernels.PARALLEL_SEARCH)
    expected = np.searchsorted(cdf, u, side="right")
    out = np.empty(u.size, dtype=np.int64)
    kernels._guided_parallel(cdf, kernels.cdf_guide(cdf), u, out, 2)  # this process's threads start
    np.testing.assert_array_equal(out, expected)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_search_in_child, args=(cdf, u, expected, q))
    child.start()
    child.join(120)
    if child.is_alive():  # (a hung child would otherwise keep pytest from exiting)
        child.kill()
        child.join()
    assert child.exitcode == 0
    assert q.get(timeout=5)
    assert kernels.use_threads(u.size, kernels.PARALLEL_SEARCH)  # the parent keeps its threads
