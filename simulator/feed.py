"""The feed: each hour's sessions, served in bulk through the auction.

Owns the serving loop: how many sessions an hour brings and whose they are,
which ads are eligible in each (targeting, audiences, budget, frequency cap,
pacing throttle, quality gate, creative split), their Ad Ranks, the auction,
the users' responses and the billing, in time order.  An hour is served in
time-ordered chunks, each auctioned and served by respond.respond (at once on
the numpy path, block by block on the compiled one: the same results); inside
a chunk, when a campaign's next billing event would cross its budget, that
event is delivered but not billed and the campaign leaves: the later sessions
whose auction had it among their top ``n_slots + 1`` are auctioned again
without it as the serving reaches them, so unbilled delivery past a budget is
exactly the crossing event.

Per-session work runs in the compiled kernels (or their numpy paths); Python
loops run over chunks and over the few campaigns with several creatives or an
audience list.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from simulator import auction, engagement, kernels, respond
from simulator.book import BILL_CLICK, BILL_CONVERSION, BILL_ENGAGEMENT, BILL_IMPRESSION, MICRO, AdBook
from simulator.calendar import Calendar, DayConditions
from simulator.ledger import Ledger
from simulator.population import Population
from simulator.quality import QualityModel, relevance_lift
from simulator.respond import members
from simulator.scenario import Scenario

log = logging.getLogger(__name__)

#: Per-column entries of a chunk's setup (cut down to the live columns for each batch).
_PER_COLUMN = (
    "cols", "camp", "bill", "col_group", "col_audience", "col_multi", "col_slot", "share", "phase", "col_topic",
    "per_event", "device_mult", "base_rate", "lift_power", "qs_factor", "ocpc", "bound",
)  # fmt: skip


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
        self.freq = kernels.hot_zeros((population.n, book.n_ads), np.uint8, populate=True)  # written all over by day's end
        self._freq_used = False
        self.block = 0  # the compiled responses' block size, carried from batch to batch (respond.next_block)
        # Users who clicked or converted today, per advertiser (merged into audiences at day end).
        self.clicked: list[tuple[np.ndarray, np.ndarray]] = []
        self.converted: list[tuple[np.ndarray, np.ndarray]] = []
        self.day = 0
        # The platform's relevance lift of every user for every category (float32, computed once).
        self.user_lift = relevance_lift(population.affinity, out=kernels.hot_zeros(population.affinity.shape, np.float32))
        self.topic_max_lift = self.user_lift.max(axis=0).astype(np.float64)
        self.refresh_targeting()
        #: When a list, every served batch appends its inputs and outputs (tests compare a slow reference;
        #: switch it on or off between days, see :attr:`familiar_keys`).
        self.trace: list[dict[str, Any]] | None = None
        self._familiar_room: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        self.familiar_keys = np.zeros(0, dtype=np.int64)

    def refresh_targeting(self) -> None:
        """Group the campaigns by identical demographic + interest targeting, from the book's rows (again
        after a campaign's targeting is edited, between days)."""
        self.camp_group, first = self.book.targeting_groups()
        self.group_seg_ok = self.book.camp_seg_ok[first]
        self.group_bits = self.book.camp_interest_bits[first]
        self._admit_cache: dict[bytes, kernels.AdmitTables | None] = {}

    @property
    def familiar_keys(self) -> np.ndarray:
        """Sorted keys (:func:`respond.familiar_key`) of users who clicked or converted with an advertiser
        before today (ground truth of brand familiarity; the market refreshes them each night), set
        with ``familiar_ptr``, where each user's keys start.

        Both are read at random per impression, so they sit on huge pages (values unchanged), in tables
        reused from one setting to the next, except while :attr:`trace` is on: a trace keeps each
        batch's inputs, so a day traced must not have its tables written over later (switch the trace
        on or off between days).
        """
        return self._familiar_keys

    @familiar_keys.setter
    def familiar_keys(self, keys: np.ndarray) -> None:
        rooms = self._familiar_room if self.trace is None else (None, None)
        # The compiled pass finds a user's keys through this index: the two never go out of step.  (It is
        # built before the copy: ``keys`` may be a view of the table the copy writes over.)
        n = self.population.n
        ptr_room = rooms[1] if rooms[1] is not None else kernels.hot_zeros(n + 1, np.int64)
        self.familiar_ptr = respond.familiar_index(keys, n, out=ptr_room)
        self._familiar_keys, keys_room = kernels.hot_into(rooms[0], keys)
        self._familiar_room = (keys_room, ptr_room)

    def start_day(self, day: int) -> None:
        self.day = day
        if self._freq_used:  # (a fresh table is already zero: filling it would only fault its pages in)
            self.freq.fill(0)
            self._freq_used = False
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
        """Auction a chunk's sessions, serve and bill them in time order, then record them.

        The chunk's ads, their order and every per-session draw are set up once
        (:meth:`_setup`), and all its sessions are auctioned at once among the ads whose campaigns
        have budget.  When a billing event crosses a campaign's budget, the campaign leaves: the
        later sessions whose auction had it among their top ``n_slots + 1`` are auctioned again
        without it, one by one as the serving reaches them (the others would come out the same).
        """
        cols = self.book.servable(self.day * 24 + hour)
        if cols.size == 0 or users.size == 0:
            return
        ch = self._setup(users, cols, hour)
        live = np.flatnonzero(~self.book.camp_exhausted[ch["camp"]])
        if live.size:
            self._auction(ch, live, hour, cond)
        # Impression share counts the auctions whose targeting admitted each campaign.
        admitted, audience = ch["admitted"], ch["audience"]
        first_col, col_group, col_audience = ch["first_col"], ch["col_group"], ch["col_audience"]
        targeted = ch["n_admitted"][col_group[first_col]]
        listed = np.flatnonzero(col_audience[first_col] >= 0)
        if listed.size:
            j0 = first_col[listed]
            targeted[listed] = (admitted[:, col_group[j0]] & audience[:, col_audience[j0]]).sum(axis=0)
        self.ledger.record_eligible(ch["camps"], targeted)

    # ------------------------------------------------------------------ core

    def _setup(self, users: np.ndarray, cols: np.ndarray, hour: int) -> dict[str, Any]:
        """The chunk's columns (ads) in pruning order with their rank inputs, and its per-session inputs.

        Column order: in buckets by how the rank scales with the user's lift, each sorted by an
        upper bound of the rank, so the compiled kernel can stop scanning a bucket once none of
        its remaining ads can make the session's slots (exact pruning, kernels.pruning_order);
        ads with equal keys in a random order drawn per chunk, and the kernels break rank ties by
        column, so ties go at random.
        """
        book, pop, rng = self.book, self.population, self.auction_rng
        n_s = len(users)
        cols = cols[rng.permutation(cols.size)]
        bill, base_rate, lift_power, per_event, ocpc, device_mult = self._rank_inputs(cols, hour)
        qs_factor = self.quality.qs[cols] / 10.0
        col_topic = book.ad_topic[cols]
        perm, bound, bucket_start, bucket_topic, bucket_power = kernels.pruning_order(
            per_event, device_mult, base_rate, lift_power, ocpc, qs_factor, col_topic, self.topic_max_lift
        )
        bucket = np.repeat(np.arange(bucket_power.size), np.diff(bucket_start))
        cols = cols[perm]
        camp = book.ad_camp[cols]
        # --- eligibility inputs: targeting groups and audience lists, creative split, pacing and quality gate
        groups, col_group = np.unique(self.camp_group[camp], return_inverse=True)
        admitted, n_admitted = kernels.admitted(
            self.group_seg_ok[groups], self.group_bits[groups], users, pop.segment, pop.interest_bits,
            self._admit_tables(groups),
        )
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
        return {
            "users": users, "device": pop.device[users], "admitted": admitted, "n_admitted": n_admitted,
            "audience": audience, "picks": picks,
            "u_part": rng.random(n_s, dtype=np.float32),
            # per column (ad), in pruning order
            "cols": cols, "camp": camp, "bill": bill[perm], "col_group": col_group.astype(np.int32),
            "col_audience": col_audience, "col_multi": col_multi, "col_slot": col_slot, "share": share,
            "phase": rng.random(cols.size, dtype=np.float32), "col_topic": col_topic[perm],
            "per_event": per_event[perm], "device_mult": None if device_mult is None else device_mult[perm],
            "base_rate": base_rate[perm], "lift_power": lift_power[perm], "qs_factor": qs_factor[perm],
            "ocpc": ocpc[perm], "bound": bound, "bucket": bucket, "bucket_topic": bucket_topic,
            "bucket_power": bucket_power,
            # per campaign of the chunk: its first column (impression-share denominators)
            "camps": camps, "first_col": first_col,
        }  # fmt: skip

    def _auction(self, ch: dict[str, Any], live: np.ndarray, hour: int, cond: DayConditions) -> None:
        """Auction the chunk among its ``live`` columns, serve in time order, re-auction after crossings."""
        book = self.book
        cut = {k: ch[k][live] for k in _PER_COLUMN if ch[k] is not None}
        counts = np.bincount(ch["bucket"][live], minlength=ch["bucket_power"].size)
        has = counts > 0
        bucket_start = np.zeros(int(has.sum()) + 1, dtype=np.int32)
        bucket_start[1:] = np.cumsum(counts[has])
        users = ch["users"]
        batch = kernels.Batch(
            users=users, device=ch["device"], admitted=ch["admitted"], audience=ch["audience"], picks=ch["picks"],
            u_part=ch["u_part"], col_group=cut["col_group"], col_audience=cut["col_audience"],
            exhausted=np.zeros(live.size, dtype=bool), col_ad=cut["cols"], cap=self.cap, col_multi=cut["col_multi"],
            col_slot=cut["col_slot"], share=cut["share"], phase=cut["phase"], col_topic=cut["col_topic"],
            freq=self.freq, user_lift=self.user_lift, per_event=cut["per_event"], device_mult=cut.get("device_mult"),
            base_rate=cut["base_rate"], lift_power=cut["lift_power"], qs_factor=cut["qs_factor"],
            n_slots=self.n_slots, floor=self.floor, value_lift=cut["ocpc"], bound=cut["bound"],
            bucket_start=bucket_start, bucket_topic=ch["bucket_topic"][has], bucket_power=ch["bucket_power"][has],
        )  # fmt: skip
        book, pop = self.book, self.population
        winners = respond.Winners(
            order=None, sorted_ranks=None, paid=None, n_slots=self.n_slots,  # (auctioned by respond.respond)
            users=users, device=batch.device, cols=cut["cols"], camp=cut["camp"], bill=cut["bill"],
            per_event=cut["per_event"], device_mult=cut.get("device_mult"), ocpc=cut["ocpc"],
            user_lift=self.user_lift, affinity=pop.affinity, taste=pop.taste, ad_taste=book.ad_taste,
            ad_topic=book.ad_topic, ad_content=book.ad_content, ad_authenticity=book.ad_authenticity,
            ad_video=book.ad_video, ad_vertical=book.ad_vertical, ad_impressions_total=book.ad_impressions_total,
            camp_landing=book.camp_landing, camp_adv=book.camp_adv, remaining=book.remaining_micro(), freq=self.freq,
            familiar_keys=self.familiar_keys, familiar_ptr=self.familiar_ptr, view=self.view, intent=cond.intent,
            u=None, u_key=kernels.batch_key(self.engagement_rng), dead=book.camp_exhausted.copy(), batch=batch,
            mechanism=self.mechanism, block=self.block,
        )  # fmt: skip
        before = None
        if self.trace is not None:  # the inputs as they were (the serving re-auctions in place)
            respond.first_auction(winners)
            order, sorted_ranks = winners.order, winners.sorted_ranks
            freq = self.freq.copy()
            before = replace(
                winners, order=order.copy(), sorted_ranks=sorted_ranks.copy(), paid=winners.paid.copy(), freq=freq,
                ad_impressions_total=book.ad_impressions_total.copy(), batch=replace(batch, freq=freq),
            )  # fmt: skip
        served = respond.respond(winners)
        self.block = winners.block
        if before is not None:
            eligible, lift = kernels.eligibility(batch)
            self.trace.append(
                {
                    "eligible": eligible, "lift": lift, "device": batch.device, "per_event": batch.per_event,
                    "device_mult": batch.device_mult, "base_rate": batch.base_rate, "lift_power": batch.lift_power,
                    "qs_factor": batch.qs_factor, "value_lift": batch.value_lift, "n_slots": self.n_slots,
                    "floor": self.floor, "view": self.view, "mechanism": self.mechanism, "order": order,
                    "sorted_ranks": sorted_ranks, "prices": served.price, "s_idx": served.session,
                    "k_idx": served.slot, "camp": cut["camp"], "event": served.event, "remaining": before.remaining,
                    "dead": before.dead, "billed": served.billed, "over": served.over, "n_used": served.n_used,
                    "winners": before, "served": served,
                }
            )  # fmt: skip
        self._commit(served, users, cut, hour, cond)

    def _commit(self, served: respond.Served, users: np.ndarray, cut: dict[str, Any], hour: int, cond: DayConditions) -> None:
        """Record the kept impressions: counters, billing, frequency, wear, audiences, exhausted budgets.

        The compiled passes read each impression's ad, campaign and user through its column and
        session: no per-impression array is gathered here, only the few rows that need one.
        """
        book = self.book
        cols, camp = cut["cols"], cut["camp"]
        o = served.outcomes
        # Order values of the conversions (lognormal with the campaign's mean, sigma 0.5).
        value = np.zeros(served.col.size)
        conv = o["conversion"]
        n_conv = int(conv.sum())
        if n_conv:
            mean = book.camp_value[camp[served.col[conv]]] * cond.order_value
            value[conv] = np.round(mean * kernels.c_math("exp", 0.5 * self.engagement_rng.standard_normal(n_conv) - 0.125), 2)
        out = engagement.Outcomes(**o, order_value=value)
        per_ad, per_camp = self.ledger.record_impressions(
            hour, served.col, cols, camp, served.slot, out, served.amount, served.over, served.relevance, served.lift,
            self.view, self.engagement_weights,
        )  # fmt: skip
        book.bill(per_camp[kernels.CAMPAIGN_SUMS.index("spend_micro")].astype(np.int64))
        kernels.bump_frequency(self.freq, users, served.session, cols, served.col, served.frequency)
        self._freq_used = True
        book.ad_impressions_total += per_ad[kernels.AD_SUMS.index("impressions")]
        for seen, kept in ((self.clicked, out.click), (self.converted, out.conversion)):
            if kept.any():
                seen.append((book.camp_adv[camp[served.col[kept]]], users[served.session[kept]]))
        self._exhaust(np.unique(camp[served.col[served.over]]), hour, "crossing")
        camps = np.unique(camp)
        done = camps[(book.remaining_micro()[camps] <= 0) & ~book.camp_exhausted[camps]]
        self._exhaust(done, hour, "spent")

    def _admit_tables(self, groups: np.ndarray) -> kernels.AdmitTables | None:
        """The targeting tables of these groups (kernels.admit_tables), kept for the chunks that have
        the same groups (those of an hour, mostly)."""
        if not kernels.HAVE_NUMBA:  # (the numpy path computes the targeting group by group)
            return None
        key = groups.tobytes()
        if key not in self._admit_cache:
            if len(self._admit_cache) >= 64:
                self._admit_cache.clear()
            self._admit_cache[key] = kernels.admit_tables(self.group_seg_ok[groups], self.group_bits[groups])
        return self._admit_cache[key]

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

