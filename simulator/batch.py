"""Batch runs: scenarios x sweep grid x replicate seeds, on local processes or a Dask cluster.

Owns the batch folder::

    OUT/
      summary.parquet                          one row per run of the last batch
      scenario=NAME/sweep=ID/seed=N/           one run folder (simulator.results.write_run)

``ID`` is ``base`` for a scenario without a ``[sweep]`` table, else ``g`` and
eight hex digits of a hash of the grid point's values (stable: the same values
give the same folder whatever their order in the file); ``summary.parquet`` and
each run's ``manifest.json`` map it back to the values.  Every run folder sits
at the same depth, so pandas, pyarrow and DuckDB read one table of a whole
batch with three partition columns (``scenario``, ``sweep``, ``seed``).

A run is a pure function of (resolved scenario, seed): a worker writes its run
folder (atomically, manifest last) and returns a small summary dict.  The
parent process never holds a run's tables, only those dicts, so its memory is
flat in the number of runs.  A finished run is a folder with ``manifest.json``;
re-running a batch skips those (after checking they were made from the same
resolved scenario) and redoes the rest.  This module must not change how a
single run is simulated or written: that is :mod:`simulator.results`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simulator import scenario as sc

log = logging.getLogger(__name__)

#: Keys of the summary row that describe the run (the KPIs of
#: :func:`simulator.results.market_summary` follow them).
ID_COLUMNS = ("scenario", "sweep", "replicate", "seed", "root_seed")
STATUS_COLUMNS = ("status", "error", "reused", "wall_s", "path")
#: Top-level fields a sweep may not vary: the name makes the partition, the seed
#: comes from the replicates, and a sweep of sweeps means nothing.
UNSWEEPABLE = {"name": "the name makes the partition folder", "seed": "use --replicates / --seed", "sweep": "cannot nest"}
BASE_SWEEP = "base"
MAX_POOL_RESTARTS = 3


class BatchError(sc.ScenarioError):
    """Bad batch input (scenarios, sweep grid or output folder): one line per problem."""


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Point:
    """One grid point of one scenario: the resolved scenario (without a seed yet)."""

    scenario: sc.Scenario
    name: str  # partition name (a safe folder name)
    sweep_id: str
    values: dict[str, Any]
    root_seed: int
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Task:
    """What a worker needs for one run: picklable, small, and all it depends on."""

    scenario: sc.Scenario  # resolved, seed set
    dest: str  # absolute run folder path
    meta: dict[str, Any] = field(default_factory=dict)
    report: bool = False


def replicate_seeds(root: int, n: int) -> list[int]:
    """Seeds of replicates ``0..n-1``: children of one ``SeedSequence(root)``.

    Child ``i`` depends only on ``(root, i)``, so asking for more replicates later
    keeps the first ones (a resumed batch reuses them), and two scenarios with the
    same root share their replicate seeds (common random numbers for comparisons).
    """
    children = np.random.SeedSequence(root).spawn(n)
    # 63 bits: the scenario schema takes seeds in [0, 2**63).
    return [int(c.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for c in children]


def sweep_grid(sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of a ``[sweep]`` table, in file order ({} if no sweep)."""
    if not sweep:
        return [{}]
    keys = list(sweep)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sweep[k] for k in keys))]


def sweep_id(values: dict[str, Any]) -> str:
    """A short stable folder id of a grid point: ``base`` or ``g`` + 8 hex digits."""
    if not values:
        return BASE_SWEEP
    canon = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return "g" + hashlib.sha256(canon.encode()).hexdigest()[:8]


def fingerprint(scenario: sc.Scenario) -> str:
    """Hash of the resolved scenario text: a resumed batch reuses only runs made from it."""
    return hashlib.sha256(sc.scenario_to_toml(scenario).encode()).hexdigest()[:16]


def safe_name(name: str) -> str:
    """A folder name from a scenario name that cannot leave the output folder."""
    cleaned = "".join(ch if (ch.isalnum() or ch in "-_.") else "_" for ch in name).strip("._")
    return cleaned[:80] or "scenario"


def expand(
    scenarios: Sequence[str | Path | sc.Scenario], replicates: int = 1, seed: int | None = None
) -> list[Point]:
    """Load every scenario and resolve its whole sweep grid, before anything runs.

    Raises
    ------
    BatchError
        One line per problem over all files and grid points, e.g.
        ``x.toml: sweep.auction.reserve_ecpm: must be >= 0 (value -1)``.
    """
    problems: list[str] = []
    if replicates < 1:
        problems.append(f"--replicates: must be >= 1 (got {replicates})")
    if seed is not None and not 0 <= seed < 2**63:
        problems.append(f"--seed: must be >= 0 (got {seed})")
    if problems:
        raise BatchError(problems)
    points: list[Point] = []
    names: dict[str, str] = {}
    for item in scenarios:
        if isinstance(item, sc.Scenario):
            label, base = f"<{item.name}>", item
        else:
            label = str(item)
            try:
                base = sc.load_scenario(item)
            except sc.ScenarioError as exc:
                problems.extend(exc.lines)
                continue
        name = safe_name(base.name)
        if name in names:
            problems.append(f"{label}: name: scenario {base.name!r} is also the name in {names[name]} (names must differ in a batch)")
            continue
        names[name] = label
        root = base.seed if seed is None else seed
        seeds = tuple(replicate_seeds(root, replicates))
        resolved, lines = resolve_grid(base, label)
        problems.extend(lines)
        for values, spec in resolved:
            points.append(Point(spec, name, sweep_id(values), values, root, seeds))
    if problems:
        raise BatchError(_unique(problems))
    return points


def resolve_grid(base: sc.Scenario, label: str) -> tuple[list[tuple[dict[str, Any], sc.Scenario]], list[str]]:
    """Every grid point of ``base.sweep`` as a validated scenario (its ``sweep`` emptied)."""
    problems: list[str] = []
    sweep = {}
    for key, values in base.sweep.items():
        top = key.split(".")[0]
        if top in UNSWEEPABLE:
            problems.append(f"{label}: sweep.{key}: cannot be swept ({UNSWEEPABLE[top]})")
        elif not values:
            problems.append(f"{label}: sweep.{key}: needs at least one value")
        else:
            sweep[key] = values
    data = base.model_dump(mode="python", exclude_none=True)
    data["sweep"] = {}
    # 1. Each path and value alone: the line names the path that is wrong.
    for key, values in sweep.items():
        for value in values:
            problems.extend(_point_problems(data, {key: value}, label))
    if problems:
        return [], _unique(problems)
    # 2. The whole grid: values fine alone may clash together (e.g. ad_slots and view_factors).
    out: list[tuple[dict[str, Any], sc.Scenario]] = []
    for values in sweep_grid(sweep):
        lines = _point_problems(data, values, label)
        if lines:
            problems.extend(lines)
            continue
        out.append((values, sc.parse_scenario(sc.apply_overrides(data, values), label)))
    return out, _unique(problems)


def _point_problems(data: dict[str, Any], values: dict[str, Any], label: str) -> list[str]:
    try:
        point = sc.apply_overrides(data, values)
    except IndexError:
        return [f"{label}: sweep.{k}: no such list item in the scenario" for k in values]
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        return [f"{label}: sweep.{k}: not a path in the scenario ({exc})" for k in values]
    try:
        sc.parse_scenario(point, label)
    except sc.ScenarioError as exc:
        return _sweep_lines(exc.lines, label, values)
    return []


def _sweep_lines(lines: list[str], label: str, values: dict[str, Any]) -> list[str]:
    """Rewrite ``FILE: field: message`` lines of a grid point to name ``sweep.<path>``."""
    out = []
    prefix = f"{label}: "
    for line in lines:
        rest = line[len(prefix) :] if line.startswith(prefix) else line
        where, _, msg = rest.partition(": ")
        key = next((k for k in values if where == k or where.startswith(k + ".") or k.startswith(where + ".")), None)
        if key is not None:
            out.append(f"{label}: sweep.{key}: {msg} (value {values[key]!r})")
        else:
            point = ", ".join(f"{k}={v!r}" for k, v in values.items())
            out.append(f"{label}: sweep point {{{point}}}: {rest}")
    return out


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def run_dir(out: Path, point: Point, seed: int) -> Path:
    return out / f"scenario={point.name}" / f"sweep={point.sweep_id}" / f"seed={seed}"


def tasks(points: Sequence[Point], out: Path, report: bool = False) -> Iterator[Task]:
    """The batch's runs in a fixed order: scenario, grid point, replicate."""
    for point in points:
        for rep, seed in enumerate(point.seeds):
            spec = point.scenario.model_copy(update={"seed": seed})
            meta = {
                "scenario": point.name,
                "sweep": point.sweep_id,
                "sweep_values": point.values,
                "replicate": rep,
                "seed": seed,
                "root_seed": point.root_seed,
                "fingerprint": fingerprint(spec),
            }
            yield Task(spec, str(run_dir(out, point, seed)), meta, report)


# ----------------------------------------------------------------------------- one run


def run_task(task: Task) -> dict[str, Any]:
    """Run one scenario+seed, write its folder, return its summary row (never raises).

    Executed in a worker process (local or Dask); returns only a small dict.
    """
    from simulator.results import run, write_run

    dest = Path(task.dest)
    t0 = time.perf_counter()
    try:
        with single_threaded():
            result = run(task.scenario, report=False)
        summary = result.summary()
        result.manifest["batch"] = {**task.meta, "summary": summary}
        write_run(result, dest, report=task.report)
    except FileExistsError:
        if (dest / "manifest.json").exists():  # another worker (a retried task) finished it first
            return finished_row(dest, task.meta)
        return _failed(task, t0, traceback.format_exc())
    except Exception:
        return _failed(task, t0, traceback.format_exc())
    row = _row(task.meta, summary)
    row.update(status="complete", error="", reused=False, wall_s=_wall(result.manifest))
    return row


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """One compute thread per run: a batch is parallel across runs already, and
    threaded kernels fighting over the same cores are many times slower."""
    numba = sys.modules.get("numba")
    if numba is None:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)  # per calling thread: safe on a multi-threaded Dask worker
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _failed(task: Task, t0: float, tb: str) -> dict[str, Any]:
    lines = [ln for ln in tb.strip().splitlines() if ln.strip()]
    log.warning("run %s failed:\n%s", task.dest, tb)
    row = _row(task.meta, {})
    row.update(status="failed", error=lines[-1] if lines else "unknown error", reused=False, wall_s=time.perf_counter() - t0)
    return row


def _row(meta: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    row = {k: meta[k] for k in ID_COLUMNS}
    row["sweep_values"] = meta["sweep_values"]
    row.update(summary)
    return row


def _wall(manifest: dict[str, Any]) -> float:
    t = manifest.get("timings", {})
    return round(float(sum(t.get(k, 0.0) for k in ("setup_s", "simulate_s", "write_s"))), 4)


def read_manifest(dest: Path) -> dict[str, Any] | None:
    try:
        return json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None


def finished_row(dest: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The summary row of a run folder already on disk (from its manifest, not its tables)."""
    manifest = read_manifest(dest) or {}
    row = _row(meta, manifest.get("batch", {}).get("summary", {}))
    row.update(status="complete", error="", reused=True, wall_s=_wall(manifest))
    return row


# ----------------------------------------------------------------------------- executors


class _InProcess(cf.Executor):
    """``workers=0``: run tasks here, one at a time (debugging; no process start-up)."""

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN201
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut


def _process_pool(workers: int) -> cf.ProcessPoolExecutor:
    # forkserver: workers fork from a clean server that imported the simulator once,
    # not from this (maybe threaded: tqdm, Dask, a notebook) process.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["simulator.batch", "simulator.results", "simulator.market"])
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


@contextlib.contextmanager
def executor(workers: int | None, scheduler: Any) -> Iterator[tuple[cf.Executor, int]]:
    """The executor for a batch and how many runs to keep in flight.

    ``scheduler``: None (local processes), ``"local"`` (a Dask LocalCluster here),
    a Dask scheduler address such as ``tcp://10.0.0.5:8786``, or a
    ``distributed.Client`` already connected (left open).
    """
    n = workers if workers is not None else (os.cpu_count() or 1)
    if scheduler is None:
        if n == 0:
            yield _InProcess(), 1
            return
        with _process_pool(n) as pool:
            yield pool, 2 * n
        return
    try:
        import distributed
    except ImportError:  # pragma: no cover - depends on the install
        raise BatchError(["--scheduler: needs Dask (pip install 'adsim[cluster]')"]) from None
    with contextlib.ExitStack() as stack:
        if not isinstance(scheduler, str):  # a Client the caller made (and closes)
            client = scheduler
        elif scheduler == "local":
            stack.enter_context(_quiet_logger("distributed"))
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=max(1, n), threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
                )
            )
            client = stack.enter_context(distributed.Client(cluster))
        else:
            try:
                client = stack.enter_context(distributed.Client(scheduler, timeout="20s"))
            except (OSError, TimeoutError, ValueError) as exc:
                raise BatchError([f"--scheduler: cannot connect to {scheduler} ({exc})"]) from None
        threads = sum(client.nthreads().values())
        yield client.get_executor(pure=False), max(4, 2 * threads)


@contextlib.contextmanager
def _quiet_logger(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """A LocalCluster started for one batch should not chat on stderr at INFO level."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(max(level, before))
    try:
        yield
    finally:
        logger.setLevel(before)


# ----------------------------------------------------------------------------- the batch


def batch(
    scenarios: str | Path | sc.Scenario | Sequence[str | Path | sc.Scenario],
    *,
    replicates: int = 1,
    workers: int | None = None,
    scheduler: Any = None,
    out: str | Path | None = None,
    seed: int | None = None,
    report: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Run scenarios x sweep grid x replicate seeds; return the summary (one row per run).

    Parameters
    ----------
    scenarios : scenario file(s) or Scenario object(s)
    replicates : runs per grid point; replicate ``i`` uses seed ``i`` of ``SeedSequence(root)``
    workers : local processes (default: the number of cores; 0 = in this process),
        or the number of workers of ``scheduler="local"``
    scheduler : a Dask scheduler address (``tcp://host:8786``), ``"local"`` for a
        Dask LocalCluster, a connected ``distributed.Client``, or None for local processes
    out : the batch folder (default ``runs/batch-NAMES``); re-running into it resumes
    seed : root seed of the replicates (default: each scenario's own seed)
    report : also draw each run's ``report.png`` (about a second per run)
    progress : a tqdm bar over runs on stderr

    Returns
    -------
    DataFrame
        Also written to ``OUT/summary.parquet``.  Runs that raised have
        ``status == "failed"`` and their ``error``; the batch does not stop for them.

    Raises
    ------
    BatchError
        Bad input (scenario files, sweep grid, output folder), before anything runs.
    """
    if isinstance(scenarios, (str, Path, sc.Scenario)):
        scenarios = [scenarios]
    if not scenarios:
        raise BatchError(["batch: no scenario given"])
    if workers is not None and workers < 0:
        raise BatchError([f"--workers: must be >= 0 (got {workers})"])
    points = expand(scenarios, replicates, seed)
    out = Path(out) if out is not None else default_out(points)
    if out.exists() and not out.is_dir():
        raise BatchError([f"{out}: exists and is not a folder"])
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    with _lock(out):
        return _run_batch(points, out, workers, scheduler, report, progress)


def default_out(points: Sequence[Point]) -> Path:
    names = list(dict.fromkeys(p.name for p in points))
    return Path("runs") / ("batch-" + "+".join(names))[:120]


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One batch at a time per folder (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(out / ".batch.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BatchError([f"{out}: another batch is writing to this folder"]) from None
        yield


def _run_batch(
    points: Sequence[Point], out: Path, workers: int | None, scheduler: Any, report: bool, progress: bool
) -> pd.DataFrame:
    remove_partials(out)
    # 1. What is done already: complete folders of the same resolved scenario.
    rows: list[dict[str, Any] | None] = []
    todo: list[int] = []
    problems: list[str] = []
    for i, task in enumerate(tasks(points, out, report)):
        dest = Path(task.dest)
        manifest = read_manifest(dest)
        if manifest is not None:
            if manifest.get("batch", {}).get("fingerprint") != task.meta["fingerprint"]:
                problems.append(
                    f"{dest}: a finished run of a different scenario (changed since it ran); "
                    "use another --out or delete that folder"
                )
            rows.append(finished_row(dest, task.meta))
        elif dest.exists():
            problems.append(f"{dest}: exists but is not a complete run folder (no manifest.json); delete it")
            rows.append(None)
        else:
            rows.append(None)
            todo.append(i)
    if problems:
        raise BatchError(problems)
    n_reused = len(rows) - len(todo)
    log.info("batch: %d runs, %d finished already, %d to run", len(rows), n_reused, len(todo))
    # 2. Run the rest, a bounded number in flight (memory stays flat in the number of runs).
    if todo:
        bar = _bar(len(rows), n_reused, progress)
        try:
            _execute(points, out, report, todo, rows, workers, scheduler, bar)
        finally:
            bar.close()
    # 3. One summary table.
    summary = summary_frame([r for r in rows if r is not None], out)
    write_summary(summary, out)
    summary.attrs["out"] = str(out)
    return summary


def _bar(total: int, initial: int, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="run", desc="batch", file=sys.stderr, disable=not progress, dynamic_ncols=True)


def _execute(
    points: Sequence[Point],
    out: Path,
    report: bool,
    todo: list[int],
    rows: list[dict[str, Any] | None],
    workers: int | None,
    scheduler: Any,
    bar: Any,
) -> None:
    wanted = set(todo)
    queue: Iterator[tuple[int, Task]] = ((i, t) for i, t in enumerate(tasks(points, out, report)) if i in wanted)
    failures = 0
    for attempt in range(MAX_POOL_RESTARTS + 1):
        broken = False
        with executor(workers, scheduler) as (ex, window):
            pending: dict[cf.Future, tuple[int, Task]] = {}
            while True:
                while not broken and len(pending) < window and (item := next(queue, None)) is not None:
                    try:
                        pending[ex.submit(run_task, item[1])] = item
                    except cf.BrokenExecutor:
                        queue, broken = itertools.chain([item], queue), True
                if not pending:
                    break
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    i, task = pending.pop(fut)
                    try:
                        rows[i] = fut.result()
                    except Exception as exc:  # the worker process itself died (killed, out of memory)
                        broken = broken or isinstance(exc, cf.BrokenExecutor)
                        rows[i] = _row(task.meta, {}) | {
                            "status": "failed",
                            "error": f"worker died: {type(exc).__name__}: {exc}",
                            "reused": False,
                            "wall_s": float("nan"),
                        }
                    if rows[i]["status"] != "complete":
                        failures += 1
                        bar.set_postfix(failed=failures, refresh=False)
                    bar.update(1)
        if not broken:
            return
        log.warning("the worker pool broke; starting a new one (%d of %d)", attempt + 1, MAX_POOL_RESTARTS)
    for i, task in queue:
        rows[i] = _row(task.meta, {}) | {"status": "failed", "error": "not run: the worker pool kept breaking", "reused": False, "wall_s": float("nan")}
        bar.update(1)


def remove_partials(out: Path) -> int:
    """Delete temporary folders and files that a killed batch left behind."""
    n = 0
    for tmp in itertools.chain(out.glob("scenario=*/sweep=*/.*.partial"), out.glob(".summary.*.tmp")):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        n += 1
    if n:
        log.info("removed %d unfinished temporary folders under %s", n, out)
    return n


# ----------------------------------------------------------------------------- tables


def summary_frame(rows: list[dict[str, Any]], out: Path | None = None) -> pd.DataFrame:
    """Rows -> DataFrame: ids, one ``sweep.<path>`` column per swept path, KPIs, status."""
    sweep_keys = list(dict.fromkeys(k for r in rows for k in r.get("sweep_values", {})))
    records = []
    for r in rows:
        rec = {k: r[k] for k in ID_COLUMNS}
        for k in sweep_keys:
            rec[f"sweep.{k}"] = r["sweep_values"].get(k)
        rec.update({k: v for k, v in r.items() if k not in rec and k not in ("sweep_values", *STATUS_COLUMNS)})
        rec.update({k: r.get(k) for k in STATUS_COLUMNS if k != "path"})
        rec["path"] = f"scenario={r['scenario']}/sweep={r['sweep']}/seed={r['seed']}"
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    if df.empty:
        return df
    df["seed"] = df["seed"].astype("uint64")
    df["root_seed"] = df["root_seed"].astype("uint64")
    for col in df.columns:
        if col.startswith("sweep.") and df[col].dtype == object:
            kinds = {type(v) for v in df[col] if v is not None}
            if len(kinds) != 1 or kinds <= {list, dict, tuple}:
                df[col] = [None if v is None else json.dumps(v, default=str) for v in df[col]]
    return df


def write_summary(summary: pd.DataFrame, out: Path) -> Path:
    """``OUT/summary.parquet``, replaced atomically."""
    path = out / "summary.parquet"
    tmp = out / f".summary.{os.getpid()}.tmp"
    summary.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_summary(out: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(out) / "summary.parquet")


def read_table(out: str | Path, name: str = "advertiser_daily") -> pd.DataFrame:
    """One table of every finished run under ``out``, with ``scenario, sweep, seed`` columns.

    The same as DuckDB's
    ``read_parquet('OUT/*/*/*/advertiser_daily.parquet', hive_partitioning = true)``.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    out = Path(out)
    files = sorted(str(p) for p in out.glob(f"scenario=*/sweep=*/seed=*/{name}.parquet") if (p.parent / "manifest.json").exists())
    if not files:
        raise FileNotFoundError(f"{out}: no finished runs with {name}.parquet")
    parts = ds.partitioning(pa.schema([("scenario", pa.string()), ("sweep", pa.string()), ("seed", pa.uint64())]), flavor="hive")
    return ds.dataset(files, format="parquet", partitioning=parts, partition_base_dir=str(out)).to_table().to_pandas()


def failed_lines(summary: pd.DataFrame) -> list[str]:
    if summary.empty:
        return []
    bad = summary[summary["status"] != "complete"]
    return [f"{r.path}: failed: {r.error}" for r in bad.itertuples()]


__all__ = [
    "BatchError",
    "batch",
    "expand",
    "read_summary",
    "read_table",
    "replicate_seeds",
    "run_task",
    "sweep_grid",
    "sweep_id",
]
