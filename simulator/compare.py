"""Comparing two runs or batches: per-advertiser KPI differences, paired where seeds match.

Each side is a run folder, or a folder holding run folders of one scenario (and
one sweep point): a batch partition such as ``OUT/scenario=even`` or
``OUT/scenario=x/sweep=g1a2b3c4d``.  Per run, each advertiser's totals over the
run (spend, impressions, ... CPA, ROAS: :func:`simulator.results.kpi_table`)
plus a ``(all)`` row for the whole market.  Where both sides ran the same
replicate seeds (common random numbers: same root seed), the difference B - A
is taken seed by seed and its mean gets a Student-t 95 % confidence interval;
without shared seeds, the difference of means gets a Welch interval.

Reads only ``advertiser_daily.parquet`` and ``manifest.json`` of each run, one
run at a time; it never changes a run folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simulator.results import kpi_table

#: KPIs compared, in output order (columns of :func:`simulator.results.kpi_table`).
KPIS = ("spend", "impressions", "clicks", "engagements", "conversions", "order_value", "ctr", "cpm", "cpc", "cpa", "roas", "quality_score")
ALL = "(all)"
LEVEL = 0.95


class CompareError(ValueError):
    """Sides that cannot be compared: ``lines`` holds one readable line per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def find_runs(path: str | Path) -> list[Path]:
    """Complete run folders at or under ``path`` (a folder with ``manifest.json``), sorted."""
    path = Path(path)
    if not path.is_dir():
        raise CompareError([f"{path}: no such folder"])
    if (path / "manifest.json").exists():
        return [path]
    runs = sorted(p.parent for p in path.rglob("manifest.json") if not any(part.endswith(".partial") for part in p.parts))
    if not runs:
        raise CompareError([f"{path}: no finished run folders (folders with manifest.json) under it"])
    return runs


def run_kpis(run: Path) -> tuple[int, str, pd.DataFrame]:
    """(seed, group, per-advertiser KPIs with an ``(all)`` row) of one run folder."""
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    daily = pd.read_parquet(run / "advertiser_daily.parquet")
    kpis = kpi_table(daily)
    total = kpi_table(daily.assign(advertiser=ALL))
    table = pd.concat([total, kpis.sort_index()])
    sweep = manifest.get("batch", {}).get("sweep", "")
    group = manifest.get("name", "?") + (f" (sweep={sweep})" if sweep and sweep != "base" else "")
    return int(manifest["seed"]), group, table


def load_side(path: str | Path) -> dict[int, pd.DataFrame]:
    """seed -> per-advertiser KPI table, for every run of one side."""
    by_seed: dict[int, pd.DataFrame] = {}
    groups: dict[str, Path] = {}
    problems: list[str] = []
    for run in find_runs(path):
        seed, group, table = run_kpis(run)
        groups.setdefault(group, run)
        if seed in by_seed:
            problems.append(f"{path}: two runs with seed {seed} (e.g. {run}); point at one scenario and sweep point")
        by_seed[seed] = table
    if len(groups) > 1:
        names = "; ".join(f"{g} at {p.parent}" for g, p in groups.items())
        problems = [f"{path}: holds runs of {len(groups)} scenarios or sweep points ({names}); point at one of them"]
    if problems:
        raise CompareError(problems[:5])
    return by_seed


def compare(a: str | Path, b: str | Path, kpis: tuple[str, ...] | list[str] = KPIS) -> pd.DataFrame:
    """Per-advertiser KPI differences B - A, paired by seed where both sides share seeds.

    Returns
    -------
    DataFrame
        One row per (advertiser, kpi): ``a_mean, b_mean, diff`` (b_mean - a_mean
        over all runs), ``method`` (``paired`` on the shared seeds, ``welch``
        without shared seeds, ``single`` when there is too little to estimate
        an error), ``n_a, n_b, n_pairs``, ``mean_diff`` (mean of the paired
        differences, or ``diff``), ``se`` and the 95 % interval ``ci_low, ci_high``.
        Advertiser ``(all)`` is the whole market.
    """
    unknown = [k for k in kpis if k not in KPIS]
    if unknown:
        raise CompareError([f"--kpi: unknown KPI {k!r} (one of: {', '.join(KPIS)})" for k in unknown])
    side_a, side_b = load_side(a), load_side(b)
    return compare_tables(side_a, side_b, list(kpis))


def compare_tables(side_a: dict[int, pd.DataFrame], side_b: dict[int, pd.DataFrame], kpis: list[str]) -> pd.DataFrame:
    """The statistics of :func:`compare`, from seed -> KPI table mappings."""
    shared = sorted(set(side_a) & set(side_b))
    advertisers = _advertiser_order(side_a, side_b)
    rows: list[dict[str, Any]] = []
    for adv in advertisers:
        for kpi in kpis:
            va = {s: _value(t, adv, kpi) for s, t in side_a.items()}
            vb = {s: _value(t, adv, kpi) for s, t in side_b.items()}
            xa = np.array([v for v in va.values() if not math.isnan(v)])
            xb = np.array([v for v in vb.values() if not math.isnan(v)])
            row: dict[str, Any] = {
                "advertiser": adv,
                "kpi": kpi,
                "a_mean": xa.mean() if len(xa) else math.nan,
                "b_mean": xb.mean() if len(xb) else math.nan,
                "n_a": len(xa),
                "n_b": len(xb),
            }
            row["diff"] = row["b_mean"] - row["a_mean"]
            if shared:
                d = np.array([vb[s] - va[s] for s in shared])
                d = d[~np.isnan(d)]
                row.update(paired_interval(d))
            else:
                row.update(welch_interval(xa, xb))
            rows.append(row)
    cols = ["advertiser", "kpi", "a_mean", "b_mean", "diff", "method", "n_a", "n_b", "n_pairs", "mean_diff", "se", "ci_low", "ci_high"]
    return pd.DataFrame.from_records(rows, columns=cols)


def _advertiser_order(side_a: dict[int, pd.DataFrame], side_b: dict[int, pd.DataFrame]) -> list[str]:
    names: dict[str, None] = {}
    for side in (side_a, side_b):
        for table in side.values():
            names.update(dict.fromkeys(table.index))
    return [ALL, *sorted(n for n in names if n != ALL)]


def _value(table: pd.DataFrame, adv: str, kpi: str) -> float:
    """A run's KPI for one advertiser; an advertiser absent from a run is NaN there."""
    if adv not in table.index:
        return math.nan
    v = table.at[adv, kpi]
    return math.nan if pd.isna(v) else float(v)


def paired_interval(d: np.ndarray, level: float = LEVEL) -> dict[str, Any]:
    """Mean of paired differences ``d`` and its Student-t interval (n - 1 degrees of freedom)."""
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return {"method": "paired" if n else "none", "n_pairs": n, "mean_diff": mean, "se": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    se = float(d.std(ddof=1) / math.sqrt(n))
    half = t_quantile(0.5 + level / 2, n - 1) * se
    return {"method": "paired", "n_pairs": n, "mean_diff": mean, "se": se, "ci_low": mean - half, "ci_high": mean + half}


def welch_interval(xa: np.ndarray, xb: np.ndarray, level: float = LEVEL) -> dict[str, Any]:
    """Difference of means ``xb - xa`` with a Welch (unequal variances) interval."""
    mean = float(xb.mean() - xa.mean()) if len(xa) and len(xb) else math.nan
    if len(xa) < 2 or len(xb) < 2:
        return {"method": "single", "n_pairs": 0, "mean_diff": mean, "se": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"method": "welch", "n_pairs": 0, "mean_diff": mean, "se": 0.0, "ci_low": mean, "ci_high": mean}
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return {"method": "welch", "n_pairs": 0, "mean_diff": mean, "se": se, "ci_low": mean - half, "ci_high": mean + half}


# ----------------------------------------------------------------------------- Student t


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (real, > 0) degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_cdf`; 1e-12 accurate)."""
    if not 0 < p < 1 or df <= 0:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df > 0 (got p={p}, df={df})")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1 - math.exp(log_front) * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h
