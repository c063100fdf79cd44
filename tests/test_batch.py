"""Batch runs: grid and seeds, the hive folder, backends, resume after a crash, memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from distributed import Client, LocalCluster
from typer.testing import CliRunner

from simulator.batch import BatchError, batch, read_summary, read_table, replicate_seeds, sweep_id
from simulator.cli import app
from simulator.results import TABLES
from simulator.scenario import load_scenario, scenario_to_toml
from tests.conftest import make_scenario

TIMING = ["wall_s"]


def write(tmp_path: Path, name: str = "small", **overrides) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(scenario_to_toml(make_scenario({"name": name, "days": 1, **overrides})), encoding="utf-8")
    return path


def run_folders(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("scenario=*/sweep=*/seed=*/manifest.json"))


def leftovers(out: Path) -> list[Path]:
    """Temporary files or folders a crash could leave: none may survive a finished batch."""
    return [p for p in out.rglob("*") if p.name.endswith((".partial", ".tmp"))]


# ----------------------------------------------------------------------------- seeds and grid


def test_replicate_seeds_are_spawned_children_of_the_root():
    seeds = replicate_seeds(7, 4)
    # Child i of SeedSequence(7) is SeedSequence(7, spawn_key=(i,)); 63 bits of its first word.
    expected = [int(np.random.SeedSequence(7, spawn_key=(i,)).generate_state(1, np.uint64)[0] >> np.uint64(1)) for i in range(4)]
    assert seeds == expected
    assert len(set(seeds)) == 4
    assert all(0 <= s < 2**63 for s in seeds)
    assert replicate_seeds(7, 2) == seeds[:2]  # more replicates later keep the first ones
    assert replicate_seeds(8, 2) != seeds[:2]


def test_bad_sweep_gives_one_line_per_problem_and_writes_nothing(tmp_path):
    bad = write(
        tmp_path,
        "bad",
        sweep={
            "auction.reserve_ecpm": [5.0, -1.0],
            "auction.reserv_ecpm": [1.0],
            "advertisers.7.name": ["x"],
            "seed": [1, 2],
        },
    )
    result = CliRunner().invoke(app, ["batch", str(bad), str(tmp_path / "missing.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{bad}: sweep.seed: cannot be swept (use --replicates / --seed)",
        f"{bad}: sweep.auction.reserve_ecpm: must be >= 0 (value -1.0)",
        f"{bad}: sweep.auction.reserv_ecpm: unknown field (did you mean reserve_ecpm?) (value 1.0)",
        f"{bad}: sweep.advertisers.7.name: no such list item in the scenario",
        f"{tmp_path / 'missing.toml'}: no such file",
    ]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_sweep_grid_writes_a_hive_folder_that_reads_as_one_table(tmp_path):
    path = write(tmp_path, sweep={"auction.reserve_ecpm": [5.0, 40.0]})
    out = tmp_path / "out"
    summary = batch(path, replicates=2, workers=0, out=out, progress=False)
    seeds = replicate_seeds(1, 2)
    ids = [sweep_id({"auction.reserve_ecpm": 5.0}), sweep_id({"auction.reserve_ecpm": 40.0})]
    # One row per run, in order: grid point, then replicate; both points share the replicate seeds.
    assert summary["sweep"].tolist() == [ids[0], ids[0], ids[1], ids[1]]
    assert summary["sweep.auction.reserve_ecpm"].tolist() == [5.0, 5.0, 40.0, 40.0]
    assert summary["seed"].tolist() == seeds * 2
    assert summary["replicate"].tolist() == [0, 1, 0, 1]
    assert (summary["status"] == "complete").all() and not summary["reused"].any()
    assert len(run_folders(out)) == 4
    # Each run folder holds its own resolved point and seed.
    spec = load_scenario(out / f"scenario=small/sweep={ids[1]}/seed={seeds[0]}/scenario.toml")
    assert (spec.auction.reserve_ecpm, spec.seed, spec.sweep) == (40.0, seeds[0], {})
    manifest = json.loads((out / f"scenario=small/sweep={ids[1]}/seed={seeds[0]}/manifest.json").read_text())
    assert manifest["batch"]["root_seed"] == 1 and manifest["batch"]["replicate"] == 0
    # The summary's KPIs are those of the tables, run by run.
    daily = read_table(out, "advertiser_daily")
    spend = daily.groupby(["sweep", "seed"])["spend"].sum()
    for r in summary.itertuples():
        assert r.spend == pytest.approx(spend[(r.sweep, r.seed)], rel=1e-12)
    # A higher reserve price can only lower the impressions sold, seed by seed.
    low, high = summary.iloc[:2], summary.iloc[2:]
    assert (high["impressions"].to_numpy() < low["impressions"].to_numpy()).all()
    # pandas, pyarrow and DuckDB read the same table.
    pattern = str(out / "*" / "*" / "*" / "market_daily.parquet")
    con = duckdb.connect()
    via_duckdb = con.execute(
        f"select scenario, sweep, seed, sum(revenue) as revenue from read_parquet('{pattern}', hive_partitioning = true) "
        "group by all order by sweep, seed"
    ).df()
    files = sorted(str(p) for p in out.glob("*/*/*/market_daily.parquet"))
    # Seeds are 63-bit: give pyarrow the partition types (it would guess int32, then strings).
    hive = ds.partitioning(pa.schema([("scenario", pa.string()), ("sweep", pa.string()), ("seed", pa.uint64())]), flavor="hive")
    via_arrow = ds.dataset(files, format="parquet", partitioning=hive, partition_base_dir=str(out)).to_table().to_pandas()
    assert len(via_arrow) == 4 and set(via_arrow["seed"]) == set(seeds)
    via_pandas = read_table(out, "market_daily").groupby(["sweep", "seed"])["revenue"].sum()
    assert via_duckdb["revenue"].tolist() == pytest.approx(via_pandas.sort_index().tolist(), rel=1e-12)
    assert read_summary(out).drop(columns=TIMING).equals(summary.drop(columns=TIMING))


def test_resume_reuses_finished_runs_and_refuses_a_changed_scenario(tmp_path):
    path = write(tmp_path)
    out = tmp_path / "out"
    batch(path, replicates=2, workers=0, out=out, progress=False)
    first = {p: (p / "manifest.json").stat().st_mtime_ns for p in run_folders(out)}
    stale = out / "scenario=small" / "sweep=base" / ".seed=1.x1y2.partial"
    stale.mkdir()
    (stale / "advertiser_daily.parquet").write_bytes(b"half")
    summary = batch(path, replicates=3, workers=0, out=out, progress=False)
    assert summary["reused"].tolist() == [True, True, False]
    assert {p: (p / "manifest.json").stat().st_mtime_ns for p in first} == first
    assert len(run_folders(out)) == 3 and leftovers(out) == []
    # The same folder, a different scenario: nothing runs, every stale run is named.
    path.write_text(scenario_to_toml(make_scenario({"name": "small", "days": 1, "population.users": 4000})))
    with pytest.raises(BatchError) as err:
        batch(path, replicates=3, workers=0, out=out, progress=False)
    assert len(err.value.lines) == 3
    assert all("a finished run of a different scenario" in line for line in err.value.lines)


def test_failed_run_is_recorded_the_batch_goes_on_and_a_rerun_redoes_it(tmp_path):
    a, b = write(tmp_path, "a"), write(tmp_path, "b")
    out = tmp_path / "out"
    out.mkdir()
    (out / "scenario=a").write_text("in the way")  # a's runs cannot write their folder
    runner = CliRunner()
    result = runner.invoke(app, ["batch", str(a), str(b), "--workers", "0", "--out", str(out), "-q"])
    assert result.exit_code == 1
    summary = read_summary(out)
    assert summary["status"].tolist() == ["failed", "complete"]
    assert "Error" in summary["error"][0] and summary["error"][1] == ""
    assert result.stderr.strip() == f"scenario=a/sweep=base/seed={replicate_seeds(1, 1)[0]}: failed: {summary['error'][0]}"
    (out / "scenario=a").unlink()
    result = runner.invoke(app, ["batch", str(a), str(b), "--workers", "0", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    summary = read_summary(out)
    assert summary["status"].tolist() == ["complete", "complete"]
    assert summary["reused"].tolist() == [False, True]


# ----------------------------------------------------------------------------- backends


@pytest.mark.slow
def test_one_worker_two_workers_and_dask_give_identical_tables(tmp_path):
    path = write(tmp_path, sweep={"advertisers.0.campaigns.0.bid.amount": [30.0, 60.0]})
    outs = {"w1": tmp_path / "w1", "w2": tmp_path / "w2", "dask": tmp_path / "dask"}
    summaries = {
        "w1": batch(path, replicates=2, workers=1, out=outs["w1"], progress=False),
        "w2": batch(path, replicates=2, workers=2, out=outs["w2"], progress=False),
    }
    # A LocalCluster of threads: the same Dask path as a cluster, without starting Python twice more.
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        summaries["dask"] = batch(path, replicates=2, scheduler=client, out=outs["dask"], progress=False)
    ref = summaries["w1"].drop(columns=TIMING)
    assert (ref["status"] == "complete").all() and len(ref) == 4
    assert ref["spend"].nunique() == 4  # four different runs, not one repeated
    for key in ("w2", "dask"):
        pd.testing.assert_frame_equal(summaries[key].drop(columns=TIMING), ref)
        for name in TABLES:
            pd.testing.assert_frame_equal(read_table(outs[key], name), read_table(outs["w1"], name), check_exact=True)


@pytest.mark.slow
def test_parent_memory_is_flat_in_the_number_of_runs(tmp_path):
    path = write(tmp_path, **{"population.users": 1000})
    import multiprocessing.forkserver  # noqa: F401  (warm imports out of the measurement)

    import tqdm.auto  # noqa: F401

    def peak(**kw) -> int:
        tracemalloc.start()
        batch(path, progress=False, **kw)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    in_process = peak(replicates=1, workers=0, out=tmp_path / "here")  # the simulation's own arrays
    peak_2 = peak(replicates=2, workers=2, out=tmp_path / "p2")
    peak_6 = peak(replicates=6, workers=2, out=tmp_path / "p6")
    assert len(run_folders(tmp_path / "p6")) == 6
    assert peak_6 < in_process / 4
    assert peak_6 < peak_2 + 100_000  # a few kB of summary per run, never a run's tables


@pytest.mark.slow
def test_sigkill_midway_then_rerun_completes_without_redoing_finished_runs(tmp_path):
    path = write(tmp_path, **{"population.users": 10_000})
    out = tmp_path / "out"
    # In-process runs (--workers 0): the kill lands in the process that writes the tables.
    cmd = [sys.executable, "-m", "simulator", "batch", str(path), "--replicates", "4", "--workers", "0", "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not run_folders(out) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = {p: (p / "manifest.json").stat().st_mtime_ns for p in run_folders(out)}
    assert 1 <= len(done) < 4, "the kill should land midway"
    assert not (out / "summary.parquet").exists()
    # Whatever was on disk: complete folders with every table, or temporary names only.
    for folder in out.glob("scenario=*/sweep=*/*"):
        assert folder.name.endswith(".partial") or (folder / "manifest.json").exists()
    summary = batch(path, replicates=4, workers=1, out=out, progress=False)  # the same batch, run again
    assert read_summary(out).drop(columns=TIMING).equals(summary.drop(columns=TIMING))
    assert summary["status"].eq("complete").all() and len(summary) == 4
    assert summary["reused"].sum() == len(done)
    assert {p: (p / "manifest.json").stat().st_mtime_ns for p in done} == done
    assert len(run_folders(out)) == 4 and leftovers(out) == []
    for folder in run_folders(out):
        assert sorted(p.name for p in folder.iterdir()) == sorted([*(f"{t}.parquet" for t in TABLES), "manifest.json", "scenario.toml"])


@pytest.mark.slow
def test_real_dask_scheduler_and_worker_run_a_batch(tmp_path):
    path = write(tmp_path)
    info = tmp_path / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(info)], **quiet
        ),
        # The worker waits for the scheduler file, so both start at once.
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(info), "--nworkers", "1",
             "--nthreads", "1", "--no-dashboard", "--local-directory", str(tmp_path / "dask-worker")], **quiet
        ),
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        out = tmp_path / "out"
        result = CliRunner().invoke(app, ["batch", str(path), "--replicates", "2", "--scheduler", address, "--out", str(out), "-q"])
        assert result.exit_code == 0, result.output
        assert "2 runs: 2 complete" in result.stdout
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    here = batch(path, replicates=2, workers=0, out=tmp_path / "here", progress=False)
    pd.testing.assert_frame_equal(read_summary(out).drop(columns=TIMING), here.drop(columns=TIMING))
    pd.testing.assert_frame_equal(read_table(out, "advertiser_hourly"), read_table(tmp_path / "here", "advertiser_hourly"))
