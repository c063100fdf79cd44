"""The command line: ``adsim run / batch / validate / schema / report / compare``.

The edge of the program: turns bad input into one line per problem on stderr
and exit status 2 (never a traceback), and prints short readable summaries.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from simulator import scenario as sc

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Agent-based simulator of a Xiaohongshu-style social-commerce ad market.",
)


class BadInput(Exception):
    """Input the user can fix: the lines are printed and the exit status is 2."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def fail(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line, err=True)
    raise typer.Exit(2)


def _load(path: Path, overrides: dict | None = None) -> sc.Scenario:
    try:
        return sc.load_scenario(path, overrides)
    except sc.ScenarioError as exc:
        fail(exc.lines)
        raise  # unreachable


def default_out(scenario: sc.Scenario, seed: int, root: Path = Path("runs")) -> Path:
    """``runs/NAME-seedN``, with ``-2``, ``-3``... appended rather than overwrite a folder."""
    base = root / f"{safe_name(scenario.name)}-seed{seed}"
    out, k = base, 2
    while out.exists():
        out = base.with_name(f"{base.name}-{k}")
        k += 1
    return out


def check_out(out: Path) -> None:
    """Fail early (before simulating) if the run folder cannot be written: it exists, or its parent cannot be made."""
    if out.exists() or out.is_symlink():
        fail([f"{out}: already exists; choose another --out (runs are never overwritten)"])
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail([f"{out}: cannot create the folder it goes in ({exc.strerror or exc})"])
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK | os.X_OK):
        fail([f"{out}: cannot write in {out.parent}"])


def safe_name(name: str) -> str:
    """A folder name from a scenario name that cannot leave the output folder."""
    cleaned = "".join(ch if (ch.isalnum() or ch in "-_.") else "_" for ch in name)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).strip("._-")  # no "..", no hidden or option-like names
    return cleaned[:80] or "scenario"


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario file (TOML)")],
    seed: Annotated[int | None, typer.Option(help="override the scenario's seed")] = None,
    days: Annotated[int | None, typer.Option(help="override the number of days")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder to write (must not exist)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run one scenario: writes the run folder and prints a KPI summary."""
    from simulator.results import run as run_scenario

    overrides = {}
    if seed is not None:
        if seed < 0:
            fail([f"--seed: must be >= 0 (got {seed})"])
        overrides["seed"] = seed
    if days is not None:
        if not 1 <= days <= sc.MAX_DAYS:
            fail([f"--days: must be between 1 and {sc.MAX_DAYS} (got {days})"])
        overrides["days"] = days
    spec = _load(scenario, overrides)
    out = out if out is not None else default_out(spec, spec.seed)
    check_out(out)
    try:
        result = run_scenario(spec, out=out, progress=not quiet)
    except FileExistsError:  # another process took the name while this one simulated
        fail([f"{out}: already exists; choose another --out (runs are never overwritten)"])
        raise  # unreachable
    except MemoryError:
        fail([f"{scenario}: population.users: out of memory; use fewer users or advertisers"])
        raise  # unreachable
    except OSError as exc:
        fail([f"{out}: cannot write the run folder ({exc.strerror or exc})"])
        raise  # unreachable
    print_summary(result)
    typer.echo(f"\nrun folder: {out}")
    typer.echo(f"report:     {out / 'report.png'}")


def print_summary(result) -> None:  # noqa: ANN001
    s = result.summary()
    m = result.manifest
    typer.echo(
        f"\n{result.scenario.name}: {s['days']} days from {result.scenario.start_date}, "
        f"{result.scenario.population.users:,} users, {s['sessions']:,} sessions "
        f"({m.get('sessions_per_second') or 0:,.0f} sessions/s)"
    )
    typer.echo(
        f"market: revenue {s['revenue']:,.2f} yuan, fill rate {s['fill_rate']:.1%}, CTR {s['ctr']:.2%}, "
        f"CPM {s['cpm']:.2f}, CPC {s['cpc']:.2f}, CPA {_num(s['cpa'])}, ROAS {_num(s['roas'])}, avg QS {_num(s['avg_quality_score'], 1)}"
    )
    k = result.kpis().head(12)
    typer.echo("")
    typer.echo(f"{'advertiser':<22}{'spend':>12}{'impr.':>11}{'CTR':>8}{'CPC':>8}{'CPA':>9}{'ROAS':>7}{'QS':>6}")
    for name, r in k.iterrows():
        typer.echo(
            f"{str(name)[:21]:<22}{r.spend:>12,.2f}{int(r.impressions):>11,}{_pct(r.ctr):>8}{_num(r.cpc):>8}"
            f"{_num(r.cpa, 1):>9}{_num(r.roas):>7}{_num(r.quality_score, 1):>6}"
        )
    n = len(result.kpis())
    if n > len(k):
        typer.echo(f"... and {n - len(k)} more advertisers (advertiser_daily.parquet)")


def _num(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _pct(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.2%}"


@app.command()
def validate(scenarios: Annotated[list[Path], typer.Argument(help="scenario files")]) -> None:
    """Check scenario files; print one line per problem (exit 2 if any)."""
    problems: list[str] = []
    for path in scenarios:
        try:
            spec = sc.load_scenario(path)
        except sc.ScenarioError as exc:
            problems.extend(exc.lines)
            continue
        n_adv = len(spec.advertisers) + sum(g.count for g in spec.generate)
        typer.echo(f"{path}: ok ({spec.name}: {spec.days} days, {spec.population.users:,} users, {n_adv} advertisers)")
    if problems:
        fail(problems)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the scenario format (for editors)."""
    typer.echo(json.dumps(sc.scenario_schema(), indent=2, default=str))


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run folder, or a batch folder (with summary.parquet)")]) -> None:
    """Redraw a run folder's report.png from its tables (or a batch folder's batch_report.png)."""
    from simulator.plots import save_report
    from simulator.results import load_run

    if not (run_dir / "manifest.json").is_file() and (run_dir / "summary.parquet").is_file():
        _batch_report(run_dir)
        return
    if not (run_dir / "manifest.json").is_file():
        fail([f"{run_dir}: not a complete run folder (no manifest.json)"])
    try:
        result = load_run(run_dir)
    except sc.ScenarioError as exc:
        fail(exc.lines)
        raise  # unreachable
    except (OSError, ValueError, KeyError) as exc:  # unreadable or damaged tables (pyarrow errors are ValueErrors)
        fail([f"{run_dir}: damaged run folder ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"])
        raise  # unreachable
    missing = [t for t in ("advertiser_daily", "market_daily") if t not in result.tables]
    if missing:
        fail([f"{run_dir}: damaged run folder (missing {', '.join(t + '.parquet' for t in missing)})"])
    tmp = run_dir / ".report.png.tmp.png"
    try:
        path = save_report(result.tables, tmp, title=result.scenario.name, scenario=result.scenario)
        path.replace(run_dir / "report.png")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        fail([f"{run_dir}: cannot write report.png ({exc.strerror or exc})"])
    typer.echo(f"report: {run_dir / 'report.png'}")


def _batch_report(out: Path) -> None:
    """A batch folder's ``batch_report.png``: each KPI across replicates (5-50-95 %) or along the sweep."""
    import pandas as pd

    from simulator.plots import save_batch_report

    try:
        summary = pd.read_parquet(out / "summary.parquet")
    except (OSError, ValueError) as exc:
        fail([f"{out}: damaged batch folder ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"])
        raise  # unreachable
    tmp = out / ".batch_report.png.tmp.png"
    try:
        save_batch_report(summary, tmp, title=out.name).replace(out / "batch_report.png")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        fail([f"{out}: cannot write batch_report.png ({exc.strerror or exc})"])
    typer.echo(f"report: {out / 'batch_report.png'}")


# ---------------------------------------------------------------- batch and compare (issue 5): begin


@app.command()
def batch(
    scenarios: Annotated[list[Path], typer.Argument(help="scenario files (TOML); a [sweep] table adds its grid")],
    replicates: Annotated[int, typer.Option(help="runs per scenario and grid point, each with its own seed")] = 1,
    workers: Annotated[int | None, typer.Option(help="local processes (default: cores; 0 = in this process), or LocalCluster workers")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address (tcp://host:8786), or 'local' for a LocalCluster")] = None,
    out: Annotated[Path | None, typer.Option(help="batch folder (default runs/batch-NAMES); re-running resumes it")] = None,
    seed: Annotated[int | None, typer.Option(help="root seed of the replicates (default: each scenario's seed)")] = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="draw report.png in every run folder (slower)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run scenarios x sweep grid x replicates on local processes or a Dask cluster (resumable)."""
    from simulator.batch import BatchError, failed_lines
    from simulator.batch import batch as run_batch

    try:
        summary = run_batch(
            scenarios, replicates=replicates, workers=workers, scheduler=scheduler, out=out, seed=seed, report=report, progress=not quiet
        )
    except BatchError as exc:
        fail(exc.lines)
        raise  # unreachable
    where = Path(summary.attrs["out"])
    n_reused = int(summary["reused"].sum())
    problems = failed_lines(summary)
    typer.echo(f"{len(summary)} runs: {len(summary) - len(problems)} complete ({n_reused} from before), {len(problems)} failed")
    ok = summary[summary["status"] == "complete"]
    if len(ok):
        keys = ["scenario", "sweep"] + [c for c in summary.columns if c.startswith("sweep.")]
        table = ok.groupby(keys, sort=False, dropna=False)[["spend", "ctr", "cpm", "roas", "wall_s"]].mean()
        typer.echo(f"\n{'scenario':<24}{'sweep':<11}{'runs':>5}{'spend':>13}{'CTR':>8}{'CPM':>8}{'ROAS':>7}{'s/run':>7}")
        counts = ok.groupby(keys, sort=False, dropna=False).size()
        for key, r in table.iterrows():
            name, point = key[0], key[1]
            typer.echo(
                f"{str(name)[:23]:<24}{str(point):<11}{int(counts[key]):>5}{r.spend:>13,.2f}{_pct(r.ctr):>8}"
                f"{_num(r.cpm):>8}{_num(r.roas):>7}{r.wall_s:>7.1f}"
            )
    typer.echo(f"\nsummary: {where / 'summary.parquet'}")
    if problems:
        for line in problems:
            typer.echo(line, err=True)
        raise typer.Exit(1)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="run folder, or a batch folder of one scenario (e.g. OUT/scenario=NAME)")],
    run_b: Annotated[Path, typer.Argument(help="the same for side B; differences are B - A")],
    kpi: Annotated[list[str] | None, typer.Option(help="KPI to show (repeat); default spend, impressions, clicks, conversions, cpa, roas, quality_score")] = None,
    csv: Annotated[Path | None, typer.Option(help="also write the full comparison (every KPI) to this CSV file")] = None,
) -> None:
    """Per-advertiser KPI differences B - A; paired by seed with 95 % intervals where seeds match."""
    from simulator.compare import KPIS, CompareError
    from simulator.compare import compare as compare_runs

    shown = kpi or ["spend", "impressions", "clicks", "conversions", "cpa", "roas", "quality_score"]
    unknown = [k for k in shown if k not in KPIS]
    if unknown:
        fail([f"--kpi: unknown KPI {k!r} (one of: {', '.join(KPIS)})" for k in unknown])
    try:
        table = compare_runs(run_a, run_b, KPIS)
    except CompareError as exc:
        fail(exc.lines)
        raise  # unreachable
    if csv is not None:
        table.to_csv(csv, index=False)
    first = table.iloc[0] if len(table) else None
    if first is not None:
        how = {"paired": f"paired over {int(first.n_pairs)} shared seeds", "welch": "no shared seeds: Welch intervals"}
        typer.echo(f"B - A: {run_b} minus {run_a}; {how.get(first.method, 'one run a side: no intervals')}")
    typer.echo(f"\n{'advertiser':<20}{'kpi':<15}{'A':>13}{'B':>13}{'B - A':>13}{'95% CI':>28}")
    for r in table[table["kpi"].isin(shown)].itertuples():
        ci = "" if math.isnan(r.ci_low) else f"[{_sig(r.ci_low)}, {_sig(r.ci_high)}]"
        typer.echo(f"{str(r.advertiser)[:19]:<20}{r.kpi:<15}{_sig(r.a_mean):>13}{_sig(r.b_mean):>13}{_sig(r.mean_diff):>13}{ci:>28}")
    if csv is not None:
        typer.echo(f"\ncomparison: {csv}")


def _sig(x: float) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.1f}"


# ---------------------------------------------------------------- batch and compare (issue 5): end


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
