"""The feed: each hour's sessions, served in bulk through the auction.

Owns the serving loop: how many sessions an hour brings and whose they are,
which ads are eligible in each (targeting, audiences, budget, frequency cap,
pacing throttle, quality gate, creative split), their Ad Ranks, the auction,
the users' responses and the billing, in time order.  An hour is served in
time-ordered chunks; inside a chunk, when a campaign's next billing event
would cross its budget, that event is delivered but not billed, the campaign
leaves, and the rest of the chunk is auctioned again without it, so unbilled
delivery past a budget is exactly the crossing event.

Everything here is vectorized over sessions x ads; Python loops run over
chunks and over the few campaigns with several creatives or an audience list.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

import numpy as np

from simulator import auction, engagement, kernels
from simulator.book import BILL_CLICK, BILL_CONVERSION, BILL_ENGAGEMENT, BILL_IMPRESSION, MICRO, AdBook
from simulator.calendar import Calendar, DayConditions
from simulator.ledger import Ledger
from simulator.population import Population
from simulator.quality import QualityModel, relevance_lift
from simulator.scenario import Scenario

log = logging.getLogger(__name__)

#: Smallest batch served after a budget crossing (sessions).
MIN_BATCH = 256

#: Weight of the users' latent taste in true relevance (the platform sees only the rest).
TASTE_WEIGHT = 0.25


def members(users: np.ndarray, sorted_ids: np.ndarray | None) -> np.ndarray:
    """Which ``users`` are in the sorted id array (bool, same shape as ``users``)."""
    if sorted_ids is None or sorted_ids.size == 0:
        return np.zeros(users.shape, dtype=bool)
    pos = np.searchsorted(sorted_ids, users)
    pos = np.minimum(pos, sorted_ids.size - 1)
    return sorted_ids[pos] == users


class Feed:
    """Serves the sessions of each hour through the auction and bills the winners."""

    def __init__(
        self,
        scenario: Scenario,
        population: Population,
        book: AdBook,
        quality: QualityModel,
        calendar: Calendar,
        ledger: Ledger,
        streams: dict[str, np.random.Generator],
        events: list[dict[str, Any]],
    ):
        self.population = population
        self.book = book
        self.quality = quality
        self.calendar = calendar
        self.ledger = ledger
        self.events = events
        self.traffic_rng = streams["traffic"]
        self.auction_rng = streams["auction"]
        self.engagement_rng = streams["engagement"]
        t = scenario.traffic
        self.n_slots = t.ad_slots
        self.view = np.asarray(t.view_factors, dtype=np.float64)
        self.cap = t.frequency_cap
        self.chunks_per_hour = t.chunks_per_hour
        self.base_sessions = population.n * t.sessions_per_user_per_day
        a = scenario.auction
        self.mechanism: auction.Mechanism = auction.MECHANISMS[a.mechanism]
        self.floor = a.reserve_ecpm / 1000.0
        self.min_quality = a.min_quality
        self.engagement_weights = quality.engagement_weights
        # Impressions of each ad to each user today (saturating at 255): frequency cap and fatigue.
        self.freq = np.zeros((population.n, book.n_ads), dtype=np.uint8)
        # Users who clicked or converted today, per advertiser (merged into audiences at day end).
        self.clicked: list[tuple[np.ndarray, np.ndarray]] = []
        self.converted: list[tuple[np.ndarray, np.ndarray]] = []
        self.day = 0
        # The platform's relevance lift of every user for every category (float32, computed once).
        self.user_lift = relevance_lift(population.affinity).astype(np.float32)
        self.topic_max_lift = self.user_lift.max(axis=0).astype(np.float64)
        # Campaigns grouped by identical demographic + interest targeting.
        keys = [book.camp_seg_ok[c].tobytes() + int(book.camp_interest_bits[c]).to_bytes(8, "little") for c in range(book.n_campaigns)]
        uniq = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        self.camp_group = np.array([uniq[k] for k in keys], dtype=np.int32)
        first = {g: c for c, g in reversed(list(enumerate(self.camp_group)))}
        order = [first[g] for g in range(len(uniq))]
        self.group_seg_ok = book.camp_seg_ok[order] if order else np.zeros((0, book.camp_seg_ok.shape[1]), bool)
        self.group_bits = book.camp_interest_bits[order] if order else np.zeros(0, np.int64)
        #: Sorted keys ``advertiser * n_users + user`` of users who clicked or converted with an advertiser
        #: before today (ground truth of brand familiarity; the market refreshes it each night).
        self.familiar_keys = np.zeros(0, dtype=np.int64)
        #: When a list, every served batch appends its inputs and outputs (tests compare a slow reference).
        self.trace: list[dict[str, Any]] | None = None

    def start_day(self, day: int) -> None:
        self.day = day
        self.freq.fill(0)
        self.clicked.clear()
        self.converted.clear()
        self._gate = self.quality.gate(self.min_quality)

    # ------------------------------------------------------------------ hour

    def serve_hour(self, day: int, hour: int, cond: DayConditions) -> None:
        """Draw this hour's sessions and serve them in time-ordered chunks."""
        expected = self.calendar.expected_sessions(day, self.base_sessions)[hour]
        n = int(self.traffic_rng.poisson(expected))
        users = self.population.draw_sessions(n, self.traffic_rng)
        self.ledger.record_sessions(n)
        for chunk in np.array_split(users, self.chunks_per_hour):
            self._serve_chunk(chunk, hour, cond)

    def _serve_chunk(self, users: np.ndarray, hour: int, cond: DayConditions) -> None:
        """Serve a chunk in batches, re-auctioning after each budget crossing.

        The work after a crossing is thrown away, so a batch that follows a crossing is small
        (twice the sessions the last one got through, at least ``MIN_BATCH``) and batches
        double while no budget runs out: with many campaigns exhausting in one chunk the
        wasted work stays a few hundred sessions per crossing, not the rest of the chunk.
        """
        start = 0
        hour_index = self.day * 24 + hour
        step = len(users)
        while start < len(users):
            cols = self.book.servable(hour_index)
            if cols.size == 0:
                return
            batch = users[start : start + step]
            used = self._serve(batch, cols, hour, cond)
            start += used
            step = max(MIN_BATCH, 2 * used) if used < len(batch) else 2 * step

    # ------------------------------------------------------------------ core

    def _serve(self, users: np.ndarray, cols: np.ndarray, hour: int, cond: DayConditions) -> int:
        """Auction ``users``' sessions among ads ``cols``; commit up to the first budget crossing.

        Returns the number of sessions committed (all of them unless a budget was crossed).
        """
        book, pop, rng = self.book, self.population, self.auction_rng
        n_s = len(users)
        # Column order: by an upper bound of each ad's rank over all users, best first, so the
        # compiled kernel can stop scanning a session once no remaining ad can make its slots
        # (exact pruning); ads with equal bounds in a random order drawn per batch, and the
        # kernels break rank ties by column, so ties go at random.
        cols = cols[rng.permutation(cols.size)]
        inputs = self._rank_inputs(cols, hour)
        bound = self._rank_bound(cols, inputs)
        best_first = np.argsort(-bound, kind="stable")
        cols, bound = cols[best_first], bound[best_first]
        bill, base_rate, lift_power, per_event, ocpc, device_mult = (
            None if x is None else x[best_first] for x in inputs
        )
        camp = book.ad_camp[cols]
        # --- eligibility inputs: targeting groups and audience lists, creative split, pacing and quality gate
        groups, col_group = np.unique(self.camp_group[camp], return_inverse=True)
        admitted = self.group_seg_ok[groups].T[pop.segment[users]]  # (S, G)
        bits = self.group_bits[groups]
        if (bits != 0).any():
            admitted &= ((pop.interest_bits[users][:, None] & bits[None, :]) != 0) | (bits == 0)[None, :]
        aud_cols = np.flatnonzero(book.camp_audience_mode[camp] != 0)
        audience = np.ones((n_s, aud_cols.size), dtype=bool)
        col_audience = np.full(cols.size, -1, dtype=np.int32)
        for i, j in enumerate(aud_cols):
            c = camp[j]
            col_audience[j] = i
            if book.camp_audience_mode[c] > 0:
                audience[:, i] &= members(users, book.camp_audience[c])
            if book.camp_exclusion[c] is not None:
                audience[:, i] &= ~members(users, book.camp_exclusion[c])
        camps, first_col, n_cols = np.unique(camp, return_index=True, return_counts=True)
        multi = camps[n_cols > 1]
        picks = np.zeros((n_s, multi.size), dtype=np.int8)
        col_multi = np.full(cols.size, -1, dtype=np.int32)
        col_slot = np.zeros(cols.size, dtype=np.int8)
        for m, c in enumerate(multi):
            js = np.flatnonzero(camp == c)
            cw = np.cumsum(book.ad_weight[cols[js]])
            picks[:, m] = np.minimum(np.searchsorted(cw, rng.random(n_s) * cw[-1], side="right"), js.size - 1)
            col_multi[js] = m
            col_slot[js] = np.arange(js.size)
        share = (book.camp_throttle[camp] * self._gate[cols]).astype(np.float32)
        u_part = rng.random(n_s, dtype=np.float32)
        phase = rng.random(cols.size, dtype=np.float32)
        # --- Ad Rank = value x QS / 10, value = bid x multipliers x predicted rate of the billing event
        q = self.quality
        device = pop.device[users]
        batch = kernels.Batch(
            users=users, device=device, admitted=admitted, audience=audience, picks=picks, u_part=u_part,
            col_group=col_group.astype(np.int32), col_audience=col_audience,
            exhausted=book.camp_exhausted[camp], col_ad=cols, cap=self.cap, col_multi=col_multi,
            col_slot=col_slot, share=share, phase=phase, col_topic=book.ad_topic[cols], freq=self.freq,
            user_lift=self.user_lift, per_event=per_event, device_mult=device_mult, base_rate=base_rate,
            lift_power=lift_power, qs_factor=q.qs[cols] / 10.0, n_slots=self.n_slots, floor=self.floor,
            value_lift=ocpc, bound=bound,
        )  # fmt: skip
        order, sorted_ranks = kernels.select(batch)
        paid = auction.rank_prices(self.mechanism, sorted_ranks, self.view, self.floor)
        s_idx, k_idx = np.nonzero(order[:, : self.n_slots] >= 0)  # row-major: time order
        j = order[s_idx, k_idx]
        value = per_event[j] if device_mult is None else per_event[j] * device_mult[j, device[s_idx]]
        if ocpc.any():
            value = np.where(ocpc[j], value * self.user_lift[users[s_idx], book.ad_topic[cols[j]]].astype(np.float64), value)
        prices = auction.event_prices(value, sorted_ranks[s_idx, k_idx], paid[s_idx, k_idx])
        ads = cols[j]
        imp_users = users[s_idx]
        imp_camp = camp[j]
        # --- what the users do (ground truth)
        taste = np.einsum("ij,ij->i", pop.taste[imp_users], book.ad_taste[ads])
        rel_obs = pop.affinity[imp_users, book.ad_topic[ads]].astype(np.float64)
        imp = engagement.Impressions(
            relevance=(1 - TASTE_WEIGHT) * rel_obs + TASTE_WEIGHT * engagement.sigmoid(1.5 * taste.astype(np.float64)),
            content=book.ad_content[ads],
            authenticity=book.ad_authenticity[ads],
            is_video=book.ad_video[ads],
            vertical=book.ad_vertical[ads],
            landing=book.camp_landing[imp_camp],
            view=self.view[k_idx],
            frequency=self.freq[imp_users, ads].astype(np.float64),
            wear=np.log1p(10.0 * book.ad_impressions_total[ads] / pop.n),
            intent=cond.intent,
            order_value_mean=book.camp_value[imp_camp],
            order_value_mult=cond.order_value,
            familiar=members(book.camp_adv[imp_camp].astype(np.int64) * pop.n + imp_users, self.familiar_keys),
        )
        out = engagement.sample(imp, self.engagement_rng)
        # --- billing, in time order, against what each campaign may still spend
        ev_bill = bill[j]
        event = np.select(
            [ev_bill == BILL_IMPRESSION, ev_bill == BILL_CLICK, ev_bill == BILL_ENGAGEMENT],
            [np.ones(ads.size, dtype=bool), out.click, out.engagement],
            out.conversion,
        )
        amount = np.where(event, np.floor(prices * MICRO), 0).astype(np.int64)
        remaining = book.remaining_micro()
        over = event & crosses(imp_camp, amount, remaining)
        if over.any():
            n_used = int(s_idx[over].min()) + 1
            keep = s_idx < n_used
        else:
            n_used = n_s
            keep = np.ones(ads.size, dtype=bool)
        billed = np.where(over, 0, amount)
        if self.trace is not None:
            eligible, lift = kernels.eligibility(batch)
            self.trace.append(
                {
                    "eligible": eligible, "lift": lift, "device": device, "per_event": per_event,
                    "device_mult": device_mult, "base_rate": base_rate, "lift_power": lift_power,
                    "qs_factor": batch.qs_factor, "value_lift": ocpc, "n_slots": self.n_slots, "floor": self.floor, "view": self.view,
                    "mechanism": self.mechanism, "order": order, "sorted_ranks": sorted_ranks, "prices": prices,
                    "s_idx": s_idx, "k_idx": k_idx, "camp": camp, "event": event, "remaining": remaining,
                    "billed": billed, "over": over, "n_used": n_used,
                }
            )  # fmt: skip
        # --- commit the sessions up to the cut; impression share counts the auctions targeting admitted
        committed = admitted[:n_used]
        targeted = committed.sum(axis=0)[col_group[first_col]]
        for i, j0 in enumerate(first_col):
            if col_audience[j0] >= 0:
                targeted[i] = (committed[:, col_group[j0]] & audience[:n_used, col_audience[j0]]).sum()
        self.ledger.record_eligible(camps, targeted)
        lift_imp = self.user_lift[imp_users, book.ad_topic[ads]].astype(np.float64)
        if not keep.all():
            ads, k_idx, imp_users, imp_camp = ads[keep], k_idx[keep], imp_users[keep], imp_camp[keep]
            billed, over, amount, rel_obs, lift_imp = billed[keep], over[keep], amount[keep], rel_obs[keep], lift_imp[keep]
            out = engagement.Outcomes(**{f.name: getattr(out, f.name)[keep] for f in fields(out)})
        self.ledger.record_impressions(
            hour,
            ads,
            k_idx,
            out,
            billed,
            over,
            np.where(over, amount, 0),
            rel_obs,
            lift_imp * self.view[k_idx],
            lift_imp,
            self.engagement_weights,
        )
        book.bill(np.bincount(imp_camp, weights=billed, minlength=book.n_campaigns).astype(np.int64))
        self.freq[imp_users, ads] = np.minimum(self.freq[imp_users, ads].astype(np.int16) + 1, 255).astype(np.uint8)
        book.ad_impressions_total += np.bincount(ads, minlength=book.n_ads)
        if out.click.any():
            self.clicked.append((book.camp_adv[imp_camp[out.click]], imp_users[out.click]))
        if out.conversion.any():
            self.converted.append((book.camp_adv[imp_camp[out.conversion]], imp_users[out.conversion]))
        self._exhaust(np.unique(imp_camp[over]), hour, "crossing")
        done = camps[(book.remaining_micro()[camps] <= 0) & ~book.camp_exhausted[camps]]
        self._exhaust(done, hour, "spent")
        return n_used

    def _rank_inputs(self, cols: np.ndarray, hour: int) -> tuple:
        """Per column: billing event, predicted base rate, lift power, yuan per event, oCPC flag, device multipliers."""
        book, q = self.book, self.quality
        camp = book.ad_camp[cols]
        bill = book.camp_bill[camp]
        base_rate = np.select(
            [bill == BILL_IMPRESSION, bill == BILL_CLICK, bill == BILL_ENGAGEMENT],
            [np.ones(cols.size), q.ctr_hat[cols], q.engage_hat[cols]],
            q.ctr_hat[cols] * q.cvr_hat[cols],
        )
        lift_power = np.select([bill == BILL_IMPRESSION, bill == BILL_CONVERSION], [0, 2], 1).astype(np.int8)
        multipliers = book.camp_mult[camp] * book.camp_hour_mult[camp, hour] * book.camp_pace_mult[camp]
        per_event = book.camp_bid_eff[camp] * multipliers
        # oCPC: a CPA campaign billed per click bids target x pCVR(user) per click, pCVR = cvr_hat x lift.
        ocpc = book.camp_ocpc[camp] & (bill == BILL_CLICK)
        if ocpc.any():
            per_event = np.where(ocpc, book.camp_amount[camp] * multipliers * q.cvr_hat[cols], per_event)
        dev = book.camp_dev_mult[camp]
        device_mult = dev if np.any(dev != 1.0) else None
        return bill, base_rate, lift_power, per_event, ocpc, device_mult

    def _rank_bound(self, cols: np.ndarray, inputs: tuple) -> np.ndarray:
        """An upper bound of each column's Ad Rank over every user and device (slightly inflated)."""
        _, base_rate, lift_power, per_event, ocpc, device_mult = inputs
        top_lift = self.topic_max_lift[self.book.ad_topic[cols]]
        value = per_event * (device_mult.max(axis=1) if device_mult is not None else 1.0) * np.where(ocpc, top_lift, 1.0)
        rate = base_rate * np.where(lift_power >= 1, top_lift, 1.0) * np.where(lift_power == 2, top_lift, 1.0)
        return value * rate * (self.quality.qs[cols] / 10.0) * (1.0 + 1e-9)

    def _exhaust(self, campaigns: np.ndarray, hour: int, how: str) -> None:
        book = self.book
        for c in campaigns:
            if book.camp_exhausted[c]:
                continue
            book.camp_exhausted[c] = True
            self.events.append(
                {
                    "date": self.calendar.date(self.day),
                    "hour": hour,
                    "advertiser": book.advertiser_names[book.camp_adv[c]],
                    "campaign": book.camp_name[c],
                    "kind": "budget_exhausted",
                    "detail": f"spent {book.spent_today[c] / MICRO:.2f} yuan today; leaves the auction ({how})",
                }
            )


def crosses(campaign: np.ndarray, amount: np.ndarray, remaining: np.ndarray) -> np.ndarray:
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
