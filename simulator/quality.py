"""Quality score: the platform's 1-10 rating of each ad and its predicted rates.

Owns, per ad (one creative of one campaign), the six factors of DESIGN.md
section 5 and the platform's predicted rates (pCTR, pEngage, pCVR), learned
from what the platform observed by shrinkage toward category priors.  Updated
once a day from the day's observations; with ``quality.dynamic = false`` it
never changes.  It sees only what a platform can observe: never the users'
latent taste nor the true probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from simulator import kernels
from simulator.scenario import Quality as QualitySpec

FACTORS = ("relevance", "history", "content", "engagement", "landing", "reputation")
FACTOR_COLUMNS = tuple(f"qs_{f}" for f in FACTORS)

#: Platform priors (benchmarks): position- and relevance-normalised rates of an
#: average ad (measured on the baseline scenario: sum of events / sum of
#: relevance_lift x view factor).  Category benchmarks are the same numbers: the engagement
#: model treats categories alike, so a per-category table would repeat these.
PRIOR_CTR = 0.025
PRIOR_ENGAGE = 0.040  # any of like, comment, save, share
PRIOR_WENGAGE = 0.062  # weighted engagements per impression
PRIOR_CVR = 0.013  # conversions per click
NEUTRAL_LANDING = 0.6


def relevance_lift(rel: NDArray[np.floating], out: NDArray[np.floating] | None = None) -> NDArray[np.floating]:
    """The platform's model of how observed relevance (0..1) scales an ad's rates (1 at 0.5):
    ``exp(2 (rel - 0.5))``, in ``rel``'s precision, or written into the array ``out`` (in its dtype,
    without temporaries)."""
    if out is None:
        return np.exp(2.0 * (rel - 0.5))
    np.subtract(rel, 0.5, out=out)
    out *= 2.0
    return np.exp(out, out=out)


def quality_score(factors: NDArray[np.float64], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """``QS = 1 + 9 x sum(w_i x f_i)``, clipped to [1, 10].

    Parameters
    ----------
    factors : ndarray (n_ads, 6), each in [0, 1]
    weights : ndarray (6,), summing to 1
    """
    return np.clip(1.0 + 9.0 * factors @ weights, 1.0, 10.0)


def ratio_factor(ratio: NDArray[np.float64]) -> NDArray[np.float64]:
    """Map a rate relative to its benchmark (1 = on par) to a factor in [0, 1): r / (1 + r)."""
    r = np.maximum(ratio, 0.0)
    return r / (1.0 + r)


def reputation_factor(followers: NDArray[np.float64], age_days: NDArray[np.float64], consistency: NDArray[np.float64]) -> NDArray[np.float64]:
    """Account reputation from followers (log scale, 1M = full), account age (2 years = full) and posting."""
    f = np.clip(kernels.c_math("log10", 1.0 + np.asarray(followers, dtype=np.float64)) / 6.0, 0.0, 1.0)
    a = np.clip(age_days / 730.0, 0.0, 1.0)
    return 0.55 * f + 0.25 * a + 0.20 * np.clip(consistency, 0.0, 1.0)


@dataclass
class AdStats:
    """What the platform observed of each ad over some period (arrays of shape (n_ads,))."""

    n: int
    impressions: NDArray[np.float64] = field(init=False)
    exposure: NDArray[np.float64] = field(init=False)  # sum of relevance_lift x view factor over impressions
    clicks: NDArray[np.float64] = field(init=False)
    click_exposure: NDArray[np.float64] = field(init=False)  # sum of relevance_lift over clicks
    engagements: NDArray[np.float64] = field(init=False)  # impressions with any like/comment/save/share
    weighted_engagements: NDArray[np.float64] = field(init=False)
    conversions: NDArray[np.float64] = field(init=False)
    bounces: NDArray[np.float64] = field(init=False)
    relevance_sum: NDArray[np.float64] = field(init=False)
    follows: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        for name in self.names():
            setattr(self, name, np.zeros(self.n))

    @staticmethod
    def names() -> list[str]:
        return [
            "impressions",
            "exposure",
            "clicks",
            "click_exposure",
            "engagements",
            "weighted_engagements",
            "conversions",
            "bounces",
            "relevance_sum",
            "follows",
        ]

    def add(self, other: AdStats) -> None:
        for name in self.names():
            getattr(self, name).__iadd__(getattr(other, name))


class QualityModel:
    """Quality factors, scores and predicted rates of every ad.

    Parameters
    ----------
    spec : the scenario's ``[quality]`` table
    content_reading : ndarray (n_ads,) the platform's review of each creative's content quality
    relevance_prior : ndarray (n_ads,) expected observed relevance over each ad's reachable audience
    has_landing : ndarray (n_ads,) bool
    advertiser_idx : ndarray (n_ads,) int
    initial_quality : ndarray (n_ads,) starting QS, NaN where the scenario gives none
    followers, age_days, consistency : ndarray (n_advertisers,) the accounts
    """

    def __init__(
        self,
        spec: QualitySpec,
        content_reading: NDArray[np.float64],
        relevance_prior: NDArray[np.float64],
        has_landing: NDArray[np.bool_],
        advertiser_idx: NDArray[np.intp],
        initial_quality: NDArray[np.float64],
        followers: NDArray[np.float64],
        age_days: NDArray[np.float64],
        consistency: NDArray[np.float64],
    ):
        n = len(content_reading)
        self.spec = spec
        self.n = n
        self.weights = np.array([getattr(spec.weights, f) for f in FACTORS])
        ew = spec.engagement_weights
        self.engagement_weights = {"like": ew.like, "save": ew.save, "comment": ew.comment, "share": ew.share, "follow": ew.follow}
        self.advertiser_idx = np.asarray(advertiser_idx)
        self.has_landing = np.asarray(has_landing, dtype=bool)
        self.followers = np.asarray(followers, dtype=np.float64).copy()
        self.age_days = np.asarray(age_days, dtype=np.float64).copy()
        self.consistency = np.asarray(consistency, dtype=np.float64)
        n_adv = len(self.followers)
        self.cumulative = AdStats(n)
        # Accounts: observed CTR and weighted engagement, start on par with the benchmark.
        self.account_clicks = np.zeros(n_adv)
        self.account_exposure = np.zeros(n_adv)
        self.account_wengage = np.zeros(n_adv)
        self.k = float(spec.prior_strength)
        self.k_cvr = max(self.k / 20.0, 1.0)

        self.factors = np.zeros((n, len(FACTORS)))
        self.factors[:, 0] = np.clip(relevance_prior, 0.0, 1.0)
        self.factors[:, 1] = 0.5
        self.factors[:, 2] = np.clip(content_reading, 0.0, 1.0)
        self.factors[:, 3] = 0.5
        self.factors[:, 4] = NEUTRAL_LANDING
        self.factors[:, 5] = reputation_factor(self.followers, self.age_days, self.consistency)[self.advertiser_idx]
        given = ~np.isnan(initial_quality)
        if given.any():
            # A scenario's initial_quality sets every factor to the level that gives it.
            self.factors[given, :] = ((initial_quality[given] - 1.0) / 9.0)[:, None]
        self.ctr_hat = np.full(n, PRIOR_CTR)
        self.engage_hat = np.full(n, PRIOR_ENGAGE)
        self.cvr_hat = np.full(n, PRIOR_CVR)
        self.qs = quality_score(self.factors, self.weights)

    @property
    def dynamic(self) -> bool:
        return self.spec.dynamic

    def update(self, today: AdStats) -> None:
        """End of day: fold today's observations into the predicted rates and the six factors."""
        if not self.spec.dynamic:
            return
        lam = self.spec.smoothing
        cum = self.cumulative
        cum.add(today)
        k, kc = self.k, self.k_cvr
        self.ctr_hat = (cum.clicks + k * PRIOR_CTR) / (cum.exposure + k)
        self.engage_hat = (cum.engagements + k * PRIOR_ENGAGE) / (cum.exposure + k)
        self.cvr_hat = (cum.conversions + kc * PRIOR_CVR) / (cum.click_exposure + kc)
        wengage_hat = (cum.weighted_engagements + k * PRIOR_WENGAGE) / (cum.exposure + k)

        shown = today.impressions > 0
        f = self.factors
        # 1. relevance: smoothed mean observed relevance of the users it was shown to.
        mean_rel = np.divide(today.relevance_sum, today.impressions, out=np.zeros(self.n), where=shown)
        f[shown, 0] = (1 - lam) * f[shown, 0] + lam * mean_rel[shown]
        # 2. history: the account's CTR and engagement vs the benchmark (position- and relevance-normalised).
        adv = self.advertiser_idx
        n_adv = len(self.followers)
        self.account_clicks += np.bincount(adv, weights=today.clicks, minlength=n_adv)
        self.account_exposure += np.bincount(adv, weights=today.exposure, minlength=n_adv)
        self.account_wengage += np.bincount(adv, weights=today.weighted_engagements, minlength=n_adv)
        acct_ctr = (self.account_clicks + k * PRIOR_CTR) / (self.account_exposure + k)
        acct_weng = (self.account_wengage + k * PRIOR_WENGAGE) / (self.account_exposure + k)
        history = ratio_factor(0.5 * (acct_ctr / PRIOR_CTR + acct_weng / PRIOR_WENGAGE))
        f[:, 1] = (1 - lam) * f[:, 1] + lam * history[adv]
        # 3. content: the review's reading does not change.
        # 4. engagement: the ad's own shrinkage estimate vs the benchmark.
        f[:, 3] = (1 - lam) * f[:, 3] + lam * ratio_factor(wengage_hat / PRIOR_WENGAGE)
        # 5. landing page: 1 - smoothed bounce rate, where it had clicks.
        landed = self.has_landing & (today.clicks > 0)
        bounce_rate = np.divide(today.bounces, today.clicks, out=np.zeros(self.n), where=today.clicks > 0)
        f[landed, 4] = (1 - lam) * f[landed, 4] + lam * (1.0 - bounce_rate[landed])
        # 6. reputation: followers grow with follows; the account ages a day.
        self.followers += np.bincount(adv, weights=today.follows, minlength=n_adv)
        self.age_days += 1.0
        rep = reputation_factor(self.followers, self.age_days, self.consistency)
        f[:, 5] = (1 - lam) * f[:, 5] + lam * rep[adv]
        np.clip(f, 0.0, 1.0, out=f)
        self.qs = quality_score(f, self.weights)

    def gate(self, min_quality: float) -> NDArray[np.float64]:
        """Share of its auctions each ad may enter: ``(QS / min_quality)^2`` below the minimum, else 1."""
        return np.minimum(1.0, (self.qs / min_quality) ** 2) if min_quality > 0 else np.ones(self.n)


def review_outcome(qs: float, risk: float, u_reject: float, u_delay: float) -> tuple[bool, int]:
    """Review of a new creative: (rejected, delay in hours).

    Rejection probability grows with compliance risk (0.02 at no risk, 0.62 at
    full risk); the delay shrinks with QS and grows with risk: a mean of
    ``4 + 40 x risk`` hours at QS 10, three times that at QS 1, exponential.
    """
    p_reject = 0.02 + 0.6 * risk**1.5
    mean_hours = (4.0 + 40.0 * risk) * (1.0 + 2.0 * (10.0 - qs) / 9.0)
    delay = int(math.ceil(-math.log(max(1e-12, 1.0 - u_delay)) * mean_hours))
    return u_reject < p_reject, delay
