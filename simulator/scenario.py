"""The scenario: the validated input of a run (TOML file -> pydantic models).

This module owns the file format of DESIGN.md section 8: every field, its
default, its bounds and the cross-field checks.  It turns a TOML file into a
:class:`Scenario`, writes a resolved scenario back to TOML, and turns
validation failures into one readable line per problem
(:class:`ScenarioError`).  It must not simulate anything, and nothing read from
a file is ever evaluated or imported by name: strategy names are checked
against the registries' literal names.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
import tomllib
import types
import typing
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: Interest categories of the default market (DESIGN.md section 2).
DEFAULT_CATEGORIES = [
    "beauty",
    "fashion",
    "food",
    "travel",
    "home",
    "parenting",
    "fitness",
    "tech",
    "luxury",
    "pets",
]
AGE_BANDS = ["18-24", "25-34", "35-44", "45+"]
CITY_TIERS = [1, 2, 3]
DEVICES = ["ios", "android"]
BID_TYPES = ["CPM", "CPC", "CPE", "CPA"]
OBJECTIVE_BID_TYPE = {
    "awareness": "CPM",
    "traffic": "CPC",
    "engagement": "CPE",
    "conversions": "CPA",
}
PACING_NAMES = ["asap", "even", "adaptive", "pid"]

# Resource limits: refuse absurd sizes before allocating anything.
MAX_USERS = 20_000_000
MAX_DAYS = 400
MAX_ADVERTISERS = 5_000
MAX_CAMPAIGNS = 20_000
MAX_SLOTS = 10
MAX_BID = 1_000_000  # yuan per billing event
MAX_DAILY_BUDGET = 1e9  # yuan
MAX_TOTAL_BUDGET = 1e11  # yuan
MAX_FILE_BYTES = 5_000_000  # a scenario file is hand-written: megabytes mean a mistake


class Strict(BaseModel):
    """Base of every scenario model: unknown keys are errors, and so are NaN and infinity.

    TOML has ``nan`` and ``inf`` literals; no field of a scenario means either,
    and a NaN would slip through every ``ge``/``le`` bound (all comparisons are false).
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def _one_line(v: str) -> str:
    """Names end up in folder names, table cells and one-line messages: no control characters."""
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in v):
        raise ValueError("must not contain control characters (newlines, tabs, ...)")
    return v


#: A name or label: one line of printable text.
OneLine = Annotated[str, AfterValidator(_one_line)]


# --------------------------------------------------------------------------
# Distributions for [[generate]]
# --------------------------------------------------------------------------


class Dist(Strict):
    """A distribution to draw a number from: exactly one of the fields is set.

    ``{ lognormal = [mu, sigma] }`` (of the natural log), ``{ uniform = [lo, hi] }``,
    ``{ normal = [mean, sd] }``, ``{ beta = [a, b] }`` or ``{ value = x }``.
    """

    lognormal: tuple[float, Annotated[float, Field(ge=0)]] | None = None
    uniform: tuple[float, float] | None = None
    normal: tuple[float, Annotated[float, Field(ge=0)]] | None = None
    beta: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] | None = None
    value: float | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Dist:
        given = [k for k in ("lognormal", "uniform", "normal", "beta", "value") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of lognormal, uniform, normal, beta, value")
        if self.uniform is not None and self.uniform[0] > self.uniform[1]:
            raise ValueError("uniform = [lo, hi] needs lo <= hi")
        if self.uniform is not None and not math.isfinite(self.uniform[1] - self.uniform[0]):
            raise ValueError("uniform = [lo, hi] needs a finite span hi - lo")
        # -0.0 passes ``ge=0`` but numpy's samplers refuse a negative-signed spread: write it as 0.0.
        for k in ("lognormal", "normal"):
            params = getattr(self, k)
            if params is not None:
                setattr(self, k, (params[0], params[1] + 0.0))
        return self


def _as_dist(v: Any) -> Any:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return {"value": float(v)}
    return v


DistLike = Annotated[Dist, Field(description="a number or a distribution table")]


# --------------------------------------------------------------------------
# Population, traffic, auction, quality, calendar
# --------------------------------------------------------------------------


class Population(Strict):
    users: int = Field(100_000, ge=100, le=MAX_USERS, description="number of users")
    female_share: float = Field(0.70, ge=0, le=1)
    ios_share: float = Field(0.45, ge=0, le=1)
    age_shares: list[float] = Field(default_factory=lambda: [0.32, 0.40, 0.18, 0.10])
    city_tier_shares: list[float] = Field(default_factory=lambda: [0.40, 0.35, 0.25])
    interest_concentration: float = Field(
        0.4, gt=0, description="Dirichlet concentration of interest vectors; lower = more focused users"
    )
    taste_dims: int = Field(8, ge=1, le=64)
    familiarity_days: int = Field(
        14, ge=0, le=365, description="days users stay familiar with a brand after a click or purchase (0: never)"
    )

    @field_validator("age_shares")
    @classmethod
    def _ages(cls, v: list[float]) -> list[float]:
        return _shares(v, len(AGE_BANDS), "age bands")

    @field_validator("city_tier_shares")
    @classmethod
    def _tiers(cls, v: list[float]) -> list[float]:
        return _shares(v, len(CITY_TIERS), "city tiers")


def _shares(v: list[float], n: int, what: str) -> list[float]:
    if len(v) != n:
        raise ValueError(f"needs {n} shares, one per {what} (got {len(v)})")
    if any(x < 0 for x in v) or not math.isclose(sum(v), 1.0, abs_tol=1e-6):
        raise ValueError("shares must be >= 0 and sum to 1")
    return v


#: Default hour-of-day traffic curve (mean 1): low at night, lunch bump, evening peak 20-23.
DEFAULT_HOUR_CURVE = [
    0.45, 0.25, 0.15, 0.10, 0.08, 0.10, 0.25, 0.55, 0.85, 0.95, 1.00, 1.05,
    1.30, 1.25, 1.00, 0.95, 1.00, 1.05, 1.20, 1.45, 1.80, 2.00, 1.95, 1.32,
]  # fmt: skip
#: Default weekday curve (Mon..Sun): weekends above weekdays.
DEFAULT_WEEKDAY_CURVE = [0.95, 0.94, 0.95, 0.96, 1.00, 1.10, 1.10]


class Traffic(Strict):
    sessions_per_user_per_day: float = Field(3.0, gt=0, le=100)
    ad_slots: int = Field(3, ge=1, le=MAX_SLOTS)
    view_factors: list[float] | None = Field(
        None, description="one per slot, non-increasing, in (0, 1]; default 1.0, 0.7, 0.5, ..."
    )
    frequency_cap: int = Field(4, ge=0, le=1000, description="impressions of one ad per user per day; 0 = none")
    hour_curve: list[float] = Field(default_factory=lambda: list(DEFAULT_HOUR_CURVE))
    weekday_curve: list[float] = Field(default_factory=lambda: list(DEFAULT_WEEKDAY_CURVE))
    chunks_per_hour: int = Field(
        4, ge=1, le=60, description="time-ordered chunks an hour is served in (budget exits between chunks)"
    )

    @field_validator("hour_curve")
    @classmethod
    def _hours(cls, v: list[float]) -> list[float]:
        if len(v) != 24 or any(x < 0 for x in v) or sum(v) <= 0:
            raise ValueError("needs 24 non-negative values, not all zero")
        return v

    @field_validator("weekday_curve")
    @classmethod
    def _weekdays(cls, v: list[float]) -> list[float]:
        if len(v) != 7 or any(x < 0 for x in v):
            raise ValueError("needs 7 non-negative values (Monday first)")
        return v

    @model_validator(mode="after")
    def _views(self) -> Traffic:
        if self.view_factors is None:
            self.view_factors = [round(max(0.1, 1.0 - 0.3 * k + 0.05 * k * (k - 1) / 2), 3) for k in range(self.ad_slots)]
            self.view_factors[0] = 1.0
        vf = self.view_factors
        if len(vf) != self.ad_slots:
            raise ValueError(f"view_factors: has {len(vf)} values but ad_slots = {self.ad_slots} (give one per slot)")
        if any(not (0 < x <= 1) for x in vf) or any(a < b for a, b in zip(vf, vf[1:], strict=False)):
            raise ValueError(f"view_factors: must be in (0, 1] and non-increasing (got {vf})")
        return self


class Auction(Strict):
    mechanism: Literal["gsp", "vcg", "first_price"] = "gsp"
    reserve_ecpm: float = Field(8.0, ge=0, description="floor on Ad Rank, in yuan per 1,000 impressions")
    min_quality: float = Field(3.0, ge=1, le=10, description="QS below this enters (QS/min_quality)^2 of auctions")
    cpa_min_conversions: int = Field(50, ge=0, description="account conversions needed before CPA bidding opens")
    learning_conversions: int = Field(50, ge=1)
    learning_days: int = Field(7, ge=1)
    compensation_threshold: float = Field(0.20, ge=0)
    compensation_days: int = Field(3, ge=0, description="days after learning in which over-cost is refunded")
    cpa_billing: Literal["click", "conversion"] = Field(
        "click", description="after learning: oCPC click billing at target x pCVR, or per conversion"
    )


class QualityWeights(Strict):
    relevance: float = Field(0.20, ge=0)
    history: float = Field(0.20, ge=0)
    content: float = Field(0.15, ge=0)
    engagement: float = Field(0.20, ge=0)
    landing: float = Field(0.15, ge=0)
    reputation: float = Field(0.10, ge=0)

    @model_validator(mode="after")
    def _sum_one(self) -> QualityWeights:
        total = sum(self.model_dump().values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"weights must sum to 1 (they sum to {total:.4g})")
        return self


class EngagementWeights(Strict):
    like: float = Field(1.0, ge=0)
    save: float = Field(1.0, ge=0)
    comment: float = Field(4.0, ge=0)
    share: float = Field(4.0, ge=0)
    follow: float = Field(8.0, ge=0)


class Quality(Strict):
    dynamic: bool = True
    smoothing: float = Field(0.3, gt=0, le=1, description="weight of today's reading in the daily update")
    prior_strength: float = Field(2_000.0, ge=0, description="pseudo-impressions behind the category prior")
    weights: QualityWeights = Field(default_factory=QualityWeights)
    engagement_weights: EngagementWeights = Field(default_factory=EngagementWeights)
    review_noise: float = Field(0.08, ge=0, le=1, description="sd of the platform's reading of content quality")


class Event(Strict):
    """A seasonal event: a preset by name, or a custom one with dates."""

    preset: str | None = None
    name: OneLine | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    traffic: float | None = Field(None, gt=0, le=20)
    intent: float | None = Field(None, gt=0, le=20, description="multiplier on conversion rate")
    order_value: float | None = Field(None, gt=0, le=20)
    competition: float | None = Field(None, gt=0, le=20, description="bid/budget multiplier of seasonal advertisers")

    @model_validator(mode="after")
    def _dates(self) -> Event:
        from simulator.calendar import PRESETS

        if self.preset is None:
            if self.name is None or self.start is None or self.end is None:
                raise ValueError("a custom event needs name, start and end (or give a preset)")
        elif self.preset not in PRESETS:
            raise ValueError(_unknown("preset", self.preset, list(PRESETS)))
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end: is before start")
        return self


class CalendarSpec(Strict):
    events: list[Event] = Field(default_factory=list)


# --------------------------------------------------------------------------
# Strategy: pacing and bid rules
# --------------------------------------------------------------------------


class RuleBase(Strict):
    pass


class DaypartRule(RuleBase):
    rule: Literal["daypart"]
    hours: tuple[Annotated[int, Field(ge=0, le=23)], Annotated[int, Field(ge=0, le=23)]]
    multiplier: float = Field(gt=0)


class WeekdayRule(RuleBase):
    rule: Literal["weekday"]
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1)
    multiplier: float = Field(gt=0)


class DeviceRule(RuleBase):
    rule: Literal["device"]
    ios: float = Field(1.0, gt=0)
    android: float = Field(1.0, gt=0)


class SeasonalRule(RuleBase):
    rule: Literal["seasonal"]
    event: str | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    multiplier: float | None = Field(None, gt=0, description="bid multiplier; default the event's competition")
    budget_multiplier: float | None = Field(None, gt=0, description="daily budget multiplier; default as bids")

    @model_validator(mode="after")
    def _when(self) -> SeasonalRule:
        if self.event is None and (self.start is None or self.end is None):
            raise ValueError("give an event name or start and end dates")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end: is before start")
        return self


class TargetCpaRule(RuleBase):
    rule: Literal["target_cpa"]
    target: float = Field(gt=0, description="yuan per conversion")
    step: float = Field(0.10, gt=0, lt=1, description="largest daily bid change, as a share")
    tolerance: float = Field(0.05, ge=0, le=1, description="dead band around the target (log ratio), at least the sampling noise")


class TargetRoasRule(RuleBase):
    rule: Literal["target_roas"]
    target: float = Field(gt=0, description="order value per yuan spent")
    step: float = Field(0.10, gt=0, lt=1, description="largest daily bid change, as a share")
    tolerance: float = Field(0.05, ge=0, le=1, description="dead band around the target (log ratio), at least the sampling noise")


class ImpressionShareRule(RuleBase):
    rule: Literal["impression_share"]
    target: float = Field(gt=0, le=1)
    step: float = Field(0.10, gt=0, le=1)


class ConservativeStartRule(RuleBase):
    rule: Literal["conservative_start"]
    fraction: float = Field(0.6, gt=0, le=1)
    scale_per_day: float = Field(0.10, gt=0, le=1)
    target_cpa: float | None = Field(None, gt=0)


class BudgetShiftRule(RuleBase):
    rule: Literal["budget_shift"]
    fraction: float = Field(0.2, gt=0, le=1, description="share of budget moved per day at most")


Rule = Annotated[
    Union[
        DaypartRule,
        WeekdayRule,
        DeviceRule,
        SeasonalRule,
        TargetCpaRule,
        TargetRoasRule,
        ImpressionShareRule,
        ConservativeStartRule,
        BudgetShiftRule,
    ],
    Field(discriminator="rule"),
]
RULE_NAMES = [
    "daypart",
    "weekday",
    "device",
    "seasonal",
    "target_cpa",
    "target_roas",
    "impression_share",
    "conservative_start",
    "budget_shift",
]


class PacingParams(Strict):
    step: float = Field(0.15, gt=0, le=2, description="adaptive: multiplier step size")
    kp: float = Field(0.6, ge=0, description="pid: proportional gain")
    ki: float = Field(0.15, ge=0, description="pid: integral gain")
    kd: float = Field(0.05, ge=0, description="pid: derivative gain")


class Strategy(Strict):
    pacing: Literal["asap", "even", "adaptive", "pid"] = "asap"
    pacing_params: PacingParams = Field(default_factory=PacingParams)
    rules: list[Rule] = Field(default_factory=list)


# --------------------------------------------------------------------------
# Advertisers, campaigns, creatives
# --------------------------------------------------------------------------


class Account(Strict):
    followers: int = Field(1_000, ge=0)
    history_conversions: int = Field(0, ge=0)
    age_days: int = Field(365, ge=0)
    posting_consistency: float = Field(0.5, ge=0, le=1)


class Creative(Strict):
    name: OneLine = Field(min_length=1, max_length=80)
    format: Literal["image", "video"] = "image"
    production: float = Field(0.6, ge=0, le=1)
    authenticity: float = Field(0.6, ge=0, le=1)
    localization: float = Field(0.8, ge=0, le=1)
    vertical: bool = True
    topic: str | None = Field(None, description="interest category of the creative; default the advertiser's")
    compliance_risk: float = Field(0.1, ge=0, le=1)
    start_date: dt.date | None = None


class Bid(Strict):
    type: Literal["CPM", "CPC", "CPE", "CPA"]
    amount: float = Field(gt=0, le=MAX_BID, description="yuan per billing event (per 1,000 impressions for CPM)")


class Budget(Strict):
    daily: float = Field(gt=0, le=MAX_DAILY_BUDGET, description="yuan per day")
    total: float | None = Field(None, gt=0, le=MAX_TOTAL_BUDGET, description="yuan over the campaign")


class Lookalike(Strict):
    """Users most like a seed audience: give a ``size`` (users) or an expansion ``ratio`` (share of all users)."""

    seed: Literal["clicked", "converted"] = "converted"
    ratio: float = Field(0.05, gt=0, le=1, description="share of all users in the lookalike audience")
    size: int | None = Field(None, ge=1, le=MAX_USERS, description="users in the audience (overrides ratio)")
    exclude_seed: bool = Field(False, description="leave the seed users themselves out (prospecting)")


class Targeting(Strict):
    interests: list[str] = Field(default_factory=list)
    gender: Literal["all", "female", "male"] = "all"
    ages: list[Literal["18-24", "25-34", "35-44", "45+"]] = Field(default_factory=list)
    city_tiers: list[Literal[1, 2, 3]] = Field(default_factory=list)
    devices: list[Literal["ios", "android"]] = Field(default_factory=list)
    custom_audience: Literal["clicked", "converted"] | None = None
    lookalike: Lookalike | None = None
    exclude: Literal["clicked", "converted"] | None = None


class Edit(Strict):
    """A change the advertiser makes on a date (a bid or targeting edit re-enters oCPC learning)."""

    date: dt.date
    bid: float | None = Field(None, gt=0, le=1_000_000)
    daily_budget: float | None = Field(None, gt=0, le=1e9)
    targeting: Targeting | None = Field(None, description="the campaign's new targeting, replacing the old whole")


class Campaign(Strict):
    name: OneLine = Field(min_length=1, max_length=80)
    objective: Literal["awareness", "traffic", "engagement", "conversions"] | None = None
    bid: Bid
    budget: Budget
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    targeting: Targeting = Field(default_factory=Targeting)
    value_per_conversion: float = Field(150.0, ge=0, description="mean order value, yuan")
    landing_page: float | None = Field(0.7, ge=0, le=1, description="landing-page quality; none = no landing page")
    initial_quality: float | None = Field(None, ge=1, le=10)
    creatives: list[Creative] = Field(default_factory=lambda: [Creative(name="default")], min_length=1)
    ab_test: Literal["split", "significance", "thompson"] = "significance"
    ab_metric: Literal["ctr", "engagement_rate", "conversion_rate"] = "ctr"
    ab_min_impressions: int = Field(2_000, ge=10)
    ab_alpha: float = Field(0.05, gt=0, lt=1)
    resubmit_rejected: bool = Field(True, description="fix and resubmit a rejected creative (lower risk, new review)")
    edits: list[Edit] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fill(self) -> Campaign:
        if self.objective is None:
            self.objective = {v: k for k, v in OBJECTIVE_BID_TYPE.items()}[self.bid.type]
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date: is before start_date")
        if self.budget.total is not None and self.budget.total < self.budget.daily:
            raise ValueError(f"budget.total: {self.budget.total:g} is below budget.daily ({self.budget.daily:g})")
        _unique([c.name for c in self.creatives], "creative")
        return self


class Advertiser(Strict):
    name: OneLine = Field(min_length=1, max_length=80)
    category: OneLine
    account: Account = Field(default_factory=Account)
    strategy: Strategy = Field(default_factory=Strategy)
    campaigns: list[Campaign] = Field(min_length=1)
    enter_date: dt.date | None = None
    exit_date: dt.date | None = None

    @model_validator(mode="after")
    def _names(self) -> Advertiser:
        _unique([c.name for c in self.campaigns], "campaign")
        return self


class Generate(Strict):
    """A population of advertisers drawn from distributions."""

    count: int = Field(ge=1, le=MAX_ADVERTISERS)
    name_prefix: OneLine = Field("gen", min_length=1, max_length=40)
    categories: list[OneLine] = Field(min_length=1)
    daily_budget: Dist = Field(default_factory=lambda: Dist(lognormal=(7.0, 0.6)))
    campaign_days: float | None = Field(None, ge=1, description="total budget = daily x this; none = no total")
    bid_types: dict[Literal["CPM", "CPC", "CPE", "CPA"], float] = Field(
        default_factory=lambda: {"CPC": 0.5, "CPM": 0.2, "CPE": 0.15, "CPA": 0.15}
    )
    bid_cpm: Dist = Field(default_factory=lambda: Dist(lognormal=(math.log(45.0), 0.35)))
    bid_cpc: Dist = Field(default_factory=lambda: Dist(lognormal=(math.log(1.6), 0.35)))
    bid_cpe: Dist = Field(default_factory=lambda: Dist(lognormal=(math.log(3.0), 0.35)))
    bid_cpa: Dist = Field(default_factory=lambda: Dist(lognormal=(math.log(90.0), 0.35)))
    value_per_conversion: Dist = Field(default_factory=lambda: Dist(lognormal=(math.log(160.0), 0.4)))
    production: Dist = Field(default_factory=lambda: Dist(uniform=(0.3, 0.9)))
    authenticity: Dist = Field(default_factory=lambda: Dist(uniform=(0.2, 0.9)))
    landing_page: Dist = Field(default_factory=lambda: Dist(uniform=(0.4, 0.9)))
    video_share: float = Field(0.5, ge=0, le=1)
    followers: Dist = Field(default_factory=lambda: Dist(lognormal=(8.5, 1.5)))
    history_conversions: Dist = Field(default_factory=lambda: Dist(lognormal=(4.0, 1.2)))
    pacing: dict[Literal["asap", "even", "adaptive", "pid"], float] = Field(default_factory=lambda: {"asap": 1.0})
    seasonal_share: float = Field(0.0, ge=0, le=1, description="share that reacts to events (a seasonal rule)")
    seasonal_event: str | None = None
    target_interests: int = Field(1, ge=0, le=5, description="interests targeted: the category and neighbours")
    enter_date: dt.date | None = None
    exit_date: dt.date | None = None

    _coerce = field_validator(
        "daily_budget",
        "bid_cpm",
        "bid_cpc",
        "bid_cpe",
        "bid_cpa",
        "value_per_conversion",
        "production",
        "authenticity",
        "landing_page",
        "followers",
        "history_conversions",
        mode="before",
    )(_as_dist)

    @field_validator("bid_types", "pacing")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(x < 0 for x in v.values()) or not 0 < sum(v.values()) < math.inf:
            raise ValueError("needs non-negative shares, not all zero, with a finite sum")
        return v


# --------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------


class Scenario(Strict):
    name: OneLine = Field(min_length=1, max_length=80)
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**63)
    start_date: dt.date = dt.date(2026, 10, 5)
    days: int = Field(7, ge=1, le=MAX_DAYS)
    platform: Literal["xhs", "google", "meta"] = "xhs"
    review_at_start: bool = Field(False, description="creatives running on day one also wait for review")
    categories: list[OneLine] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES), min_length=1, max_length=31)
    population: Population = Field(default_factory=Population)
    traffic: Traffic = Field(default_factory=Traffic)
    auction: Auction = Field(default_factory=Auction)
    quality: Quality = Field(default_factory=Quality)
    calendar: CalendarSpec = Field(default_factory=CalendarSpec)
    advertisers: list[Advertiser] = Field(default_factory=list, max_length=MAX_ADVERTISERS)
    generate: list[Generate] = Field(default_factory=list)
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="dotted path -> values (batch grid)")

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        problems: list[str] = []
        cats = set(self.categories)
        _unique(self.categories, "category", "categories")
        names = [a.name for a in self.advertisers]
        for gen in self.generate:
            names.extend(generated_names(gen))
        _unique(names, "advertiser", "advertisers")
        for i, adv in enumerate(self.advertisers):
            if adv.category not in cats:
                problems.append(f"advertisers.{i}.category: {_unknown('category', adv.category, self.categories)}")
            for j, camp in enumerate(adv.campaigns):
                for k, interest in enumerate(camp.targeting.interests):
                    if interest not in cats:
                        problems.append(
                            f"advertisers.{i}.campaigns.{j}.targeting.interests.{k}: "
                            + _unknown("interest", interest, self.categories)
                        )
                for k, cr in enumerate(camp.creatives):
                    if cr.topic is not None and cr.topic not in cats:
                        problems.append(
                            f"advertisers.{i}.campaigns.{j}.creatives.{k}.topic: "
                            + _unknown("category", cr.topic, self.categories)
                        )
        for g_i, gen in enumerate(self.generate):
            for k, cat in enumerate(gen.categories):
                if cat not in cats:
                    problems.append(f"generate.{g_i}.categories.{k}: {_unknown('category', cat, self.categories)}")
        total = len(self.advertisers) + sum(g.count for g in self.generate)
        if total > MAX_ADVERTISERS:
            problems.append(f"advertisers: {total} advertisers in all, above the limit of {MAX_ADVERTISERS}")
        if total == 0:
            problems.append("advertisers: the market has no advertisers (give [[advertisers]] or [[generate]])")
        n_campaigns = sum(len(a.campaigns) for a in self.advertisers) + sum(g.count for g in self.generate)
        if n_campaigns > MAX_CAMPAIGNS:
            problems.append(f"advertisers: {n_campaigns} campaigns in all, above the limit of {MAX_CAMPAIGNS}")
        event_names = self.event_names()
        for i, adv in enumerate(self.advertisers):
            for r_i, rule in enumerate(adv.strategy.rules):
                if isinstance(rule, SeasonalRule) and rule.event is not None and rule.event not in event_names:
                    problems.append(f"advertisers.{i}.strategy.rules.{r_i}.event: " + _unknown_event(rule.event, event_names))
        for g_i, gen in enumerate(self.generate):
            if gen.seasonal_event is not None and gen.seasonal_event not in event_names:
                problems.append(f"generate.{g_i}.seasonal_event: " + _unknown_event(gen.seasonal_event, event_names))
        n_ads = sum(len(c.creatives) for a in self.advertisers for c in a.campaigns) + sum(g.count for g in self.generate)
        if self.population.users * max(1, n_ads) > 4_000_000_000:
            problems.append(
                f"population.users: {self.population.users} users x {n_ads} ads (creatives) is too large "
                "for the frequency table (limit 4e9 pairs)"
            )
        else:
            need, limit = estimated_memory(self), memory_limit()
            if need > limit:
                problems.append(
                    f"population.users: {self.population.users:,} users with {n_ads:,} ads need about "
                    f"{need / 1e9:.0f} GB of memory (limit {limit / 1e9:.0f} GB, set ADSIM_MAX_MEMORY_GB "
                    "to change it); use fewer users, ads or sessions per hour"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def event_names(self) -> set[str]:
        names = set()
        for ev in self.calendar.events:
            names.add(ev.name or ev.preset or "")
        return names

    @property
    def end_date(self) -> dt.date:
        return self.start_date + dt.timedelta(days=self.days - 1)


def memory_limit() -> float:
    """Bytes a run may plan to use: ``ADSIM_MAX_MEMORY_GB`` (default 16 GB)."""
    import os

    try:
        gb = float(os.environ.get("ADSIM_MAX_MEMORY_GB", "16"))
    except ValueError:
        gb = 16.0
    return (gb if math.isfinite(gb) and gb > 0 else 16.0) * 1e9


def estimated_memory(s: Scenario) -> float:
    """A rough upper estimate of a run's peak memory in bytes, checked before anything is allocated.

    Per user: interest affinities and their bit masks (with temporaries), the latent taste vector,
    demographics and one frequency counter per ad.  Per served chunk of sessions: a few
    sessions x ads matrices (eligibility, ranks, prices) of about 48 bytes per cell.
    """
    users = s.population.users
    n_cats = len(s.categories)
    n_ads = sum(len(c.creatives) for a in s.advertisers for c in a.campaigns) + sum(g.count for g in s.generate)
    per_user = 24 * n_cats + 8 * s.population.taste_dims + 64 + n_ads
    t = s.traffic
    peak_hour = max(t.hour_curve) / sum(t.hour_curve)
    events = [e.traffic for e in s.calendar.events if e.traffic is not None] or [1.0]
    surge = max(3.0, *events)  # presets can lift traffic: assume up to 3x
    chunk = users * t.sessions_per_user_per_day * peak_hour * max(t.weekday_curve) * surge / t.chunks_per_hour
    return float(users * per_user + chunk * n_ads * 48)


def generated_names(gen: Generate) -> list[str]:
    """Names of the advertisers a ``[[generate]]`` block creates."""
    return [f"{gen.name_prefix}_{i + 1:03d}" for i in range(gen.count)]


def _unknown_event(name: str, defined: set[str]) -> str:
    """An event a rule names but the calendar does not have: say how to add it."""
    from simulator.calendar import PRESETS

    if name in PRESETS:
        return f"unknown event {_show(name)}: add it to [[calendar.events]] (preset = {name!r})"
    msg = _unknown("event", name, sorted(defined)) if defined else f"unknown event {_show(name)} (no events are defined)"
    return msg + "; events come from [[calendar.events]]"


def _unique(names: list[str], what: str, where: str = "") -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{where + ': ' if where else ''}duplicate {what} name {_show(n)}")
        seen.add(n)


def _unknown(what: str, value: object, choices: list[str]) -> str:
    """``unknown rule 'day_part' (did you mean daypart?)``, or the list of choices."""
    msg = f"unknown {what} {_show(value)}"
    if not choices:
        return msg + f" (no {what}s are defined)"
    close = difflib.get_close_matches(str(value)[:100], [str(c) for c in choices], n=1)
    if close:
        msg += f" (did you mean {close[0]}?)"
    else:
        msg += f" (one of: {', '.join(str(c) for c in choices)})"
    return msg


def _show(value: object, limit: int = 60) -> str:
    """A value as it appears in a message: its repr, cut short (a message stays one short line)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 4]}... ({len(value)} characters)" if isinstance(value, str) else text[: limit - 3] + "..."


# --------------------------------------------------------------------------
# Loading, errors, writing
# --------------------------------------------------------------------------


class ScenarioError(Exception):
    """An invalid scenario: ``lines`` holds one readable line per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file.

    Raises
    ------
    ScenarioError
        With one line per problem, each naming the file and the field path.
    """
    path = Path(path)
    label = str(path)
    try:
        if not path.exists():
            raise ScenarioError([f"{label}: no such file"])
        if path.is_dir():
            raise ScenarioError([f"{label}: is a directory, not a scenario file"])
        if not path.is_file():  # a FIFO or a device would block or never end
            raise ScenarioError([f"{label}: not a regular file"])
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScenarioError([f"{label}: {size:,} bytes is too large for a scenario file (limit {MAX_FILE_BYTES:,})"])
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError([f"{label}: cannot read ({exc.strerror or exc})"]) from None
    if not raw.strip():
        raise ScenarioError([f"{label}: the file is empty"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError([f"{label}: not a UTF-8 text file (byte {exc.start} cannot be decoded)"]) from None
    if "\x00" in text:
        raise ScenarioError([f"{label}: not a text file (contains NUL bytes)"])
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError([f"{label}: TOML syntax error: {_one_line_text(str(exc))}"]) from None
    except RecursionError:
        raise ScenarioError([f"{label}: TOML nested too deeply"]) from None
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_scenario(data, label)


def parse_scenario(data: dict[str, Any], label: str = "<scenario>") -> Scenario:
    """Validate a scenario given as a dict (e.g. parsed TOML)."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(format_errors(exc, label)) from None
    except RecursionError:
        raise ScenarioError([f"{label}: (top level): values nested too deeply"]) from None
    except (ValueError, TypeError) as exc:  # pragma: no cover - pydantic wraps these
        raise ScenarioError([f"{label}: {exc}"]) from None


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted paths set (``"auction.reserve_ecpm": 10``).

    Integer path parts index lists: ``"advertisers.0.campaigns.0.bid.amount"``.
    """
    import copy

    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: Any = out
        for p_i, part in enumerate(parts[:-1]):
            nxt = parts[p_i + 1]
            if isinstance(node, list):
                node = node[int(part)]
                continue
            if part not in node:
                node[part] = [] if nxt.isdigit() else {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return out


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "missing": "required field missing",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_parsing_size": "is too large a number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "date_type": "must be a date (YYYY-MM-DD)",
    "date_parsing": "must be a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "must be a date (YYYY-MM-DD)",
    "date_from_datetime_inexact": "must be a date (YYYY-MM-DD), not a time",
    "too_short": "needs at least {min_length} item(s)",
    "too_long": "allows at most {max_length} item(s)",
    "string_too_short": "must not be empty",
    "string_too_long": "is too long (at most {max_length} characters)",
    "finite_number": "must be a finite number (not nan or inf)",
}
#: Kinds whose message also shows the offending value.
_SHOW_INPUT = {
    "float_parsing", "int_parsing", "float_type", "int_type", "int_from_float", "string_type", "bool_type",
    "bool_parsing", "date_type", "date_parsing", "date_from_datetime_parsing", "list_type", "tuple_type",
    "dict_type", "model_type", "model_attributes_type", "finite_number",
}  # fmt: skip


def format_errors(exc: ValidationError, label: str) -> list[str]:
    """One line per problem: ``FILE: field.path: message``.

    Never raises: an error pydantic reports in an unexpected shape still gets a
    line with its location and pydantic's own message.
    """
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        try:
            lines.extend(_format_one(err, label))
        except Exception:  # noqa: BLE001 - a message must never become a traceback
            lines.append(f"{label}: {_where(list(err.get('loc', ())))}: {_one_line_text(str(err.get('msg', 'invalid')))}")
    # Several branches of a union can report the same location: keep the first.
    seen: set[str] = set()
    unique = []
    for line in lines:
        if line not in seen:
            unique.append(line)
            seen.add(line)
    return unique


def _format_one(err: Any, label: str) -> list[str]:
    loc = list(err["loc"])
    kind = err["type"]
    ctx = {k: _num(v) for k, v in (err.get("ctx") or {}).items()}
    where = _where(loc)
    if kind == "extra_forbidden":
        field = str(loc[-1])
        known = _fields_at(loc[:-1])
        msg = "unknown field"
        close = difflib.get_close_matches(field[:100], known, n=1, cutoff=0.6)
        deeper, exact, name = _misplaced(field[:100], loc[:-1])
        if deeper and (exact or not close):
            if name and not exact and "." in deeper and name != deeper.rsplit(".", 1)[-1]:
                msg += f" (did you mean {name}? that is {deeper})"  # daily_budjet -> daily_budget
            else:
                msg += f" (did you mean {deeper}?)"
        elif close:
            msg += f" (did you mean {close[0]}?)"
        elif known:
            msg += f" (allowed: {', '.join(known)})"
    elif kind == "literal_error":
        msg = f"{_show(err['input'])} is not allowed; expected {ctx.get('expected', '')}"
        choices = [c.strip().strip("'") for c in str(ctx.get("expected", "")).replace(" or ", ",").split(",")]
        close = difflib.get_close_matches(str(err["input"])[:100], [c for c in choices if c], n=1)
        if close:
            msg += f" (did you mean {close[0]}?)"
    elif kind == "union_tag_invalid":
        msg = _unknown("rule", ctx.get("tag"), RULE_NAMES)
    elif kind == "union_tag_not_found":
        msg = f"needs a 'rule' key (one of: {', '.join(RULE_NAMES)})"
    elif kind == "value_error":
        out = []
        text = str(ctx.get("error", err["msg"]))
        here = _fields_at(loc)
        for sub in text.split("\n"):
            prefix = sub.split(": ", 1)[0]
            if ": " in sub and re.fullmatch(r"[A-Za-z_][\w.]*", prefix):
                if not loc and prefix.split(".")[0] in Scenario.model_fields:
                    out.append(f"{label}: {_one_line_text(sub)}")  # the scenario's own checks give full paths
                    continue
                if prefix.split(".")[0] in here:  # a model's check names one of its fields
                    out.append(f"{label}: {where}.{_one_line_text(sub)}" if loc else f"{label}: {_one_line_text(sub)}")
                    continue
            out.append(f"{label}: {where}: {_one_line_text(sub)}")
        return out
    elif kind in _MESSAGES:
        try:
            msg = _MESSAGES[kind].format(**ctx)
        except (KeyError, IndexError):
            msg = _one_line_text(err["msg"])
        if kind in _SHOW_INPUT:
            msg += f" (got {_show(err['input'])})"
    else:
        msg = _one_line_text(err["msg"][:1].lower() + err["msg"][1:])
    return [f"{label}: {where}: {msg}"]


def _num(v: Any) -> Any:
    """Bounds as a reader writes them: 1000000, not 1000000.0."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
        return int(v)
    return v


def _one_line_text(text: str) -> str:
    return " ".join(text.split()) if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text) else text


def _where(loc: list[Any]) -> str:
    """The dotted field path of a location, safe to print on one line."""
    return _dotted(_clean_loc(loc)) or "(top level)"


def _dotted(loc: list[Any]) -> str:
    parts = []
    for p in loc:
        text = str(p)
        if len(text) > 60 or not re.fullmatch(r"[\w\-]+", text):
            text = _show(text, 60)  # an odd key (spaces, dots, newlines, a whole paragraph): quoted, cut short
        parts.append(text)
    return ".".join(parts)


def _clean_loc(loc: list[Any]) -> list[Any]:
    """Drop discriminator tags and internal union labels from a location."""
    out = []
    for i, p in enumerate(loc):
        if isinstance(p, str) and (p in RULE_NAMES and i > 0 and loc[i - 1] != "rule" and isinstance(loc[i - 1], int)):
            continue
        if isinstance(p, str) and ("[" in p or p.startswith("function-")):
            continue
        out.append(p)
    return out


def _misplaced(key: str, loc: list[Any]) -> tuple[str | None, bool, str | None]:
    """A field one or two tables below ``loc`` that ``key`` probably means: ``users`` -> ``population.users``.

    Returns the dotted path (``N`` stands for a list index), whether the match is exact, and the
    name it matched (``daily_budget`` for ``budget.daily``).

    Also matches compound names written the other way round: ``daily_budget`` -> ``budget.daily``.
    """
    model = _model_at(loc)
    if model is None:
        return None, False, None
    paths: list[list[str]] = []

    def walk(m: Any, prefix: list[str], depth: int) -> None:
        for name, field in m.model_fields.items():
            sub = _unwrap(field.annotation)
            is_list = typing.get_origin(_strip_annotated(field.annotation)) is list or _is_optional_list(field.annotation)
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                step = [*prefix, name, "N"] if is_list else [*prefix, name]
                for leaf in sub.model_fields:
                    paths.append([*step, leaf])
                if depth > 1:
                    walk(sub, step, depth - 1)

    walk(model, [], 2)
    norm = key.lower().replace("-", "_")
    by_key: dict[str, str] = {}
    for path in paths:
        words = [p for p in path if p != "N"]
        dotted = ".".join(path)
        for variant in (words[-1], "_".join(words[-2:]), "_".join(reversed(words[-2:]))):
            by_key.setdefault(variant, dotted)
    if norm in by_key:
        return by_key[norm], True, norm
    close = difflib.get_close_matches(norm, list(by_key), n=1, cutoff=0.85)
    return (by_key[close[0]], False, close[0]) if close else (None, False, None)


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_optional_list(tp: Any) -> bool:
    tp = _strip_annotated(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(typing.get_origin(_strip_annotated(a)) is list for a in typing.get_args(tp))
    return False


def _model_at(loc: list[Any]) -> type[BaseModel] | None:
    model: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(part, str) and part in RULE_NAMES and _is_rule_union(model):
            model = _rule_model(part)
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _unwrap(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _fields_at(loc: list[Any]) -> list[str]:
    """The field names allowed at a location of the scenario, for did-you-mean hints."""
    model = _model_at(loc)
    return list(model.model_fields) if model is not None else []


def _unwrap(tp: Any) -> Any:
    """From ``list[X] | None`` and friends, the model ``X`` (or the union of rules)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (list, tuple, dict):
            args = typing.get_args(tp)
            tp = args[-1] if args else Any
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(models) > 1:
                return tuple(models)
            if models:
                tp = models[0]
                continue
            if len(args) == 1:
                tp = args[0]
                continue
            return tp
        return tp


def _is_rule_union(model: Any) -> bool:
    return isinstance(model, tuple) and all(issubclass(m, RuleBase) for m in model)


def _rule_model(name: str) -> type[BaseModel]:
    for m in RuleBase.__subclasses__():
        if typing.get_args(m.model_fields["rule"].annotation) == (name,):
            return m
    raise KeyError(name)


def scenario_to_toml(scenario: Scenario) -> str:
    """The resolved scenario (every default filled in) as TOML text."""
    data = scenario.model_dump(mode="python", exclude_none=True)
    return _toml_document(data)


def _toml_document(data: dict[str, Any]) -> str:
    out: list[str] = []
    _emit_table(out, [], data)
    return "\n".join(out).strip() + "\n"


def _emit_table(out: list[str], path: list[str], table: dict[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_array(v)}
    tables = {k: v for k, v in table.items() if _is_table(v)}
    arrays = {k: v for k, v in table.items() if _is_table_array(v)}
    for k, v in scalars.items():
        out.append(f"{_key(k)} = {_toml_value(v)}")
    for k, v in tables.items():
        out.append("")
        out.append(f"[{'.'.join(_key(p) for p in [*path, k])}]")
        _emit_table(out, [*path, k], v)
    for k, items in arrays.items():
        for item in items:
            out.append("")
            out.append(f"[[{'.'.join(_key(p) for p in [*path, k])}]]")
            _emit_table(out, [*path, k], item)


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(x, dict) for x in v)


def _key(k: str) -> str:
    if k and all(c.isalnum() or c in "_-" for c in k):
        return k
    return _toml_string(k)


def _toml_string(s: str) -> str:
    esc = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    esc = "".join(c if c.isprintable() or c in "\\" else f"\\u{ord(c):04x}" for c in esc)
    return f'"{esc}"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def scenario_schema() -> dict[str, Any]:
    """The JSON Schema of the scenario format (``adsim schema``)."""
    return Scenario.model_json_schema()
