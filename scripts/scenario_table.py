"""Run every shipped scenario and regenerate the table in scenarios/README.md.

Each scenario is run at its shipped scale and seed (every point of its
``[sweep]`` grid, each run with the same seed); the key figure is computed from
the run's tables, never typed in.  The table between the markers in
``scenarios/README.md`` is replaced; nothing else in the file changes.

    python scripts/scenario_table.py              # all scenarios, rewrite the table
    python scripts/scenario_table.py --only dayparting --print   # one scenario, print only
    python scripts/scenario_table.py --users 3000 --print        # quick look at a small scale
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Many small markets, one after the other: one kernel thread each is faster on a shared machine
# than a thread pool per auction chunk (results are identical either way).
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulator import run  # noqa: E402
from simulator.results import Result  # noqa: E402
from simulator.scenario import apply_overrides, parse_scenario  # noqa: E402

SCENARIOS = ROOT / "scenarios"
README = SCENARIOS / "README.md"
BEGIN, END = "<!-- BEGIN scenario-table -->", "<!-- END scenario-table -->"

Runs = list[tuple[dict[str, Any], Result]]


# ---------------------------------------------------------------------- running


def grid(sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a ``[sweep]`` table (one empty point if there is none)."""
    if not sweep:
        return [{}]
    keys = list(sweep)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(sweep[k] for k in keys))]


def run_scenario(path: Path, users: int | None = None) -> Runs:
    """Run a scenario file once per point of its sweep grid."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    sweep = data.pop("sweep", {})
    out: Runs = []
    for point in grid(sweep):
        overrides = dict(point)
        if users is not None:
            overrides["population.users"] = users
        scenario = parse_scenario(apply_overrides(data, overrides), str(path))
        out.append((point, run(scenario)))
    return out


# ---------------------------------------------------------------------- helpers


def by_date(daily: pd.DataFrame) -> pd.DataFrame:
    """Market totals per date from ``advertiser_daily``, with CPM (yuan) and conversion rate."""
    g = daily.groupby("date")[["impressions", "clicks", "conversions", "spend"]].sum()
    g["cpm"] = g["spend"] * 1000 / g["impressions"].replace(0, np.nan)
    g["cpc"] = g["spend"] / g["clicks"].replace(0, np.nan)
    g["cvr"] = g["conversions"] / g["clicks"].replace(0, np.nan)
    g["cpa"] = g["spend"] / g["conversions"].replace(0, np.nan)
    return g


def totals(daily: pd.DataFrame, advertiser: str, dates: slice | None = None) -> dict[str, float]:
    d = daily[daily["advertiser"] == advertiser]
    if dates is not None:
        d = d.set_index("date").loc[dates].reset_index()
    s = d[["impressions", "clicks", "conversions", "spend"]].sum()
    return {
        "impressions": float(s["impressions"]),
        "clicks": float(s["clicks"]),
        "conversions": float(s["conversions"]),
        "spend": float(s["spend"]),
        "cpc": float(s["spend"] / s["clicks"]) if s["clicks"] else float("nan"),
        "cpa": float(s["spend"] / s["conversions"]) if s["conversions"] else float("nan"),
        "cvr": float(s["conversions"] / s["clicks"]) if s["clicks"] else float("nan"),
    }


def pct(x: float) -> str:
    return f"{x:+.0f} %"


# ---------------------------------------------------------------------- figures


def fig_baseline(runs: Runs) -> tuple[str, str]:
    r = runs[0][1]
    s = r.summary()
    spend = r.advertiser_daily.groupby("advertiser")["spend"].sum().sort_values(ascending=False)
    top5 = spend.head(5).sum() / spend.sum()
    shows = (
        f"{s['days']} days, {s['sessions']:,} sessions: {s['fill_rate']:.0%} of ad slots filled, "
        f"CPM {s['cpm']:.1f} yuan, CPC {s['cpc']:.2f}, CTR {s['ctr']:.2%}, mean QS {s['avg_quality_score']:.1f}; "
        f"the top 5 of {len(spend)} advertisers take {top5:.0%} of spend"
    )
    return shows, f"CPM {s['cpm']:.1f} yuan, fill {s['fill_rate']:.0%}"


def fig_singles_day(runs: Runs) -> tuple[str, str]:
    r = runs[0][1]
    g = by_date(r.advertiser_daily)
    m = r.market_daily.set_index("date")
    start = g.index.min()
    early = slice(start, start + pd.Timedelta(days=6))
    peak = pd.Timestamp("2026-11-11")
    cpm = g.loc[peak, "cpm"] / g.loc[early, "cpm"].mean() - 1
    cvr = g.loc[peak, "cvr"] / g.loc[early, "cvr"].mean() - 1
    sessions = m.loc[peak, "sessions"] / m.loc[early, "sessions"].mean() - 1
    presale = slice(pd.Timestamp("2026-10-20"), pd.Timestamp("2026-11-10"))
    cpm_presale = g.loc[presale, "cpm"].mean() / g.loc[early, "cpm"].mean() - 1
    d = r.advertiser_daily
    steady_early = totals(d, "steady_skin", early)["clicks"] / 7
    steady_presale = totals(d, "steady_skin", presale)["clicks"] / len(g.loc[presale])
    glow_early = totals(d, "glow_lab", early)["clicks"] / 7
    glow_presale = totals(d, "glow_lab", presale)["clicks"] / len(g.loc[presale])
    shows = (
        f"11.11 against the first week: sessions {pct(100 * sessions)}, CPM {pct(100 * cpm)}, conversion rate "
        f"{pct(100 * cvr)}; CPM over the whole pre-sale and warm-up {pct(100 * cpm_presale)}. The brand that "
        f"does not react gets {pct(100 * (steady_presale / steady_early - 1))} clicks a day in the season, the "
        f"seasonal twin {pct(100 * (glow_presale / glow_early - 1))}"
    )
    return shows, f"CPM on 11.11 {pct(100 * cpm)} vs early October"


def fig_cny(runs: Runs) -> tuple[str, str]:
    r = runs[0][1]
    g = by_date(r.advertiser_daily)
    start = g.index.min()
    before = slice(start, pd.Timestamp("2026-01-25"))
    pause = slice(pd.Timestamp("2026-02-08"), pd.Timestamp("2026-02-16"))
    festival = slice(pd.Timestamp("2026-02-17"), pd.Timestamp("2026-02-23"))
    recovery = slice(pd.Timestamp("2026-02-24"), g.index.max())

    def phase(when: slice) -> dict[str, float]:
        t = g.loc[when, ["clicks", "conversions", "spend", "impressions"]].sum()
        return {"cvr": t["conversions"] / t["clicks"], "cpa": t["spend"] / t["conversions"], "cpm": 1000 * t["spend"] / t["impressions"]}

    b, p, f, rc = phase(before), phase(pause), phase(festival), phase(recovery)
    shows = (
        f"against the week before the rush: conversion rate {pct(100 * (p['cvr'] / b['cvr'] - 1))} in the logistics "
        f"pause and {pct(100 * (f['cvr'] / b['cvr'] - 1))} in the festival week, CPA {pct(100 * (f['cpa'] / b['cpa'] - 1))} "
        f"in the festival week while CPM moves {pct(100 * (f['cpm'] / b['cpm'] - 1))}; recovery: conversion rate "
        f"{pct(100 * (rc['cvr'] / b['cvr'] - 1))}"
    )
    return shows, f"festival-week CPA {pct(100 * (f['cpa'] / b['cpa'] - 1))}"


def fig_quality(runs: Runs) -> tuple[str, str]:
    rows = []
    for point, r in runs:
        qs = point["advertisers.0.campaigns.0.initial_quality"]
        t = totals(r.advertiser_daily, "probe")
        rows.append((qs, t["cpc"], t["clicks"]))
    rows.sort()
    drops = [100 * (1 - b[1] / a[1]) for a, b in zip(rows, rows[1:], strict=False)]
    theory = [100 / (a[0] + 1) for a in rows[:-1]]
    shows = (
        "probe CPC by QS: "
        + ", ".join(f"QS {q:.0f}: {c:.2f} yuan ({n:,.0f} clicks)" for q, c, n in rows)
        + f"; the drop per point is {', '.join(f'{d:.0f} %' for d in drops)} (the formula's 1/(QS+1) alone: "
        + f"{', '.join(f'{t:.0f} %' for t in theory)}; a better rank also wins higher slots with dearer rivals below)"
    )
    return shows, f"{np.mean(drops):.1f} % cheaper clicks per QS point"


def fig_dayparting(runs: Runs) -> tuple[str, str]:
    out = {}
    for point, r in runs:
        mult = point["advertisers.0.strategy.rules.0.multiplier"]
        t = totals(r.advertiser_daily, "night_owl")
        h = r.advertiser_hourly
        h = h[h["advertiser"] == "night_owl"]
        evening = h.loc[h["hour"] >= 20, "spend"].sum() / max(h["spend"].sum(), 1e-9)
        out[mult] = (t, evening)
    flat, eve = out[1.0], out[max(out)]
    shows = (
        f"flat bid: {flat[0]['clicks']:,.0f} clicks at {flat[0]['cpc']:.2f} yuan, {flat[0]['conversions']:.0f} conversions "
        f"at CPA {flat[0]['cpa']:.1f}, {flat[1]:.0%} of spend after 20:00; evening x{max(out):g}: "
        f"{eve[0]['clicks']:,.0f} clicks at {eve[0]['cpc']:.2f}, {eve[0]['conversions']:.0f} conversions at CPA "
        f"{eve[0]['cpa']:.1f}, {eve[1]:.0%} of spend after 20:00"
    )
    return shows, f"evening bids: CPA {pct(100 * (eve[0]['cpa'] / flat[0]['cpa'] - 1))}, clicks {pct(100 * (eve[0]['clicks'] / flat[0]['clicks'] - 1))}"


def hour_90(hourly: pd.DataFrame, daily: pd.DataFrame, advertiser: str) -> tuple[float, float]:
    """Mean hour (end of) by which 90 % of the day's budget was spent, and the share of days it was."""
    h = hourly[hourly["advertiser"] == advertiser].sort_values(["date", "hour"])
    budgets = daily[daily["advertiser"] == advertiser].groupby("date")["daily_budget"].sum()
    hours = []
    for date, day in h.groupby("date"):
        cum = day["spend"].cumsum().to_numpy()
        hit = np.flatnonzero(cum >= 0.9 * budgets.loc[date])
        if hit.size:
            hours.append(int(day["hour"].to_numpy()[hit[0]]) + 1)
    n_days = h["date"].nunique()
    return (float(np.mean(hours)) if hours else float("nan")), len(hours) / max(n_days, 1)


def fig_pacing(runs: Runs) -> tuple[str, str]:
    r = runs[0][1]
    parts, key = [], []
    for name in ("pace_asap", "pace_even", "pace_adaptive", "pace_pid"):
        at, share = hour_90(r.advertiser_hourly, r.advertiser_daily, name)
        t = totals(r.advertiser_daily, name)
        when = f"{at:.1f}:00" if share == 1 else (f"{at:.1f}:00 on {share:.0%} of days" if share > 0 else "never")
        parts.append(f"{name.removeprefix('pace_')}: 90 % by {when}, CPC {t['cpc']:.2f}, {t['clicks']:,.0f} clicks")
        key.append(f"{name.removeprefix('pace_')} {at:.0f}h" if share > 0 else f"{name.removeprefix('pace_')} never")
    return "; ".join(parts), "90 % spent by: " + ", ".join(key)


def fig_playbook(runs: Runs) -> tuple[str, str]:
    d = runs[0][1].advertiser_daily
    o, n = totals(d, "optimized"), totals(d, "naive")
    lower = 100 * (1 - o["cpa"] / n["cpa"])
    qs = d.groupby("advertiser")["quality_score"].mean()
    shows = (
        f"optimized: {o['conversions']:.0f} conversions, CPA {o['cpa']:.1f} yuan, CVR {o['cvr']:.1%}, mean QS "
        f"{qs['optimized']:.1f}; naive: {n['conversions']:.0f} conversions, CPA {n['cpa']:.1f}, CVR {n['cvr']:.1%}, "
        f"mean QS {qs['naive']:.1f}; the playbook's CPA is {lower:.0f} % lower "
        + ("(inside the article's 20-30 %)" if 20 <= lower <= 30 else "(the article claims 20-30 %)")
    )
    return shows, f"CPA {lower:.0f} % lower than the naive twin"


def fig_scaling(runs: Runs) -> tuple[str, str]:
    d = runs[0][1].advertiser_daily
    w1 = slice(pd.Timestamp("2026-09-07"), pd.Timestamp("2026-09-13"))
    w2 = slice(pd.Timestamp("2026-09-14"), pd.Timestamp("2026-09-20"))
    res = {}
    for name in ("scale_lookalike", "scale_bid"):
        a, b = totals(d, name, w1), totals(d, name, w2)
        extra_conv = b["conversions"] - a["conversions"]
        marginal = (b["spend"] - a["spend"]) / extra_conv if extra_conv > 0 else float("inf")
        res[name] = (a, b, marginal)
    parts = [
        f"{k.removeprefix('scale_')}: week 1 {a['conversions']:.0f} conversions for {a['spend']:,.0f} yuan, week 2 "
        f"{b['conversions']:.0f} for {b['spend']:,.0f} (marginal CPA {m:.1f})"
        for k, (a, b, m) in res.items()
    ]
    key = f"marginal CPA: lookalike {res['scale_lookalike'][2]:.1f}, bid {res['scale_bid'][2]:.1f} yuan"
    return "; ".join(parts), key


def fig_creative_ab(runs: Runs) -> tuple[str, str]:
    r = runs[0][1]
    c = r.creative_daily
    c = c[c["campaign"] == "serum_test"].groupby("creative")[["impressions", "clicks"]].sum()
    ctr = c["clicks"] / c["impressions"]
    ev = r.events[r.events["kind"] == "ab_winner"]
    if len(ev):
        when = (pd.Timestamp(ev["date"].iloc[0]) - pd.Timestamp(r.scenario.start_date)).days + 1
        decided = f"decided on day {when}: {ev['detail'].iloc[0].split(':')[0]}"
        winner = ev["detail"].iloc[0].split(" wins")[0]
    else:
        decided, winner = "no winner within the run", "none"
    lift = ctr.max() / ctr.min() - 1
    shows = f"{decided}; CTR over the run " + ", ".join(f"{k} {v:.2%}" for k, v in ctr.items()) + f" ({lift:.0%} apart)"
    return shows, f"winner {winner}, CTR {lift:+.0%}"


def fig_review(runs: Runs) -> tuple[str, str]:
    ev = runs[0][1].events
    ok = ev[ev["kind"] == "creative_approved"].copy()
    ok["hours"] = ok["detail"].str.extract(r"approved after (\d+) h")[0].astype(float)
    rej = ev[ev["kind"] == "creative_rejected"].groupby("campaign").size()
    parts, hours = [], {}
    for camp in ("low_risk_high_qs", "low_risk_low_qs", "medium_risk", "high_risk"):
        h = ok.loc[ok["campaign"] == camp, "hours"]
        # A resubmitted creative is approved at least a day after it was first seen.
        hours[camp] = h.mean()
        parts.append(f"{camp}: {int(rej.get(camp, 0))} of 4 rejected, approval after {h.mean():.0f} h on average")
    key = f"approval {hours['low_risk_high_qs']:.0f} h (low risk, QS 8.5) vs {hours['high_risk']:.0f} h (high risk)"
    return "; ".join(parts), key


def fig_platforms(runs: Runs) -> tuple[str, str]:
    parts, peaks = [], {}
    for point, r in runs:
        d = r.advertiser_daily
        ratio = d["spend"] / d["daily_budget"]
        peak = float(ratio.max())
        total = float(d["spend"].sum() / d.groupby("advertiser")["daily_budget"].first().sum() / r.scenario.days)
        peaks[point["platform"]] = peak
        parts.append(f"{point['platform']}: largest day {peak:.2f}x the daily budget, spend {total:.0%} of budget")
    return "; ".join(parts), ", ".join(f"{k} {v:.2f}x" for k, v in peaks.items()) + " (largest day / budget)"


def fig_generic(runs: Runs) -> tuple[str, str]:
    """A scenario without its own figure: the market's headline numbers and the top spender."""
    r = runs[0][1]
    s = r.summary()
    k = r.kpis()
    shows = (
        f"{s['days']} days: fill {s['fill_rate']:.0%}, CPM {s['cpm']:.1f} yuan, CPC {s['cpc']:.2f}, CPA {s['cpa']:.1f}, "
        f"{r.events['kind'].nunique()} kinds of events logged; top spender {k.index[0]} ({k['spend'].iloc[0]:,.0f} yuan)"
    )
    return shows, f"CPM {s['cpm']:.1f} yuan, CPA {s['cpa']:.1f} yuan"


def question_of(path: Path) -> str:
    """The 'Answers: ...' sentence of a scenario's description."""
    desc = tomllib.loads(path.read_text(encoding="utf-8")).get("description", "")
    return desc.split("Answers:", 1)[1].strip() if "Answers:" in desc else desc.strip()[:120]


#: scenario file stem -> (question, figure function); the table's order.
TABLE: dict[str, tuple[str, Callable[[Runs], tuple[str, str]]]] = {
    "baseline": ("What does an ordinary week look like: prices, fill, quality, who wins?", fig_baseline),
    "singles_day_beauty": ("How much dearer is the feed on 11.11, and why?", fig_singles_day),
    "chinese_new_year": ("What do the logistics pause and the holiday do to conversions and costs?", fig_cny),
    "quality_vs_bid": ("Does one more quality-score point cut cost 5-15 %?", fig_quality),
    "dayparting": ("Do evening bids beat a flat bid for the same budget?", fig_dayparting),
    "pacing_comparison": ("When does each pacing controller spend its budget, at what price?", fig_pacing),
    "playbook_vs_naive": ("Does the optimization playbook cut CPA 20-30 %?", fig_playbook),
    "scaling_lookalike_vs_bid": ("Scale with lookalikes or with higher bids?", fig_scaling),
    "creative_ab": ("UGC video or studio image: which wins, how fast?", fig_creative_ab),
    "review_delays": ("How long do reviews take; what do QS and compliance risk change?", fig_review),
    "platform_profiles": ("How do xhs, google and meta delivery rules move spend?", fig_platforms),
}


def table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| scenario | question | what the run shows | key figure |", "| --- | --- | --- | --- |"]
    for name, question, shows, key in rows:
        lines.append(f"| [`{name}`]({name}.toml) | {question} | {shows} | **{key}** |")
    return "\n".join(lines)


def current_rows() -> list[tuple[str, str, str, str]]:
    """The rows of the table now in the README."""
    rows = []
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| \[`([^`]+)`\]\([^)]*\) \| (.*?) \| (.*?) \| \*\*(.*)\*\* \|$", line)
        if m:
            rows.append(m.groups())
    return rows


def merge(old: list[tuple[str, str, str, str]], new: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """Rows in TABLE order: the new ones where given, else the old ones."""
    by_name = {r[0]: r for r in old} | {r[0]: r for r in new}
    return [by_name[n] for n in TABLE if n in by_name]


def write_readme(text: str) -> None:
    readme = README.read_text(encoding="utf-8")
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{README.name}: markers {BEGIN} / {END} not found")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    README.write_text(pattern.sub(lambda _m: f"{BEGIN}\n{text}\n{END}", readme), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="scenario names (file stems) to run")
    ap.add_argument("--users", type=int, help="override population.users (a quick look; implies --print)")
    ap.add_argument("--print", dest="print_only", action="store_true", help="print the table, do not write the README")
    args = ap.parse_args(argv)
    extra = sorted({p.stem for p in SCENARIOS.glob("*.toml")} - set(TABLE))
    for name in extra:  # files without their own figure get the generic row
        TABLE[name] = (question_of(SCENARIOS / f"{name}.toml"), fig_generic)
    names = args.only or list(TABLE)
    rows = []
    for name in names:
        question, figure = TABLE[name]
        t0 = time.perf_counter()
        runs = run_scenario(SCENARIOS / f"{name}.toml", users=args.users)
        shows, key = figure(runs)
        print(f"{name}: {key} ({time.perf_counter() - t0:.0f} s, {len(runs)} run(s))", file=sys.stderr)
        rows.append((name, question, shows, key))
    if args.print_only or args.users is not None:
        print(table(rows))
    else:
        if args.only:  # replace those rows in the table as it stands, keep the others
            rows = merge(current_rows(), rows)
        write_readme(table(rows))
        print(f"wrote {README.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
