"""The engine's benchmark suite (issue 8): rates, parts, reference points, scaling curves.

    python benchmarks/run.py --quick                 # a small smoke version (a minute or two)
    python benchmarks/run.py --full                  # the whole grid, writes docs/performance.md
    python benchmarks/run.py --full --out docs/performance.md --budget-minutes 30

What it measures, each as the median of ``--repeats`` runs, each run in a fresh
process so its peak RSS is its own (read with ``os.wait4``):

- end to end: ``python -m simulator run SCENARIO --out TMP -q`` (the CLI's whole
  run: start-up, setup, simulation, tables, Parquet, report.png), wall seconds;
  ``Market.run``'s own seconds come from the run's ``manifest.json`` timings;
- the engine in-process: ``Market(scenario).run()`` timed in a child process
  (``benchmarks/measure.py engine``), for the scaling curves;
- its parts: ``simulator.run`` with timing wrappers around the engine's named
  functions (``benchmarks/measure.py parts``, exclusive time per part);
- two reference points: the plain per-session Python (Mesa agents) auction and
  the bare numpy top-k kernel (``benchmarks/reference.py``).

Rates are auctions (sessions) per second and impressions (filled slots) per
second.  Every rate is given per wall-clock second and per CPU second of the
measured process.  The engine splits large batches between threads, so the
targets are judged by the wall clock (CPU time counts both threads).

A point predicted (from the points already measured) to take longer than
``--max-point-seconds`` or more memory than ``--max-rss-gb`` is skipped with a
note, and so is any point that no longer fits in ``--budget-minutes``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import scenarios  # noqa: E402

MEASURE = ROOT / "benchmarks" / "measure.py"
BASE_RSS_MB = 250.0  # a Python with numpy, pandas and mesa imported, before any users exist


# ---------------------------------------------------------------------- configuration


@dataclasses.dataclass
class Config:
    name: str
    repeats: int
    headline: tuple[int, int, int]  # users, advertisers, days: the end-to-end point of the targets
    big_ads: int  # the many-advertiser point compared with 100 advertisers
    parts: tuple[int, int, int]
    memory_parts: tuple[int, int, int] | None
    singles_day: tuple[int, int, int] | None
    users_axis: list[int]
    users_axis_fixed: tuple[int, int]  # advertisers, days
    ads_axis: list[int]
    ads_axis_fixed: tuple[int, int]  # users, days
    days_axis: list[int]
    days_axis_fixed: tuple[int, int]  # users, advertisers
    python_sessions: int = 3_000
    kernel_sessions: int = 300_000
    max_point_s: float = 300.0
    max_rss_gb: float = 8.0
    budget_s: float = 30 * 60
    e2e: bool = True
    subprocess: bool = True
    plots: bool = True
    chunks_per_hour: int | None = None  # None: the engine's default
    report: bool = True  # draw report.png in the parts run (as the CLI does)


FULL = Config(
    name="full",
    repeats=3,
    headline=(1_000_000, 100, 3),
    big_ads=2_000,
    parts=(1_000_000, 100, 1),
    memory_parts=(100_000, 100, 1),
    singles_day=(1_000_000, 200, 45),
    users_axis=[10_000, 100_000, 1_000_000, 10_000_000],
    users_axis_fixed=(100, 1),
    ads_axis=[10, 100, 500, 2_000],
    ads_axis_fixed=(100_000, 1),
    days_axis=[1, 3, 10, 30, 60],
    days_axis_fixed=(10_000, 100),
)

QUICK = Config(
    name="quick",
    repeats=1,
    headline=(50_000, 20, 1),
    big_ads=200,
    parts=(20_000, 20, 1),
    memory_parts=None,
    singles_day=(3_000, 20, 7),
    users_axis=[3_000, 10_000, 30_000],
    users_axis_fixed=(20, 1),
    ads_axis=[10, 20, 200],
    ads_axis_fixed=(10_000, 1),
    days_axis=[1, 2, 4],
    days_axis_fixed=(3_000, 20),
    python_sessions=500,
    kernel_sessions=100_000,
    budget_s=6 * 60,
)

#: A toy version for the test suite: in-process, no CLI run, no plots; a few seconds.
TOY = Config(
    name="toy",
    repeats=1,
    headline=(1_000, 8, 1),
    big_ads=16,
    parts=(1_000, 8, 1),
    memory_parts=None,
    singles_day=None,
    users_axis=[1_000],
    users_axis_fixed=(8, 1),
    ads_axis=[8, 16],
    ads_axis_fixed=(1_000, 1),
    days_axis=[1, 2],
    days_axis_fixed=(1_000, 8),
    python_sessions=200,
    kernel_sessions=20_000,
    budget_s=120,
    e2e=False,
    subprocess=False,
    plots=False,
    chunks_per_hour=1,
    report=False,
)


# ---------------------------------------------------------------------- child processes


def spawn(cmd: list[str], timeout: float, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process; its wall and CPU seconds, peak RSS and the JSON it printed."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(extra_env or {})}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env)
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    data = None
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line[len("BENCH_JSON ") :])
    return {
        "rc": proc.returncode,
        "timed_out": killed.is_set(),
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "data": data,
        "stderr": stderr[-2000:],
    }


def child(args: list[str], cfg: Config, timeout: float, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """One ``benchmarks/measure.py`` measurement: in a fresh process, or in this one for the toy config."""
    if cfg.subprocess or extra_env:
        r = spawn([sys.executable, str(MEASURE), *args], timeout, extra_env)
        if r["rc"] != 0 or r["data"] is None:
            raise RuntimeError(f"measure.py {' '.join(args)} failed (exit {r['rc']}, timed out {r['timed_out']}):\n{r['stderr']}")
        return {**r["data"], "process_wall_s": r["wall_s"], "process_cpu_s": r["cpu_s"], "peak_rss_mb": r["peak_rss_mb"]}
    import contextlib
    import io

    from benchmarks import measure

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        measure.main(args)
    return json.loads(buf.getvalue().split("BENCH_JSON ", 1)[1])


def cli_run(scenario_path: Path, work: Path, timeout: float) -> dict[str, Any]:
    """End to end: ``python -m simulator run SCENARIO --out TMP -q`` in a fresh process."""
    import pandas as pd

    out = work / f"run-{time.time_ns()}"
    r = spawn([sys.executable, "-m", "simulator", "run", str(scenario_path), "--out", str(out), "-q"], timeout)
    if r["rc"] != 0:
        raise RuntimeError(f"adsim run failed (exit {r['rc']}, timed out {r['timed_out']}):\n{r['stderr']}")
    md = pd.read_parquet(out / "market_daily.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    t = manifest.get("timings", {})
    return {
        "wall_s": r["wall_s"],
        "cpu_s": r["cpu_s"],
        "peak_rss_mb": r["peak_rss_mb"],
        "sessions": int(md["sessions"].sum()),
        "impressions": int(md["filled_slots"].sum()),
        "setup_s": t.get("setup_s"),
        "simulate_s": t.get("simulate_s"),
        "write_s": t.get("write_s"),
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric field over the runs (and the number of runs)."""
    out: dict[str, Any] = {"repeats": len(runs)}
    for k, v in runs[0].items():
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        out[k] = statistics.median(vals) if len(vals) == len(runs) else v
    return out


# ---------------------------------------------------------------------- planning


class Planner:
    """Predicts a point's time and memory from the points measured so far, and keeps the budget.

    Time model, fitted by least squares to the measured points (wall seconds):
    ``3 + 5e-6 x users + a x days + k x sessions x (advertisers + 40)``, the
    per-day term for the engine's fixed cost per hour and chunk, the last for
    the sessions x ads matrices.  Memory: linear in ``users x (1 + ads / 64)``.
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.t0 = time.perf_counter()
        self.obs: list[tuple[float, int, float, int, float, int]] = []  # sessions, ads, seconds, users, rss, days
        self.skipped: list[str] = []
        self.measured: dict[tuple[Any, ...], dict[str, Any]] = {}

    def observe(self, users: int, ads: int, sessions: float, seconds: float, rss_mb: float, days: int = 1) -> None:
        self.obs.append((sessions, ads, seconds, users, rss_mb, days))

    def _fit(self) -> tuple[float, float]:
        import numpy as np

        if not self.obs:
            return 0.5, 1 / (50_000 * 140)  # until measured: 50,000 auctions a second at 100 advertisers
        x = np.array([[d, n * (a + 40)] for n, a, _, _, _, d in self.obs], dtype=float)
        y = np.array([max(0.0, s - 3.0 - u * 5e-6) for _, _, s, u, _, _ in self.obs])
        k_only = float(np.median(y / np.maximum(x[:, 1], 1)))
        if len(self.obs) >= 2 and np.linalg.matrix_rank(x) == 2:
            (a, k), *_ = np.linalg.lstsq(x, y, rcond=None)
            if a >= 0 and k > 0:
                return float(a), float(k)
        return 0.0, k_only

    def seconds(self, users: int, ads: int, days: int, singles: bool = False) -> float:
        sessions = users * 3.0 * days * (1.25 if singles else 1.0)
        a, k = self._fit()
        return 3.0 + users * 5e-6 + 1.2 * (a * days + k * sessions * (ads + 40))

    def rss_mb(self, users: int, ads: int) -> float:
        size = users * (1 + ads / 64)
        # Per-user memory from the largest measured market (small ones are dominated by fixed costs).
        big = [o for o in self.obs if o[3] >= 10_000 and o[4] > BASE_RSS_MB]
        if not big:
            return BASE_RSS_MB + size * 600 / 1e6
        _, a, _, u, r, _ = max(big, key=lambda o: o[3] * (1 + o[1] / 64))
        return BASE_RSS_MB + size * 1.25 * (r - BASE_RSS_MB) / (u * (1 + a / 64))

    def left(self) -> float:
        return self.cfg.budget_s - (time.perf_counter() - self.t0)

    def allow(self, label: str, users: int, ads: int, days: int, repeats: int = 1, singles: bool = False) -> tuple[bool, str]:
        t = self.seconds(users, ads, days, singles)
        mem = self.rss_mb(users, ads)
        why = ""
        if t > self.cfg.max_point_s:
            why = f"predicted {t:,.0f} s > the {self.cfg.max_point_s:.0f} s limit per point"
        elif mem > self.cfg.max_rss_gb * 1024:
            why = f"predicted peak RSS {mem / 1024:,.1f} GB > {self.cfg.max_rss_gb:g} GB"
        elif t * repeats > self.left():
            why = f"predicted {t * repeats:,.0f} s > {max(0, self.left()):,.0f} s left of the time budget"
        if why:
            self.skipped.append(f"{label}: skipped, {why}")
            log(f"  skip {label}: {why}")
            return False, why
        return True, ""

    def repeats_for(self, users: int, ads: int, days: int) -> int:
        return self.cfg.repeats if self.seconds(users, ads, days) < 60 else 1


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the suite


def rates(d: dict[str, Any], seconds: float, cpu: float | None) -> dict[str, Any]:
    d["auctions_per_s"] = d["sessions"] / seconds
    d["impressions_per_s"] = d["impressions"] / seconds
    if cpu:
        d["auctions_per_cpu_s"] = d["sessions"] / cpu
        d["impressions_per_cpu_s"] = d["impressions"] / cpu
    return d


def failed(plan: Planner, label: str, exc: Exception) -> str:
    """Record a point that failed (the engine is being edited while it is measured) and go on."""
    lines = [x for x in str(exc).strip().splitlines() if x.strip()]
    why = "failed: " + (lines[-1][:200] if lines else type(exc).__name__)
    plan.skipped.append(f"{label}: {why}")
    log(f"  {label}: {why}")
    return why


def engine_point(
    cfg: Config, plan: Planner, work: Path, users: int, ads: int, days: int, label: str,
    repeats: int | None = None, extra_env: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """``Market.run`` in a child process, median of repeats (a point measured before is reused)."""
    key = (users, ads, days, tuple(sorted((extra_env or {}).items())))
    if key in plan.measured:
        return plan.measured[key]
    n = repeats or plan.repeats_for(users, ads, days)
    ok, why = plan.allow(label, users, ads, days, n)
    if not ok:
        return {"users": users, "advertisers": ads, "days": days, "skipped": why}
    path = scenarios.write(scenarios.market(users, ads, days, chunks_per_hour=cfg.chunks_per_hour), work / f"u{users}_a{ads}_d{days}.toml")
    runs = []
    try:
        for _ in range(n):
            # The plan predicts the compiled path; the numpy path (ADSIM_NUMBA=0) runs tens of times slower,
            # so it gets a longer timeout and its times do not go into the plan's model.
            numpy_path = (extra_env or {}).get("ADSIM_NUMBA") == "0"
            floor = 300.0 if numpy_path else 60.0
            r = child(["engine", str(path)], cfg, timeout=max(floor, 2.5 * plan.seconds(users, ads, days)), extra_env=extra_env)
            rates(r, r["simulate_s"], r["simulate_cpu_s"])
            runs.append(r)
            if not numpy_path:
                plan.observe(users, ads, r["sessions"], r["simulate_s"] + r["setup_s"], r["peak_rss_mb"], days)
    except RuntimeError as exc:
        why = failed(plan, label, exc)
        if not runs:
            return {"users": users, "advertisers": ads, "days": days, "skipped": why}
    n = len(runs)
    m = median_of(runs)
    m.update(users=users, advertisers=ads, days=days, per_auction_us=1e6 * m["simulate_s"] / max(1, m["sessions"]),
             per_auction_cpu_us=1e6 * m["simulate_cpu_s"] / max(1, m["sessions"]))
    log(f"  {label}: {m['auctions_per_s']:,.0f} auctions/s ({m['auctions_per_cpu_s']:,.0f}/CPU s), "
        f"{m['simulate_s']:.1f} s, peak RSS {m['peak_rss_mb']:,.0f} MB, x{n}")
    if extra_env:
        m["env"] = extra_env
    plan.measured[key] = m
    return m


def run_suite(cfg: Config, work: Path) -> dict[str, Any]:
    plan = Planner(cfg)
    res: dict[str, Any] = {"config": dataclasses.asdict(cfg), "env": environment(), "started": dt.datetime.now().isoformat(timespec="seconds")}
    users, ads, days = cfg.headline

    # 1. Reference points: the Mesa per-session Python auction and the bare numpy kernel.
    log("reference points")
    chunk = max(1_000, int(users * 3.0 / 96))  # the engine's chunk: a day's sessions in 24 hours x 4 chunks
    refs: dict[str, Any] = {}
    for n_ads in sorted({ads, cfg.big_ads}):
        n_py = cfg.python_sessions if n_ads <= 200 else max(50, cfg.python_sessions * 100 // n_ads)
        n_k = cfg.kernel_sessions if n_ads <= 200 else max(min(cfg.kernel_sessions, 30_000), cfg.kernel_sessions * 100 // n_ads)
        ck = min(chunk, max(1_000, 4_000_000 // n_ads))
        runs = [child(["python_ref", "--ads", str(n_ads), "--sessions", str(n_py)], cfg, 600) for _ in range(cfg.repeats)]
        refs[f"python_{n_ads}"] = median_of(runs) | {"advertisers": n_ads}
        for method in ("argpartition", "argmax"):
            runs = [child(["kernel", "--ads", str(n_ads), "--sessions", str(n_k), "--chunk", str(ck), "--method", method], cfg, 600)
                    for _ in range(cfg.repeats)]
            refs[f"kernel_{method}_{n_ads}"] = median_of(runs) | {"advertisers": n_ads, "chunk": ck}
        log(f"  {n_ads} advertisers: python {refs[f'python_{n_ads}']['auctions_per_s']:,.0f}/s, "
            f"kernel {refs[f'kernel_argpartition_{n_ads}']['auctions_per_s']:,.0f}/s (argmax {refs[f'kernel_argmax_{n_ads}']['auctions_per_s']:,.0f}/s)")
    res["references"] = refs

    # 1b. The small points of the users axis first: they calibrate the time model (and are reused below).
    log("calibration: the small points of the users axis")
    a_u, d_u = cfg.users_axis_fixed
    for u in cfg.users_axis:
        if u <= 100_000:
            engine_point(cfg, plan, work, u, a_u, d_u, f"{u:,} users x {a_u} advertisers")

    # 2. End to end at the headline point: the CLI's whole run.
    log(f"end to end: {users:,} users x {ads} advertisers x {days} days")
    head_path = scenarios.write(scenarios.market(users, ads, days, chunks_per_hour=cfg.chunks_per_hour), work / "headline.toml")
    if cfg.e2e:
        # The headline gets up to 45 % of the budget for its repeats.
        t_head = plan.seconds(users, ads, days)
        n = next((k for k in range(cfg.repeats, 0, -1) if k * t_head <= 0.45 * cfg.budget_s), 1)
        if plan.allow("end to end (headline)", users, ads, days, n)[0]:
            runs = []
            try:
                for _ in range(n):
                    r = cli_run(head_path, work, timeout=max(120.0, 3 * plan.seconds(users, ads, days)))
                    rates(r, r["wall_s"], r["cpu_s"])
                    if r.get("simulate_s"):
                        r["run_auctions_per_s"] = r["sessions"] / r["simulate_s"]
                    runs.append(r)
                    plan.observe(users, ads, r["sessions"], r["wall_s"], r["peak_rss_mb"], days)
                    log(f"  {r['wall_s']:.1f} s wall, {r['auctions_per_s']:,.0f} auctions/s end to end, Market.run {r.get('simulate_s') or 0:.1f} s, RSS {r['peak_rss_mb']:,.0f} MB")
            except RuntimeError as exc:
                failed(plan, "end to end (headline)", exc)
            if runs:
                res["e2e"] = median_of(runs) | {"users": users, "advertisers": ads, "days": days}
    res["engine_headline"] = engine_point(cfg, plan, work, users, ads, days, "Market.run (headline)", repeats=1) if not cfg.e2e or cfg.name == "toy" else None

    # 3. Many advertisers vs 100 (same users and days): the per-auction cost ratio.
    log("advertisers axis")
    u_a, d_a = cfg.ads_axis_fixed
    res["ads_axis"] = [engine_point(cfg, plan, work, u_a, a, d_a, f"{u_a:,} users x {a} advertisers",
                                    repeats=1 if a >= 1_000 else None) for a in sorted(set(cfg.ads_axis) | {ads, cfg.big_ads})]

    # 3b. The engine's own numpy path (``ADSIM_NUMBA=0``, the switch of simulator/kernels.py) at the same point.
    if cfg.subprocess:
        log("the engine's numpy path (ADSIM_NUMBA=0)")
        res["numpy_path"] = [engine_point(cfg, plan, work, u_a, ads, d_a, f"{u_a:,} users x {ads} advertisers, ADSIM_NUMBA=0",
                                          extra_env={"ADSIM_NUMBA": "0"})]

    # 4. The Singles' Day season, end to end.
    if cfg.singles_day and cfg.e2e:
        su, sa, sd = cfg.singles_day
        log(f"Singles' Day: {su:,} users x {sa} advertisers x {sd} days")
        ok, why = plan.allow("Singles' Day end to end", su, sa, sd, 1, singles=True)
        if ok:
            path = scenarios.write(scenarios.singles_day(su, sa, sd), work / "singles_day.toml")
            try:
                # The season's surge makes the prediction from plain markets low: a generous floor.
                r = cli_run(path, work, timeout=max(1200.0, 3 * plan.seconds(su, sa, sd, singles=True)))
                rates(r, r["wall_s"], r["cpu_s"])
                plan.observe(su, sa, r["sessions"], r["wall_s"], r["peak_rss_mb"], sd)
                res["singles_day"] = r | {"users": su, "advertisers": sa, "days": sd}
                log(f"  {r['wall_s']:.1f} s wall, peak RSS {r['peak_rss_mb']:,.0f} MB")
            except RuntimeError as exc:
                res["singles_day"] = {"users": su, "advertisers": sa, "days": sd, "skipped": failed(plan, "Singles' Day end to end", exc)}
        else:
            res["singles_day"] = {"users": su, "advertisers": sa, "days": sd, "skipped": why,
                                  "predicted_s": plan.seconds(su, sa, sd, singles=True)}

    # 5. Scaling in users.
    log("users axis")
    a_u, d_u = cfg.users_axis_fixed
    res["users_axis"] = [engine_point(cfg, plan, work, u, a_u, d_u, f"{u:,} users x {a_u} advertisers",
                                      repeats=1 if u >= 5_000_000 else None) for u in cfg.users_axis]
    # 6. The parts of one run (at a smaller size if the first does not fit).
    for pu, pa, pd_ in [cfg.parts, *([cfg.memory_parts] if cfg.memory_parts else [])]:
        n = plan.repeats_for(pu, pa, pd_)
        if plan.allow(f"parts at {pu:,} users x {pa} advertisers", pu, pa, pd_, n)[0]:
            break
    else:
        pu = 0
    if pu:
        log(f"parts: {pu:,} users x {pa} advertisers x {pd_} days")
        path = scenarios.write(scenarios.market(pu, pa, pd_, chunks_per_hour=cfg.chunks_per_hour), work / "parts.toml")
        runs = []
        try:
            for i in range(n):
                out = work / f"parts-run-{i}"
                runs.append(child(["parts", str(path), str(out), *([] if cfg.report else ["--no-report"])], cfg,
                                  timeout=max(120.0, 3 * plan.seconds(pu, pa, pd_))))
                shutil.rmtree(out, ignore_errors=True)
        except RuntimeError as exc:
            failed(plan, "parts", exc)
        if runs:
            res["parts"] = summarize_parts(runs) | {"users": pu, "advertisers": pa, "days": pd_}
        if cfg.memory_parts and runs:
            mu, ma, md = cfg.memory_parts
            if plan.allow("parts memory (tracemalloc)", mu, ma, md, 3)[0]:
                path = scenarios.write(scenarios.market(mu, ma, md), work / "parts_mem.toml")
                out = work / "parts-mem"
                try:
                    r = child(["parts", str(path), str(out), "--trace-memory"], cfg, timeout=max(300.0, 6 * plan.seconds(mu, ma, md)))
                    res["parts_memory"] = {"users": mu, "advertisers": ma, "days": md,
                                           "peak_mb": {k: v["peak_mb"] for k, v in r["parts"].items()}}
                except RuntimeError as exc:
                    failed(plan, "parts memory (tracemalloc)", exc)
                shutil.rmtree(out, ignore_errors=True)

    # 7. Scaling in days.
    log("days axis")
    u_d, a_d = cfg.days_axis_fixed
    res["days_axis"] = [engine_point(cfg, plan, work, u_d, a_d, d, f"{d} days x {u_d:,} users") for d in cfg.days_axis]
    res["skipped"] = plan.skipped
    res["elapsed_s"] = time.perf_counter() - plan.t0
    res["env"]["load_after"] = os.getloadavg()
    return res


def summarize_parts(runs: list[dict[str, Any]]) -> dict[str, Any]:
    from benchmarks.measure import PART_ORDER

    names = [p for p in [*PART_ORDER, "other (outside the named functions)"] if p in runs[0]["parts"]]
    rows = []
    for name in names:
        wall = statistics.median(r["parts"].get(name, {}).get("wall", 0.0) for r in runs)
        cpu = statistics.median(r["parts"].get(name, {}).get("cpu", 0.0) for r in runs)
        rows.append({"part": name, "wall_s": wall, "cpu_s": cpu, "calls": runs[0]["parts"][name]["calls"]})
    total_w = statistics.median(r["wall_s"] for r in runs)
    total_c = statistics.median(r["cpu_s"] for r in runs)
    return {
        "repeats": len(runs),
        "rows": rows,
        "wall_s": total_w,
        "cpu_s": total_c,
        "sessions": runs[0]["sessions"],
        "impressions": runs[0]["impressions"],
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "missing": runs[0]["missing"],
    }


def environment() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    versions = {"python": platform.python_version()}
    for pkg in ("numpy", "mesa", "pandas", "pyarrow"):
        try:
            versions[pkg] = __import__(pkg).__version__
        except ImportError:
            versions[pkg] = "-"
    return {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "commit_subject": git("log", "-1", "--format=%s"),
        "engine_uncommitted": git("status", "--porcelain", "--", "simulator").splitlines(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "load_before": os.getloadavg(),
        "versions": versions,
    }


# ---------------------------------------------------------------------- report


def ratio(x: float) -> str:
    """A ratio with the digits that matter: 0.031 x, 2.4 x, 1,250 x."""
    if x < 0.1:
        return f"{x:.3f} x"
    if x < 10:
        return f"{x:.2f} x"
    return f"{x:,.0f} x"


def fmt(x: Any, digits: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and x != x:
        return "-"
    return f"{x:,.{digits}f}"


def summary_rows(res: dict[str, Any]) -> list[list[str]]:
    """The headline table: what, auctions/s, impressions/s (wall and per CPU second), peak RSS."""
    rows = []
    users, ads, days = res["config"]["headline"]
    refs = res["references"]

    def row(label: str, d: dict[str, Any] | None) -> None:
        if not d or d.get("skipped"):
            rows.append([label, "skipped", "", "", "", ""])
            return
        rows.append([label, fmt(d.get("auctions_per_s")), fmt(d.get("auctions_per_cpu_s")), fmt(d.get("impressions_per_s")),
                     fmt(d.get("impressions_per_cpu_s")), fmt(d.get("peak_rss_mb"))])

    for key, d in refs.items():
        kind, n = key.rsplit("_", 1)
        label = {"python": "Python reference (Mesa agents, per session)", "kernel_argpartition": "numpy kernel (score + argpartition top-k)",
                 "kernel_argmax": "numpy kernel (score + k argmax passes)"}[kind]
        row(f"{label}, {n} advertisers", d)
    e2e = res.get("e2e")
    if e2e:
        row(f"engine end to end (CLI), {users:,} users x {ads} adv. x {days} d", e2e)
        if e2e.get("simulate_s"):
            rows.append([f"engine Market.run only (manifest), same run", fmt(e2e["sessions"] / e2e["simulate_s"]), "",
                         fmt(e2e["impressions"] / e2e["simulate_s"]), "", ""])
    if res.get("engine_headline"):
        row(f"engine Market.run, {users:,} users x {ads} adv. x {days} d", res["engine_headline"])
    sd = res.get("singles_day")
    if sd:
        row(f"Singles' Day end to end, {sd['users']:,} users x {sd['advertisers']} adv. x {sd['days']} d", sd)
    return rows


def targets(res: dict[str, Any]) -> list[list[str]]:
    """The issue's targets: [target, measured, met?]."""
    users, ads, days = res["config"]["headline"]
    big = res["config"]["big_ads"]
    refs = res["references"]
    out = []
    e2e = res.get("e2e") or res.get("engine_headline")
    k = refs.get(f"kernel_argpartition_{ads}")
    km = refs.get(f"kernel_argmax_{ads}")
    py = refs.get(f"python_{ads}")
    if e2e and not e2e.get("skipped") and k and py:
        r_cpu = e2e["auctions_per_cpu_s"] / k["auctions_per_cpu_s"]
        r_wall = e2e["auctions_per_s"] / k["auctions_per_s"]
        out.append([f"end to end >= 0.5 x numpy kernel (argpartition), {users:,} x {ads} x {days} d",
                    f"{ratio(r_wall)} wall ({ratio(r_cpu)} per CPU s); vs the argmax kernel {ratio(e2e['auctions_per_s'] / km['auctions_per_s'])} wall",
                    "met" if r_wall >= 0.5 else "missed"])
        p_wall = e2e["auctions_per_s"] / py["auctions_per_s"]
        out.append([f"end to end >= 1,000 x Python reference, {ads} advertisers", f"{ratio(p_wall)} wall ({ratio(e2e['auctions_per_cpu_s'] / py['auctions_per_cpu_s'])} per CPU s)",
                    "met" if p_wall >= 1000 else "missed"])
    axis = {p["advertisers"]: p for p in res.get("ads_axis") or [] if p and not p.get("skipped")}
    if ads in axis and big in axis:
        cost_ratio = axis[big]["per_auction_us"] / axis[ads]["per_auction_us"]
        cpu_ratio = axis[big]["per_auction_cpu_us"] / axis[ads]["per_auction_cpu_us"]
        out.append([f"{big:,} advertisers within 3 x the per-auction cost at {ads}",
                    f"{cost_ratio:.1f} x wall ({axis[big]['per_auction_us']:.1f} vs {axis[ads]['per_auction_us']:.1f} µs per auction; "
                    f"{cpu_ratio:.1f} x per CPU µs; {res['config']['ads_axis_fixed'][0]:,} users)", "met" if cost_ratio <= 3 else "missed"])
    else:
        out.append([f"{big:,} advertisers within 3 x the per-auction cost at {ads}", "not measured", "-"])
    sd = res.get("singles_day")
    if sd:
        label = f"Singles' Day {sd['users']:,} users x {sd['advertisers']} adv. x {sd['days']} d under 2 min, < 4 GB"
        if sd.get("skipped"):
            out.append([label, f"not run: {sd['skipped']}", "missed (predicted)" if sd.get("predicted_s", 0) > 120 else "-"])
        else:
            met = sd["wall_s"] < 120 and sd["peak_rss_mb"] < 4096
            out.append([label, f"{sd['wall_s']:,.0f} s wall ({sd['cpu_s']:,.0f} CPU s), peak RSS {sd['peak_rss_mb'] / 1024:.2f} GB", "met" if met else "missed"])
    return out


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def axis_table(points: list[dict[str, Any] | None], key: str) -> str:
    rows = []
    for p in points:
        if not p:
            continue
        if p.get("skipped"):
            rows.append([fmt(p[key]), "skipped: " + p["skipped"], "", "", "", "", ""])
            continue
        rows.append([fmt(p[key]), fmt(p["sessions"]), fmt(p["simulate_s"], 1), fmt(p["auctions_per_s"]), fmt(p["auctions_per_cpu_s"]),
                     fmt(p["per_auction_cpu_us"], 1), fmt(p["peak_rss_mb"])])
    return table([key, "sessions", "Market.run s", "auctions/s", "auctions/CPU s", "CPU µs/auction", "peak RSS MB"], rows)


def parts_table(res: dict[str, Any]) -> str:
    p = res.get("parts")
    if not p:
        return "(not measured)"
    mem = (res.get("parts_memory") or {}).get("peak_mb", {})
    rows = []
    for r in p["rows"]:
        rows.append([r["part"], fmt(r["wall_s"], 2), fmt(r["cpu_s"], 2), f"{100 * r['cpu_s'] / max(p['cpu_s'], 1e-9):.0f} %",
                     fmt(p["sessions"] / r["cpu_s"]) if r["cpu_s"] > 0 else "-",
                     fmt(p["impressions"] / r["cpu_s"]) if r["cpu_s"] > 0 else "-", fmt(mem.get(r["part"]), 1) if mem else "-"])
    rows.append(["whole run (`simulator.run` with out=)", fmt(p["wall_s"], 2), fmt(p["cpu_s"], 2), "100 %", fmt(p["sessions"] / p["cpu_s"]),
                 fmt(p["impressions"] / p["cpu_s"]), f"peak RSS {fmt(p['peak_rss_mb'])}"])
    return table(["part", "wall s", "CPU s", "share (CPU)", "auctions/CPU s", "impressions/CPU s", "peak working MB"], rows)


def print_report(res: dict[str, Any]) -> None:
    print(table(["measurement", "auctions/s", "auctions/CPU s", "impressions/s", "impressions/CPU s", "peak RSS MB"], summary_rows(res)))
    print()
    print(table(["target", "measured", ""], targets(res)))
    print()
    print(parts_table(res))
    for skipped in res.get("skipped", []):
        print("- " + skipped)


def write_doc(res: dict[str, Any], path: Path, images: dict[str, str]) -> None:
    from benchmarks import report

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.markdown(res, images), encoding="utf-8")


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small smoke version (the default)")
    size.add_argument("--full", action="store_true", help="the whole scaling grid and the issue's target points")
    ap.add_argument("--out", type=Path, default=None, help="write the report here (default docs/performance.md with --full)")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results as JSON (--full: benchmarks/results.json)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per point (median reported)")
    ap.add_argument("--budget-minutes", type=float, default=None, help="stop adding points after this long")
    ap.add_argument("--max-point-seconds", type=float, default=None, help="skip a point predicted to take longer")
    ap.add_argument("--max-rss-gb", type=float, default=None, help="skip a point predicted to need more memory")
    ap.add_argument("--render", type=Path, default=None, metavar="RESULTS_JSON",
                    help="only write the report (and plots) from saved results, measure nothing")
    ap.add_argument("--add-point", type=int, nargs=3, default=None, metavar=("USERS", "ADVERTISERS", "DAYS"),
                    help="measure one Market.run point (one run, --point-timeout) into --render's results, "
                         "replacing a skipped or failed point of the same size on the axes")
    ap.add_argument("--add-singles-day", action="store_true",
                    help="run the Singles' Day season end to end (one run, --point-timeout) into --render's results")
    ap.add_argument("--point-timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    if args.render:
        res = json.loads(args.render.read_text(encoding="utf-8"))
        if args.add_point:
            add_point(res, *args.add_point, timeout=args.point_timeout)
        if args.add_singles_day:
            add_singles_day(res, timeout=args.point_timeout)
        if args.add_point or args.add_singles_day:
            args.render.write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
        from benchmarks import report

        out = args.out or ROOT / "docs" / "performance.md"
        images = report.plots(res, out.parent / "img")
        write_doc(res, out, images)
        print_report(res)
        log(f"wrote {out}")
        return res
    cfg = dataclasses.replace(FULL if args.full else QUICK)
    if args.repeats:
        cfg.repeats = args.repeats
    if args.budget_minutes:
        cfg.budget_s = args.budget_minutes * 60
    if args.max_point_seconds:
        cfg.max_point_s = args.max_point_seconds
    if args.max_rss_gb:
        cfg.max_rss_gb = args.max_rss_gb
    out = args.out or (ROOT / "docs" / "performance.md" if args.full else None)
    with tempfile.TemporaryDirectory(prefix="adsim-bench-") as tmp:
        res = run_suite(cfg, Path(tmp))
    print_report(res)
    json_path = args.json or (ROOT / "benchmarks" / "results.json" if args.full else None)
    if json_path:
        json_path.write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    if out is not None:
        from benchmarks import report

        images = report.plots(res, out.parent / "img") if cfg.plots else {}
        write_doc(res, out, images)
        log(f"wrote {out}")
    return res


def add_point(res: dict[str, Any], users: int, ads: int, days: int, timeout: float) -> dict[str, Any]:
    """Measure one point after the suite (one run, a longer timeout) and put it on every axis it belongs to."""
    cfg = Config(**{**res["config"], "repeats": 1, "max_point_s": timeout, "budget_s": timeout * 2})
    for k in ("headline", "parts", "memory_parts", "singles_day", "users_axis_fixed", "ads_axis_fixed", "days_axis_fixed"):
        if isinstance(getattr(cfg, k), list):
            setattr(cfg, k, tuple(getattr(cfg, k)))
    plan = Planner(cfg)
    with tempfile.TemporaryDirectory(prefix="adsim-bench-") as tmp:
        path = scenarios.write(scenarios.market(users, ads, days, chunks_per_hour=cfg.chunks_per_hour), Path(tmp) / "point.toml")
        r = child(["engine", str(path)], cfg, timeout=timeout)
    rates(r, r["simulate_s"], r["simulate_cpu_s"])
    m = median_of([r])
    m.update(users=users, advertisers=ads, days=days, per_auction_us=1e6 * m["simulate_s"] / max(1, m["sessions"]),
             per_auction_cpu_us=1e6 * m["simulate_cpu_s"] / max(1, m["sessions"]),
             note=f"measured after the suite, one run, timeout {timeout:.0f} s")
    label = f"{users:,} users x {ads} advertisers"
    log(f"  {label} x {days} d: {m['auctions_per_s']:,.0f} auctions/s, {m['simulate_s']:.1f} s, peak RSS {m['peak_rss_mb']:,.0f} MB")
    for axis in ("users_axis", "ads_axis", "days_axis"):
        pts = res.get(axis) or []
        for i, q in enumerate(pts):
            if q and (q["users"], q["advertisers"], q["days"]) == (users, ads, days):
                pts[i] = m
    res["skipped"] = [x for x in res.get("skipped", []) if not x.startswith(f"{label}:")]
    res.setdefault("added_points", []).append(f"{label} x {days} day(s): measured after the suite (one run, timeout {timeout:.0f} s)")
    return m


def add_singles_day(res: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run the suite's Singles' Day season end to end after the suite (one run, a longer timeout)."""
    su, sa, sd = res["config"]["singles_day"]
    log(f"Singles' Day: {su:,} users x {sa} advertisers x {sd} days (timeout {timeout:.0f} s)")
    with tempfile.TemporaryDirectory(prefix="adsim-bench-") as tmp:
        path = scenarios.write(scenarios.singles_day(su, sa, sd), Path(tmp) / "singles_day.toml")
        r = cli_run(path, Path(tmp), timeout=timeout)
    rates(r, r["wall_s"], r["cpu_s"])
    res["singles_day"] = r | {"users": su, "advertisers": sa, "days": sd}
    log(f"  {r['wall_s']:.1f} s wall, peak RSS {r['peak_rss_mb']:,.0f} MB")
    label = "Singles' Day end to end"
    res["skipped"] = [x for x in res.get("skipped", []) if not x.startswith(label)]
    res.setdefault("added_points", []).append(
        f"{label}, {su:,} users x {sa} advertisers x {sd} days: measured after the suite (one run, timeout {timeout:.0f} s)"
    )
    return r


def run_toy(work: Path, hook: Callable[[Config], None] | None = None) -> dict[str, Any]:
    """The toy configuration (for tests): in-process, a few seconds."""
    cfg = dataclasses.replace(TOY)
    if hook:
        hook(cfg)
    return run_suite(cfg, work)


if __name__ == "__main__":
    main()
