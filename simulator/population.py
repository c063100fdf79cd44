"""The users: a vectorized population and the sessions it opens.

Owns each user's attributes as numpy arrays (never one Python object per user):
gender, age band, city tier, device, interest affinities over the categories,
a latent taste vector (ground truth only: the platform never sees it) and a
personal activity rate.  Draws which users open the sessions of an hour.
"""

from __future__ import annotations

import numpy as np

from simulator import kernels
from simulator import scenario as sc

# How much more (or less) each gender cares for a category than average
# (the female skew of the platform's content: beauty, fashion, parenting).
_GENDER_TILT = {
    "beauty": (1.8, 0.35),
    "fashion": (1.5, 0.6),
    "parenting": (1.3, 0.5),
    "luxury": (1.2, 0.8),
    "tech": (0.6, 1.8),
    "fitness": (0.9, 1.4),
    "travel": (1.0, 1.0),
    "food": (1.1, 1.0),
    "home": (1.1, 0.8),
    "pets": (1.1, 0.8),
}

#: Affinity (0..1, relative to the user's top interest) above which a user counts
#: as interested in a category for interest targeting.
INTEREST_THRESHOLD = 0.35
N_SEGMENTS = 2 * len(sc.AGE_BANDS) * len(sc.CITY_TIERS) * len(sc.DEVICES)


def segment_of(gender: np.ndarray, age: np.ndarray, tier: np.ndarray, device: np.ndarray) -> np.ndarray:
    """Demographic segment id (0..47) from gender, age band, city tier and device codes."""
    return (((gender.astype(np.int16) * 4 + age) * 3 + tier) * 2 + device).astype(np.int16)


class Population:
    """All users of a run as struct-of-arrays.

    Attributes
    ----------
    gender : int8 (n,)  0 female, 1 male
    age : int8 (n,)     index into AGE_BANDS
    tier : int8 (n,)    0 = tier 1, 1 = tier 2, 2 = tier 3+
    device : int8 (n,)  0 android, 1 iOS
    segment : int16 (n,) demographic segment id
    affinity : float32 (n, n_categories) interest in each category relative to the user's top one, in [0, 1]
    interest_bits : int64 (n,) bit c set when affinity[:, c] >= INTEREST_THRESHOLD
    taste : float32 (n, taste_dims) latent taste (ground truth only)
    """

    def __init__(self, spec: sc.Population, categories: list[str], rng: np.random.Generator):
        n = spec.users
        self.n = n
        self.categories = categories
        self.gender = (rng.random(n, dtype=np.float32) >= spec.female_share).astype(np.int8)
        self.age = rng.choice(len(sc.AGE_BANDS), size=n, p=spec.age_shares).astype(np.int8)
        self.tier = rng.choice(len(sc.CITY_TIERS), size=n, p=spec.city_tier_shares).astype(np.int8)
        self.device = (rng.random(n, dtype=np.float32) < spec.ios_share).astype(np.int8)
        self.segment = segment_of(self.gender, self.age, self.tier, self.device)

        # (The million-row tables are computed in place or straight into their huge-page tables
        # (kernels.hot_zeros): each fresh temporary's pages cost their faults, on a VM also the host's.)
        tilt = np.array([_GENDER_TILT.get(c, (1.0, 1.0)) for c in categories], dtype=np.float32)  # (C, 2)
        alpha = tilt[:, self.gender]  # (C, n): each user's tilt by gender
        alpha *= spec.interest_concentration
        raw = rng.standard_gamma(alpha.T, dtype=np.float32)  # (n, C)
        del alpha
        raw += np.float32(1e-12)
        self.affinity = kernels.hot_zeros(raw.shape, np.float32)  # read per impression
        np.divide(raw, raw.max(axis=1, keepdims=True), out=self.affinity)
        del raw
        # Read at random by every session's targeting: on huge pages (kernels.hot_zeros), values unchanged.
        self.segment = kernels.hot_copy(self.segment)
        self.interest_bits = kernels.hot_zeros(n, np.int64)
        for c in range(len(categories)):
            self.interest_bits |= (self.affinity[:, c] >= INTEREST_THRESHOLD).astype(np.int64) << c
        self.taste = kernels.hot_zeros((n, spec.taste_dims), np.float32)
        # (divided in float64 by the float64 root, then rounded to float32)
        np.divide(rng.standard_normal((n, spec.taste_dims), dtype=np.float32), np.sqrt(spec.taste_dims), out=self.taste)
        # Personal activity: some users open many more sessions than others.
        activity = rng.lognormal(0.0, 0.6, size=n)
        self._cdf = np.cumsum(activity / activity.sum())
        self._cdf[-1] = 1.0
        # Read at random by every session's search: on huge pages (kernels.hot_copy), like the user tables.
        self._cdf = kernels.hot_copy(self._cdf)
        self._guide = kernels.hot_copy(kernels.cdf_guide(self._cdf))

    def draw_sessions(self, n_sessions: int, rng: np.random.Generator) -> np.ndarray:
        """User index of each of ``n_sessions`` sessions, in time order (int32)."""
        # Each session's user by its uniform: i.i.d. draws, already in a random time order.
        u = rng.random(n_sessions)
        return np.minimum(kernels.search_cdf(self._cdf, self._guide, u), self.n - 1).astype(np.int32)

    def segment_counts(self) -> np.ndarray:
        """Users per demographic segment: shape (48,)."""
        return np.bincount(self.segment, minlength=N_SEGMENTS)

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes
            for a in (
                self.gender,
                self.age,
                self.tier,
                self.device,
                self.segment,
                self.affinity,
                self.interest_bits,
                self.taste,
                self._cdf,
                self._guide,
            )
        )
