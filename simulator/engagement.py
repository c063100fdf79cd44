"""Engagement: the ground truth of what users do with an ad they are shown.

Hidden from the platform.  Given one array entry per impression (relevance,
creative attributes, slot view factor, frequency, the day's purchase intent):
the true probability of each outcome, and the outcomes drawn from uniforms:
click, like, comment, save, share, follow, video completion, conversion and
bounce.  Pure functions of arrays; no state.  ``simulator.respond`` evaluates
the same formulas operation for operation in its compiled pass; the feed draws
conversions' order values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from simulator import kernels

FloatArray = NDArray[np.float64]


#: Logit lift of click and conversion for users who clicked or bought from the advertiser before
#: (retargeting works because familiarity is real, not because the platform says so).
FAMILIAR_CLICK = 0.4
FAMILIAR_CONVERSION = 0.8


def sigmoid(z: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + kernels.c_math("exp", -np.asarray(z, dtype=np.float64)))


def content_quality(production: FloatArray, authenticity: FloatArray, localization: FloatArray, vertical: FloatArray) -> FloatArray:
    """True content quality of a creative in [0, 1]: production value, UGC-likeness,
    localization and a vertical (mobile-first) format."""
    return 0.30 * production + 0.35 * authenticity + 0.20 * localization + 0.15 * vertical


@dataclass
class Impressions:
    """Inputs of one batch of impressions (all arrays of shape (n,))."""

    relevance: FloatArray  # true relevance in [0, 1]
    content: FloatArray  # true content quality in [0, 1]
    authenticity: FloatArray
    is_video: NDArray[np.bool_]
    vertical: FloatArray
    landing: FloatArray  # landing-page quality in [0, 1], NaN where the ad has none
    view: FloatArray  # slot view factor
    frequency: FloatArray  # earlier impressions of this ad to this user today
    wear: FloatArray  # creative wear-out: log1p of its lifetime impressions per thousand reached users
    intent: float  # the day's purchase-intent multiplier
    familiar: NDArray[np.bool_] | None = None  # the user clicked or bought from this advertiser before


@dataclass
class Outcomes:
    """What happened at each impression (arrays of shape (n,))."""

    click: NDArray[np.bool_]
    like: NDArray[np.bool_]
    comment: NDArray[np.bool_]
    save: NDArray[np.bool_]
    share: NDArray[np.bool_]
    follow: NDArray[np.bool_]
    video_completion: NDArray[np.bool_]
    conversion: NDArray[np.bool_]
    bounce: NDArray[np.bool_]
    order_value: FloatArray

    @property
    def engagement(self) -> NDArray[np.bool_]:
        """Any of like, comment, save or share: the CPE billing event."""
        return self.like | self.comment | self.save | self.share


def probabilities(imp: Impressions) -> dict[str, FloatArray]:
    """True probability of each outcome per impression (click, conversion and bounce given click)."""
    rel = imp.relevance
    # Users who already know the brand (clicked or bought before) come back more readily.
    known = np.zeros(len(rel)) if imp.familiar is None else imp.familiar.astype(np.float64)
    fatigue = 0.35 * kernels.c_math("log1p", imp.frequency) + 0.12 * imp.wear
    auth = imp.authenticity - 0.5
    content = imp.content - 0.5
    view = imp.view
    p = {
        "click": view * sigmoid(-4.8 + 2.4 * rel + 1.6 * content + FAMILIAR_CLICK * known - fatigue),
        "like": view * sigmoid(-4.6 + 2.0 * rel + 1.4 * auth + 1.0 * content - fatigue),
        "save": view * sigmoid(-5.2 + 2.2 * rel + 0.8 * auth + 1.4 * content - fatigue),
        "comment": view * sigmoid(-6.6 + 1.8 * rel + 1.8 * auth - fatigue),
        "share": view * sigmoid(-6.9 + 2.0 * rel + 1.2 * auth + 0.8 * content - fatigue),
        "follow": view * sigmoid(-7.2 + 1.6 * rel + 1.6 * auth - fatigue),
        "video_completion": np.where(
            imp.is_video, view * sigmoid(-1.6 + 1.8 * rel + 1.0 * auth + 0.6 * imp.vertical - fatigue), 0.0
        ),
    }
    has_landing = ~np.isnan(imp.landing)
    landing = np.where(has_landing, imp.landing, 0.6) - 0.5
    p["conversion"] = np.minimum(
        1.0, imp.intent * sigmoid(-5.6 + 1.8 * rel + 2.2 * landing + 0.6 * content + FAMILIAR_CONVERSION * known)
    )
    p["bounce"] = np.where(has_landing, sigmoid(0.4 - 3.5 * landing - 1.2 * rel), 0.0)
    return p


def draw(p: dict[str, FloatArray], u: FloatArray) -> dict[str, NDArray[np.bool_]]:
    """Outcomes from the probabilities ``p`` and uniforms ``u`` (n, 10), one row per impression.

    Conversion and bounce are conditional on a click; bounce excludes conversion.
    """
    click = u[:, 0] < p["click"]
    conversion = click & (u[:, 7] < p["conversion"])
    return {
        "click": click,
        "like": u[:, 1] < p["like"],
        "comment": u[:, 2] < p["comment"],
        "save": u[:, 3] < p["save"],
        "share": u[:, 4] < p["share"],
        "follow": u[:, 5] < p["follow"],
        "video_completion": u[:, 6] < p["video_completion"],
        "conversion": conversion,
        "bounce": click & ~conversion & (u[:, 8] < p["bounce"]),
    }
