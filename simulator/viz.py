"""Interactive exploration: a Mesa ``SolaraViz`` page with sliders for a few market knobs and live plots.

Run it in a browser with ``solara run simulator/viz.py`` (extra ``viz``), or show
``make_page()`` as the last expression of a notebook cell.  Each *Step* simulates
one day; *Reset* rebuilds the market from the sliders.

The page drives :class:`MarketExplorer`, a :class:`~simulator.market.Market`
built from keyword knobs (Mesa's controller re-creates the model from them),
and draws with the ordinary plot functions of :mod:`simulator.plots` from the
tables the market has written so far.  The ``figure_*`` functions are plain
(no Solara) so they can be tested and reused; this module never changes how a
market runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from simulator import plots
from simulator.market import Market
from simulator.scenario import Scenario, parse_scenario

#: The sliders: Mesa ``model_params`` (keys are MarketExplorer keyword arguments).
MODEL_PARAMS: dict[str, Any] = {
    "users": {"type": "SliderInt", "value": 5_000, "label": "users", "min": 2_000, "max": 50_000, "step": 1_000},
    "days": {"type": "SliderInt", "value": 14, "label": "days", "min": 2, "max": 30, "step": 1},
    "reserve_ecpm": {"type": "SliderFloat", "value": 8.0, "label": "reserve price (yuan eCPM)", "min": 0.0, "max": 80.0, "step": 2.0},
    "min_quality": {"type": "SliderFloat", "value": 3.0, "label": "quality gate (min QS)", "min": 1.0, "max": 8.0, "step": 0.5},
    "seasonal_share": {"type": "SliderFloat", "value": 0.5, "label": "share of seasonal advertisers", "min": 0.0, "max": 1.0, "step": 0.1},
    "singles_day": {"type": "Checkbox", "value": True, "label": "run through Singles' Day (from 1 Nov)"},
    "seed": {"type": "SliderInt", "value": 7, "label": "seed", "min": 0, "max": 99, "step": 1},
}


def explorer_scenario(
    users: int = 5_000,
    days: int = 14,
    reserve_ecpm: float = 8.0,
    min_quality: float = 3.0,
    seasonal_share: float = 0.5,
    singles_day: bool = True,
    seed: int = 7,
) -> Scenario:
    """A small market of generated advertisers: the knobs of the page, everything else default."""
    data: dict[str, Any] = {
        "name": "explorer",
        "seed": int(seed),
        "start_date": "2026-11-01" if singles_day else "2026-09-07",
        "days": int(days),
        "population": {"users": int(users)},
        "auction": {"reserve_ecpm": float(reserve_ecpm), "min_quality": float(min_quality)},
        "calendar": {"events": [{"preset": "singles_day"}] if singles_day else []},
        "generate": [
            {
                "count": 16,
                "categories": ["beauty", "fashion", "food", "home"],
                "daily_budget": {"lognormal": [6.6, 0.5]},
                "pacing": {"even": 0.6, "asap": 0.2, "adaptive": 0.2},
                "seasonal_share": float(seasonal_share) if singles_day else 0.0,
                **({"seasonal_event": "singles_day"} if singles_day else {}),
            }
        ],
    }
    return parse_scenario(data, "explorer")


class MarketExplorer(Market):
    """A Market made from the page's knobs; it stops (``running = False``) after its last day."""

    def __init__(
        self,
        users: int = 5_000,
        days: int = 14,
        reserve_ecpm: float = 8.0,
        min_quality: float = 3.0,
        seasonal_share: float = 0.5,
        singles_day: bool = True,
        seed: int = 7,
    ):
        super().__init__(explorer_scenario(users, days, reserve_ecpm, min_quality, seasonal_share, singles_day, seed))

    def step(self) -> None:
        if self.day >= self.config.days:
            self.running = False
            return
        super().step()
        self.running = self.day < self.config.days


def _figure(size: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _waiting(ax: Any) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, "press Step to simulate the first day", ha="center", va="center", transform=ax.transAxes)


def figure_prices(model: Market) -> Figure:
    """Market CPM, CPC and CPA per day so far, season phases shaded."""
    fig, ax = _figure((7, 5.5))
    tables = model.tables() if model.day else None
    if tables is None or not tables["advertiser_daily"]["impressions"].sum():
        _waiting(ax)
        return fig
    plots.plot_prices(tables["advertiser_daily"], tables["events"], ax=ax)
    return fig


def figure_spend(model: Market) -> Figure:
    """Daily spend vs budget of the top four spenders so far."""
    fig, ax = _figure((7, 4.5))
    tables = model.tables() if model.day else None
    if tables is None or not tables["advertiser_daily"]["spend"].sum():
        _waiting(ax)
        return fig
    plots.plot_spend_vs_budget(tables["advertiser_daily"], n=4, ax=ax)
    return fig


def figure_quality(model: Market) -> Figure:
    """Quality scores of the top spenders and what they are made of."""
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    tables = model.tables() if model.day else None
    if tables is None or not tables["advertiser_daily"]["impressions"].sum():
        _waiting(left)
        right.axis("off")
        return fig
    daily = tables["advertiser_daily"]
    plots.plot_quality(daily, n=5, ax=left, min_quality=model.config.auction.min_quality)
    plots.plot_quality_breakdown(daily, {k: float(v) for k, v in model.config.quality.weights.model_dump().items()}, n=5, ax=right)
    return fig


def headline(model: Market) -> str:
    """One line of the market so far: day, revenue, fill rate, CPM."""
    if not model.day:
        return f"day 0 of {model.config.days}: nothing simulated yet"
    m = model.ledger.tables()["market_daily"]
    imps = float(m["filled_slots"].sum())
    revenue = float(m["revenue"].sum())
    fill = imps / max(1.0, float(m["ad_slots"].sum()))
    cpm = revenue * 1000 / imps if imps else np.nan
    return f"day {model.day} of {model.config.days} ({model.calendar.date(model.day - 1):%d %b}): revenue {revenue:,.0f} yuan, fill rate {fill:.0%}, CPM {cpm:,.2f} yuan"


def components() -> list[Any]:
    """The page's Solara components (each redrawn after every step)."""
    import solara
    from mesa.visualization.utils import update_counter

    def figure_component(draw: Any) -> Any:
        @solara.component
        def Panel(model: Market) -> None:
            update_counter.get()  # redraw after each step
            solara.FigureMatplotlib(draw(model), format="png", dependencies=[model, model.day])

        return Panel

    @solara.component
    def Headline(model: Market) -> None:
        update_counter.get()
        solara.Markdown(f"**{headline(model)}**")

    return [(Headline, 0), (figure_component(figure_prices), 0), (figure_component(figure_spend), 0), (figure_component(figure_quality), 0)]


def make_page(model: MarketExplorer | None = None) -> Any:
    """The SolaraViz element: sliders (MODEL_PARAMS), step/play/reset controls and the live plots."""
    from mesa.visualization import SolaraViz

    model = model if model is not None else MarketExplorer(**{k: v["value"] for k, v in MODEL_PARAMS.items()})
    return SolaraViz(model, components=components(), model_params=MODEL_PARAMS, name="adsim: market explorer", play_interval=300)


def __getattr__(name: str) -> Any:
    # ``solara run simulator/viz.py`` looks up ``Page``; building it lazily keeps ``import simulator.viz`` cheap.
    if name in ("Page", "page"):
        return make_page()
    raise AttributeError(name)


if __name__ != "simulator.viz":  # run as a script by ``solara run simulator/viz.py``
    page = make_page()
