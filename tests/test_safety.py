"""Safety: a scenario file is data only, output stays in its folder, nothing is overwritten,
and absurd sizes are refused before any memory is allocated."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulator import results
from simulator.cli import app, default_out, safe_name
from simulator.scenario import load_scenario, parse_scenario
from tests.conftest import SMALL, make_scenario

PACKAGE = Path(__file__).parent.parent / "simulator"
CORPUS = Path(__file__).parent / "corpus" / "bad"
TINY = """\
name = {name}
days = 1
[population]
users = 200
[traffic]
sessions_per_user_per_day = 0.5
chunks_per_hour = 1
[[generate]]
count = 2
categories = ["beauty"]
"""

# ---------------------------------------------------------------- nothing from a file is executed

FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile", "input"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "importlib", "runpy", "code", "codeop"}
FORBIDDEN_ATTRS = {"import_module", "read_pickle", "to_pickle", "load_module", "exec_module", "unsafe_load", "full_load"}


def test_package_never_evaluates_or_unpickles():
    """No eval/exec/__import__/importlib.import_module/pickle anywhere in simulator/ (importlib.metadata is fine)."""
    problems = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
                problems.append(f"{where}: call to {node.func.id}")
            if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRS:
                problems.append(f"{where}: .{node.attr}")
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in FORBIDDEN_MODULES and alias.name != "importlib.metadata":
                        problems.append(f"{where}: import {alias.name}")
            if isinstance(node, ast.ImportFrom) and node.module:
                root = node.module.split(".")[0]
                names = {a.name for a in node.names}
                if root in FORBIDDEN_MODULES and not (node.module == "importlib" and names == {"metadata"}) and node.module != "importlib.metadata":
                    problems.append(f"{where}: from {node.module} import {', '.join(sorted(names))}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                base = node.func.value
                if isinstance(base, ast.Name) and base.id in {"yaml", "pickle", "marshal"}:
                    problems.append(f"{where}: {base.id}.load")
    assert problems == []


def test_the_scanner_catches_what_it_looks_for(tmp_path: Path):
    """The scan above must be able to fail: the same checks find each forbidden use in a sample."""
    sample = "import pickle\nfrom importlib import import_module\nx = eval('1')\nimport_module('os')\n__import__('os')\n"
    tree = ast.parse(sample)
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    froms = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {"eval", "__import__"} <= calls & FORBIDDEN_CALLS
    assert "pickle" in imports & FORBIDDEN_MODULES and "importlib" in froms & FORBIDDEN_MODULES


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("advertisers.0.strategy.rules", [{"rule": "__import__('os').system('touch pwned')"}]),
        ("advertisers.0.strategy.pacing", "os.system"),
        ("auction.mechanism", "simulator.auction.gsp"),
        ("calendar.events", [{"preset": "__class__"}]),
        ("advertisers.0.category", "__builtins__"),
        ("advertisers.0.campaigns.0.bid.type", "eval"),
    ],
)
def test_code_in_a_scenario_is_only_an_unknown_name(where: str, value, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception) as info:
        make_scenario({where: value})
    assert "unknown" in str(info.value) or "is not allowed" in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_shell_and_format_strings_in_names_are_inert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    spec = make_scenario({"name": "$(touch pwned) {__class__} %s `id`", "advertisers.0.name": "{0.__globals__}"})
    assert spec.name == "$(touch pwned) {__class__} %s `id`"
    assert not (tmp_path / "pwned").exists()
    assert "/" not in safe_name(spec.name) and "$(" not in safe_name(spec.name)


# ---------------------------------------------------------------- output names stay inside the output folder

ODD_NAMES = [
    "../../etc/x",
    "/abs/path",
    "..",
    ".",
    "...",
    "a/../../b",
    "a\\..\\..\\b",
    "~/x",
    "名字 with spaces",
    "CON",
    "-rf",
    "x" * 80,
    "🙂",
    "null\u200bwidth",
    "%2e%2e%2fetc",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_default_out_stays_inside_runs(name: str, tmp_path: Path):
    spec = make_scenario({"name": name})
    root = tmp_path / "runs"
    out = default_out(spec, 7, root=root)
    assert out.parent == root
    assert out.resolve().parent == root.resolve()
    assert out.name.endswith("-seed7") and not out.name.startswith(("-seed", "."))
    assert "/" not in out.name and "\\" not in out.name and ".." not in out.name.split("-seed")[0].strip("_")


@pytest.mark.slow
def test_cli_run_of_a_traversal_name_writes_inside_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "evil.toml"
    path.write_text(TINY.format(name='"../../../etc/adsim_x"'))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = CliRunner().invoke(app, ["run", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    made = list((work / "runs").iterdir())
    assert [p.name for p in made] == ["etc_adsim_x-seed0"]
    assert (made[0] / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.toml", "work"]
    # the same again would not overwrite: the next default name is beside it
    assert default_out(load_scenario(path), 0, root=Path("runs")) == Path("runs/etc_adsim_x-seed0-2")


# ---------------------------------------------------------------- never overwrite


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_run_out_existing_exits_2_and_leaves_it_untouched(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text(TINY.format(name='"keep"'))
    existing = tmp_path / "precious"
    existing.mkdir()
    (existing / "manifest.json").write_text('{"mine": true}')
    (existing / "notes.txt").write_text("do not touch")
    a_file = tmp_path / "a_file"
    a_file.write_text("data")
    before, file_before = snapshot(existing), a_file.read_bytes()
    for target in (existing, a_file):
        result = CliRunner().invoke(app, ["run", str(path), "--quiet", "--out", str(target)])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == f"{target}: already exists; choose another --out (runs are never overwritten)"
    assert snapshot(existing) == before and a_file.read_bytes() == file_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "precious", "s.toml"]


def test_unwritable_out_exits_2_before_simulating(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text(TINY.format(name='"x"'))
    blocker = tmp_path / "file"
    blocker.write_text("")
    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["run", str(path), "--quiet", "--out", str(blocker / "sub" / "run")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"{blocker / 'sub' / 'run'}: cannot create the folder it goes in")
    assert time.perf_counter() - t0 < 5


def test_write_run_refuses_a_folder_that_appears_while_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Another process takes the name between the check and the rename: its folder wins, untouched."""
    result = results.run(make_scenario({"days": 1, "population.users": 300}))
    out = tmp_path / "run"
    real_fsync = results._fsync_dir

    def squatter(path: Path) -> None:
        if not out.exists():
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")
        real_fsync(path)

    monkeypatch.setattr(results, "_fsync_dir", squatter)
    with pytest.raises(FileExistsError):
        results.write_run(result, out, report=False)
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"], "the partial folder is cleaned up"
    monkeypatch.setattr(results, "_fsync_dir", real_fsync)
    with pytest.raises(FileExistsError):
        results.write_run(result, out, report=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileExistsError):  # even an empty folder is not replaced
        results.write_run(result, empty, report=False)


# ---------------------------------------------------------------- resource limits

LIMIT_CASES = ["limit_users", "limit_days", "limit_generate", "limit_generate_total", "limit_users_x_advertisers", "limit_memory"]


@pytest.mark.parametrize("stem", LIMIT_CASES)
def test_absurd_sizes_are_refused_fast_without_allocating(stem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    path = CORPUS / f"{stem}.toml"
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        result = CliRunner().invoke(app, ["run", str(path), "--quiet"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ")
    assert any(w in lines[0] for w in ("must be <=", "above the limit", "too large", "GB of memory"))
    assert time.perf_counter() - t0 < 10
    assert peak < 50e6, f"{peak / 1e6:.0f} MB allocated to refuse a scenario"
    assert list(tmp_path.iterdir()) == []


def test_limits_also_guard_the_python_api():
    data = {**SMALL, "population": {"users": 3_000_000}, "traffic": {"sessions_per_user_per_day": 50.0}}
    data["generate"] = [{"count": 400, "categories": ["beauty"]}]
    with pytest.raises(Exception, match="GB of memory"):
        parse_scenario(data, "<api>")
    with pytest.raises(Exception, match="less than or equal to 400|must be <= 400"):
        results.run(make_scenario(), days=10_000)


def test_memory_limit_can_be_raised_by_environment(monkeypatch: pytest.MonkeyPatch):
    path = CORPUS / "limit_memory.toml"
    with pytest.raises(Exception, match="GB of memory"):
        load_scenario(path)
    monkeypatch.setenv("ADSIM_MAX_MEMORY_GB", "100000")
    assert load_scenario(path).population.users == 10_000_000  # validates; nothing is allocated


@pytest.mark.slow
def test_refusal_in_a_real_process_stays_small(tmp_path: Path):
    """``python -m simulator run`` of a 10-million-user, 300-ad scenario: exit 2, small peak memory."""
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    env.pop("ADSIM_MAX_MEMORY_GB", None)
    # A fresh parent process runs the refusal, so RUSAGE_CHILDREN holds that one child's peak
    # (this test process has reaped larger children before, and their peaks would count).
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-m', 'simulator', 'run', sys.argv[1], '--quiet'], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr)\n"
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(CORPUS / "limit_memory.toml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    err = proc.stderr
    returncode, peak_kib = (int(x) for x in proc.stdout.split())
    assert returncode == 2, err
    assert "GB of memory" in err and "Traceback" not in err
    assert peak_kib < 600_000, f"peak {peak_kib / 1e3:.0f} MB"  # KiB on Linux: the imports, no users
    assert list(tmp_path.iterdir()) == []
