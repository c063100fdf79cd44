"""What happens after the auction of a chunk: the users' responses and the billing, in time order.

Given each session's auction (``order``, ``sorted_ranks`` and the paid ranks from
:mod:`simulator.auction`; :func:`first_auction`), for every impression in time order (session by
session, slot by slot): its price per billing event, the ground truth of what the
user does (:mod:`simulator.engagement`), whether the campaign's billing event
happened and what it costs, and whether that cost crosses the campaign's
remaining budget.  An event that crosses it is delivered but not billed, and the
campaign leaves: every later session whose auction had that campaign among its
top ``n_slots + 1`` ads is auctioned again without it when the serving reaches
it (the others would come out the same without it).

Two implementations that give identical results:

* :func:`respond_numpy`: whole-array numpy, piece by piece between the sessions
  that need a new auction (the reference);
* :func:`respond_numba`: compiled, reading the user and ad tables in place, block
  by block of sessions: the block's auctions, without the campaigns that ran out
  before it; its impressions, on all cores; then one pass in time order that
  bills them and auctions again (in waves, over the threads) the sessions of the
  block that need it.

The users' draws are counter-based (:func:`simulator.kernels.counter_uniforms`): the
uniforms of a slot of a session depend only on the batch's key and the session's and
slot's positions, so both read the same draws whatever the re-auctions change, and
the compiled pass computes only the ones it reads.  Order values of conversions are
drawn afterwards, by the feed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
from numpy.typing import NDArray

from simulator import auction, engagement, kernels
from simulator.book import BILL_CLICK, BILL_ENGAGEMENT, BILL_IMPRESSION, MICRO

#: Weight of the users' latent taste in true relevance (the platform sees only the rest).
TASTE_WEIGHT = 0.25

#: The compiled pass's codes of the auction mechanisms.
_MECHANISM_CODE = {"gsp": 0, "vcg": 1, "first_price": 2}

#: Outcome columns of :class:`Served`, in the order of the compiled pass's flag matrix.
OUTCOMES = ("click", "like", "comment", "save", "share", "follow", "video_completion", "conversion", "bounce")


@dataclass
class Winners:
    """One batch's auction results and everything its impressions' responses depend on.

    Per session (S): ``users``, ``device``; ``order`` (S, n_slots + 1) column per position (-1
    empty), ``sorted_ranks`` and ``paid`` (S, n_slots) the rank each slot's winner pays for.
    Per column (A): ``cols`` (ad index), ``camp``, ``bill`` (billing event), ``per_event`` (yuan
    per event bid), ``device_mult`` (A, 2) or None, ``ocpc`` (the bid scales with the user's lift).
    Tables: users' ``user_lift``, ``affinity`` (n_users, C) and ``taste`` (n_users, K); ads'
    ``ad_taste`` (n_ads, K), ``ad_topic``, ``ad_content``, ``ad_authenticity``, ``ad_video``,
    ``ad_vertical``, ``ad_impressions_total``; campaigns' ``camp_landing`` (NaN: none),
    ``camp_adv`` and ``remaining`` micro-yuan; ``freq`` (n_users, n_ads) impressions today;
    ``familiar_keys`` sorted :func:`familiar_key` of (advertiser, user) pairs and ``familiar_ptr``
    (n_users + 1), where each user's keys start (:func:`familiar_index`); ``view`` per slot; the day's
    ``intent``; ``u_key``, the key of the uniforms (:func:`uniforms`), or ``u`` (S, n_slots, 10) the
    uniforms themselves, one row per position (tests choose draws so); ``dead`` (n_campaigns)
    campaigns that ran out of budget before the chunk; ``batch``, the auction's inputs, and the
    ``mechanism``, for the auctions.

    ``order``, ``sorted_ranks`` and ``paid``: each session's auction among all the batch's columns
    (:func:`first_auction`), or None (the responses run the auctions).  The responses leave in them
    each session's last auction: :func:`respond_numpy` updates them where it auctions a session
    again, :func:`respond_numba` writes them over (or sets them, from None).
    """

    order: NDArray[np.int32] | None
    sorted_ranks: NDArray[np.float64] | None
    paid: NDArray[np.float64] | None
    n_slots: int
    users: NDArray[np.int32]
    device: NDArray[np.int8]
    cols: NDArray[np.int32]
    camp: NDArray[np.int32]
    bill: NDArray[np.int8]
    per_event: NDArray[np.float64]
    device_mult: NDArray[np.float64] | None
    ocpc: NDArray[np.bool_]
    user_lift: NDArray[np.float32]
    affinity: NDArray[np.float32]
    taste: NDArray[np.float32]
    ad_taste: NDArray[np.float32]
    ad_topic: NDArray[np.int32]
    ad_content: NDArray[np.float64]
    ad_authenticity: NDArray[np.float64]
    ad_video: NDArray[np.bool_]
    ad_vertical: NDArray[np.float64]
    ad_impressions_total: NDArray[np.float64]
    camp_landing: NDArray[np.float64]
    camp_adv: NDArray[np.int32]
    remaining: NDArray[np.int64]
    freq: NDArray[np.uint8]
    familiar_keys: NDArray[np.int64]
    familiar_ptr: NDArray[np.int64]
    view: NDArray[np.float64]
    intent: float
    u: NDArray[np.float64] | None
    dead: NDArray[np.bool_]
    batch: kernels.Batch
    mechanism: str
    u_key: int = 0
    #: Position of the first session in the batch the uniforms' counters count from (the numpy path
    #: serves the sessions after a re-auction as a batch of their own).
    u_first: int = 0
    #: Auctions run again while serving (set by :func:`respond_numpy` / :func:`respond_numba`); a
    #: session auctioned twice counts twice.
    reauctions: int = 0
    #: Sessions per block for :func:`respond_numba` (0: :data:`BLOCK_SESSIONS`); it leaves here the size
    #: its last block suggested, for the next batch to start from.  Any size gives the same results.
    block: int = 0


@dataclass
class Served:
    """The impressions kept: those of the first ``n_used`` sessions, which are committed.

    Per impression, in time order: ``session`` and ``slot``, ``col`` (column of the batch), the
    outcomes of :data:`OUTCOMES`, ``price`` (yuan per billing event), ``event`` (the billing event
    happened), ``amount`` (its micro-yuan, else 0), ``over`` (the event crossed the budget:
    delivered, not billed), ``billed``, ``relevance`` (observed), ``lift`` (the platform's relevance
    lift) and ``frequency`` (earlier impressions of the ad to the user today, before this batch).
    """

    n_used: int
    session: NDArray[np.int64]
    slot: NDArray[np.int64]
    col: NDArray[np.int32]
    outcomes: dict[str, NDArray[np.bool_]]
    price: NDArray[np.float64]
    event: NDArray[np.bool_]
    amount: NDArray[np.int64]
    over: NDArray[np.bool_]
    billed: NDArray[np.int64]
    relevance: NDArray[np.float64]
    lift: NDArray[np.float64]
    frequency: NDArray[np.uint8]


def concat(pieces: list[Served]) -> Served:
    """Impressions of consecutive pieces of a chunk as one (``n_used`` adds up)."""
    if len(pieces) == 1:
        return pieces[0]
    arrays = {
        f.name: np.concatenate([getattr(p, f.name) for p in pieces])
        for f in fields(Served)
        if f.name not in ("n_used", "outcomes")
    }
    outcomes = {k: np.concatenate([p.outcomes[k] for p in pieces]) for k in OUTCOMES}
    return Served(n_used=sum(p.n_used for p in pieces), outcomes=outcomes, **arrays)


#: The fatigue term of each frequency count (a byte): ``0.35 x log1p(count)`` (engagement.probabilities),
#: with the C library's log1p (kernels.c_math).
_FATIGUE = 0.35 * np.array([math.log1p(f) for f in range(256)])


def familiar_key(advertiser: NDArray[np.integer], user: NDArray[np.integer]) -> NDArray[np.int64]:
    """Key of (advertiser, user) pairs in the brand-familiarity set: user-major, ``user << 32 | advertiser``.

    (Users number at most ``scenario.MAX_USERS`` and advertiser indices are int32: both fit.)
    """
    return (np.asarray(user).astype(np.int64) << 32) | np.asarray(advertiser).astype(np.int64)


def familiar_index(keys: NDArray[np.int64], n_users: int, out: NDArray[np.int64] | None = None) -> NDArray[np.int64]:
    """Where each user's keys start in the sorted ``keys`` (n_users + 1 offsets), for per-user lookups
    (into ``out``'s first n_users + 1 entries if given: no temporaries in the compiled pass)."""
    ptr = np.empty(n_users + 1, dtype=np.int64) if out is None else out[: n_users + 1]
    if kernels.HAVE_NUMBA:
        kernels.key_index(keys, ptr)
        return ptr
    ptr[0] = 0
    np.cumsum(np.bincount(keys >> 32, minlength=n_users), out=ptr[1:])
    return ptr


def members(keys: NDArray[np.integer], sorted_keys: NDArray[np.integer] | None) -> NDArray[np.bool_]:
    """Which ``keys`` are in the sorted array ``sorted_keys`` (bool, same shape as ``keys``; None: none)."""
    if sorted_keys is None or sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[pos] == keys


def respond_numpy(w: Winners) -> Served:
    """Reference implementation over whole arrays; see the module docstring.

    Serves the sessions up to the first one that needs a new auction, auctions that one again
    (:func:`simulator.kernels.select_numpy`, without the campaigns that ran out), and goes on.
    """
    if w.order is None:
        first_auction(w)
    n_s = w.order.shape[0]
    remaining, dead = w.remaining.copy(), w.dead.copy()
    pieces, pos = [], 0
    w.reauctions = 0
    while True:
        rest = slice(pos, None)
        piece = _serve_rows(
            replace(
                w, order=w.order[rest], sorted_ranks=w.sorted_ranks[rest], paid=w.paid[rest], users=w.users[rest],
                device=w.device[rest], u=None if w.u is None else w.u[rest], u_first=w.u_first + pos,
                remaining=remaining, dead=dead,
            )
        )  # fmt: skip
        pieces.append(replace(piece, session=piece.session + pos))
        camp = w.camp[piece.col]
        remaining = remaining - np.bincount(camp, weights=piece.billed, minlength=remaining.size).astype(np.int64)
        dead[camp[piece.over]] = True
        pos += piece.n_used
        if pos >= n_s:
            return concat(pieces)
        one = slice(pos, pos + 1)
        b = w.batch
        again = replace(
            b, users=b.users[one], device=b.device[one], admitted=b.admitted[one], audience=b.audience[one],
            picks=b.picks[one], u_part=b.u_part[one], exhausted=b.exhausted | dead[w.camp],
        )  # fmt: skip
        o1, r1 = kernels.select_numpy(again)
        w.reauctions += 1
        w.order[pos], w.sorted_ranks[pos] = o1[0], r1[0]
        w.paid[pos] = auction.rank_prices(w.mechanism, r1, w.view, b.floor)[0]


def uniforms(w: Winners, s_idx: NDArray[np.integer], k_idx: NDArray[np.integer]) -> NDArray[np.float64]:
    """The uniforms of slots ``k_idx`` of sessions ``s_idx`` (one row of :data:`kernels.UNIFORMS` each):
    ``w.u``'s rows where given, else :func:`kernels.counter_uniforms` at counters ``(s x n_slots + k) x
    UNIFORMS + e`` (``s`` counted from the batch's first session) with the key ``w.u_key``."""
    if w.u is not None:
        return w.u[s_idx, k_idx]
    base = ((w.u_first + np.asarray(s_idx, dtype=np.int64)) * w.n_slots + k_idx) * kernels.UNIFORMS
    return kernels.counter_uniforms(w.u_key, base[:, None] + np.arange(kernels.UNIFORMS))


def _serve_rows(w: Winners) -> Served:
    """Serve ``w``'s sessions in time order up to the first one whose auction had a campaign that ran out."""
    s_idx, k_idx = np.nonzero(w.order[:, : w.n_slots] >= 0)  # row-major: time order
    j = w.order[s_idx, k_idx]
    value = w.per_event[j] if w.device_mult is None else w.per_event[j] * w.device_mult[j, w.device[s_idx]]
    users = w.users[s_idx]
    ads = w.cols[j]
    topic = w.ad_topic[ads]
    lift = w.user_lift[users, topic].astype(np.float64)
    value = np.where(w.ocpc[j], value * lift, value)
    prices = auction.event_prices(value, w.sorted_ranks[s_idx, k_idx], w.paid[s_idx, k_idx])
    camp = w.camp[j]
    # The ground truth: true relevance mixes the observed affinity with the hidden taste match.
    t, a = w.taste[users], w.ad_taste[ads]
    taste = t[:, 0] * a[:, 0]
    for d in range(1, t.shape[1]):
        taste = taste + t[:, d] * a[:, d]
    rel_obs = w.affinity[users, topic].astype(np.float64)
    frequency = w.freq[users, ads]
    imp = engagement.Impressions(
        relevance=(1 - TASTE_WEIGHT) * rel_obs + TASTE_WEIGHT * engagement.sigmoid(1.5 * taste.astype(np.float64)),
        content=w.ad_content[ads],
        authenticity=w.ad_authenticity[ads],
        is_video=w.ad_video[ads],
        vertical=w.ad_vertical[ads],
        landing=w.camp_landing[camp],
        view=w.view[k_idx],
        frequency=frequency.astype(np.float64),
        wear=kernels.c_math("log1p", 10.0 * w.ad_impressions_total[ads] / w.freq.shape[0]),
        intent=w.intent,
        familiar=members(familiar_key(w.camp_adv[camp], users), w.familiar_keys),
    )
    out = engagement.draw(engagement.probabilities(imp), uniforms(w, s_idx, k_idx))
    click, conversion = out["click"], out["conversion"]
    # Billing, in time order, against what each campaign may still spend.
    ev_bill = w.bill[j]
    engaged = out["like"] | out["comment"] | out["save"] | out["share"]
    event = np.select(
        [ev_bill == BILL_IMPRESSION, ev_bill == BILL_CLICK, ev_bill == BILL_ENGAGEMENT],
        [np.ones(s_idx.size, dtype=bool), click, engaged],
        conversion,
    )
    amount = np.where(event, np.floor(prices * MICRO), 0).astype(np.int64)
    over = event & crosses(camp, amount, w.remaining)
    n_used = w.order.shape[0]
    if over.any() or w.dead.any():
        # Sessions stand until the first one whose auction had (in any position, the price
        # setter included) a campaign that crossed its budget in an earlier session.
        crossed_at = np.where(w.dead, -1, np.iinfo(np.int64).max)
        np.minimum.at(crossed_at, camp[over], s_idx[over])
        pos = np.nonzero(w.order >= 0)
        pos_camp = w.camp[w.order[pos]]
        hit = crossed_at[pos_camp] < pos[0]
        if hit.any():
            n_used = int(pos[0][hit].min())
    keep = s_idx < n_used
    over = over[keep]
    amount = amount[keep]
    return Served(
        n_used=n_used,
        session=s_idx[keep],
        slot=k_idx[keep],
        col=j[keep],
        outcomes={k: v[keep] for k, v in out.items()},
        price=prices[keep],
        event=event[keep],
        amount=amount,
        over=over,
        billed=np.where(over, 0, amount),
        relevance=rel_obs[keep],
        lift=lift[keep],
        frequency=frequency[keep],
    )


def crosses(campaign: NDArray[np.int32], amount: NDArray[np.int64], remaining: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Events (in time order) whose running per-campaign sum exceeds the campaign's remaining budget."""
    if amount.size == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(campaign, kind="stable")
    c_sorted = campaign[order]
    cum = np.cumsum(amount[order])
    starts = np.flatnonzero(np.r_[True, c_sorted[1:] != c_sorted[:-1]])
    group_base = np.repeat(cum[starts] - amount[order][starts], np.diff(np.r_[starts, c_sorted.size]))
    over_sorted = (cum - group_base) > remaining[c_sorted]
    over = np.empty_like(over_sorted)
    over[order] = over_sorted
    return over


if kernels.numba is not None:
    numba = kernels.numba
    _FC = engagement.FAMILIAR_CLICK
    _FV = engagement.FAMILIAR_CONVERSION
    _FC_MAX = max(_FC * 1.0, _FC * 0.0)  # the click's familiarity term at its largest

    @numba.njit(cache=True, nogil=True)
    def _sig(z):
        return 1.0 / (1.0 + np.exp(-z))

    @numba.njit(cache=True, nogil=True)
    def _never(u, view, z):
        """Whether ``u < view x sigmoid(z)`` is surely false, by a bound cheaper than the ``exp``.

        ``u >= view`` cannot pass (the sigmoid is below 1).  For ``z < 0``, ``e^x >= p = 1 + x + x^2/2
        + x^3/6`` (``x = -z``) bounds the sigmoid by ``1 / (1 + p)``; a uniform at least that (with a
        margin far above rounding) cannot be below the computed sigmoid either.  As the sigmoid rises
        with ``z``, it also holds for every smaller ``z``.  (Multiplied out: no division; no answer
        but the first below ``view`` = 1e-300, where the product could round differently.)
        """
        if not (u < view):
            return True
        if z < 0.0 and view >= 1e-300:
            x = -z
            if u * (2.0 + x + 0.5 * x * x + x * x * x / 6.0) >= view * (1.0 + 1e-9):
                return True
        return False

    @numba.njit(cache=True, nogil=True)
    def _occurs(u, view, z):
        """``u < view x sigmoid(z)``, the same answer as computing it, mostly without the ``exp``.

        With ``a = |z|``, ``p = 1 + a + a^2/2 + a^3/6 <= e^a`` and ``q = 1 - a + a^2/2 - a^3/6 <= e^-a``
        (Taylor, with remainders of one sign), the sigmoid lies between ``q / (1 + q)`` (when ``q > 0``)
        and ``1 / (1 + p)`` for ``z < 0``, and between ``p / (1 + p)`` and ``1 / (1 + q)`` for ``z >= 0``.
        A uniform outside those bounds, with a margin far above rounding, gets the answer the computed
        sigmoid would give; only one between them computes it.  (So does every uniform when ``view``
        is below 1e-300, where the product with the bounds could round differently.)
        """
        if not (u < view):
            return False
        if not (view >= 1e-300):
            return u < view * _sig(z)
        a = abs(z)
        a3 = a * a * a / 6.0
        p = 1.0 + a + 0.5 * a * a + a3
        q = 1.0 - a + 0.5 * a * a - a3
        if z < 0.0:
            if u * (1.0 + p) >= view * (1.0 + 1e-9):
                return False
            if q > 0.0 and u * (1.0 + q) < view * q * (1.0 - 1e-9):
                return True
        else:
            if u * (1.0 + p) < view * p * (1.0 - 1e-9):
                return True
            if q > 0.0 and u * (1.0 + q) >= view * (1.0 + 1e-9):
                return False
        return u < view * _sig(z)

    #: Each event's ``z`` (engagement.probabilities) as ``z0 + rel x relevance + auth x authenticity + content x
    #: content + vertical x vertical - fatigue``, one row per event in the order of the uniforms (click, like,
    #: comment, save, share, follow, video completion); the click's row counts the familiarity term at its
    #: largest.  Only :func:`_may_respond`'s bound uses these; the exact sigmoids are written out below.
    _Z0 = np.array([-4.8 + _FC_MAX, -4.6, -6.6, -5.2, -6.9, -7.2, -1.6, 0.0])
    _Z_REL = np.array([2.4, 2.0, 1.8, 2.2, 2.0, 1.6, 1.8, 0.0])
    _Z_AUTH = np.array([0.0, 1.4, 1.8, 0.8, 1.2, 1.6, 1.0, 0.0])
    _Z_CONTENT = np.array([1.6, 1.0, 0.0, 1.4, 0.8, 0.0, 0.0, 0.0])
    _Z_VERTICAL = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.0])

    @numba.njit(cache=True, nogil=True, inline="always")
    def _uniform(u, s, k, key, c, e):
        """Uniform ``e`` of slot ``k`` of session ``s`` (:func:`uniforms`): ``u[s, k, e]`` where ``u`` is
        given (not empty), else the counter-based one at counter ``c + e`` (``c``: the slot's first)."""
        if u.shape[0] > 0:
            return u[s, k, e]
        return kernels.counter_uniform(key, c + e)

    @numba.njit(cache=True, nogil=True, inline="always")
    def _may_respond(u, s, k, key, c, view, rel_hi, auth, content, vertical, fatigue, video):
        """The events an impression might draw, as bits (``1 << lane``, lanes as the rows of ``_Z0``): a
        clear bit means that event surely does not occur.  The test is :func:`_never`'s, for every event
        at once, at the largest relevance the hidden taste allows (``rel_hi``, taste sigmoid 1).

        Every event's ``z`` rises with the relevance, and :func:`_never` at a larger ``z`` implies it at
        a smaller one.  The terms are added in another order than the exact expressions', which moves
        ``z`` by a few units in the last place: the bound's margin (1e-9) is far above that.  Written
        as one pass over eight lanes without branches, so the compiler can use vector instructions
        (the eighth lane is padding; the video lane counts for video ads only).  The uniforms: as
        :func:`_uniform`'s.
        """
        margin = view * (1.0 + 1e-9)
        tiny = not (view >= 1e-300)
        hit = 0
        for e in range(8):
            z = _Z0[e] + _Z_REL[e] * rel_hi + _Z_AUTH[e] * auth + _Z_CONTENT[e] * content + _Z_VERTICAL[e] * vertical - fatigue
            x = -z
            ue = _uniform(u, s, k, key, c, e)
            never = (ue >= view) | ((z < 0.0) & (ue * (2.0 + x + 0.5 * x * x + x * x * x / 6.0) >= margin) & (not tiny))
            hit = hit | (np.int64((not never) & ((e < 6) | ((e == 6) & video))) << e)
        return hit

    @numba.njit(cache=True, nogil=True)
    def _paid_rows(sessions, w0, w1, mechanism, sorted_ranks, view, floor, paid):
        """The paid ranks of sessions ``sessions[w0 .. w1 - 1]`` (``sessions`` empty: ``w0 .. w1 - 1``), as
        auction.rank_prices computes them, operation for operation: mechanism 0 gsp, 1 vcg, 2 first price."""
        n_slots = paid.shape[1]
        listed = sessions.shape[0] > 0
        for w in range(w0, w1):
            s = sessions[w] if listed else w
            if mechanism == 0:
                for k in range(n_slots):
                    paid[s, k] = max(sorted_ranks[s, k + 1], floor)
            elif mechanism == 1:
                acc = 0.0
                for k in range(n_slots - 1, -1, -1):
                    v_next = view[k + 1] if k + 1 < n_slots else 0.0
                    acc = acc + max(sorted_ranks[s, k + 1], floor) * (view[k] - v_next)
                    paid[s, k] = acc
                for k in range(n_slots):
                    paid[s, k] = paid[s, k] / view[k]
            else:
                for k in range(n_slots):
                    paid[s, k] = sorted_ranks[s, k]

    @numba.njit(cache=True, nogil=True, inline="always")
    def _prefetch_rows(s, listed, users, order, cols, n_slots, user_lift, freq, taste, affinity, familiar_ptr, u):
        """Prefetch the rows session ``s``'s impressions read (a hint: no effect on results)."""
        usr = users[s]
        kernels.prefetch(user_lift, (usr, 0))
        kernels.prefetch(user_lift, (usr, user_lift.shape[1] - 1))  # rows may straddle two cache lines
        for k in range(n_slots):  # the winners' counts only, not the whole row
            j = order[s, k]
            if j >= 0:
                kernels.prefetch(freq, (usr, cols[j]))
        kernels.prefetch(taste, (usr, 0))
        kernels.prefetch(taste, (usr, taste.shape[1] - 1))
        kernels.prefetch(affinity, (usr, 0))
        kernels.prefetch(affinity, (usr, affinity.shape[1] - 1))
        kernels.prefetch(familiar_ptr, (usr,))
        if listed and u.shape[0] > 0:
            kernels.prefetch(u, (s, 0, 0))
            kernels.prefetch(u, (s, n_slots - 1, u.shape[2] - 1))

    @numba.njit(cache=True, nogil=True)
    def _serve_sessions(sessions, w0, w1, start, ends, out, order, sorted_ranks, paid, tables, ends_from):
        """The impressions of sessions ``sessions[w0 .. w1 - 1]`` (``sessions`` empty: ``w0 .. w1 - 1``),
        session ``s``'s in time order into rows ``start[s] ..`` of ``out`` (and the row after its last
        into ``ends[s - ends_from]``, unless ``ends`` is empty): each one's price, the user's responses
        (engagement.probabilities, operation for operation), its billing event and that event's
        amount (whether the budget allows the amount is settled later, in time order).

        ``out`` and ``tables``: the tuples of output and input arrays :func:`respond_numba` builds.
        (One call serves many sessions: a call per session would pass the tuples each time, and
        count references to each of their arrays.)
        """
        session, slot, col, flags, prices, amount, relevance, lift, frequency = out
        (
            users, device, cols, camp, bill, per_event, device_mult, has_device, ocpc, user_lift, affinity, taste,
            ad_taste, ad_topic, ad_content, ad_authenticity, ad_video, ad_vertical, wear, fatigue_freq, camp_landing,
            camp_adv, freq, familiar_keys, familiar_ptr, view, intent, u, u_key, u_first,
        ) = tables  # fmt: skip
        n_slots = paid.shape[1]
        ahead = kernels.PREFETCH_AHEAD
        listed = sessions.shape[0] > 0
        # The rows the first sessions read, all at once; then each session asks for a later one's
        # (hints: no effect on results).
        for w in range(w0, min(w0 + ahead, w1)):
            _prefetch_rows(sessions[w] if listed else w, listed, users, order, cols, n_slots, user_lift, freq, taste, affinity, familiar_ptr, u)
        for w in range(w0, min(w0 + ahead // 2, w1)):
            kernels.prefetch(familiar_keys, (familiar_ptr[users[sessions[w] if listed else w]],))
        for w in range(w0, w1):
            s = sessions[w] if listed else w
            if w + ahead < w1:
                s_next = sessions[w + ahead] if listed else w + ahead
                _prefetch_rows(s_next, listed, users, order, cols, n_slots, user_lift, freq, taste, affinity, familiar_ptr, u)
            if w + ahead // 2 < w1:  # that user's brand keys, now that the offset has arrived
                s_near = sessions[w + ahead // 2] if listed else w + ahead // 2
                kernels.prefetch(familiar_keys, (familiar_ptr[users[s_near]],))
            # Indices known to be >= 0 are read through kernels.at (unsigned: no check for a negative one).
            su = kernels.at(s)
            i = start[su]
            for k in range(n_slots):
                j = order[su, k]
                if j < 0:
                    break
                ju = kernels.at(j)
                usr = users[su]
                uu = kernels.at(usr)
                ad = kernels.at(cols[ju])
                c = kernels.at(camp[ju])
                topic = kernels.at(ad_topic[ad])
                lf = np.float64(user_lift[uu, topic])
                value = per_event[ju]
                if has_device:
                    value = value * device_mult[ju, kernels.at(device[su])]
                if ocpc[ju]:
                    value = value * lf
                rank = sorted_ranks[su, k]
                ratio = paid[su, k] / rank if rank > 0 else 0.0
                price = value * min(ratio, 1.0)
                rel_obs = np.float64(affinity[uu, topic])
                f0 = freq[uu, ad]
                fatigue = fatigue_freq[f0] + 0.12 * wear[ad]
                auth = ad_authenticity[ad] - 0.5
                content = ad_content[ad] - 0.5
                vw = view[k]
                click = like = save = comment = share = follow = video = conversion = bounce = False
                # Over half the impressions draw no event: a bound at the largest relevance the taste allows
                # says so without the taste, the familiarity or any exp, and it rules out most events of the
                # others.  The events it leaves are ground truth, where _occurs still skips the sigmoids
                # whose answer a cheap bound gives.
                rel_hi = (1 - TASTE_WEIGHT) * rel_obs + TASTE_WEIGHT * 1.0
                cu = ((u_first + s) * n_slots + k) * kernels.UNIFORMS  # the counter of the slot's first uniform
                maybe = _may_respond(u, s, k, u_key, cu, vw, rel_hi, auth, content, ad_vertical[ad], fatigue, ad_video[ad])
                if maybe:
                    acc = taste[uu, 0] * ad_taste[ad, 0]
                    for d in range(1, taste.shape[1]):
                        acc = acc + taste[uu, d] * ad_taste[ad, d]
                    rel = (1 - TASTE_WEIGHT) * rel_obs + TASTE_WEIGHT * _sig(1.5 * np.float64(acc))
                    # Brand familiarity matters only through the click (a conversion needs one): it is looked
                    # up only when a user who knew the brand might click.
                    known = 0.0
                    if maybe & 1 and not _never(_uniform(u, s, k, u_key, cu, 0), vw, -4.8 + 2.4 * rel + 1.6 * content + _FC_MAX - fatigue):
                        key = (np.int64(usr) << 32) | np.int64(camp_adv[c])
                        for q in range(familiar_ptr[uu], familiar_ptr[kernels.at(usr + 1)]):  # this user's few keys
                            if familiar_keys[kernels.at(q)] == key:
                                known = 1.0
                        click = _occurs(_uniform(u, s, k, u_key, cu, 0), vw, -4.8 + 2.4 * rel + 1.6 * content + _FC * known - fatigue)
                    like = maybe & 2 != 0 and _occurs(_uniform(u, s, k, u_key, cu, 1), vw, -4.6 + 2.0 * rel + 1.4 * auth + 1.0 * content - fatigue)
                    save = maybe & 8 != 0 and _occurs(_uniform(u, s, k, u_key, cu, 3), vw, -5.2 + 2.2 * rel + 0.8 * auth + 1.4 * content - fatigue)
                    comment = maybe & 4 != 0 and _occurs(_uniform(u, s, k, u_key, cu, 2), vw, -6.6 + 1.8 * rel + 1.8 * auth - fatigue)
                    share = maybe & 16 != 0 and _occurs(_uniform(u, s, k, u_key, cu, 4), vw, -6.9 + 2.0 * rel + 1.2 * auth + 0.8 * content - fatigue)
                    follow = maybe & 32 != 0 and _occurs(_uniform(u, s, k, u_key, cu, 5), vw, -7.2 + 1.6 * rel + 1.6 * auth - fatigue)
                    if maybe & 64:
                        video = _occurs(_uniform(u, s, k, u_key, cu, 6), vw, -1.6 + 1.8 * rel + 1.0 * auth + 0.6 * ad_vertical[ad] - fatigue)
                    if click:
                        has_landing = not np.isnan(camp_landing[c])
                        landing = (camp_landing[c] if has_landing else 0.6) - 0.5
                        p_conv = min(1.0, intent * _sig(-5.6 + 1.8 * rel + 2.2 * landing + 0.6 * content + _FV * known))
                        conversion = _uniform(u, s, k, u_key, cu, 7) < p_conv
                        if not conversion and has_landing:
                            bounce = _uniform(u, s, k, u_key, cu, 8) < _sig(0.4 - 3.5 * landing - 1.2 * rel)
                b = bill[ju]
                if b == 0:  # BILL_IMPRESSION
                    event = True
                elif b == 1:  # BILL_CLICK
                    event = click
                elif b == 2:  # BILL_ENGAGEMENT
                    event = like or comment or save or share
                else:
                    event = conversion
                iu = kernels.at(i)
                amount[iu] = np.int64(np.floor(price * 1e6)) if event else 0
                prices[iu] = price
                session[iu] = s
                slot[iu] = k
                col[iu] = j
                flags[0, iu] = click
                flags[1, iu] = like
                flags[2, iu] = comment
                flags[3, iu] = save
                flags[4, iu] = share
                flags[5, iu] = follow
                flags[6, iu] = video
                flags[7, iu] = conversion
                flags[8, iu] = bounce
                flags[9, iu] = event
                relevance[iu] = rel_obs
                lift[iu] = lf
                frequency[iu] = f0
                i += 1
            if ends.shape[0] > 0:
                ends[s - ends_from] = i

    def _speculate_body(s0, s1, start, out, order, sorted_ranks, paid, tables):
        """Every impression of sessions ``s0 .. s1 - 1`` as auctioned (session ``s``'s into rows
        ``start[s]:start[s + 1]``), in blocks of sessions shared among the threads (prange)."""
        n_s = s1 - s0
        n_blocks = kernels.n_shares(n_s)
        none = np.empty(0, dtype=np.int64)
        for blk in numba.prange(n_blocks):  # a plain range in the serial compilation
            b0, b1 = s0 + blk * n_s // n_blocks, s0 + (blk + 1) * n_s // n_blocks
            # (``ends_from`` is not read without ``ends``: s0, an int64 as the settle pass passes, so that
            # both passes call one compilation of _serve_sessions rather than one for a literal 0 too)
            _serve_sessions(none, b0, b1, start, none, out, order, sorted_ranks, paid, tables, s0)

    _speculate_serial, _speculate_parallel = kernels.serial_and_parallel(_speculate_body, "_speculate")

    @numba.njit(cache=True, nogil=True)
    def _row_starts(order, n_slots, s0, s1, first, start):
        """Where the impressions of sessions ``s0 .. s1 - 1`` start, from row ``first`` on (into
        ``start[s0 .. s1]``): the running count of their winners."""
        start[s0] = first
        for s in range(s0, s1):
            won = 0
            for k in range(n_slots):
                won += order[s, k] >= 0
            start[s + 1] = start[s] + won

    @numba.njit(cache=True, nogil=True)
    def _hit(order, s, camp, dead):
        """Whether session ``s``'s auction had (in any position, the price setter included) a dead campaign."""
        for k in range(order.shape[1]):
            j = order[s, k]
            if j >= 0 and dead[camp[j]]:
                return True
        return False

    #: How far ahead a wave of re-auctions reaches (sessions): far enough to share among the threads,
    #: near enough that few of its sessions need auctioning once more after a later crossing.
    WAVE_SESSIONS = 4096

    def _settle_body(
        s0, s1, i, start, out, order, sorted_ranks, paid, tables, remaining, spent, dead, over, mechanism,
        k_users, k_device, k_admitted, k_audience, k_picks, k_u_part, k_col_group, k_col_audience,
        k_col_dead, k_col_ad, k_cap, k_col_multi, k_col_slot, k_share, k_phase, k_col_topic, k_freq, k_user_lift,
        k_per_event, k_device_mult, k_has_device, k_base_rate, k_lift_power, k_qs_factor, k_width, k_floor,
        k_value_lift, k_bound, k_bin_cols, k_bin_start, k_bucket_topic, k_bucket_power,
        k_first_bound,
    ):  # fmt: skip
        """Bill the speculated impressions of sessions ``s0 .. s1 - 1`` in time order against the budgets,
        auctioning again (and serving anew) each session whose auction had a campaign that ran out in
        an earlier one.  Returns where the kept rows end and the number of auctions run again.

        The kept impressions are packed from row ``i`` on (the earlier sessions' rows end there).
        ``spent`` (micro-yuan billed per campaign in this batch so far), ``dead`` (campaigns that
        crossed their budget, or ran out before the batch), ``k_col_dead`` (their columns, and
        exhausted ones: out of every auction) and ``over`` (the rows' crossing flags) carry over
        from one call to the next.

        The first session that needs a new auction starts a wave: every later session whose auction
        has a campaign dead by then is auctioned again and served anew at once (over the threads,
        into the session's own rows, which the pass has yet to read).  That is what serving them one
        by one would give, unless another campaign runs out before the serving reaches them and it is
        among their new winners: the time-order pass checks each session again as it reaches it, and
        such a session starts a new wave.  A session auctioned again has no more impressions than
        before (its candidates are a subset), so the packing never overtakes the rows still to be read.
        """
        camp, view = tables[3], tables[25]
        session, slot, col, flags, prices, amount, relevance, lift, frequency = out
        n_slots = paid.shape[1]
        n_cols = camp.shape[0]
        n_buckets = k_bucket_power.shape[0]
        mults = np.empty((64, n_buckets))
        tops = np.empty((64, n_buckets))
        end = start[s0 + 1 : s1 + 1].copy()  # session s's rows: start[s] .. end[s - s0] - 1 (fewer once auctioned again)
        wave = np.empty(min(WAVE_SESSIONS, s1 - s0), dtype=np.int64)
        overflow = np.zeros(64, dtype=np.bool_)
        n_again = 0
        for s in range(s0, s1):
            if _hit(order, s, camp, dead):
                n_wave = 0
                for t in range(s, min(s + WAVE_SESSIONS, s1)):
                    if _hit(order, t, camp, dead):
                        wave[n_wave] = t
                        n_wave += 1
                n_again += n_wave
                n_blocks = kernels.n_shares(n_wave)
                for blk in numba.prange(n_blocks):  # a plain range in the serial compilation
                    w0, w1 = blk * n_wave // n_blocks, (blk + 1) * n_wave // n_blocks
                    kernels.scan_sessions(
                        wave, w0, w1, order, sorted_ranks, mults[blk], tops[blk], k_users, k_device,
                        k_admitted, k_audience, k_picks, k_u_part, k_col_group, k_col_audience, k_col_dead, k_col_ad,
                        k_cap, k_col_multi, k_col_slot, k_share, k_phase, k_col_topic, k_freq, k_user_lift,
                        k_per_event, k_device_mult, k_has_device, k_base_rate, k_lift_power, k_qs_factor, k_width,
                        k_floor, k_value_lift, k_bound, k_bin_cols, k_bin_start, k_bucket_topic, k_bucket_power, k_first_bound,
                    )  # fmt: skip
                    _paid_rows(wave, w0, w1, mechanism, sorted_ranks, view, k_floor, paid)
                    for w in range(w0, w1):
                        t = wave[w]
                        won = 0
                        for k in range(n_slots):
                            if order[t, k] >= 0:
                                won += 1
                        if start[t] + won > start[t + 1]:  # cannot happen: the candidates are a subset of the first auction's
                            overflow[blk] = True
                    if not overflow[blk]:
                        _serve_sessions(wave, w0, w1, start, end, out, order, sorted_ranks, paid, tables, s0)
                if overflow.any():  # (raised out here: a prange loop cannot be left early)
                    raise AssertionError("a session auctioned again won more slots than before")
            first = i
            for q in range(start[s], end[s - s0]):  # the session's rows, packed (written out: a call per row costs)
                if i != q:
                    session[i] = session[q]
                    slot[i] = slot[q]
                    col[i] = col[q]
                    for f in range(flags.shape[0]):
                        flags[f, i] = flags[f, q]
                    prices[i] = prices[q]
                    amount[i] = amount[q]
                    relevance[i] = relevance[q]
                    lift[i] = lift[q]
                    frequency[i] = frequency[q]
                i += 1
            for q in range(first, i):  # billing, in time order
                if flags[9, q]:
                    c = camp[col[q]]
                    spent[c] += amount[q]
                    if spent[c] > remaining[c]:
                        over[q] = True
                        dead[c] = True
                        for jj in range(n_cols):
                            if camp[jj] == c:
                                k_col_dead[jj] = True
        return i, n_again

    _settle_serial, _settle_parallel = kernels.serial_and_parallel(_settle_body, "_settle")


#: Batches with at least this many impressions compute them on all cores (see :func:`respond_numba`).
PARALLEL_IMPRESSIONS = 2_000

#: Sessions auctioned at once by :func:`respond_numba`, at most: each block is auctioned without the
#: campaigns that ran out in the blocks before it, so only a crossing inside a block makes sessions of
#: that block need a new auction.  (Any size gives the same results; smaller blocks cost more calls.)
BLOCK_SESSIONS = 16_384
#: The smallest block :func:`next_block` picks.
MIN_BLOCK = 256
#: A block's fixed cost (its passes' calls and thread starts), in auctions run again: about 100 us
#: against 1.5 us here.  Only the speed depends on it.
BLOCK_COST_REAUCTIONS = 64


def next_block(size: int, done: int, again: int) -> int:
    """The block size to take after a block of ``done`` sessions (``size`` asked; fewer at a batch's
    end) that auctioned ``again`` sessions again.

    Crossings in a block grow with its size, and so do the later sessions of the block each crossing
    sends back to auction: the share auctioned again grows about in proportion to the size (``again /
    done = k x done``), while a block's fixed cost is spread over its sessions.  Per session, ``cost /
    size + k x size`` (in auctions) is least at ``sqrt(cost / k)``.  Blocks shrink toward it when more
    than a tenth of their sessions were auctioned again (by 4 x at most a step; a batch's short last
    block only if it had :data:`MIN_BLOCK` sessions) and double when fewer than one in fifty were (a
    whole block only); in between, the size holds.
    """
    if again > 0.1 * done and done >= min(size, MIN_BLOCK):
        best = done * math.sqrt(BLOCK_COST_REAUCTIONS / again)
        return int(min(size, max(MIN_BLOCK, size // 4, best)))
    if again < 0.02 * done and done == size:
        return min(BLOCK_SESSIONS, 2 * size)
    return size


def first_auction(w: Winners) -> None:
    """Auction every session of ``w`` among the batch's columns (into ``order``, ``sorted_ranks``, ``paid``)."""
    w.order, w.sorted_ranks = kernels.select(w.batch)
    w.paid = auction.rank_prices(w.mechanism, w.sorted_ranks, w.view, w.batch.floor)


def respond_numba(w: Winners, parallel: bool | None = None) -> Served:
    """Compiled version of :func:`respond_numpy` (identical results), block by block of sessions
    (``w.block`` first, then as :func:`next_block` adapts it to the crossings; at most
    :data:`BLOCK_SESSIONS`), each in three passes:

    1. its auctions (:func:`simulator.kernels.select_rows`) among the columns whose campaigns have
       not run out by the block's first session (an auction that had such a campaign would be run
       again without it anyway, and the others come out the same without it);
    2. every impression of the block as auctioned, on all cores (``parallel``: default when the
       batch has :data:`PARALLEL_IMPRESSIONS` impressions or more and numba may use more than one
       thread).  An impression depends only on its session, slot and the tables, never on another
       impression, so the threads' split cannot change a result;
    3. one pass in time order that bills them against the budgets, auctioning again and serving
       anew the sessions whose auction had a campaign that ran out inside the block (in waves over
       the threads; their first impressions are dropped).

    ``w.order``, ``w.sorted_ranks`` and ``w.paid`` are set to each session's last auction (any given
    values are not read), ``w.block`` to the size for the next batch.
    """
    n_s, n_slots = w.users.size, w.n_slots
    has_device = w.device_mult is not None
    dm = np.ascontiguousarray(w.device_mult, dtype=np.float64) if has_device else np.ones((w.per_event.size, 2))
    tables = (
        w.users, w.device, w.cols, w.camp, w.bill, w.per_event, dm, has_device, w.ocpc, w.user_lift, w.affinity,
        w.taste, w.ad_taste, w.ad_topic, w.ad_content, w.ad_authenticity, w.ad_video, w.ad_vertical,
        # Per ad and per frequency, the same values the numpy path computes per impression.
        kernels.c_math("log1p", 10.0 * w.ad_impressions_total / w.freq.shape[0]), _FATIGUE,
        w.camp_landing, w.camp_adv, w.freq, w.familiar_keys, w.familiar_ptr, w.view, float(w.intent),
        np.empty((0, n_slots, kernels.UNIFORMS)) if w.u is None else np.ascontiguousarray(w.u, dtype=np.float64),
        np.uint64(w.u_key), np.int64(w.u_first),
    )  # fmt: skip
    if w.order is None:  # (given arrays are written over, as the numpy path does)
        w.order, w.sorted_ranks, w.paid = np.empty((n_s, n_slots + 1), np.int32), np.empty((n_s, n_slots + 1)), np.empty((n_s, n_slots))
    k_args = list(kernels.kernel_args(w.batch))
    # Columns out of every auction from here on: exhausted, or their campaign has run out (the passes
    # add the campaigns that cross their budget).
    dead = w.dead.copy()
    col_dead = k_args[kernels.KERNEL_ARGS.index("exhausted")] | dead[w.camp]
    k_args[kernels.KERNEL_ARGS.index("exhausted")] = col_dead
    cap = n_s * n_slots  # rows enough for every slot of every session
    out = (
        np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int32),
        np.empty((10, cap), dtype=np.bool_), np.empty(cap), np.empty(cap, dtype=np.int64), np.empty(cap),
        np.empty(cap), np.empty(cap, dtype=np.uint8),
    )  # fmt: skip
    over = np.zeros(cap, dtype=np.bool_)
    spent = np.zeros(w.remaining.size, dtype=np.int64)
    start = np.empty(n_s + 1, dtype=np.int64)
    given = parallel is not None
    if not given:
        parallel = kernels.use_threads(cap, PARALLEL_IMPRESSIONS)
    speculate = _speculate_parallel if parallel else _speculate_serial
    settle = _settle_parallel if parallel else _settle_serial
    mechanism, none = _MECHANISM_CODE[w.mechanism], np.empty(0, dtype=np.int64)
    select_parallel = parallel if given else None  # (else the auctions' own threshold decides)
    n = w.reauctions = 0
    size, s0 = w.block or BLOCK_SESSIONS, 0
    while s0 < n_s:
        s1 = min(s0 + size, n_s)
        kernels.select_rows(w.order, w.sorted_ranks, s0, s1, k_args, select_parallel)
        _paid_rows(none, s0, s1, mechanism, w.sorted_ranks, w.view, w.batch.floor, w.paid)
        _row_starts(w.order, n_slots, s0, s1, n, start)
        speculate(s0, s1, start, out, w.order, w.sorted_ranks, w.paid, tables)
        n, again = settle(
            s0, s1, n, start, out, w.order, w.sorted_ranks, w.paid, tables, w.remaining, spent, dead, over, mechanism,
            *k_args,
        )  # fmt: skip
        w.reauctions += again
        size = next_block(size, s1 - s0, again)
        s0 = s1
    w.block = size
    session, slot, col, flags, prices, amount, relevance, lift, frequency = out
    over, amount = over[:n], amount[:n]
    return Served(
        n_used=n_s,
        session=session[:n],
        slot=slot[:n],
        col=col[:n],
        outcomes={name: flags[i, :n] for i, name in enumerate(OUTCOMES)},
        price=prices[:n],
        event=flags[9, :n],
        amount=amount,
        over=over,
        billed=np.where(over, 0, amount),
        relevance=relevance[:n],
        lift=lift[:n],
        frequency=frequency[:n],
    )


def respond(w: Winners) -> Served:
    """The fastest available implementation (numba unless ``ADSIM_NUMBA=0``)."""
    return respond_numba(w) if kernels.HAVE_NUMBA else respond_numpy(w)
