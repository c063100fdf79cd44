"""Results: running a scenario end to end, the run folder, and KPI summaries.

Owns the run folder of DESIGN.md section 8: the resolved ``scenario.toml``,
the Parquet tables, ``report.png`` and ``manifest.json`` (written last).  A
folder is written under a temporary name beside its destination and renamed
into place in one step, so a killed run leaves a complete folder or none.
It never overwrites an existing folder.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simulator import scenario as sc

log = logging.getLogger(__name__)

TABLES = ("advertiser_daily", "advertiser_hourly", "market_daily", "events", "creative_daily")


@dataclass
class Result:
    """A finished run: its resolved scenario, tables (DataFrames) and manifest."""

    scenario: sc.Scenario
    tables: dict[str, pd.DataFrame]
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __getitem__(self, name: str) -> pd.DataFrame:
        """A table by name: ``result["market_daily"]``."""
        return self.tables[name]

    @property
    def advertiser_daily(self) -> pd.DataFrame:
        return self.tables["advertiser_daily"]

    @property
    def advertiser_hourly(self) -> pd.DataFrame:
        return self.tables["advertiser_hourly"]

    @property
    def market_daily(self) -> pd.DataFrame:
        return self.tables["market_daily"]

    @property
    def events(self) -> pd.DataFrame:
        return self.tables["events"]

    @property
    def creative_daily(self) -> pd.DataFrame:
        return self.tables["creative_daily"]

    def kpis(self) -> pd.DataFrame:
        return kpi_table(self.advertiser_daily)

    def summary(self) -> dict[str, Any]:
        return market_summary(self.market_daily, self.advertiser_daily)


def kpi_table(daily: pd.DataFrame) -> pd.DataFrame:
    """Per-advertiser totals over the run: spend, results and costs (yuan)."""
    cols = ["impressions", "clicks", "engagements", "conversions", "spend", "order_value"]
    g = daily.groupby("advertiser", sort=True)
    out = g[cols].sum()
    w = daily["impressions"].where(daily["impressions"] > 0, 0)
    out["quality_score"] = (daily["quality_score"] * w).groupby(daily["advertiser"]).sum() / w.groupby(daily["advertiser"]).sum().replace(0, np.nan)
    out["ctr"] = out["clicks"] / out["impressions"].replace(0, np.nan)
    out["cpm"] = out["spend"] * 1000 / out["impressions"].replace(0, np.nan)
    out["cpc"] = out["spend"] / out["clicks"].replace(0, np.nan)
    out["cpa"] = out["spend"] / out["conversions"].replace(0, np.nan)
    out["roas"] = out["order_value"] / out["spend"].replace(0, np.nan)
    return out.sort_values("spend", ascending=False)


def market_summary(market: pd.DataFrame, daily: pd.DataFrame) -> dict[str, Any]:
    """Headline figures of a run: one dict of plain numbers."""
    imps = float(daily["impressions"].sum())
    spend = float(daily["spend"].sum())
    clicks = float(daily["clicks"].sum())
    conv = float(daily["conversions"].sum())
    return {
        "days": int(len(market)),
        "sessions": int(market["sessions"].sum()),
        "impressions": int(imps),
        "fill_rate": float(market["filled_slots"].sum() / max(1, market["ad_slots"].sum())),
        "revenue": float(market["revenue"].sum()),
        "spend": spend,
        "ctr": clicks / imps if imps else float("nan"),
        "cpm": spend * 1000 / imps if imps else float("nan"),
        "cpc": spend / clicks if clicks else float("nan"),
        "cpa": spend / conv if conv else float("nan"),
        "roas": float(daily["order_value"].sum()) / spend if spend else float("nan"),
        "avg_quality_score": float(np.nansum(daily["quality_score"] * daily["impressions"]) / imps) if imps else float("nan"),
    }


# ---------------------------------------------------------------------- running


def run(
    scenario: sc.Scenario | str | Path,
    seed: int | None = None,
    days: int | None = None,
    out: str | Path | None = None,
    progress: bool | Callable[[int], None] = False,
    report: bool = True,
) -> Result:
    """Run a scenario to the end and return its tables (and write the run folder if ``out``).

    Parameters
    ----------
    scenario : a Scenario, or the path of a TOML scenario file
    seed, days : override the scenario's
    out : run folder to write; must not exist yet
    progress : True for a tqdm bar over days, or a callable taking the day number
    """
    from simulator.market import Market

    if out is not None:
        check_free(Path(out))
    t0 = time.perf_counter()
    market = Market(scenario, seed=seed, days=days)
    t_setup = time.perf_counter() - t0
    bar = None
    callback = progress if callable(progress) else None
    if progress is True:
        from tqdm.auto import tqdm

        from simulator import kernels

        if kernels.compiles_first():  # (else the bar would sit at its first day for half a minute)
            print("first run here: numba compiles the engine's kernels first (about half a minute, once)", file=sys.stderr)

        bar = tqdm(total=market.config.days, unit="day", desc=market.config.name, file=sys.stderr)
        callback = lambda _day: bar.update(1)  # noqa: E731
    t1 = time.perf_counter()
    market.run(progress=callback)
    if bar is not None:
        bar.close()
    t_sim = time.perf_counter() - t1
    tables = market.tables()
    manifest = make_manifest(market, {"setup_s": t_setup, "simulate_s": t_sim})
    result = Result(market.config, tables, manifest)
    if out is not None:
        write_run(result, Path(out), report=report)
    return result


def make_manifest(market: Any, timings: dict[str, float]) -> dict[str, Any]:
    cfg = market.config
    sessions = int(market.ledger.tables()["market_daily"]["sessions"].sum()) if market.day else 0
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "seed_entropy": str(market.seed_sequence.entropy),
        "streams": list(market.streams),
        "days": cfg.days,
        "start_date": cfg.start_date.isoformat(),
        "status": "complete",
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "sessions": sessions,
        "sessions_per_second": round(sessions / timings["simulate_s"], 1) if timings.get("simulate_s") else None,
        "revenue_micro": int(market.ledger.revenue_micro_total),
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("adsim", "mesa", "numpy", "pandas", "pyarrow", "pydantic"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def check_free(out: Path) -> None:
    """Refuse to write over an existing folder (FileExistsError)."""
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose another --out (runs are never overwritten)")


def write_run(result: Result, out: Path, report: bool = True) -> Path:
    """Write the run folder atomically: everything under a temporary name, manifest last, then rename."""
    out = Path(out)
    check_free(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        t0 = time.perf_counter()
        (tmp / "scenario.toml").write_text(sc.scenario_to_toml(result.scenario), encoding="utf-8")
        for name in TABLES:
            result.tables[name].to_parquet(tmp / f"{name}.parquet", index=False)
        if report:
            from simulator.plots import save_report

            save_report(result.tables, tmp / "report.png", title=result.scenario.name, scenario=result.scenario)
        result.manifest.setdefault("timings", {})["write_s"] = round(time.perf_counter() - t0, 4)
        result.manifest["tables"] = {name: int(len(result.tables[name])) for name in TABLES}
        _write_json_atomic(tmp / "manifest.json", result.manifest)
        _fsync_dir(tmp)
        if out.exists():  # appeared while this run was writing
            raise FileExistsError(f"{out}: already exists; choose another --out (runs are never overwritten)")
        try:
            os.rename(tmp, out)  # atomic on one filesystem; fails if a non-empty ``out`` appeared meanwhile
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(f"{out}: already exists; choose another --out (runs are never overwritten)") from None
            raise
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.path = out
    return out


def remove_stale_partials(folder: Path, max_age_s: float = 6 * 3600) -> list[Path]:
    """Delete ``.*.partial`` folders that killed runs left in ``folder`` (untouched for ``max_age_s``).

    A partial folder lives only while a finished run writes its tables (seconds), so one
    that has not changed for hours belongs to a process that died.  Readers ignore them
    anyway: a run folder counts only under its final name, with its manifest.
    """
    removed = []
    now = time.time()
    try:
        candidates = list(folder.glob(".*.partial"))
    except OSError:
        return removed
    for path in candidates:
        try:
            if path.is_dir() and not path.is_symlink() and now - path.stat().st_mtime > max_age_s:
                shutil.rmtree(path)
                removed.append(path)
        except OSError:
            continue
    return removed


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_run(path: str | Path) -> Result:
    """Read a run folder back (tables as DataFrames)."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{path}: not a complete run folder (no manifest.json)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    tables = {name: pd.read_parquet(path / f"{name}.parquet") for name in TABLES if (path / f"{name}.parquet").exists()}
    scenario = sc.load_scenario(path / "scenario.toml")
    return Result(scenario, tables, manifest, path)
