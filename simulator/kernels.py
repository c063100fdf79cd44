"""Hot kernels: Ad Rank of every eligible (session, ad) pair and each session's top slots.

Two implementations that give bit-identical results:

* ``rank_top_numpy``: whole-matrix numpy (the reference, always available);
* ``rank_top_numba``: one fused pass per session, compiled with numba and run
  in parallel over sessions (both cores), keeping the best ``n_slots + 1`` ads
  in a small insertion-sorted buffer instead of building the rank matrix.

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

import os

import numpy as np
from numpy.typing import NDArray

try:  # numba is a dependency, but the numpy path keeps working without it
    import numba

    HAVE_NUMBA = os.environ.get("ADSIM_NUMBA", "1") != "0"
except ImportError:  # pragma: no cover
    numba = None
    HAVE_NUMBA = False


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
) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """Reference implementation; see the module docstring.

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


if numba is not None:

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _rank_top_kernel(eligible, lift, device, per_event, device_mult, has_device, base_rate, lift_power, qs_factor, width, floor):  # noqa: ANN001, ANN202
        n_s, n_a = eligible.shape
        order = np.full((n_s, width), -1, dtype=np.int32)
        sorted_ranks = np.zeros((n_s, width))
        for s in numba.prange(n_s):
            count = 0
            dev = device[s]
            for j in range(n_a):
                if not eligible[s, j]:
                    continue
                v = per_event[j]
                if has_device:
                    v = v * device_mult[dev, j]
                lp = lift_power[j]
                if lp == 0:
                    rate = 1.0 * base_rate[j]
                else:
                    lf = np.float64(lift[s, j])
                    rate = lf * base_rate[j]
                    if lp == 2:
                        rate = rate * lf
                r = v * rate * qs_factor[j]
                if not (r >= floor and r > 0.0):
                    continue
                # Insert into the descending buffer; equal ranks keep the earlier column first.
                if count == width and r <= sorted_ranks[s, width - 1]:
                    continue
                p = count if count < width else width - 1
                while p > 0 and sorted_ranks[s, p - 1] < r:
                    if p < width:
                        sorted_ranks[s, p] = sorted_ranks[s, p - 1]
                        order[s, p] = order[s, p - 1]
                    p -= 1
                sorted_ranks[s, p] = r
                order[s, p] = j
                if count < width:
                    count += 1
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
) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """Fused, parallel version of :func:`rank_top_numpy` (identical results)."""
    has_device = device_mult is not None
    dm = np.ascontiguousarray(device_mult.T) if has_device else np.ones((2, per_event.size))
    return _rank_top_kernel(
        np.ascontiguousarray(eligible),
        np.ascontiguousarray(lift),
        np.ascontiguousarray(device),
        np.ascontiguousarray(per_event, dtype=np.float64),
        dm,
        has_device,
        np.ascontiguousarray(base_rate, dtype=np.float64),
        np.ascontiguousarray(lift_power, dtype=np.int8),
        np.ascontiguousarray(qs_factor, dtype=np.float64),
        n_slots + 1,
        float(floor),
    )


def rank_top(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """The fastest available implementation (numba unless ``ADSIM_NUMBA=0``)."""
    if HAVE_NUMBA:
        return rank_top_numba(*args, **kwargs)
    return rank_top_numpy(*args, **kwargs)
