"""Pacing controllers: how a campaign spreads its daily budget over the hours.

Each controller is updated at the start of every hour with what the campaign
spent so far and the day's expected traffic by hour, and answers with a bid
multiplier and a participation share (the share of eligible auctions it
enters).  ``asap`` never holds back; ``even`` throttles participation to a
spend plan proportional to expected traffic; ``adaptive`` shades bids
multiplicatively from spend vs plan (Balseiro and Gur 2019, adaptive pacing
by dual descent); ``pid`` steers the bid multiplier with a PID loop on the
cumulative spend error.

The classes are the reference, one campaign at a time; the market runs
``PacingBank``, the same controllers as arrays over all campaigns, which the
tests hold to identical results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from simulator.scenario import PacingParams

#: Pacing only shades bids (never raises them above what the advertiser bid): 10 % .. 100 %.
BID_BOUNDS = (0.1, 1.0)


@dataclass
class PaceState:
    """What a controller sees at the start of an hour (yuan)."""

    hour: int
    budget: float  # today's daily budget
    spent: float  # spent so far today
    hour_spend: np.ndarray  # (24,) spent in each hour so far today
    traffic_share: np.ndarray  # (24,) expected share of today's traffic in each hour (sums to 1)
    exhausted: bool = False  # the campaign left today's auctions (budget spent)

    def remaining_share(self) -> float:
        return float(self.traffic_share[self.hour :].sum())

    def hourly_target(self) -> float:
        """Re-planned target for this hour: the budget left, spread over the traffic left."""
        rem = self.remaining_share()
        left = max(0.0, self.budget - self.spent)
        return left * float(self.traffic_share[self.hour]) / rem if rem > 0 else 0.0


def _ratio(left: float, demand: float) -> float:
    """``left / demand``, where a demand too small to represent (underflowed to 0) reads as vanishing:
    any money left then buys full participation, none buys none."""
    if demand > 0:
        return left / demand
    return math.inf if left > 0 else 0.0


def _clip(x: float, lo: float, hi: float) -> float:
    """``np.clip`` of one Python float (the same value, without numpy's per-call cost; pacing runs hourly per campaign)."""
    return float(min(max(x, lo), hi))


class Pacer:
    """Base: no pacing."""

    name = "asap"

    def __init__(self, params: PacingParams):
        self.params = params
        self.multiplier = 1.0
        self.throttle = 1.0

    def update(self, s: PaceState) -> tuple[float, float]:
        return self.multiplier, self.throttle


class EvenPacer(Pacer):
    """Throttle participation so that spend follows the expected traffic of each hour.

    Estimates ``demand``: what the campaign would spend per unit of traffic
    share at full participation, from the last hour's spend and participation;
    then enters ``left / (demand x traffic left)`` of its auctions.
    """

    name = "even"

    def __init__(self, params: PacingParams):
        super().__init__(params)
        self.demand: float | None = None
        self.throttle = 0.3

    def update(self, s: PaceState) -> tuple[float, float]:
        if s.hour > 0:
            prev_share = float(s.traffic_share[s.hour - 1])
            spent_prev = float(s.hour_spend[s.hour - 1])
            if self.throttle > 0.005 and prev_share > 0 and (spent_prev > 0 or self.throttle >= 0.999):
                observed = spent_prev / (self.throttle * prev_share)
                self.demand = observed if self.demand is None else 0.5 * self.demand + 0.5 * observed
        rem = s.remaining_share()
        left = max(0.0, s.budget - s.spent)
        if self.demand is not None and self.demand > 0 and rem > 0:
            self.throttle = _clip(_ratio(left, self.demand * rem), 0.005, 1.0)
        elif s.hour > 0:
            self.throttle = min(1.0, self.throttle * 2.0)
        return 1.0, self.throttle


class AdaptivePacer(Pacer):
    """Multiplicative bid shading from spend vs plan (Balseiro and Gur's adaptive pacing).

    Keeps a dual variable ``mu >= 0`` and bids ``value / (1 + mu)``.  After each
    hour, ``mu`` moves by ``step x (spend - target) / target``, scaled by
    ``1 + mu`` so that the step is relative to the current shading.
    """

    name = "adaptive"

    def __init__(self, params: PacingParams):
        super().__init__(params)
        self.mu = 0.0
        self._target_prev: float | None = None

    def update(self, s: PaceState) -> tuple[float, float]:
        if s.hour == 0:
            self._target_prev = None  # a new day: yesterday's last hour says nothing of today's plan
        elif self._target_prev is not None and self._target_prev > 0:
            error = (float(s.hour_spend[s.hour - 1]) - self._target_prev) / self._target_prev
            error = _clip(error, -1.0, 2.0)
            self.mu = _clip(self.mu + self.params.step * error * (1.0 + self.mu), 0.0, 1.0 / BID_BOUNDS[0] - 1.0)
        # Once the budget is gone there is no plan to follow: hold the multiplier (do not learn
        # "under-spending" from hours in which the campaign could not bid at all).
        self._target_prev = None if s.exhausted else s.hourly_target()
        self.multiplier = 1.0 / (1.0 + self.mu)
        return self.multiplier, 1.0


class PidPacer(Pacer):
    """PID loop on the cumulative spend error: ``m = exp(kp e + ki sum(e) + kd de)``.

    ``e`` is (plan so far - spent so far) / budget, the plan proportional to
    expected traffic; positive when under-spending, which raises the multiplier
    back toward 1 (pacing never bids above the advertiser's bid).
    """

    name = "pid"

    def __init__(self, params: PacingParams):
        super().__init__(params)
        self.integral = 0.0
        self.prev_error = 0.0
        self.bias = 0.0

    def update(self, s: PaceState) -> tuple[float, float]:
        if s.hour == 0:
            # Carry what was learned yesterday into today's starting point.
            self.bias = _clip(self.bias + self.params.ki * self.integral, -3.0, 0.0)
            self.integral = 0.0
            self.prev_error = 0.0
        plan = s.budget * float(s.traffic_share[: s.hour].sum())
        e = (plan - s.spent) / s.budget if s.budget > 0 else 0.0
        # (Exhausted hours still count: spent = budget is truly ahead of the plan, and the
        # cumulative error carries that into tomorrow's starting bias.)
        if not (e > 0 and self.multiplier >= BID_BOUNDS[1]):  # anti-windup: no credit while bids are full
            self.integral += e
        p = self.params
        u = self.bias + p.kp * e + p.ki * self.integral + p.kd * (e - self.prev_error)
        self.prev_error = e
        self.multiplier = _clip(math.exp(_clip(u, -5.0, 5.0)), *BID_BOUNDS)
        return self.multiplier, 1.0


PACERS: dict[str, type[Pacer]] = {"asap": Pacer, "even": EvenPacer, "adaptive": AdaptivePacer, "pid": PidPacer}


def make_pacer(name: str, params: PacingParams) -> Pacer:
    return PACERS[name](params)


class PacingBank:
    """Every campaign's pacing controller as arrays: one hourly update for all campaigns at once.

    The controllers above, one campaign at a time, are the reference: the bank
    runs the same arithmetic, operation for operation, on the rows of each
    kind, so its multipliers and participation shares are identical to theirs
    (the tests hold it to that).  Pacing runs 24 times a day for every
    campaign, and a Python call per campaign and hour costs more than the
    auctions once advertisers number in the thousands.

    State, one row per campaign: ``multiplier`` and ``throttle`` (what the
    controller answers), ``demand`` (even; NaN until first estimated), ``mu``
    and ``target_prev`` (adaptive; NaN when there is no plan to learn from),
    ``integral``, ``prev_error`` and ``bias`` (pid).

    Parameters
    ----------
    kinds : each campaign's controller name (a key of ``PACERS``)
    params : each campaign's controller parameters
    """

    def __init__(self, kinds: list[str], params: list[PacingParams]):
        n = len(kinds)
        names = np.array(kinds, dtype=object)
        self.even_idx = np.flatnonzero(names == EvenPacer.name)
        self.adaptive_idx = np.flatnonzero(names == AdaptivePacer.name)
        self.pid_idx = np.flatnonzero(names == PidPacer.name)
        self.multiplier = np.ones(n)
        self.throttle = np.ones(n)
        self.throttle[self.even_idx] = 0.3
        self.demand = np.full(n, np.nan)
        self.mu = np.zeros(n)
        self.target_prev = np.full(n, np.nan)
        self.integral = np.zeros(n)
        self.prev_error = np.zeros(n)
        self.bias = np.zeros(n)
        self.step = np.array([p.step for p in params], dtype=np.float64)
        self.kp = np.array([p.kp for p in params], dtype=np.float64)
        self.ki = np.array([p.ki for p in params], dtype=np.float64)
        self.kd = np.array([p.kd for p in params], dtype=np.float64)

    def update(
        self,
        hour: int,
        active: NDArray[np.bool_],
        budget: NDArray[np.float64],
        spent: NDArray[np.float64],
        spent_prev_hour: NDArray[np.float64] | None,
        traffic_share: NDArray[np.float64],
        exhausted: NDArray[np.bool_],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Start of ``hour``: update the active campaigns' controllers.

        Parameters
        ----------
        active, exhausted : (n_campaigns,) bool; inactive campaigns keep their state
        budget, spent : (n_campaigns,) today's daily budget and spend so far (yuan)
        spent_prev_hour : (n_campaigns,) spend in the hour before (yuan); None at hour 0
        traffic_share : (24,) today's expected share of traffic by hour (sums to 1)

        Returns
        -------
        multiplier, throttle : (n_campaigns,) the bid multiplier and participation
            share of every campaign (the state arrays themselves: read, do not keep)
        """
        ts = traffic_share
        rem = float(ts[hour:].sum())  # the traffic left today, as PaceState.remaining_share
        left = _floor0(budget - spent)
        prev_share = float(ts[hour - 1]) if hour > 0 else 0.0
        # even: demand per unit of traffic share at full participation, from the last hour.
        e = self.even_idx[active[self.even_idx]]
        if hour > 0 and e.size:
            th, sp = self.throttle[e], spent_prev_hour[e]
            k = e[(th > 0.005) & (prev_share > 0) & ((sp > 0) | (th >= 0.999))]
            observed = spent_prev_hour[k] / (self.throttle[k] * prev_share)
            d = self.demand[k]
            self.demand[k] = np.where(np.isnan(d), observed, 0.5 * d + 0.5 * observed)
        d = self.demand[e]
        planned = (d > 0) & (rem > 0)  # (NaN > 0 is False: no estimate yet)
        with np.errstate(all="ignore"):  # (no estimate: NaN, set aside below; a vanishing one: as _ratio)
            demand = d * rem
            ratio = np.where(demand > 0, left[e] / demand, np.where(left[e] > 0, np.inf, 0.0))
            t_plan = _clip_array(ratio, 0.005, 1.0)
        th = self.throttle[e]
        t_idle = _min1(th * 2.0) if hour > 0 else th
        self.throttle[e] = np.where(planned, t_plan, t_idle)
        # adaptive: mu moves by step x relative error of the last hour, scaled by 1 + mu.
        a = self.adaptive_idx[active[self.adaptive_idx]]
        if hour > 0:  # (at hour 0, yesterday's last plan says nothing of today's)
            k = a[self.target_prev[a] > 0]
            tp = self.target_prev[k]
            error = _clip_array((spent_prev_hour[k] - tp) / tp, -1.0, 2.0)
            mu = self.mu[k]
            self.mu[k] = _clip_array(mu + self.step[k] * error * (1.0 + mu), 0.0, 1.0 / BID_BOUNDS[0] - 1.0)
        target = left[a] * float(ts[hour]) / rem if rem > 0 else np.zeros(a.size)
        self.target_prev[a] = np.where(exhausted[a], np.nan, target)
        self.multiplier[a] = 1.0 / (1.0 + self.mu[a])
        # pid: exp of a PID sum on the cumulative spend error (plan so far - spent) / budget.
        p = self.pid_idx[active[self.pid_idx]]
        if hour == 0:
            self.bias[p] = _clip_array(self.bias[p] + self.ki[p] * self.integral[p], -3.0, 0.0)
            self.integral[p] = 0.0
            self.prev_error[p] = 0.0
        b = budget[p]
        plan = b * float(ts[:hour].sum())
        err = np.zeros(p.size)
        pos = b > 0
        err[pos] = (plan[pos] - spent[p][pos]) / b[pos]
        credit = ~((err > 0) & (self.multiplier[p] >= BID_BOUNDS[1]))  # anti-windup, as PidPacer
        self.integral[p] = np.where(credit, self.integral[p] + err, self.integral[p])
        u = self.bias[p] + self.kp[p] * err + self.ki[p] * self.integral[p] + self.kd[p] * (err - self.prev_error[p])
        self.prev_error[p] = err
        # math.exp, as the reference: numpy's exp may round differently on another CPU's vector unit.
        grown = np.array([math.exp(x) for x in _clip_array(u, -5.0, 5.0).tolist()], dtype=np.float64)
        self.multiplier[p] = _clip_array(grown, *BID_BOUNDS)
        return self.multiplier, self.throttle


def _clip_array(x: NDArray[np.float64], lo: float, hi: float) -> NDArray[np.float64]:
    """:func:`_clip` elementwise, with its exact choices (NaN stays NaN; the bound is taken only when crossed)."""
    y = np.where(lo > x, lo, x)
    return np.where(hi < y, hi, y)


def _floor0(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """``max(0.0, x)`` elementwise, as Python's ``max`` picks it."""
    return np.where(x > 0.0, x, 0.0)


def _min1(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """``min(1.0, x)`` elementwise, as Python's ``min`` picks it."""
    return np.where(x < 1.0, x, 1.0)
