"""Advertisers: the Mesa agents that plan each day.

An advertiser owns its campaigns' strategy state: bid rules (composed in the
scenario's order), the optimized-CPA (oCPC) learning state, and its creative
tests.  It writes its decisions into its rows of the ad book and logs each as
an event; it never touches users or impressions.  Its strategy also names one
pacing controller per campaign; the controllers of all campaigns run together
each hour as rows of one array bank (``strategy.pacing.PacingBank``, driven by
the market), since a Python call per campaign and hour would cost more than
the auctions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import mesa
import numpy as np

from simulator import scenario as sc
from simulator.book import BILL_CLICK, BILL_CONVERSION, MICRO, segment_mask
from simulator.strategy import CampaignPlan, RuleContext, make_rule
from simulator.strategy.rules import BudgetShift

if TYPE_CHECKING:
    from simulator.market import Market


class Advertiser(mesa.Agent):
    """One advertiser: its campaigns (rows ``campaigns`` of the book) and strategy."""

    model: Market

    def __init__(self, model: Market, spec: sc.Advertiser, index: int):
        super().__init__(model)
        self.spec = spec
        self.index = index
        self.name = spec.name
        book = model.book
        self.campaigns = [int(c) for c in np.flatnonzero(book.camp_adv == index)]
        self.campaign_specs = dict(zip(self.campaigns, spec.campaigns, strict=True))
        st = spec.strategy
        self.rules = [make_rule(r) for r in st.rules]
        self.history_conversions = float(spec.account.history_conversions)
        # Optimized CPA (oCPC): state per CPA campaign.
        self.cpa_state: dict[int, str] = {}
        self.learning_start: dict[int, int] = {}
        self.learning_base_conv: dict[int, float] = {}
        self.learning_mult: dict[int, float] = {}
        self.compensate_until: dict[int, int] = {}
        # Compensation window: spend (micro), conversions, refunded and still owed (micro), closed.
        self.window: dict[int, dict[str, Any]] = {}
        #: Compensation owed from a window that has closed (micro-yuan): learning failed, the window ended, or
        #: an edit opened a new one before what was owed could be refunded.  Paid from the next days' spend.
        self.owed: dict[int, int] = {}
        # Creative tests: per campaign, the next sample size to look at and the alpha left.
        self.ab_done: dict[int, bool] = {c: len(cs.creatives) < 2 for c, cs in self.campaign_specs.items()}
        self.ab_look: dict[int, int] = {c: 0 for c in self.campaigns}

    # ------------------------------------------------------------------ day

    def plan_day(self) -> None:
        """Read yesterday's results, apply the bid rules, settle optimized bidding and creative tests."""
        m = self.model
        book = m.book
        day = m.day
        cond = m.calendar.conditions(day)
        self._shift_budgets()
        for c in self.campaigns:
            cs = self.campaign_specs[c]
            self._apply_edits(c, cs)
            plan = CampaignPlan()
            if book.camp_active[c] and self.rules:
                ctx = RuleContext(
                    day=day,
                    campaign_day=day - int(book.camp_first_day[c]),
                    date=cond.date,
                    conditions=cond,
                    yesterday={k: float(v[c]) for k, v in m.ledger.yesterday.items()},
                    bid_type=cs.bid.type,
                )
                for rule in self.rules:
                    rule.plan(c, ctx, plan)
                plan.clip()  # (a plan no rule touched is within the bounds already)
            book.camp_mult[c] = plan.multiplier
            book.camp_hour_mult[c] = plan.hour_multiplier
            book.camp_dev_mult[c] = plan.device_multiplier
            book.camp_budget[c] = book.camp_budget_base[c] * plan.budget_multiplier
            if book.camp_active[c]:
                for kind, detail in plan.notes:
                    m.log(kind, detail, self.name, book.camp_name[c])
            if cs.bid.type == "CPA":
                self._optimized_cpa(c)
            if not self.ab_done[c] and book.camp_active[c]:
                self._creative_test(c, cs)

    def settle_day(self, conversions: np.ndarray, spend_micro: np.ndarray) -> None:
        """End of the day: count conversions into the account, settle over-cost compensation.

        ``conversions`` and ``spend_micro``: today's per campaign (all campaigns, net of refunds
        before the settling began; the market computes them once for all advertisers).

        Compensation (the platforms' cost guarantee) is settled on the whole
        window so far, from entering learning to ``compensation_days`` after
        it should have ended: when the window's CPA exceeds the target by more
        than ``compensation_threshold``, everything above ``conversions x
        target`` is owed; what is owed and not yet refunded is refunded today
        (at most today's spend, the rest carried to the next day).  Days with
        no conversion count toward the window instead of escaping it.  What a
        window owed when it closed (learning failed, its days ended, or an edit
        opened a new one) is still refunded, from the next days' spend.
        """
        m = self.model
        book = m.book
        threshold = m.config.auction.compensation_threshold
        for c in self.campaigns:
            self.history_conversions += conversions[c]
            cs = self.campaign_specs[c]
            if cs.bid.type != "CPA" or c not in self.window:
                continue
            w = self.window[c]
            can_pay = int(spend_micro[c])
            if self.cpa_state.get(c) not in ("learning", "learned") or m.day > self.compensate_until.get(c, -1):
                self._close_window(c)
            if self.owed.get(c, 0) > 0:  # a closed window's debt first
                refund = min(self.owed[c], can_pay)
                self.owed[c] -= refund
                can_pay -= refund
                self._refund(c, refund, f"owed from a closed window: refund {refund / MICRO:.2f} yuan")
            if w["closed"]:
                continue
            w["spend"] += int(spend_micro[c])
            w["conversions"] += float(conversions[c])
            target_micro = cs.bid.amount * MICRO
            conv = w["conversions"]
            over = w["spend"] > (1.0 + threshold) * target_micro * max(conv, 0.0)
            if conv < 1 or not over:
                w["outstanding"] = 0  # (conversions came in: nothing owed now)
                continue
            owed = int(w["spend"] - math.floor(conv * target_micro)) - w["refunded"]
            refund = max(0, min(owed, can_pay))
            w["refunded"] += refund
            w["outstanding"] = max(0, owed - refund)
            self._refund(
                c,
                refund,
                f"CPA {w['spend'] / MICRO / conv:.2f} over {conv:.0f} conversions since learning began > target "
                f"{cs.bid.amount:.2f} x {1 + threshold:.2f}: refund {refund / MICRO:.2f} yuan",
            )

    def _refund(self, c: int, refund: int, detail: str) -> None:
        if refund <= 0:
            return
        m = self.model
        m.ledger.record_refund(c, refund)
        m.book.refund(c, refund)
        m.log("compensation", detail, self.name, m.book.camp_name[c])

    def _close_window(self, c: int) -> None:
        """The compensation window of campaign ``c`` ends: what it still owes becomes :attr:`owed`."""
        w = self.window.get(c)
        if w is not None and not w["closed"]:
            w["closed"] = True
            self.owed[c] = self.owed.get(c, 0) + w["outstanding"]
            w["outstanding"] = 0

    # ------------------------------------------------------------------ pieces

    def _apply_edits(self, c: int, cs: sc.Campaign) -> None:
        m = self.model
        for edit in cs.edits:
            if edit.date != m.calendar.date(m.day):
                continue
            book = m.book
            parts = []
            if edit.bid is not None:
                parts.append(f"bid {book.camp_amount[c]:.2f} -> {edit.bid:.2f}")
                book.camp_amount[c] = edit.bid
                book.camp_bid_eff[c] = edit.bid / 1000.0 if cs.bid.type == "CPM" else edit.bid
            if edit.daily_budget is not None:
                parts.append(f"daily budget {book.camp_budget_base[c]:.2f} -> {edit.daily_budget:.2f}")
                book.camp_budget_base[c] = edit.daily_budget
            if edit.targeting is not None:
                reach = self._retarget(c, edit.targeting)
                parts.append(f"targeting replaced (reachable users: {reach})")
            m.log("edit", ", ".join(parts), self.name, book.camp_name[c])
            if (edit.bid is not None or edit.targeting is not None) and self.cpa_state.get(c) in ("learned", "failed", "learning"):
                what = " and ".join(w for w, v in (("bid", edit.bid), ("targeting", edit.targeting)) if v is not None)
                self._enter_learning(c, f"significant edit: {what} changed")

    def _retarget(self, c: int, targeting: sc.Targeting) -> int:
        """Replace campaign ``c``'s targeting in its book rows and in this advertiser's spec; return its reach.

        The spec is copied, never changed in place: the scenario stays what the file said.
        """
        m = self.model
        book, pop = m.book, m.population
        book.camp_seg_ok[c] = segment_mask(targeting)
        bits = sum(1 << book.categories.index(i) for i in targeting.interests)
        book.camp_interest_bits[c] = bits
        book.camp_audience_mode[c] = 0
        book.camp_audience[c] = None
        book.camp_exclusion[c] = None
        m.feed.refresh_targeting()  # the serving groups campaigns by targeting: regroup
        k = self.campaigns.index(c)
        new_camp = self.campaign_specs[c].model_copy(update={"targeting": targeting})
        campaigns = list(self.spec.campaigns)
        campaigns[k] = new_camp
        self.spec = self.spec.model_copy(update={"campaigns": campaigns})
        self.campaign_specs[c] = new_camp
        m.advertiser_specs[self.index] = self.spec
        ok = book.camp_seg_ok[c][pop.segment]
        if bits:
            ok &= (pop.interest_bits & bits) != 0
        m.audience_sizes[c] = int(ok.sum())
        m._update_audiences()
        m.log("audience_size", f"reachable users: {int(ok.sum())} of {pop.n}", self.name, book.camp_name[c])
        return int(ok.sum())

    def _optimized_cpa(self, c: int) -> None:
        """oCPC: closed until the account has enough conversions; click billing at target x pCVR;
        a learning phase that ends after enough conversions in time, or fails."""
        m = self.model
        book = m.book
        a = m.config.auction
        state = self.cpa_state.get(c)
        name = book.camp_name[c]
        conv_total = float(m.campaign_conversions[c])
        if state is None:
            if self.history_conversions >= a.cpa_min_conversions:
                self._enter_learning(c, "optimized CPA open")
            else:
                self.cpa_state[c] = "closed"
                m.log(
                    "cpa_unavailable",
                    f"account has {self.history_conversions:.0f} conversions < {a.cpa_min_conversions}: runs as CPC",
                    self.name,
                    name,
                )
        elif state == "closed":
            if self.history_conversions >= a.cpa_min_conversions:
                m.log("cpa_unlocked", f"account reached {self.history_conversions:.0f} conversions", self.name, name)
                self._enter_learning(c, "optimized CPA open")
        elif state == "learning":
            got = conv_total - self.learning_base_conv[c]
            days_in = m.day - self.learning_start[c]
            if got >= a.learning_conversions:
                self.cpa_state[c] = "learned"
                m.log("learning_exit", f"{got:.0f} conversions in {days_in} days", self.name, name)
            elif days_in >= a.learning_days:
                self.cpa_state[c] = "failed"
                m.log("learning_failed", f"{got:.0f} < {a.learning_conversions} conversions in {a.learning_days} days", self.name, name)
        if self.cpa_state.get(c) in ("learning", "learned", "failed"):
            base = self.learning_mult.get(c, 1.0)
            if abs(book.camp_mult[c] / base - 1.0) > 0.3:
                self._enter_learning(c, f"significant edit: bid multiplier x{base:.2f} -> x{book.camp_mult[c]:.2f}")
        # Billing in force: click billing at target x pCVR (oCPC), or per conversion where the scenario asks.
        learned = self.cpa_state.get(c) == "learned"
        if learned and a.cpa_billing == "conversion":
            book.camp_bill[c] = BILL_CONVERSION
            book.camp_bid_eff[c] = book.camp_amount[c]
        else:
            book.camp_bill[c] = BILL_CLICK
            ads = book.ads_of(c)
            pcvr = float(np.average(m.quality.cvr_hat[ads], weights=book.ad_weight[ads] + 1e-12))
            book.camp_bid_eff[c] = book.camp_amount[c] * pcvr

    def _enter_learning(self, c: int, why: str) -> None:
        m = self.model
        reentry = c in self.learning_start
        self.cpa_state[c] = "learning"
        self.learning_start[c] = m.day
        self.learning_base_conv[c] = float(m.campaign_conversions[c])
        self.learning_mult[c] = float(m.book.camp_mult[c])
        a = m.config.auction
        self.compensate_until[c] = m.day + a.learning_days + a.compensation_days - 1
        self._close_window(c)
        self.window[c] = {"spend": 0, "conversions": 0.0, "refunded": 0, "outstanding": 0, "closed": False}
        m.log("learning_reenter" if reentry else "learning_enter", why, self.name, m.book.camp_name[c])

    def _shift_budgets(self) -> None:
        """budget_shift: move part of the budget toward the campaign with the best cost per result."""
        rule = next((r for r in self.rules if isinstance(r, BudgetShift)), None)
        m = self.model
        if rule is None or len(self.campaigns) < 2 or m.day == 0:
            return
        y = m.ledger.yesterday
        cost: dict[int, float] = {}
        for c in self.campaigns:
            if not m.book.camp_active[c]:
                continue
            results = _results(self.campaign_specs[c].bid.type, y, c)
            if results > 0:
                cost[c] = y["spend"][c] / results
        if len(cost) < 2:
            return
        best = min(cost, key=cost.__getitem__)
        worst = max(cost, key=cost.__getitem__)
        if cost[worst] <= cost[best] * 1.1:
            return
        f = rule.spec.fraction
        b_best = m.book.camp_budget_base[best] * rule.state.get(best, 1.0)
        b_worst = m.book.camp_budget_base[worst] * rule.state.get(worst, 1.0)
        moved = f * b_worst
        rule.state[worst] = (b_worst - moved) / m.book.camp_budget_base[worst]
        rule.state[best] = (b_best + moved) / m.book.camp_budget_base[best]
        m.log(
            "budget_shift",
            f"{moved:.2f} yuan/day from {m.book.camp_name[worst]} ({cost[worst]:.2f}/result) "
            f"to {m.book.camp_name[best]} ({cost[best]:.2f}/result)",
            self.name,
            m.book.camp_name[best],
        )

    def _creative_test(self, c: int, cs: sc.Campaign) -> None:
        m = self.model
        book = m.book
        ads = book.ads_of(c)
        imps = m.ad_cumulative["impressions"][ads]
        if cs.ab_metric == "conversion_rate":
            trials, wins = m.ad_cumulative["clicks"][ads], m.ad_cumulative["conversions"][ads]
        elif cs.ab_metric == "engagement_rate":
            trials, wins = imps, m.ad_cumulative["engagements"][ads]
        else:
            trials, wins = imps, m.ad_cumulative["clicks"][ads]
        approved = ~book.ad_rejected[ads]
        if cs.ab_test == "split":
            return
        if cs.ab_test == "thompson":
            rng = m.streams["advertisers"]
            draws = rng.beta(1.0 + wins[:, None], 1.0 + np.maximum(trials - wins, 0)[:, None], size=(ads.size, 2000))
            draws[~approved] = -1.0
            share = np.bincount(draws.argmax(axis=0), minlength=ads.size) / 2000.0
            book.set_weights(c, np.maximum(share, 0.0))
            m.log("ab_weights", "thompson: " + ", ".join(f"{book.ad_name[a]} {w:.2f}" for a, w in zip(ads, book.ad_weight[ads], strict=True)), self.name, book.camp_name[c])
            return
        if approved.sum() < 2:
            return
        live = np.flatnonzero(approved)
        look = self.ab_look[c]
        decision = ab_look(wins[live], trials[live], look, cs.ab_min_impressions, cs.ab_alpha)
        if decision is None:
            return
        self.ab_look[c] = look + 1
        winner, p_value, alpha, rates = decision
        best = live[winner]
        second = live[np.argsort(-rates, kind="stable")[1]]
        if p_value < alpha:
            weights = np.zeros(ads.size)
            weights[best] = 1.0
            book.set_weights(c, weights)
            self.ab_done[c] = True
            m.log(
                "ab_winner",
                f"{book.ad_name[ads[best]]} wins on {cs.ab_metric}: {rates[winner]:.4f} vs "
                f"{wins[second] / max(trials[second], 1):.4f}, p = {p_value:.2g} < {alpha:.2g}",
                self.name,
                book.camp_name[c],
            )
        else:
            m.log("ab_look", f"look {look + 1}: p = {p_value:.2g} >= {alpha:.2g}, split continues", self.name, book.camp_name[c])


def ab_look(
    wins: np.ndarray, trials: np.ndarray, look: int, min_trials: int, alpha: float
) -> tuple[int, float, float, np.ndarray] | None:
    """One look of the sequential A/B test, or None when it is not yet time to look.

    Looks happen when the smallest arm reaches ``min_trials x 2^look``; look
    ``k`` (from 0) spends ``alpha / 2^(k+1)`` (so all looks together spend at
    most ``alpha``), Bonferroni-split over the ``n - 1`` comparisons of the best
    arm with the others.  Tests the best arm against the runner-up with the
    two-sided pooled two-proportion z-test.

    Returns
    -------
    (best arm index, p-value, alpha of this look, rates of the arms)
    """
    if trials.min() < min_trials * 2**look:
        return None
    rates = wins / np.maximum(trials, 1)
    order = np.argsort(-rates, kind="stable")
    best, second = int(order[0]), int(order[1])
    alpha_look = alpha / 2 ** (look + 1) / max(1, rates.size - 1)
    return best, two_proportion_p(wins[best], trials[best], wins[second], trials[second]), alpha_look, rates


def two_proportion_p(x1: float, n1: float, x2: float, n2: float) -> float:
    """Two-sided p-value of the pooled two-proportion z-test."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = abs(x1 / n1 - x2 / n2) / se
    return math.erfc(z / math.sqrt(2))


def _results(bid_type: str, y: dict[str, Any], c: int) -> float:
    key = {"CPM": "impressions", "CPC": "clicks", "CPE": "engagements", "CPA": "conversions"}[bid_type]
    return float(y[key][c]) if key in y else 0.0
