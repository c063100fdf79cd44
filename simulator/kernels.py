"""Hot kernels: Ad Rank of every eligible (session, ad) pair and each session's top slots.

Two implementations that give bit-identical results:

* ``rank_top_numpy`` / ``select_numpy``: whole-matrix numpy (the reference, always available);
* ``rank_top_numba`` / ``select_numba``: one fused pass per session (``scan_sessions``),
  compiled with numba (over sessions on all cores for large batches), keeping the
  best ``n_slots + 1`` ads in a small insertion-sorted buffer instead of building
  the rank matrix, and scanning only the ads whose rank bound can still win
  (``pruning_order``).

Both compute, for ad ``j`` in session ``s``::

    value = per_event[j] (x device_mult[device[s], j])       # yuan per billing event
    rate  = base_rate[j] x lift[s, j] ** lift_power[j]       # predicted billing events per impression
    rank  = value x rate x qs_factor[j]                      # qs_factor = QS / 10

in that order of floating-point operations, and rank ads by it, ties going to
the lower column index (the caller permutes columns at random, which makes
the tie break random).  Ads ranked below ``floor`` (or not eligible) win nothing.
``ADSIM_NUMBA=0`` in the environment forces the numpy path.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import sys
import threading
import types
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# numba would compile loops of exp or log with Intel's SVML where it finds it installed (icc_rt), whose
# results differ from the C library's in the last place: the runs' tables would then depend on the
# installation (see c_math).  (Only if numba has not been imported before this module.)
os.environ.setdefault("NUMBA_DISABLE_INTEL_SVML", "1")

try:  # numba is a dependency, but the numpy path keeps working without it
    import numba
    import numba.extending

    HAVE_NUMBA = os.environ.get("ADSIM_NUMBA", "1") != "0"
except ImportError:  # pragma: no cover
    numba = None
    HAVE_NUMBA = False

#: The simulator's files with compiled code.  Their compiled code calls (and inlines) functions of
#: the others, so each one's cache must go stale when any of them changes.
COMPILED_SOURCES = tuple(os.path.join(os.path.dirname(os.path.abspath(__file__)), f) for f in ("kernels.py", "respond.py"))


def _install_cache_stamps() -> bool:
    """Make numba's file cache of the simulator's compiled functions go stale when any file of
    :data:`COMPILED_SOURCES` changes, not only the function's own.

    numba checks only the file a cached function is defined in.  The response passes in
    ``respond.py`` inline ``kernels.scan_sessions``: after a change to ``kernels.py`` alone (a
    ``git pull``, an edit), a checkout's cache would keep running the old scan in them, while a
    fresh clone runs the new one.  The locators registered here are numba's own two file-backed
    ones, for the simulator's files only, with every compiled file's modification time and size
    added to the stamp.  (numba's locator list is internal: where it is not found, caching works
    as numba's does.)  Returns whether they are registered.
    """
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover
        return False
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)  # (renamed in numba 0.58)
    classes = getattr(impl, "_locator_classes", None)
    if not isinstance(classes, list):  # pragma: no cover
        return False
    if any(getattr(c, "adsim_stamps", False) for c in classes):
        return True

    def stamped(base: type) -> type:
        class Locator(base):
            adsim_stamps = True

            def get_source_stamp(self):
                own = super().get_source_stamp()
                return own, tuple((st.st_mtime, st.st_size) for st in map(os.stat, COMPILED_SOURCES))

            @classmethod
            def from_function(cls, py_func, py_file):
                if os.path.abspath(py_file) not in COMPILED_SOURCES:
                    return None
                return super().from_function(py_func, py_file)

        Locator.__name__ = Locator.__qualname__ = "Adsim" + base.__name__
        return Locator

    bases = [getattr(caching, n, None) for n in ("UserProvidedCacheLocator", "InTreeCacheLocator")]
    if not all(isinstance(b, type) for b in bases):  # pragma: no cover
        return False
    classes[0:0] = [stamped(b) for b in bases]
    return True


CACHE_STAMPS = numba is not None and _install_cache_stamps()


#: Tables at least this large are given transparent huge pages where the OS offers them (Linux):
#: the first touch of a fresh table and the kernels' random reads into it then take 2 MB pages
#: instead of 4 KB ones, so far fewer page faults and TLB misses.  Values are unchanged.
HUGE_TABLE_BYTES = 4 << 20
_HUGE = 2 << 20


def hot_zeros(shape: int | tuple[int, ...], dtype: np.typing.DTypeLike, populate: bool = False) -> NDArray:
    """A zeroed table for random access by the kernels (huge pages when large, see ``HUGE_TABLE_BYTES``).

    ``populate``: the OS backs the whole table with memory at once, in a background thread (see
    :func:`populate_in_background`), for a table that will be written all over anyway.
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    nbytes = count * dtype.itemsize
    if nbytes < HUGE_TABLE_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.zeros(shape, dtype=dtype)
    buf = mmap.mmap(-1, nbytes + _HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # zero-filled by the OS
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # a kernel without transparent huge pages: the advice is only a hint
        pass
    offset = -np.frombuffer(buf, dtype=np.uint8, count=1).ctypes.data % _HUGE  # start on a 2 MB boundary
    table = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape)
    if populate:
        populate_in_background(table)
    return table


#: ``MADV_POPULATE_WRITE`` (Linux 5.14): fault a range in, writable, in one call.
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def populate_in_background(table: NDArray) -> threading.Thread | None:
    """Have the OS back ``table``'s pages with memory now, on a background thread.

    A fresh table's pages are faulted in one by one at their first write, on the thread that writes,
    and on a virtual machine each fault may also wait for the host (a 200 MB frequency table: 0.3 to
    0.7 s here, against 0.05 s once its pages are backed).  ``madvise(MADV_POPULATE_WRITE)`` does it
    in one call, which ctypes runs without the GIL: the rest of the set-up (and the first, quiet
    hours of the day) go on meanwhile.  The pages are zero either way, so no value changes; where
    the call is not available (another OS, an older kernel) nothing is done.  Returns the thread.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError, TypeError):  # pragma: no cover - no C library to call
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    page = mmap.PAGESIZE
    start = table.ctypes.data // page * page
    length = table.ctypes.data + table.nbytes - start

    def run(keep_alive: NDArray) -> None:  # (the table stays alive while its pages are populated)
        madvise(start, length, _MADV_POPULATE_WRITE)  # an error (EINVAL: no such advice) leaves it to the faults

    thread = threading.Thread(target=run, args=(table,), name="adsim-populate", daemon=True)
    thread.start()
    return thread


def hot_copy(a: NDArray) -> NDArray:
    """``a`` copied into a :func:`hot_zeros` table (C order)."""
    out = hot_zeros(a.shape, a.dtype)
    out[...] = a
    return out


def hot_into(room: NDArray | None, a: NDArray) -> tuple[NDArray, NDArray]:
    """The vector ``a`` copied to the start of ``room`` (a 1-d :func:`hot_zeros` table of its dtype) if it
    fits, else into a new one with a quarter more room: ``(the copy, the room)``.

    For a table replaced every day: its pages are faulted in once, not every day (a 30 MB table's
    fresh pages cost 10 to 40 ms here).  The last copy in ``room`` is overwritten.
    """
    if room is None or room.dtype != a.dtype or room.size < a.size:
        room = hot_zeros(a.size + a.size // 4, a.dtype)
    out = room[: a.size]
    out[...] = a
    return out, room


def rank_top_numpy(
    eligible: NDArray[np.bool_],
    lift: NDArray[np.float32],
    device: NDArray[np.int8],
    per_event: NDArray[np.float64],
    device_mult: NDArray[np.float64] | None,
    base_rate: NDArray[np.float64],
    lift_power: NDArray[np.int8],
    qs_factor: NDArray[np.float64],
    n_slots: int,
    floor: float,
    value_lift: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """Reference implementation; see the module docstring.

    ``value_lift`` marks columns whose value per billing event also scales with the user's lift
    (oCPC: a click is worth target CPA x pCVR, and pCVR depends on the user).

    Returns
    -------
    order : int32 (n_sessions, n_slots + 1), column index per position, -1 where empty
    sorted_ranks : float64 (n_sessions, n_slots + 1), 0 where empty
    """
    n_s, n_a = eligible.shape
    width = n_slots + 1
    order = np.full((n_s, width), -1, dtype=np.int32)
    sorted_ranks = np.zeros((n_s, width))
    if n_s == 0 or n_a == 0:
        return order, sorted_ranks
    value = per_event[None, :] * device_mult.T[device] if device_mult is not None else np.broadcast_to(per_event, (n_s, n_a))
    lift64 = lift.astype(np.float64)
    if value_lift is not None and value_lift.any():
        value = np.where(value_lift[None, :], value * lift64, value)
    rate = np.where(lift_power[None, :] == 0, 1.0, lift64) * base_rate[None, :]
    rate = np.where(lift_power[None, :] == 2, rate * lift64, rate)
    ranks = value * rate * qs_factor[None, :]
    ranks = np.where(eligible & (ranks >= floor) & (ranks > 0), ranks, -1.0)
    take = min(width, n_a)
    top = np.argsort(-ranks, axis=1, kind="stable")[:, :take]
    top_ranks = np.take_along_axis(ranks, top, axis=1)
    present = top_ranks > 0
    order[:, :take] = np.where(present, top, -1)
    sorted_ranks[:, :take] = np.where(present, top_ranks, 0.0)
    return order, sorted_ranks


def rank_top_numba(
    eligible: NDArray[np.bool_],
    lift: NDArray[np.float32],
    device: NDArray[np.int8],
    per_event: NDArray[np.float64],
    device_mult: NDArray[np.float64] | None,
    base_rate: NDArray[np.float64],
    lift_power: NDArray[np.int8],
    qs_factor: NDArray[np.float64],
    n_slots: int,
    floor: float,
    value_lift: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """Compiled version of :func:`rank_top_numpy` (identical results), through the fused kernel.

    The given matrices become a batch in which each column is its own targeting group, each
    session its own "user" and the lift table is the lift matrix itself.
    """
    n_s, n_a = eligible.shape
    columns = np.arange(n_a, dtype=np.int32)
    batch = Batch(
        users=np.arange(n_s, dtype=np.int32), device=np.ascontiguousarray(device, dtype=np.int8),
        admitted=eligible, audience=np.ones((n_s, 0), dtype=bool), picks=np.zeros((n_s, 0), dtype=np.int8),
        u_part=np.zeros(n_s, dtype=np.float32), col_group=columns, col_audience=np.full(n_a, -1, dtype=np.int32),
        exhausted=np.zeros(n_a, dtype=bool), col_ad=columns, cap=0, col_multi=np.full(n_a, -1, dtype=np.int32),
        col_slot=np.zeros(n_a, dtype=np.int8), share=np.ones(n_a, dtype=np.float32),
        phase=np.zeros(n_a, dtype=np.float32), col_topic=columns, freq=np.zeros((n_s, n_a), dtype=np.uint8),
        user_lift=np.ascontiguousarray(lift, dtype=np.float32), per_event=per_event, device_mult=device_mult,
        base_rate=base_rate, lift_power=np.ascontiguousarray(lift_power, dtype=np.int8), qs_factor=qs_factor,
        n_slots=n_slots, floor=floor,
        value_lift=np.zeros(n_a, dtype=bool) if value_lift is None else np.asarray(value_lift, dtype=bool),
    )  # fmt: skip
    return select_numba(batch, parallel=False)


def rank_top(*args, **kwargs):
    """The fastest available implementation (numba unless ``ADSIM_NUMBA=0``)."""
    if HAVE_NUMBA:
        return rank_top_numba(*args, **kwargs)
    return rank_top_numpy(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Eligibility fused with ranking: one pass per session over the ads, no (sessions x ads) matrices.
# ----------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Everything the auction of one batch of sessions needs (S sessions, A ad columns).

    Per session: ``users`` (int32), ``device`` (int8), ``admitted`` (S, G' >= G) bool, whether each
    targeting group admits the user (:func:`admitted`: columns past the G groups unread); ``audience`` (S, N) bool for the N columns with an audience
    list; ``picks`` (S, M) int8, the creative drawn for each of M multi-creative campaigns;
    ``u_part`` (S,) float32, the session's participation draw.
    Per column: ``col_group``, ``col_audience`` (-1: none), ``exhausted``, ``col_ad`` (the ad's
    row in ``freq``), ``col_multi`` (-1: single creative) and ``col_slot`` (its creative number),
    ``share`` and ``phase`` (float32: the column enters when frac(u_part + phase) < share),
    ``col_topic`` (column of ``user_lift``), and the rank inputs of :func:`rank_top_numpy`.
    Tables: ``freq`` (n_users, n_ads) uint8 impressions today, ``user_lift`` (n_users, C) float32.
    """

    users: NDArray[np.int32]
    device: NDArray[np.int8]
    admitted: NDArray[np.bool_]
    audience: NDArray[np.bool_]
    picks: NDArray[np.int8]
    u_part: NDArray[np.float32]
    col_group: NDArray[np.int32]
    col_audience: NDArray[np.int32]
    exhausted: NDArray[np.bool_]
    col_ad: NDArray[np.int32]
    cap: int
    col_multi: NDArray[np.int32]
    col_slot: NDArray[np.int8]
    share: NDArray[np.float32]
    phase: NDArray[np.float32]
    col_topic: NDArray[np.int32]
    freq: NDArray[np.uint8]
    user_lift: NDArray[np.float32]
    per_event: NDArray[np.float64]
    device_mult: NDArray[np.float64] | None
    base_rate: NDArray[np.float64]
    lift_power: NDArray[np.int8]
    qs_factor: NDArray[np.float64]
    n_slots: int
    floor: float
    value_lift: NDArray[np.bool_]  # value per event x the user's lift (oCPC click bids)
    #: Exact pruning (see :func:`pruning_order`): the columns fall into buckets
    #: ``bucket_start[b]:bucket_start[b + 1]`` whose ranks scale with the session user's lift of
    #: ``bucket_topic[b]`` to the power ``bucket_power[b]``; ``bound`` (non-increasing inside a
    #: bucket) times that factor bounds each column's rank.  The compiled kernel stops scanning a
    #: bucket at the first column whose bound cannot beat the floor or the session's current last
    #: slot; the numpy path scans everything, and the two agree because the pruning only skips ads
    #: that cannot win.  ``None``: one bucket, no pruning.
    bound: NDArray[np.float64] | None = None
    bucket_start: NDArray[np.int32] | None = None
    bucket_topic: NDArray[np.int32] | None = None
    bucket_power: NDArray[np.int8] | None = None


def pruning_order(
    per_event: NDArray[np.float64],
    device_mult: NDArray[np.float64] | None,
    base_rate: NDArray[np.float64],
    lift_power: NDArray[np.int8],
    value_lift: NDArray[np.bool_],
    qs_factor: NDArray[np.float64],
    col_topic: NDArray[np.int32],
    topic_max_lift: NDArray[np.float64],
) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.int32], NDArray[np.int32], NDArray[np.int8]]:
    """Column order, rank bounds and buckets for the compiled kernel's exact pruning.

    A column's rank is ``b0 x lift ** e`` at most, where ``b0`` is its rank without the user's
    lift (at the best device, inflated by 1e-9 against rounding) and ``e = lift_power +
    value_lift`` the power of the user's lift of its topic in the rank.  Columns with the same
    topic and power form a bucket (all lift-free columns one bucket), sorted by ``b0``, best
    first; buckets come in order of their best bound over all users (``topic_max_lift``), so the
    kernel meets strong ads early.  The sorts are stable: columns with equal keys keep the
    caller's (random) order.

    Returns ``perm`` (apply to every per-column array), ``bound`` (``b0`` in the new order),
    ``bucket_start`` (B + 1), ``bucket_topic`` (B) and ``bucket_power`` (B).
    """
    power = lift_power.astype(np.int8) + value_lift.astype(np.int8)
    topic = np.where(power == 0, -1, col_topic).astype(np.int64)
    dev = device_mult.max(axis=1) if device_mult is not None else 1.0
    b0 = per_event * dev * base_rate * qs_factor * (1.0 + 1e-9)
    keys, bucket = np.unique((topic + 1) * 4 + power, return_inverse=True)
    k_topic, k_power = keys // 4 - 1, (keys % 4).astype(np.int8)
    best = np.zeros(keys.size)
    np.maximum.at(best, bucket, b0)
    best *= c_pow(np.where(k_topic >= 0, topic_max_lift[np.maximum(k_topic, 0)], 1.0), k_power)
    by_best = np.argsort(-best, kind="stable")
    place = np.empty(keys.size, dtype=np.int64)
    place[by_best] = np.arange(keys.size)
    perm = np.lexsort((-b0, place[bucket]))
    start = np.zeros(keys.size + 1, dtype=np.int32)
    start[1:] = np.cumsum(np.bincount(place[bucket], minlength=keys.size))
    return perm, b0[perm], start, np.maximum(k_topic[by_best], 0).astype(np.int32), k_power[by_best]


def eligibility(b: Batch) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
    """The (S, A) eligibility mask and relevance lift of a batch, as whole matrices (numpy)."""
    eligible = b.admitted[:, b.col_group]
    for j in np.flatnonzero(b.col_audience >= 0):
        eligible[:, j] &= b.audience[:, b.col_audience[j]]
    eligible &= ~b.exhausted[None, :]
    if b.cap > 0:
        eligible &= b.freq[b.users][:, b.col_ad] < b.cap
    for j in np.flatnonzero(b.col_multi >= 0):
        eligible[:, j] &= b.picks[:, b.col_multi[j]] == b.col_slot[j]
    partial = np.flatnonzero(b.share < 1.0)
    if partial.size:
        x = b.u_part[:, None] + b.phase[partial][None, :]
        frac = np.where(x >= np.float32(1.0), x - np.float32(1.0), x)
        eligible[:, partial] &= frac < b.share[partial][None, :]
    lift = b.user_lift[b.users][:, b.col_topic]
    return eligible, lift


def select_numpy(b: Batch) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """Eligibility, Ad Rank and top slots with whole-matrix numpy (the reference path)."""
    eligible, lift = eligibility(b)
    return rank_top_numpy(
        eligible, lift, b.device, b.per_event, b.device_mult, b.base_rate, b.lift_power, b.qs_factor, b.n_slots, b.floor,
        b.value_lift,
    )


#: How many sessions ahead the compiled kernels prefetch a user's rows (cache misses on the big
#: user tables are a large part of a session's cost at a million users).
PREFETCH_AHEAD = 8
#: Sessions per share of a parallel pass, at least (see :func:`n_shares`).
SHARE_SESSIONS = 32

if numba is not None:
    from llvmlite import ir as _ir
    from numba.core import cgutils as _cgutils
    from numba.core import types as _types

    @numba.extending.intrinsic
    def prefetch(typingctx, table, index):
        """Ask the CPU to fetch ``table[index]``'s cache line ahead of its use (a hint: no effect on results).

        ``index``: a tuple of ``table.ndim`` integers (``(i,)`` for a vector).
        """
        if not isinstance(table, _types.Array) or not isinstance(index, _types.BaseTuple) or len(index) != table.ndim:
            return None
        sig = _types.void(table, index)

        def codegen(context, builder, signature, args):
            aryty, idxty = signature.args
            ary = context.make_array(aryty)(context, builder, args[0])
            values = _cgutils.unpack_tuple(builder, args[1], len(idxty))
            inds = [context.cast(builder, v, t, _types.intp) for v, t in zip(values, idxty, strict=True)]
            ptr = _cgutils.get_item_pointer2(
                context, builder, data=ary.data, shape=_cgutils.unpack_tuple(builder, ary.shape),
                strides=_cgutils.unpack_tuple(builder, ary.strides), layout=aryty.layout, inds=inds,
                wraparound=False, boundscheck=False,
            )  # fmt: skip
            i8p, i32 = _ir.IntType(8).as_pointer(), _ir.IntType(32)
            fn = _cgutils.get_or_insert_function(
                builder.module, _ir.FunctionType(_ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8"
            )
            # read, keep in all cache levels, data
            builder.call(fn, [builder.bitcast(ptr, i8p), _ir.Constant(i32, 0), _ir.Constant(i32, 3), _ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen

    @numba.njit(cache=True, nogil=True, inline="always")
    def n_shares(n):
        """How many shares a pass over ``n`` sessions is cut into for the threads: up to 64, of at least
        :data:`SHARE_SESSIONS` sessions each (and two, if there are two sessions).  Each share starts
        its prefetching afresh, so many small shares of a small block would wait on memory."""
        return min(64, max(min(n, 2), n // SHARE_SESSIONS))

    @numba.njit(cache=True, nogil=True, inline="always")
    def at(i):
        """The index ``i``, known to be >= 0, as unsigned: numba then reads ``a[at(i)]`` without
        first checking for a negative index to count from the end (in the scans' inner loops,
        where that check is a good part of the work).  Never for an index that may be -1."""
        return np.uint64(i)

    @numba.njit(cache=True, nogil=True)
    def prefetch_rows(u, user_lift, freq):
        """Prefetch user ``u``'s rows of ``user_lift`` and ``freq`` (a hint: no effect on results)."""
        prefetch(user_lift, (u, 0))
        prefetch(user_lift, (u, user_lift.shape[1] - 1))  # a row may straddle two cache lines
        for c in range(0, freq.shape[1], 64):
            prefetch(freq, (u, c))
        prefetch(freq, (u, freq.shape[1] - 1))


    #: The parallel compilations parallelize their ``prange`` loops and nothing else: the bodies
    #: write their loops out, so the passes that would turn array expressions into parallel loops
    #: or fuse them find nothing to do, and cost compile time on a cold cache.
    PRANGE_ONLY = {
        "prange": True, "comprehension": False, "reduction": False, "inplace_binop": False, "setitem": False,
        "numpy": False, "stencil": False, "fusion": False,
    }  # fmt: skip

    def _prange_only():
        """:data:`PRANGE_ONLY` as numba's options object: numba reads a dict by popping its keys, so the
        dict left in a kernel's options would be empty at its next compilation (another signature),
        which would then take every parallel option."""
        from numba.core.cpu_options import ParallelOptions

        return ParallelOptions(dict(PRANGE_ONLY))

    def serial_and_parallel(fn, name):
        """``fn`` compiled twice, on one thread and with ``numba.prange`` over all cores.

        The two get their own names (``name + "_serial"``, ``name + "_parallel"``): numba's file cache
        keys a function by name and signature, not by its compile flags, so two compilations of
        one function would share one cache entry, and both would load whichever was compiled first.
        """

        def renamed(suffix):
            clone = types.FunctionType(fn.__code__, fn.__globals__, name + suffix, fn.__defaults__, fn.__closure__)
            clone.__qualname__ = name + suffix
            return clone

        return (
            numba.njit(parallel=False, cache=True, nogil=True)(renamed("_serial")),
            numba.njit(parallel=_prange_only(), cache=True, nogil=True)(renamed("_parallel")),
        )

    @numba.njit(cache=True, nogil=True)
    def scan_sessions(
        sessions, w0, w1, order, sorted_ranks, mults, tops,
        users, device, admitted, audience, picks, u_part, col_group, col_audience, exhausted, col_ad, cap,
        col_multi, col_slot, share, phase, col_topic, freq, user_lift, per_event, device_mult, has_device,
        base_rate, lift_power, qs_factor, width, floor, value_lift, bound, bin_cols, bin_start, bucket_topic,
        bucket_power, first_bound,
    ):  # fmt: skip
        """Sessions ``sessions[w0 .. w1 - 1]`` (``sessions`` empty: ``w0 .. w1 - 1``): each one's best
        ``width`` columns into its row of ``order`` and ``sorted_ranks`` (reset here).

        A session scans the column list of its participation draw's bin ``rb`` (:func:`throttle_bins`):
        the columns its pacing throttle might let in, bucket ``b`` at
        ``bin_start[rb, b]:bin_start[rb, b + 1]`` of ``bin_cols[rb]``, in the bucket's order.

        ``first_bound[rb, b]``: the bound of the bin's first column in bucket ``b`` (-1: none), which
        times the user's lift factor of the bucket bounds every rank in it.  Buckets are scanned
        best bound first, each picked when the last one is done (most sessions fill their slots from
        two or three of them, so sorting all of them would cost more).

        ``mults`` and ``tops`` are scratch space of one entry per bucket.  (One call scans
        many sessions: a call per session would pass the forty arrays each time, and count references
        to each.)
        """
        n_buckets = bucket_power.shape[0]
        n_bins = bin_cols.shape[0]
        one = np.float32(1.0)
        listed = sessions.shape[0] > 0
        for w in range(w0, min(w0 + PREFETCH_AHEAD, w1)):  # the first sessions' rows, all at once
            s_first = sessions[w] if listed else w
            prefetch_rows(users[s_first], user_lift, freq)
            if listed:
                prefetch(admitted, (s_first, 0))
        for w in range(w0, w1):
            s = at(sessions[w] if listed else w)
            if w + PREFETCH_AHEAD < w1:  # a later session's rows (a hint: no effect on results)
                s_next = sessions[w + PREFETCH_AHEAD] if listed else w + PREFETCH_AHEAD
                prefetch_rows(users[s_next], user_lift, freq)
                if listed:
                    prefetch(admitted, (s_next, 0))
            for p in range(width):
                order[s, p] = -1
                sorted_ranks[s, p] = 0.0
            u = at(users[s])
            dev = at(device[s])
            count = 0
            rb = at(min(int(np.float64(u_part[s]) * n_bins), n_bins - 1))  # its throttle bin
            # This user's lift factor of each bucket, and the buckets in order of their best bound.
            # The best bucket (the first of equals) is found on the way: the first pick needs no pass.
            best_b, best_top = 0, 0.0
            for b in range(n_buckets):
                mult = 1.0
                e = bucket_power[b]
                if e > 0:
                    lf_b = np.float64(user_lift[u, at(bucket_topic[b])])
                    if e == 1:
                        mult = lf_b
                    elif e == 2:
                        mult = lf_b * lf_b
                    else:
                        mult = lf_b * lf_b * lf_b
                        for _ in range(e - 3):
                            mult = mult * lf_b
                mults[b] = mult
                top = first_bound[rb, b] * mult
                top = top if top == top else np.inf  # (a NaN bound is scanned, never pruned)
                tops[b] = top
                if b == 0 or top > best_top:
                    best_b, best_top = b, top
            for pick in range(n_buckets):
                if pick == 0:
                    b, top = best_b, best_top
                else:
                    b = 0  # the best bucket not scanned yet (the first of equals)
                    top = tops[0]
                    for c in range(1, n_buckets):
                        if tops[c] > top:
                            top = tops[c]
                            b = c
                if top < floor or (count == width and top < sorted_ranks[s, width - 1]):
                    break  # the best bucket left cannot win a slot: nothing further can
                tops[b] = -np.inf  # (scanned)
                mult = mults[b]
                for q in range(bin_start[rb, b], bin_start[rb, b + 1]):
                    j = bin_cols[rb, q]
                    ju = at(j)
                    bj = bound[ju] * mult
                    if bj < floor or (count == width and bj < sorted_ranks[s, width - 1]):
                        break  # bounds fall along the bucket: nobody after j in it can win
                    # The budget, the pacing throttle and the targeting in one test, without a branch
                    # each: they turn columns away at random, and a mispredicted branch costs more
                    # than the reads.
                    sh = share[ju]
                    x = u_part[s] + phase[ju]
                    x = x - one if x >= one else x
                    if not ((not exhausted[ju]) & ((not (sh < one)) | (x < sh)) & admitted[s, at(col_group[ju])]):
                        continue
                    a = col_audience[ju]
                    if a >= 0 and not audience[s, at(a)]:
                        continue
                    if cap > 0 and freq[u, at(col_ad[ju])] >= cap:
                        continue
                    m = col_multi[ju]
                    if m >= 0 and picks[s, at(m)] != col_slot[ju]:
                        continue
                    v = per_event[ju]
                    if has_device:
                        v = v * device_mult[dev, ju]
                    lf = np.float64(user_lift[u, at(col_topic[ju])])
                    v = v * lf if value_lift[ju] else v
                    lp = lift_power[ju]
                    rate = (lf if lp != 0 else 1.0) * base_rate[ju]
                    rate = rate * lf if lp == 2 else rate
                    r = v * rate * qs_factor[ju]
                    if not (r >= floor and r > 0.0):
                        continue
                    # Ties go to the lower column index, whatever order the buckets are scanned in.
                    last_r = sorted_ranks[s, width - 1]
                    if count == width and (r < last_r or (r == last_r and j > order[s, width - 1])):
                        continue
                    p = count if count < width else width - 1
                    while p > 0 and (sorted_ranks[s, p - 1] < r or (sorted_ranks[s, p - 1] == r and order[s, p - 1] > j)):
                        sorted_ranks[s, p] = sorted_ranks[s, p - 1]
                        order[s, p] = order[s, p - 1]
                        p -= 1
                    sorted_ranks[s, p] = r
                    order[s, p] = j
                    if count < width:
                        count += 1

    def _select_body(
        s0, s1, order, sorted_ranks,
        users, device, admitted, audience, picks, u_part, col_group, col_audience, exhausted, col_ad, cap,
        col_multi, col_slot, share, phase, col_topic, freq, user_lift, per_event, device_mult, has_device,
        base_rate, lift_power, qs_factor, width, floor, value_lift, bound, bin_cols, bin_start, bucket_topic,
        bucket_power, first_bound,
    ):  # fmt: skip
        """Sessions ``s0 .. s1 - 1``' best ``width`` columns into their rows of ``order`` and ``sorted_ranks``,
        in blocks of sessions shared among the threads (prange)."""
        n_s = s1 - s0
        n_buckets = bucket_power.shape[0]
        n_blocks = n_shares(n_s)
        mults = np.empty((n_blocks, n_buckets))
        tops = np.empty((n_blocks, n_buckets))
        all_sessions = np.empty(0, dtype=np.int64)
        for blk in numba.prange(n_blocks):  # prange is a plain range in the serial compilation
            scan_sessions(
                all_sessions, s0 + blk * n_s // n_blocks, s0 + (blk + 1) * n_s // n_blocks, order, sorted_ranks,
                mults[blk], tops[blk], users, device, admitted, audience, picks, u_part, col_group,
                col_audience, exhausted, col_ad, cap, col_multi, col_slot, share, phase, col_topic, freq, user_lift,
                per_event, device_mult, has_device, base_rate, lift_power, qs_factor, width, floor, value_lift, bound,
                bin_cols, bin_start, bucket_topic, bucket_power, first_bound,
            )  # fmt: skip

    _select_serial, _select_parallel = serial_and_parallel(_select_body, "_select")

#: Batches with at least this many (session, ad) pairs use all cores; smaller ones run on one
#: thread (thread start-up costs more than it saves).  On this project's 2-core machine two
#: threads already scan 200 sessions x 100 ads in about half the time of one.
PARALLEL_PAIRS = 50_000


#: Set in a child forked after its parent started numba's threads (see :func:`use_threads`).
_forked_after_threads = [False]


def use_threads(work: int, threshold: int) -> bool:
    """Whether a compiled pass over ``work`` items should use all cores: at least ``threshold`` of
    them, and numba may run more than one thread (a batch of runs sets one per run).

    Never in a child forked after its parent started numba's threads: numba's OpenMP layer kills
    such a child at its first threaded pass (GNU OpenMP cannot be used across ``fork``), which
    leaves a user's ``fork`` pool waiting forever.  The child runs the serial passes: same results.
    """
    return work >= threshold and not _forked_after_threads[0] and numba.get_num_threads() > 1


def _after_fork_in_child() -> None:
    # (numba's own flag; should it ever go, every forked child is taken to have inherited threads)
    launched = numba is not None and getattr(getattr(numba.np.ufunc, "parallel", None), "_is_initialized", True)
    _forked_after_threads[0] = _forked_after_threads[0] or bool(launched)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def select_numba(b: Batch, parallel: bool | None = None) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """Fused eligibility + rank + top slots; identical to :func:`select_numpy`.

    ``parallel``: split sessions across cores (default: when the batch has ``PARALLEL_PAIRS``
    pairs or more and numba may use more than one thread).
    """
    n_s = b.users.size
    order, sorted_ranks = np.empty((n_s, b.n_slots + 1), dtype=np.int32), np.empty((n_s, b.n_slots + 1))
    select_rows(order, sorted_ranks, 0, n_s, kernel_args(b), parallel)
    return order, sorted_ranks


def select_rows(
    order: NDArray[np.int32], sorted_ranks: NDArray[np.float64], s0: int, s1: int, args: tuple, parallel: bool | None = None
) -> None:
    """:func:`select_numba` of sessions ``s0 .. s1 - 1`` only, into their rows of ``order`` and
    ``sorted_ranks``; ``args``: the batch's :func:`kernel_args` (their ``exhausted`` columns win nothing)."""
    if parallel is None:
        parallel = use_threads((s1 - s0) * args[KERNEL_ARGS.index("per_event")].size, PARALLEL_PAIRS)
    (_select_parallel if parallel else _select_serial)(s0, s1, order, sorted_ranks, *args)


#: The names of :func:`kernel_args`' entries, in order.
KERNEL_ARGS = (
    "users", "device", "admitted", "audience", "picks", "u_part", "col_group", "col_audience", "exhausted", "col_ad",
    "cap", "col_multi", "col_slot", "share", "phase", "col_topic", "freq", "user_lift", "per_event", "device_mult",
    "has_device", "base_rate", "lift_power", "qs_factor", "width", "floor", "value_lift", "bound", "bin_cols",
    "bin_start", "bucket_topic", "bucket_power", "first_bound",
)  # fmt: skip


def kernel_args(b: Batch) -> tuple:
    """The batch as the compiled kernels' argument list (contiguous arrays of the kernels' dtypes;
    entries named by :data:`KERNEL_ARGS`)."""
    has_device = b.device_mult is not None
    dm = np.ascontiguousarray(b.device_mult.T) if has_device else np.ones((2, b.per_event.size))
    return (
        b.users, b.device, np.ascontiguousarray(b.admitted), np.ascontiguousarray(b.audience),
        np.ascontiguousarray(b.picks), b.u_part, b.col_group, b.col_audience, b.exhausted, b.col_ad, int(b.cap),
        b.col_multi, b.col_slot, b.share, b.phase, b.col_topic, b.freq, b.user_lift,
        np.ascontiguousarray(b.per_event, dtype=np.float64), dm, has_device,
        np.ascontiguousarray(b.base_rate, dtype=np.float64), b.lift_power,
        np.ascontiguousarray(b.qs_factor, dtype=np.float64), b.n_slots + 1, float(b.floor),
        np.ascontiguousarray(b.value_lift, dtype=bool),
        *_buckets(b),
    )  # fmt: skip


def _buckets(b: Batch) -> tuple:
    """The kernel's pruning inputs: bound, the throttle bins' column lists (:func:`throttle_bins`),
    bucket topics and powers (one open bucket if none), and per bin and bucket the bound of its
    first column (-1 where the bin has none of the bucket's columns)."""
    n_a = b.per_event.size
    bound = np.full(n_a, np.inf) if b.bound is None else np.ascontiguousarray(b.bound, dtype=np.float64)
    if b.bucket_start is None:  # one bucket whose bound needs no lift (a global bound, or none)
        bin_cols, bin_start = throttle_bins(b.share, b.phase, np.array([0, n_a]))
        topic, power = np.zeros(1, np.int32), np.zeros(1, np.int8)
    else:
        bin_cols, bin_start = throttle_bins(b.share, b.phase, b.bucket_start)
        topic = np.ascontiguousarray(b.bucket_topic, dtype=np.int32)
        power = np.ascontiguousarray(b.bucket_power, dtype=np.int8)
    first, listed = bin_start[:, :-1], bin_start[:, 1:] > bin_start[:, :-1]
    first_bound = np.full(first.shape, -1.0)
    if n_a:
        first_bound[listed] = bound[np.take_along_axis(bin_cols, np.minimum(first, n_a - 1), axis=1)][listed]
    return bound, bin_cols, bin_start, topic, power, first_bound


#: Bins of the participation draw ``u_part`` (a power of two, so a draw's bin is exact).
THROTTLE_BINS = 32
#: Margin of :func:`throttle_bins`' test, far above float32 rounding near 1 and 2 (1e-7, 2e-7).
_THROTTLE_MARGIN = 1e-5


def throttle_bins(
    share: NDArray[np.float32], phase: NDArray[np.float32], bucket_start: NDArray
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """Per bin of ``u_part`` (:data:`THROTTLE_BINS` equal bins of [0, 1)), the columns the pacing
    throttle might let in, bucket by bucket in the columns' order.

    A column enters a session when ``frac(u_part + phase) < share`` (float32).  Over a bin's draws
    ``u_part + phase`` covers an interval; a column is left out of the bin only when that interval,
    widened by a margin, lies in ``[share, 1)`` or ``[1 + share, 2)``, so every column left out
    would fail the test for every draw in the bin: the kernel scanning only the listed columns
    finds the same winners.  Returns ``bin_cols`` (R, A), each row the bin's columns packed to
    the front, and ``bin_start`` (R, B + 1), where each bucket's columns start in that row.
    """
    return _throttle_bins(
        np.ascontiguousarray(share, dtype=np.float32), np.ascontiguousarray(phase, dtype=np.float32),
        np.ascontiguousarray(bucket_start, dtype=np.int64), THROTTLE_BINS, _THROTTLE_MARGIN,
    )  # fmt: skip


if numba is not None:

    @numba.njit(cache=True, nogil=True)
    def _throttle_bins(share, phase, bucket_start, n_bins, m):
        n_a, n_b = share.shape[0], bucket_start.shape[0] - 1
        bin_cols = np.zeros((n_bins, n_a), dtype=np.int32)
        bin_start = np.zeros((n_bins, n_b + 1), dtype=np.int32)
        for r in range(n_bins):
            lo_edge, hi_edge = r / n_bins - m, (r + 1) / n_bins + m
            n = 0
            for b in range(n_b):
                bin_start[r, b] = n
                for j in range(bucket_start[b], bucket_start[b + 1]):
                    sh, ph = np.float64(share[j]), np.float64(phase[j])
                    lo, hi = lo_edge + ph, hi_edge + ph
                    out = (lo >= sh + m and hi < 1.0 - m) or (lo >= 1.0 + sh + m and hi < 2.0 - m) or sh <= 0.0
                    if not out:
                        bin_cols[r, n] = j
                        n += 1
            bin_start[r, n_b] = n
        return bin_cols, bin_start


def select(b: Batch) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """The fastest available implementation (numba unless ``ADSIM_NUMBA=0``)."""
    return select_numba(b) if HAVE_NUMBA else select_numpy(b)


# ----------------------------------------------------------------------------------------------
# Smaller passes of the feed, compiled where numpy would gather at random or allocate temporaries.
# Each has a numpy twin that gives the same result (``ADSIM_NUMBA=0`` uses it).
# ----------------------------------------------------------------------------------------------

if numba is not None:

    @numba.njit(cache=True, nogil=True)
    def _column_sums(counts):
        """``counts.sum(axis=0)``, written out: numba's axis sum compiles for over a second on a cold cache."""
        out = np.zeros(counts.shape[1], dtype=np.int64)
        for r in range(counts.shape[0]):
            for g in range(counts.shape[1]):
                out[g] += counts[r, g]
        return out

    def _admitted_body(segment_ok, bits, users, segment, interest_bits, width):
        """``segment_ok`` (n_segments, G): each segment's row over the groups, so that a session's pass
        over the groups reads, writes and counts contiguous rows, without branches.  Rows of ``width``
        (>= G; the columns past G are False)."""
        n_s, n_g = users.shape[0], bits.shape[0]
        out = np.empty((n_s, width), dtype=np.bool_)
        n_blocks = min(n_s, 64)  # blocks of sessions, shared among the threads, each counting its own
        counts = np.zeros((max(n_blocks, 1), n_g), dtype=np.int64)
        any_interest = np.empty(n_g, dtype=np.bool_)  # (bits == 0, written out: the parallel compilation
        for g in range(n_g):  # turns no array expression into a parallel loop, see PRANGE_ONLY)
            any_interest[g] = bits[g] == 0
        for blk in numba.prange(n_blocks):  # a plain range in the serial compilation
            s1 = (blk + 1) * n_s // n_blocks
            tally = counts[blk]
            for s in range(blk * n_s // n_blocks, s1):
                if s + 16 < s1:  # a later session's user (a hint: no effect on results)
                    prefetch(segment, (users[s + 16],))
                    prefetch(interest_bits, (users[s + 16],))
                u = users[s]
                ok_row = segment_ok[segment[u]]
                ib = interest_bits[u]
                row = out[s]
                for g in range(n_g):
                    ok = ok_row[g] & (any_interest[g] | ((ib & bits[g]) != 0))
                    row[g] = ok
                    tally[g] += ok
                for g in range(n_g, width):
                    row[g] = False
        return out, _column_sums(counts)

    def _admitted_words_body(segment_words, interest_words, mask, users, segment, interest_bits):
        """:func:`_admitted_body` eight groups at a time: a session's row is the AND of its segment's row
        and its interests' row (:class:`AdmitTables`), word by word, and the counts add up byte-wise
        in one word per eight groups, emptied every 255 sessions (before a byte could carry)."""
        n_s, n_w = users.shape[0], segment_words.shape[1]
        out = np.empty((n_s, 8 * n_w), dtype=np.bool_)
        words = out.view(np.uint64)
        n_blocks = min(n_s, 64)
        counts = np.zeros((max(n_blocks, 1), 8 * n_w), dtype=np.int64)
        for blk in numba.prange(n_blocks):  # a plain range in the serial compilation
            s0, s1 = blk * n_s // n_blocks, (blk + 1) * n_s // n_blocks
            acc = np.zeros(n_w, dtype=np.uint64)
            held = 0
            for s in range(s0, s1):
                if s + 16 < s1:  # a later session's user (a hint: no effect on results)
                    prefetch(segment, (users[s + 16],))
                    prefetch(interest_bits, (users[s + 16],))
                u = users[s]
                a = segment_words[segment[u]]
                b = interest_words[interest_bits[u] & mask]
                for w in range(n_w):
                    x = a[w] & b[w]
                    words[s, w] = x
                    acc[w] += x
                held += 1
                if held == 255 or s == s1 - 1:
                    for w in range(n_w):
                        x = acc[w]
                        for k in range(8):
                            counts[blk, 8 * w + k] += np.int64((x >> np.uint64(8 * k)) & np.uint64(255))
                        acc[w] = 0
                    held = 0
        return out, _column_sums(counts)

    _admitted_words_serial, _admitted_words_parallel = serial_and_parallel(_admitted_words_body, "_admitted_words")
    _admitted_serial, _admitted_parallel = serial_and_parallel(_admitted_body, "_admitted")

    def _bump_body(freq, users, session, col_ad, col, before):
        for i in numba.prange(session.shape[0]):
            freq[at(users[at(session[i])]), at(col_ad[at(col[i])])] = min(np.int16(before[i]) + 1, 255)

    _bump_serial, _bump_parallel = serial_and_parallel(_bump_body, "_bump")


#: The largest interests table :func:`admit_tables` builds (bytes): past it, the targeting is
#: computed group by group.
ADMIT_TABLE_BYTES = 1 << 20


@dataclass(frozen=True)
class AdmitTables:
    """Targeting groups as 0/1 bytes, eight groups to a uint64 word (groups past the last: 0), so a
    session's row of :func:`admitted` is ``segment_words[segment] & interest_words[interest_bits &
    mask]``: ``segment_words`` (n_segments, W) and ``interest_words`` (2 ** b, W), over every value
    of the bits any group asks for (``mask``)."""

    segment_words: NDArray[np.uint64]
    interest_words: NDArray[np.uint64]
    mask: int


def admit_tables(seg_ok: NDArray[np.bool_], bits: NDArray[np.int64]) -> AdmitTables | None:
    """:class:`AdmitTables` of groups ``seg_ok`` (G, n_segments), ``bits`` (G,); None when the groups'
    interest bits span more values than :data:`ADMIT_TABLE_BYTES` allows."""
    n_g = bits.size
    width = admitted_width(n_g)
    mask = int(np.bitwise_or.reduce(bits)) if n_g else 0
    if (1 << mask.bit_length()) * width > ADMIT_TABLE_BYTES or sys.byteorder != "little":
        return None  # (the counts read byte k of a word as group 8 w + k: little-endian only)
    seg = np.zeros((seg_ok.shape[1], width), dtype=np.bool_)
    seg[:, :n_g] = seg_ok.T
    values = np.arange(1 << mask.bit_length(), dtype=np.int64)
    interests = np.zeros((values.size, width), dtype=np.bool_)
    interests[:, :n_g] = (bits == 0)[None, :] | ((values[:, None] & bits[None, :]) != 0)
    return AdmitTables(seg.view(np.uint64), interests.view(np.uint64), mask)


def admitted_width(n_groups: int) -> int:
    """Columns of :func:`admitted`'s matrix: the groups, rounded up to a multiple of eight."""
    return -(-n_groups // 8) * 8


def admitted(
    seg_ok: NDArray[np.bool_], bits: NDArray[np.int64], users: NDArray[np.int32], segment: NDArray,
    interest_bits: NDArray[np.int64], tables: AdmitTables | None = None,
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """(S, G'): whether targeting group ``g`` admits session ``s``'s user, and (G,) how many sessions each admits.

    ``seg_ok`` (G, n_segments): the group's demographic segments; ``bits`` (G,): its interest
    bits (0: any interests), admitting users with at least one of them (``interest_bits``).
    The matrix has :func:`admitted_width` columns, those past the G groups False (rows of whole
    words).  ``tables``: the groups' :func:`admit_tables` when the caller keeps them (else built
    here).
    """
    n_g = bits.size
    width = admitted_width(n_g)
    if not HAVE_NUMBA:
        out = np.zeros((users.size, width), dtype=np.bool_)
        ok = seg_ok.T[segment[users]]
        if (bits != 0).any():
            ok &= ((interest_bits[users][:, None] & bits[None, :]) != 0) | (bits == 0)[None, :]
        out[:, :n_g] = ok
        return out, ok.sum(axis=0, dtype=np.int64)
    parallel = use_threads(users.size * bits.size, PARALLEL_PAIRS)
    if tables is None:
        tables = admit_tables(seg_ok, bits)
    if tables is None:
        kernel = _admitted_parallel if parallel else _admitted_serial
        return kernel(np.ascontiguousarray(seg_ok.T), bits, users, segment, interest_bits, width)
    kernel = _admitted_words_parallel if parallel else _admitted_words_serial
    out, counts = kernel(tables.segment_words, tables.interest_words, np.int64(tables.mask), users, segment, interest_bits)
    return out, counts[:n_g]


def bump_frequency(
    freq: NDArray[np.uint8], users: NDArray, session: NDArray, col_ad: NDArray, col: NDArray, before: NDArray[np.uint8]
) -> None:
    """``freq[users[session], col_ad[col]] = min(before + 1, 255)`` in place (per impression: its
    ``session`` of ``users`` and its ``col`` of ``col_ad``; ``before``: the pair's count before the
    batch, so a pair listed twice is written the same value twice)."""
    if not HAVE_NUMBA:
        freq[users[session], col_ad[col]] = np.minimum(before.astype(np.int16) + 1, 255).astype(np.uint8)
        return
    kernel = _bump_parallel if use_threads(session.size, PARALLEL_PAIRS) else _bump_serial
    kernel(freq, users, session, col_ad, col, before)


def cdf_guide(cdf: NDArray[np.float64]) -> NDArray[np.int32]:
    """A guide table for :func:`search_cdf` (Chen and Asau's indexed search): ``guide[m]`` is where
    ``m / M`` falls in ``cdf`` (``M = cdf.size``), so a uniform's search starts next to its answer."""
    return np.searchsorted(cdf, np.arange(cdf.size) / cdf.size, side="right").astype(np.int32)


def search_cdf(cdf: NDArray[np.float64], guide: NDArray[np.int32], u: NDArray[np.float64]) -> NDArray[np.int64]:
    """``np.searchsorted(cdf, u, side="right")`` (``cdf`` ascending and not NaN, ``u`` in any order), each
    search from ``guide``'s entry for ``u`` (:func:`cdf_guide`): a step or two along ``cdf`` instead of a
    binary search, on all cores for many ``u``.  Any guide gives the same answers; a good one, fast."""
    if not HAVE_NUMBA:
        return np.searchsorted(cdf, u, side="right")
    out = np.empty(u.size, dtype=np.int64)
    n_parts = numba.get_num_threads() if use_threads(u.size, PARALLEL_SEARCH) else 1
    (_guided_parallel if n_parts > 1 else _guided_serial)(cdf, guide, u, out, n_parts)
    return out


#: Searches at least this many are shared among the threads (:func:`search_cdf`).
PARALLEL_SEARCH = 20_000

if numba is not None:

    @numba.njit(cache=True, nogil=True, inline="always")
    def _guide_slot(x, m_size):
        """The guide's entry for ``x`` (clamped before it becomes an integer: huge and infinite ``x`` too)."""
        xm = x * m_size
        return 0 if not (xm > 0.0) else (m_size - 1 if xm >= m_size else np.int64(xm))

    def _guided_body(cdf, guide, u, out, n_parts):
        n, m_size = u.size, guide.size
        for p in numba.prange(n_parts):  # a plain range in the serial compilation
            i0, i1 = p * n // n_parts, (p + 1) * n // n_parts
            for i in range(i0, i1):
                # Two random reads a search: the guide's entry 16 searches ahead, then (now that it
                # has arrived) the cdf where the search 8 ahead starts (hints: no effect on results).
                if i + 16 < i1:
                    prefetch(guide, (_guide_slot(u[i + 16], m_size),))
                if i + 8 < i1:
                    prefetch(cdf, (min(np.int64(guide[_guide_slot(u[i + 8], m_size)]), cdf.size - 1),))
                x = u[i]
                if x != x:  # NaN sorts last
                    out[i] = cdf.size
                    continue
                j = np.int64(guide[_guide_slot(x, m_size)])
                while j > 0 and cdf[j - 1] > x:  # (the guide is only where to start)
                    j -= 1
                while j < cdf.size and cdf[j] <= x:
                    j += 1
                out[i] = j

    _guided_serial, _guided_parallel = serial_and_parallel(_guided_body, "_guided")


#: Rows of :func:`ledger_sums`' per-ad sums (the first ten are ``quality.AdStats``' fields).
AD_SUMS = (
    "impressions", "exposure", "clicks", "click_exposure", "engagements", "weighted_engagements", "conversions",
    "bounces", "relevance_sum", "follows", "likes", "comments", "saves", "shares", "video_completions", "order_value",
    "position_sum", "unbilled_events", "unbilled_value", "spend_micro",
)  # fmt: skip
#: Rows of its per-campaign sums.
CAMPAIGN_SUMS = ("impressions", "clicks", "engagements", "conversions", "spend_micro")

if numba is not None:

    def _ledger_body(
        n_parts, col, col_ad, col_camp, n_ads, n_camps, slot, click, like, comment, save, share, follow, video,
        conversion, bounce, order_value, amount, over, relevance, lift, view, weights, micro,
    ):  # fmt: skip
        """The sums, per ad and per campaign, in the tables of :data:`_LEDGER_PARTS`: counts and micro-yuan
        as integers (exact, and an integer add is quicker than a float one), the rest as floats.

        The work is split by sum, not by impression: part 0 (of ``n_parts``, one per thread) adds
        the first three tables, the last part the other three (one part: all six).  So each sum adds
        its terms in impression order, each part reads only its own inputs, no branch depends on
        the impression, and no two threads write to one table.  Each impression's ad, campaign,
        exposure and billed or unbilled micro-yuan are worked out here, from its column, slot and
        event, rather than gathered into arrays first."""
        n = col.shape[0]
        ints0, floats0, camps0 = np.zeros((n_ads, 7), np.int64), np.zeros((n_ads, 3)), np.zeros((n_camps, 3), np.int64)
        ints1, floats1, camps1 = np.zeros((n_ads, 7), np.int64), np.zeros((n_ads, 3)), np.zeros((n_camps, 2), np.int64)
        w_like, w_save, w_comment, w_share, w_follow = weights
        for p in numba.prange(n_parts):  # a plain range in the serial compilation
            if p == 0:
                for i in range(n):
                    j = at(col[i])
                    a, c = at(col_ad[j]), at(col_camp[j])
                    clk = np.int64(click[i])
                    engaged = np.int64(like[i] | comment[i] | save[i] | share[i])
                    ints0[a, 0] += 1
                    ints0[a, 1] += clk
                    ints0[a, 2] += engaged
                    ints0[a, 3] += np.int64(conversion[i])
                    ints0[a, 4] += np.int64(bounce[i])
                    ints0[a, 5] += np.int64(follow[i])
                    ints0[a, 6] += np.int64(like[i])
                    floats0[a, 0] += lift[i] * view[at(slot[i])]
                    floats0[a, 1] += lift[i] * np.float64(click[i])
                    floats0[a, 2] += (
                        w_like * np.float64(like[i]) + w_save * np.float64(save[i]) + w_comment * np.float64(comment[i])
                        + w_share * np.float64(share[i]) + w_follow * np.float64(follow[i])
                    )  # fmt: skip
                    camps0[c, 0] += 1
                    camps0[c, 1] += clk
                    camps0[c, 2] += engaged
            if p == n_parts - 1:
                for i in range(n):
                    j = at(col[i])
                    a, c = at(col_ad[j]), at(col_camp[j])
                    unbilled_micro = amount[i] * np.int64(over[i])
                    billed = amount[i] - unbilled_micro
                    ints1[a, 0] += np.int64(comment[i])
                    ints1[a, 1] += np.int64(save[i])
                    ints1[a, 2] += np.int64(share[i])
                    ints1[a, 3] += np.int64(video[i])
                    ints1[a, 4] += slot[i] + 1
                    ints1[a, 5] += np.int64(over[i])
                    ints1[a, 6] += billed
                    floats1[a, 0] += relevance[i]
                    floats1[a, 1] += order_value[i]
                    floats1[a, 2] += unbilled_micro / micro
                    camps1[c, 0] += np.int64(conversion[i])
                    camps1[c, 1] += billed
        return ints0, floats0, camps0, ints1, floats1, camps1

    _ledger_serial, _ledger_parallel = serial_and_parallel(_ledger_body, "_ledger")

#: Batches with at least this many impressions are summed on two cores (see :func:`ledger_sums`).
PARALLEL_LEDGER = 20_000
#: The compiled ledger's six tables (two parts of three), each column named by its row of :data:`AD_SUMS`
#: (the first two tables of each part) or :data:`CAMPAIGN_SUMS` (the third).
_LEDGER_PARTS = (
    ("impressions", "clicks", "engagements", "conversions", "bounces", "follows", "likes"),
    ("exposure", "click_exposure", "weighted_engagements"),
    ("impressions", "clicks", "engagements"),
    ("comments", "saves", "shares", "video_completions", "position_sum", "unbilled_events", "spend_micro"),
    ("relevance_sum", "order_value", "unbilled_value"),
    ("conversions", "spend_micro"),
)  # fmt: skip


def ledger_sums(
    col: NDArray, col_ad: NDArray, col_camp: NDArray, n_ads: int, n_camps: int, slot: NDArray, outcomes,  # noqa: ANN001
    amount: NDArray[np.int64], over: NDArray[np.bool_], relevance: NDArray, lift: NDArray, view: NDArray,
    weights: dict[str, float], micro: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A batch of impressions summed per ad (rows :data:`AD_SUMS`) and per campaign (:data:`CAMPAIGN_SUMS`).

    Per impression: ``col`` (its column: ad ``col_ad[col]`` of campaign ``col_camp[col]``), ``slot``,
    the ``outcomes``, ``amount`` (micro-yuan of its billing event, else 0), ``over`` (the event crossed
    the budget: unbilled), ``relevance`` and ``lift`` (exposure is ``lift x view[slot]``).
    Each sum adds its terms in impression order from zero, as ``np.bincount`` does, so both
    implementations give the same floats.  Counts and micro-yuan: the compiled pass adds them as
    integers, the numpy one as float64, the same numbers below 2**53.
    """
    o = outcomes
    w = (weights["like"], weights["save"], weights["comment"], weights["share"], weights["follow"])
    if HAVE_NUMBA:
        parallel = use_threads(col.size, PARALLEL_LEDGER)
        kernel = _ledger_parallel if parallel else _ledger_serial
        order_value, relevance, lift, view = (np.asarray(x, dtype=np.float64) for x in (o.order_value, relevance, lift, view))
        tables = kernel(
            min(2, numba.get_num_threads()) if parallel else 1, col, col_ad, col_camp, n_ads, n_camps, slot, o.click,
            o.like, o.comment, o.save, o.share, o.follow, o.video_completion, o.conversion, o.bounce, order_value,
            amount, over, relevance, lift, view, tuple(float(x) for x in w), micro,
        )  # fmt: skip
        per_ad, per_camp = np.empty((len(AD_SUMS), n_ads)), np.empty((len(CAMPAIGN_SUMS), n_camps))
        for k, (table, names) in enumerate(zip(tables, _LEDGER_PARTS, strict=True)):
            rows, index = (per_camp, CAMPAIGN_SUMS) if k % 3 == 2 else (per_ad, AD_SUMS)
            for col_of_table, name in enumerate(names):
                rows[index.index(name)] = table[:, col_of_table]
        return per_ad, per_camp
    ad, camp = col_ad[col], col_camp[col]
    unbilled_micro = np.where(over, amount, 0)
    billed = amount - unbilled_micro
    engaged = o.like | o.comment | o.save | o.share
    weng = w[0] * o.like + w[1] * o.save + w[2] * o.comment + w[3] * o.share + w[4] * o.follow
    per_ad_terms = (
        None, lift * view[slot], o.click, lift * o.click, engaged, weng, o.conversion, o.bounce, relevance, o.follow,
        o.like, o.comment, o.save, o.share, o.video_completion, o.order_value, slot + 1, over,
        unbilled_micro / micro, billed,
    )  # fmt: skip
    per_camp_terms = (None, o.click, engaged, o.conversion, billed)

    def sums(index: NDArray, n: int, terms: tuple) -> NDArray[np.float64]:
        return np.array(
            [np.bincount(index, weights=None if t is None else np.asarray(t, dtype=np.float64), minlength=n) for t in terms],
            dtype=np.float64,
        ).reshape(len(terms), n)

    return sums(ad, n_ads, per_ad_terms), sums(camp, n_camps, per_camp_terms)


# ----------------------------------------------------------------------------------------------
# The C library's exp, log1p, log10 and pow, whatever the CPU.
# ----------------------------------------------------------------------------------------------

#: The functions :func:`c_math` applies.
C_MATH = ("exp", "log1p", "log10")


#: Whether :func:`c_math` runs its compiled loop (a list, so that tests can switch to the Python one).
_C_MATH_COMPILED = [numba is not None]


def _py_math(fn):
    """``fn`` of the math module, with numpy's answers where Python's would raise (inf past exp's or
    pow's range, -inf at a logarithm's pole, nan outside its domain): what the C library returns.
    (For exp, log1p, log10, and pow of positive bases.)"""

    def safe(v: float, *more: float) -> float:
        try:
            return fn(v, *more)
        except OverflowError:
            return math.inf
        except ValueError:
            return -math.inf if v == (-1.0 if fn is math.log1p else 0.0) else math.nan

    return safe


def c_math(name: str, x: NDArray | float) -> NDArray[np.float64]:
    """``math.<name>`` (one of :data:`C_MATH`) of every element of ``x``, in float64, as the C library
    computes it.

    On CPUs with AVX-512, numpy computes float64 exp, log1p, log10 and pow with its own vector
    code, which differs from the C library's in the last place (on AVX2 CPUs it calls the C
    library).  Wherever such a value can decide something (a draw against a threshold, a
    rounding to cents, an order of columns), a run's tables would then depend on the CPU.  The
    compiled passes call the C library; every numpy-side value that feeds a decision goes
    through here: a compiled loop, or Python's math module (the same C library) without numba.
    """
    code = C_MATH.index(name)
    a = np.asarray(x, dtype=np.float64)
    flat = np.ascontiguousarray(a).reshape(-1)
    out = np.empty(flat.size)
    if _C_MATH_COMPILED[0]:  # (whenever numba is there, ADSIM_NUMBA=0 too: the same numbers, sooner)
        _c_math(code, flat, out)
    else:
        fn = _py_math(getattr(math, name))
        out[:] = [fn(v) for v in flat.tolist()]
    return out.reshape(a.shape)


def c_pow(base: NDArray, exponent: NDArray) -> NDArray[np.float64]:
    """``base ** exponent`` element by element, for positive bases, with the C library's pow (see
    :func:`c_math`; inf where it overflows); for the few values of a chunk's buckets."""
    b, e = np.broadcast_arrays(np.asarray(base, dtype=np.float64), np.asarray(exponent, dtype=np.float64))
    if not (b > 0.0).all():  # (where Python's pow raises for a base of 0 or below, C's may give inf or nan)
        raise ValueError("c_pow: positive bases only")
    pow_ = _py_math(math.pow)
    return np.array([pow_(u, v) for u, v in zip(b.ravel().tolist(), e.ravel().tolist(), strict=True)], dtype=np.float64).reshape(b.shape)


if numba is not None:

    @numba.njit(cache=True, nogil=True)
    def _c_math(code, x, out):
        for i in range(x.shape[0]):
            v = x[i]
            if code == 0:
                out[i] = math.exp(v)
            elif code == 1:
                out[i] = math.log1p(v)
            else:
                out[i] = math.log10(v)


#: Uniforms per slot of a session that the users' responses may read (engagement.draw's columns).
UNIFORMS = 10
# SplitMix64 (Steele, Lea and Flood 2014): a Weyl sequence, each step through a mixing finalizer.
_WEYL = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 2.0**-53


def counter_uniforms(key: int, counter: NDArray[np.integer]) -> NDArray[np.float64]:
    """Uniforms on [0, 1) that depend only on ``key`` and each ``counter`` (SplitMix64's output number
    ``counter + 1`` from seed ``key``, its top 53 bits): a counter-based generator.

    The responses draw their uniforms so, uniform ``e`` of slot ``k`` of session ``s`` of a batch
    at counter ``(s x n_slots + k) x UNIFORMS + e`` with the batch's key: the compiled pass computes
    only the ones it reads, on any thread in any order (:func:`counter_uniform`, the same numbers),
    and nothing is drawn ahead for the impressions that never read them.
    """
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (np.asarray(counter).astype(np.uint64) + np.uint64(1)) * _WEYL
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def batch_key(rng: np.random.Generator) -> int:
    """A batch's key for :func:`counter_uniforms`, drawn from ``rng`` (one 64-bit number)."""
    return int(rng.integers(0, 2**64, dtype=np.uint64))


if numba is not None:

    @numba.njit(cache=True, nogil=True, inline="always")
    def counter_uniform(key, counter):
        """:func:`counter_uniforms` of one counter (``key`` a uint64, ``counter`` an integer)."""
        z = np.uint64(key) + (np.uint64(counter) + np.uint64(1)) * _WEYL  # (an int64 key would shift in its sign)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
        return np.float64(z >> np.uint64(11)) * _TO_UNIT


def merge_seen(
    keys: NDArray[np.int64], last: NDArray[np.int32], new: NDArray[np.int64], day: int, before: int
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Sorted distinct ``keys`` and the ``last`` day each was seen, after the sorted distinct ``new``
    are seen on ``day``; then only the keys last seen after day ``before`` (a fading set).

    One merge of two sorted lists, not a sort (the market's brand familiarity: a few million
    pairs a day at a million users).
    """
    if HAVE_NUMBA and keys.size + new.size > 0:
        out_keys = np.empty(keys.size + new.size, dtype=np.int64)
        out_last = np.empty(keys.size + new.size, dtype=np.int32)
        n = _merge_seen(keys, last, new, day, before, out_keys, out_last)
        return out_keys[:n], out_last[:n]
    pos = np.searchsorted(keys, new)
    known = np.zeros(new.size, dtype=bool)
    inside = pos < keys.size
    known[inside] = keys[pos[inside]] == new[inside]
    last = last.copy()
    last[pos[known]] = day
    fresh = ~known
    keys, last = np.insert(keys, pos[fresh], new[fresh]), np.insert(last, pos[fresh], np.int32(day))
    alive = last > before
    return (keys, last) if alive.all() else (keys[alive], last[alive])


if numba is not None:

    @numba.njit(cache=True, nogil=True)
    def key_index(keys, ptr):
        """``ptr[u]``: how many of the sorted user-major ``keys`` (``user << 32 | ...``) belong to users
        before ``u``, for ``u`` in ``0 .. ptr.size - 1`` (one pass, as ``cumsum(bincount(keys >> 32))``)."""
        u = 0
        ptr[0] = 0
        for i in range(keys.size):
            user = keys[i] >> 32
            if user < u or user >= ptr.size - 1:
                raise ValueError("key_index: keys must be sorted, of users below ptr.size - 1")
            while u < user:
                u += 1
                ptr[u] = i
        while u < ptr.size - 1:
            u += 1
            ptr[u] = keys.size

    @numba.njit(cache=True, nogil=True)
    def _merge_seen(keys, last, new, day, before, out_keys, out_last):
        """:func:`merge_seen`'s merge into ``out_keys`` and ``out_last``; returns how many were kept."""
        i = j = n = 0
        while i < keys.size or j < new.size:
            if j == new.size or (i < keys.size and keys[i] < new[j]):
                k, d = keys[i], last[i]
                i += 1
            else:
                if i < keys.size and keys[i] == new[j]:
                    i += 1
                k, d = new[j], day
                j += 1
            if d > before:
                out_keys[n] = k
                out_last[n] = d
                n += 1
        return n


def compiles_first() -> bool:
    """Whether a run here will first compile the response passes (numba's file cache has no fresh
    entry for one of them): the first run after an install or a change to the compiled files,
    which spends about half a minute compiling before its first day is done."""
    if not HAVE_NUMBA:
        return False
    from simulator import respond

    try:  # (numba's cache index: internal, so any surprise means "don't know")
        return any(not fn._cache._cache_file._load_index() for fn in (respond._settle_serial, respond._settle_parallel))
    except Exception:  # noqa: BLE001
        return False
