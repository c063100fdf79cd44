"""Measurements that run in a fresh process (so each has its own peak RSS).

``run.py`` starts this file as a child process, one measurement per process,
and reads the one JSON line it prints.  It can also be run by hand:

    python benchmarks/measure.py engine SCENARIO.toml
    python benchmarks/measure.py parts SCENARIO.toml OUT_DIR [--trace-memory]
    python benchmarks/measure.py python_ref --ads 100 --sessions 2000
    python benchmarks/measure.py kernel --ads 100 --sessions 1000000 [--method argmax]

``engine`` times ``Market.run`` in-process (wall and CPU seconds).  ``parts``
runs ``simulator.run(SCENARIO, out=OUT_DIR)`` with timing wrappers around the
engine's named functions (see :data:`PARTS`) and reports each part's exclusive
time (its own time minus that of wrapped functions it calls), so the parts add
up to the run.  With ``--trace-memory`` it also reports each part's peak
working memory (``tracemalloc``, which sees numpy's buffers): the most it
allocated above what was allocated when it was entered.  Timing wrappers cost
a few microseconds per call, and the engine makes a few hundred such calls a
day; ``--trace-memory`` slows Python-heavy code, so its times are not used.

Only the engine's public entry points are called (``simulator.run``,
``simulator.Market``, its tables); the wrappers attach to whatever of
:data:`PARTS` exists, so a renamed function shows up as "not called" rather
than breaking the benchmark.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: (module, attribute path, part): engine functions timed by ``parts``; several can share a part.
PARTS: list[tuple[str, str, str]] = [
    ("simulator.market", "Market.__init__", "setup (users, ad book, quality priors)"),
    ("simulator.market", "Market.step", "advertisers' plans, pacing, day bookkeeping"),
    ("simulator.population", "Population.draw_sessions", "session generation"),
    ("simulator.feed", "Feed.serve_hour", "eligibility, Ad Rank inputs, billing (rest of the feed)"),
    ("simulator.feed", "Feed._setup", "eligibility: targeting"),
    ("simulator.kernels", "rank_top", "ranking and pricing"),
    ("simulator.kernels", "rank_top_numba", "ranking and pricing"),
    ("simulator.kernels", "rank_top_numpy", "ranking and pricing"),
    ("simulator.auction", "allocate", "ranking and pricing"),
    ("simulator.auction", "rank_prices", "ranking and pricing"),
    ("simulator.auction", "event_prices", "ranking and pricing"),
    ("simulator.respond", "respond", "engagement sampling"),
    ("simulator.ledger", "Ledger.record_sessions", "ledger"),
    ("simulator.ledger", "Ledger.record_eligible", "ledger"),
    ("simulator.ledger", "Ledger.record_impressions", "ledger"),
    ("simulator.ledger", "Ledger.close_day", "ledger"),
    ("simulator.quality", "QualityModel.update", "quality update"),
    ("simulator.market", "Market.tables", "output writing (tables, Parquet, manifest)"),
    ("simulator.results", "write_run", "output writing (tables, Parquet, manifest)"),
    ("simulator.plots", "save_report", "output writing: report.png"),
    ("simulator.kernels", "admitted", "eligibility: targeting"),
    ("simulator.kernels", "ledger_sums", "ledger"),
    ("simulator.kernels", "bump_frequency", "eligibility, Ad Rank inputs, billing (rest of the feed)"),
]

#: Functions found at run time (new public functions of ``simulator.kernels``): key -> part.
EXTRA_PARTS: dict[str, str] = {}

#: Order of the parts in reports.
PART_ORDER = list(dict.fromkeys([*(p for _, _, p in PARTS[:5]), "eligibility and ranking (other simulator.kernels functions)", *(p for _, _, p in PARTS[5:])]))


def vm_hwm_mb() -> float:
    """This process's peak resident memory (VmHWM), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    return time.process_time()


class Timer:
    """Exclusive wall and CPU time (and optional peak traced memory) per wrapped function."""

    def __init__(self, trace_memory: bool = False):
        self.trace = trace_memory
        self.stats: dict[str, dict[str, float]] = {}
        self.stack: list[dict[str, float]] = []

    def wrap(self, key: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = {"child_wall": 0.0, "child_cpu": 0.0, "peak": 0.0}
            if self.trace:
                now, peak = tracemalloc.get_traced_memory()
                if self.stack:
                    self.stack[-1]["peak"] = max(self.stack[-1]["peak"], peak)
                tracemalloc.reset_peak()
                frame["base"] = now
            self.stack.append(frame)
            w0, c0 = time.perf_counter(), _cpu()
            try:
                return fn(*args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - w0, _cpu() - c0
                self.stack.pop()
                s = self.stats.setdefault(key, {"calls": 0, "wall": 0.0, "cpu": 0.0, "peak_mb": 0.0})
                s["calls"] += 1
                s["wall"] += wall - frame["child_wall"]
                s["cpu"] += cpu - frame["child_cpu"]
                if self.stack:
                    self.stack[-1]["child_wall"] += wall
                    self.stack[-1]["child_cpu"] += cpu
                if self.trace:
                    peak = max(frame["peak"], tracemalloc.get_traced_memory()[1])
                    s["peak_mb"] = max(s["peak_mb"], (peak - frame["base"]) / 2**20)
                    if self.stack:
                        self.stack[-1]["peak"] = max(self.stack[-1]["peak"], peak)
                    tracemalloc.reset_peak()

        return timed


def instrument(timer: Timer) -> tuple[dict[str, bool], list[tuple[Any, str, Any]]]:
    """Wrap every function of :data:`PARTS` that exists.

    Returns which were found, and the (owner, name, original) triples that
    :func:`restore` puts back.
    """
    found = {}
    undo: list[tuple[Any, str, Any]] = []
    for modname, attr, _ in PARTS:
        key = f"{modname.rsplit('.', 1)[-1]}.{attr}" if "." not in attr else attr
        try:
            mod = importlib.import_module(modname)
            owner: Any = mod
            *path, name = attr.split(".")
            for p in path:
                owner = getattr(owner, p)
            orig = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        except (ImportError, AttributeError, KeyError):
            found[key] = False
            continue
        wrapped = timer.wrap(key, orig)
        undo.append((owner, name, orig))
        setattr(owner, name, wrapped)
        if not isinstance(owner, type):
            # Modules that imported the function by name get the wrapper too.
            for other in list(sys.modules.values()):
                if getattr(other, "__name__", "").startswith("simulator") and other is not owner:
                    for k, v in list(vars(other).items()):
                        if v is orig:
                            undo.append((other, k, orig))
                            setattr(other, k, wrapped)
        found[key] = True
    # Public Python functions of the kernels module not named above (the engine is being optimized:
    # new kernels appear); numba dispatchers are left alone (compiled callers resolve them statically).
    try:
        kernels = importlib.import_module("simulator.kernels")
    except ImportError:
        kernels = None
    if kernels is not None:
        named = {attr for mod, attr, _ in PARTS if mod == "simulator.kernels"}
        for name, fn in list(vars(kernels).items()):
            if name.startswith("_") or name in named or not inspect.isfunction(fn) or fn.__module__ != kernels.__name__:
                continue
            key = f"kernels.{name}"
            EXTRA_PARTS[key] = "eligibility and ranking (other simulator.kernels functions)"
            undo.append((kernels, name, fn))
            wrapped = timer.wrap(key, fn)
            setattr(kernels, name, wrapped)
            for other in list(sys.modules.values()):
                if getattr(other, "__name__", "").startswith("simulator") and other is not kernels:
                    for k, v in list(vars(other).items()):
                        if v is fn:
                            undo.append((other, k, fn))
                            setattr(other, k, wrapped)
    return found, undo


def restore(undo: list[tuple[Any, str, Any]]) -> None:
    """Take the wrappers of :func:`instrument` off again."""
    for owner, name, orig in reversed(undo):
        setattr(owner, name, orig)


def part_of(key: str) -> str:
    if key in EXTRA_PARTS:
        return EXTRA_PARTS[key]
    for modname, attr, part in PARTS:
        k = f"{modname.rsplit('.', 1)[-1]}.{attr}" if "." not in attr else attr
        if k == key:
            return part
    return key


# ---------------------------------------------------------------------- commands


def cmd_engine(args: argparse.Namespace) -> dict[str, Any]:
    from simulator import Market

    w0, c0 = time.perf_counter(), _cpu()
    market = Market(args.scenario)
    w1, c1 = time.perf_counter(), _cpu()
    market.run()
    w2, c2 = time.perf_counter(), _cpu()
    md = market.tables()["market_daily"]
    return {
        "users": market.population.n,
        "setup_s": w1 - w0,
        "setup_cpu_s": c1 - c0,
        "simulate_s": w2 - w1,
        "simulate_cpu_s": c2 - c1,
        "sessions": int(md["sessions"].sum()),
        "impressions": int(md["filled_slots"].sum()),
        "days": len(md),
        "peak_rss_mb": vm_hwm_mb(),
    }


def cmd_parts(args: argparse.Namespace) -> dict[str, Any]:
    import simulator

    timer = Timer(trace_memory=args.trace_memory)
    found, undo = instrument(timer)
    if args.trace_memory:
        tracemalloc.start()
    try:
        w0, c0 = time.perf_counter(), _cpu()
        result = simulator.run(args.scenario, out=args.out, report=not args.no_report)
        wall, cpu = time.perf_counter() - w0, _cpu() - c0
    finally:
        restore(undo)
        if args.trace_memory:
            tracemalloc.stop()
    md = result.market_daily
    parts: dict[str, dict[str, float]] = {}
    for key, s in timer.stats.items():
        p = parts.setdefault(part_of(key), {"calls": 0, "wall": 0.0, "cpu": 0.0, "peak_mb": 0.0})
        p["calls"] += s["calls"]
        p["wall"] += s["wall"]
        p["cpu"] += s["cpu"]
        p["peak_mb"] = max(p["peak_mb"], s["peak_mb"])
    accounted_w = sum(p["wall"] for p in parts.values())
    accounted_c = sum(p["cpu"] for p in parts.values())
    parts["other (outside the named functions)"] = {"calls": 0, "wall": max(0.0, wall - accounted_w), "cpu": max(0.0, cpu - accounted_c), "peak_mb": 0.0}
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "sessions": int(md["sessions"].sum()),
        "impressions": int(md["filled_slots"].sum()),
        "parts": parts,
        "functions": timer.stats,
        "missing": [k for k, ok in found.items() if not ok],
        "peak_rss_mb": vm_hwm_mb(),
    }


def cmd_python_ref(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import reference

    out = reference.python_rate(args.ads, args.sessions)
    out["peak_rss_mb"] = vm_hwm_mb()
    return out


def cmd_kernel(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import reference

    out = reference.kernel_rate(args.ads, args.sessions, chunk=args.chunk, method=args.method)
    out["peak_rss_mb"] = vm_hwm_mb()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("engine")
    e.add_argument("scenario")
    p = sub.add_parser("parts")
    p.add_argument("scenario")
    p.add_argument("out")
    p.add_argument("--trace-memory", action="store_true")
    p.add_argument("--no-report", action="store_true", help="do not draw report.png")
    r = sub.add_parser("python_ref")
    r.add_argument("--ads", type=int, default=100)
    r.add_argument("--sessions", type=int, default=2_000)
    k = sub.add_parser("kernel")
    k.add_argument("--ads", type=int, default=100)
    k.add_argument("--sessions", type=int, default=1_000_000)
    k.add_argument("--chunk", type=int, default=31_250)
    k.add_argument("--method", choices=["argpartition", "argmax"], default="argpartition")
    args = ap.parse_args(argv)
    out = {"engine": cmd_engine, "parts": cmd_parts, "python_ref": cmd_python_ref, "kernel": cmd_kernel}[args.cmd](args)
    print("BENCH_JSON " + json.dumps(out))


if __name__ == "__main__":
    main()
