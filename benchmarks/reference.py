"""Two reference points for the engine's auction rate.

1. :class:`ReferenceMarket`: the auction written the obvious Mesa way, the way
   a user would write it first: each advertiser is a ``mesa.Agent`` that, for
   every session, computes its own Ad Rank in Python; the model sorts the
   ranks, fills the slots and charges the generalized second price.  Same
   semantics as the engine's ``gsp`` (DESIGN.md section 3):

       value = bid x multiplier x rate(user),   rank = value x QS / 10
       slots to the highest ranks at or above the floor, one per ad
       price_k = bid x multiplier x max(rank_{k+1}, floor) / rank_k

2. :func:`topk_kernel`: a bare numpy kernel that only scores a (sessions x ads)
   matrix and takes each session's top slots (argpartition, then a sort of the
   few survivors): no eligibility, no prices, no users' responses, no billing.
   It is the speed of light of a vectorized auction on this machine: an engine
   that does all the rest cannot beat it by much.

Neither knows anything about budgets, pacing or engagement; both are about the
auction only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mesa
import numpy as np

#: Default engine floor: reserve eCPM 8 yuan -> 0.008 yuan per impression on the rank scale.
FLOOR = 8.0 / 1000.0

BILL_TYPES = ("CPM", "CPC", "CPE", "CPA")


# ---------------------------------------------------------------------- the Mesa reference


class BidderAgent(mesa.Agent):
    """An advertiser that prices itself into each session in plain Python.

    ``bid`` is yuan per billing event (per impression for CPM: the bid / 1000),
    ``multiplier`` the product of its current bid multipliers, ``qs`` its
    quality score (1-10), ``base_rate`` the predicted rate of its billing event
    (1 for CPM) and ``topic`` the interest category it is relevant to.
    """

    def __init__(self, model: mesa.Model, bid: float, multiplier: float, qs: float, base_rate: float, topic: int):
        super().__init__(model)
        self.bid = bid
        self.multiplier = multiplier
        self.qs = qs
        self.base_rate = base_rate
        self.topic = topic

    def value(self, rate: float) -> float:
        """Expected yuan per impression at the predicted rate ``rate``."""
        return self.bid * self.multiplier * rate

    def rank(self, affinity: list[float]) -> float:
        """Ad Rank in a session of a user with these interest affinities."""
        rate = self.base_rate * (0.5 + affinity[self.topic])
        return self.value(rate) * self.qs / 10.0


@dataclass
class Slot:
    """One filled ad slot of a session."""

    ad: int  # index of the winning agent (0-based, creation order)
    rank: float
    price: float  # yuan per billing event


class ReferenceMarket(mesa.Model):
    """A Mesa model whose agents bid session by session, in Python.

    Parameters
    ----------
    bids, multipliers, qs, base_rates, topics : one value per advertiser
    n_slots : ad positions per session
    floor : reserve on the Ad Rank
    """

    def __init__(
        self,
        bids: list[float],
        multipliers: list[float],
        qs: list[float],
        base_rates: list[float],
        topics: list[int],
        n_slots: int = 3,
        floor: float = FLOOR,
        seed: int = 0,
    ):
        super().__init__(rng=seed)
        self.n_slots = n_slots
        self.floor = floor
        self.bidders: list[BidderAgent] = []
        for b, m, q, r, t in zip(bids, multipliers, qs, base_rates, topics, strict=True):
            self.bidders.append(BidderAgent(self, b, m, q, r, t))

    def auction(self, ranks: list[float]) -> list[Slot]:
        """Fill one session's slots from the ads' ranks (0 or less: not eligible)."""
        entrants = [(r, i) for i, r in enumerate(ranks) if r >= self.floor and r > 0]
        entrants.sort(key=lambda x: (-x[0], x[1]))
        slots = []
        for k in range(min(self.n_slots, len(entrants))):
            rank, i = entrants[k]
            below = entrants[k + 1][0] if k + 1 < len(entrants) else 0.0
            a = self.bidders[i]
            price = a.bid * a.multiplier * max(below, self.floor) / rank
            slots.append(Slot(i, rank, min(price, a.bid * a.multiplier)))
        return slots

    def serve(self, affinity: list[float]) -> list[Slot]:
        """One session: every agent computes its rank for this user, then the auction."""
        return self.auction([a.rank(affinity) for a in self.bidders])

    def run_sessions(self, affinities: list[list[float]]) -> list[list[Slot]]:
        return [self.serve(aff) for aff in affinities]


def random_market(n_ads: int, n_topics: int = 9, n_slots: int = 3, seed: int = 0) -> ReferenceMarket:
    """A reference market of ``n_ads`` advertisers with engine-like bids and quality scores."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, size=n_ads, p=[0.3, 0.35, 0.15, 0.2])
    bid = np.choose(kind, [rng.lognormal(np.log(45.0), 0.35, n_ads) / 1000.0, rng.lognormal(np.log(1.6), 0.35, n_ads),
                           rng.lognormal(np.log(3.0), 0.35, n_ads), rng.lognormal(np.log(90.0), 0.35, n_ads)])
    base = np.choose(kind, [np.ones(n_ads), np.full(n_ads, 0.03), np.full(n_ads, 0.02), np.full(n_ads, 0.03 * 0.02)])
    return ReferenceMarket(
        bids=bid.tolist(),
        multipliers=rng.uniform(0.8, 1.2, n_ads).tolist(),
        qs=rng.uniform(3.0, 9.0, n_ads).tolist(),
        base_rates=base.tolist(),
        topics=rng.integers(0, n_topics, n_ads).tolist(),
        n_slots=n_slots,
        seed=seed,
    )


def python_rate(n_ads: int, n_sessions: int = 2_000, n_topics: int = 9, seed: int = 0) -> dict[str, float]:
    """Auctions and impressions per second of the Mesa reference (``n_sessions`` sessions)."""
    market = random_market(n_ads, n_topics, seed=seed)
    rng = np.random.default_rng(seed + 1)
    affinities = rng.random((n_sessions, n_topics)).tolist()
    t0, c0 = time.perf_counter(), time.process_time()
    out = market.run_sessions(affinities)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    impressions = sum(len(s) for s in out)
    return _rates(dt, cpu, n_sessions, impressions)


# ---------------------------------------------------------------------- the bare numpy kernel


def topk_kernel(
    rates: np.ndarray, coef: np.ndarray, n_slots: int, floor: float = FLOOR, method: str = "argpartition"
) -> tuple[np.ndarray, np.ndarray]:
    """Score a (sessions x ads) matrix and take each session's top ``n_slots`` (+ the first loser).

    Parameters
    ----------
    rates : ndarray (n_sessions, n_ads)
        Predicted rate of each ad's billing event in each session.
    coef : ndarray (n_ads,)
        ``bid x multiplier x QS / 10`` of each ad.
    method : "argpartition" (partition each row, sort the few survivors) or
        "argmax" (``n_slots + 1`` passes of a row-wise argmax, knocking out each
        winner: faster for a handful of slots because argmax is one streaming pass)

    Returns
    -------
    top : ndarray (n_sessions, n_slots + 1) of ad indices, best first (-1 below the floor)
    top_ranks : ndarray (n_sessions, n_slots + 1)
    """
    ranks = rates * coef[None, :]
    n_sessions, n_ads = ranks.shape
    take = min(n_slots + 1, n_ads)
    if method == "argmax":
        rows = np.arange(n_sessions)
        top = np.empty((n_sessions, take), dtype=np.intp)
        top_ranks = np.empty((n_sessions, take))
        for k in range(take):
            j = ranks.argmax(axis=1)
            top[:, k] = j
            top_ranks[:, k] = ranks[rows, j]
            ranks[rows, j] = -np.inf
    else:
        top = np.argpartition(-ranks, take - 1, axis=1)[:, :take] if n_ads > take else np.argsort(-ranks, axis=1)
        top_ranks = np.take_along_axis(ranks, top, axis=1)
        order = np.argsort(-top_ranks, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        top_ranks = np.take_along_axis(top_ranks, order, axis=1)
    top = np.where(top_ranks >= floor, top, -1)
    return top, top_ranks


def kernel_rate(
    n_ads: int, n_sessions: int = 1_000_000, chunk: int = 31_250, n_slots: int = 3, seed: int = 0, method: str = "argpartition"
) -> dict[str, float]:
    """Auctions and impressions per second of :func:`topk_kernel`, over ``n_sessions`` in chunks.

    ``chunk`` is the engine's chunk size at a million users (3 million sessions a
    day in 24 hours x 4 chunks); the rate matrices are made before the clock starts.
    """
    rng = np.random.default_rng(seed)
    chunk = min(chunk, n_sessions)
    n_chunks = max(1, n_sessions // chunk)
    coef = rng.lognormal(np.log(0.02), 0.5, n_ads)
    pool = [rng.random((chunk, n_ads)) for _ in range(min(n_chunks, 4))]
    impressions = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n_chunks):
        top, _ = topk_kernel(pool[i % len(pool)], coef, n_slots, method=method)
        impressions += int((top[:, :n_slots] >= 0).sum())
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return _rates(dt, cpu, n_chunks * chunk, impressions)


def _rates(wall: float, cpu: float, sessions: int, impressions: int) -> dict[str, float]:
    """Rates per wall-clock second and per CPU second (the latter is steadier on a shared machine)."""
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "sessions": sessions,
        "impressions": impressions,
        "auctions_per_s": sessions / wall,
        "impressions_per_s": impressions / wall,
        "auctions_per_cpu_s": sessions / max(cpu, 1e-9),
        "impressions_per_cpu_s": impressions / max(cpu, 1e-9),
    }
