"""Plots: functions that take a run's (or a batch's) DataFrames and draw on matplotlib Axes.

Each ``plot_*`` function takes DataFrames and an optional ``ax`` and returns
the ``Axes`` it drew on, so notebooks compose them; ``report_figure`` puts the
standard panels of a run together and ``save_report`` writes ``report.png``.
The model knows nothing about plots; plots know nothing about the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from simulator.quality import FACTOR_COLUMNS  # noqa: E402

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def _ax(ax: Axes | None) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    return ax


def _date_axis(ax: Axes) -> None:
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=8))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))


def top_advertisers(daily: pd.DataFrame, n: int = 6) -> list[str]:
    """The ``n`` advertisers with the most spend."""
    return list(daily.groupby("advertiser")["spend"].sum().sort_values(ascending=False).head(n).index)


def plot_spend_vs_budget(daily: pd.DataFrame, n: int = 5, ax: Axes | None = None) -> Axes:
    """Daily spend (solid) against daily budget (dashed) of the top advertisers, yuan."""
    ax = _ax(ax)
    by = daily.groupby(["advertiser", "date"], as_index=False)[["spend", "daily_budget"]].sum()
    for i, name in enumerate(top_advertisers(daily, n)):
        d = by[by["advertiser"] == name]
        color = f"C{i}"
        ax.plot(d["date"], d["spend"], color=color, label=name)
        ax.plot(d["date"], d["daily_budget"], color=color, linestyle="--", linewidth=0.8, label="_budget")
    ax.set_title("Daily spend (solid) vs budget (dashed)")
    ax.set_ylabel("yuan per day")
    ax.legend(fontsize=7, loc="upper left", ncols=2)
    _date_axis(ax)
    return ax


def mark_events(ax: Axes, events: pd.DataFrame | None) -> None:
    """Shade the days of seasonal events (from the ``seasonal`` rows of the events table)."""
    if events is None or events.empty:
        return
    days = pd.to_datetime(events.loc[events["kind"] == "season", "date"]).drop_duplicates().sort_values()
    for d in days:
        ax.axvspan(d, d + pd.Timedelta(days=1), color="orange", alpha=0.12, linewidth=0)


def plot_prices(daily: pd.DataFrame, market: pd.DataFrame | None = None, events: pd.DataFrame | None = None, ax: Axes | None = None) -> Axes:
    """Market CPM, CPC and CPA over time (yuan), season days shaded."""
    ax = _ax(ax)
    g = daily.groupby("date")[["spend", "impressions", "clicks", "conversions"]].sum()
    cpm = g["spend"] * 1000 / g["impressions"].replace(0, np.nan)
    cpc = g["spend"] / g["clicks"].replace(0, np.nan)
    cpa = g["spend"] / g["conversions"].replace(0, np.nan)
    ax.plot(g.index, cpm, label="CPM (per 1,000 impr.)", color="C0")
    ax.plot(g.index, cpc * 10, label="CPC x 10", color="C1")
    ax.plot(g.index, cpa / 10, label="CPA / 10", color="C2")
    mark_events(ax, events)
    ax.set_title("Prices over time (shaded: season)")
    ax.set_ylabel("yuan")
    ax.legend(fontsize=7, loc="upper left")
    _date_axis(ax)
    return ax


def plot_quality(daily: pd.DataFrame, n: int = 5, ax: Axes | None = None) -> Axes:
    """Quality score trajectories of the top advertisers (impression-weighted over their campaigns)."""
    ax = _ax(ax)
    for i, name in enumerate(top_advertisers(daily, n)):
        d = daily[daily["advertiser"] == name].groupby("date")["quality_score"].mean()
        ax.plot(d.index, d.values, color=f"C{i}", label=name)
    ax.set_ylim(1, 10)
    ax.set_title("Quality score (1-10)")
    ax.set_ylabel("QS")
    ax.legend(fontsize=7, loc="lower left", ncols=2)
    _date_axis(ax)
    return ax


def plot_factors(daily: pd.DataFrame, advertiser: str | None = None, ax: Axes | None = None) -> Axes:
    """The six quality factors (0-1) over time of one advertiser (default: the top spender)."""
    ax = _ax(ax)
    name = advertiser or top_advertisers(daily, 1)[0]
    d = daily[daily["advertiser"] == name].groupby("date")[list(FACTOR_COLUMNS)].mean()
    for i, col in enumerate(FACTOR_COLUMNS):
        ax.plot(d.index, d[col], color=f"C{i}", label=col.removeprefix("qs_"))
    ax.set_ylim(0, 1)
    ax.set_title(f"Quality factors of {name}")
    ax.set_ylabel("factor (0-1)")
    ax.legend(fontsize=7, loc="lower left", ncols=3)
    _date_axis(ax)
    return ax


def plot_impression_share(daily: pd.DataFrame, n: int = 5, ax: Axes | None = None) -> Axes:
    """Impression share (won / eligible auctions) of the top advertisers."""
    ax = _ax(ax)
    g = daily.groupby(["advertiser", "date"])[["impressions", "eligible_auctions"]].sum().reset_index()
    for i, name in enumerate(top_advertisers(daily, n)):
        d = g[g["advertiser"] == name]
        ax.plot(d["date"], d["impressions"] / d["eligible_auctions"].replace(0, np.nan), color=f"C{i}", label=name)
    ax.set_ylim(0, 1)
    ax.set_title("Impression share")
    ax.set_ylabel("share of eligible auctions")
    ax.legend(fontsize=7, loc="upper left", ncols=2)
    _date_axis(ax)
    return ax


def plot_hour_heatmap(hourly: pd.DataFrame, value: str = "spend", ax: Axes | None = None) -> Axes:
    """Mean spend (or another column) by hour of day x weekday."""
    ax = _ax(ax)
    h = hourly.groupby(["date", "hour"])[value].sum().reset_index()
    h["weekday"] = pd.to_datetime(h["date"]).dt.weekday
    grid = h.pivot_table(index="weekday", columns="hour", values=value, aggfunc="mean").reindex(index=range(7), columns=range(24))
    im = ax.imshow(grid.values, aspect="auto", cmap="viridis")
    ax.set_yticks(range(7), WEEKDAYS)
    ax.set_xticks(range(0, 24, 3))
    ax.set_xlabel("hour of day")
    ax.set_title(f"Mean {value} by hour x weekday" + (" (yuan)" if value == "spend" else ""))
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return ax


def plot_kpi_table(daily: pd.DataFrame, n: int = 8, ax: Axes | None = None) -> Axes:
    """The KPI table of the top advertisers as a figure panel."""
    from simulator.results import kpi_table

    ax = _ax(ax)
    k = kpi_table(daily).head(n)
    cells = [
        [name, f"{r.spend:,.0f}", f"{int(r.impressions):,}", f"{r.ctr:.2%}", f"{r.cpc:.2f}", f"{r.cpa:.1f}", f"{r.roas:.2f}", f"{r.quality_score:.1f}"]
        for name, r in k.iterrows()
    ]
    ax.axis("off")
    table = ax.table(
        cellText=cells,
        colLabels=["advertiser", "spend (yuan)", "impr.", "CTR", "CPC", "CPA", "ROAS", "QS"],
        loc="center",
        cellLoc="right",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1, 1.2)
    ax.set_title("KPIs over the run (top spenders)")
    return ax


def report_figure(tables: dict[str, pd.DataFrame], title: str = "", scenario: Any = None) -> Figure:
    """The run report: six panels a marketer reads at a glance."""
    daily = tables["advertiser_daily"]
    fig, axes = plt.subplots(4, 2, figsize=(14, 17), layout="constrained")
    fig.suptitle(title or "Run report", fontsize=14)
    if daily.empty or daily["impressions"].sum() == 0:
        for ax in axes.flat:
            ax.axis("off")
        axes[0, 0].text(0.5, 0.5, "no impressions were served", ha="center")
        return fig
    plot_spend_vs_budget(daily, ax=axes[0, 0])
    plot_prices(daily, tables.get("market_daily"), tables.get("events"), ax=axes[0, 1])
    plot_quality(daily, ax=axes[1, 0])
    plot_factors(daily, ax=axes[1, 1])
    plot_impression_share(daily, ax=axes[2, 0])
    plot_hour_heatmap(tables["advertiser_hourly"], ax=axes[2, 1])
    gs = axes[3, 0].get_gridspec()
    axes[3, 0].remove()
    axes[3, 1].remove()
    plot_kpi_table(daily, ax=fig.add_subplot(gs[3, :]))
    return fig


def save_report(tables: dict[str, pd.DataFrame], path: str | Path, title: str = "", scenario: Any = None) -> Path:
    fig = report_figure(tables, title=title, scenario=scenario)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
