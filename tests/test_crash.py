"""Crashes and long runs: a killed run leaves a complete folder or none; memory stays flat.

A run folder is written under ``.NAME.*.partial`` beside its destination and
renamed into place once its manifest is written, so whatever moment a process
dies at, the destination is either complete (with ``manifest.json``) or absent;
only ``.*.partial`` folders may be left, which readers ignore, the next write
removes once stale, and which never block re-running the same command.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from simulator import results
from simulator.results import TABLES, load_run, remove_stale_partials, write_run
from tests.conftest import make_scenario

ROOT = Path(__file__).parent.parent
TINY = """\
name = "crashy"
days = 2
[population]
users = 500
[traffic]
sessions_per_user_per_day = 1.0
chunks_per_hour = 1
[[generate]]
count = 3
categories = ["beauty", "food"]
"""


def assert_complete_or_absent(out: Path) -> bool:
    """True if ``out`` is a complete run folder; False if absent; fails on anything in between."""
    parent = out.parent
    others = [p.name for p in parent.iterdir() if p.name != out.name] if parent.exists() else []
    for name in others:
        assert name.startswith(f".{out.name}.") and name.endswith(".partial"), f"unexpected {name}"
    if not out.exists():
        return False
    assert (out / "manifest.json").is_file(), "a run folder without its manifest"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    for name in TABLES:
        frame = pd.read_parquet(out / f"{name}.parquet")
        assert len(frame) == manifest["tables"][name]
    assert (out / "scenario.toml").is_file()
    return True


# ---------------------------------------------------------------- faults injected while writing


def _die_while_writing(out: str, where: str) -> None:
    """In a forked child: run, then SIGKILL itself at ``where`` in the writing of the folder."""
    result = results.run(make_scenario({"days": 1, "population.users": 300}))
    written = {"n": 0}
    real = pd.DataFrame.to_parquet

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def to_parquet(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if where == f"table{written['n']}":
            die()
        written["n"] += 1
        return real(self, *args, **kwargs)

    pd.DataFrame.to_parquet = to_parquet
    if where == "manifest":
        results._write_json_atomic = lambda *a: die()
    if where == "rename":
        results._fsync_dir = lambda *a: die()
    write_run(result, Path(out), report=False)
    os._exit(0)


@pytest.mark.parametrize("where", ["table0", "table2", "manifest", "rename"])
def test_sigkill_while_writing_leaves_no_folder_and_a_rerun_completes(where: str, tmp_path: Path):
    out = tmp_path / "runs" / "r1"
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_die_while_writing, args=(str(out), where))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL
    assert not assert_complete_or_absent(out)
    partials = list(out.parent.glob(".r1.*.partial"))
    assert len(partials) == 1
    if where != "rename":  # killed before the manifest: the partial is not even a readable run
        assert not (partials[0] / "manifest.json").exists()
        with pytest.raises(FileNotFoundError, match="not a complete run folder"):
            load_run(partials[0])
    # The same command again: the stale partial does not block it.
    result = results.run(make_scenario({"days": 1, "population.users": 300}), out=out, report=False)
    assert result.path == out and assert_complete_or_absent(out)
    # Once old, a partial is removed by the next write in that folder.
    old = time.time() - 7 * 3600
    os.utime(partials[0], (old, old))
    assert remove_stale_partials(out.parent) == partials
    assert sorted(p.name for p in out.parent.iterdir()) == ["r1"]


def test_an_exception_while_writing_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    result = results.run(make_scenario({"days": 1, "population.users": 300}))
    calls = {"n": 0}
    real = pd.DataFrame.to_parquet

    def flaky(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", flaky)
    out = tmp_path / "r"
    with pytest.raises(OSError, match="No space left"):
        write_run(result, out, report=False)
    assert list(tmp_path.iterdir()) == []


def test_recent_partials_are_left_alone(tmp_path: Path):
    """A partial that is being written right now (by another process) must not be deleted."""
    fresh = tmp_path / ".r.abc.partial"
    fresh.mkdir()
    (fresh / "advertiser_daily.parquet").write_bytes(b"...")
    old = tmp_path / ".q.def.partial"
    old.mkdir()
    t = time.time() - 7 * 3600
    os.utime(old, (t, t))
    not_partial = tmp_path / "keep"
    not_partial.mkdir()
    os.utime(not_partial, (t, t))
    assert remove_stale_partials(tmp_path) == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.abc.partial", "keep"]


# ---------------------------------------------------------------- a real process killed at a random moment


@pytest.mark.slow
def test_cli_run_killed_at_random_moments(tmp_path: Path):
    """``python -m simulator run`` killed (SIGKILL) while importing, simulating and writing."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(TINY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(int(os.environ.get("ADSIM_CRASH_SEED", "0")) or None)
    runs = tmp_path / "runs"
    outcomes = []
    for i, moment in enumerate(["random", "writing"]):
        out = runs / str(i) / f"r{i}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "simulator", "run", str(scenario), "--quiet", "--out", str(out)],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if moment == "random":
            time.sleep(rng.uniform(0.5, 8.0))
        else:  # wait for the temporary folder: the process is writing its tables now
            deadline = time.time() + 300
            while time.time() < deadline and not list(out.parent.glob(f".r{i}.*.partial")) and proc.poll() is None:
                time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        outcomes.append(assert_complete_or_absent(out))
        # Re-running the same command completes (or finds the run already there).
        again = subprocess.run(
            [sys.executable, "-m", "simulator", "run", str(scenario), "--quiet", "--out", str(out)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if outcomes[-1]:
            assert again.returncode == 2 and "already exists" in again.stderr
        else:
            assert again.returncode == 0, again.stderr
        assert assert_complete_or_absent(out)
    print(f"killed runs complete before the kill: {outcomes}")


# ---------------------------------------------------------------- batches


def _batch_available() -> bool:
    try:
        import simulator.batch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _batch_available(), reason="simulator.batch not there yet")
def test_batch_killed_midway_resumes_without_loss_or_duplicates(tmp_path: Path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(TINY.replace("days = 2", "days = 1"))
    out = tmp_path / "batch"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "simulator", "batch", str(scenario), "--replicates", "4", "--workers", "1", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list(out.glob("scenario=*/sweep=*/seed=*/manifest.json")):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the batch process and its workers
    proc.wait(timeout=60)
    done_before = 0
    for entry in out.glob("scenario=*/sweep=*/*"):
        if entry.name.startswith("seed="):
            assert (entry / "manifest.json").is_file(), f"{entry}: a run folder without its manifest"
            done_before += 1
        else:
            assert entry.name.startswith(".") and entry.name.endswith(".partial"), entry
    assert not (out / "summary.parquet").exists() or done_before == 4
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    summary = pd.read_parquet(out / "summary.parquet")
    assert len(summary) == 4 and summary["seed"].nunique() == 4
    assert (summary["status"] == "complete").all()
    assert int(summary["reused"].sum()) == done_before
    runs = sorted(out.glob("scenario=*/sweep=*/seed=*"))
    assert len(runs) == 4 and all((r / "manifest.json").is_file() for r in runs)
    assert sorted(e.name for e in out.glob("scenario=*/sweep=*/*")) == sorted(r.name for r in runs)  # partials gone


# ---------------------------------------------------------------- long runs


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_ninety_days_with_flat_memory():
    from simulator import Market

    spec = make_scenario(
        {"days": 90, "population.users": 400, "traffic.sessions_per_user_per_day": 1.0, "traffic.chunks_per_hour": 1}
    )
    market = Market(spec)
    rss = []
    market.run(progress=lambda day: rss.append(_rss_mb()))
    assert market.day == 90 and len(rss) == 90
    tables = market.tables()
    assert len(tables["market_daily"]) == 90
    growth = rss[-1] - rss[9]
    per_day = growth / 80
    print(f"RSS day 10 {rss[9]:.0f} MB, day 90 {rss[-1]:.0f} MB: {per_day * 1000:.0f} kB/day")
    assert per_day < 0.5, f"memory grows {per_day:.2f} MB a day"


@pytest.mark.slow
@pytest.mark.skipif(not _batch_available(), reason="simulator.batch not there yet")
def test_dask_worker_killed_during_a_batch_loses_and_duplicates_nothing(tmp_path: Path):
    """SIGKILL the only Dask worker mid-batch, start another: every run is done exactly once."""
    pytest.importorskip("distributed")
    scenario = tmp_path / "s.toml"
    scenario.write_text(TINY.replace("users = 500", "users = 3000").replace("days = 2", "days = 1"))
    info = tmp_path / "scheduler.json"
    out = tmp_path / "batch"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env, "cwd": tmp_path}

    def worker(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(info), "--nworkers", "1",
             "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", name,
             "--local-directory", str(tmp_path / f"dask-{name}")], start_new_session=True, **quiet,
        )  # fmt: skip

    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(info)], start_new_session=True, **quiet,
    )  # fmt: skip
    procs = [scheduler, worker("first")]
    try:
        deadline = time.time() + 120
        while not info.exists() and time.time() < deadline:
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        cmd = [sys.executable, "-m", "simulator", "batch", str(scenario), "--replicates", "6", "--scheduler", address,
               "--out", str(out), "--quiet"]  # fmt: skip
        batch_proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(batch_proc)
        deadline = time.time() + 600
        while time.time() < deadline and batch_proc.poll() is None and not list(out.glob("scenario=*/sweep=*/seed=*/manifest.json")):
            time.sleep(0.02)
        os.killpg(procs[1].pid, signal.SIGKILL)  # the worker, mid-batch
        procs[1].wait(timeout=60)
        done_at_kill = len(list(out.glob("scenario=*/sweep=*/seed=*/manifest.json")))
        assert 1 <= done_at_kill < 6, "the kill should land midway"
        procs.append(worker("second"))
        stdout, stderr = batch_proc.communicate(timeout=900)
        assert batch_proc.returncode == 0, stderr
        assert "6 runs: 6 complete" in stdout
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM) if proc is not batch_proc else proc.kill()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    summary = pd.read_parquet(out / "summary.parquet")
    assert len(summary) == 6 and summary["seed"].nunique() == 6 and (summary["status"] == "complete").all()
    entries = sorted(out.glob("scenario=*/sweep=*/*"))
    runs = [e for e in entries if e.name.startswith("seed=")]
    assert len(runs) == 6 and all((r / "manifest.json").is_file() for r in runs)
    for r in runs:  # each run written once, whole
        manifest = json.loads((r / "manifest.json").read_text())
        for name in TABLES:
            assert len(pd.read_parquet(r / f"{name}.parquet")) == manifest["tables"][name]


@pytest.mark.slow
@pytest.mark.skipif(not _batch_available(), reason="simulator.batch not there yet")
def test_two_hundred_run_batch_completes_with_flat_parent_memory(tmp_path: Path):
    import tracemalloc

    from simulator.batch import batch

    spec = make_scenario(
        {"name": "many", "days": 1, "population.users": 200, "traffic.chunks_per_hour": 1, "traffic.sessions_per_user_per_day": 0.5}
    )
    peaks = {}
    for n in (20, 200):
        tracemalloc.start()
        try:
            summary = batch(spec, replicates=n, workers=2, out=tmp_path / f"b{n}", progress=False)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(summary) == n and summary["seed"].nunique() == n and (summary["status"] == "complete").all()
        assert len(list((tmp_path / f"b{n}").glob("scenario=many/sweep=base/seed=*/manifest.json"))) == n
    print(f"parent peak: 20 runs {peaks[20] / 1e6:.1f} MB, 200 runs {peaks[200] / 1e6:.1f} MB")
    assert peaks[200] < peaks[20] * 1.5 + 5e6, peaks  # summary rows are small: no run's tables held
