"""Plot functions: from small hand-made tables, the right number of lines and bars, with the right labels and values."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.patches import Rectangle

from simulator import plots
from simulator.quality import FACTOR_COLUMNS

DATES = pd.to_datetime(["2026-11-09", "2026-11-10", "2026-11-11"])
FACTORS = {"qs_relevance": 0.5, "qs_history": 0.4, "qs_content": 0.6, "qs_engagement": 0.3, "qs_landing": 0.8, "qs_reputation": 0.2}
WEIGHTS = {"relevance": 0.2, "history": 0.2, "content": 0.15, "engagement": 0.2, "landing": 0.15, "reputation": 0.1}


def qs_of(f: dict[str, float]) -> float:
    return 1 + 9 * sum(WEIGHTS[k.removeprefix("qs_")] * v for k, v in f.items())


def _row(date, adv, camp, imps, clicks, conv, spend, budget, qs_factors, eligible, order_value=0.0):  # noqa: ANN001, ANN202
    return {
        "date": date,
        "advertiser": adv,
        "campaign": camp,
        "impressions": imps,
        "clicks": clicks,
        "engagements": clicks * 2,
        "conversions": conv,
        "spend": spend,
        "order_value": order_value,
        "daily_budget": budget,
        "quality_score": qs_of(qs_factors),
        **qs_factors,
        "eligible_auctions": eligible,
        "impression_share": imps / eligible,
    }


@pytest.fixture
def daily() -> pd.DataFrame:
    """Three advertisers over three days; ``big`` runs two campaigns with different quality."""
    hi = {k: min(1.0, v + 0.2) for k, v in FACTORS.items()}
    rows = []
    for i, d in enumerate(DATES):
        rows.append(_row(d, "big", "a", 1000, 20, 2, 100.0, 100.0, FACTORS, 2000, 300.0))
        rows.append(_row(d, "big", "b", 3000, 30, 3, 200.0, 400.0, hi, 4000, 500.0))
        rows.append(_row(d, "mid", "a", 2000, 10, 1, 50.0 * (i + 1), 200.0, FACTORS, 8000))
        rows.append(_row(d, "small", "a", 500, 5, 0, 10.0, 50.0, FACTORS, 500))
    return pd.DataFrame(rows)


@pytest.fixture
def events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": [DATES[0], DATES[0], DATES[1], DATES[2]],
            "hour": [0, 0, 0, 0],
            "advertiser": ["", "big", "", ""],
            "campaign": ["", "a", "", ""],
            "kind": ["season", "budget_exhausted", "season", "season"],
            "detail": ["singles_day:warm_up", "spent 100", "singles_day:eve", "singles_day:peak"],
        }
    )


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def data_lines(ax):  # noqa: ANN001, ANN201
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


# ----------------------------------------------------------------------------- one run


def test_top_advertisers_by_spend(daily: pd.DataFrame) -> None:
    # big: 900, mid: 50+100+150 = 300, small: 30
    assert plots.top_advertisers(daily, 2) == ["big", "mid"]
    assert plots.top_advertisers(daily, 10) == ["big", "mid", "small"]


def test_market_daily_kpis_are_ratios_of_sums(daily: pd.DataFrame) -> None:
    m = plots.market_daily_kpis(daily)
    # day 1: spend 100+200+50+10 = 360 over 6,500 impressions, 65 clicks, 6 conversions
    assert m["cpm"].iloc[0] == pytest.approx(360 * 1000 / 6500)
    assert m["cpc"].iloc[0] == pytest.approx(360 / 65)
    assert m["cpa"].iloc[0] == pytest.approx(360 / 6)
    assert m["cpa"].iloc[2] == pytest.approx(460 / 6)


def test_spend_vs_budget_one_panel_per_advertiser_with_a_bar_per_day(daily: pd.DataFrame) -> None:
    axes = plots.plot_spend_vs_budget(daily, n=3)
    assert len(axes) == 4  # 2 x 2 grid, the fourth panel blank
    assert [ax.get_title() for ax in axes[:3]] == [
        "big: 60% of budget spent",  # 900 of 1,500
        "mid: 50% of budget spent",  # 300 of 600
        "small: 20% of budget spent",  # 30 of 150
    ]
    bars = [p for p in axes[1].patches if isinstance(p, Rectangle)]
    assert [b.get_height() for b in bars] == [50.0, 100.0, 150.0]
    budget = [ln for ln in axes[0].get_lines() if ln.get_label() == "daily budget"]
    assert len(budget) == 1 and set(budget[0].get_ydata()) == {500.0}
    assert not axes[3].axison


def test_season_spans_merge_consecutive_days_of_a_phase(events: pd.DataFrame) -> None:
    ev = pd.concat([events, events.iloc[[2]].assign(date=DATES[1])])  # a duplicate row does not double a day
    spans = plots.season_spans(ev)
    assert [(s.strftime("%m-%d"), e.strftime("%m-%d"), lab) for s, e, lab in spans] == [
        ("11-09", "11-09", "warm_up"),
        ("11-10", "11-10", "eve"),
        ("11-11", "11-11", "peak"),
    ]
    two_day = pd.DataFrame({"date": DATES[:2], "kind": "season", "detail": ["cny:festival", "cny:festival"]})
    assert [lab for *_, lab in plots.season_spans(two_day)] == ["festival"]


def test_season_day_with_two_phases_takes_the_most_specific() -> None:
    ev = pd.DataFrame({"date": DATES[:1], "kind": ["season"], "detail": ["singles_day:presale, singles_day:presale_spike"]})
    assert plots.season_days(ev)["phases"].iloc[0] == ["singles_day:presale", "singles_day:presale_spike"]
    assert plots.season_spans(ev)[0][2] == "presale_spike"


def test_prices_stack_has_a_season_strip_and_one_line_per_price(daily: pd.DataFrame, events: pd.DataFrame) -> None:
    axes = plots.plot_prices(daily, events)
    assert len(axes) == 4
    strip, cpm, cpc, cpa = axes
    assert sorted(t.get_text() for t in strip.texts) == ["eve", "peak", "warm up"]
    for ax, label in ((cpm, "CPM"), (cpc, "CPC"), (cpa, "CPA")):
        lines = data_lines(ax)
        assert len(lines) == 1 and lines[0].get_label() == label
        assert ax.get_ylabel() == f"{label} (yuan)"
        assert len(ax.patches) == 3  # three shaded phase bands
    np.testing.assert_allclose(data_lines(cpc)[0].get_ydata(), [360 / 65, 410 / 65, 460 / 65])
    # no season: no strip
    assert len(plots.plot_prices(daily, None)) == 3


def test_quality_lines_are_impression_weighted(daily: pd.DataFrame) -> None:
    ax = plots.plot_quality(daily, n=2, min_quality=3.0)
    lines = data_lines(ax)
    assert [ln.get_label() for ln in lines] == ["big", "mid"]
    hi = {k: min(1.0, v + 0.2) for k, v in FACTORS.items()}
    expected = (1000 * qs_of(FACTORS) + 3000 * qs_of(hi)) / 4000
    np.testing.assert_allclose(lines[0].get_ydata(), [expected] * 3)
    assert [t.get_text() for t in ax.texts][-2:] == ["big", "mid"]  # names at the line ends


def test_quality_breakdown_sums_to_the_score(daily: pd.DataFrame) -> None:
    b = plots.quality_breakdown(daily, WEIGHTS)
    assert b.loc["small", "qs_relevance"] == pytest.approx(9 * 0.2 * 0.5)
    assert b.loc["small", "quality_score"] == pytest.approx(qs_of(FACTORS))
    got = daily.groupby("advertiser").apply(lambda d: np.average(d["quality_score"], weights=d["impressions"]), include_groups=False)
    np.testing.assert_allclose(b["quality_score"].sort_index(), got.sort_index())


def test_quality_breakdown_plot_has_six_segments_per_advertiser(daily: pd.DataFrame) -> None:
    ax = plots.plot_quality_breakdown(daily, WEIGHTS, n=3)
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 6 * 3
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "ad relevance (20%)" and labels[-1] == "account reputation (10%)"
    ticks = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True)}
    assert ticks["big"] > ticks["mid"] > ticks["small"]  # top spender on top
    assert f"{qs_of(FACTORS):.1f}" in [t.get_text() for t in ax.texts]


def test_factors_one_line_per_factor(daily: pd.DataFrame) -> None:
    ax = plots.plot_factors(daily, "mid")
    lines = data_lines(ax)
    assert [ln.get_label() for ln in lines] == [plots.FACTOR_LABELS[c] for c in FACTOR_COLUMNS]
    np.testing.assert_allclose(lines[4].get_ydata(), [0.8] * 3)  # landing page
    assert ax.get_title() == "Quality factors of mid (0-1)"


def test_impression_share_is_won_over_eligible(daily: pd.DataFrame, events: pd.DataFrame) -> None:
    ax = plots.plot_impression_share(daily, n=3, events=events)
    lines = data_lines(ax)
    assert [ln.get_label() for ln in lines] == ["big", "mid", "small"]
    np.testing.assert_allclose(lines[0].get_ydata(), [4000 / 6000] * 3)
    np.testing.assert_allclose(lines[1].get_ydata(), [0.25] * 3)
    assert len(ax.patches) == 3


def test_hour_heatmap_grid_and_image() -> None:
    # Monday 2026-11-09 and Tuesday 2026-11-10; two campaigns in hour 20 on Monday
    hourly = pd.DataFrame(
        {
            "date": [DATES[0], DATES[0], DATES[0], DATES[1]],
            "hour": [20, 20, 9, 20],
            "advertiser": ["a", "b", "a", "a"],
            "campaign": ["c", "c", "c", "c"],
            "impressions": [1000, 1000, 500, 2000],
            "clicks": [10, 30, 5, 20],
            "conversions": [1, 0, 0, 2],
            "spend": [30.0, 50.0, 5.0, 40.0],
        }
    )
    grid = plots.hour_weekday_grid(hourly, "spend")
    assert grid.shape == (7, 24)
    assert grid.loc[0, 20] == 80.0 and grid.loc[0, 9] == 5.0 and grid.loc[1, 20] == 40.0
    assert np.isnan(grid.loc[2, 20]) and np.isnan(grid.loc[0, 3])
    cpm = plots.hour_weekday_grid(hourly, "cpm")
    assert cpm.loc[0, 20] == pytest.approx(80 * 1000 / 2000)
    ax = plots.plot_hour_heatmap(hourly, "cpm")
    assert len(ax.images) == 1
    assert [t.get_text() for t in ax.get_yticklabels()] == plots.WEEKDAYS
    assert ax.images[0].colorbar.ax.get_ylabel() == "yuan per 1,000 impressions"


def test_kpi_table_rows_and_market_total(daily: pd.DataFrame) -> None:
    k = plots.kpi_rows(daily, n=2)
    assert list(k.index) == ["big", "mid", "market (3 advertisers)"]
    assert k.loc["market (3 advertisers)", "spend"] == pytest.approx(1230.0)
    assert k.loc["big", "budget_used"] == pytest.approx(0.6)
    assert k.loc["mid", "cpa"] == pytest.approx(100.0)
    ax = plots.plot_kpi_table(daily, n=2)
    cells = ax.tables[0].get_celld()
    assert cells[(0, 1)].get_text().get_text() == "spend (yuan)"
    assert cells[(3, 0)].get_text().get_text() == "market (3 advertisers)"
    assert cells[(3, 1)].get_text().get_text() == "1,230"
    assert cells[(2, 8)].get_text().get_text() == "100.0"  # mid's CPA, yuan


def test_report_figure_of_a_run(small_run) -> None:  # noqa: ANN001
    fig = plots.report_figure(small_run.tables, title="small", scenario=small_run.scenario)
    axes = fig.get_axes()
    titles = {ax.get_title() for ax in axes}
    assert "Quality score of the top spenders (1-10)" in titles
    assert "KPIs over the whole run: top spenders and the market" in titles
    assert any(t.startswith("What makes up the quality score") for t in titles)
    assert sum(len(ax.images) for ax in axes) == 1  # the heat map


def test_report_of_an_empty_run_says_so(small_run) -> None:  # noqa: ANN001
    tables = {k: v.iloc[:0] for k, v in small_run.tables.items()}
    fig = plots.report_figure(tables, title="empty")
    assert any("no impressions" in t.get_text() for ax in fig.get_axes() for t in ax.texts)


def test_report_png_has_the_pixels_of_a_plain_savefig(small_run, tmp_path, monkeypatch) -> None:
    """save_report's shortcuts (one draw, pinned titles, remembered date ticks) change no pixel."""
    fast = plots.save_report(small_run.tables, tmp_path / "fast.png", title="small", scenario=small_run.scenario)
    monkeypatch.setattr(plots, "_pin_titles", lambda fig: None)
    plain = tmp_path / "plain.png"
    fig = plots.report_figure(small_run.tables, title="small", scenario=small_run.scenario)
    fig.savefig(plain, dpi=80, format="png")
    a, b = plt.imread(fast), plt.imread(plain)
    assert a.shape == b.shape == (1680, 1280, 4)
    np.testing.assert_array_equal(a, b)


def test_day_bars_are_the_bars_of_ax_bar() -> None:
    x = pd.date_range("2026-11-01", periods=6) + pd.Timedelta(hours=12)
    heights = [3.0, 0.0, 5.0, np.nan, 1.0, 2.5]
    axes = []
    for fast in (False, True):
        fig = plt.figure(figsize=(3, 2), dpi=50)
        ax = fig.add_subplot()
        if fast:
            plots._day_bars(ax, x, heights, width=0.8, color="C1", alpha=0.85, label="spend")
        else:
            ax.bar(x, heights, width=0.8, color="C1", alpha=0.85, label="spend", linewidth=0)
        ax.plot(x, [4.0] * len(x), label="budget")
        ax.legend()
        fig.canvas.draw()
        axes.append(ax)
    ref, got = axes

    def bars(ax):
        return [(r.get_xy(), r.get_width(), r.get_height(), r.get_facecolor(), r.get_edgecolor(), r.get_linewidth())
                for r in ax.patches]  # fmt: skip

    np.testing.assert_equal(bars(got), bars(ref))
    assert got.get_xlim() == ref.get_xlim()
    assert got.get_ylim() == ref.get_ylim()
    assert [t.get_text() for t in got.get_legend().get_texts()] == [t.get_text() for t in ref.get_legend().get_texts()]
    pixels = [np.asarray(ax.figure.canvas.buffer_rgba()) for ax in (got, ref)]
    np.testing.assert_array_equal(*pixels)


def test_cli_report_redraws_the_png(small_run, tmp_path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from simulator.cli import app
    from simulator.results import write_run

    out = write_run(small_run, tmp_path / "run", report=False)
    assert not (out / "report.png").exists()
    res = CliRunner().invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    assert not list(out.glob("*.tmp*"))
    bad = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "no manifest.json" in bad.output


# ----------------------------------------------------------------------------- batches


@pytest.fixture
def summary() -> pd.DataFrame:
    rows = []
    for scen, base in (("calm", 40.0), ("hot", 60.0)):
        for seed in range(5):
            rows.append({"scenario": scen, "seed": seed, "sweep": "base", "cpm": base + seed, "ctr": 0.02 + 0.001 * seed, "status": "complete"})
    return pd.DataFrame(rows)


def test_kpi_bands_quantiles(summary: pd.DataFrame) -> None:
    b = plots.kpi_bands(summary, "cpm")
    assert list(b.index) == ["calm", "hot"]
    # five values 40..44: 5 % -> 40.2, median 42, 95 % -> 43.8 (linear interpolation)
    assert b.loc["calm", ["q05", "q50", "q95", "n"]].tolist() == pytest.approx([40.2, 42.0, 43.8, 5])
    assert b.loc["hot", "q50"] == 62.0


def test_replicate_bands_one_band_and_dots_per_scenario(summary: pd.DataFrame) -> None:
    ax = plots.plot_replicate_bands(summary, "cpm")
    bands = [ln for ln in ax.get_lines() if ln.get_linewidth() == 9]
    assert len(bands) == 2
    assert sorted(tuple(b.get_xdata()) for b in bands) == [(40.2, 43.8), (60.2, 63.8)]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 10  # a dot per run
    assert [t.get_text() for t in ax.get_yticklabels()] == ["calm\n(n=5)", "hot\n(n=5)"]
    assert ax.get_xlabel() == "CPM (yuan per 1,000 impressions)"


def test_sweep_median_line_and_band() -> None:
    rows = [{"scenario": "s", "seed": k, "sweep.auction.reserve_ecpm": r, "cpm": r * 2 + k} for r in (5.0, 10.0, 20.0) for k in range(3)]
    summary = pd.DataFrame(rows)
    assert plots.sweep_columns(summary) == ["sweep.auction.reserve_ecpm"]
    ax = plots.plot_sweep(summary, "sweep.auction.reserve_ecpm", "cpm")
    lines = data_lines(ax)
    assert len(lines) == 1
    np.testing.assert_allclose(lines[0].get_xdata(), [5, 10, 20])
    np.testing.assert_allclose(lines[0].get_ydata(), [11, 21, 41])  # medians over seeds 0, 1, 2
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 1  # one band
    two = plots.plot_sweep(summary.assign(scenario=["a", "b", "c"] * 3), "sweep.auction.reserve_ecpm", "cpm", by="scenario")
    assert [ln.get_label() for ln in data_lines(two)] == ["scenario=a", "scenario=b", "scenario=c"]


def test_sweep_columns_by_elimination() -> None:
    s = pd.DataFrame({"scenario": ["a"] * 4, "seed": [1, 2, 1, 2], "budget_scale": [1, 1, 2, 2], "cpm": [1.0, 2, 3, 4], "status": "complete"})
    assert plots.sweep_columns(s) == ["budget_scale"]


def test_paired_comparison_lines_and_title(summary: pd.DataFrame) -> None:
    s = summary.copy()
    s.loc[(s["scenario"] == "hot") & (s["seed"] == 4), "cpm"] = 10.0  # one seed goes down
    ax = plots.plot_paired(s, "cpm", "calm", "hot")
    per_seed = [ln for ln in ax.get_lines() if ln.get_label() != "median"]
    assert len(per_seed) == 5
    assert ax.get_title() == "cpm: median paired change +20 (+47.6%), up in 4 of 5 seeds"
    with pytest.raises(ValueError, match="no paired runs"):
        plots.plot_paired(s, "cpm", "calm", "missing")


def test_daily_bands_across_runs(daily: pd.DataFrame, events: pd.DataFrame) -> None:
    stacked = pd.concat([daily.assign(seed=k, spend=daily["spend"] * (1 + k)) for k in range(3)])
    b = plots.daily_bands(stacked, "cpm")
    first = 360 * 1000 / 6500
    assert b["q50"].iloc[0] == pytest.approx(2 * first)
    assert b["q05"].iloc[0] == pytest.approx(first * 1.1)
    ax = plots.plot_daily_bands(stacked, "cpm", events=events)
    assert [ln.get_label() for ln in data_lines(ax)] == ["median"]
    assert ax.get_legend().get_texts()[0].get_text() == "5-95 % of 3 runs"


def test_batch_report_figure_panels(summary: pd.DataFrame) -> None:
    fig = plots.batch_report_figure(summary, kpis=("cpm", "ctr", "roas"))
    drawn = [ax for ax in fig.get_axes() if ax.axison]
    assert len(drawn) == 2  # roas is not in the summary
    assert "10 runs, up to 5 replicates each" in fig.get_suptitle()
    failed = pd.concat([summary, summary.iloc[:1].assign(status="failed", cpm=np.nan)])
    assert "10 runs" in plots.batch_report_figure(failed, kpis=("cpm",)).get_suptitle()


@pytest.fixture(scope="module")
def small_run():  # noqa: ANN201
    from simulator.results import run
    from tests.conftest import make_scenario

    return run(make_scenario({"days": 3}), report=False)


# ----------------------------------------------------------------------------- interactive page (extra "viz")


def test_explorer_model_steps_and_draws() -> None:
    pytest.importorskip("solara")
    from simulator import viz

    model = viz.MarketExplorer(users=2_000, days=2, singles_day=True, reserve_ecpm=10.0)
    assert model.config.auction.reserve_ecpm == 10.0 and str(model.config.start_date) == "2026-11-01"
    assert "nothing simulated" in viz.headline(model)
    assert not viz.figure_prices(model).axes[0].axison  # "press Step" placeholder
    model.step()
    model.step()
    assert not model.running and model.day == 2
    model.step()  # a step past the end does nothing
    assert model.day == 2
    assert viz.headline(model).startswith("day 2 of 2 (02 Nov): revenue ")
    titles = [ax.get_title(loc="left") for ax in viz.figure_prices(model).axes]
    assert titles == ["Season phases (from the events table)", *(plots.PRICE_LABELS[m] for m in ("cpm", "cpc", "cpa"))]
    assert len(viz.figure_spend(model).axes) == 4
    page = viz.make_page(model)
    assert page.component.name == "SolaraViz"
    assert set(page.kwargs["model_params"]) == set(viz.MODEL_PARAMS)
    assert len(page.kwargs["components"]) == 4


def test_days_out_of_the_market_do_not_count_as_unspent_budget(daily: pd.DataFrame) -> None:
    d = daily.copy()
    first = (d["advertiser"] == "mid") & (d["date"] == DATES[0])
    d.loc[first, ["impressions", "clicks", "conversions", "eligible_auctions", "spend"]] = 0  # not started yet
    axes = plots.plot_spend_vs_budget(d, n=2)
    assert axes[1].get_title() == "mid: 62% of budget spent"  # 250 of 2 x 200, not of 3 x 200
    assert plots.kpi_rows(d, n=2).loc["mid", "budget_used"] == pytest.approx(250 / 400)
    line = data_lines(plots.plot_quality(d, n=2))[1]
    assert np.isnan(line.get_ydata()[0]) and np.isfinite(line.get_ydata()[1])


def test_a_line_that_stops_early_is_still_named(daily: pd.DataFrame) -> None:
    d = daily.copy()
    last = (d["advertiser"] == "mid") & (d["date"] == DATES[-1])
    d.loc[last, ["impressions", "clicks", "conversions", "eligible_auctions", "spend"]] = 0  # left the market
    ax = plots.plot_quality(d, n=3)
    labels = {t.get_text(): t.xy for t in ax.texts}
    assert set(labels) == {"big", "mid", "small"}
    assert labels["mid"][0] < labels["big"][0]  # at its own last day
