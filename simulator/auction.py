"""The auction: ranking, slot allocation and prices, as pure functions of arrays.

Given each session's Ad Ranks of all ads (0 where an ad is not eligible), picks
the slot winners and the price each pays per billing event.  No state, no
knowledge of budgets, users or advertisers; the only randomness is the tie
break, which the caller passes in.

Units: a rank is an expected value per impression (yuan) x QS / 10.  A price
in "rank units" is what the winner's rank must at least be to keep its slot;
turning it into yuan per billing event multiplies by ``bid x multiplier / rank``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int32]

Mechanism = Literal["gsp", "vcg", "first_price"]

#: Relative size of the tie-breaking nudge: far below a cent on any price, far
#: above float64 rounding of a rank.
_TIE_EPS = 1e-9


def allocate(
    ranks: FloatArray, n_slots: int, floor: float, tie_offsets: IntArray
) -> tuple[IntArray, FloatArray]:
    """Pick each session's slot winners by rank.

    Parameters
    ----------
    ranks : ndarray (n_sessions, n_ads)
        Ad Rank of each ad in each session; 0 (or less) where not eligible.
    n_slots : int
        Ad positions per session.
    floor : float
        Reserve on the rank: ads ranked below it win nothing.
    tie_offsets : ndarray (n_sessions,) of int
        A random rotation per session; among equal ranks the ad with the
        smallest ``(ad + offset) mod n_ads`` wins (a fair random tie break).

    Returns
    -------
    order : ndarray (n_sessions, n_slots + 1) of int32
        Ad index in each position, best first; column ``n_slots`` is the first
        loser; -1 where nobody is there.
    sorted_ranks : ndarray (n_sessions, n_slots + 1)
        Their ranks (0 where nobody).
    """
    n_sessions, n_ads = ranks.shape
    width = n_slots + 1
    order = np.full((n_sessions, width), -1, dtype=np.int32)
    sorted_ranks = np.zeros((n_sessions, width), dtype=np.float64)
    if n_sessions == 0 or n_ads == 0:
        return order, sorted_ranks
    valid = ranks >= max(floor, np.finfo(np.float64).tiny)
    prio = (np.arange(n_ads, dtype=np.int64)[None, :] + tie_offsets[:, None]) % n_ads
    keys = np.where(valid, ranks * (1.0 + _TIE_EPS * (1.0 - prio / n_ads)), -1.0)
    take = min(width, n_ads)
    if n_ads > take:
        top = np.argpartition(-keys, take - 1, axis=1)[:, :take]
    else:
        top = np.broadcast_to(np.arange(n_ads), (n_sessions, n_ads)).copy()
    top_keys = np.take_along_axis(keys, top, axis=1)
    sort_idx = np.argsort(-top_keys, axis=1, kind="stable")
    top = np.take_along_axis(top, sort_idx, axis=1)
    top_keys = np.take_along_axis(top_keys, sort_idx, axis=1)
    present = top_keys > 0
    order[:, :take] = np.where(present, top, -1)
    sorted_ranks[:, :take] = np.where(present, np.take_along_axis(ranks, top, axis=1), 0.0)
    return order, sorted_ranks


def gsp_rank_prices(sorted_ranks: FloatArray, floor: float) -> FloatArray:
    """Generalized second price: each winner must match the next rank (or the floor).

    Parameters
    ----------
    sorted_ranks : ndarray (n_sessions, n_slots + 1)
        From :func:`allocate`.

    Returns
    -------
    ndarray (n_sessions, n_slots): the rank each slot's winner must keep.
    """
    return np.maximum(sorted_ranks[:, 1:], floor)


def vcg_rank_prices(sorted_ranks: FloatArray, view_factors: FloatArray, floor: float) -> FloatArray:
    """VCG with positions weighted by their view factors, per impression.

    The winner of slot k pays the externality it imposes on the ads below,
    ``sum_{j >= k} (v_j - v_{j+1}) * max(r_{j+1}, floor)`` (with ``v_{K+1} = 0``),
    divided by its own view factor to express it per impression.  The reserve
    acts as a bidder of rank ``floor`` for every position.
    """
    n_slots = len(view_factors)
    v = np.append(np.asarray(view_factors, dtype=np.float64), 0.0)
    dv = v[:-1] - v[1:]  # (K,)
    below = np.maximum(sorted_ranks[:, 1:], floor)  # r_{j+1}, (S, K)
    terms = below * dv[None, :]
    # Suffix sums: for each k, sum over j >= k.
    tail = np.cumsum(terms[:, ::-1], axis=1)[:, ::-1]
    return tail / v[None, :n_slots]


def rank_prices(
    mechanism: Mechanism, sorted_ranks: FloatArray, view_factors: FloatArray, floor: float
) -> FloatArray:
    """The rank each slot winner pays for, under ``mechanism``: shape (n_sessions, n_slots)."""
    if mechanism == "gsp":
        return gsp_rank_prices(sorted_ranks, floor)
    if mechanism == "vcg":
        return vcg_rank_prices(sorted_ranks, view_factors, floor)
    if mechanism == "first_price":
        return sorted_ranks[:, :-1].copy()
    raise ValueError(f"unknown mechanism {mechanism!r}")


def event_prices(bid_values: FloatArray, ranks: FloatArray, paid_ranks: FloatArray) -> FloatArray:
    """Yuan per billing event: ``bid x m x paid_rank / rank`` (never above ``bid x m``).

    This is the quality-adjusted second price of DESIGN.md section 3: with
    ``rank = bid x m x rate x QS / 10`` it equals ``paid_rank / (rate x QS / 10)``,
    so one more QS point lowers it by ``1 / (QS + 1)``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ranks > 0, paid_ranks / ranks, 0.0)
    return bid_values * np.minimum(ratio, 1.0)


MECHANISMS: dict[str, Mechanism] = {"gsp": "gsp", "vcg": "vcg", "first_price": "first_price"}
