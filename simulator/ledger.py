"""The ledger: what was delivered and billed, accumulated per ad, hour and day.

Owns the day's counters (numpy arrays per ad and per campaign-hour), the
platform's revenue (integer micro-yuan, kept apart from the advertisers' spend
so that "spend = revenue" is a check and not a tautology), and the rows of the
result tables once a day closes.  It must not change what happens: it records.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from simulator import kernels
from simulator.book import BILL_NAMES, MICRO, AdBook
from simulator.quality import FACTOR_COLUMNS, AdStats, QualityModel

#: Per-ad counters of a day, beyond the platform's observations (``AdStats``).
AD_COUNTERS = [
    "likes",
    "comments",
    "saves",
    "shares",
    "video_completions",
    "order_value",
    "position_sum",
    "unbilled_events",
    "unbilled_value",
]
HOURLY_COLUMNS = ["impressions", "clicks", "engagements", "conversions", "spend"]

ADVERTISER_DAILY_COLUMNS = [
    "date", "advertiser", "campaign", "bid_type", "impressions", "clicks", "likes", "comments", "saves",
    "shares", "follows", "engagements", "video_completions", "conversions", "bounces", "spend", "order_value",
    "ctr", "engagement_rate", "save_rate", "video_completion_rate", "bounce_rate", "cpm", "cpc", "cpe", "cpa",
    "conversion_rate", "roas", "impression_share", "avg_position", "quality_score", *FACTOR_COLUMNS,
    "daily_budget", "bid",
]  # fmt: skip
EXTRA_DAILY_COLUMNS = ["billing_event", "eligible_auctions", "unbilled_events", "unbilled_spend", "refund", "bid_multiplier"]


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, NaN where b == 0 (a rate with no base is unknown, not zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=b != 0)
    return out


class Ledger:
    """Counters of the current day and the table rows of the days before."""

    def __init__(self, book: AdBook):
        self.book = book
        n_a, n_c = book.n_ads, book.n_campaigns
        self.n_ads, self.n_campaigns = n_a, n_c
        self.revenue_micro_total = 0
        self._daily: list[dict[str, Any]] = []
        self._creative: list[dict[str, Any]] = []
        self._hourly: list[dict[str, Any]] = []
        self._market: list[dict[str, Any]] = []
        self.refund_today = np.zeros(n_c, dtype=np.int64)
        self.yesterday: dict[str, np.ndarray] = {}
        self.reset_day()

    def reset_day(self) -> None:
        n_a, n_c = self.n_ads, self.n_campaigns
        self.obs = AdStats(n_a)
        self.counters = {k: np.zeros(n_a) for k in AD_COUNTERS}
        self.spend_micro = np.zeros(n_a, dtype=np.int64)
        self.eligible = np.zeros(n_c, dtype=np.int64)  # per campaign: auctions its targeting admitted
        self.hourly = np.zeros((24, n_c, len(HOURLY_COLUMNS)))
        self.hourly_spend_micro = np.zeros((24, n_c), dtype=np.int64)
        self.revenue_micro = 0
        self.sessions = 0
        self.refund_today[:] = 0

    # ------------------------------------------------------------ recording

    def record_sessions(self, n: int) -> None:
        self.sessions += n

    def record_eligible(self, camp_idx: np.ndarray, counts: np.ndarray) -> None:
        """Sessions in which each campaign (unique indices) was active and its targeting matched."""
        self.eligible[camp_idx] += counts

    def record_impressions(
        self,
        hour: int,
        col: np.ndarray,
        col_ad: np.ndarray,
        col_camp: np.ndarray,
        slot: np.ndarray,
        outcomes: Any,
        amount: np.ndarray,
        over: np.ndarray,
        relevance: np.ndarray,
        lift: np.ndarray,
        view: np.ndarray,
        engagement_weights: dict[str, float],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Add a batch of served impressions to today's counters.  Per impression (arrays of shape
        (n,)): its column ``col`` (ad ``col_ad[col]`` of campaign ``col_camp[col]``), ``slot``, the
        ``outcomes``, ``amount`` (micro-yuan of its billing event, else 0), ``over`` (the event crossed
        the budget: delivered, not billed), the observed ``relevance`` and the platform's ``lift``
        (exposure: ``lift x view[slot]``).  Returns the batch's sums per ad and per campaign (rows
        :data:`kernels.AD_SUMS` and :data:`kernels.CAMPAIGN_SUMS`)."""
        per_ad, per_camp = kernels.ledger_sums(
            col, col_ad, col_camp, self.n_ads, self.n_campaigns, slot, outcomes, amount, over, relevance, lift, view,
            engagement_weights, MICRO,
        )  # fmt: skip
        sums = dict(zip(kernels.AD_SUMS, per_ad, strict=True))
        for name in AdStats.names():
            getattr(self.obs, name)[:] += sums[name]
        for name in AD_COUNTERS:
            self.counters[name] += sums[name]
        # Money: integers all the way (each sum of whole micro-yuan is exact in float64 below 2**53).
        # Each advertiser's side by ad, the platform's side as one sum.
        spend = sums["spend_micro"].astype(np.int64)
        self.spend_micro += spend
        self.revenue_micro += int(spend.sum())
        self.hourly[hour][:, :4] += per_camp[:4].T
        self.hourly_spend_micro[hour] += per_camp[4].astype(np.int64)
        return per_ad, per_camp

    def record_refund(self, c: int, micro: int) -> None:
        """An over-cost compensation: the advertiser's spend and the platform's revenue both drop."""
        self.refund_today[c] += micro
        self.revenue_micro -= micro

    def campaign_spend_micro(self) -> np.ndarray:
        """Today's billed micro-yuan per campaign, net of refunds."""
        return np.bincount(self.book.ad_camp, weights=self.spend_micro, minlength=self.n_campaigns).astype(np.int64) - self.refund_today

    # ------------------------------------------------------------ closing

    def close_day(self, date: dt.date, quality: QualityModel, ad_slots: int, active_advertisers: int) -> dict[str, Any]:
        """Turn today's counters into table rows; return the market's row."""
        book = self.book
        n_c = self.n_campaigns
        camp = book.ad_camp

        def per_camp(x: np.ndarray) -> np.ndarray:
            return np.bincount(camp, weights=np.asarray(x, dtype=np.float64), minlength=n_c)

        o, c = self.obs, self.counters
        imps = per_camp(o.impressions)
        clicks = per_camp(o.clicks)
        conv = per_camp(o.conversions)
        eng = per_camp(o.engagements)
        spend_micro = self.campaign_spend_micro()
        spend = spend_micro / MICRO
        order_value = per_camp(c["order_value"])
        eligible = self.eligible.astype(np.float64)
        qs_w = np.where(imps[camp] > 0, o.impressions, book.ad_weight)  # impression-weighted QS, else by split
        wsum = per_camp(qs_w)
        qs = _div(per_camp(quality.qs * qs_w), wsum)
        factors = {col: _div(per_camp(quality.factors[:, i] * qs_w), wsum) for i, col in enumerate(FACTOR_COLUMNS)}
        likes, comments, saves, shares = (per_camp(c[k]) for k in ("likes", "comments", "saves", "shares"))
        video_imps = per_camp(o.impressions * book.ad_video)
        row = {
            "date": np.repeat(np.datetime64(date, "D"), n_c),
            "advertiser": [book.advertiser_names[a] for a in book.camp_adv],
            "campaign": list(book.camp_name),
            "bid_type": list(book.camp_bid_type),
            "impressions": imps.astype(np.int64),
            "clicks": clicks.astype(np.int64),
            "likes": likes.astype(np.int64),
            "comments": comments.astype(np.int64),
            "saves": saves.astype(np.int64),
            "shares": shares.astype(np.int64),
            "follows": per_camp(o.follows).astype(np.int64),
            "engagements": eng.astype(np.int64),
            "video_completions": per_camp(c["video_completions"]).astype(np.int64),
            "conversions": conv.astype(np.int64),
            "bounces": per_camp(o.bounces).astype(np.int64),
            "spend": spend,
            "order_value": np.round(order_value, 2),
            "ctr": _div(clicks, imps),
            "engagement_rate": _div(eng, imps),
            "save_rate": _div(saves, imps),
            "video_completion_rate": _div(per_camp(c["video_completions"]), video_imps),
            "bounce_rate": _div(per_camp(o.bounces), clicks),
            "cpm": _div(spend * 1000.0, imps),
            "cpc": _div(spend, clicks),
            "cpe": _div(spend, eng),
            "cpa": _div(spend, conv),
            "conversion_rate": _div(conv, clicks),
            "roas": _div(order_value, spend),
            "impression_share": np.where(eligible > 0, _div(imps, np.maximum(eligible, imps)), np.nan),
            "avg_position": _div(per_camp(c["position_sum"]), imps),
            "quality_score": qs,
            **factors,
            "daily_budget": book.camp_budget.copy(),
            # The highest bid in force that day (amount x daily, hourly and device multipliers; pacing
            # only shades): every price paid per billing event is at most this.
            "bid": book.camp_amount * book.camp_mult * book.camp_hour_mult.max(axis=1) * book.camp_dev_mult.max(axis=1),
            "billing_event": [BILL_NAMES[int(b)] for b in book.camp_bill],
            "eligible_auctions": eligible.astype(np.int64),
            "unbilled_events": per_camp(c["unbilled_events"]).astype(np.int64),
            "unbilled_spend": np.round(per_camp(c["unbilled_value"]), 6),
            "refund": self.refund_today / MICRO,
            "bid_multiplier": book.camp_mult.copy(),
        }
        self._daily.append(row)
        self.yesterday = {
            "impressions": imps,
            "clicks": clicks,
            "conversions": conv,
            "engagements": eng,
            "spend": spend,
            "order_value": order_value,
            "impression_share": row["impression_share"],
            "eligible": eligible,
        }
        creative = {
            "date": np.repeat(np.datetime64(date, "D"), self.n_ads),
            "advertiser": [book.advertiser_names[a] for a in book.ad_adv],
            "campaign": [book.camp_name[ci] for ci in camp],
            "creative": list(book.ad_name),
            "impressions": o.impressions.astype(np.int64),
            "clicks": o.clicks.astype(np.int64),
            "engagements": o.engagements.astype(np.int64),
            "conversions": o.conversions.astype(np.int64),
            "spend": self.spend_micro / MICRO,
            "ctr": _div(o.clicks, o.impressions),
            "engagement_rate": _div(o.engagements, o.impressions),
            "quality_score": quality.qs.copy(),
            **{col: quality.factors[:, i].copy() for i, col in enumerate(FACTOR_COLUMNS)},
            "p_ctr": quality.ctr_hat.copy(),
            "p_cvr": quality.cvr_hat.copy(),
            "traffic_weight": book.ad_weight.copy(),
        }
        self._creative.append(creative)
        hours = np.repeat(np.arange(24), n_c)
        hourly = {
            "date": np.repeat(np.datetime64(date, "D"), 24 * n_c),
            "hour": hours.astype(np.int8),
            "advertiser": [book.advertiser_names[a] for a in book.camp_adv] * 24,
            "campaign": list(book.camp_name) * 24,
            "impressions": self.hourly[:, :, 0].reshape(-1).astype(np.int64),
            "clicks": self.hourly[:, :, 1].reshape(-1).astype(np.int64),
            "engagements": self.hourly[:, :, 2].reshape(-1).astype(np.int64),
            "conversions": self.hourly[:, :, 3].reshape(-1).astype(np.int64),
            "spend": self.hourly_spend_micro.reshape(-1) / MICRO,
        }
        self._hourly.append(hourly)
        total_imps = int(imps.sum())
        revenue = self.revenue_micro / MICRO
        self.revenue_micro_total += self.revenue_micro
        market = {
            "date": np.datetime64(date, "D"),
            "sessions": self.sessions,
            "ad_slots": self.sessions * ad_slots,
            "filled_slots": total_imps,
            "revenue": revenue,
            "avg_cpm": revenue * 1000.0 / total_imps if total_imps else float("nan"),
            "avg_quality_score": float(np.average(quality.qs, weights=o.impressions)) if total_imps else float("nan"),
            "active_advertisers": active_advertisers,
            "revenue_micro": self.revenue_micro,
            "spend_micro": int(spend_micro.sum()),
        }
        self._market.append(market)
        return market

    # ------------------------------------------------------------ tables

    def tables(self) -> dict[str, pd.DataFrame]:
        def frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
            if not rows:
                return pd.DataFrame(columns=columns or [])
            df = pd.concat([pd.DataFrame(r) for r in rows], ignore_index=True)
            return df

        daily = frame(self._daily, ADVERTISER_DAILY_COLUMNS + EXTRA_DAILY_COLUMNS)
        market = pd.DataFrame(self._market)
        return {
            "advertiser_daily": daily,
            "advertiser_hourly": frame(self._hourly),
            "market_daily": market,
            "creative_daily": frame(self._creative),
        }
