"""The market: the Mesa model that runs the platform one calendar day per step.

Owns the run's random streams, the calendar, the users, the ad book, the feed,
the quality model and the advertisers (Mesa agents), and tells the story of a
day in order (see :meth:`Market.step`).  It knows nothing about files or plots.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import mesa
import numpy as np

from simulator import kernels, respond
from simulator import scenario as sc
from simulator.advertiser import Advertiser
from simulator.book import MICRO, AdBook
from simulator.calendar import Calendar
from simulator.feed import Feed
from simulator.generate import expand_advertisers
from simulator.ledger import Ledger
from simulator.population import Population
from simulator.quality import QualityModel, review_outcome
from simulator.strategy.pacing import PacingBank

log = logging.getLogger(__name__)

#: Named random streams, spawned in this order from the run's root SeedSequence.
#: Appending a name never changes the streams before it.
STREAMS = ("users", "traffic", "auction", "engagement", "advertisers", "review", "mesa")
NEVER = np.iinfo(np.int64).max // 2


def make_streams(seed: int) -> tuple[np.random.SeedSequence, dict[str, np.random.Generator]]:
    root = np.random.SeedSequence(seed)
    children = root.spawn(len(STREAMS))
    return root, {name: np.random.default_rng(child) for name, child in zip(STREAMS, children, strict=True)}


class Market(mesa.Model):
    """A social-commerce ad market; ``step()`` simulates one day.

    Parameters
    ----------
    scenario : Scenario or path to a TOML file
    seed : overrides the scenario's seed
    days : overrides the scenario's number of days
    """

    def __init__(self, scenario: sc.Scenario | str | Path, seed: int | None = None, days: int | None = None):
        if not isinstance(scenario, sc.Scenario):
            scenario = sc.load_scenario(scenario)
        update: dict[str, Any] = {}
        if seed is not None:
            update["seed"] = int(seed)
        if days is not None:
            update["days"] = int(days)
        if update:
            scenario = sc.Scenario.model_validate({**scenario.model_dump(), **update})
        self.config = scenario
        self.seed_sequence, self.streams = make_streams(scenario.seed)
        super().__init__(rng=self.streams["mesa"])
        self.day = 0
        self.calendar = Calendar(scenario)
        self.population = Population(scenario.population, scenario.categories, self.streams["users"])
        specs = expand_advertisers(scenario, self.streams["advertisers"])
        self.advertiser_specs = specs
        self.book = AdBook(scenario, specs, self.streams["advertisers"], scenario.population.taste_dims)
        self.events: list[dict[str, Any]] = []
        self.audience_sizes = self._reachable_audiences()
        self.quality = self._make_quality(specs)
        self.ledger = Ledger(self.book)
        self.feed = Feed(scenario, self.population, self.book, self.quality, self.calendar, self.ledger, self.streams, self.events)
        self.campaign_conversions = np.zeros(self.book.n_campaigns)
        self.ad_cumulative = {k: np.zeros(self.book.n_ads) for k in ("impressions", "clicks", "engagements", "conversions")}
        #: First-party users (sorted ids) who clicked / converted, per advertiser, kept for the
        #: advertisers whose campaigns target or exclude them (custom audiences, lookalikes).
        self.clicked: dict[int, np.ndarray] = {}
        self.converted: dict[int, np.ndarray] = {}
        self._first_party = self._first_party_users()
        #: Brand familiarity: the sorted keys (respond.familiar_key) of every (advertiser, user) pair
        #: with a click or purchase in the last population.familiarity_days days, and the last day of each.
        self._familiar = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32))
        self._update_audiences()
        self._schedule_reviews()
        Advertiser.create_agents(self, len(specs), spec=specs, index=list(range(len(specs))))
        self.advertisers = self.agents_by_type[Advertiser]
        self.traffic_share = self.calendar.hour_curve / self.calendar.hour_curve.sum()
        strategies = [specs[a].strategy for a in self.book.camp_adv]
        self.pacing = PacingBank([st.pacing for st in strategies], [st.pacing_params for st in strategies])
        self.datacollector = mesa.DataCollector(
            model_reporters={
                "sessions": lambda m: m.ledger.sessions,
                "revenue": lambda m: m.ledger.revenue_micro / MICRO,
                "active_advertisers": lambda m: m.active_advertisers(),
            }
        )
        for c in range(self.book.n_campaigns):
            self.log(
                "audience_size",
                f"reachable users: {int(self.audience_sizes[c])} of {self.population.n}",
                self.book.advertiser_names[self.book.camp_adv[c]],
                self.book.camp_name[c],
                hour=0,
            )

    # ------------------------------------------------------------------ the day

    def step(self) -> None:
        """Simulate one calendar day."""
        day = self.day
        date = self.calendar.date(day)
        cond = self.calendar.conditions(day)
        # 0. Dates open and close campaigns; budgets and frequency counts start afresh.
        self.book.start_day(day, date)
        self.feed.start_day(day)
        self._review_day(day)
        if cond.phases:
            self.log("season", ", ".join(cond.phases))
        # 1. Advertisers read yesterday's results and plan today.
        self.advertisers.shuffle_do("plan_day")
        # 2. Each hour: pacing updates, then that hour's sessions are auctioned in bulk.
        share = self.hour_plan(cond)
        for hour in range(24):
            self.pace(hour, share)
            self.feed.serve_hour(day, hour, cond)
        # 3. The platform settles the day: account conversions, over-cost compensation.
        conversions = np.bincount(self.book.ad_camp, weights=self.ledger.obs.conversions, minlength=self.book.n_campaigns)
        self.advertisers.do("settle_day", conversions, self.ledger.campaign_spend_micro())
        # 4. Record the day (with the quality scores that were in force).
        self.ledger.close_day(date, self.quality, self.config.traffic.ad_slots, self.active_advertisers())
        self.datacollector.collect(self)
        self._fold_day()
        # 5. The platform re-scores quality from what users did today.
        self.quality.update(self.ledger.obs)
        self.ledger.reset_day()
        self.day += 1

    def hour_plan(self, cond: Any) -> np.ndarray:
        """Today's expected share of traffic by hour, (24,) summing to 1: the pacing plan (an event may reshape the day)."""
        shares = self.traffic_share * np.asarray(getattr(cond, "hour_factor", np.ones(24)), dtype=np.float64)
        return shares / shares.sum() if shares.sum() > 0 else self.traffic_share

    def pace(self, hour: int, share: np.ndarray) -> None:
        """Start of an hour: every active campaign's pacing controller sets its bid multiplier and participation."""
        book = self.book
        spent_prev = self.ledger.hourly_spend_micro[hour - 1] / MICRO if hour > 0 else None
        mult, throttle = self.pacing.update(
            hour, book.camp_active, book.camp_budget, book.spent_today / MICRO, spent_prev, share, book.camp_exhausted
        )
        active = book.camp_active
        book.camp_pace_mult[active] = mult[active]
        book.camp_throttle[active] = throttle[active]

    def run(self, days: int | None = None, progress: Any = None) -> None:
        """Step through the remaining days (``progress``: a callable called after each day)."""
        end = self.config.days if days is None else min(self.config.days, self.day + days)
        while self.day < end:
            self.step()
            if progress is not None:
                progress(self.day)

    # ------------------------------------------------------------------ pieces

    def log(self, kind: str, detail: str, advertiser: str = "", campaign: str = "", hour: int = 0) -> None:
        self.events.append(
            {
                "date": self.calendar.date(min(self.day, self.config.days - 1)),
                "hour": hour,
                "advertiser": advertiser,
                "campaign": campaign,
                "kind": kind,
                "detail": detail,
            }
        )

    def active_advertisers(self) -> int:
        return int(np.unique(self.book.camp_adv[self.book.camp_active]).size)

    def _fold_day(self) -> None:
        """Cumulative counts, and the day's clickers and converters into each advertiser's audiences."""
        obs = self.ledger.obs
        self.campaign_conversions += np.bincount(self.book.ad_camp, weights=obs.conversions, minlength=self.book.n_campaigns)
        for k in self.ad_cumulative:
            self.ad_cumulative[k] += getattr(obs, k)
        n = self.population.n
        for kind, store, batches in (("clicked", self.clicked, self.feed.clicked), ("converted", self.converted, self.feed.converted)):
            wanted = self._first_party[kind]
            if not batches or wanted.size == 0:
                continue
            keys = np.concatenate([b[0].astype(np.int64) * n + b[1] for b in batches])
            keys = np.unique(keys[np.isin(keys // n, wanted)])
            adv = keys // n
            bounds = np.searchsorted(adv, wanted), np.searchsorted(adv, wanted, side="right")
            for a, lo, hi in zip(wanted, *bounds, strict=True):
                if hi > lo:
                    new = (keys[lo:hi] % n).astype(np.int32)
                    old = store.get(int(a))
                    store[int(a)] = new if old is None else np.union1d(old, new).astype(np.int32)
        # Brand familiarity (ground truth) fades: it lasts population.familiarity_days after a click or purchase.
        keep = self.config.population.familiarity_days
        if keep:
            today = [respond.familiar_key(adv, users) for adv, users in (*self.feed.clicked, *self.feed.converted)]
            self._familiar = kernels.merge_seen(*self._familiar, _sorted_set(today), self.day, self.day - keep)
            self.feed.familiar_keys = self._familiar[0]
        self._update_audiences()

    def _first_party_users(self) -> dict[str, np.ndarray]:
        """The advertisers (sorted) whose campaigns use their clickers, and their converters.

        A campaign's targeting counts from the start or from any scheduled edit, so the lists are
        complete when an edit switches an audience on mid-run.
        """
        used: dict[str, set[int]] = {"clicked": set(), "converted": set()}
        for c, camp in enumerate(self._campaign_specs()):
            for t in [camp.targeting, *(e.targeting for e in camp.edits if e.targeting is not None)]:
                for source in (t.custom_audience, t.lookalike.seed if t.lookalike is not None else None, t.exclude):
                    if source is not None:
                        used[source].add(int(self.book.camp_adv[c]))
        return {k: np.array(sorted(v), dtype=np.int64) for k, v in used.items()}

    def _update_audiences(self) -> None:
        """Custom audiences, lookalikes and exclusions from the advertisers' first-party users."""
        book = self.book
        for c, camp in enumerate(self._campaign_specs()):
            t = camp.targeting
            a = int(book.camp_adv[c])
            before = book.camp_audience[c]
            if t.custom_audience is not None:
                book.camp_audience_mode[c] = 1
                book.camp_audience[c] = (self.clicked if t.custom_audience == "clicked" else self.converted).get(a)
            elif t.lookalike is not None:
                book.camp_audience_mode[c] = 1
                seed_users = (self.clicked if t.lookalike.seed == "clicked" else self.converted).get(a)
                if seed_users is not None and seed_users.size >= 20:
                    lal = t.lookalike
                    ratio = lal.ratio if lal.size is None else min(1.0, lal.size / self.population.n)
                    book.camp_audience[c] = self.lookalike(seed_users, ratio, exclude=seed_users if lal.exclude_seed else None)
            if t.exclude is not None:
                book.camp_audience_mode[c] = max(book.camp_audience_mode[c], 0) or -1
                book.camp_exclusion[c] = (self.clicked if t.exclude == "clicked" else self.converted).get(a)
            aud = book.camp_audience[c]
            if book.camp_audience_mode[c] == 1 and aud is not None and (before is None or before.size != aud.size):
                self.log("audience_size", f"audience now {aud.size} users", book.advertiser_names[a], book.camp_name[c], hour=23)

    def lookalike(self, seed_users: np.ndarray, ratio: float, exclude: np.ndarray | None = None) -> np.ndarray:
        """The ``ratio`` share of users most similar to the seed (cosine of interest affinities), sorted ids.

        Only what a platform observes (interests) enters the similarity, never the latent taste.
        ``exclude`` (sorted ids) leaves those users out, e.g. the seed itself for prospecting.
        """
        aff = self.population.affinity
        centroid = aff[seed_users].mean(axis=0)
        centroid /= np.linalg.norm(centroid) + 1e-12
        norms = np.sqrt((aff.astype(np.float64) ** 2).sum(axis=1)) + 1e-12
        score = (aff.astype(np.float64) * centroid).sum(axis=1) / norms
        if exclude is not None and exclude.size:
            score[exclude] = -np.inf
        k = max(1, int(ratio * self.population.n))
        top = np.argpartition(-score, k - 1)[:k]
        return np.sort(top).astype(np.int32)

    def _campaign_specs(self) -> list[sc.Campaign]:
        return [camp for adv in self.advertiser_specs for camp in adv.campaigns]

    def _reachable_audiences(self) -> np.ndarray:
        """Users each campaign's demographic and interest targeting admits: shape (n_campaigns,).

        Counted once per distinct targeting, over blocks of users (kernels.admitted's counts).
        """
        pop, book = self.population, self.book
        group, first = book.targeting_groups()
        seg_ok, bits = book.camp_seg_ok[first], book.camp_interest_bits[first]
        counts = np.zeros(first.size, dtype=np.int64)
        block = 1 << 17
        tables = kernels.admit_tables(seg_ok, bits) if kernels.HAVE_NUMBA else None
        for lo in range(0, pop.n, block):
            users = np.arange(lo, min(lo + block, pop.n), dtype=np.int32)
            counts += kernels.admitted(seg_ok, bits, users, pop.segment, pop.interest_bits, tables)[1]
        return counts[group].astype(np.float64)

    def _make_quality(self, specs: list[sc.Advertiser]) -> QualityModel:
        """Quality priors: the review's reading of content, relevance over the reachable audience."""
        book, pop = self.book, self.population
        rng = self.streams["review"]
        reading = np.clip(book.ad_content + rng.normal(0.0, self.config.quality.review_noise, book.n_ads), 0.0, 1.0)
        sample = rng.choice(pop.n, size=min(pop.n, 20_000), replace=False)
        segments, interests = pop.segment[sample], pop.interest_bits[sample]
        rel_prior = np.zeros(book.n_ads)
        means: dict[tuple[bytes, int, int], float] = {}  # ads of one topic to one audience share their prior
        for a in range(book.n_ads):
            c = book.ad_camp[a]
            key = (book.camp_seg_ok[c].tobytes(), int(book.camp_interest_bits[c]), int(book.ad_topic[a]))
            if key not in means:
                ok = book.camp_seg_ok[c][segments]
                if book.camp_interest_bits[c]:
                    ok &= (interests & book.camp_interest_bits[c]) != 0
                users = sample[ok] if ok.any() else sample
                means[key] = float(pop.affinity[users, book.ad_topic[a]].mean())
            rel_prior[a] = means[key]
        initial = np.array([np.nan if camp.initial_quality is None else camp.initial_quality for camp in self._campaign_specs()])
        return QualityModel(
            self.config.quality,
            content_reading=reading,
            relevance_prior=rel_prior,
            has_landing=~np.isnan(book.camp_landing[book.ad_camp]),
            advertiser_idx=book.ad_adv,
            initial_quality=initial[book.ad_camp],
            followers=np.array([s.account.followers for s in specs], dtype=np.float64),
            age_days=np.array([s.account.age_days for s in specs], dtype=np.float64),
            consistency=np.array([s.account.posting_consistency for s in specs], dtype=np.float64),
        )

    # ------------------------------------------------------------------ review

    def _schedule_reviews(self) -> None:
        """Creatives running on day one start approved (unless review_at_start); later ones wait for review."""
        book = self.book
        needs = (book.ad_start_day > 0) | self.config.review_at_start
        book.ad_approved_at = np.where(needs, NEVER, book.ad_start_day.astype(np.int64) * 24)
        self._review_due = np.where(needs, book.ad_start_day, -1).astype(np.int64)
        self._risk = book.ad_risk.copy()

    def _review_day(self, day: int) -> None:
        book = self.book
        rng = self.streams["review"]
        specs = self._campaign_specs()
        for a in np.flatnonzero(self._review_due == day):
            c = int(book.ad_camp[a])
            u_reject, u_delay = rng.random(2)
            rejected, delay = review_outcome(float(self.quality.qs[a]), float(self._risk[a]), u_reject, u_delay)
            adv = book.advertiser_names[book.ad_adv[a]]
            if rejected:
                book.ad_rejected[a] = True
                self.log("creative_rejected", f"{book.ad_name[a]}: compliance risk {self._risk[a]:.2f}", adv, book.camp_name[c])
                if specs[c].resubmit_rejected:
                    self._risk[a] *= 0.5
                    self._review_due[a] = day + 1
                    self.log("creative_resubmitted", f"{book.ad_name[a]}: fixed (risk {self._risk[a]:.2f}), back in review tomorrow", adv, book.camp_name[c])
                else:
                    self._review_due[a] = -1
            else:
                book.ad_rejected[a] = False
                book.ad_approved_at[a] = day * 24 + delay
                self._review_due[a] = -1
                self.log(
                    "creative_approved",
                    f"{book.ad_name[a]}: approved after {delay} h (QS {self.quality.qs[a]:.1f}, risk {self._risk[a]:.2f})",
                    adv,
                    book.camp_name[c],
                )

    # ------------------------------------------------------------------ results

    def tables(self) -> dict[str, Any]:
        """The run's tables so far as DataFrames."""
        import pandas as pd

        tables = self.ledger.tables()
        events = pd.DataFrame(self.events, columns=["date", "hour", "advertiser", "campaign", "kind", "detail"])
        events["date"] = pd.to_datetime(events["date"]).astype("datetime64[s]")
        events["hour"] = events["hour"].astype(np.int16)
        tables["events"] = events
        for name in ("advertiser_daily", "advertiser_hourly", "creative_daily"):
            if len(tables[name]):
                tables[name]["date"] = tables[name]["date"].astype("datetime64[s]")
        if len(tables["market_daily"]):
            tables["market_daily"]["date"] = tables["market_daily"]["date"].astype("datetime64[s]")
        return tables

    @property
    def date(self) -> dt.date:
        return self.calendar.date(self.day)


def _sorted_set(arrays: list[np.ndarray]) -> np.ndarray:
    """The distinct values of ``arrays`` (int64), sorted."""
    if not arrays:
        return np.zeros(0, dtype=np.int64)
    a = np.concatenate(arrays).astype(np.int64, copy=False)
    a.sort()  # (numpy's vectorized quicksort: several times a stable sort's speed on random keys)
    return a[np.r_[True, a[1:] != a[:-1]]] if a.size else a
