"""Plots: functions that take a run's (or a batch's) DataFrames and draw on matplotlib Axes.

Each ``plot_*`` function takes DataFrames (the tables of DESIGN.md section 8,
or a batch summary) and an optional ``ax``, and returns what it drew on: one
``Axes``, or a list of them for the small-multiple panels (which split the
``ax`` they are given into a grid of their own).  Notebooks compose them;
``report_figure`` puts the standard panels of a run together and
``save_report`` writes ``report.png``; ``batch_report_figure`` does the same
for a batch summary (one row per run).

The model knows nothing about plots; plots know nothing about the model: they
read only table columns (and, optionally, the scenario's quality weights).
Money is in yuan throughout; rates are shares.

The report figures are plain ``matplotlib.figure.Figure`` objects, not pyplot
figures: drawing and saving them needs no GUI backend (CLI, batch workers) and
leaves a notebook's backend alone; ``plot_*`` called without ``ax`` open a
pyplot figure in whatever backend the caller uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from simulator.quality import FACTOR_COLUMNS

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
#: Readable names of the six quality factors, in FACTOR_COLUMNS order.
FACTOR_LABELS = {
    "qs_relevance": "ad relevance",
    "qs_history": "historical performance",
    "qs_content": "content quality",
    "qs_engagement": "user engagement",
    "qs_landing": "landing page",
    "qs_reputation": "account reputation",
}
#: How each market KPI is computed from summed counts (so days and advertisers aggregate correctly).
PRICE_LABELS = {
    "cpm": "CPM (yuan per 1,000 impressions)",
    "cpc": "CPC (yuan per click)",
    "cpa": "CPA (yuan per conversion)",
    "cpe": "CPE (yuan per engagement)",
}
KPI_LABELS = {
    "spend": "spend (yuan)",
    "revenue": "platform revenue (yuan)",
    "impressions": "impressions",
    "clicks": "clicks",
    "conversions": "conversions",
    "ctr": "CTR (clicks per impression)",
    "cvr": "conversion rate (per click)",
    "roas": "ROAS (order value per yuan)",
    "fill_rate": "fill rate (share of ad slots)",
    "avg_quality_score": "mean quality score (1-10)",
    "quality_score": "quality score (1-10)",
    **PRICE_LABELS,
}
PERCENT_KPIS = {"ctr", "cvr", "fill_rate", "engagement_rate", "conversion_rate", "impression_share"}
SEASON_COLOR = "#f28e2b"
PEAK_COLOR = "#e15759"
MARKET_COLOR = "#333333"


# --------------------------------------------------------------------------- helpers


def _ax(ax: Axes | None, figsize: tuple[float, float] = (7, 4)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _split(ax: Axes | None, nrows: int, ncols: int, figsize: tuple[float, float], sharex: bool = False, **grid: Any) -> list[Axes]:
    """Axes of an ``nrows`` x ``ncols`` grid that takes the place of ``ax`` (or a new figure)."""
    if ax is None:
        fig = plt.figure(figsize=figsize, layout="constrained")
        gs = fig.add_gridspec(nrows, ncols, **grid)
    else:
        fig = ax.figure
        spec = ax.get_subplotspec()
        ax.remove()
        gs = spec.subgridspec(nrows, ncols, **grid)
    axes: list[Axes] = []
    for i in range(nrows):
        for j in range(ncols):
            share = axes[j] if (sharex and i > 0) else None
            axes.append(fig.add_subplot(gs[i, j], sharex=share))
    return axes


class _DateLocator(mdates.AutoDateLocator):
    """``AutoDateLocator`` that remembers the ticks of the last view interval.

    Layout and drawing ask an axis for its ticks a dozen times per draw, and
    each answer builds a fresh date rule; the ticks depend only on the view
    interval, so one answer per interval is enough.
    """

    _memo: tuple[tuple[float, float], Any] | None = None

    def __call__(self) -> Any:
        if self.axis is None:
            return super().__call__()
        key = tuple(self.axis.get_view_interval())
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, super().__call__())
        return self._memo[1]


class _DateFormatter(mdates.DateFormatter):
    """``DateFormatter`` that remembers the labels it wrote (tick labels are formatted over and over)."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._memo: dict[float, str] = {}

    def __call__(self, x: float, pos: int | None = 0) -> str:
        label = self._memo.get(x)
        if label is None:
            label = self._memo[x] = super().__call__(x, pos)
        return label


def _day_bars(ax: Axes, x: pd.DatetimeIndex, heights: Any, width: float, color: Any, alpha: float,
              label: str) -> BarContainer:  # fmt: skip
    """``ax.bar(x, heights, width=width, color=color, alpha=alpha, label=label, linewidth=0)``, built faster.

    The same Rectangles (centred on the dates ``x``, ``width`` days wide, from
    0) and the same legend entry; only the data limits are updated once for
    all bars, where ``ax.bar`` transforms each bar's outline on its own, which
    is most of its cost for the few hundred bars of a long run.
    """
    ax.xaxis.update_units(x)
    left = np.asarray(ax.convert_xunits(x), dtype=float) - width / 2
    height = np.asarray(heights, dtype=float)
    bars = []
    for lo, h in zip(left, height, strict=True):
        r = Rectangle((lo, 0.0), width, h, facecolor=color, edgecolor=None, linewidth=0, alpha=alpha,
                      label="_nolegend_")  # fmt: skip
        r.sticky_edges.y.append(0.0)
        ax.add_artist(r)
        bars.append(r)
    if bars:
        drawn = (width != 0) | (height != 0)  # what ax.bar leaves out of the limits
        steps = ((0, 0), (width, 0), (width, 1), (0, 1))  # the four corners: (x offset, share of the height)
        corners = [np.column_stack([left + dx, height * up])[drawn] for dx, up in steps]
        ax.update_datalim(np.concatenate(corners))
        ax.autoscale_view()
    container = BarContainer(bars, datavalues=height, orientation="vertical", label=label)
    ax.add_container(container)
    return container


def _date_axis(ax: Axes, labels: bool = True) -> None:
    locator = _DateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(_DateFormatter("%d %b"))
    if not labels:
        ax.tick_params(labelbottom=False)


def _yuan_axis(ax: Axes, decimals: int = 0) -> None:
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:,.{decimals}f}"))


def _percent_axis(ax: Axes, axis: str = "y") -> None:
    fmt = mticker.PercentFormatter(1.0, decimals=0)
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def _dates(s: pd.Series | pd.Index) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(s))


def _div(a: Any, b: Any) -> Any:
    """a / b with NaN where b is 0 (a rate with no base is unknown, not zero)."""
    if isinstance(b, pd.Series | pd.DataFrame):
        return a / b.where(b != 0)
    return a / b if b else np.nan


def _active(daily: pd.DataFrame) -> pd.DataFrame:
    """The rows with their budget and quality blanked (NaN) on days the campaign was not in the market.

    A campaign is out of the market on a day when no auction admitted it and it
    served nothing (before its start date, after its end, or all its creatives
    in review); its budget that day was never available, so it must not count
    as budget left unspent.
    """
    if "eligible_auctions" not in daily:
        return daily
    out = (daily["eligible_auctions"] == 0) & (daily["impressions"] == 0)
    if not out.any():
        return daily
    cols = ["daily_budget", "quality_score", *[c for c in FACTOR_COLUMNS if c in daily]]
    d = daily.copy()
    d.loc[out, cols] = np.nan
    return d


def top_advertisers(daily: pd.DataFrame, n: int = 6) -> list[str]:
    """The ``n`` advertisers with the most spend over the table (ties by name)."""
    spend = daily.groupby("advertiser")["spend"].sum()
    order = sorted(spend.index, key=lambda name: (-spend[name], str(name)))
    return [str(a) for a in order[:n]]


def advertiser_colors(names: Iterable[str]) -> dict[str, str]:
    """One colour per advertiser, stable across panels of a figure."""
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def _spread_labels(y: np.ndarray, min_gap: float) -> np.ndarray:
    """Nudge label positions apart (keeping their order) so no two are closer than ``min_gap``."""
    order = np.argsort(y)
    out = np.asarray(y, dtype=float).copy()
    placed = out[order]
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + min_gap)
    # centre the block again on the original mean so labels do not drift off the top
    shift = (placed.mean() - out[order].mean()) if len(placed) else 0.0
    out[order] = placed - shift
    return out


def _last_point(x: pd.DatetimeIndex, y: pd.Series) -> tuple[Any, float]:
    """The last point of a series with a value (a campaign may leave the market before the run ends)."""
    ok = np.isfinite(y.to_numpy(dtype=float))
    if not ok.any():
        return (None, np.nan)
    i = int(np.flatnonzero(ok)[-1])
    return (x[i], float(y.iloc[i]))


def _label_line_ends(ax: Axes, ends: dict[str, tuple[Any, float]], colors: dict[str, str], fontsize: float = 7) -> None:
    """Write each series' name just right of its last point, nudged apart (instead of a legend)."""
    items = [(k, x, y) for k, (x, y) in ends.items() if np.isfinite(y)]
    if not items:
        return
    lo, hi = ax.get_ylim()
    ys = _spread_labels(np.array([y for _, _, y in items]), min_gap=(hi - lo) * 0.055)
    for (name, x, _), y in zip(items, ys, strict=True):
        ax.annotate(
            name,
            xy=(x, y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=fontsize,
            color=colors.get(name, "black"),
            annotation_clip=False,
        )


# --------------------------------------------------------------------------- season


def season_days(events: pd.DataFrame | None) -> pd.DataFrame:
    """One row per day that a seasonal event is on: ``date``, ``phases`` (list of "event:phase").

    Read from the events table rows of kind ``season`` (their detail lists the
    day's phases, e.g. ``"singles_day:presale, singles_day:presale_spike"``).
    """
    if events is None or events.empty or "kind" not in events:
        return pd.DataFrame({"date": pd.Series(dtype="datetime64[ns]"), "phases": pd.Series(dtype=object)})
    rows = events.loc[events["kind"] == "season", ["date", "detail"]].copy()
    rows["date"] = _dates(rows["date"])
    rows["phases"] = rows["detail"].astype(str).map(lambda s: [p.strip() for p in s.split(",") if p.strip()])
    rows = rows.groupby("date", as_index=False)["phases"].agg(lambda ps: list(dict.fromkeys(p for lst in ps for p in lst)))
    return rows.sort_values("date").reset_index(drop=True)


def season_spans(events: pd.DataFrame | None) -> list[tuple[pd.Timestamp, pd.Timestamp, str]]:
    """Runs of consecutive days in the same seasonal phase: ``(first_day, last_day, label)``.

    A day's label is its most specific phase (the last one listed, e.g.
    ``presale_spike`` over ``presale``), without the event prefix when only one
    event is on.
    """
    days = season_days(events)
    if days.empty:
        return []
    n_events = len({p.split(":")[0] for lst in days["phases"] for p in lst})

    def label(phases: list[str]) -> str:
        if n_events <= 1:
            return phases[-1].split(":")[-1]
        return " + ".join(dict.fromkeys(p.split(":")[0] + ":" + p.split(":")[-1] for p in phases[-1:]))

    spans: list[tuple[pd.Timestamp, pd.Timestamp, str]] = []
    for date, phases in zip(days["date"], days["phases"], strict=True):
        lab = label(phases)
        if spans and spans[-1][2] == lab and (date - spans[-1][1]) == pd.Timedelta(days=1):
            spans[-1] = (spans[-1][0], date, lab)
        else:
            spans.append((date, date, lab))
    return spans


def _phase_style(label: str) -> tuple[str, float]:
    """Colour and opacity of a phase band: the peak stands out, the run-up is a light wash."""
    name = label.split(":")[-1]
    if "peak" in name or name == "festival":
        return PEAK_COLOR, 0.28
    if name in {"eve", "final_payment", "presale_spike"}:
        return SEASON_COLOR, 0.26
    if "cool" in name or "recovery" in name:
        return "#bab0ac", 0.18
    return SEASON_COLOR, 0.10


def mark_events(ax: Axes, events: pd.DataFrame | None, labels: bool = True) -> int:
    """Shade the days of seasonal phases (from the events table) and name each phase at the top.

    Daily points are drawn at noon of their day, so a band from midnight to
    midnight sits centred on the points it covers.  Returns the number of bands.
    """
    spans = season_spans(events)
    trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    for first, last, lab in spans:
        color, alpha = _phase_style(lab)
        ax.axvspan(first, last + pd.Timedelta(days=1), color=color, alpha=alpha, linewidth=0, zorder=0)
        if labels:
            mid = first + (last + pd.Timedelta(days=1) - first) / 2
            ax.text(mid, 0.97, lab.replace("_", " "), transform=trans, rotation=90, ha="center", va="top",
                    fontsize=6.5, color="#555555", clip_on=True)  # fmt: skip
    return len(spans)


def _noon(dates: Any) -> pd.DatetimeIndex:
    return _dates(dates) + pd.Timedelta(hours=12)


# --------------------------------------------------------------------------- one run


def market_daily_kpis(daily: pd.DataFrame) -> pd.DataFrame:
    """Market-wide KPIs per day from the campaign rows: sums, then ratios (yuan, shares)."""
    cols = [c for c in ("spend", "impressions", "clicks", "engagements", "conversions", "order_value") if c in daily]
    g = daily.groupby("date")[cols].sum()
    g.index = _dates(g.index)
    g["cpm"] = _div(g["spend"] * 1000, g["impressions"])
    g["cpc"] = _div(g["spend"], g["clicks"])
    g["cpa"] = _div(g["spend"], g["conversions"])
    if "engagements" in g:
        g["cpe"] = _div(g["spend"], g["engagements"])
    g["ctr"] = _div(g["clicks"], g["impressions"])
    g["cvr"] = _div(g["conversions"], g["clicks"])
    if "order_value" in g:
        g["roas"] = _div(g["order_value"], g["spend"])
    return g


def plot_spend_vs_budget(daily: pd.DataFrame, advertiser: str | None = None, n: int = 6, ax: Axes | None = None) -> list[Axes]:
    """Daily spend (bars) against the daily budget (step line) of the top spenders, yuan.

    One small panel per advertiser (``advertiser`` for just one), each with its
    own scale, titled with the share of its budget it spent over the run.
    """
    names = [advertiser] if advertiser is not None else top_advertisers(daily, n)
    colors = advertiser_colors(top_advertisers(daily, max(n, len(names))) if advertiser is None else names)
    ncols = 1 if len(names) == 1 else (2 if len(names) <= 4 else 3)
    nrows = max(1, int(np.ceil(len(names) / ncols)))
    axes = _split(ax, nrows, ncols, figsize=(4 * ncols, 2.4 * nrows), sharex=True)
    by = _active(daily).groupby(["advertiser", "date"], as_index=False)[["spend", "daily_budget"]].sum(min_count=1)
    for i, a in enumerate(axes):
        if i >= len(names):
            a.axis("off")
            continue
        name = names[i]
        d = by[by["advertiser"] == name]
        x = _noon(d["date"])
        _day_bars(a, x, d["spend"], width=0.8, color=colors.get(name, "C0"), alpha=0.85, label="spend")
        a.step(np.append(x - pd.Timedelta(hours=12), x[-1:] + pd.Timedelta(hours=12)),
               np.append(d["daily_budget"].to_numpy(), d["daily_budget"].to_numpy()[-1:]),
               where="post", color="black", linewidth=1.0, linestyle="--", label="daily budget")  # fmt: skip
        used = _div(d["spend"].sum(), d["daily_budget"].sum())
        a.set_title(f"{name}: {used:.0%} of budget spent" if np.isfinite(used) else name, fontsize=8.5)
        a.set_ylim(0, max(1.0, float(np.nanmax([d["spend"].max(), d["daily_budget"].max()]))) * 1.3)
        _yuan_axis(a)
        a.tick_params(labelsize=7)
        _date_axis(a, labels=i >= len(axes) - ncols)
        if i % ncols == 0:
            a.set_ylabel("yuan / day", fontsize=8)
        if i == 0:
            a.legend(fontsize=6.5, loc="upper left", ncols=2, framealpha=0.8)
    return axes


def plot_price(daily: pd.DataFrame, metric: str = "cpm", events: pd.DataFrame | None = None, ax: Axes | None = None,
               annotate: bool = True, phase_labels: bool = True) -> Axes:  # fmt: skip
    """One market price over time (``cpm``, ``cpc``, ``cpa`` or ``cpe``, yuan), season phases shaded.

    Prices are effective market averages: total spend over total impressions
    (x 1,000), clicks, conversions or engagements of the day, whatever each
    campaign is billed for.
    """
    ax = _ax(ax)
    g = market_daily_kpis(daily)
    y = g[metric]
    x = _noon(g.index)
    ax.plot(x, y, color=MARKET_COLOR, marker="o", markersize=2.5, linewidth=1.4, label=metric.upper())
    n_bands = mark_events(ax, events, labels=phase_labels)
    ax.set_ylabel(metric.upper() + " (yuan)", fontsize=8)
    ax.set_title(PRICE_LABELS.get(metric, metric), fontsize=9, loc="left")
    finite = y[np.isfinite(y)]
    if len(finite):
        top = float(finite.max())
        ax.set_ylim(0, top * (1.35 if n_bands and phase_labels else 1.15))
        if annotate and len(finite) > 1:
            i = int(np.nanargmax(y.to_numpy()))
            base = float(finite.iloc[0])
            change = f", {top / base - 1:+.0%} vs first day" if base > 0 and i > 0 else ""
            ha = "left" if i < len(x) * 0.25 else ("right" if i > len(x) * 0.75 else "center")
            ax.annotate(f"max {top:,.2f} on {g.index[i]:%d %b}{change}", xy=(x[i], top), xytext=(0, 6),
                        textcoords="offset points", ha=ha, fontsize=7, color=MARKET_COLOR)  # fmt: skip
    _yuan_axis(ax, decimals=0 if metric in ("cpm", "cpa") else 2)
    ax.tick_params(labelsize=7)
    _date_axis(ax)
    return ax


def plot_season_strip(events: pd.DataFrame | None, start: Any, end: Any, ax: Axes | None = None) -> Axes:
    """A thin timeline of the seasonal phases between ``start`` and ``end`` (dates), each band named.

    Narrow bands (a day or two) get their name written upright so names never overlap.
    """
    ax = _ax(ax, figsize=(7, 0.8))
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    ax.set_xlim(start, end + pd.Timedelta(days=1))
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    spans = [(f, la, lab) for f, la, lab in season_spans(events) if la >= start and f <= end]
    for first, last, lab in spans:
        color, alpha = _phase_style(lab)
        left, right = max(first, start), min(last, end) + pd.Timedelta(days=1)
        ax.axvspan(left, right, color=color, alpha=min(1.0, alpha * 2.2), linewidth=0.5, ec="white")
        n_days = (right - left) / pd.Timedelta(days=1)
        text = lab.replace("_", " ")
        upright = n_days < max(2.5, 0.45 * len(text) * (end - start + pd.Timedelta(days=1)).days / 40)
        ax.text(left + (right - left) / 2, 0.5, text, rotation=90 if upright else 0, ha="center", va="center",
                fontsize=6.5 if upright else 7.5, color="#333333", clip_on=True)  # fmt: skip
    if not spans:
        ax.text(0.5, 0.5, "no seasonal event in these dates", transform=ax.transAxes, ha="center", va="center", fontsize=7, color="#777777")
    ax.set_title("Season phases (from the events table)", fontsize=8, loc="left")
    _date_axis(ax, labels=False)
    return ax


def plot_prices(daily: pd.DataFrame, events: pd.DataFrame | None = None, metrics: Sequence[str] = ("cpm", "cpc", "cpa"),
                ax: Axes | None = None) -> list[Axes]:  # fmt: skip
    """Market CPM, CPC and CPA over time as stacked panels with one date axis, season phases shaded.

    Each price gets its own yuan scale (they differ by two orders of
    magnitude).  When the run has seasonal days, a strip on top names the
    phases and the same bands shade every price panel.  Returns the Axes,
    top to bottom (the strip first, if any).
    """
    has_season = bool(season_spans(events))
    ratios = ([0.55] if has_season else []) + [1.0] * len(metrics)
    axes = _split(ax, len(ratios), 1, figsize=(7, 2.2 * len(metrics) + 0.8 * has_season), sharex=True, height_ratios=ratios)
    dates = _dates(daily["date"])
    if has_season:
        plot_season_strip(events, dates.min(), dates.max(), ax=axes[0])
    price_axes = axes[1:] if has_season else axes
    for i, (a, m) in enumerate(zip(price_axes, metrics, strict=True)):
        plot_price(daily, m, events, ax=a, phase_labels=False)
        _date_axis(a, labels=i == len(metrics) - 1)
    return axes


def plot_quality(daily: pd.DataFrame, n: int = 6, ax: Axes | None = None, min_quality: float | None = None) -> Axes:
    """Quality score (1-10) of the top spenders over time, impression-weighted over their campaigns."""
    ax = _ax(ax)
    names = top_advertisers(daily, n)
    colors = advertiser_colors(names)
    daily = _active(daily)
    w = daily["impressions"].clip(lower=0).astype(float)
    w = w.where(w > 0, 1.0).where(daily["quality_score"].notna(), 0.0)  # no impressions: plain mean of its campaigns
    d = daily.assign(_w=w, _qw=daily["quality_score"].fillna(0) * w)
    g = d.groupby(["advertiser", "date"])[["_w", "_qw"]].sum()
    qs = (g["_qw"] / g["_w"].where(g["_w"] > 0)).rename("qs").reset_index()
    ends = {}
    for name in names:
        s = qs[qs["advertiser"] == name]
        x = _noon(s["date"])
        ax.plot(x, s["qs"], color=colors[name], linewidth=1.6, label=name)
        ends[name] = _last_point(x, s["qs"])
    vals = qs.loc[qs["advertiser"].isin(names), "qs"].to_numpy()
    lo = max(1.0, np.floor(np.nanmin(vals)) - 1.0) if vals.size else 1.0
    hi = min(10.0, np.ceil(np.nanmax(vals)) + 1.0) if vals.size else 10.0
    if min_quality is not None and lo <= min_quality <= hi:
        ax.axhline(min_quality, color=PEAK_COLOR, linestyle=":", linewidth=1)
        ax.text(0.01, min_quality, " quality gate", transform=mtransforms.blended_transform_factory(ax.transAxes, ax.transData),
                va="bottom", fontsize=7, color=PEAK_COLOR)  # fmt: skip
    ax.set_ylim(lo, hi)
    ax.set_title("Quality score of the top spenders (1-10)", fontsize=10)
    ax.set_ylabel("quality score", fontsize=8)
    ax.tick_params(labelsize=7)
    _date_axis(ax)
    ax.margins(x=0.02)
    _label_line_ends(ax, ends, colors)
    return ax


def quality_breakdown(daily: pd.DataFrame, weights: dict[str, float] | None = None, date: Any = None) -> pd.DataFrame:
    """Each advertiser's quality score split into the six factors' points on one day (default: the last).

    ``QS = 1 + 9 x sum(w_i x f_i)``: the column of factor i holds ``9 x w_i x f_i``
    (impression-weighted over the advertiser's campaigns), so a row sums to
    ``quality_score - 1``.
    """
    weights = weights or _default_weights()
    day = pd.Timestamp(date) if date is not None else _dates(daily["date"]).max()
    d = daily[_dates(daily["date"]) == day]
    w = d["impressions"].clip(lower=0).astype(float)
    w = w.where(w > 0, 1.0)
    cols = list(FACTOR_COLUMNS)
    num = d[cols].mul(w, axis=0).groupby(d["advertiser"]).sum()
    f = num.div(w.groupby(d["advertiser"]).sum(), axis=0)
    out = pd.DataFrame({c: 9.0 * weights[c.removeprefix("qs_")] * f[c] for c in cols})
    out["quality_score"] = 1.0 + out[cols].sum(axis=1)
    return out


def _default_weights() -> dict[str, float]:
    from simulator.scenario import QualityWeights

    return {k: float(v) for k, v in QualityWeights().model_dump().items()}


def _weights_of(scenario: Any) -> dict[str, float] | None:
    try:
        return {k: float(v) for k, v in scenario.quality.weights.model_dump().items()}
    except AttributeError:
        return None


def plot_quality_breakdown(daily: pd.DataFrame, weights: dict[str, float] | None = None, n: int = 6, ax: Axes | None = None,
                           date: Any = None) -> Axes:  # fmt: skip
    """Why each top spender has the score it has: stacked bars of the six factors' QS points.

    Each bar starts at 1 (the floor) and adds ``9 x weight x factor`` per
    factor; its end is the quality score on the last day of the run.
    """
    ax = _ax(ax)
    names = top_advertisers(daily, n)
    weights = weights or _default_weights()
    b = quality_breakdown(daily, weights, date).reindex(names)
    y = np.arange(len(names))[::-1]
    left = np.ones(len(names))
    palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"]
    for col, color in zip(FACTOR_COLUMNS, palette, strict=True):
        vals = b[col].fillna(0).to_numpy()
        ax.barh(y, vals, left=left, color=color, height=0.65,
                label=f"{FACTOR_LABELS[col]} ({weights[col.removeprefix('qs_')]:.0%})")  # fmt: skip
        left = left + vals
    for yi, total in zip(y, b["quality_score"].to_numpy(), strict=True):
        if np.isfinite(total):
            ax.text(total + 0.08, yi, f"{total:.1f}", va="center", fontsize=8, fontweight="bold")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(1, 10.6)
    ax.set_xticks(range(1, 11))
    ax.set_xlabel("quality score points (bar end = QS; weight of each factor in brackets)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    day = pd.Timestamp(date) if date is not None else _dates(daily["date"]).max()
    ax.set_title(f"What makes up the quality score ({day:%d %b %Y})", fontsize=10, pad=30)
    ax.legend(fontsize=7, ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return ax


def plot_factors(daily: pd.DataFrame, advertiser: str | None = None, ax: Axes | None = None) -> Axes:
    """The six quality factors (0-1) over time of one advertiser (default: the top spender)."""
    ax = _ax(ax)
    name = advertiser or top_advertisers(daily, 1)[0]
    d = daily[daily["advertiser"] == name]
    w = d["impressions"].clip(lower=0).astype(float)
    w = w.where(w > 0, 1.0)
    f = d[list(FACTOR_COLUMNS)].mul(w, axis=0).groupby(d["date"]).sum().div(w.groupby(d["date"]).sum(), axis=0)
    x = _noon(f.index)
    colors = {FACTOR_LABELS[c]: f"C{i}" for i, c in enumerate(FACTOR_COLUMNS)}
    ends = {}
    for col in FACTOR_COLUMNS:
        lab = FACTOR_LABELS[col]
        ax.plot(x, f[col], color=colors[lab], label=lab, linewidth=1.5)
        ends[lab] = _last_point(x, f[col])
    ax.set_ylim(0, 1)
    ax.set_title(f"Quality factors of {name} (0-1)", fontsize=10)
    ax.set_ylabel("factor score", fontsize=8)
    ax.tick_params(labelsize=7)
    _date_axis(ax)
    _label_line_ends(ax, ends, colors)
    return ax


def plot_impression_share(daily: pd.DataFrame, n: int = 6, ax: Axes | None = None, events: pd.DataFrame | None = None) -> Axes:
    """Impression share of the top spenders: impressions won / auctions their targeting admitted."""
    ax = _ax(ax)
    names = top_advertisers(daily, n)
    colors = advertiser_colors(names)
    if "eligible_auctions" in daily:
        g = daily.groupby(["advertiser", "date"])[["impressions", "eligible_auctions"]].sum().reset_index()
        g["share"] = g["impressions"] / np.maximum(g["eligible_auctions"], g["impressions"]).where(lambda s: s > 0)
    else:  # a table without the extra column: impression-weighted mean of the campaigns' shares
        g = daily.assign(_w=daily["impression_share"] * daily["impressions"]).groupby(["advertiser", "date"])[["_w", "impressions"]].sum().reset_index()
        g["share"] = g["_w"] / g["impressions"].where(g["impressions"] > 0)
    ends = {}
    for name in names:
        d = g[g["advertiser"] == name]
        x = _noon(d["date"])
        ax.plot(x, d["share"], color=colors[name], label=name, linewidth=1.5)
        ends[name] = _last_point(x, d["share"])
    if events is not None:
        mark_events(ax, events, labels=False)
    ax.set_ylim(0, 1)
    _percent_axis(ax)
    ax.set_title("Impression share of the top spenders", fontsize=10)
    ax.set_ylabel("impressions won / eligible auctions", fontsize=8)
    ax.tick_params(labelsize=7)
    _date_axis(ax)
    ax.margins(x=0.02)
    _label_line_ends(ax, ends, colors)
    return ax


HEATMAP_VALUES = {
    "spend": ("Spend", "yuan per hour"),
    "impressions": ("Impressions", "impressions per hour"),
    "clicks": ("Clicks", "clicks per hour"),
    "conversions": ("Conversions", "conversions per hour"),
    "cpm": ("CPM", "yuan per 1,000 impressions"),
    "cpc": ("CPC", "yuan per click"),
}


def hour_weekday_grid(hourly: pd.DataFrame, value: str = "spend") -> pd.DataFrame:
    """Weekday (rows, Mon=0) x hour (columns) grid: mean per day of a count, or a price from sums."""
    base = ["spend", "impressions", "clicks", "conversions"]
    h = hourly.groupby(["date", "hour"])[[c for c in base if c in hourly]].sum().reset_index()
    h["weekday"] = _dates(h["date"]).weekday
    if value in ("cpm", "cpc"):
        s = h.groupby(["weekday", "hour"])[["spend", "impressions", "clicks"]].sum()
        v = s["spend"] * 1000 / s["impressions"].where(s["impressions"] > 0) if value == "cpm" else s["spend"] / s["clicks"].where(s["clicks"] > 0)
        grid = v.unstack("hour")
    else:
        grid = h.pivot_table(index="weekday", columns="hour", values=value, aggfunc="mean")
    return grid.reindex(index=range(7), columns=range(24))


def plot_hour_heatmap(hourly: pd.DataFrame, value: str = "spend", ax: Axes | None = None) -> Axes:
    """Hour of day x weekday heat map of spend (mean per day, yuan) or a price (``cpm``, ``cpc``).

    Weekdays the run did not cover are grey.
    """
    ax = _ax(ax)
    grid = hour_weekday_grid(hourly, value)
    cmap = matplotlib.colormaps["YlOrRd"].copy()
    cmap.set_bad("#e8e8e8")
    im = ax.imshow(np.ma.masked_invalid(grid.to_numpy(dtype=float)), aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_yticks(range(7), WEEKDAYS, fontsize=8)
    ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)], fontsize=7)
    ax.set_xlabel("hour of day", fontsize=8)
    name, unit = HEATMAP_VALUES.get(value, (value, value))
    what = f"{name} by hour and weekday" + (" (mean per day)" if value not in ("cpm", "cpc") else "")
    ax.set_title(what, fontsize=10)
    cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label(unit, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    cb.ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 10 else f"{v:,.2f}"))
    return ax


def kpi_rows(daily: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    """The report's KPI table: the top spenders and the whole market, one row each."""
    from simulator.results import kpi_table

    k = kpi_table(daily)
    budget = _active(daily).groupby("advertiser")["daily_budget"].sum()  # budget of the days it was in the market
    k["budget_used"] = k["spend"] / budget.reindex(k.index).where(lambda s: s > 0)
    if "eligible_auctions" in daily:
        el = daily.groupby("advertiser")[["impressions", "eligible_auctions"]].sum()
        k["impression_share"] = el["impressions"] / np.maximum(el["eligible_auctions"], el["impressions"]).where(lambda s: s > 0)
    top = k.loc[[a for a in top_advertisers(daily, n) if a in k.index]]
    tot = daily[["impressions", "clicks", "conversions", "spend", "order_value"]].sum()
    imps = float(tot["impressions"])
    market = {
        "impressions": imps,
        "clicks": tot["clicks"],
        "conversions": tot["conversions"],
        "spend": tot["spend"],
        "order_value": tot["order_value"],
        "quality_score": float(np.nansum(daily["quality_score"] * daily["impressions"]) / imps) if imps else np.nan,
        "ctr": _div(tot["clicks"], imps),
        "cpm": _div(tot["spend"] * 1000, imps),
        "cpc": _div(tot["spend"], tot["clicks"]),
        "cpa": _div(tot["spend"], tot["conversions"]),
        "roas": _div(tot["order_value"], tot["spend"]),
        "budget_used": _div(tot["spend"], _active(daily)["daily_budget"].sum()),
    }
    if "eligible_auctions" in daily:
        market["impression_share"] = np.nan  # auctions overlap across advertisers: no market share
    rows = pd.concat([top, pd.DataFrame([market], index=[f"market ({k.shape[0]} advertisers)"])])
    return rows


def _fmt(v: Any, kind: str) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "pct":
        return f"{v:.1%}"
    if kind == "pct2":
        return f"{v:.2%}"
    return f"{v:,.{int(kind)}f}"


def plot_kpi_table(daily: pd.DataFrame, n: int = 8, ax: Axes | None = None) -> Axes:
    """The KPI table of the top spenders and the market as a figure panel (money in yuan)."""
    ax = _ax(ax, figsize=(12, 3))
    k = kpi_rows(daily, n)
    spec = [
        ("spend", "spend (yuan)", "0"),
        ("budget_used", "budget used", "pct"),
        ("impressions", "impressions", "int"),
        ("ctr", "CTR", "pct2"),
        ("cpm", "CPM (yuan)", "2"),
        ("cpc", "CPC (yuan)", "2"),
        ("conversions", "conversions", "int"),
        ("cpa", "CPA (yuan)", "1"),
        ("roas", "ROAS", "2"),
        ("quality_score", "QS (1-10)", "1"),
    ]
    if "impression_share" in k:
        spec.append(("impression_share", "impr. share", "pct"))
    cells = [[str(name)] + [_fmt(r.get(col), kind) for col, _, kind in spec] for name, r in k.iterrows()]
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=["advertiser"] + [lab for _, lab, _ in spec], loc="upper center",
                     cellLoc="right", colLoc="right", bbox=(0, 0, 1, 1))  # fmt: skip
    table.auto_set_font_size(False)
    table.set_fontsize(8.5)
    widths = [0.16] + [0.84 / len(spec)] * len(spec)
    for (row, col), cell in table.get_celld().items():
        cell.set_width(widths[col])
        cell.set_edgecolor("#dddddd")
        if col == 0:
            cell._loc = "left"  # names read left-aligned
            cell.set_text_props(ha="left")
        if row == 0:
            cell.set_facecolor("#40466e")
            cell.set_text_props(color="white", fontweight="bold")
        elif row == len(cells):
            cell.set_facecolor("#fdebd0")
            cell.set_text_props(fontweight="bold")
        elif row % 2 == 0:
            cell.set_facecolor("#f5f5f5")
    ax.set_title("KPIs over the whole run: top spenders and the market", fontsize=10)
    return ax


def _subtitle(tables: dict[str, pd.DataFrame]) -> str:
    daily = tables["advertiser_daily"]
    market = tables.get("market_daily")
    dates = _dates(daily["date"])
    spend = float(daily["spend"].sum())
    parts = [f"{dates.min():%d %b %Y} to {dates.max():%d %b %Y} ({dates.nunique()} days)", f"spend {spend:,.0f} yuan"]
    if market is not None and not market.empty:
        parts.append(f"{int(market['sessions'].sum()):,} sessions")
        parts.append(f"fill rate {market['filled_slots'].sum() / max(1, market['ad_slots'].sum()):.0%}")
    parts.append(f"{daily['advertiser'].nunique()} advertisers")
    seasons = season_days(tables.get("events"))
    if not seasons.empty:
        names = sorted({p.split(":")[0] for lst in seasons["phases"] for p in lst})
        parts.append("season: " + ", ".join(names))
    return "   |   ".join(parts)


def _pin_titles(fig: Figure) -> None:
    """Leave each Axes title at the top of its Axes instead of re-checking, at every layout pass, what could lift it.

    Matplotlib lifts a title over tick labels or an x label on top of the Axes
    and over the y axis' offset text (the "1e6" or "+1000" of a scalar axis);
    the check measures the whole y axis each time and builds its ticks even
    for a hidden axis.  The report has no top ticks, and its y axes either
    format their own labels (no offset text) or span at least 1 within
    +-100, where a scalar formatter never writes one, so the check never moves
    a title; Axes that could need it keep it.
    """
    for ax in fig.get_axes():
        if not any(ax.get_title(loc=loc) for loc in ("center", "left", "right")) or ax.child_axes:
            continue
        ticks = [ax.xaxis.get_tick_params(which=which) for which in ("major", "minor")]
        if any(t.get("top") or t.get("labeltop") for t in ticks) or ax.xaxis.get_label_position() == "top":
            continue
        if isinstance(ax.yaxis.get_major_formatter(), mticker.ScalarFormatter):
            lo, hi = sorted(ax.get_ylim())
            if not (max(abs(lo), abs(hi)) <= 100 and hi - lo >= 1):
                continue
        if hasattr(ax, "_autotitlepos"):
            ax._autotitlepos = False  # what ax.set_title(..., y=1.0) sets, without touching the title's style


def report_figure(tables: dict[str, pd.DataFrame], title: str = "", scenario: Any = None, n: int = 6) -> Figure:
    """The run report: the panels a marketer reads at a glance, on one page.

    Rows: spend vs budget (top spenders) | market prices with season phases;
    quality scores over time | what makes up each quality score; impression
    share | hour x weekday spend; the KPI table.  Each panel is a subfigure
    with its own heading.
    """
    daily = tables["advertiser_daily"]
    fig = Figure(figsize=(16, 21), layout="constrained")
    fig.suptitle(f"{title or 'Run report'}", fontsize=16, fontweight="bold")
    if daily.empty or daily["impressions"].sum() == 0:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no impressions were served", ha="center", fontsize=14)
        return fig
    fig.supxlabel(_subtitle(tables), fontsize=9, color="#444444")
    rows = fig.subfigures(4, 1, height_ratios=[1.3, 1.0, 0.9, 0.62], hspace=0.02)
    top, middle, bottom = (r.subfigures(1, 2, wspace=0.03) for r in rows[:3])
    events = tables.get("events")
    min_quality = getattr(getattr(scenario, "auction", None), "min_quality", None)
    heads = {
        "spend": "Daily spend (bars) vs daily budget (dashed), yuan, top spenders",
        "prices": "Market prices per day, yuan (CPM, CPC, CPA), season phases shaded",
    }
    top[0].suptitle(heads["spend"], fontsize=11, fontweight="bold")
    plot_spend_vs_budget(daily, n=n, ax=top[0].add_subplot())
    top[1].suptitle(heads["prices"], fontsize=11, fontweight="bold")
    plot_prices(daily, events, ax=top[1].add_subplot())
    plot_quality(daily, n=n, ax=middle[0].add_subplot(), min_quality=min_quality)
    plot_quality_breakdown(daily, _weights_of(scenario), n=n, ax=middle[1].add_subplot())
    plot_impression_share(daily, n=n, ax=bottom[0].add_subplot(), events=events)
    plot_hour_heatmap(tables["advertiser_hourly"], ax=bottom[1].add_subplot())
    plot_kpi_table(daily, n=8, ax=rows[3].add_subplot())
    _pin_titles(fig)
    return fig


def _save_png(fig: Figure, path: str | Path, dpi: float) -> None:
    """``fig.savefig(path, dpi=dpi, format="png")``, with the figure drawn once instead of twice.

    ``savefig`` on a figure with a layout engine first draws it without
    rendering, only to run the layout, and then draws it again for real.
    Running the layout once at the output dpi and then saving the figure
    without its engine gives the same pixels for one draw.  zlib level 3
    instead of 6 writes the same pixels in a file about as small, 40 % faster.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # a renderer to measure text with (a plain Figure has none)
    fig.set_dpi(dpi)
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
        with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
            fig.set_layout_engine(None)  # no engine at all (a "none" placeholder still makes savefig draw twice)
    fig.savefig(path, dpi=dpi, format="png", pil_kwargs={"compress_level": 3})


def save_report(tables: dict[str, pd.DataFrame], path: str | Path, title: str = "", scenario: Any = None) -> Path:
    """Draw ``report_figure`` and write it as a PNG (80 dpi: about 1280 x 1680 pixels)."""
    fig = report_figure(tables, title=title, scenario=scenario)
    _save_png(fig, path, dpi=80)
    return Path(path)


# --------------------------------------------------------------------------- batches

#: KPI columns a batch summary may carry (one row per run).
BATCH_KPIS = ("spend", "revenue", "impressions", "ctr", "cpm", "cpc", "cpa", "roas", "fill_rate", "avg_quality_score")
#: Columns of a batch summary that identify a run or describe it, never a KPI or sweep value.
ID_COLUMNS = {
    "scenario", "sweep", "replicate", "seed", "root_seed", "run", "run_dir", "path", "status", "error", "reused",
    "wall_s", "name", "days", "sessions", "elapsed_s",
}  # fmt: skip


def sweep_columns(summary: pd.DataFrame) -> list[str]:
    """The swept knobs of a batch summary: its ``sweep.<path>`` columns that vary between runs.

    A summary without such columns (e.g. one built by hand) is read by elimination:
    numeric columns that vary and are neither a KPI nor an id.
    """
    named = [c for c in summary.columns if str(c).startswith("sweep.")]
    if named:
        return [c for c in named if summary[c].nunique(dropna=True) > 1]
    known = set(BATCH_KPIS) | ID_COLUMNS | {"clicks", "conversions", "order_value", "engagements", "sessions_per_second"}
    return [
        c
        for c in summary.columns
        if c not in known and not str(c).startswith("_") and pd.api.types.is_numeric_dtype(summary[c]) and summary[c].nunique(dropna=True) > 1
    ]


def kpi_bands(summary: pd.DataFrame, kpi: str, by: str | Sequence[str] = "scenario",
              quantiles: tuple[float, float, float] = (0.05, 0.5, 0.95)) -> pd.DataFrame:  # fmt: skip
    """The 5 %, 50 % and 95 % quantiles of ``kpi`` across the runs (replicates) of each group.

    Returns one row per group with columns ``q05``, ``q50``, ``q95``, ``mean`` and
    ``n`` (runs).  With few replicates the outer quantiles are interpolated
    between the extreme runs, so read them as a range, not as a tail estimate.
    """
    keys = [by] if isinstance(by, str) else list(by)
    g = summary.groupby(keys, sort=True)[kpi]
    lo, mid, hi = quantiles
    out = pd.DataFrame(
        {
            f"q{round(lo * 100):02d}": g.quantile(lo),
            f"q{round(mid * 100):02d}": g.quantile(mid),
            f"q{round(hi * 100):02d}": g.quantile(hi),
            "mean": g.mean(),
            "n": g.count(),
        }
    )
    return out


def _kpi_axis(ax: Axes, kpi: str, axis: str = "y") -> None:
    label = KPI_LABELS.get(kpi, kpi)
    (ax.set_ylabel if axis == "y" else ax.set_xlabel)(label, fontsize=8)
    if kpi in PERCENT_KPIS:
        (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(mticker.PercentFormatter(1.0, decimals=1))


def plot_replicate_bands(summary: pd.DataFrame, kpi: str = "cpm", by: str = "scenario", ax: Axes | None = None) -> Axes:
    """One KPI across replicates, per scenario (or any ``by`` column): 5-95 % band, median, each run.

    Each group is one row: a thick bar from the 5 % to the 95 % quantile of the
    runs, a white tick at the median, and a dot per run.
    """
    ax = _ax(ax)
    bands = kpi_bands(summary, kpi, by)
    groups = list(bands.index)
    y = np.arange(len(groups))[::-1]
    for yi, (group, r) in zip(y, bands.iterrows(), strict=True):
        color = "C0"
        ax.plot([r["q05"], r["q95"]], [yi, yi], color=color, linewidth=9, alpha=0.35, solid_capstyle="butt",
                label="5-95 % of runs" if yi == y[0] else "_")  # fmt: skip
        ax.plot([r["q50"]], [yi], marker="|", markersize=16, markeredgewidth=2.5, color=color,
                label="median" if yi == y[0] else "_")  # fmt: skip
        vals = summary.loc[summary[by] == group, kpi].to_numpy(dtype=float)
        jitter = np.linspace(-0.18, 0.18, len(vals)) if len(vals) > 1 else np.zeros(1)
        ax.scatter(vals, yi + jitter, s=10, color="black", zorder=3, label="one run" if yi == y[0] else "_")
    ax.set_yticks(y, [f"{g}\n(n={int(bands.loc[g, 'n'])})" for g in groups], fontsize=8)
    ax.set_ylim(-0.7, len(groups) - 0.3)
    _kpi_axis(ax, kpi, axis="x")
    ax.set_title(f"{KPI_LABELS.get(kpi, kpi)} across replicates", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="x", alpha=0.3)
    return ax


def plot_sweep(summary: pd.DataFrame, x: str, kpi: str = "cpm", by: str | None = None, ax: Axes | None = None) -> Axes:
    """A KPI against a swept value: the median line and the 5-95 % band across replicates, dots per run.

    ``by`` draws one line (and band) per value of that column, e.g. per scenario.
    """
    ax = _ax(ax)
    groups = [(None, summary)] if by is None else list(summary.groupby(by, sort=True))
    for i, (name, sub) in enumerate(groups):
        color = f"C{i}"
        b = kpi_bands(sub, kpi, x)
        xs = b.index.to_numpy()
        label = "median" if name is None else f"{by}={name}"
        ax.fill_between(xs, b["q05"], b["q95"], color=color, alpha=0.2, linewidth=0,
                        label="5-95 % of runs" if i == 0 else "_")  # fmt: skip
        ax.plot(xs, b["q50"], color=color, marker="o", linewidth=1.8, label=label)
        ax.scatter(sub[x], sub[kpi], s=8, color=color, alpha=0.6, zorder=3)
    ax.set_xlabel(x, fontsize=8)
    _kpi_axis(ax, kpi)
    ax.set_title(f"{KPI_LABELS.get(kpi, kpi)} vs {x}", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return ax


def plot_paired(summary: pd.DataFrame, kpi: str, a: Any, b: Any, by: str = "scenario", pair: str = "seed",
                ax: Axes | None = None) -> Axes:  # fmt: skip
    """Paired comparison: one line per seed from its ``kpi`` under ``a`` to under ``b``.

    With common random numbers (same seeds in both arms) the slope of each
    line is the effect net of the seed's luck; the title gives the median
    paired difference and how many seeds moved the same way.
    """
    ax = _ax(ax, figsize=(4.5, 4))
    wide = summary[summary[by].isin([a, b])].pivot_table(index=pair, columns=by, values=kpi, aggfunc="mean").dropna()
    if a not in wide or b not in wide:
        raise ValueError(f"no paired runs: need rows with {by} = {a!r} and {b!r} sharing a {pair}")
    diff = wide[b] - wide[a]
    for _, r in wide.iterrows():
        up = r[b] >= r[a]
        ax.plot([0, 1], [r[a], r[b]], color="C2" if up else "C3", marker="o", markersize=4, alpha=0.7)
    ax.plot([0, 1], [wide[a].median(), wide[b].median()], color="black", linewidth=3, label="median")
    ax.set_xticks([0, 1], [str(a), str(b)], fontsize=8)
    ax.set_xlim(-0.3, 1.3)
    _kpi_axis(ax, kpi)
    n_up = int((diff > 0).sum())
    med = float(diff.median())
    rel = med / float(wide[a].median()) if wide[a].median() else np.nan
    ax.set_title(f"{kpi}: median paired change {med:+,.3g} ({rel:+.1%}), up in {n_up} of {len(diff)} seeds", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return ax


def daily_bands(daily: pd.DataFrame, kpi: str = "cpm", run: str | Sequence[str] = "seed",
                quantiles: tuple[float, float, float] = (0.05, 0.5, 0.95)) -> pd.DataFrame:  # fmt: skip
    """Per day, the 5/50/95 % quantiles across runs of a market KPI computed from each run's campaign rows."""
    keys = [run] if isinstance(run, str) else list(run)
    per_run = []
    for key, sub in daily.groupby(keys, sort=True):
        m = market_daily_kpis(sub)
        m["_run"] = [key] * len(m)
        per_run.append(m)
    long = pd.concat(per_run)
    g = long.groupby(level=0)[kpi]
    lo, mid, hi = quantiles
    return pd.DataFrame({"q05": g.quantile(lo), "q50": g.quantile(mid), "q95": g.quantile(hi), "n": g.count()})


def plot_daily_bands(daily: pd.DataFrame, kpi: str = "cpm", run: str | Sequence[str] = "seed", events: pd.DataFrame | None = None,
                     ax: Axes | None = None, label: str | None = None, color: str = "C0") -> Axes:  # fmt: skip
    """A market KPI over time across replicates: the median line in a 5-95 % band.

    ``daily`` is the ``advertiser_daily`` table of many runs stacked (e.g. a
    batch folder read with pandas or DuckDB), with a ``run`` column telling the
    runs apart.
    """
    ax = _ax(ax)
    b = daily_bands(daily, kpi, run)
    x = _noon(b.index)
    n_runs = int(b["n"].max()) if len(b) else 0
    ax.fill_between(x, b["q05"], b["q95"], color=color, alpha=0.25, linewidth=0, label=f"5-95 % of {n_runs} runs")
    ax.plot(x, b["q50"], color=color, linewidth=1.8, label=label or "median")
    if events is not None:
        mark_events(ax, events)
    _kpi_axis(ax, kpi)
    ax.set_title(f"{KPI_LABELS.get(kpi, kpi)} per day across replicates", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.tick_params(labelsize=7)
    _date_axis(ax)
    return ax


def batch_report_figure(summary: pd.DataFrame, kpis: Sequence[str] = ("cpm", "cpc", "cpa", "ctr", "roas", "spend"),
                        title: str = "Batch report", by: str = "scenario") -> Figure:  # fmt: skip
    """The batch report: each KPI across replicates (5-50-95 % per scenario), or against the sweep.

    Without a sweep: one replicate-band panel per KPI (a row per scenario).
    With a sweep: one panel per KPI against the first swept column (a line per
    value of the second swept column, or per scenario).  Failed runs are left out.
    """
    if "status" in summary:
        summary = summary[summary["status"].fillna("complete") == "complete"]
    kpis = [k for k in kpis if k in summary and summary[k].notna().any()]
    sweeps = sweep_columns(summary)
    ncols = min(3, max(1, len(kpis)))
    nrows = max(1, int(np.ceil(len(kpis) / ncols)))
    fig = Figure(figsize=(5.4 * ncols, 3.8 * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = list(axes.flat)
    hue = sweeps[1] if len(sweeps) > 1 else (by if by in summary and summary[by].nunique() > 1 else None)
    for ax, k in zip(flat, kpis, strict=False):
        if sweeps:
            plot_sweep(summary, sweeps[0], k, by=hue, ax=ax)
        else:
            plot_replicate_bands(summary, k, by=by if by in summary else summary.columns[0], ax=ax)
    for ax in flat[len(kpis):]:
        ax.axis("off")
    if not kpis:
        flat[0].text(0.5, 0.5, "no finished runs with KPIs", ha="center", transform=flat[0].transAxes)
    n_seeds = summary.groupby([c for c in (by, *sweeps) if c in summary]).size().max() if len(summary) and by in summary else len(summary)
    what = f"{len(summary)} runs, up to {n_seeds} replicates each" + (f", swept: {', '.join(sweeps)}" if sweeps else "")
    fig.suptitle(f"{title}: {what}", fontsize=13)
    return fig


def save_batch_report(summary: pd.DataFrame, path: str | Path, title: str = "Batch report") -> Path:
    fig = batch_report_figure(summary, title=title)
    _save_png(fig, path, dpi=80)
    return Path(path)
