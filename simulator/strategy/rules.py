"""Bid rules: daily (and hourly, for dayparting) adjustments an advertiser applies.

Each rule reads the day (date, weekday, seasonal conditions) and the
campaign's results of yesterday, and writes into the campaign's plan for
today: a bid multiplier, per-hour and per-device multipliers, a budget
multiplier.  Rules compose in the order the scenario lists them; multipliers
multiply, and the product is held within platform-like bounds (-90 % .. +900 %).
Stateful rules (target CPA, impression share, conservative start) keep their
state per campaign.  Every change they make is reported as an event.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator import scenario as sc
from simulator.calendar import DayConditions

BOUNDS = (0.1, 10.0)
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass
class RuleContext:
    """What a rule may read when planning a campaign's day."""

    day: int  # day index in the run
    campaign_day: int  # days since the campaign started (0 on its first day)
    date: dt.date
    conditions: DayConditions
    yesterday: dict[str, float]  # impressions, clicks, conversions, spend, order_value, impression_share
    bid_type: str


@dataclass
class CampaignPlan:
    """A campaign's plan for one day, built up by the rules in turn."""

    multiplier: float = 1.0
    hour_multiplier: np.ndarray = field(default_factory=lambda: np.ones(24))
    device_multiplier: np.ndarray = field(default_factory=lambda: np.ones(2))  # android, iOS
    budget_multiplier: float = 1.0
    notes: list[tuple[str, str]] = field(default_factory=list)  # (event kind, detail)

    def clip(self) -> None:
        """Hold every combination of the rules' multipliers (day x hour x device) within ``BOUNDS``."""
        lo, hi = BOUNDS
        self.multiplier = float(np.clip(self.multiplier, lo, hi))
        self.hour_multiplier = np.clip(self.hour_multiplier, lo / self.multiplier, hi / self.multiplier)
        day_hour = self.multiplier * self.hour_multiplier
        dev_lo, dev_hi = lo / float(day_hour.min()), hi / float(day_hour.max())
        if dev_lo <= dev_hi:
            self.device_multiplier = np.clip(self.device_multiplier, dev_lo, dev_hi)
        else:  # the hours already span the whole range: devices cannot move it further
            self.device_multiplier = np.ones(2)

    def combined(self, hour: int, device: int) -> float:
        """The rules' product for one hour and device (0 Android, 1 iOS)."""
        return self.multiplier * float(self.hour_multiplier[hour]) * float(self.device_multiplier[device])


class BidRule:
    """Base of the rules: ``plan`` adjusts today's plan of campaign ``c``."""

    def __init__(self, spec: Any):
        self.spec = spec
        self.state: dict[int, float] = {}

    def plan(self, c: int, ctx: RuleContext, plan: CampaignPlan) -> None:
        raise NotImplementedError

    def _step(self, c: int, factor: float, why: str, plan: CampaignPlan) -> float:
        """Move the rule's stateful multiplier of campaign ``c`` by ``factor``; note a change."""
        old = self.state.get(c, 1.0)
        new = float(np.clip(old * factor, *BOUNDS))
        self.state[c] = new
        if not math.isclose(new, old, rel_tol=1e-9):
            plan.notes.append(("bid_change", f"{self.spec.rule}: x{old:.3f} -> x{new:.3f} ({why})"))
        return new


class Daypart(BidRule):
    """Hours ``[a, b]`` (inclusive, wrapping past midnight) get a multiplier."""

    def plan(self, c: int, ctx: RuleContext, plan: CampaignPlan) -> None:
        a, b = self.spec.hours
        hours = list(range(a, b + 1)) if a <= b else [*range(a, 24), *range(0, b + 1)]
        plan.hour_multiplier[hours] *= self.spec.multiplier


class Weekday(BidRule):
    def plan(self, c: int, ctx: RuleContext, plan: CampaignPlan) -> None:
        if WEEKDAYS[ctx.date.weekday()] in self.spec.days:
            plan.multiplier *= self.spec.multiplier


class Device(BidRule):
    def plan(self, c: int, ctx: RuleContext, plan: CampaignPlan) -> None:
        plan.device_multiplier *= np.array([self.spec.android, self.spec.ios])


class Seasonal(BidRule):
    """Inside an event (or a date range): bids and budget up by the multiplier or the event's competition."""

    def plan(self, c: int, ctx: RuleContext, plan: CampaignPlan) -> None:
        s = self.spec
        if s.event is not None:
            if s.event not in ctx.conditions.competition:
                return
            if s.start is not None and s.end is not None and not (s.start <= ctx.date <= s.end):
                return
            default = ctx.conditions.competition[s.event]
        else:
            if not (s.start <= ctx.date <= s.end):
                return
            default = 1.0
        bid = s.multiplier if s.multiplier is not None else default
        budget = s.budget_multiplier if s.budget_multiplier is not None else bid
        plan.multiplier *= bid
        plan.budget_multiplier *= budget
        plan.notes.append(("seasonal", f"{s.event or 'dates'}: bids x{bid:.2f}, budget x{budget:.2f}"))


class _CostTarget(BidRule):
    """Shared loop of ``target_cpa`` and ``target_roas``: steer the bid toward a cost target.

    Keeps exponentially weighted sums of spend and results (``memory`` of the
    day before carried each day), so the estimate pools several days of a
    noisy daily count.  Moves only when the estimate is off target by more
    than its sampling noise (relative sd ~ 1 / sqrt(results), at least
    ``tolerance``), by ``(target / estimate)`` bounded to ``1 +- step``: a
    proportional step that settles rather than a bang-bang one that
    oscillates around the target.
    """

    memory = 0.6

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.sums: dict[int, tuple[float, float]] = {}  # campaign -> (weighted spend, weighted results)

    def _results(self, y: dict[str, float]) -> float:
        raise NotImplementedError

    def _noise_count(self, c: int, y: dict[str, float]) -> float:
        """The pooled count whose Poisson noise sets the dead band (default: the results)."""
        return self.sums[c][1]

    def _ratio(self, spend: float, results: float) -> float:
        """Estimated cost / target (> 1: too expensive, lower bids)."""
        raise NotImplementedError

    def plan(self, c: int, ctx: RuleContext, plan: CampaignPlan) -> None:
        y = ctx.yesterday
        m = self.state.get(c, 1.0)
        if ctx.day > 0 and y.get("spend", 0.0) > 0:
            spend, results = self.sums.get(c, (0.0, 0.0))
            spend = self.memory * spend + y["spend"]
            results = self.memory * results + self._results(y)
            self.sums[c] = (spend, results)
            ratio = self._ratio(spend, results)
            count = self._noise_count(c, y)
            noise = max(self.spec.tolerance, 1.0 / math.sqrt(max(count, 1.0)))
            if abs(math.log(ratio)) > noise:
                factor = float(np.clip(1.0 / ratio, 1.0 - self.spec.step, 1.0 + self.spec.step))
                m = self._step(c, factor, self._why(spend, results), plan)
        plan.multiplier *= m

    def _why(self, spend: float, results: float) -> str:
        raise NotImplementedError


class TargetCpa(_CostTarget):
    """Lower bids while the (recent, pooled) CPA is above target, raise them while below."""

    def _results(self, y: dict[str, float]) -> float:
        return y.get("conversions", 0.0)

    def _ratio(self, spend: float, results: float) -> float:
        if results <= 0:
            # No conversion yet: only a spend of several targets is evidence of a too-high CPA.
            return max(1.0, spend / (2.0 * self.spec.target))
        return (spend / results) / self.spec.target

    def _why(self, spend: float, results: float) -> str:
        cpa = spend / results if results > 0 else math.inf
        return f"CPA {cpa:.1f} vs target {self.spec.target:.1f}"


class TargetRoas(_CostTarget):
    """Raise bids while ROAS (order value per yuan) is above target, lower them while below.

    Order value is a sum over conversions, so its noise is that of the
    conversion count: the pooled conversions set the band.
    """

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.conversions: dict[int, float] = {}

    def _results(self, y: dict[str, float]) -> float:
        return y.get("order_value", 0.0)

    def _ratio(self, spend: float, results: float) -> float:
        roas = results / spend
        return self.spec.target / max(roas, self.spec.target / 10.0)

    def _noise_count(self, c: int, y: dict[str, float]) -> float:
        conv = self.memory * self.conversions.get(c, 0.0) + y.get("conversions", 0.0)
        self.conversions[c] = conv
        return conv

    def _why(self, spend: float, results: float) -> str:
        return f"ROAS {results / spend:.2f} vs target {self.spec.target:.2f}"


class ImpressionShare(BidRule):
    def plan(self, c: int, ctx: RuleContext, plan: CampaignPlan) -> None:
        y, t, step = ctx.yesterday, self.spec.target, self.spec.step
        m = self.state.get(c, 1.0)
        share = y.get("impression_share", math.nan)
        if ctx.day > 0 and not math.isnan(share):
            if share < t:
                m = self._step(c, 1 + step, f"impression share {share:.2f} < {t:.2f}", plan)
            elif share > min(1.0, t + 0.1) and m > 1.0:
                m = self._step(c, max(1 / m, 1 - step), f"impression share {share:.2f} above {t:.2f}", plan)
        plan.multiplier *= m


class ConservativeStart(BidRule):
    """Start at ``fraction`` of the bid; scale up each day while the cost target holds."""

    def plan(self, c: int, ctx: RuleContext, plan: CampaignPlan) -> None:
        s = self.spec
        if c not in self.state:
            self.state[c] = s.fraction
            plan.notes.append(("bid_change", f"conservative_start: begins at x{s.fraction:.2f}"))
        elif self.state[c] < 1.0:
            y = ctx.yesterday
            holds = True
            if s.target_cpa is not None and y.get("spend", 0.0) > 0:
                conv = y.get("conversions", 0.0)
                holds = conv > 0 and y["spend"] / conv <= s.target_cpa
            if holds:
                old = self.state[c]
                self.state[c] = min(1.0, old * (1 + s.scale_per_day))
                plan.notes.append(("bid_change", f"conservative_start: x{old:.3f} -> x{self.state[c]:.3f}"))
        plan.multiplier *= self.state[c]


class BudgetShift(BidRule):
    """Advertiser-level: applied by the advertiser across its campaigns (see ``Advertiser``)."""

    def plan(self, c: int, ctx: RuleContext, plan: CampaignPlan) -> None:
        plan.budget_multiplier *= self.state.get(c, 1.0)


RULES: dict[str, type[BidRule]] = {
    "daypart": Daypart,
    "weekday": Weekday,
    "device": Device,
    "seasonal": Seasonal,
    "target_cpa": TargetCpa,
    "target_roas": TargetRoas,
    "impression_share": ImpressionShare,
    "conservative_start": ConservativeStart,
    "budget_shift": BudgetShift,
}
assert set(RULES) == set(sc.RULE_NAMES)


def make_rule(spec: Any) -> BidRule:
    return RULES[spec.rule](spec)
