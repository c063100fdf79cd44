"""Pacing controllers: how a campaign spreads its daily budget over the hours.

Each controller is updated at the start of every hour with what the campaign
spent so far and the day's expected traffic by hour, and answers with a bid
multiplier and a participation share (the share of eligible auctions it
enters).  ``asap`` never holds back; ``even`` throttles participation to a
spend plan proportional to expected traffic; ``adaptive`` shades bids
multiplicatively from spend vs plan (Balseiro and Gur 2019, adaptive pacing
by dual descent); ``pid`` steers the bid multiplier with a PID loop on the
cumulative spend error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
            self.throttle = _clip(left / (self.demand * rem), 0.005, 1.0)
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
