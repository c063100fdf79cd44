"""The ad book: every campaign and ad (creative) of the market as struct-of-arrays.

Advertisers write their plans into their rows (multipliers, today's budget,
pacing state, creative split); the feed reads whole columns.  The book also
holds the money: spend per campaign in integer micro-yuan (1e-6 yuan), today,
this week, this month and in total, and the caps of the platform profile.  It
must not decide anything: deciding is the advertisers' and the platform's job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from simulator import scenario as sc
from simulator.engagement import content_quality
from simulator.population import N_SEGMENTS

MICRO = 1_000_000  # micro-yuan per yuan

BILL_IMPRESSION, BILL_CLICK, BILL_ENGAGEMENT, BILL_CONVERSION = 0, 1, 2, 3
BILL_NAMES = {BILL_IMPRESSION: "impression", BILL_CLICK: "click", BILL_ENGAGEMENT: "engagement", BILL_CONVERSION: "conversion"}


@dataclass(frozen=True)
class PlatformProfile:
    """Delivery rules: how far billed spend may exceed the daily budget."""

    name: str
    daily: float  # a day may bill this many daily budgets
    period_days: int | None  # None, 7 (a week) or 0 (the calendar month)
    period: float | None  # a period may bill this many daily budgets


PROFILES = {
    "xhs": PlatformProfile("xhs", 1.0, None, None),
    "google": PlatformProfile("google", 2.0, 0, 30.4),
    "meta": PlatformProfile("meta", 1.75, 7, 7.0),
}


def segment_mask(t: sc.Targeting) -> np.ndarray:
    """Which of the 48 demographic segments a targeting admits: bool (48,)."""
    genders = {"all": [0, 1], "female": [0], "male": [1]}[t.gender]
    ages = [sc.AGE_BANDS.index(a) for a in t.ages] or list(range(len(sc.AGE_BANDS)))
    tiers = [sc.CITY_TIERS.index(x) for x in t.city_tiers] or list(range(len(sc.CITY_TIERS)))
    devices = [{"android": 0, "ios": 1}[d] for d in t.devices] or [0, 1]
    ok = np.zeros(N_SEGMENTS, dtype=bool)
    for g in genders:
        for a in ages:
            for ti in tiers:
                for d in devices:
                    ok[((g * 4 + a) * 3 + ti) * 2 + d] = True
    return ok


class AdBook:
    """Campaign rows (index ``c``) and ad rows (index ``a``, one per creative).

    Campaign arrays (n_campaigns,): owner ``camp_adv``; bid type, amount and
    the billing event in force; base and today's daily budget; total budget;
    first and last day index; multipliers (daily rules ``camp_mult``, per hour
    ``camp_hour_mult`` (n, 24), per device ``camp_dev_mult`` (n, 2) android/iOS,
    pacing ``camp_pace_mult``), participation ``camp_throttle``; spend in
    micro-yuan.  Ad arrays (n_ads,): campaign ``ad_camp``, creative attributes,
    serving weight within its campaign, approval.
    """

    def __init__(self, scenario: sc.Scenario, advertisers: list[sc.Advertiser], rng: np.random.Generator, taste_dims: int):
        cats = scenario.categories
        self.categories = cats
        self.profile = PROFILES[scenario.platform]
        start = scenario.start_date
        self.advertiser_names = [a.name for a in advertisers]
        camp_rows = []
        ad_rows = []
        for a_i, adv in enumerate(advertisers):
            for camp in adv.campaigns:
                c_i = len(camp_rows)
                camp_rows.append((a_i, adv, camp))
                for cr in camp.creatives:
                    ad_rows.append((c_i, a_i, adv, camp, cr))
        n_c, n_a = len(camp_rows), len(ad_rows)
        self.n_campaigns, self.n_ads = n_c, n_a
        self.n_advertisers = len(advertisers)

        def day_index(d: dt.date | None, default: int) -> int:
            return default if d is None else (d - start).days

        self.camp_adv = np.array([r[0] for r in camp_rows], dtype=np.int32)
        self.camp_name = [r[2].name for r in camp_rows]
        self.camp_bid_type = [r[2].bid.type for r in camp_rows]
        self.camp_amount = np.array([r[2].bid.amount for r in camp_rows])
        self.camp_budget_base = np.array([r[2].budget.daily for r in camp_rows])
        self.camp_budget = self.camp_budget_base.copy()
        self.camp_total = np.array([r[2].budget.total if r[2].budget.total else np.inf for r in camp_rows])
        first = [max(day_index(r[2].start_date, 0), day_index(r[1].enter_date, 0)) for r in camp_rows]
        last = [min(day_index(r[2].end_date, 10**6), day_index(r[1].exit_date, 10**6)) for r in camp_rows]
        self.camp_first_day = np.array(first, dtype=np.int32)
        self.camp_last_day = np.array(last, dtype=np.int32)
        self.camp_value = np.array([r[2].value_per_conversion for r in camp_rows])
        self.camp_landing = np.array([np.nan if r[2].landing_page is None else r[2].landing_page for r in camp_rows])
        self.camp_seg_ok = np.stack([segment_mask(r[2].targeting) for r in camp_rows]) if n_c else np.zeros((0, N_SEGMENTS), bool)
        self.camp_interest_bits = np.array(
            [sum(1 << cats.index(i) for i in r[2].targeting.interests) for r in camp_rows], dtype=np.int64
        )
        # Billing in force: CPA campaigns start on click billing (oCPC stage 1) until the advertiser says otherwise.
        bill_of = {"CPM": BILL_IMPRESSION, "CPC": BILL_CLICK, "CPE": BILL_ENGAGEMENT, "CPA": BILL_CLICK}
        self.camp_bill = np.array([bill_of[t] for t in self.camp_bid_type], dtype=np.int8)
        self.camp_bid_eff = self._base_bid_eff()
        self.camp_ocpc = np.array([t == "CPA" for t in self.camp_bid_type], dtype=bool)
        self.camp_mult = np.ones(n_c)
        self.camp_hour_mult = np.ones((n_c, 24))
        self.camp_dev_mult = np.ones((n_c, 2))
        self.camp_pace_mult = np.ones(n_c)
        self.camp_throttle = np.ones(n_c)
        self.camp_active = np.zeros(n_c, dtype=bool)
        self.camp_exhausted = np.zeros(n_c, dtype=bool)
        # Audiences: 0 none, 1 include only members, -1 exclude members; members as sorted user ids.
        self.camp_audience_mode = np.zeros(n_c, dtype=np.int8)
        self.camp_audience: list[np.ndarray | None] = [None] * n_c
        self.camp_exclusion: list[np.ndarray | None] = [None] * n_c
        # Money, integer micro-yuan.
        self.spent_today = np.zeros(n_c, dtype=np.int64)
        self.spent_total = np.zeros(n_c, dtype=np.int64)
        self.spent_period = np.zeros(n_c, dtype=np.int64)  # this week (meta) or calendar month (google)

        self.ad_camp = np.array([r[0] for r in ad_rows], dtype=np.int32)
        self.ad_adv = np.array([r[1] for r in ad_rows], dtype=np.int32)
        self.ad_name = [r[4].name for r in ad_rows]
        self.ad_topic = np.array([cats.index(r[4].topic or r[2].category) for r in ad_rows], dtype=np.int32)
        self.ad_video = np.array([r[4].format == "video" for r in ad_rows], dtype=bool)
        self.ad_vertical = np.array([1.0 if r[4].vertical else 0.0 for r in ad_rows])
        self.ad_production = np.array([r[4].production for r in ad_rows])
        self.ad_authenticity = np.array([r[4].authenticity for r in ad_rows])
        self.ad_localization = np.array([r[4].localization for r in ad_rows])
        self.ad_risk = np.array([r[4].compliance_risk for r in ad_rows])
        self.ad_content = content_quality(self.ad_production, self.ad_authenticity, self.ad_localization, self.ad_vertical)
        self.ad_start_day = np.array(
            [max(day_index(r[4].start_date, 0), int(self.camp_first_day[r[0]])) for r in ad_rows], dtype=np.int32
        )
        # Latent creative vector: matched against users' taste (ground truth only).
        self.ad_taste = rng.standard_normal((n_a, taste_dims)).astype(np.float32) if n_a else np.zeros((0, taste_dims), np.float32)
        self.ad_weight = np.ones(n_a)
        self.ad_approved_at = np.zeros(n_a, dtype=np.int64)  # hour index (day * 24 + hour) from which it may serve
        self.ad_rejected = np.zeros(n_a, dtype=bool)
        self.ad_impressions_total = np.zeros(n_a)  # lifetime impressions (creative wear-out)
        self.ad_reach = np.zeros(n_a)
        self._normalise_weights()

    def _base_bid_eff(self) -> np.ndarray:
        """Yuan per billing event before multipliers (CPM bids are per 1,000 impressions)."""
        eff = self.camp_amount.copy()
        cpm = np.array([t == "CPM" for t in self.camp_bid_type], dtype=bool)
        eff[cpm] = eff[cpm] / 1000.0
        return eff

    def _normalise_weights(self) -> None:
        totals = np.bincount(self.ad_camp, weights=self.ad_weight, minlength=self.n_campaigns)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.ad_weight = np.where(totals[self.ad_camp] > 0, self.ad_weight / totals[self.ad_camp], 0.0)

    def set_weights(self, c: int, weights: np.ndarray) -> None:
        idx = np.flatnonzero(self.ad_camp == c)
        self.ad_weight[idx] = weights
        total = self.ad_weight[idx].sum()
        if total > 0:
            self.ad_weight[idx] /= total

    def ads_of(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.ad_camp == c)

    def targeting_groups(self) -> tuple[np.ndarray, np.ndarray]:
        """Campaigns grouped by identical demographic + interest targeting, in order of first
        appearance: each campaign's group (int32) and each group's first campaign."""
        keys = [
            self.camp_seg_ok[c].tobytes() + int(self.camp_interest_bits[c]).to_bytes(8, "little")
            for c in range(self.n_campaigns)
        ]
        uniq = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        group = np.array([uniq[k] for k in keys], dtype=np.int32)
        first = {g: c for c, g in reversed(list(enumerate(group)))}
        return group, np.array([first[g] for g in range(len(uniq))], dtype=np.int64)

    # ---------------------------------------------------------------- money

    def start_day(self, day: int, date: dt.date) -> None:
        """New day: activity by date, today's spend to zero, the profile's period rolls over."""
        self.camp_active = (self.camp_first_day <= day) & (day <= self.camp_last_day) & (self.spent_total < self.total_micro())
        self.spent_today[:] = 0
        p = self.profile
        if p.period_days is not None:
            new_period = date.day == 1 if p.period_days == 0 else date.weekday() == 0
            if new_period or day == 0:
                self.spent_period[:] = 0
        self.camp_exhausted[:] = ~self.camp_active

    def total_micro(self) -> np.ndarray:
        return np.where(np.isinf(self.camp_total), np.iinfo(np.int64).max // 4, np.floor(self.camp_total * MICRO)).astype(np.int64)

    def daily_cap_micro(self) -> np.ndarray:
        return np.floor(self.camp_budget * self.profile.daily * MICRO).astype(np.int64)

    def remaining_micro(self) -> np.ndarray:
        """Micro-yuan each campaign may still be billed now: the tightest of its caps."""
        rem = np.minimum(self.daily_cap_micro() - self.spent_today, self.total_micro() - self.spent_total)
        p = self.profile
        if p.period is not None:
            cap = np.floor(self.camp_budget * p.period * MICRO).astype(np.int64)
            rem = np.minimum(rem, cap - self.spent_period)
        return np.maximum(rem, 0)

    def bill(self, spend_micro: np.ndarray) -> None:
        """Add billed micro-yuan per campaign (n_campaigns,) to every running total."""
        self.spent_today += spend_micro
        self.spent_total += spend_micro
        self.spent_period += spend_micro

    def refund(self, c: int, micro: int) -> None:
        self.spent_today[c] -= micro
        self.spent_total[c] -= micro
        self.spent_period[c] -= micro

    # ---------------------------------------------------------------- serving

    def servable(self, hour_index: int) -> np.ndarray:
        """Ads that may be served now (campaign active, approved), as indices."""
        camp_ok = self.camp_active[self.ad_camp]
        ok = camp_ok & ~self.ad_rejected & (self.ad_approved_at <= hour_index) & (self.ad_weight > 0)
        return np.flatnonzero(ok).astype(np.int32)
